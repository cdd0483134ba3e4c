//! Property tests: invariants that must hold for *any* valid input.

use proptest::prelude::*;
use serde_json::Value;
use surprisal_metrics::{
    pair_stats, quantile_sorted, token_stats, CompareAggregate, EvalAggregate, MeanStat,
    MetricsError,
};

/// A logit row: finite values with some entries masked to -inf, never all.
fn row(max_len: usize) -> impl Strategy<Value = Vec<f32>> {
    (1..=max_len).prop_flat_map(|v| {
        (
            prop::collection::vec(-30.0f32..30.0, v),
            prop::collection::vec(prop::bool::weighted(0.15), v),
            0..v,
        )
            .prop_map(|(mut x, mask, keep)| {
                for (xi, m) in x.iter_mut().zip(mask) {
                    if m {
                        *xi = f32::NEG_INFINITY;
                    }
                }
                if x.iter().all(|&xi| xi == f32::NEG_INFINITY) {
                    x[keep] = 0.0;
                }
                x
            })
    })
}

/// Two rows of the same length with the same masked positions (so KL is
/// finite) plus a target.
fn pair(max_len: usize) -> impl Strategy<Value = (Vec<f32>, Vec<f32>, u32)> {
    row(max_len).prop_flat_map(|m| {
        let v = m.len();
        (
            Just(m),
            prop::collection::vec(-30.0f32..30.0, v),
            0..v as u32,
        )
            .prop_map(|(m, mut r, t)| {
                for (ri, mi) in r.iter_mut().zip(&m) {
                    if *mi == f32::NEG_INFINITY {
                        *ri = f32::NEG_INFINITY;
                    }
                }
                (m, r, t)
            })
    })
}

/// `a ≈ b` to `rel` relative, with an absolute floor for values near 0; NaN
/// equals NaN (undefined stats such as stderr with n < 2 must agree too).
fn close(a: f64, b: f64, rel: f64, abs: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= (rel * a.abs().max(b.abs())).max(abs)
}

