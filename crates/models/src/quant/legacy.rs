//! The 32-value weight types that llama.cpp multiplies on AVX2 with llamafile's
//! `tinyBLAS_Q0_AVX` (`llamafile/sgemm.cpp`) against Q8_0 activations: per block one
//! `fma(d_w·d_a, f32(Σ4 w·a), acc)` on 8 lanes, then `hsum`. That loop does not depend on how the
//! weight's values were stored, only on their signed 8-bit value, so these types are unpacked to
//! `(i8 × 32, f32 scale)` blocks and run ggml_cpu's Q8_0 kernel (the same loop).

/// Q5_0 (22 bytes: f16 d, u32 high bits, 16 bytes of nibbles) -> values `q - 16` and the scale.
pub(crate) fn q5_0_block(b: &[u8]) -> ([i8; 32], f32) {
    let d = half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    let mut q = [0i8; 32];
    for j in 0..16 {
        let h0 = (((qh >> j) << 4) & 0x10) as u8;
        let h1 = ((qh >> (j + 12)) & 0x10) as u8;
        q[j] = ((qs[j] & 0x0F) | h0) as i8 - 16;
        q[j + 16] = ((qs[j] >> 4) | h1) as i8 - 16;
    }
    (q, d)
}

pub(crate) const Q5_0_BYTES: usize = 22;
