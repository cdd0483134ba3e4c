//! `device_stats` (f32 tensor reductions, run here on the CPU device) against the host path
//! (`surprisal_metrics::token_stats` / `pair_stats` / `log_mass`, f64 scalar code with its own
//! reference tests against NumPy), row by row.
//!
//! # Tolerances
//!
//! Both paths see the same f32 logits, so `top1_id`, `target_rank`, `target_id` and top-1
//! agreement must be *equal*. The float statistics differ by the device path's f32 element-wise
//! work (its vocabulary sums accumulate in f64, like the host's; see `device_stats::ACCUMULATE`).
//! With `ε = 2⁻²⁴ ≈ 6e-8` and `u_i = m − x_i`:
//!
//! * `x − m` rounds to `u_i·ε/2` absolute and `exp` adds ≤ 1 ulp, so each weight `e_i` carries a
//!   relative error ≤ `(u_i + 1)·ε`, and `Z = Σ e` one of ≤ `(E_p[u] + 1)·ε ≤ (ln V + 1)·ε`
//!   (`E_p[u] ≤ H ≤ ln V`): ≤ 8e-7 at V = 151 936. That bounds the error of `ln Z`, hence of the
//!   NLL (`m − x_t` is exact), min-entropy, Rényi-2 and `top1_prob = 1/Z` (relative).
//! * entropy and varentropy weight those errors by `u` and `u²`:
//!   ≤ `(E_p[u²] + 3·E_p[u] + 1)·ε`, below 1e-5 for the rows here (`E_p[u²]` ≲ 150 nats²).
//!
//! So every float statistic must agree within `REL = 1e-5` relative to `max(1, |host|)`
//! (absolute for values below 1 nat: near-zero NLLs and masses are compared at 1e-5 nats, far
//! finer than anything aggregated). KL subtracts the models' logits, `d_i = x_r,i − x_m,i`,
//! which rounds to `ulp(|d|)/2` (3e-5 at |d| ≈ 1000, the `offset+1000` case against an
//! un-offset model) and is not averaged out when few tokens carry the reference's weight: KL also
//! passes within `KL_ABS = 1e-4` nats. These are worst-case bounds; the measured maxima (printed
//! with `--nocapture`) are about 100× smaller, because the rounding errors have random signs.
//!
//! Where the two paths' `log_mass` differ relatively by more than that, the value is ~1e-15 and
//! the host is the imprecise one: it takes `ln(Σ_sel) − ln(Σ_all)` in f64 (absolute precision
//! ~1e-16), the device `ln_1p(−Σ_unsel/Z)` (relative precision) for masses close to 1.

use candle_core::{Device, Tensor};
use surprisal_metrics::{log_mass, pair_stats, token_stats, PairStats, TokenStats};
use surprisal_runner::device_stats::{self, DeviceOutcome, HostNeeded, VocabMask};

/// Relative tolerance (to `max(1, |host|)`) for every float statistic; see the module docs.
const REL: f64 = 1e-5;
/// Alternative absolute tolerance for KL (nats); see the module docs.
const KL_ABS: f64 = 1e-4;

const VOCABS: [usize; 3] = [7, 49_152, 151_936];

/// splitmix64: deterministic rows without a `rand` dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// A set of rows with their targets.
struct Case {
    name: String,
    v: usize,
    rows: Vec<Vec<f32>>,
    targets: Vec<u32>,
}

fn gaussian_row(rng: &mut Rng, v: usize, sigma: f64, offset: f64) -> Vec<f32> {
    (0..v)
        .map(|_| (offset + sigma * rng.normal()) as f32)
        .collect()
}