fn json_close(a: &Value, b: &Value, path: &str) -> Result<(), String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            if x.len() != y.len() {
                return Err(format!("{path}: key count"));
            }
            for (k, v) in x {
                json_close(v, &y[k], &format!("{path}.{k}"))?;
            }
            Ok(())
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return Err(format!("{path}: length"));
            }
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                json_close(u, v, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            // 1e-12 relative as required; the 1e-13 absolute floor covers
            // near-zero means of O(10) values (e.g. a mean entropy difference
            // close to 0), which no two summation orders reproduce relatively.
            if close(x, y, 1e-12, 1e-13) {
                Ok(())
            } else {
                Err(format!("{path}: {x:e} vs {y:e}"))
            }
        }
        _ if a == b => Ok(()),
        _ => Err(format!("{path}: {a} vs {b}")),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn entropies_are_bounded_and_ordered(x in row(300), t in any::<prop::sample::Index>()) {
        let target = t.index(x.len()) as u32;
        let s = token_stats(&x, target).unwrap();
        let ln_v = (x.len() as f64).ln();
        let eps = 1e-12 * (1.0 + ln_v);
        prop_assert!(s.entropy_nats >= -eps && s.entropy_nats <= ln_v + eps, "H = {}", s.entropy_nats);
        prop_assert!(s.varentropy_nats2 >= 0.0);
        prop_assert!(s.min_entropy_nats >= -eps);
        prop_assert!(s.min_entropy_nats <= s.renyi2_entropy_nats + eps);
        prop_assert!(s.renyi2_entropy_nats <= s.entropy_nats + eps);
        prop_assert!(s.nll_nats >= s.min_entropy_nats - eps);
        prop_assert!(s.top1_prob > 0.0 && s.top1_prob <= 1.0);
        prop_assert!(s.target_rank >= 1 && s.target_rank <= x.len() as u64);
        prop_assert_eq!(s.target_rank == 1, x[target as usize] == x[s.top1_id as usize]);
        prop_assert!(x[..s.top1_id as usize].iter().all(|&v| v < x[s.top1_id as usize]));
    }

    #[test]
    fn kl_is_nonnegative_and_zero_on_identical_rows((m, r, t) in pair(300)) {
        let p = pair_stats(&m, &r, t).unwrap();
        prop_assert!(p.kl_nats >= -1e-12, "KL = {}", p.kl_nats);
        prop_assert!(p.kl_nats.is_finite());
        let same = pair_stats(&m, &m, t).unwrap();
        prop_assert_eq!(same.kl_nats, 0.0);
        prop_assert_eq!(same.target_prob_delta, 0.0);
        prop_assert!(same.top1_agrees);
        prop_assert_eq!(&same.model, &same.reference);
    }

    #[test]
    fn uniform_row_has_entropy_ln_v_and_zero_varentropy(v in 1usize..5000, c in -1e4f32..1e4, t in any::<prop::sample::Index>()) {
        let x = vec![c; v];
        let s = token_stats(&x, t.index(v) as u32).unwrap();
        let ln_v = (v as f64).ln();
        prop_assert!(close(s.entropy_nats, ln_v, 1e-12, 1e-15), "{} vs {}", s.entropy_nats, ln_v);
        prop_assert!(close(s.nll_nats, ln_v, 1e-12, 1e-15));
        prop_assert!(close(s.min_entropy_nats, ln_v, 1e-12, 1e-15));
        prop_assert!(close(s.renyi2_entropy_nats, ln_v, 1e-12, 1e-15));
        prop_assert!(s.varentropy_nats2.abs() <= 1e-12);
        prop_assert_eq!(s.top1_id, 0);
        prop_assert_eq!(s.target_rank, 1);
    }

    #[test]
    fn merged_aggregates_equal_whole(
        seq in prop::collection::vec((pair(40), 0usize..5000), 1..60),
        split in any::<prop::sample::Index>(),
    ) {
        let pairs: Vec<_> = seq.iter().map(|((m, r, t), c)| (pair_stats(m, r, *t).unwrap(), *c)).collect();
        let k = split.index(pairs.len() + 1);
        let (mut whole_e, mut a_e, mut b_e) = (EvalAggregate::new(), EvalAggregate::new(), EvalAggregate::new());
        let (mut whole_c, mut a_c, mut b_c) = (CompareAggregate::new(), CompareAggregate::new(), CompareAggregate::new());
        for (i, (p, c)) in pairs.iter().enumerate() {
            whole_e.push(&p.model, *c);
            whole_c.push(p, *c);
            if i < k { a_e.push(&p.model, *c); a_c.push(p, *c); } else { b_e.push(&p.model, *c); b_c.push(p, *c); }
        }
        a_e.merge(&b_e);
        a_c.merge(&b_c);
        let bytes = Some(7 * pairs.len() as u64);
        let sw = serde_json::to_value(whole_e.summary(bytes, Some(3))).unwrap();
        let sm = serde_json::to_value(a_e.summary(bytes, Some(3))).unwrap();
        json_close(&sm, &sw, "eval").map_err(TestCaseError::fail)?;
        let cw = serde_json::to_value(whole_c.summary(bytes, None)).unwrap();
        let cm = serde_json::to_value(a_c.summary(bytes, None)).unwrap();
        json_close(&cm, &cw, "compare").map_err(TestCaseError::fail)?;
    }

    #[test]
    fn mean_stat_merge_matches_single_pass(xs in prop::collection::vec(-1e3f64..1e3, 0..200), split in any::<prop::sample::Index>()) {
        let k = split.index(xs.len() + 1);
        let (mut whole, mut a, mut b) = (MeanStat::new(), MeanStat::new(), MeanStat::new());
        xs.iter().for_each(|&x| whole.push(x));
        xs[..k].iter().for_each(|&x| a.push(x));
        xs[k..].iter().for_each(|&x| b.push(x));
        a.merge(&b);
        prop_assert_eq!(a.count(), whole.count());
        prop_assert!(close(a.mean(), whole.mean(), 1e-12, 1e-12));
        prop_assert!(close(a.sum(), whole.sum(), 1e-12, 1e-12));
        prop_assert!(close(a.stderr(), whole.stderr(), 1e-12, 1e-12));
    }

    #[test]
    fn non_finite_logit_reports_first_index(
        x in row(200),
        bad in prop::sample::select(vec![f32::NAN, f32::INFINITY]),
        i in any::<prop::sample::Index>(),
        second in any::<prop::sample::Index>(),
    ) {
        let mut x = x;
        let idx = i.index(x.len());
        x[idx] = bad;
        // a second bad value at or after idx must not change the report
        let later = idx + second.index(x.len() - idx);
        if later > idx {
            x[later] = f32::INFINITY;
        }
        let target = 0;
        match token_stats(&x, target) {
            Err(MetricsError::NonFiniteLogit { index, value }) => {
                prop_assert_eq!(index, idx);
                prop_assert!(value.is_nan() == bad.is_nan() && (bad.is_nan() || value == bad));
            }
            other => prop_assert!(false, "unexpected {:?}", other),
        }
        // the same row as either side of a pair is rejected with the same index
        let clean = vec![0.0f32; x.len()];
        let e_model = pair_stats(&x, &clean, target).unwrap_err();
        let e_ref = pair_stats(&clean, &x, target).unwrap_err();
        let is_at_idx = |e: &MetricsError| matches!(e, MetricsError::NonFiniteLogit { index, .. } if *index == idx);
        prop_assert!(is_at_idx(&e_model));
        prop_assert!(is_at_idx(&e_ref));
    }

    #[test]
    fn vocab_mismatch_is_reported(a in 1usize..500, b in 1usize..500) {
        prop_assume!(a != b);
        let err = pair_stats(&vec![0.0; a], &vec![0.0; b], 0).unwrap_err();
        prop_assert_eq!(err, MetricsError::VocabMismatch { model: a, reference: b });
    }

    #[test]
    fn quantile_endpoints_and_monotonicity(mut xs in prop::collection::vec(-1e6f64..1e6, 1..100), q1 in 0.0f64..=1.0, q2 in 0.0f64..=1.0) {
        xs.sort_by(f64::total_cmp);
        prop_assert_eq!(quantile_sorted(&xs, 0.0), xs[0]);
        prop_assert_eq!(quantile_sorted(&xs, 1.0), xs[xs.len() - 1]);
        let (lo, hi) = if q1 <= q2 { (q1, q2) } else { (q2, q1) };
        prop_assert!(quantile_sorted(&xs, lo) <= quantile_sorted(&xs, hi));
    }
}

