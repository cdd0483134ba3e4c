//! The CPU a run computed on, for the provenance of its results: quantized and f32 numbers
//! depend on it (which SIMD path the kernels took, which llama.cpp build's lane order the exact
//! path follows), and a benchmark figure means nothing without it.

use serde::{Deserialize, Serialize};

/// The host CPU as a run's provenance records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCpu {
    /// `lscpu`'s "Model name" (`model name` in `/proc/cpuinfo`), e.g. "AMD EPYC"; "unknown"
    /// where the system does not say.
    pub model_name: String,
    /// The widest x86 SIMD level the kernels can use here: `avx512`, `avx2`, `sse4.2` or `none`
    /// (`neon` on aarch64).
    pub simd: String,
    /// Whose lane order the llama.cpp-order ops follow: `avx512` or `avx2`
    /// (`SURPRISAL_GGML_SIMD`, else this host's build).
    pub ggml_order: String,
}

/// This host's CPU.
pub fn host_cpu() -> HostCpu {
    HostCpu {
        model_name: model_name().unwrap_or_else(|| "unknown".into()),
        simd: simd_level().into(),
        ggml_order: if crate::llama_cpp::follows_avx512_build() {
            "avx512"
        } else {
            "avx2"
        }
        .into(),
    }
}

fn model_name() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    cpuinfo_model_name(&text)
}

/// The first `model name` line of a `/proc/cpuinfo` text.
fn cpuinfo_model_name(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim() == "model name")
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

#[cfg(target_arch = "x86_64")]
fn simd_level() -> &'static str {
    if std::arch::is_x86_feature_detected!("avx512f") {
        "avx512"
    } else if std::arch::is_x86_feature_detected!("avx2") {
        "avx2"
    } else if std::arch::is_x86_feature_detected!("sse4.2") {
        "sse4.2"
    } else {
        "none"
    }
}

#[cfg(target_arch = "aarch64")]
fn simd_level() -> &'static str {
    "neon"
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn simd_level() -> &'static str {
    "none"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_model_name_line() {
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14 96-Core Processor\nflags\t\t: fpu\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 9R14 96-Core Processor\n";
        assert_eq!(
            cpuinfo_model_name(text).as_deref(),
            Some("AMD EPYC 9R14 96-Core Processor")
        );
        assert_eq!(cpuinfo_model_name("processor\t: 0\n"), None);
        assert_eq!(cpuinfo_model_name("model name\t: \n"), None);
    }

    #[test]
    fn this_host_is_described() {
        let h = host_cpu();
        assert!(["avx512", "avx2", "sse4.2", "none", "neon"].contains(&h.simd.as_str()));
        assert!(["avx512", "avx2"].contains(&h.ggml_order.as_str()));
        #[cfg(target_os = "linux")]
        assert_ne!(h.model_name, "unknown", "/proc/cpuinfo names the CPU");
    }
}
