//! BatchNorm with batch statistics: the statistics, the normalisation and its backward as
//! per-channel loops. Burn 0.22's default computes the statistics by transposing the batch to
//! channels-first and reducing, and its backward from about a dozen tensor operations, each a full
//! pass with its own allocation.
//!
//! Tensors are `[N, C, R, 1]` (the caller flattens the spatial dimensions into `R`); statistics
//! are `[2, C]`: the mean and the biased variance, as Burn's `batch_norm_train` returns them.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use rayon::prelude::*;

use super::{NoGrad, flex_tensor};

/// `[N, C, R]` of a tensor.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    /// Images.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Values per channel and image.
    pub r: usize,
}

impl Dims {
    fn of(x: &FloatTensor<Flex>) -> Dims {
        let s = x.layout().shape();
        Dims {
            n: s[0],
            c: s[1],
            r: s[2..].iter().product(),
        }
    }

    fn plane<'a>(&self, data: &'a [f32], n: usize, c: usize) -> &'a [f32] {
        let at = (n * self.c + c) * self.r;
        &data[at..at + self.r]
    }

    fn count(&self) -> f64 {
        (self.n * self.r) as f64
    }
}

/// Sum of a slice in eight lanes (vectorisable), accumulated in `f64` per plane.
fn sum(v: &[f32]) -> f64 {
    let mut lanes = [0.0f32; 8];
    let chunks = v.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for l in 0..8 {
            lanes[l] += c[l];
        }
    }
    (lanes.iter().sum::<f32>() + tail) as f64
}

/// Per-channel mean and biased variance, `[means..., variances...]` (two passes, `f64` sums).
pub fn stats_cpu(d: Dims, x: &[f32]) -> Vec<f32> {
    let per: Vec<(f32, f32)> = (0..d.c)
        .into_par_iter()
        .map(|c| {
            let mean = (0..d.n).map(|n| sum(d.plane(x, n, c))).sum::<f64>() / d.count();
            let m = mean as f32;
            let var = (0..d.n)
                .map(|n| {
                    let p = d.plane(x, n, c);
                    let mut lanes = [0.0f32; 8];
                    let chunks = p.chunks_exact(8);
                    let tail: f32 = chunks.remainder().iter().map(|v| (v - m) * (v - m)).sum();
                    for ch in chunks {
                        for l in 0..8 {
                            lanes[l] += (ch[l] - m) * (ch[l] - m);
                        }
                    }
                    (lanes.iter().sum::<f32>() + tail) as f64
                })
                .sum::<f64>()
                / d.count();
            (m, var as f32)
        })
        .collect();
    per.iter()
        .map(|p| p.0)
        .chain(per.iter().map(|p| p.1))
        .collect()
}

/// `y = (x - mean) / sqrt(var + eps) * gamma + beta`.
pub fn forward_cpu(
    d: Dims,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    stats: &[f32],
    eps: f64,
) -> Vec<f32> {
    let (scale, shift): (Vec<f32>, Vec<f32>) = (0..d.c)
        .map(|c| {
            let a = gamma[c] / (stats[d.c + c] as f64 + eps).sqrt() as f32;
            (a, beta[c] - stats[c] * a)
        })
        .unzip();
    affine_cpu(d, x, &scale, &shift)
}

/// Per channel: the sum of `grad` and the sum of `grad * (x - centre(c))`, each image's plane
/// in eight lanes, the images in `f64` in a fixed order.
fn channel_sums(
    d: Dims,
    x: &[f32],
    grad: &[f32],
    centre: impl Fn(usize) -> f32 + Sync,
) -> Vec<(f64, f64)> {
    (0..d.c)
        .into_par_iter()
        .map(|c| {
            let m = centre(c);
            (0..d.n).fold((0.0, 0.0), |(sg, sgx), n| {
                let (xp, gp) = (d.plane(x, n, c), d.plane(grad, n, c));
                let mut lanes = [0.0f32; 8];
                let (cx, cg) = (xp.chunks_exact(8), gp.chunks_exact(8));
                let tail: f32 = cx
                    .remainder()
                    .iter()
                    .zip(cg.remainder())
                    .map(|(v, g)| (v - m) * g)
                    .sum();
                for (vx, vg) in cx.zip(cg) {
                    for l in 0..8 {
                        lanes[l] += (vx[l] - m) * vg[l];
                    }
                }
                (
                    sg + sum(gp),
                    sgx + (lanes.iter().sum::<f32>() + tail) as f64,
                )
            })
        })
        .collect()
}

