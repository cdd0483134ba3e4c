//! A Parquet corpus read through the runner's public reader (`data::open` on a `.parquet` path,
//! `--text-field text`), every document to the end of the stream.
//!
//! parquet 57 panics on some corrupt files (apache/arrow-rs#9839 and others); as a last resort
//! crates/runner/src/data/pq.rs runs the parquet/arrow calls under `catch_unwind` and returns
//! `DataError::Parquet`. Under libFuzzer every panic aborts in the panic hook, before it could be
//! caught, so this target lets a panic unwind when it happens inside pq.rs's `guarded` (seen in the
//! backtrace) and not in our own code, reporting each such panic location once on stderr (`NOTE:
//! tolerated ...`); every other panic aborts as usual, and a tolerated one that escapes the guard
//! still aborts in libfuzzer-sys. With `SURPRISAL_FUZZ_STRICT_PARQUET=1` every panic aborts (to
//! find or minimize inputs that make parquet panic).
#![no_main]

mod common;

use std::collections::HashSet;
use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;

fn tolerate_parquet_panics() {
    if std::env::var_os("SURPRISAL_FUZZ_STRICT_PARQUET").is_some() {
        return;
    }
    let abort_hook = std::panic::take_hook();
    let seen = Mutex::new(HashSet::new());
    std::panic::set_hook(Box::new(move |info| {
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let in_our_code = ["crates/runner/", "crates/models/", "fuzz_targets/"]
            .iter()
            .any(|c| at.contains(c));
        // A frame `guarded` (possibly inlined, printed without its module path) whose source is
        // crates/runner/src/data/pq.rs.
        let in_guard = || {
            let bt = std::backtrace::Backtrace::force_capture().to_string();
            let lines: Vec<&str> = bt.lines().map(str::trim).collect();
            lines.windows(2).any(|w| {
                w[0].split_once(": ")
                    .is_some_and(|(_, f)| f.starts_with("guarded") || f.contains("::guarded"))
                    && w[1].contains("crates/runner/src/data/pq.rs")
            })
        };
        if in_our_code || !in_guard() {
            return abort_hook(info);
        }
        if seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(at.clone())
        {
            let msg = info.to_string().replace('\n', " ");
            eprintln!("NOTE: tolerated panic inside pq.rs's guard at {at}: {msg}");
        }
    }));
}

fuzz_target!(init: tolerate_parquet_panics(), |data: &[u8]| {
    common::read_corpus("corpus.parquet", data);
});