/// Every kind of row the brief asks for, for one vocabulary size.
fn cases(v: usize, seed: u64) -> Vec<Case> {
    let mut rng = Rng(seed ^ v as u64);
    let mut out = Vec::new();

    // random rows: LM-like spread (σ = 3) and flat (σ = 0.5), targets anywhere
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for sigma in [3.0, 0.5] {
        for _ in 0..3 {
            rows.push(gaussian_row(&mut rng, v, sigma, 0.0));
            targets.push(rng.below(v) as u32);
        }
    }
    out.push(Case {
        name: "random".into(),
        v,
        rows,
        targets,
    });

    // a large common offset: max-shifting must make it irrelevant
    let rows: Vec<_> = (0..3)
        .map(|_| gaussian_row(&mut rng, v, 2.0, 1000.0))
        .collect();
    let targets = (0..3).map(|_| rng.below(v) as u32).collect();
    out.push(Case {
        name: "offset+1000".into(),
        v,
        rows,
        targets,
    });

    // peaked: one logit +40 above the rest; target = the peak (tiny NLL) and elsewhere
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for k in 0..4 {
        let mut r = gaussian_row(&mut rng, v, 1.0, 0.0);
        let peak = rng.below(v);
        let rest_max = r.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        r[peak] = rest_max + 40.0;
        rows.push(r);
        targets.push(if k % 2 == 0 {
            peak as u32
        } else {
            ((peak + 1) % v) as u32
        });
    }
    out.push(Case {
        name: "peaked+40".into(),
        v,
        rows,
        targets,
    });

    // ties at the max: the arg-max is the lowest tied index; the target is a later tied one
    // (rank 1, but not top-1 correct), the first one, or an untied token
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for k in 0..3 {
        let mut r = gaussian_row(&mut rng, v, 2.0, 0.0);
        let top = r.iter().copied().fold(f32::NEG_INFINITY, f32::max) + 1.5;
        let mut tied: Vec<usize> = (0..3.min(v)).map(|_| rng.below(v)).collect();
        tied.sort_unstable();
        tied.dedup();
        for &i in &tied {
            r[i] = top;
        }
        let target = match k {
            0 => *tied.last().unwrap_or(&0),
            1 => tied[0],
            _ => (0..v).find(|i| !tied.contains(i)).unwrap_or(0),
        };
        rows.push(r);
        targets.push(target as u32);
    }
    // all entries equal (uniform distribution, every index tied)
    rows.push(vec![0.25f32; v]);
    targets.push((v - 1) as u32);
    out.push(Case {
        name: "ties".into(),
        v,
        rows,
        targets,
    });

    // -inf entries (about a third), including a -inf target (NLL = +inf) and a -inf at index 0
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for k in 0..3 {
        let mut r = gaussian_row(&mut rng, v, 3.0, 0.0);
        for x in r.iter_mut() {
            if rng.below(3) == 0 {
                *x = f32::NEG_INFINITY;
            }
        }
        r[0] = f32::NEG_INFINITY;
        let finite = (0..v).rev().find(|&i| r[i].is_finite()).unwrap_or(v - 1);
        r[finite] = r[finite].max(0.0); // at least one finite entry
        let target = if k == 0 { 0 } else { finite };
        rows.push(r);
        targets.push(target as u32);
    }
    out.push(Case {
        name: "-inf entries".into(),
        v,
        rows,
        targets,
    });
    out
}

fn tensor(rows: &[Vec<f32>]) -> Tensor {
    let v = rows.first().map_or(0, Vec::len);
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Tensor::from_vec(flat, (rows.len(), v), &Device::Cpu).unwrap()
}

