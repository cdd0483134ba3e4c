//! A `--config FILE.toml`, parsed as `surprisal` does (`toml::from_str::<RunOptions>`, then merged
//! under the command-line flags); on an error, the `file:line:column` location is computed from the
//! error span as `with_config` in crates/cli/src/main.rs does (copied below).
#![no_main]

#[allow(dead_code)]
#[path = "../../crates/cli/src/args.rs"]
mod args;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match toml::from_str::<args::RunOptions>(text) {
        Ok(file) => {
            let _ = args::RunOptions::default().merge_under(file);
        }
        Err(e) => {
            // Same as crates/cli/src/main.rs `with_config`.
            let at = e.span().map_or(String::new(), |r| {
                let before = &text[..r.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!(":{line}:{col}")
            });
            let _ = format!("config.toml{at}: invalid config: {}", e.message().trim());
        }
    }
});
