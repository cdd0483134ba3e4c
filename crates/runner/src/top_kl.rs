//! The positions where the model disagrees most with the reference: a bounded
//! top-K list of per-token KL, kept by `compare` while it scores (memory is
//! O(K), no second pass over the token rows), checkpointed with the aggregate
//! and reported as `top_kl_positions` in `summary.json`.

use std::ops::Deref;

use serde::{Deserialize, Serialize};
use surprisal_metrics::{CompareAggregate, CompareSummary};

/// How many positions are kept.
pub const TOP_KL: usize = 20;
/// Tokens of context shown before the target.
pub const CONTEXT_BEFORE: usize = 8;
/// Tokens of context shown after the target (when the window has them).
pub const CONTEXT_AFTER: usize = 2;

/// One high-KL position.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopKlPosition {
    /// `KL(reference ‖ model)` at this position (nats).
    pub kl_nats: f64,
    /// Document index.
    pub doc: u64,
    /// Index of the token in its document.
    pub index: u64,
    /// Target token id.
    pub token_id: u32,
    /// Target token text.
    pub token: String,
    /// Text of up to [`CONTEXT_BEFORE`] tokens before the target in its window.
    pub context_before: String,
    /// Text of up to [`CONTEXT_AFTER`] tokens after the target in its window.
    pub context_after: String,
    /// The model's NLL of the target (nats).
    pub nll_nats: f64,
    /// The reference's NLL of the target (nats).
    pub ref_nll_nats: f64,
}

impl TopKlPosition {
    /// `…before[token]after…` on one line (control characters escaped).
    pub fn snippet(&self) -> String {
        format!(
            "…{}[{}]{}…",
            one_line(&self.context_before),
            one_line(&self.token),
            one_line(&self.context_after)
        )
    }
}

fn one_line(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '\n' | '\r' | '\t' => c.escape_default().collect::<Vec<_>>(),
            c if c.is_control() => c.escape_unicode().collect(),
            c => vec![c],
        })
        .collect()
}

/// The [`TOP_KL`] largest-KL positions seen so far, largest first; ties keep
/// the earlier position (so the result does not depend on batching).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TopKl {
    positions: Vec<TopKlPosition>,
}

impl TopKl {
    /// Whether a position with this KL at `(doc, index)` would enter the list
    /// (cheap: check before building the context text).
    pub fn wants(&self, kl: f64, doc: u64, index: u64) -> bool {
        kl.is_finite()
            && (self.positions.len() < TOP_KL
                || self
                    .positions
                    .last()
                    .is_some_and(|w| ranks_before(kl, doc, index, w)))
    }

    /// Offers a position; `make` builds it only if it enters the list.
    pub fn offer(&mut self, kl: f64, doc: u64, index: u64, make: impl FnOnce() -> TopKlPosition) {
        if !self.wants(kl, doc, index) {
            return;
        }
        let at = self
            .positions
            .partition_point(|p| !ranks_before(kl, doc, index, p));
        self.positions.insert(at, make());
        self.positions.truncate(TOP_KL);
    }

    /// Folds in the list of other positions (`surprisal merge`): the result is the list of the
    /// union, as if every position had been offered here.
    pub fn merge(&mut self, other: &TopKl) {
        for p in &other.positions {
            self.offer(p.kl_nats, p.doc, p.index, || p.clone());
        }
    }

    /// The list, largest KL first.
    pub fn positions(&self) -> &[TopKlPosition] {
        &self.positions
    }
}

/// Larger KL first, then earlier `(doc, index)`.
fn ranks_before(kl: f64, doc: u64, index: u64, p: &TopKlPosition) -> bool {
    match kl.total_cmp(&p.kl_nats) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => (doc, index) < (p.doc, p.index),
    }
}

/// Texts of the context around `window[target]`: up to [`CONTEXT_BEFORE`]
/// tokens before it and [`CONTEXT_AFTER`] after it, as far as the window
/// holds them (the target itself may lie just past the window's input).
pub fn context_texts(
    window: &[u32],
    target: usize,
    token_text: &dyn Fn(u32) -> String,
) -> (String, String) {
    let join = |ids: &[u32]| ids.iter().map(|&id| token_text(id)).collect::<String>();
    let end = target.min(window.len());
    let before = join(&window[target.saturating_sub(CONTEXT_BEFORE).min(end)..end]);
    let hi = (target + 1 + CONTEXT_AFTER).min(window.len());
    let after = join(&window[(target + 1).min(hi)..hi]);
    (before, after)
}

