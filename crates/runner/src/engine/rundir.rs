//! An output directory holding one run: its lock, its state ([`Checkpoint`]) and its token-row
//! sink; opening decides between a fresh run, a resumed one and a finished one (a no-op), and
//! [`RunDir::finish`] writes the final files in crash-safe order.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::RunOptions;
use crate::error::{Result, RunError};
use crate::output::checkpoint::{checkpoint_path, Checkpoint, Fingerprint};
use crate::output::lock::DirLock;
use crate::output::rows::{RowKind, RowSink, TokenRow, WordRow};
use crate::output::summary::{now_rfc3339, SummaryFile, SUMMARY_FILE};
use crate::words::stream::WordStream;

/// What [`RunDir::open`] found.
pub(crate) enum Opened<A, R: RowKind> {
    /// The run in this directory already finished: nothing to do.
    Complete(Checkpoint<A>),
    /// Ready to run, fresh or resumed.
    Run(RunDir<R>, Checkpoint<A>),
}

/// A locked output directory with its token-row sink.
pub(crate) struct RunDir<R: RowKind> {
    path: PathBuf,
    _lock: DirLock,
    rows: RowSink<R>,
}

impl<R: RowKind> RunDir<R> {
    /// Locks `path` and opens the run described by `fp` in it. A fresh run starts at window
    /// `first_window`. Without `opts.resume` an existing run is refused, except a finished shard
    /// (a scheduler retry of a finished task is a no-op).
    pub fn open<A>(
        path: &Path,
        opts: &RunOptions,
        fp: &Fingerprint,
        first_window: u64,
    ) -> Result<Opened<A, R>>
    where
        A: Default + Serialize + DeserializeOwned,
    {
        std::fs::create_dir_all(path).map_err(|e| RunError::io(path, e))?;
        let lock = DirLock::acquire(path)?;
        let exists = checkpoint_path(path).exists();
        let already = || {
            RunError::Checkpoint(format!(
                "{} already holds a run (checkpoint.json); pass --resume to continue or reuse it, or choose another --out directory",
                path.display()
            ))
        };
        let sharded = fp.shard.is_some();
        if exists && !opts.resume && !sharded {
            return Err(already());
        }
        let ck = match Checkpoint::<A>::load(path, fp)? {
            Some(ck) if ck.complete => {
                // A crash after the complete mark may have left staged parts behind.
                remove_row_parts(path)?;
                return Ok(Opened::Complete(ck));
            }
            Some(_) if !opts.resume => return Err(already()),
            Some(ck) => {
                tracing::info!(windows = ck.windows_done, "resuming from checkpoint");
                ck
            }
            None => {
                // stale outputs of an earlier run must not survive
                for name in [
                    Some(SUMMARY_FILE),
                    opts.rows.file_name(),
                    opts.words.words_file_name(),
                ]
                .into_iter()
                .flatten()
                {
                    let p = path.join(name);
                    if p.exists() {
                        std::fs::remove_file(&p).map_err(|e| RunError::io(&p, e))?;
                    }
                }
                let ck = Checkpoint::new(fp.clone(), first_window, now_rfc3339());
                ck.save(path)?; // mark the directory as holding this run right away
                ck
            }
        };
        let rows = RowSink::open(path, opts.rows, ck.row_parts, ck.rows_written)?;
        Ok(Opened::Run(
            RunDir {
                path: path.to_path_buf(),
                _lock: lock,
                rows,
            },
            ck,
        ))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends token rows to the current part.
    pub fn append(&mut self, rows: &[R]) -> Result<()> {
        self.rows.append(rows)
    }

    /// Finalizes the current row parts and saves `ck` (with `elapsed` seconds) counting them.
    pub fn checkpoint<A: Serialize + DeserializeOwned>(
        &mut self,
        ck: &mut Checkpoint<A>,
        words: Option<&mut WordStream>,
        elapsed: f64,
    ) -> Result<()> {
        self.rows.finalize_part()?;
        ck.row_parts = self.rows.parts();
        ck.rows_written = self.rows.rows();
        ck.word_rows = match words {
            Some(w) => {
                w.finalize_part()?;
                Some(w.to_ck())
            }
            None => None,
        };
        ck.elapsed_seconds = elapsed;
        ck.save(&self.path)
    }

    /// Writes the final files: a last checkpoint, the rows files, `summary.json`, then the
    /// complete mark, then removes the staged parts. Returns the (summary, rows, words) paths.
    pub fn finish<A, S>(
        mut self,
        mut ck: Checkpoint<A>,
        mut words: Option<WordStream>,
        summary: &SummaryFile<S>,
    ) -> Result<(PathBuf, Option<PathBuf>, Option<PathBuf>)>
    where
        A: Serialize + DeserializeOwned,
        S: Serialize + DeserializeOwned,
    {
        let elapsed = summary.elapsed_seconds;
        self.checkpoint(&mut ck, words.as_mut(), elapsed)?;
        let rows_path = self.rows.finish()?;
        let words_path = match words {
            Some(w) => w.finish()?,
            None => None,
        };
        let summary_path = summary.write(&self.path)?;
        ck.complete = true;
        ck.save(&self.path)?;
        remove_row_parts(&self.path)?;
        Ok((summary_path, rows_path, words_path))
    }
}

/// Deletes the staged token and word row parts once the run is marked complete.
fn remove_row_parts(dir: &Path) -> Result<()> {
    RowSink::<TokenRow>::remove_parts(dir)?;
    RowSink::<WordRow>::remove_parts(dir)
}
