//! The planner must reproduce `tests/data/window_reference.json`, written by
//! the independent Python implementation `scripts/references/window_reference.py`.

use serde::Deserialize;
use surprisal_runner::protocol::{
    BosMode, DocTotals, ModelTokens, Planner, ProtocolConfig, ProtocolKind,
};

#[derive(Deserialize)]
struct Case {
    protocol: String,
    docs: Vec<usize>,
    window: usize,
    stride: usize,
    bos: bool,
    max_chunks: Option<u64>,
    error: bool,
    scored: Vec<(u64, usize, u64)>,
}

#[derive(Deserialize)]
struct File {
    cases: Vec<Case>,
}

const BOS: u32 = 1_000_000;

fn run(case: &Case) -> Result<Vec<(u64, usize, u64)>, String> {
    let cfg = ProtocolConfig {
        kind: case
            .protocol
            .parse::<ProtocolKind>()
            .map_err(|e| e.to_string())?,
        window: case.window,
        stride: case.stride,
        bos: if case.bos {
            BosMode::Always
        } else {
            BosMode::Never
        },
        max_tokens: None,
        max_chunks: case.max_chunks,
    };
    let model = ModelTokens {
        bos_id: Some(BOS),
        eos_id: None,
        adds_bos: false,
        max_context: None,
    };
    let p = cfg.resolve(&model).map_err(|e| e.to_string())?;
    let mut planner = Planner::new(p);
    let mut out = Vec::new();
    let drain = |pl: &mut Planner, out: &mut Vec<(u64, usize, u64)>| {
        while let Some(w) = pl.pop() {
            assert!(w.input.len() <= case.window);
            for s in &w.scored {
                // the input really is the stream (ids = global index)
                if s.position + 1 < w.input.len() {
                    assert_eq!(w.input[s.position + 1] as u64, s.token.global);
                }
                out.push((s.token.global, s.context_len(), w.id));
            }
        }
    };
    let mut g = 0u32;
    for (d, &len) in case.docs.iter().enumerate() {
        let toks: Vec<(u32, usize, usize)> = (0..len as u32).map(|i| (g + i, 0, 1)).collect();
        g += len as u32;
        planner.push_document(d, &toks, DocTotals::default());
        drain(&mut planner, &mut out);
    }
    planner.finish().map_err(|e| e.to_string())?;
    drain(&mut planner, &mut out);
    Ok(out)
}

#[test]
fn planner_matches_python_reference() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/window_reference.json"
    ))
    .unwrap();
    let file: File = serde_json::from_str(&text).unwrap();
    assert!(file.cases.len() > 100);
    let mut checked = 0;
    for case in &file.cases {
        let what = format!(
            "{} docs={:?} window={} stride={} bos={} max_chunks={:?}",
            case.protocol, case.docs, case.window, case.stride, case.bos, case.max_chunks
        );
        match run(case) {
            Ok(got) => {
                assert!(
                    !case.error,
                    "{what}: expected an error, got {} tokens",
                    got.len()
                );
                assert_eq!(got, case.scored, "{what}");
            }
            Err(e) => assert!(case.error, "{what}: unexpected error {e}"),
        }
        checked += 1;
    }
    assert_eq!(checked, file.cases.len());
}