#[test]
fn structural_errors() {
    assert_eq!(token_stats(&[], 0).unwrap_err(), MetricsError::EmptyRow);
    assert_eq!(
        token_stats(&[0.0, 1.0], 2).unwrap_err(),
        MetricsError::TargetOutOfRange {
            target: 2,
            vocab: 2
        }
    );
    assert_eq!(
        token_stats(&[f32::NEG_INFINITY; 4], 1).unwrap_err(),
        MetricsError::AllMasked
    );
    assert_eq!(
        pair_stats(&[0.0; 3], &[f32::NEG_INFINITY; 3], 1).unwrap_err(),
        MetricsError::AllMasked
    );
}

#[test]
fn masked_target_gives_infinite_nll_not_nan() {
    let s = token_stats(&[0.0, f32::NEG_INFINITY, 1.0], 1).unwrap();
    assert_eq!(s.nll_nats, f64::INFINITY);
    assert!(s.entropy_nats.is_finite() && s.varentropy_nats2.is_finite());
    assert_eq!(s.target_rank, 3);
    // model masks a token the reference supports: KL is +inf, never NaN.
    let p = pair_stats(&[0.0, f32::NEG_INFINITY], &[0.0, 0.0], 0).unwrap();
    assert_eq!(p.kl_nats, f64::INFINITY);
}

#[test]
fn empty_aggregates_summarise_without_panicking() {
    let s = EvalAggregate::new().summary(None, Some(0));
    assert_eq!(s.tokens_scored, 0);
    assert!(s.mean_nll_nats.is_nan() && s.mean_nll_nats_stderr.is_nan());
    assert_eq!(s.sum_nll_nats, 0.0);
    assert_eq!(s.bits_per_byte, None);
    assert_eq!(s.word_perplexity, None);
    assert!(s.by_position.is_empty());
    assert_eq!(s.calibration_bins.len(), 15);
    let c = CompareAggregate::new().summary(Some(10), None);
    assert!(c.kl_nats_quantiles.p50.is_nan());
    assert!(c.top1_agreement.is_nan());
}

#[test]
fn checkpoints_with_non_finite_values_round_trip_through_json() {
    // Masked target → NLL = +inf (Welford M2 becomes NaN); model masks a
    // token the reference supports → KL = +inf (kept in the quantile sample).
    let inf_pair = pair_stats(&[0.0, f32::NEG_INFINITY], &[0.0, 0.0], 1).unwrap();
    let ok_pair = pair_stats(&[0.0, 1.0, 2.0], &[2.0, 1.0, 0.0], 2).unwrap();
    let mut agg = CompareAggregate::new();
    agg.push(&ok_pair, 0);
    agg.push(&inf_pair, 5);
    let json = serde_json::to_string(&agg).unwrap();
    let back: CompareAggregate = serde_json::from_str(&json).unwrap();
    // Not compared as strings: serde_json without its `float_roundtrip`
    // feature may parse a float 1 ulp off, so compare to 1e-12 instead.
    json_close(
        &serde_json::to_value(&back).unwrap(),
        &serde_json::from_str::<Value>(&json).unwrap(),
        "checkpoint",
    )
    .unwrap();
    let s = back.summary(None, None);
    assert_eq!(s.kl_nats_quantiles.max, f64::INFINITY);
    assert_eq!(s.model.mean_nll_nats, f64::INFINITY);
    // A finite checkpoint round-trips to an equal value.
    let mut fin = EvalAggregate::new();
    fin.push(&ok_pair.model, 3);
    fin.push(&ok_pair.reference, 9);
    let back: EvalAggregate = serde_json::from_str(&serde_json::to_string(&fin).unwrap()).unwrap();
    json_close(
        &serde_json::to_value(back.summary(None, None)).unwrap(),
        &serde_json::to_value(fin.summary(None, None)).unwrap(),
        "finite checkpoint",
    )
    .unwrap();
}
