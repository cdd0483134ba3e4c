//! Per-row metrics throughput on random rows (a measurement, not a test):
//! `cargo run --release -p surprisal-metrics --example row_throughput`

use std::time::Instant;

use surprisal_metrics::{pair_stats, token_stats};

fn main() {
    for &v in &[32_000usize, 150_000, 300_000] {
        // Cheap deterministic pseudo-random logits (LCG), scale ~3.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 12.0
        };
        let model: Vec<f32> = (0..v).map(|_| next()).collect();
        let reference: Vec<f32> = (0..v).map(|_| next()).collect();
        let iters = 200;
        let t0 = Instant::now();
        let mut acc = 0.0;
        for i in 0..iters {
            acc += token_stats(&model, (i * 7 % v) as u32)
                .expect("finite logits")
                .entropy_nats;
        }
        let single = t0.elapsed().as_secs_f64() / iters as f64;
        let t0 = Instant::now();
        for i in 0..iters {
            acc += pair_stats(&model, &reference, (i * 7 % v) as u32)
                .expect("finite logits")
                .kl_nats;
        }
        let pair = t0.elapsed().as_secs_f64() / iters as f64;
        eprintln!(
            "V = {v:>6}: token_stats {:>7.1} µs/row ({:.2} ns/logit), pair_stats {:>7.1} µs/pair  [{acc:.1}]",
            single * 1e6,
            single * 1e9 / v as f64,
            pair * 1e6
        );
    }
}
