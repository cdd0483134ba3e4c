//! `hf://datasets/NAME[/CONFIG]/SPLIT`: Parquet files of a Hugging Face
//! dataset split, from the hub cache (downloaded with `hf-hub` when online).
//!
//! # Cache root
//! [`HfOptions::cache_dir`] if set, else `$HF_HUB_CACHE`, else
//! `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
//!
//! # Lookup
//! The repo directory is `<root>/datasets--ORG--NAME` (as named by
//! `hf_hub::Repo::folder_name`). Revisions are tried in order: `main`, then
//! the Hub's Parquet conversion `refs/convert/parquet`. A revision's commit is
//! read from `refs/<revision>` (hf-hub / huggingface_hub write
//! `refs/refs/convert/parquet` for the latter; `refs/convert/parquet` is also
//! accepted), and its files are under `snapshots/<commit>/`. A file (path
//! relative to the snapshot) belongs to split `SPLIT` of config `CONFIG` if
//! it ends in `.parquet` and is one of
//!
//! * `CONFIG/SPLIT.parquet`, `CONFIG/SPLIT-*.parquet`  (repo layout)
//! * `CONFIG/SPLIT/*.parquet`, `CONFIG/partial-SPLIT/*.parquet`  (`refs/convert/parquet` layout)
//! * for `CONFIG == "default"` only: the same three under `data/` and the
//!   first two at the snapshot root (`data/train-00000-of-00002.parquet`).
//!
//! The first revision with at least one matching file wins; its files are
//! read in path order. When nothing is cached and [`HfOptions::offline`] is
//! false, the same revisions are listed on the Hub (`hf_hub::api::sync`) and
//! the matching files are downloaded into the cache.

use std::path::{Path, PathBuf};

use hf_hub::{Repo, RepoType};

use super::DataError;

/// Where the Hugging Face cache is and whether the network may be used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HfOptions {
    /// Cache root (the `hub` directory); `None` = from the environment.
    pub cache_dir: Option<PathBuf>,
    /// Never touch the network.
    pub offline: bool,
}

impl HfOptions {
    /// `offline` from `HF_HUB_OFFLINE` (`1`/`true`/`yes`/`on`); cache root left
    /// to [`HfOptions::cache_root`].
    pub fn from_env() -> Self {
        let offline = std::env::var("HF_HUB_OFFLINE")
            .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
            .unwrap_or(false);
        HfOptions {
            cache_dir: None,
            offline,
        }
    }

    /// The cache root actually used.
    pub fn cache_root(&self) -> PathBuf {
        if let Some(p) = &self.cache_dir {
            return p.clone();
        }
        if let Some(p) = std::env::var_os("HF_HUB_CACHE").filter(|v| !v.is_empty()) {
            return PathBuf::from(p);
        }
        if let Some(p) = std::env::var_os("HF_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(p).join("hub");
        }
        let home = std::env::var_os("HOME").unwrap_or_default();
        PathBuf::from(home).join(".cache/huggingface/hub")
    }
}

const REVISIONS: [&str; 2] = ["main", "refs/convert/parquet"];

fn split_file(name: &str, split: &str) -> bool {
    name.ends_with(".parquet")
        && (name == format!("{split}.parquet") || name.starts_with(&format!("{split}-")))
}

/// Does `rel` (snapshot-relative, `/`-separated) hold rows of `config`/`split`?
pub fn matches_split(rel: &str, config: &str, split: &str) -> bool {
    if !rel.ends_with(".parquet") {
        return false;
    }
    let parts: Vec<&str> = rel.split('/').collect();
    let in_dir = |rest: &[&str]| -> bool {
        match rest {
            [f] => split_file(f, split),
            [d, _f] => *d == split || *d == format!("partial-{split}"),
            _ => false,
        }
    };
    match parts.as_slice() {
        [c, rest @ ..] if *c == config && in_dir(rest) => true,
        ["data", rest @ ..] if config == "default" && in_dir(rest) => true,
        [f] if config == "default" => split_file(f, split),
        _ => false,
    }
}

