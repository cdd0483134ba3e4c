//! The unit tests' random numbers: one 64-bit LCG (Knuth's MMIX constants), so the kernels'
//! tests draw the same reproducible values from one definition.

/// The next value in [-1, 1) from the LCG state `seed`.
pub(crate) fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
}
