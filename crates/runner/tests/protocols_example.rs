//! The worked examples of `PROTOCOLS.md` are produced by the planner exactly:
//! every example block in the document is re-rendered here and must appear
//! verbatim.

mod common;

use common::MockTokenizer;
use surprisal_runner::protocol::{DocTotals, ModelTokens, Planner};
use surprisal_runner::{BosMode, ProtocolConfig, ProtocolKind, Tokenize};

const TEXT: &str = "the cat sat on the mat and the dog ran";

fn render(kind: ProtocolKind, window: usize, stride: usize, bos: bool) -> String {
    let tok = MockTokenizer::new(false);
    let enc = tok.encode(TEXT).unwrap();
    assert_eq!(enc.ids.len(), 10);
    let p = ProtocolConfig {
        kind,
        window,
        stride,
        bos: if bos { BosMode::Always } else { BosMode::Never },
        max_tokens: None,
        max_chunks: None,
    }
    .resolve(&ModelTokens {
        bos_id: Some(1000),
        eos_id: None,
        adds_bos: false,
        max_context: None,
    })
    .unwrap();
    let mut pl = Planner::new(p);
    // ids replaced by their index so the rendering is tokenizer-independent
    let toks: Vec<(u32, usize, usize)> = enc
        .byte_spans
        .iter()
        .enumerate()
        .map(|(i, &(a, b))| (i as u32, a, b))
        .collect();
    pl.push_document(0, &toks, DocTotals::default());
    pl.finish().unwrap();
    let name = |id: u32| {
        if id == 1000 {
            "B".to_string()
        } else {
            format!("t{id}")
        }
    };
    let mut out = String::new();
    while let Some(w) = pl.pop() {
        let input: Vec<String> = w.input.iter().map(|&i| name(i)).collect();
        let scored: Vec<String> = w
            .scored
            .iter()
            .map(|s| format!("t{}({})", s.token.index, s.context_len()))
            .collect();
        out.push_str(&format!(
            "window {}: input [{}] scores {}\n",
            w.id,
            input.join(" "),
            scored.join(" ")
        ));
    }
    out
}

#[test]
fn protocols_md_examples_are_exact() {
    let md = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/PROTOCOLS.md")).unwrap();
    let cases = [
        (ProtocolKind::Sliding, 4, 2, false),
        (ProtocolKind::Sliding, 4, 2, true),
        (ProtocolKind::Chunks, 4, 0, false),
        (ProtocolKind::Chunks, 4, 0, true),
        (ProtocolKind::Rolling, 4, 0, false),
    ];
    for (kind, w, s, bos) in cases {
        let block = render(kind, w, s, bos);
        assert!(
            md.contains(&block),
            "PROTOCOLS.md lacks the block for {kind} window={w} stride={s} bos={bos}:\n{block}"
        );
    }
}

#[test]
fn print_examples() {
    // `cargo test --test protocols_example -- --nocapture print_examples`
    for (kind, w, s, bos) in [
        (ProtocolKind::Sliding, 4, 2, false),
        (ProtocolKind::Sliding, 4, 2, true),
        (ProtocolKind::Chunks, 4, 0, false),
        (ProtocolKind::Chunks, 4, 0, true),
        (ProtocolKind::Rolling, 4, 0, false),
    ] {
        println!("{kind} w={w} s={s} bos={bos}\n{}", render(kind, w, s, bos));
    }
}
