//! Parity of `surprisal eval` with its peers on a real model: SmolLM2-135M-Instruct (Q4_1 GGUF) on
//! WikiText-2 raw test, against the peer numbers committed in `crates/runner/tests/data/peers/`
//! (produced by `scripts/references/ref_wikitext_peers.sh` / `scripts/references/ref_wikitext_peers.py`).
//!
//! * `chunks_c512_first4_quantized_matches_llama_perplexity`: `--protocol chunks --window 512
//!   --max-chunks 4` with the quantized kernels vs `llama-perplexity -c 512`'s first 4 chunks: the same
//!   scored token ids, |Δ mean NLL| ≤ 1e-3 per chunk and overall (≈ 0.1 % in perplexity).
//! * `sliding_w512_s256_t8192_dequantized_matches_transformers`: `--dequantize --protocol sliding
//!   --window 512 --stride 256 --max-tokens 8192 --bos never` vs transformers f32 (the fixed HF
//!   recipe): the same 8191 scored tokens (ids and positions), perplexity within 0.01 %, mean
//!   per-token |Δ NLL| ≤ 2e-4 nats.
//!
//! Inputs that must be present (the tests fail, never skip, without them):
//! `<repo>/../shared/datasets/wikitext-2-raw-v1.test.raw` and
//! `$SURPRISAL_CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf` (`SURPRISAL_CACHE` defaults to
//! `$HOME/.cache/surprisal`; `bash scripts/fetch_smollm2.sh` downloads it).
//! Runtime on 2 CPU cores: about 1.5 minutes each (they run in parallel).

use std::path::{Path, PathBuf};

use serde_json::Value;
use surprisal_testkit::{
    cached_model, eval_rows_env, llama_cpp_build_simd, peer, wikitext_test_raw,
};

fn wikitext() -> PathBuf {
    wikitext_test_raw()
}