/// Gradients with respect to `x`, `gamma` and `beta` of the batch-statistics normalisation.
pub fn backward_cpu(
    d: Dims,
    x: &[f32],
    gamma: &[f32],
    stats: &[f32],
    eps: f64,
    grad: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    // Per channel: sum of the gradient and of gradient x centred input.
    let sums = channel_sums(d, x, grad, |c| stats[c]);
    let inv: Vec<f64> = (0..d.c)
        .map(|c| 1.0 / (stats[d.c + c] as f64 + eps).sqrt())
        .collect();
    let dgamma: Vec<f32> = (0..d.c).map(|c| (sums[c].1 * inv[c]) as f32).collect();
    let dbeta: Vec<f32> = sums.iter().map(|s| s.0 as f32).collect();
    // dx = gamma * inv * (g - mean(g) - (x - mean) * inv^2 * mean(g * (x - mean))).
    let coef: Vec<(f32, f32, f32)> = (0..d.c)
        .map(|c| {
            let k1 = gamma[c] as f64 * inv[c];
            let mean_g = sums[c].0 / d.count();
            let k2 = inv[c] * inv[c] * sums[c].1 / d.count();
            (k1 as f32, mean_g as f32, k2 as f32)
        })
        .collect();
    let mut dx = vec![0.0f32; x.len()];
    dx.par_chunks_mut(d.r.max(1))
        .enumerate()
        .for_each(|(p, o)| {
            let c = p % d.c;
            let (k1, mean_g, k2) = coef[c];
            let m = stats[c];
            let (xp, gp) = (&x[p * d.r..(p + 1) * d.r], &grad[p * d.r..(p + 1) * d.r]);
            for ((o, &v), &g) in o.iter_mut().zip(xp).zip(gp) {
                *o = k1 * (g - mean_g - (v - m) * k2);
            }
        });
    (dx, dgamma, dbeta)
}

/// `y = x * scale[c] + shift[c]` (BatchNorm with fixed statistics folded into a scale and shift).
pub fn affine_cpu(d: Dims, x: &[f32], scale: &[f32], shift: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(d.r.max(1))
        .enumerate()
        .for_each(|(p, o)| {
            let c = p % d.c;
            let (a, b) = (scale[c], shift[c]);
            for (o, &v) in o.iter_mut().zip(&x[p * d.r..(p + 1) * d.r]) {
                *o = v * a + b;
            }
        });
    out
}

/// Gradients of [`affine_cpu`] with respect to `x`, `scale` and `shift`.
pub fn affine_backward_cpu(
    d: Dims,
    x: &[f32],
    scale: &[f32],
    grad: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let sums = channel_sums(d, x, grad, |_| 0.0);
    let mut dx = vec![0.0f32; x.len()];
    dx.par_chunks_mut(d.r.max(1))
        .enumerate()
        .for_each(|(p, o)| {
            let a = scale[p % d.c];
            for (o, &g) in o.iter_mut().zip(&grad[p * d.r..(p + 1) * d.r]) {
                *o = g * a;
            }
        });
    let dscale = sums.iter().map(|s| s.1 as f32).collect();
    let dshift = sums.iter().map(|s| s.0 as f32).collect();
    (dx, dscale, dshift)
}

