//! Rank and linear correlations with honest uncertainty: Kendall's tau-b, Spearman's rho and
//! Pearson's r, percentile bootstrap confidence intervals, and the ceiling on tau that
//! measurement noise alone allows. Pure Rust.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Kendall's tau-b (ties in either list are accounted for; 0 when either list is constant).
pub fn kendall_tau(a: &[f64], b: &[f64]) -> f64 {
    let (mut conc, mut disc, mut ta, mut tb) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for i in 0..a.len() {
        for j in i + 1..a.len() {
            let (da, db) = (a[i] - a[j], b[i] - b[j]);
            if da == 0.0 && db == 0.0 {
                continue;
            } else if da == 0.0 {
                ta += 1.0;
            } else if db == 0.0 {
                tb += 1.0;
            } else if da.signum() == db.signum() {
                conc += 1.0;
            } else {
                disc += 1.0;
            }
        }
    }
    let denom = ((conc + disc + ta) * (conc + disc + tb)).sqrt();
    if denom == 0.0 {
        0.0
    } else {
        (conc - disc) / denom
    }
}

/// Ranks from 1, ties sharing their mean rank.
pub fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut out = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let mean = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            out[k] = mean;
        }
        i = j + 1;
    }
    out
}

/// Pearson's r (0 when either list is constant).
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    if a.len() < 2 {
        return 0.0;
    }
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    if saa == 0.0 || sbb == 0.0 {
        0.0
    } else {
        sab / (saa * sbb).sqrt()
    }
}

/// Spearman's rho: Pearson's r of the ranks.
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    pearson(&ranks(a), &ranks(b))
}

/// A correlation with its 95 % percentile-bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The value on the data.
    pub value: f64,
    /// 2.5th and 97.5th percentiles over bootstrap resamples of the pairs.
    pub ci: [f64; 2],
}

/// `f` on the pairs, with a 95 % interval from `resamples` bootstrap resamples (seeded).
pub fn bootstrap(
    a: &[f64],
    b: &[f64],
    f: fn(&[f64], &[f64]) -> f64,
    resamples: usize,
    seed: u64,
) -> Estimate {
    let value = f(a, b);
    resampled(value, a.len(), resamples, seed, |idx| {
        f(&pick(a, idx), &pick(b, idx))
    })
}

/// `v` at the indices `idx` (a bootstrap resample).
fn pick(v: &[f64], idx: &[usize]) -> Vec<f64> {
    idx.iter().map(|&i| v[i]).collect()
}

