//! A learned additive predictor of accuracy from block ratings (DONNA-style): accuracy ~
//! bias + sum_i w_i * rating_i, fitted by ridge regression on a study's retrained nets. Being a
//! sum over blocks, it keeps the exact search exact: the search minimises sum_i (-w_i *
//! rating_i). Pure Rust.

use serde::{Deserialize, Serialize};

/// The fitted predictor (`predictor.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Predictor {
    /// Accuracy at zero ratings.
    pub bias: f64,
    /// One weight per block.
    pub weights: Vec<f64>,
    /// The ridge strength it was fitted with (relative to the mean variance of the ratings).
    pub ridge: f64,
    /// Nets it was fitted on.
    pub n: usize,
}

impl Predictor {
    /// Ridge regression of `y` on the rows of `x` (one rating per block), the bias unpenalised.
    /// The penalty is `ridge` times the ratings' mean variance, so it does not depend on scale.
    pub fn fit(x: &[Vec<f64>], y: &[f64], ridge: f64) -> Predictor {
        let n = x.len();
        let p = x.first().map_or(0, Vec::len);
        let mean_x: Vec<f64> = (0..p)
            .map(|j| x.iter().map(|r| r[j]).sum::<f64>() / n.max(1) as f64)
            .collect();
        let mean_y = y.iter().sum::<f64>() / n.max(1) as f64;
        // Normal equations of the centred problem: (X'X + lambda I) w = X'y.
        let mut a = vec![vec![0.0; p]; p];
        let mut b = vec![0.0; p];
        for (r, &t) in x.iter().zip(y) {
            for i in 0..p {
                let xi = r[i] - mean_x[i];
                b[i] += xi * (t - mean_y);
                for j in 0..p {
                    a[i][j] += xi * (r[j] - mean_x[j]);
                }
            }
        }
        let scale = (0..p).map(|i| a[i][i]).sum::<f64>() / p.max(1) as f64;
        let lambda = ridge * scale.max(1e-12);
        for (i, row) in a.iter_mut().enumerate() {
            row[i] += lambda;
        }
        let weights = solve(a, b);
        let bias = mean_y - weights.iter().zip(&mean_x).map(|(w, m)| w * m).sum::<f64>();
        Predictor {
            bias,
            weights,
            ridge,
            n,
        }
    }

    /// The predicted accuracy of an architecture with these block ratings.
    pub fn predict(&self, ratings: &[f64]) -> f64 {
        self.bias
            + self
                .weights
                .iter()
                .zip(ratings)
                .map(|(w, r)| w * r)
                .sum::<f64>()
    }

    /// What the search minimises for block `i`'s path of rating `r`: minus its contribution.
    pub fn block_score(&self, i: usize, r: f64) -> f64 {
        -self.weights[i] * r
    }

    /// Leave-one-out predictions: each net predicted by a fit on all the others.
    pub fn loo(x: &[Vec<f64>], y: &[f64], ridge: f64) -> Vec<f64> {
        (0..x.len())
            .map(|k| {
                let (xs, ys): (Vec<Vec<f64>>, Vec<f64>) = x
                    .iter()
                    .zip(y)
                    .enumerate()
                    .filter(|(i, _)| *i != k)
                    .map(|(_, (r, t))| (r.clone(), *t))
                    .unzip();
                Predictor::fit(&xs, &ys, ridge).predict(&x[k])
            })
            .collect()
    }
}

/// Solves `a w = b` by Gaussian elimination with partial pivoting (`a` is small and, with the
/// ridge, positive definite).
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let p = b.len();
    for c in 0..p {
        let piv = (c..p)
            .max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))
            .unwrap_or(c);
        a.swap(c, piv);
        b.swap(c, piv);
        let d = a[c][c];
        if d.abs() < 1e-300 {
            continue;
        }
        for r in c + 1..p {
            let f = a[r][c] / d;
            let (top, bottom) = a.split_at_mut(r);
            for (x, y) in bottom[0][c..].iter_mut().zip(&top[c][c..]) {
                *x -= f * y;
            }
            b[r] -= f * b[c];
        }
    }
    let mut w = vec![0.0; p];
    for c in (0..p).rev() {
        let s: f64 = (c + 1..p).map(|k| a[c][k] * w[k]).sum();
        w[c] = if a[c][c].abs() < 1e-300 {
            0.0
        } else {
            (b[c] - s) / a[c][c]
        };
    }
    w
}
