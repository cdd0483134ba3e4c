//! The building blocks every architecture shares, each once: projections, norms, MLPs, RoPE,
//! masks and attention. What an architecture uses is chosen by its [`crate::DecoderConfig`].

pub mod attention;
mod attention_cpu;
pub mod linear;
pub mod mask;
pub mod mlp;
pub mod norm;
pub mod rope;
