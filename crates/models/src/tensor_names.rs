//! Tensor names: what a tensor does ([`Role`]) and what a family calls it in each format
//! ([`TensorNames`]). The tables themselves live with their family in `arch/`; the loader
//! (`weights.rs`) and the tests' GGUF converter (`arch::gguf_tensor_name`) read the same ones.

/// What a tensor does in the model, whatever it is called in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    TokenEmbd,
    /// Learned absolute position embeddings (GPT-2's `wpe`).
    PosEmbd,
    OutputNorm,
    Output,
    /// llama.cpp `rope_freqs` (Llama 3.1 frequency factors; GGUF only).
    RopeFreqs,
    AttnNorm,
    AttnQ,
    AttnK,
    AttnV,
    /// q, k and v in one tensor.
    AttnQkv,
    AttnOut,
    AttnQNorm,
    AttnKNorm,
    /// Gemma's norm of the attention output.
    AttnPostNorm,
    /// The norm in front of the MLP.
    FfnNorm,
    FfnGate,
    FfnUp,
    /// Gate and up in one tensor.
    FfnGateUp,
    FfnDown,
    /// Gemma's norm of the MLP output.
    FfnPostNorm,
}

/// A family's tensor names: per role, the Hugging Face module path and llama.cpp's GGUF name,
/// both without the `.weight` / `.bias` suffix. An empty name: the format has no such tensor.
#[derive(Debug)]
pub struct TensorNames {
    /// Tensors outside the blocks.
    pub global: &'static [(Role, &'static str, &'static str)],
    /// Hugging Face prefix of block i's tensors, before `i.` (GGUF's is always `blk.i.`).
    pub hf_block_prefix: &'static str,
    /// Tensors of every block, relative to the block.
    pub block: &'static [(Role, &'static str, &'static str)],
}

/// Which naming a weight store uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    HuggingFace,
    Gguf,
}

impl TensorNames {
    /// The full name of a role's `suffix` (`weight`, `bias`) tensor in block `layer` (None:
    /// outside the blocks), or None when the family has no such tensor in this format.
    pub fn name(
        &self,
        format: Format,
        role: Role,
        layer: Option<usize>,
        suffix: &str,
    ) -> Option<String> {
        let table = if layer.is_some() {
            self.block
        } else {
            self.global
        };
        let &(_, hf, gguf) = table.iter().find(|(r, _, _)| *r == role)?;
        let base = match format {
            Format::HuggingFace => hf,
            Format::Gguf => gguf,
        };
        if base.is_empty() {
            return None;
        }
        Some(match (layer, format) {
            (None, _) => format!("{base}.{suffix}"),
            (Some(i), Format::HuggingFace) => {
                format!("{}{i}.{base}.{suffix}", self.hf_block_prefix)
            }
            (Some(i), Format::Gguf) => format!("blk.{i}.{base}.{suffix}"),
        })
    }

    /// llama.cpp's name for a Hugging Face tensor name of this family.
    pub fn gguf_name(&self, hf_name: &str) -> Option<String> {
        let (module, suffix) = hf_name.rsplit_once('.')?;
        if let Some(rest) = module.strip_prefix(self.hf_block_prefix) {
            let (layer, module) = rest.split_once('.')?;
            let layer: usize = layer.parse().ok()?;
            let &(role, _, _) = self.block.iter().find(|(_, hf, _)| *hf == module)?;
            return self.name(Format::Gguf, role, Some(layer), suffix);
        }
        let &(role, _, _) = self.global.iter().find(|(_, hf, _)| *hf == module)?;
        self.name(Format::Gguf, role, None, suffix)
    }
}
