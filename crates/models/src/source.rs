//! Where a model comes from: a local Hugging Face directory, a GGUF file, or a hub id.

use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A directory with `config.json`, safetensors weights and `tokenizer.json`.
    Dir(PathBuf),
    /// A GGUF file; `tokenizer_json` overrides (after checking) the tokenizer in its metadata.
    Gguf {
        path: PathBuf,
        tokenizer_json: Option<PathBuf>,
    },
    /// A Hugging Face hub id `org/name`, optionally at a revision (branch, tag or commit).
    Hub {
        repo: String,
        revision: Option<String>,
    },
}

impl ModelSource {
    /// `*.gguf` -> Gguf; an existing directory -> Dir; `org/name[@rev]` -> Hub.
    pub fn parse(s: &str) -> Result<Self> {
        let trimmed = s.trim();
        if trimmed.is_empty() {
            return Err(ModelError::BadSource(s.to_string()));
        }
        let path = Path::new(trimmed);
        if trimmed.to_ascii_lowercase().ends_with(".gguf") {
            return Ok(Self::Gguf {
                path: path.to_path_buf(),
                tokenizer_json: None,
            });
        }
        if path.is_dir() {
            return Ok(Self::Dir(path.to_path_buf()));
        }
        let (repo, revision) = match trimmed.split_once('@') {
            Some((r, rev)) if !rev.is_empty() => (r, Some(rev.to_string())),
            Some(_) => return Err(ModelError::BadSource(s.to_string())),
            None => (trimmed, None),
        };
        if is_hub_id(repo) {
            return Ok(Self::Hub {
                repo: repo.to_string(),
                revision,
            });
        }
        if path.exists() {
            // An existing file that is not a GGUF.
            return Err(ModelError::BadSource(s.to_string()));
        }
        Err(ModelError::NotFound {
            path: path.to_path_buf(),
            hint: " (expected a `.gguf` file, a model directory, or a Hugging Face id `org/name[@revision]`)".into(),
        })
    }
}

fn is_hub_id(s: &str) -> bool {
    let Some((org, name)) = s.split_once('/') else {
        return false;
    };
    let ok = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && !p.starts_with('-')
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    ok(org) && ok(name) && !name.contains('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        assert_eq!(
            ModelSource::parse("models/x.Q4_1.gguf").unwrap(),
            ModelSource::Gguf {
                path: "models/x.Q4_1.gguf".into(),
                tokenizer_json: None
            }
        );
        assert_eq!(
            ModelSource::parse("HuggingFaceTB/SmolLM2-135M").unwrap(),
            ModelSource::Hub {
                repo: "HuggingFaceTB/SmolLM2-135M".into(),
                revision: None
            }
        );
        assert_eq!(
            ModelSource::parse("Qwen/Qwen3-0.6B@abc123").unwrap(),
            ModelSource::Hub {
                repo: "Qwen/Qwen3-0.6B".into(),
                revision: Some("abc123".into())
            }
        );
        let dir = std::env::temp_dir();
        assert_eq!(
            ModelSource::parse(dir.to_str().unwrap()).unwrap(),
            ModelSource::Dir(dir.clone())
        );
        assert!(ModelSource::parse("").is_err());
        assert!(ModelSource::parse("no-such-thing").is_err());
        assert!(ModelSource::parse("a/b/c").is_err());
        assert!(ModelSource::parse("org/name@").is_err());
    }
}