/// The compare aggregate plus its top-KL list (the checkpointed state).
/// Flattened so that checkpoints without `top_kl` still load.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CompareAgg {
    /// The metrics.
    #[serde(flatten)]
    pub metrics: CompareAggregate,
    /// Largest-KL positions.
    #[serde(default)]
    pub top_kl: TopKl,
}

/// What `compare` reports: [`CompareSummary`] (flattened in `summary.json`)
/// plus `top_kl_positions`. Derefs to the summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompareReport {
    /// The metrics.
    #[serde(flatten)]
    pub summary: CompareSummary,
    /// The [`TOP_KL`] positions with the largest KL, largest first.
    pub top_kl_positions: Vec<TopKlPosition>,
}

impl CompareAgg {
    /// Folds in the aggregate of the windows that follow.
    pub fn merge(&mut self, later: &CompareAgg) {
        self.metrics.merge(&later.metrics);
        self.top_kl.merge(&later.top_kl);
    }

    /// The report of this aggregate.
    pub fn report(&self, bytes: Option<u64>, words: Option<u64>) -> CompareReport {
        CompareReport {
            summary: self.metrics.summary(bytes, words),
            top_kl_positions: self.top_kl.positions().to_vec(),
        }
    }
}

impl Deref for CompareReport {
    type Target = CompareSummary;
    fn deref(&self) -> &CompareSummary {
        &self.summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(kl: f64, index: u64) -> TopKlPosition {
        TopKlPosition {
            kl_nats: kl,
            doc: 0,
            index,
            token_id: 0,
            token: String::new(),
            context_before: String::new(),
            context_after: String::new(),
            nll_nats: 0.0,
            ref_nll_nats: 0.0,
        }
    }

    #[test]
    fn keeps_the_largest_in_order_with_ties_by_position() {
        let mut t = TopKl::default();
        // 100 values, with duplicates, in a scrambled order
        let vals: Vec<(f64, u64)> = (0..100u64).map(|i| (((i * 37) % 50) as f64, i)).collect();
        for &(kl, i) in &vals {
            t.offer(kl, 0, i, || pos(kl, i));
        }
        t.offer(f64::NAN, 0, 1000, || pos(f64::NAN, 1000));
        let mut want = vals.clone();
        want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        want.truncate(TOP_KL);
        let got: Vec<(f64, u64)> = t.positions().iter().map(|p| (p.kl_nats, p.index)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn builds_text_only_for_entrants() {
        let mut t = TopKl::default();
        for i in 0..TOP_KL as u64 {
            t.offer(10.0, 0, i, || pos(10.0, i));
        }
        t.offer(1.0, 0, 99, || panic!("must not be built"));
        t.offer(10.0, 0, 99, || panic!("a later tie must not enter"));
        assert_eq!(t.positions().len(), TOP_KL);
    }

    #[test]
    fn context_around_target() {
        let text = |id: u32| format!("<{id}>");
        let w: Vec<u32> = (0..12).collect();
        let (b, a) = context_texts(&w, 10, &text);
        assert_eq!(b, "<2><3><4><5><6><7><8><9>");
        assert_eq!(a, "<11>");
        let (b, a) = context_texts(&w, 1, &text);
        assert_eq!((b.as_str(), a.as_str()), ("<0>", "<2><3>"));
        // rolling: the last target is not part of the window's input
        let (b, a) = context_texts(&w, 12, &text);
        assert_eq!((b.as_str(), a.as_str()), ("<4><5><6><7><8><9><10><11>", ""));
        let mut p = pos(1.0, 0);
        p.context_before = "a\nb".into();
        p.token = " sat".into();
        p.context_after = "\ton".into();
        assert_eq!(p.snippet(), "…a\\nb[ sat]\\ton…");
    }

    #[test]
    fn old_checkpoints_without_top_kl_load() {
        let agg = CompareAgg::default();
        let v = serde_json::to_value(&agg.metrics).unwrap();
        let back: CompareAgg = serde_json::from_value(v).unwrap();
        assert_eq!(back, agg);
        let v = serde_json::to_value(&agg).unwrap();
        assert!(v.get("top_kl").is_some());
    }
}
