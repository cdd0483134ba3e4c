//! `surprisal merge DIR`: combines the shard directories `DIR/shard-IIIII-of-NNNNN/` of a
//! sharded run ([`crate::shard`]) into `DIR/summary.json`, `DIR/tokens.*` and `DIR/words.*`, equal
//! to what the unsharded run writes: the same rows in the same order, the aggregates folded in
//! shard order (counts, quantiles, bins and the top-KL list exactly; sums and means up to the
//! rounding of a parallel merge, ~1e-15 relative), and the per-word rows of documents that cross a
//! shard boundary joined from the shards' edge documents ([`crate::words::stream`]).
//!
//! It refuses, naming the shard: a missing or duplicate index, a shard that is not finished (or is
//! still being written: its lock is held), shards of different runs (fingerprints: model, data,
//! protocol, settings; tool version) or of different shard counts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::engine::mode::Aggregate;
use crate::engine::rate;
use crate::error::{Result, RunError};
use crate::output::checkpoint::{Checkpoint, Fingerprint};
use crate::output::lock::DirLock;
use crate::output::rows::{read_rows, CompareRow, RowKind, RowSink, RowsFormat, TokenRow, WordRow};
use crate::output::summary::{now_rfc3339, SummaryFile, SCHEMA_VERSION, SUMMARY_FILE};
use crate::protocol::ProtocolKind;
use crate::shard::{dir_name, parse_dir_name};
use crate::top_kl::CompareAgg;
use crate::words::stream::EdgeDoc;

/// What `merge` wrote.
#[derive(Clone, Debug)]
pub struct Merged {
    /// `eval` or `compare`.
    pub mode: String,
    /// Shards merged.
    pub shards: u64,
    /// Tokens scored over all shards.
    pub tokens_scored: u64,
    /// `DIR/summary.json`.
    pub summary_path: PathBuf,
    /// `DIR/tokens.*`, if the shards wrote token rows.
    pub rows_path: Option<PathBuf>,
    /// `DIR/words.*`, if the shards wrote word rows.
    pub words_path: Option<PathBuf>,
}

fn refuse(msg: String) -> RunError {
    RunError::Merge(msg)
}

/// The shard directories of `dir`, by index, after checking the set is complete.
fn shard_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found: BTreeMap<u64, PathBuf> = BTreeMap::new();
    let mut count: Option<(u64, PathBuf)> = None;
    let mut entries = std::fs::read_dir(dir)
        .and_then(|rd| rd.collect::<std::io::Result<Vec<_>>>())
        .map_err(|e| RunError::io(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("shard-") || !entry.path().is_dir() {
            continue;
        }
        let path = entry.path();
        let Some((i, n)) = parse_dir_name(&name) else {
            return Err(refuse(format!(
                "{} is not named shard-IIIII-of-NNNNN",
                path.display()
            )));
        };
        match &count {
            Some((m, first)) if *m != n => {
                return Err(refuse(format!(
                    "different shard counts: {} is one of {m} shards, {} is one of {n} shards",
                    first.display(),
                    path.display()
                )))
            }
            Some(_) => {}
            None => count = Some((n, path.clone())),
        }
        if i >= n {
            return Err(refuse(format!(
                "{}: index {i} is not below the shard count {n}",
                path.display()
            )));
        }
        if let Some(other) = found.insert(i, path.clone()) {
            return Err(refuse(format!(
                "shard {i} appears twice: {} and {}",
                other.display(),
                path.display()
            )));
        }
    }
    let Some((n, _)) = count else {
        return Err(refuse(format!(
            "{} holds no shard directories (shard-IIIII-of-NNNNN); run eval/compare with --shard or --shards and --out {} first",
            dir.display(),
            dir.display()
        )));
    };
    if let Some(missing) = (0..n).find(|i| !found.contains_key(i)) {
        return Err(refuse(format!(
            "shard {missing} of {n} is missing: no {}",
            dir.join(dir_name(missing, n)).display()
        )));
    }
    Ok(found.into_values().collect())
}

