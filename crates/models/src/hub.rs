//! Hugging Face hub models: the local cache first (works offline), then a download with the sync
//! `hf-hub` API. Cache layout: `<cache>/models--org--name/{refs/<rev>, snapshots/<sha>/...}`.

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};

use crate::error::{ModelError, Result};

/// The hub cache directory: `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("HF_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join("hub");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache").join("huggingface").join("hub")
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| !v.is_empty() && v != "0")
        .unwrap_or(false)
}

/// Resolves `repo@revision` to a local snapshot directory with config, tokenizer and weights,
/// downloading what is missing unless `HF_HUB_OFFLINE` is set.
pub fn resolve(repo: &str, revision: Option<&str>, cache_dir: Option<&Path>) -> Result<PathBuf> {
    let cache_dir = cache_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(default_cache_dir);
    let revision = revision.unwrap_or("main").to_string();
    let hub_err = |message: String| ModelError::Hub {
        repo: format!("{repo}@{revision}"),
        message,
    };
    if let Some(dir) = cached_snapshot(&cache_dir, repo, &revision) {
        return Ok(dir);
    }
    if offline() {
        return Err(hub_err(format!(
            "not in the cache {} and HF_HUB_OFFLINE is set (download it once while online)",
            cache_dir.display()
        )));
    }
    let api = hf_hub::api::sync::ApiBuilder::from_cache(Cache::new(cache_dir.clone()))
        .with_progress(false)
        .build()
        .map_err(|e| hub_err(format!("cannot start the hub client: {e}")))?;
    let r = api.repo(Repo::with_revision(
        repo.to_string(),
        RepoType::Model,
        revision.clone(),
    ));
    let get = |f: &str| {
        r.get(f).map_err(|e| {
            hub_err(format!(
                "cannot download `{f}`: {e} (offline? the cache {} has no complete copy)",
                cache_dir.display()
            ))
        })
    };
    let config = get("config.json")?;
    get("tokenizer.json")?;
    match r.get("model.safetensors.index.json") {
        Ok(index) => {
            for shard in shard_names(&index)? {
                get(&shard)?;
            }
        }
        Err(_) => {
            get("model.safetensors")?;
        }
    }
    Ok(config.parent().map(Path::to_path_buf).unwrap_or_default())
}

/// The snapshot directory if the cache holds a complete copy (config, tokenizer, all weights).
fn cached_snapshot(cache_dir: &Path, repo: &str, revision: &str) -> Option<PathBuf> {
    let cache = Cache::new(cache_dir.to_path_buf());
    let cache_repo = cache.repo(Repo::with_revision(
        repo.to_string(),
        RepoType::Model,
        revision.to_string(),
    ));
    let config = match cache_repo.get("config.json") {
        Some(p) => p,
        None => {
            // A commit hash with no ref file: look in snapshots/<hash> directly.
            let folder = Repo::new(repo.to_string(), RepoType::Model).folder_name();
            let p = cache_dir
                .join(folder)
                .join("snapshots")
                .join(revision)
                .join("config.json");
            if p.is_file() {
                p
            } else {
                return None;
            }
        }
    };
    let dir = config.parent()?.to_path_buf();
    if !dir.join("tokenizer.json").is_file() {
        return None;
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let shards = shard_names(&index).ok()?;
        if shards.iter().all(|s| dir.join(s).is_file()) {
            return Some(dir);
        }
        return None;
    }
    dir.join("model.safetensors").is_file().then_some(dir)
}

/// The distinct shard file names of a `model.safetensors.index.json`, in order.
pub(crate) fn shard_names(index: &Path) -> Result<Vec<String>> {
    let json = crate::error::read_json(index)?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| ModelError::MissingConfigKey {
            path: index.to_path_buf(),
            key: "weight_map".into(),
        })?;
    let mut shards: Vec<String> = Vec::new();
    for v in map.values() {
        let s = v.as_str().ok_or_else(|| ModelError::InvalidConfigValue {
            path: index.to_path_buf(),
            key: "weight_map".into(),
            message: format!("expected file names, found {v}"),
        })?;
        if !shards.iter().any(|x| x == s) {
            shards.push(s.to_string());
        }
    }
    shards.sort();
    Ok(shards)
}