/// `value` with the 95 % interval of `stat` over `resamples` seeded bootstrap resamples of `n`
/// items (each given as its drawn indices); no interval for fewer than 2 items.
fn resampled(
    value: f64,
    n: usize,
    resamples: usize,
    seed: u64,
    stat: impl Fn(&[usize]) -> f64,
) -> Estimate {
    if n < 2 || resamples == 0 {
        return Estimate {
            value,
            ci: [f64::NAN, f64::NAN],
        };
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut vals: Vec<f64> = (0..resamples)
        .map(|_| {
            let idx: Vec<usize> = (0..n).map(|_| rng.random_range(0..n)).collect();
            stat(&idx)
        })
        .collect();
    vals.sort_by(f64::total_cmp);
    let at = |q: f64| vals[((q * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    Estimate {
        value,
        ci: [at(0.025), at(0.975)],
    }
}

/// The mean Kendall tau a perfect predictor reaches against k-seed mean accuracies: between the
/// nets' true accuracies and those measured with the noise of a k-seed mean (`noise_std` is the
/// seed-to-seed std over the square root of the seeds per net). The true accuracies are the
/// observed means shrunk towards their mean until their variance is the between-net variance
/// (the means' variance less the noise variance), since the observed means already carry the
/// noise. `None` when that variance is not positive: the means vary no more than the noise, so no
/// ceiling can be estimated.
pub fn tau_ceiling(means: &[f64], noise_std: f64, draws: usize, seed: u64) -> Option<f64> {
    let n = means.len();
    if n < 2 || draws == 0 || !noise_std.is_finite() {
        return None;
    }
    let mean = means.iter().sum::<f64>() / n as f64;
    let var = means.iter().map(|m| (m - mean) * (m - mean)).sum::<f64>() / (n - 1) as f64;
    let between = var - noise_std * noise_std;
    if between <= 0.0 || var <= 0.0 {
        return None;
    }
    let shrink = (between / var).sqrt();
    let truth: Vec<f64> = means.iter().map(|m| mean + shrink * (m - mean)).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut sum = 0.0;
    for _ in 0..draws {
        let noisy: Vec<f64> = truth
            .iter()
            .map(|t| t + noise_std * normal(&mut rng))
            .collect();
        sum += kendall_tau(&truth, &noisy);
    }
    Some(sum / draws as f64)
}

/// The reliability of the nets' k-seed mean accuracies: the intraclass correlation ICC(1,k) of a
/// one-way analysis of variance, `(MSB - MSW) / MSB`, the share of the means' variance that is
/// between nets rather than seed noise (the split-half correlation corrected to k seeds by
/// Spearman-Brown estimates the same). 1: the means rank the nets reproducibly; 0 or below: they
/// are noise. `groups` holds each net's accuracies, all with the same number of seeds (at least
/// 2); `None` otherwise.
pub fn mean_reliability(groups: &[Vec<f64>]) -> Option<f64> {
    let n = groups.len();
    let k = groups.first()?.len();
    if n < 2 || k < 2 || groups.iter().any(|g| g.len() != k) {
        return None;
    }
    let means: Vec<f64> = groups
        .iter()
        .map(|g| g.iter().sum::<f64>() / k as f64)
        .collect();
    let grand = means.iter().sum::<f64>() / n as f64;
    let msb =
        k as f64 * means.iter().map(|m| (m - grand) * (m - grand)).sum::<f64>() / (n - 1) as f64;
    let msw = pooled_std(groups).powi(2);
    (msb > 0.0).then(|| (msb - msw) / msb)
}

/// Kendall's tau of `a` against `y` less that of `b` against `y`, with a 95 % interval from the
/// paired bootstrap: each resample draws the same nets for both, so the interval is that of the
/// difference (two separate intervals that overlap say little about it).
pub fn paired_tau_difference(
    a: &[f64],
    b: &[f64],
    y: &[f64],
    resamples: usize,
    seed: u64,
) -> Estimate {
    let value = kendall_tau(a, y) - kendall_tau(b, y);
    resampled(value, y.len(), resamples, seed, |idx| {
        let ry = pick(y, idx);
        kendall_tau(&pick(a, idx), &ry) - kendall_tau(&pick(b, idx), &ry)
    })
}

/// A standard normal draw (Box-Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random_range(0.0..1.0);
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// The pooled seed-to-seed standard deviation of repeated measurements (groups of one add
/// nothing).
pub fn pooled_std(groups: &[Vec<f64>]) -> f64 {
    let (mut ss, mut dof) = (0.0, 0.0);
    for g in groups.iter().filter(|g| g.len() > 1) {
        let m = g.iter().sum::<f64>() / g.len() as f64;
        ss += g.iter().map(|x| (x - m) * (x - m)).sum::<f64>();
        dof += (g.len() - 1) as f64;
    }
    if dof == 0.0 {
        f64::NAN
    } else {
        (ss / dof).sqrt()
    }
}

/// The Wilson score interval (95 %) of a proportion `p` measured on `n` trials: how far an
/// accuracy on `n` test images may lie from the net's true accuracy by the luck of the draw.
pub fn wilson_interval(p: f64, n: usize) -> [f64; 2] {
    if n == 0 {
        return [0.0, 1.0];
    }
    let z = 1.959_964f64;
    let n = n as f64;
    let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z / (1.0 + z * z / n) * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    [(centre - half).max(0.0), (centre + half).min(1.0)]
}