/// Merges the shards in `dir` (see the module docs).
pub fn merge(dir: &Path) -> Result<Merged> {
    let _lock = DirLock::acquire(dir)?;
    let shards = shard_dirs(dir)?;
    // The mode decides the aggregate and row types.
    let first = &shards[0];
    let mode = {
        let p = crate::output::checkpoint::checkpoint_path(first);
        let text = std::fs::read_to_string(&p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => refuse(format!(
                "{} is not finished: it has no checkpoint.json",
                first.display()
            )),
            _ => RunError::io(&p, e),
        })?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            RunError::Checkpoint(format!("{} is not a valid checkpoint: {e}", p.display()))
        })?;
        v["fingerprint"]["mode"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    match mode.as_str() {
        "eval" => merge_as::<surprisal_metrics::EvalAggregate, TokenRow>(dir, &shards),
        "compare" => merge_as::<CompareAgg, CompareRow>(dir, &shards),
        other => Err(refuse(format!(
            "{}: unknown mode {other:?} in checkpoint.json",
            first.display()
        ))),
    }
}

/// One finished shard, read back.
struct ShardRun<A: Aggregate> {
    path: PathBuf,
    ck: Checkpoint<A>,
    summary: SummaryFile<A::Summary>,
    _lock: DirLock,
}

fn read_shard<A: Aggregate>(path: &Path) -> Result<ShardRun<A>> {
    let lock = DirLock::acquire(path)?;
    let ck = Checkpoint::<A>::read(path)?.ok_or_else(|| {
        refuse(format!(
            "{} is not finished: it has no checkpoint.json",
            path.display()
        ))
    })?;
    if !ck.complete {
        return Err(refuse(format!(
            "{} is not finished ({} windows done); rerun that shard with --resume",
            path.display(),
            ck.windows_done
        )));
    }
    let summary = SummaryFile::read(&path.join(SUMMARY_FILE))?;
    Ok(ShardRun {
        path: path.to_path_buf(),
        ck,
        summary,
        _lock: lock,
    })
}

fn without_shard(fp: &Fingerprint) -> Fingerprint {
    Fingerprint {
        shard: None,
        ..fp.clone()
    }
}

fn merge_as<A, R>(dir: &Path, paths: &[PathBuf]) -> Result<Merged>
where
    A: Aggregate,
    R: RowKind,
{
    let n = paths.len() as u64;
    let runs = paths
        .iter()
        .map(|p| read_shard::<A>(p))
        .collect::<Result<Vec<_>>>()?;
    let head = &runs[0];
    let fp0 = without_shard(&head.ck.fingerprint);
    for (i, r) in runs.iter().enumerate() {
        let sfp = r.ck.fingerprint.shard.ok_or_else(|| {
            refuse(format!(
                "{} is not a shard (no shard in its checkpoint)",
                r.path.display()
            ))
        })?;
        if sfp.index != i as u64 || sfp.count != n {
            return Err(refuse(format!(
                "{} holds shard {}/{} of its run, its name says {i}/{n}",
                r.path.display(),
                sfp.index,
                sfp.count
            )));
        }
        let head_total = head.ck.fingerprint.shard.map(|s| s.windows_total);
        if Some(sfp.windows_total) != head_total {
            return Err(refuse(format!(
                "{} planned {} windows, {} planned {}",
                r.path.display(),
                sfp.windows_total,
                head.path.display(),
                head_total.unwrap_or(0)
            )));
        }
        let diff = fp0.differences(&without_shard(&r.ck.fingerprint));
        if !diff.is_empty() {
            return Err(refuse(format!(
                "{} was made by a different run than {} ({})",
                r.path.display(),
                head.path.display(),
                diff.join("; ").replace("checkpoint has", "the first has")
            )));
        }
        let (a, b) = (
            &head.summary.provenance.tool_version,
            &r.summary.provenance.tool_version,
        );
        if a != b {
            return Err(refuse(format!(
                "{} was written by surprisal {b}, {} by {a}",
                r.path.display(),
                head.path.display()
            )));
        }
    }
    // ---- aggregates, folded in shard order ----
    let mut agg = head.ck.aggregate.clone();
    for r in &runs[1..] {
        agg.merge(&r.ck.aggregate);
    }
    let bytes: u64 = runs.iter().map(|r| r.ck.bytes_scored).sum();
    let words: u64 = runs.iter().map(|r| r.ck.words).sum();
    let windows: u64 = runs.iter().map(|r| r.summary.windows).sum();
    let elapsed: f64 = runs.iter().map(|r| r.summary.elapsed_seconds).sum();
    let rolling = head.summary.protocol.name == ProtocolKind::Rolling;
    let tokens = agg.count();
    // ---- rows ----
    let rows_path = merge_token_rows::<A, R>(dir, &runs, fp0.rows)?;
    let words_path = merge_word_rows(dir, &runs, fp0.words)?;
    let summary = SummaryFile {
        schema_version: SCHEMA_VERSION,
        metrics: agg.summary(Some(bytes), rolling.then_some(words)),
        mode: head.summary.mode.clone(),
        windows,
        tokens_per_second: rate(tokens, elapsed),
        elapsed_seconds: elapsed,
        provenance: head.summary.provenance.clone(),
        protocol: head.summary.protocol.clone(),
        started_at: runs
            .iter()
            .map(|r| r.summary.started_at.clone())
            .min()
            .unwrap_or_default(),
        finished_at: now_rfc3339(),
        stats_on: head.summary.stats_on,
        shard: None,
        merged_shards: Some(n),
    };
    let summary_path = summary.write(dir)?;
    Ok(Merged {
        mode: summary.mode,
        shards: n,
        tokens_scored: tokens,
        summary_path,
        rows_path,
        words_path,
    })
}