fn read_ref(repo_dir: &Path, revision: &str) -> Option<String> {
    let mut candidates = vec![repo_dir.join("refs").join(revision)];
    if revision.starts_with("refs/") {
        // `refs/convert/parquet` taken literally, relative to the repo dir.
        candidates.push(repo_dir.join(revision));
    }
    candidates
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Relative paths (up to 3 levels) of the files under `root`, `/`-separated.
fn walk(root: &Path, prefix: &str, depth: usize, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let path = entry.path();
        if path.is_dir() {
            if depth > 1 {
                walk(&path, &rel, depth - 1, out);
            }
        } else if path.is_file() {
            out.push(rel);
        }
    }
}

/// Cached Parquet files of the split, or `None` (with what was searched).
fn lookup_cache(
    root: &Path,
    name: &str,
    config: &str,
    split: &str,
) -> Result<Vec<PathBuf>, String> {
    let repo_dir = root.join(Repo::new(name.to_string(), RepoType::Dataset).folder_name());
    if !repo_dir.is_dir() {
        return Err(format!("no {}", repo_dir.display()));
    }
    let mut tried = Vec::new();
    for rev in REVISIONS {
        let Some(commit) = read_ref(&repo_dir, rev) else {
            tried.push(format!("no ref {rev}"));
            continue;
        };
        let snap = repo_dir.join("snapshots").join(&commit);
        let mut rels = Vec::new();
        walk(&snap, "", 3, &mut rels);
        let mut rels: Vec<String> = rels
            .into_iter()
            .filter(|r| matches_split(r, config, split))
            .collect();
        if rels.is_empty() {
            tried.push(format!(
                "{rev} ({}) has no {config}/{split} parquet files",
                &commit
            ));
            continue;
        }
        rels.sort();
        return Ok(rels.iter().map(|r| snap.join(r)).collect());
    }
    Err(tried.join("; "))
}

fn download(root: &Path, name: &str, config: &str, split: &str) -> Result<Vec<PathBuf>, String> {
    use hf_hub::api::sync::ApiBuilder;
    let api = ApiBuilder::from_cache(hf_hub::Cache::new(root.to_path_buf()))
        .with_progress(false)
        .build()
        .map_err(|e| format!("hub client: {e}"))?;
    let mut tried = Vec::new();
    for rev in REVISIONS {
        let repo = api.repo(Repo::with_revision(
            name.to_string(),
            RepoType::Dataset,
            rev.to_string(),
        ));
        let info = match repo.info() {
            Ok(i) => i,
            Err(e) => {
                tried.push(format!("listing {rev}: {e}"));
                continue;
            }
        };
        let mut rels: Vec<String> = info
            .siblings
            .into_iter()
            .map(|s| s.rfilename)
            .filter(|r| matches_split(r, config, split))
            .collect();
        if rels.is_empty() {
            tried.push(format!("{rev} has no {config}/{split} parquet files"));
            continue;
        }
        rels.sort();
        let mut out = Vec::new();
        for r in &rels {
            out.push(repo.get(r).map_err(|e| format!("downloading {r}: {e}"))?);
        }
        return Ok(out);
    }
    Err(tried.join("; "))
}

/// Resolve the split to local Parquet files (cache first, then download).
pub fn resolve(
    opts: &HfOptions,
    name: &str,
    config: &str,
    split: &str,
) -> Result<Vec<PathBuf>, DataError> {
    let root = opts.cache_root();
    let err = |detail: String, hint: &'static str| DataError::HfNotCached {
        dataset: format!("hf://datasets/{name}/{config}/{split}"),
        cache: root.clone(),
        detail,
        hint,
    };
    let cached = match lookup_cache(&root, name, config, split) {
        Ok(files) => return Ok(files),
        Err(detail) => detail,
    };
    if opts.offline {
        return Err(err(
            format!("{cached}; offline"),
            "download it while online (unset HF_HUB_OFFLINE), or set HF_HUB_CACHE / HF_HOME to the cache that has it",
        ));
    }
    download(&root, name, config, split).map_err(|d| {
        err(
            format!("{cached}; download failed: {d}"),
            "check the dataset name/config/split and the network, or pre-download it into the cache",
        )
    })
}
