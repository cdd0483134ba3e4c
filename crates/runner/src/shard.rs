//! Sharded runs: which part of the corpus this process scores, and where it writes.
//!
//! Windows are planned over the whole corpus exactly as an unsharded run plans them; shard `i` of
//! `n` scores the contiguous window ids `⌊i·W/n⌋ .. ⌊(i+1)·W/n⌋` of the `W` planned windows, so
//! every token is scored with the context it has on one machine, and batches are aligned to the
//! same window ids as the unsharded run's (same batch composition, same numbers). With `--out DIR`
//! a shard writes `DIR/shard-00003-of-00016/`, a complete resumable run of its own;
//! `surprisal merge DIR` ([`crate::merge`]) combines them.
//!
//! The shard comes from, in this order: `--shard I/N` (or the config key `shard`);
//! `SURPRISAL_SHARD=I/N`; Slurm's `SLURM_ARRAY_TASK_ID` with `--shards N` or
//! `SLURM_ARRAY_TASK_COUNT`; Kubernetes' `JOB_COMPLETION_INDEX` (Indexed Jobs) with `--shards N`.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::error::{Result, RunError};

/// One shard of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// 0-based index, `< count`.
    pub index: u64,
    /// Number of shards.
    pub count: u64,
    /// Where the index (and count) came from, as reported in `summary.json`.
    pub source: String,
}

impl Shard {
    /// `I/N` with `0 ≤ I < N`; `what` names the setting in the error.
    pub fn parse(s: &str, what: &str, source: &str) -> Result<Shard> {
        let bad = || {
            RunError::Config(format!(
                "{what} {s:?}: expected I/N with 0 <= I < N (e.g. 3/16)"
            ))
        };
        let (i, n) = s.trim().split_once('/').ok_or_else(bad)?;
        let index: u64 = i.trim().parse().map_err(|_| bad())?;
        let count: u64 = n.trim().parse().map_err(|_| bad())?;
        Shard::new(index, count, source).map_err(|_| bad())
    }

    /// Checks `index < count`.
    pub fn new(index: u64, count: u64, source: &str) -> Result<Shard> {
        if count == 0 || index >= count {
            return Err(RunError::Config(format!(
                "shard index {index} is not below the shard count {count} ({source})"
            )));
        }
        Ok(Shard {
            index,
            count,
            source: source.to_string(),
        })
    }

    /// `shard-00003-of-00016`.
    pub fn dir_name(&self) -> String {
        dir_name(self.index, self.count)
    }

    /// The window ids of this shard among `total` planned windows.
    pub fn windows(&self, total: u64) -> Range<u64> {
        let at = |k: u64| (u128::from(total) * u128::from(k) / u128::from(self.count)) as u64;
        at(self.index)..at(self.index + 1)
    }
}

/// `shard-IIIII-of-NNNNN` (zero-padded to 5 digits).
pub fn dir_name(index: u64, count: u64) -> String {
    format!("shard-{index:05}-of-{count:05}")
}

/// `(index, count)` of a `shard-IIIII-of-NNNNN` directory name.
pub fn parse_dir_name(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix("shard-")?;
    let (i, n) = rest.split_once("-of-")?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(i) || !digits(n) {
        return None;
    }
    Some((i.parse().ok()?, n.parse().ok()?))
}

/// The shard of this process, from the flags and the environment (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The shard, if the run is sharded.
    pub shard: Option<Shard>,
    /// Things the user should know (printed as warnings by the CLI).
    pub warnings: Vec<String>,
}