/// Concatenates the shards' token rows in shard order.
fn merge_token_rows<A: Aggregate, R: RowKind>(
    dir: &Path,
    runs: &[ShardRun<A>],
    format: RowsFormat,
) -> Result<Option<PathBuf>> {
    let Some(name) = R::file_name(format) else {
        return Ok(None);
    };
    let mut sink = RowSink::<R>::open(dir, format, 0, 0)?;
    for r in runs {
        sink.append(&read_rows::<R>(&r.path.join(name))?)?;
        sink.finalize_part()?;
    }
    let path = sink.finish()?;
    RowSink::<R>::remove_parts(dir)?;
    Ok(path)
}

/// The shards' word rows in document order, with the rows of documents that cross a shard
/// boundary made from their joined edges.
fn merge_word_rows<A: Aggregate>(
    dir: &Path,
    runs: &[ShardRun<A>],
    format: RowsFormat,
) -> Result<Option<PathBuf>> {
    let Some(name) = format.words_file_name() else {
        return Ok(None);
    };
    let mut sink = RowSink::<WordRow>::open(dir, format, 0, 0)?;
    let mut edges: BTreeMap<u64, EdgeDoc> = BTreeMap::new();
    let flush_before = |edges: &mut BTreeMap<u64, EdgeDoc>, ordinal: u64| -> Vec<WordRow> {
        let keep = edges.split_off(&ordinal);
        let done = std::mem::replace(edges, keep);
        done.values().flat_map(EdgeDoc::rows).collect()
    };
    for r in runs {
        let state = r.ck.word_rows.clone().ok_or_else(|| {
            refuse(format!(
                "{} has no word state in its checkpoint",
                r.path.display()
            ))
        })?;
        for e in state.edges {
            match edges.get_mut(&e.ordinal) {
                Some(have) => have.absorb(e),
                None => {
                    edges.insert(e.ordinal, e);
                }
            }
        }
        if let Some([first, _]) = state.owned {
            sink.append(&flush_before(&mut edges, first))?;
            sink.append(&read_rows::<WordRow>(&r.path.join(name))?)?;
        }
        sink.finalize_part()?;
    }
    sink.append(&flush_before(&mut edges, u64::MAX))?;
    let path = sink.finish()?;
    RowSink::<WordRow>::remove_parts(dir)?;
    Ok(path)
}
