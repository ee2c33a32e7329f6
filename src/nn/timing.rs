//! Timing forward passes on a device: warm-up, then the median and interquartile range of
//! repeated calls, each waiting for its result (`dnarun latency`, and the report's measured
//! latencies).

use std::time::{Duration, Instant};

use burn::tensor::Tensor;

use crate::space::latency::Timing;

/// How long calls are made, untimed, before timing starts (and at least 3 of them). A CPU
/// backend runs its first tenth of a second of calls up to 1.8x slower than later ones (its
/// thread pool and allocator settling, probably); three calls alone left that in the table's
/// entries.
pub const WARM_UP: Duration = Duration::from_millis(200);

/// Calls `f` for at least [`WARM_UP`] and 3 times.
fn warm_up(mut f: impl FnMut()) {
    let started = Instant::now();
    let mut n = 0;
    while n < 3 || (started.elapsed() < WARM_UP && n < 100_000) {
        f();
        n += 1;
    }
}

/// Median and interquartile range, in milliseconds, of at least `repeats` calls of `f` (and
/// at least 100 ms of them) after a warm-up ([`WARM_UP`]); each call must wait for its result
/// (see [`sync`]).
pub fn timing(repeats: usize, mut f: impl FnMut()) -> Timing {
    warm_up(&mut f);
    let started = Instant::now();
    let mut t: Vec<f64> = Vec::new();
    while t.len() < repeats.max(1) || (started.elapsed().as_secs_f64() < 0.1 && t.len() < 100_000) {
        let s = Instant::now();
        f();
        t.push(s.elapsed().as_secs_f64() * 1e3);
    }
    summarise(t)
}

/// Median and interquartile range of timings in milliseconds.
pub fn summarise(mut t: Vec<f64>) -> Timing {
    t.sort_by(f64::total_cmp);
    let q = |p: f64| t[((t.len() - 1) as f64 * p).round() as usize];
    Timing {
        median_ms: q(0.5),
        spread_ms: q(0.75) - q(0.25),
    }
}

/// [`timing`] of `forward` less the time of waiting for its output alone (the read-back each
/// timed call needs, which a whole net pays once and not once per layer).
pub fn forward_timing<const D: usize>(repeats: usize, forward: impl Fn() -> Tensor<D>) -> Timing {
    let out = forward();
    let wait = timing(repeats, || sync(out.clone())).median_ms;
    let t = timing(repeats, || sync(forward()));
    Timing {
        median_ms: (t.median_ms - wait).max(0.0),
        spread_ms: t.spread_ms,
    }
}

/// Waits for a tensor's computation (a one-value read-back).
pub fn sync<const D: usize>(t: Tensor<D>) {
    let _ = t.sum().into_scalar::<f32>();
}

/// A student's measured milliseconds per forward pass of `batch` random images (eval mode,
/// random weights: the time does not depend on them), less its one read-back.
pub fn student_ms(
    space: &crate::space::Space,
    arch: &crate::space::Architecture,
    batch: usize,
    repeats: usize,
    device: &burn::tensor::Device,
) -> Timing {
    students_ms(space, std::slice::from_ref(arch), batch, repeats, device).swap_remove(0)
}

/// [`student_ms`] of several students, timed in turn within each repetition (so that a slow
/// moment of the machine falls on all of them alike).
pub fn students_ms(
    space: &crate::space::Space,
    archs: &[crate::space::Architecture],
    batch: usize,
    repeats: usize,
    device: &burn::tensor::Device,
) -> Vec<Timing> {
    let x = Tensor::random(
        [
            batch.max(1),
            space.image_channels,
            space.image_size,
            space.image_size,
        ],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        device,
    );
    let nets: Vec<super::Student> = archs
        .iter()
        .map(|a| super::initialize(|d| super::Student::new(space, a, d), device, 1))
        .collect();
    let run = |s: &super::Student| s.logits(x.clone(), super::Mode::Eval);
    let wait: Vec<f64> = nets
        .iter()
        .map(|s| {
            let out = run(s);
            timing(repeats, || sync(out.clone())).median_ms
        })
        .collect();
    warm_up(|| {
        for s in &nets {
            sync(run(s));
        }
    });
    let mut t: Vec<Vec<f64>> = vec![Vec::new(); nets.len()];
    let started = Instant::now();
    let per = 0.1 * nets.len() as f64;
    while t.first().is_some_and(|t0| {
        t0.len() < repeats.max(1) || (started.elapsed().as_secs_f64() < per && t0.len() < 100_000)
    }) {
        for (s, ts) in nets.iter().zip(&mut t) {
            let at = Instant::now();
            sync(run(s));
            ts.push(at.elapsed().as_secs_f64() * 1e3);
        }
    }
    t.into_iter()
        .zip(wait)
        .map(|(ts, w)| {
            let m = summarise(ts);
            Timing {
                median_ms: (m.median_ms - w).max(0.0),
                spread_ms: m.spread_ms,
            }
        })
        .collect()
}
