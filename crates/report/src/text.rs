//! The text coloured by surprisal: one span per scored token (or word) with its numbers in a
//! tooltip, colour classes quantized from a perceptual map, and a marker wherever text was not
//! scored (the first half of each `chunks` window, a new document).

use std::collections::HashMap;

use serde::Serialize;
use surprisal_runner::rows::{TokenRow, WordRow};

use crate::run::RefColumns;

/// Colour classes of the text (`c0` … `c{N−1}`).
pub const COLOR_STEPS: usize = 32;
/// Surprisal at the top of the text colour scale (nats); larger values get the last class.
pub const TEXT_MAX_NATS: f64 = 10.0;
/// The colour map of the text (dark = surprising on a light page would hide the text; magma's
/// light end is for low surprisal).
pub const TEXT_MAP: colorous::Gradient = colorous::MAGMA;

/// One coloured piece of text, or a marker of text that was not scored.
#[derive(Clone, Debug, Serialize)]
pub struct Span {
    /// The text shown.
    pub text: String,
    /// CSS class: `c{k}` (surprisal class), `cx` (no value), `gap` (unscored text), `doc`
    /// (document boundary).
    pub class: String,
    /// The tooltip.
    pub tip: String,
}

/// A CSS colour class.
#[derive(Clone, Debug, Serialize)]
pub struct ColorClass {
    /// `c{k}`.
    pub name: String,
    /// Background, `#rrggbb`.
    pub background: String,
    /// Text colour with enough contrast on it.
    pub color: String,
}

/// The colour of class `c{k}`: the map reversed (light = predictable, dark = surprising, so the
/// eye goes to the surprises on a light page).
pub fn class_color(k: usize) -> colorous::Color {
    TEXT_MAP.eval_continuous(1.0 - (k as f64 + 0.5) / COLOR_STEPS as f64)
}

/// The classes `c0` … `c{COLOR_STEPS−1}`.
pub fn color_classes() -> Vec<ColorClass> {
    (0..COLOR_STEPS)
        .map(|k| {
            let c = class_color(k);
            let luminance =
                0.2126 * f64::from(c.r) + 0.7152 * f64::from(c.g) + 0.0722 * f64::from(c.b);
            ColorClass {
                name: format!("c{k}"),
                background: format!("#{:02x}{:02x}{:02x}", c.r, c.g, c.b),
                color: if luminance > 140.0 { "#000" } else { "#fff" }.into(),
            }
        })
        .collect()
}

/// The colour class of a surprisal.
pub fn class_of(nats: Option<f64>) -> String {
    match nats.filter(|v| v.is_finite()) {
        None => "cx".into(),
        Some(v) => {
            let k = ((v / TEXT_MAX_NATS) * COLOR_STEPS as f64).floor().max(0.0) as usize;
            format!("c{}", k.min(COLOR_STEPS - 1))
        }
    }
}

/// `"text"` with escapes, so that whitespace and control tokens are visible in a tooltip.
pub fn quoted(s: &str) -> String {
    format!("{s:?}")
}

/// The first `n` token rows as spans. `vocab` gives the text of the top-1 guesses (token ids that
/// appear as targets anywhere in the run); `reference`: `compare` columns, one per row.
pub fn token_spans(
    rows: &[TokenRow],
    reference: &[RefColumns],
    vocab: &HashMap<u32, String>,
    n: usize,
) -> Vec<Span> {
    let mut out = Vec::with_capacity(n + n / 8);
    let mut prev: Option<(u64, u64)> = None;
    for (k, r) in rows.iter().take(n).enumerate() {
        boundary(&mut out, prev, r.doc, r.byte_start);
        prev = Some((r.doc, r.byte_end));
        let top1 = if r.top1_id == r.token_id {
            "the token itself".to_string()
        } else {
            vocab
                .get(&r.top1_id)
                .map_or_else(|| format!("id {}", r.top1_id), |t| quoted(t))
        };
        let mut tip = format!(
            "{} · NLL {:.3} nats · entropy {:.3} nats · rank {} · top-1 {} (p {:.3})",
            quoted(&r.token),
            r.nll_nats,
            r.entropy_nats,
            r.target_rank,
            top1,
            r.top1_prob
        );
        if let Some(c) = reference.get(k) {
            tip.push_str(&format!(
                " · KL {:.4} nats · reference NLL {:.3} nats",
                c.kl_nats, c.ref_nll_nats
            ));
        }
        out.push(Span {
            text: r.token.clone(),
            class: class_of(Some(r.nll_nats)),
            tip,
        });
    }
    out
}