fn smollm2() -> PathBuf {
    cached_model("SmolLM2-135M-Instruct.Q4_1.gguf", "fetch_smollm2.sh")
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

/// Runs `surprisal eval --model <SmolLM2> --data <wikitext> <args> --out <tmp> --per-token jsonl
/// --quiet`; returns (summary.json, per-token rows, elapsed seconds).
fn eval(args: &[&str]) -> (Value, Vec<Value>, f64) {
    let dir = tempfile::tempdir().unwrap();
    // our llama.cpp-order ops follow the lane order of the llama.cpp build that made the reference
    // (its system_info line), whatever this CPU has
    let simd = llama_cpp_build_simd(&peer("llamacpp_wikitext_c512_chunks40.json"));
    eval_rows_env(
        Path::new(env!("CARGO_BIN_EXE_surprisal")),
        &smollm2(),
        &wikitext(),
        args,
        &dir.path().join("out"),
        &[("SURPRISAL_GGML_SIMD", simd)],
    )
}

/// The same scored tokens as `llama-perplexity -c 512` (positions, ids, contexts); the NLLs are
/// printed next to llama.cpp's, and asserted by the test below.
#[test]
fn chunks_c512_first4_quantized_scores_llama_perplexity_tokens() {
    chunks_c512_first4(false);
}

/// Per chunk, against llama-perplexity with flash attention off (`--flash-attn off`; its default
/// `auto` turns it on on a CPU, which rounds K/V and Q to f16 inside attention: against that run the
/// chunks differ by up to 3.5e-3 nats, printed for reference; docs/parity.md).
#[test]
fn chunks_c512_first4_quantized_nll_matches_llama_perplexity() {
    chunks_c512_first4(true);
}

fn chunks_c512_first4(check_nll: bool) {
    const CHUNKS: usize = 4;
    const N_CTX: u64 = 512;
    // |Δ mean NLL| against llama.cpp without flash attention: its per-chunk means are recovered
    // from 6-decimal running means, so they carry up to (2k+1)·5e-7 of rounding.
    const TOL: f64 = 1e-5;
    let peer = peer("llamacpp_wikitext_c512_chunks40.json");
    assert_eq!(peer["bos_added"], Value::Bool(false));
    let (s, rows, secs) = eval(&[
        "--protocol",
        "chunks",
        "--window",
        "512",
        "--max-chunks",
        "4",
        "--bos",
        "auto",
    ]);
    // the GGUF says add_bos_token = false, so `auto` must not use BOS (like llama.cpp)
    assert_eq!(s["protocol"]["bos_used"], Value::Bool(false), "bos_used");
    // provenance: the file type and per-type tensor counts the `gguf` package reads
    // (scripts/references/ref_gguf_tensor_types.py), and the lane order the run followed
    let types = surprisal_testkit::read_json(
        &surprisal_testkit::repo_root().join("crates/models/tests/data/gguf_tensor_types.json"),
    );
    assert_eq!(s["dtype"], types["models"]["smollm2"]["file_type_name"]);
    assert_eq!(
        s["dtype_tensors"],
        types["models"]["smollm2"]["tensor_types"]
    );
    let simd = llama_cpp_build_simd(&peer);
    assert_eq!(s["host_cpu"]["ggml_order"], simd, "host_cpu.ggml_order");
    assert!(s["host_cpu"]["model_name"]
        .as_str()
        .is_some_and(|n| !n.is_empty()));
    let per_chunk = u(&peer["tokens_per_chunk_scored"]) as usize;
    assert_eq!(per_chunk, 255);
    assert_eq!(
        u(&s["tokens_scored"]),
        (CHUNKS * per_chunk) as u64,
        "tokens_scored"
    );
    assert_eq!(rows.len(), CHUNKS * per_chunk, "per-token rows");
    assert_eq!(u(&s["windows"]), CHUNKS as u64, "chunks");

    // the same tokens: chunk k scores stream positions k*512 + 257 ..= k*512 + 511
    let ids = peer["token_ids_first_8192"].as_array().unwrap();
    for (i, r) in rows.iter().enumerate() {
        let (k, j) = ((i / per_chunk) as u64, (i % per_chunk) as u64);
        let pos = k * N_CTX + N_CTX / 2 + 1 + j;
        assert_eq!(u(&r["doc"]), 0);
        assert_eq!(u(&r["index"]), pos, "row {i}: scored position");
        assert_eq!(
            u(&r["token_id"]),
            u(&ids[pos as usize]),
            "row {i}: token id at {pos}"
        );
        assert_eq!(
            u(&r["context_len"]),
            N_CTX / 2 + 1 + j,
            "row {i}: context length"
        );
    }

    // per-chunk mean NLLs (llama.cpp's are recovered from its 6-decimal running means, ±1e-5)
    let fa_off = &peer["flash_attn_off"];
    let want = fa_off["per_chunk_mean_nll_nats"].as_array().unwrap();
    let want_fa_on = peer["per_chunk_mean_nll_nats"].as_array().unwrap();
    let mut table = String::new();
    let mut worst = 0.0f64;
    for (k, chunk) in rows.chunks(per_chunk).enumerate() {
        let mean = chunk.iter().map(|r| f(&r["nll_nats"])).sum::<f64>() / per_chunk as f64;
        let (w, w_on) = (f(&want[k]), f(&want_fa_on[k]));
        table += &format!(
            "  chunk {k}: mean NLL ours {mean:.6} llama.cpp {w:.6} (Δ {:+.2e}); \
             with flash attention {w_on:.6} (Δ {:+.2e})\n",
            mean - w,
            mean - w_on
        );
        worst = worst.max((mean - w).abs());
    }
    eprint!("{table}");
    let got = f(&s["mean_nll_nats"]);
    let want_mean = f(&fa_off["running_mean_nll_nats"][CHUNKS - 1]);
    eprintln!(
        "chunks c512 x{CHUNKS}: mean NLL ours {got:.6} llama.cpp {want_mean:.6}; PPL ours {:.4} llama.cpp {:.4} \
         (printed [{CHUNKS}]{:.4}); worst chunk |Δ| {worst:.2e}; {secs:.0} s",
        f(&s["perplexity"]),
        want_mean.exp(),
        f(&peer["running_ppl"][CHUNKS - 1])
    );
    if !check_nll {
        return;
    }
    assert!(
        (got - want_mean).abs() <= TOL,
        "mean NLL over {CHUNKS} chunks {got:.6} vs llama.cpp {want_mean:.6} (Δ {:+.2e} > {TOL})\n{table}",
        got - want_mean
    );
    assert!(
        worst <= TOL,
        "a chunk's mean NLL differs from llama.cpp's by {worst:.2e} > {TOL} nats:\n{table}"
    );
}

#[test]
fn sliding_w512_s256_t8192_dequantized_matches_transformers() {
    let peer = peer("transformers_wikitext_sliding_w512_s256_t8192.json");
    let (s, rows, secs) = eval(&[
        "--dequantize",
        "--protocol",
        "sliding",
        "--window",
        "512",
        "--stride",
        "256",
        "--max-tokens",
        "8192",
        "--bos",
        "never",
    ]);
    let n = u(&peer["tokens_scored"]) as usize;
    assert_eq!(n, 8191);
    assert_eq!(u(&s["tokens_scored"]), n as u64, "tokens_scored");
    assert_eq!(rows.len(), n, "per-token rows");
    assert_eq!(u(&s["windows"]), u(&peer["n_windows"]), "windows");
    assert_eq!(s["protocol"]["bos_used"], Value::Bool(false));

    // the same tokens: token k+1 of the stream, ids from the same tokenizer
    let ids = peer["token_ids"].as_array().unwrap();
    let want_nll = peer["nll_nats"].as_array().unwrap();
    let mut sum_abs = 0.0;
    let mut worst = 0.0f64;
    for (k, r) in rows.iter().enumerate() {
        assert_eq!(u(&r["doc"]), 0);
        assert_eq!(u(&r["index"]), k as u64 + 1, "row {k}: scored position");
        assert_eq!(u(&r["token_id"]), u(&ids[k + 1]), "row {k}: token id");
        let d = (f(&r["nll_nats"]) - f(&want_nll[k])).abs();
        sum_abs += d;
        worst = worst.max(d);
    }
    let mean_abs = sum_abs / n as f64;
    let (ppl, want_ppl) = (f(&s["perplexity"]), f(&peer["perplexity"]));
    let rel = ppl / want_ppl - 1.0;
    eprintln!(
        "sliding w512 s256 t8192: PPL ours {ppl:.6} transformers {want_ppl:.6} (rel {rel:+.2e}); \
         mean NLL ours {:.8} transformers {:.8}; per-token mean |Δ| {mean_abs:.2e}, max {worst:.2e}; {secs:.0} s",
        f(&s["mean_nll_nats"]),
        f(&peer["mean_nll_nats"])
    );
    assert!(
        rel.abs() <= 1e-4,
        "perplexity {ppl} vs transformers {want_ppl} (rel {rel:.2e})"
    );
    assert!(
        mean_abs <= 2e-4,
        "per-token mean |Δ NLL| {mean_abs:.2e} > 2e-4 nats"
    );
}

/// The requirement itself: `--protocol chunks --window 512 --max-chunks 40` on the quantized GGUF
/// reproduces `llama-perplexity -c 512 --chunks 40` (PPL 23.5861) to ≤ 0.1 % in perplexity.
#[test]
fn chunks_c512_40_quantized_ppl_within_0_1_percent_of_llama_perplexity() {
    let peer = peer("llamacpp_wikitext_c512_chunks40.json");
    let (s, rows, secs) = eval(&[
        "--protocol",
        "chunks",
        "--window",
        "512",
        "--max-chunks",
        "40",
        "--batch-size",
        "4",
    ]);
    assert_eq!(
        u(&s["tokens_scored"]),
        u(&peer["tokens_scored"]),
        "tokens_scored"
    );
    assert_eq!(rows.len(), 10_200);
    let (got, want) = (f(&s["perplexity"]), f(&peer["final_ppl"]));
    let rel = got / want - 1.0;
    eprintln!(
        "chunks c512 x40: PPL ours {got:.4} llama-perplexity {want:.4} ({:+.3} %), {secs:.0} s",
        rel * 100.0
    );
    assert!(
        rel.abs() <= 1e-3,
        "PPL {got:.4} vs llama-perplexity {want:.4}: {:+.3} % (limit 0.1 %)",
        rel * 100.0
    );
    // With flash attention off llama.cpp runs the graph we reproduce: equal to its 4 printed
    // decimals (and its 6-decimal mean NLL).
    let off = &peer["flash_attn_off"];
    let (ppl_off, nll_off) = (f(&off["final_ppl"]), f(&off["running_mean_nll_nats"][39]));
    eprintln!("  llama-perplexity --flash-attn off: PPL {ppl_off:.4}, mean NLL {nll_off:.6}");
    assert!(
        (got - ppl_off).abs() <= 5e-5,
        "PPL {got:.6} vs {ppl_off:.4} (flash attention off)"
    );
    let nll = f(&s["mean_nll_nats"]);
    assert!(
        (nll - nll_off).abs() <= 5e-7,
        "mean NLL {nll:.8} vs {nll_off:.6} (flash attention off)"
    );
}