/// Largest differences seen, per statistic: (abs, rel to max(1, |host|), rel to |host|).
#[derive(Default)]
struct Worst(Vec<(&'static str, f64, f64, f64)>);

impl Worst {
    fn check(&mut self, what: &'static str, ctx: &str, dev: f64, host: f64, abs_tol: f64) {
        if dev == host || (dev.is_nan() && host.is_nan()) {
            self.note(what, 0.0, 0.0, 0.0);
            return;
        }
        assert!(
            dev.is_finite() && host.is_finite(),
            "{ctx}: {what}: device {dev}, host {host}"
        );
        let abs = (dev - host).abs();
        let rel = abs / host.abs().max(1.0);
        assert!(
            rel <= REL || abs <= abs_tol,
            "{ctx}: {what}: device {dev}, host {host}, |diff| {abs:e}, rel {rel:e}"
        );
        let pure_rel = if host == 0.0 { 0.0 } else { abs / host.abs() };
        self.note(what, abs, rel, pure_rel);
    }
    fn note(&mut self, what: &'static str, abs: f64, rel: f64, pure_rel: f64) {
        match self.0.iter_mut().find(|(w, _, _, _)| *w == what) {
            Some(e) => {
                e.1 = e.1.max(abs);
                e.2 = e.2.max(rel);
                e.3 = e.3.max(pure_rel);
            }
            None => self.0.push((what, abs, rel, pure_rel)),
        }
    }
    fn print(&self, title: &str) {
        println!("{title}: max |device - host|: abs, rel to max(1,|host|), rel to |host|");
        for (w, a, r, p) in &self.0 {
            println!("  {w:<22} {a:.3e}  {r:.3e}  {p:.3e}");
        }
    }
}

fn compare_token(w: &mut Worst, ctx: &str, dev: &TokenStats, host: &TokenStats) {
    assert_eq!(dev.top1_id, host.top1_id, "{ctx}: top1_id");
    assert_eq!(dev.target_rank, host.target_rank, "{ctx}: target_rank");
    assert_eq!(dev.target_id, host.target_id, "{ctx}: target_id");
    w.check("nll_nats", ctx, dev.nll_nats, host.nll_nats, 0.0);
    w.check(
        "entropy_nats",
        ctx,
        dev.entropy_nats,
        host.entropy_nats,
        0.0,
    );
    w.check(
        "varentropy_nats2",
        ctx,
        dev.varentropy_nats2,
        host.varentropy_nats2,
        0.0,
    );
    w.check(
        "min_entropy_nats",
        ctx,
        dev.min_entropy_nats,
        host.min_entropy_nats,
        0.0,
    );
    w.check(
        "renyi2_entropy_nats",
        ctx,
        dev.renyi2_entropy_nats,
        host.renyi2_entropy_nats,
        0.0,
    );
    w.check("top1_prob", ctx, dev.top1_prob, host.top1_prob, 0.0);
}

/// Masks: random ~10 %, nothing, everything, and (for the -inf case) only masked tokens.
fn masks(rng: &mut Rng, case: &Case) -> Vec<(&'static str, Vec<bool>)> {
    let v = case.v;
    let mut out = vec![
        ("random", (0..v).map(|_| rng.below(10) == 0).collect()),
        ("none", vec![false; v]),
        ("all", vec![true; v]),
        // shorter than the vocabulary: the rest counts as unselected
        ("short", (0..v / 2).map(|i| i % 3 == 0).collect()),
    ];
    if let Some(r) = case.rows.first() {
        out.push((
            "-inf only",
            r.iter().map(|x| *x == f32::NEG_INFINITY).collect(),
        ));
    }
    out
}

#[test]
fn token_stats_match_the_host_path() {
    let mut worst = Worst::default();
    let mut rng = Rng(7);
    for v in VOCABS {
        for case in cases(v, 11) {
            let x = tensor(&case.rows);
            let host: Vec<TokenStats> = case
                .rows
                .iter()
                .zip(&case.targets)
                .map(|(r, &t)| token_stats(r, t).unwrap())
                .collect();
            // without a mask
            let DeviceOutcome::Computed(dev) =
                device_stats::token_stats(&x, &case.targets, None).unwrap()
            else {
                panic!("{} V={v}: handed back to the host", case.name)
            };
            assert_eq!(dev.len(), host.len());
            for (k, (d, h)) in dev.iter().zip(&host).enumerate() {
                let ctx = format!("{} V={v} row {k}", case.name);
                assert!(d.log_mass_nats.is_none());
                compare_token(&mut worst, &ctx, &d.stats, h);
            }
            // with masks: same stats, plus log_mass
            for (mname, m) in masks(&mut rng, &case) {
                let mask = VocabMask::new(m.clone());
                let DeviceOutcome::Computed(dev) =
                    device_stats::token_stats(&x, &case.targets, Some(&mask)).unwrap()
                else {
                    panic!("{} V={v} mask {mname}: handed back", case.name)
                };
                for (k, (d, h)) in dev.iter().zip(&host).enumerate() {
                    let ctx = format!("{} V={v} row {k} mask {mname}", case.name);
                    assert_eq!(&d.stats, &dev[k].stats);
                    compare_token(&mut worst, &ctx, &d.stats, h);
                    let want = log_mass(&case.rows[k], &m);
                    let got = d.log_mass_nats.unwrap();
                    if want == f64::NEG_INFINITY {
                        assert_eq!(got, want, "{ctx}: log_mass");
                    } else {
                        worst.check("log_mass_nats", &ctx, got, want, 0.0);
                    }
                }
            }
        }
    }
    worst.print("token_stats");
}

/// `(name, model rows, reference rows, targets)`.
type PairCase = (String, Vec<Vec<f32>>, Vec<Vec<f32>>, Vec<u32>);

/// Reference rows and a model row of each kind: a slight perturbation of the reference (small
/// KL, the cancellation-prone case), an independent row (large KL), a large common offset, and
/// model `-inf` where the reference has weight (KL = +inf).
fn pair_cases(v: usize, seed: u64) -> Vec<PairCase> {
    let mut rng = Rng(seed ^ (v as u64) << 1);
    let mut out = Vec::new();
    for case in cases(v, seed) {
        let reference = case.rows.clone();
        // perturbed: KL ~ 1e-4 .. 1e-2
        let model: Vec<Vec<f32>> = reference
            .iter()
            .map(|r| {
                r.iter()
                    .map(|&x| x + (0.05 * rng.normal()) as f32)
                    .collect()
            })
            .collect();
        out.push((
            format!("{} perturbed", case.name),
            model,
            reference.clone(),
            case.targets.clone(),
        ));
        // independent model rows (finite: the -inf pattern stays the reference's)
        let model: Vec<Vec<f32>> = reference
            .iter()
            .map(|_| gaussian_row(&mut rng, v, 3.0, 5.0))
            .collect();
        out.push((
            format!("{} independent", case.name),
            model,
            reference,
            case.targets,
        ));
    }
    // the model rules out a token the reference gives weight to, in one row of three
    let reference: Vec<Vec<f32>> = (0..3)
        .map(|_| gaussian_row(&mut rng, v, 2.0, 0.0))
        .collect();
    let mut model = reference.clone();
    model[1][v / 2] = f32::NEG_INFINITY;
    let targets = vec![0, 1, 2.min(v as u32 - 1)];
    out.push(("model -inf".into(), model, reference, targets));
    out
}

fn compare_pair(w: &mut Worst, ctx: &str, dev: &PairStats, host: &PairStats) {
    compare_token(w, &format!("{ctx} (model)"), &dev.model, &host.model);
    compare_token(
        w,
        &format!("{ctx} (reference)"),
        &dev.reference,
        &host.reference,
    );
    assert_eq!(dev.top1_agrees, host.top1_agrees, "{ctx}: top1_agrees");
    if host.kl_nats.is_infinite() {
        assert_eq!(dev.kl_nats, host.kl_nats, "{ctx}: kl");
    } else {
        w.check("kl_nats", ctx, dev.kl_nats, host.kl_nats, KL_ABS);
    }
    w.check(
        "target_prob_delta",
        ctx,
        dev.target_prob_delta,
        host.target_prob_delta,
        0.0,
    );
}

#[test]
fn pair_stats_match_the_host_path() {
    let mut worst = Worst::default();
    let mut rng = Rng(3);
    for v in VOCABS {
        for (name, model, reference, targets) in pair_cases(v, 5) {
            let (xm, xr) = (tensor(&model), tensor(&reference));
            let host: Vec<PairStats> = (0..targets.len())
                .map(|k| pair_stats(&model[k], &reference[k], targets[k]).unwrap())
                .collect();
            let mask: Vec<bool> = (0..v).map(|_| rng.below(7) == 0).collect();
            let vm = VocabMask::new(mask.clone());
            for with_mask in [false, true] {
                let DeviceOutcome::Computed(dev) =
                    device_stats::pair_stats(&xm, &xr, &targets, with_mask.then_some(&vm)).unwrap()
                else {
                    panic!("{name} V={v}: handed back to the host")
                };
                for (k, (d, h)) in dev.iter().zip(&host).enumerate() {
                    let ctx = format!("{name} V={v} row {k} mask {with_mask}");
                    compare_pair(&mut worst, &ctx, &d.stats, h);
                    match d.log_mass_nats {
                        None => assert!(!with_mask),
                        Some(got) => {
                            worst.check("log_mass_nats", &ctx, got, log_mass(&model[k], &mask), 0.0)
                        }
                    }
                }
            }
        }
    }
    worst.print("pair_stats");
}

/// A chunk with a NaN, a `+inf`, an all-`-inf` row or a target out of range is handed back to
/// the host path (which then reports exactly its usual error; the engine test checks that).
#[test]
fn rows_the_host_must_report_are_handed_back() {
    let v = 49_152;
    let mut rng = Rng(99);
    let good: Vec<Vec<f32>> = (0..3)
        .map(|_| gaussian_row(&mut rng, v, 2.0, 0.0))
        .collect();
    let targets = [1u32, 2, 3];
    let bad = |f: &dyn Fn(&mut Vec<Vec<f32>>)| {
        let mut rows = good.clone();
        f(&mut rows);
        rows
    };
    let nan = bad(&|r| r[1][40_000] = f32::NAN);
    let pinf = bad(&|r| r[2][5] = f32::INFINITY);
    let masked = bad(&|r| r[0] = vec![f32::NEG_INFINITY; v]);
    let mask = VocabMask::new(vec![true; v]);
    for (rows, want) in [
        (&nan, HostNeeded::NonFinite),
        (&pinf, HostNeeded::NonFinite),
        (&masked, HostNeeded::AllMasked),
    ] {
        let x = tensor(rows);
        for m in [None, Some(&mask)] {
            assert_eq!(
                device_stats::token_stats(&x, &targets, m).unwrap(),
                DeviceOutcome::HostNeeded(want)
            );
            // in either position of a pair
            let ok = tensor(&good);
            assert_eq!(
                device_stats::pair_stats(&x, &ok, &targets, m).unwrap(),
                DeviceOutcome::HostNeeded(want)
            );
            assert_eq!(
                device_stats::pair_stats(&ok, &x, &targets, m).unwrap(),
                DeviceOutcome::HostNeeded(want)
            );
        }
    }
    let x = tensor(&good);
    assert_eq!(
        device_stats::token_stats(&x, &[1, v as u32, 3], None).unwrap(),
        DeviceOutcome::HostNeeded(HostNeeded::TargetOutOfRange)
    );
    let narrow = x.narrow(1, 0, v - 1).unwrap();
    assert_eq!(
        device_stats::pair_stats(&x, &narrow, &targets, None).unwrap(),
        DeviceOutcome::HostNeeded(HostNeeded::Shape)
    );
    // an empty chunk is fine
    let empty = Tensor::zeros((0, v), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert_eq!(
        device_stats::token_stats(&empty, &[], None).unwrap(),
        DeviceOutcome::Computed(Vec::new())
    );
}

#[test]
fn stats_on_resolution() {
    use surprisal_runner::{StatsLocation, StatsOn};
    let cpu = Some(Device::Cpu);
    // auto: the device only on CUDA (not available here), so the host on the CPU
    assert_eq!(
        StatsOn::Auto.resolve(std::slice::from_ref(&cpu)).unwrap(),
        StatsLocation::Host
    );
    assert_eq!(
        StatsOn::Auto.resolve(&[cpu.clone(), None]).unwrap(),
        StatsLocation::Host
    );
    assert_eq!(
        StatsOn::Device
            .resolve(&[cpu.clone(), cpu.clone()])
            .unwrap(),
        StatsLocation::Device
    );
    assert_eq!(
        StatsOn::Host.resolve(std::slice::from_ref(&cpu)).unwrap(),
        StatsLocation::Host
    );
    // a scorer without device tensors cannot do `device`
    let e = StatsOn::Device.resolve(&[cpu, None]).unwrap_err();
    assert!(e.to_string().contains("--stats-on host"), "{e}");
}