/// The first `n` scored words (rows with a surprisal) as spans, coloured by the corrected
/// surprisal. Consecutive words are separated by a space (the row holds the word, not the
/// whitespace before it); skipped (unscored) words by a gap marker.
pub fn word_spans(rows: &[WordRow], n: usize) -> Vec<Span> {
    let mut out = Vec::with_capacity(2 * n);
    // (doc, byte_end, word_index) of the last word shown
    let mut prev: Option<(u64, u64, usize)> = None;
    for w in rows.iter().filter(|w| w.surprisal_nats.is_some()).take(n) {
        let (doc, start) = (w.doc as u64, w.byte_start as u64);
        match prev {
            Some((d, end, i)) if d == doc && i + 1 == w.word_index => {
                if end < start {
                    out.push(Span {
                        text: " ".into(),
                        class: "ws".into(),
                        tip: String::new(),
                    });
                }
            }
            _ => boundary(&mut out, prev.map(|(d, e, _)| (d, e)), doc, start),
        }
        prev = Some((doc, w.byte_end as u64, w.word_index));
        let fmt = |v: Option<f64>| v.map_or_else(|| "—".into(), |v| format!("{v:.3} nats"));
        out.push(Span {
            text: w.word.clone(),
            class: class_of(w.surprisal_corrected_nats.or(w.surprisal_nats)),
            tip: format!(
                "{} · surprisal {} · corrected {} · {} token{}",
                quoted(&w.word),
                fmt(w.surprisal_nats),
                fmt(w.surprisal_corrected_nats),
                w.n_tokens,
                if w.n_tokens == 1 { "" } else { "s" }
            ),
        });
    }
    out
}

/// A marker between two spans where text was skipped or a document starts.
fn boundary(out: &mut Vec<Span>, prev: Option<(u64, u64)>, doc: u64, start: u64) {
    match prev {
        None if start == 0 => {}
        Some((d, end)) if d == doc && end == start => {}
        Some((d, end)) if d == doc => out.push(Span {
            text: " … ".into(),
            class: "gap".into(),
            tip: format!("{} bytes not scored", start.saturating_sub(end)),
        }),
        _ => out.push(Span {
            text: format!("⟨document {doc}⟩"),
            class: "doc".into(),
            tip: format!("document {doc}, from byte {start}"),
        }),
    }
}

/// Token id → text of every target token in the rows (the top-1 guesses' texts, as far as the
/// run's own tokens show them; the tokenizer is not loaded).
pub fn vocabulary(rows: &[TokenRow]) -> HashMap<u32, String> {
    rows.iter().map(|r| (r.token_id, r.token.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(doc: u64, start: u64, token: &str, nll: f64, top1_id: u32) -> TokenRow {
        TokenRow {
            doc,
            index: start,
            token_id: (doc * 100 + start) as u32,
            token: token.into(),
            byte_start: start,
            byte_end: start + token.len() as u64,
            nll_nats: nll,
            entropy_nats: 1.0,
            varentropy_nats2: 0.5,
            top1_id,
            top1_prob: 0.25,
            target_rank: 3,
            context_len: 4,
        }
    }

    #[test]
    fn classes_follow_the_scale_and_unscored_text_gets_a_marker() {
        assert_eq!(class_of(Some(0.0)), "c0");
        assert_eq!(
            class_of(Some(TEXT_MAX_NATS * 0.5)),
            format!("c{}", COLOR_STEPS / 2)
        );
        assert_eq!(class_of(Some(1e9)), format!("c{}", COLOR_STEPS - 1));
        assert_eq!(class_of(Some(f64::NAN)), "cx");
        // "ab" at 0..2, then a gap (2..5 not scored), then a new document
        let rows = [
            row(0, 0, "ab", 0.0, 0),
            row(0, 5, "c", 3.0, 0),
            row(1, 0, "d", 12.0, 99),
        ];
        let vocab = vocabulary(&rows);
        let spans = token_spans(&rows, &[], &vocab, 10);
        let classes: Vec<&str> = spans.iter().map(|s| s.class.as_str()).collect();
        assert_eq!(classes, ["c0", "gap", "c9", "doc", "c31"]);
        assert_eq!(spans[1].tip, "3 bytes not scored");
        assert!(
            spans[0].tip.contains("top-1 the token itself"),
            "{}",
            spans[0].tip
        );
        assert!(
            spans[2].tip.contains("top-1 \"ab\" (p 0.250)"),
            "{}",
            spans[2].tip
        );
        assert!(spans[4].tip.contains("top-1 id 99"), "{}", spans[4].tip);
        assert_eq!(
            token_spans(&rows, &[], &vocab, 1).len(),
            1,
            "--tokens limits the spans"
        );
    }
}