/// Resolves the shard from `--shard` (`flag`, with `flag_source` naming it: the flag or the config
/// file), `--shards` and the environment (`env` looks a variable up).
pub fn resolve(
    flag: Option<&str>,
    flag_source: &str,
    shards: Option<u64>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Resolved> {
    let mut warnings = Vec::new();
    if shards == Some(0) {
        return Err(RunError::Config("--shards must be at least 1".into()));
    }
    let check_count = |s: Shard| -> Result<Shard> {
        match shards {
            Some(n) if n != s.count => Err(RunError::Config(format!(
                "{} says {} shards but --shards says {n}",
                s.source, s.count
            ))),
            _ => Ok(s),
        }
    };
    if let Some(f) = flag {
        return Ok(Resolved {
            shard: Some(check_count(Shard::parse(f, flag_source, flag_source)?)?),
            warnings,
        });
    }
    if let Some(v) = env("SURPRISAL_SHARD") {
        let s = Shard::parse(&v, "SURPRISAL_SHARD", "SURPRISAL_SHARD")?;
        return Ok(Resolved {
            shard: Some(check_count(s)?),
            warnings,
        });
    }
    let index_of = |var: &str| -> Result<Option<u64>> {
        env(var)
            .map(|v| {
                v.trim().parse::<u64>().map_err(|_| {
                    RunError::Config(format!("{var}={v:?} is not a non-negative integer"))
                })
            })
            .transpose()
    };
    if let Some(i) = index_of("SLURM_ARRAY_TASK_ID")? {
        let count = match (shards, index_of("SLURM_ARRAY_TASK_COUNT")?) {
            (Some(n), _) => n,
            (None, Some(n)) => {
                if n == 1 {
                    warnings.push(
                        "SLURM_ARRAY_TASK_COUNT is 1: a re-submitted single array task reports a count of 1; pass --shards N to name the real shard count"
                            .into(),
                    );
                }
                n
            }
            (None, None) => {
                return Err(RunError::Config(
                    "SLURM_ARRAY_TASK_ID is set but neither --shards N nor SLURM_ARRAY_TASK_COUNT says how many shards there are".into(),
                ))
            }
        };
        let source = if shards.is_some() {
            "SLURM_ARRAY_TASK_ID with --shards"
        } else {
            "SLURM_ARRAY_TASK_ID with SLURM_ARRAY_TASK_COUNT"
        };
        let shard = Shard::new(i, count, source).map_err(|e| match (e, warnings.first()) {
            (RunError::Config(m), Some(w)) => RunError::Config(format!("{m}; {w}")),
            (e, _) => e,
        })?;
        return Ok(Resolved {
            shard: Some(shard),
            warnings,
        });
    }
    if let Some(i) = index_of("JOB_COMPLETION_INDEX")? {
        return match shards {
            Some(n) => Ok(Resolved {
                shard: Some(Shard::new(i, n, "JOB_COMPLETION_INDEX with --shards")?),
                warnings,
            }),
            None => Err(RunError::Config(
                "JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job) but Kubernetes gives no shard count: pass --shards N (the Job's completions)".into(),
            )),
        };
    }
    if let Some(n) = shards {
        return Err(RunError::Config(format!(
            "--shards {n} needs a shard index: --shard I/{n}, SURPRISAL_SHARD, SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX"
        )));
    }
    Ok(Resolved {
        shard: None,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn ranges_are_contiguous_and_cover_every_window() {
        for total in [0u64, 1, 5, 16, 17, 1000] {
            for n in [1u64, 2, 3, 7, 16] {
                let mut next = 0;
                for i in 0..n {
                    let r = Shard::new(i, n, "t").unwrap().windows(total);
                    assert_eq!(r.start, next);
                    next = r.end;
                }
                assert_eq!(next, total);
            }
        }
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(dir_name(3, 16), "shard-00003-of-00016");
        assert_eq!(parse_dir_name("shard-00003-of-00016"), Some((3, 16)));
        assert_eq!(parse_dir_name("shard-x-of-2"), None);
        assert_eq!(parse_dir_name("summary.json"), None);
    }

    #[test]
    fn sources_in_order() {
        let all = [
            ("SURPRISAL_SHARD", "1/4"),
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("JOB_COMPLETION_INDEX", "3"),
        ];
        let r = resolve(Some("0/4"), "--shard", None, env(&all)).unwrap();
        assert_eq!(r.shard.unwrap().index, 0);
        let r = resolve(None, "--shard", None, env(&all)).unwrap();
        assert_eq!(r.shard.unwrap().source, "SURPRISAL_SHARD");
        let r = resolve(None, "--shard", None, env(&all[1..])).unwrap();
        let s = r.shard.unwrap();
        assert_eq!((s.index, s.count), (2, 4));
        let r = resolve(None, "--shard", Some(4), env(&all[3..])).unwrap();
        assert_eq!(r.shard.unwrap().index, 3);
        assert!(resolve(None, "--shard", None, env(&all[3..])).is_err());
        assert!(resolve(None, "--shard", None, env(&[]))
            .unwrap()
            .shard
            .is_none());
        assert!(resolve(None, "--shard", Some(4), env(&[])).is_err());
        let r = resolve(
            None,
            "--shard",
            None,
            env(&[
                ("SLURM_ARRAY_TASK_ID", "0"),
                ("SLURM_ARRAY_TASK_COUNT", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(r.warnings.len(), 1);
        let e = resolve(
            None,
            "--shard",
            None,
            env(&[
                ("SLURM_ARRAY_TASK_ID", "2"),
                ("SLURM_ARRAY_TASK_COUNT", "1"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--shards N"), "{e}");
        assert!(resolve(Some("4/4"), "--shard", None, env(&[])).is_err());
        assert!(resolve(Some("1/4"), "--shard", Some(3), env(&[])).is_err());
    }
}
