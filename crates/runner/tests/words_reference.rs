//! Per-word surprisal against the brute-force Python reference
//! (`scripts/references/words_reference.py` → `tests/fixtures/data/words_reference.json`).

use serde_json::Value;
use surprisal_runner::words::{
    bow_mask, log_mass, mark_tokens, word_rows, word_spans, TokenWordInput, WordRow,
};

fn fixture() -> Value {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/data/words_reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn logits_of(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().map(|f| f as f32).unwrap_or(f32::NEG_INFINITY))
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + b.abs())
}

/// Rows for each fixture document, computed the way the engine will: mask
/// from decoded vocab + EOS, nll and log P_bow from the logits.
fn rows_for(fx: &Value) -> Vec<(Value, Vec<WordRow>, f64)> {
    let vocab: Vec<String> = fx["vocab"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let mut mask = bow_mask(vocab.into_iter());
    mark_tokens(&mut mask, &[fx["eos_id"].as_u64().unwrap() as u32]);
    let mut out = Vec::new();
    for (d, doc) in fx["docs"].as_array().unwrap().iter().enumerate() {
        let text = doc["text"].as_str().unwrap();
        let logits: Vec<Vec<f32>> = doc["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(logits_of)
            .collect();
        let all = vec![true; mask.len()];
        let tokens: Vec<TokenWordInput> = doc["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let id = t["id"].as_u64().unwrap() as usize;
                let mut one = vec![false; mask.len()];
                one[id] = true;
                TokenWordInput {
                    byte_start: t["byte_start"].as_u64().unwrap() as usize,
                    byte_end: t["byte_end"].as_u64().unwrap() as usize,
                    nll_nats: Some(-(log_mass(&logits[i], &one) - log_mass(&logits[i], &all))),
                    log_p_bow_before: Some(log_mass(&logits[i], &mask)),
                }
            })
            .collect();
        let final_bow = log_mass(logits.last().unwrap(), &mask);
        out.push((
            doc.clone(),
            word_rows(d, text, &tokens, Some(final_bow)),
            final_bow,
        ));
    }
    out
}

#[test]
fn matches_brute_force_reference() {
    let fx = fixture();
    let mut n_words = 0;
    let mut max_corr = 0.0f64;
    for (doc, rows, _) in rows_for(&fx) {
        let want = doc["words"].as_array().unwrap();
        assert_eq!(rows.len(), want.len(), "{}", doc["text"]);
        for (r, w) in rows.iter().zip(want) {
            assert_eq!(r.word, w["word"].as_str().unwrap());
            assert_eq!(r.byte_start as u64, w["byte_start"].as_u64().unwrap());
            assert_eq!(r.byte_end as u64, w["byte_end"].as_u64().unwrap());
            assert_eq!(r.n_tokens as u64, w["n_tokens"].as_u64().unwrap(), "{r:?}");
            let su = w["surprisal_nats"].as_f64().unwrap();
            let sc = w["surprisal_corrected_nats"].as_f64().unwrap();
            let got_u = r.surprisal_nats.unwrap();
            let got_c = r.surprisal_corrected_nats.unwrap();
            assert!(close(got_u, su), "{r:?} uncorrected want {su}");
            assert!(close(got_c, sc), "{r:?} corrected want {sc}");
            max_corr = max_corr.max((sc - su).abs());
            n_words += 1;
        }
    }
    assert_eq!(n_words, 13);
    // The fixture must exercise the correction.
    assert!(max_corr > 0.5, "correction too small to test: {max_corr}");
}

#[test]
fn corrected_sum_telescopes() {
    // Σ corrected = Σ nll(all tokens in words) − log P_bow(after last word).
    let fx = fixture();
    let mut checked = 0;
    for (doc, rows, final_bow) in rows_for(&fx) {
        if doc["text"].as_str().unwrap().ends_with(char::is_whitespace) {
            continue; // trailing whitespace token: not in any word
        }
        let u: f64 = rows.iter().map(|r| r.surprisal_nats.unwrap()).sum();
        let c: f64 = rows
            .iter()
            .map(|r| r.surprisal_corrected_nats.unwrap())
            .sum();
        assert!(close(c, u - final_bow), "{c} vs {u} - {final_bow}");
        checked += 1;
    }
    assert_eq!(checked, 3);
}

fn tok(s: usize, e: usize, nll: Option<f64>, bow: Option<f64>) -> TokenWordInput {
    TokenWordInput {
        byte_start: s,
        byte_end: e,
        nll_nats: nll,
        log_p_bow_before: bow,
    }
}

#[test]
fn unscored_token_gives_none_not_partial() {
    // "ab cd": tokens "a"(unscored) "b" " c" "d"
    let t = "ab cd";
    let toks = [
        tok(0, 1, None, None),
        tok(1, 2, Some(1.0), Some(-1.0)),
        tok(2, 4, Some(2.0), Some(-0.5)),
        tok(4, 5, Some(3.0), Some(-2.0)),
    ];
    let rows = word_rows(7, t, &toks, Some(-0.25));
    assert_eq!(rows[0].doc, 7);
    assert_eq!(rows[0].n_tokens, 2);
    assert_eq!(rows[0].surprisal_nats, None);
    assert_eq!(rows[0].surprisal_corrected_nats, None);
    assert_eq!(rows[1].surprisal_nats, Some(5.0));
    // 5 − (−0.25) + (−0.5)
    assert_eq!(rows[1].surprisal_corrected_nats, Some(4.75));
    // Missing final mass: corrected is None, uncorrected stays.
    let rows = word_rows(0, t, &toks, None);
    assert_eq!(rows[1].surprisal_nats, Some(5.0));
    assert_eq!(rows[1].surprisal_corrected_nats, None);
}

#[test]
fn assignment_rules() {
    // "x\n\n yz  w" tokens: "x" "\n\n" " y" "z" " " " w" "<eos>"(empty span)
    let t = "x\n\n yz  w";
    let toks = [
        tok(0, 1, Some(1.0), Some(-0.1)),
        tok(1, 3, Some(2.0), Some(-0.2)),
        tok(3, 5, Some(4.0), Some(-0.3)),
        tok(5, 6, Some(8.0), Some(-0.4)),
        tok(6, 7, Some(16.0), Some(-0.5)),
        tok(7, 9, Some(32.0), Some(-0.6)),
        tok(9, 9, Some(64.0), Some(-0.7)),
    ];
    let rows = word_rows(0, t, &toks, Some(-0.8));
    let words: Vec<&str> = rows.iter().map(|r| r.word.as_str()).collect();
    assert_eq!(words, ["x", "yz", "w"]);
    assert_eq!(
        rows.iter().map(|r| r.n_tokens).collect::<Vec<_>>(),
        [1, 3, 2]
    );
    assert_eq!(rows[0].surprisal_nats, Some(1.0));
    assert_eq!(rows[1].surprisal_nats, Some(14.0));
    assert_eq!(rows[2].surprisal_nats, Some(48.0));
    // First word: no "before" term; after = bow before token 1.
    assert_eq!(rows[0].surprisal_corrected_nats, Some(1.0 + 0.2));
    assert_eq!(rows[1].surprisal_corrected_nats, Some(14.0 + 0.5 - 0.2));
    // Last word: after = bow before the (empty-span) EOS token.
    assert_eq!(rows[2].surprisal_corrected_nats, Some(48.0 + 0.7 - 0.5));
}

#[test]
fn straddling_token_and_missing_tokens() {
    // A token covering "a b" touches two words: both None.
    let t = "a b c";
    let toks = [
        tok(0, 3, Some(1.0), Some(0.0)),
        tok(3, 5, Some(1.0), Some(0.0)),
    ];
    let rows = word_rows(0, t, &toks, Some(0.0));
    assert_eq!(rows[0].surprisal_nats, None);
    assert_eq!(rows[1].surprisal_nats, None);
    assert_eq!(rows[2].surprisal_nats, Some(1.0));
    // Words without any token (truncated document): None, n_tokens 0.
    let rows = word_rows(0, t, &toks[..1], Some(0.0));
    assert_eq!(rows[2].n_tokens, 0);
    assert_eq!(rows[2].surprisal_nats, None);
}

#[test]
fn byte_fallback_tokens_share_a_span() {
    // "é" split into two byte tokens that both report the char's span.
    let t = "a é";
    let toks = [
        tok(0, 1, Some(1.0), Some(-1.0)),
        tok(1, 4, Some(2.0), Some(-1.5)),
        tok(1, 4, Some(3.0), Some(-9.0)),
    ];
    let rows = word_rows(0, t, &toks, Some(-2.0));
    assert_eq!(rows[1].word, "é");
    assert_eq!((rows[1].byte_start, rows[1].byte_end), (2, 4));
    assert_eq!(rows[1].n_tokens, 2);
    assert_eq!(rows[1].surprisal_nats, Some(5.0));
    assert_eq!(rows[1].surprisal_corrected_nats, Some(5.0 + 2.0 - 1.5));
}

#[test]
fn bow_mask_uses_decoded_text() {
    let m = bow_mask(
        [" the", "the", "\n", "Ġthe", "", "\u{3000}x", "▁x", "\tx"]
            .iter()
            .map(|s| s.to_string()),
    );
    assert_eq!(m, [true, false, true, false, false, true, false, true]);
    let mut m = m;
    mark_tokens(&mut m, &[4, 10]);
    assert!(m[4] && m[10] && !m[9]);
    assert_eq!(m.len(), 11);
}

#[test]
fn word_spans_crlf_and_unicode_space() {
    let t = "a\r\nb\u{2003}c ";
    let w: Vec<&str> = word_spans(t).iter().map(|s| &t[s.start..s.end]).collect();
    assert_eq!(w, ["a", "b", "c"]);
}