/// BatchNorm with batch statistics as a backend extension.
#[backend_extension(Flex, Autodiff)]
pub trait BatchNormBackend: Backend {
    /// Per-channel mean and biased variance of `x` `[N, C, R, 1]`, as `[2, C]`; no gradient.
    fn bn_stats(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Normalises `x` with `stats` (which must be `bn_stats(x)`), scales and shifts; the gradient
    /// with respect to `x` includes the statistics' dependence on `x`.
    fn bn_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self>;

    /// `x * scale + shift` per channel of `x` `[N, C, R, 1]` (BatchNorm with fixed statistics).
    fn bn_affine(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

fn flex_affine(
    x: FloatTensor<Flex>,
    scale: FloatTensor<Flex>,
    shift: FloatTensor<Flex>,
) -> FloatTensor<Flex> {
    let d = Dims::of(&x);
    let shape = x.layout().shape().clone();
    let [x, scale, shift] = [x, scale, shift].map(|t| t.to_contiguous());
    let out = affine_cpu(
        d,
        x.storage::<f32>(),
        scale.storage::<f32>(),
        shift.storage::<f32>(),
    );
    flex_tensor(out, [shape.num_elements()]).reshape(shape)
}

fn flex_stats(x: FloatTensor<Flex>) -> FloatTensor<Flex> {
    let d = Dims::of(&x);
    let x = x.to_contiguous();
    flex_tensor(stats_cpu(d, x.storage::<f32>()), [2, d.c])
}

fn flex_train(
    x: FloatTensor<Flex>,
    gamma: FloatTensor<Flex>,
    beta: FloatTensor<Flex>,
    stats: FloatTensor<Flex>,
    eps: f64,
) -> FloatTensor<Flex> {
    let d = Dims::of(&x);
    let shape = x.layout().shape().clone();
    let [x, gamma, beta, stats] = [x, gamma, beta, stats].map(|t| t.to_contiguous());
    let out = forward_cpu(
        d,
        x.storage::<f32>(),
        gamma.storage::<f32>(),
        beta.storage::<f32>(),
        stats.storage::<f32>(),
        eps,
    );
    flex_tensor(out, [shape.num_elements()]).reshape(shape)
}

impl BatchNormBackend for Flex {
    fn bn_stats(x: FloatTensor<Self>) -> FloatTensor<Self> {
        flex_stats(x)
    }

    fn bn_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        flex_train(x, gamma, beta, stats, eps)
    }

    fn bn_affine(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        flex_affine(x, scale, shift)
    }
}

#[derive(Debug)]
struct AffineBackward;

impl Backward<Flex, 3> for AffineBackward {
    type State = (FloatTensor<Flex>, FloatTensor<Flex>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_scale, node_shift] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let (x, scale) = ops.state;
        let d = Dims::of(&x);
        let shape = x.layout().shape().clone();
        let [x, scale] = [x, scale].map(|t| t.to_contiguous());
        let (dx, dscale, dshift) = affine_backward_cpu(
            d,
            x.storage::<f32>(),
            scale.storage::<f32>(),
            grad.storage::<f32>(),
        );
        if let Some(node) = node_x {
            grads.register::<Flex>(
                node.id,
                flex_tensor(dx, [shape.num_elements()]).reshape(shape),
            );
        }
        if let Some(node) = node_scale {
            grads.register::<Flex>(node.id, flex_tensor(dscale, [d.c]));
        }
        if let Some(node) = node_shift {
            grads.register::<Flex>(node.id, flex_tensor(dshift, [d.c]));
        }
    }
}

#[derive(Debug)]
struct BatchNormBackward;

impl Backward<Flex, 3> for BatchNormBackward {
    type State = (FloatTensor<Flex>, FloatTensor<Flex>, FloatTensor<Flex>, f64);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let (x, gamma, stats, eps) = ops.state;
        let d = Dims::of(&x);
        let shape = x.layout().shape().clone();
        let [x, gamma, stats] = [x, gamma, stats].map(|t| t.to_contiguous());
        let (dx, dgamma, dbeta) = backward_cpu(
            d,
            x.storage::<f32>(),
            gamma.storage::<f32>(),
            stats.storage::<f32>(),
            eps,
            grad.storage::<f32>(),
        );
        if let Some(node) = node_x {
            grads.register::<Flex>(
                node.id,
                flex_tensor(dx, [shape.num_elements()]).reshape(shape),
            );
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, flex_tensor(dgamma, [d.c]));
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, flex_tensor(dbeta, [d.c]));
        }
    }
}

impl<C: CheckpointStrategy> BatchNormBackend for Autodiff<Flex, C> {
    fn bn_stats(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let out = flex_stats(x.primitive().clone());
        NoGrad
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateless(out)
    }

    fn bn_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        let sp = stats.into_primitive();
        match BatchNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (xp, gp) = (x.primitive().clone(), gamma.primitive().clone());
                let out = flex_train(
                    xp.clone(),
                    gp.clone(),
                    beta.into_primitive(),
                    sp.clone(),
                    eps,
                );
                prep.finish((xp, gp, sp, eps), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(flex_train(
                x.into_primitive(),
                gamma.into_primitive(),
                beta.into_primitive(),
                sp,
                eps,
            )),
        }
    }

    fn bn_affine(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        match AffineBackward
            .prepare::<C>([x.node(), scale.node(), shift.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (xp, sp) = (x.primitive().clone(), scale.primitive().clone());
                let out = flex_affine(xp.clone(), sp.clone(), shift.into_primitive());
                prep.finish((xp, sp), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(flex_affine(
                x.into_primitive(),
                scale.into_primitive(),
                shift.into_primitive(),
            )),
        }
    }
}
