//! Depthwise convolution: forward, input gradient and weight gradient as direct loops over
//! `(image, channel)` planes.
//!
//! Burn 0.22 computes a grouped convolution's weight gradient with one convolution per group plus
//! a slice-assign of the whole gradient per group, and its input gradient through a grouped
//! transposed convolution; for the depthwise layers of an MBConv (one group per channel) that made
//! the backward pass the largest part of a distillation step.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, TensorMetadata, backend_extension};
use burn::tensor::ops::ConvOptions;
use rayon::prelude::*;

use super::flex_tensor;
use crate::space::Padding;

/// The shape of one depthwise convolution: `n` images of `c` channels of `h` x `w`, a `k` x `k`
/// kernel, stride `s`, `pt`/`pl` zero rows/columns before the image, `oh` x `ow` outputs (the
/// padding after the image follows from these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Images.
    pub n: usize,
    /// Channels (= groups).
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Kernel size.
    pub k: usize,
    /// Stride.
    pub s: usize,
    /// Padding before the first row.
    pub pt: usize,
    /// Padding before the first column.
    pub pl: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl Geometry {
    /// TensorFlow-style "same" padding (Burn's `PaddingConfig2d::Same`): `ceil(h / s)` outputs,
    /// the odd pad at the end; or PyTorch's symmetric `k / 2` on both sides.
    pub fn new(dims: [usize; 4], k: usize, s: usize, padding: Padding) -> Geometry {
        let [n, c, h, w] = dims;
        let side = |len: usize| match padding {
            Padding::Same => {
                let out = len.div_ceil(s);
                let total = ((out.max(1) - 1) * s + k).saturating_sub(len);
                (total / 2, out)
            }
            Padding::Symmetric => (k / 2, (len + 2 * (k / 2)).saturating_sub(k) / s + 1),
        };
        let ((pt, oh), (pl, ow)) = (side(h), side(w));
        Geometry {
            n,
            c,
            h,
            w,
            k,
            s,
            pt,
            pl,
            oh,
            ow,
        }
    }

    /// The same convolution as Burn's `ConvOptions` (groups = channels).
    pub fn options(&self) -> ConvOptions<2> {
        let end = |len: usize, out: usize, begin: usize| {
            ((out.max(1) - 1) * self.s + self.k).saturating_sub(len + begin)
        };
        ConvOptions::new_with_padding(
            [self.s, self.s],
            [
                (self.pt, end(self.h, self.oh, self.pt)),
                (self.pl, end(self.w, self.ow, self.pl)),
            ],
            [1, 1],
            self.c,
        )
    }

    /// Outputs `lo..hi` along one axis whose input `o * s + tap - pad` lies in `0..len`.
    pub(crate) fn valid(&self, tap: usize, pad: usize, len: usize, out: usize) -> (usize, usize) {
        let lo = if tap >= pad {
            0
        } else {
            (pad - tap).div_ceil(self.s)
        };
        let hi = if len + pad > tap {
            ((len + pad - tap - 1) / self.s + 1).min(out)
        } else {
            0
        };
        (lo.min(hi), hi)
    }

    /// Calls `f(tap, out_row, in_row, out_cols, first_in_col)` for every kernel tap and output
    /// row that reads real (not padding) input.
    fn for_each_row(&self, mut f: impl FnMut(usize, usize, usize, (usize, usize), usize)) {
        for i in 0..self.k {
            let (r0, r1) = self.valid(i, self.pt, self.h, self.oh);
            for j in 0..self.k {
                let cols = self.valid(j, self.pl, self.w, self.ow);
                if cols.0 >= cols.1 {
                    continue;
                }
                let first = cols.0 * self.s + j - self.pl;
                for r in r0..r1 {
                    f(i * self.k + j, r, r * self.s + i - self.pt, cols, first);
                }
            }
        }
    }
}

/// Forward of one `(image, channel)` plane: `out += conv(x, taps)`.
fn forward_plane(g: &Geometry, x: &[f32], taps: &[f32], out: &mut [f32]) {
    g.for_each_row(|t, r, ir, (q0, q1), first| {
        let wv = taps[t];
        let o = &mut out[r * g.ow + q0..r * g.ow + q1];
        let xs = &x[ir * g.w + first..];
        if g.s == 1 {
            for (o, x) in o.iter_mut().zip(xs) {
                *o += wv * x;
            }
        } else {
            for (o, x) in o.iter_mut().zip(xs.iter().step_by(g.s)) {
                *o += wv * x;
            }
        }
    });
}

/// Input gradient of one plane: `dx += conv_transpose(grad, taps)`.
fn input_grad_plane(g: &Geometry, grad: &[f32], taps: &[f32], dx: &mut [f32]) {
    g.for_each_row(|t, r, ir, (q0, q1), first| {
        let wv = taps[t];
        let go = &grad[r * g.ow + q0..r * g.ow + q1];
        let d = &mut dx[ir * g.w + first..];
        if g.s == 1 {
            for (d, gv) in d.iter_mut().zip(go) {
                *d += wv * gv;
            }
        } else {
            for (d, gv) in d.iter_mut().step_by(g.s).zip(go) {
                *d += wv * gv;
            }
        }
    });
}

/// Weight gradient of one plane: `acc[tap] += sum(grad * shifted x)`.
fn weight_grad_plane(g: &Geometry, x: &[f32], grad: &[f32], acc: &mut [f32]) {
    g.for_each_row(|t, r, ir, (q0, q1), first| {
        let go = &grad[r * g.ow + q0..r * g.ow + q1];
        let xs = &x[ir * g.w + first..];
        acc[t] += if g.s == 1 {
            dot(go, &xs[..go.len()])
        } else {
            go.iter()
                .zip(xs.iter().step_by(g.s))
                .map(|(a, b)| a * b)
                .sum()
        };
    });
}

/// A dot product in eight independent lanes, so the compiler can vectorise it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Depthwise forward over flat NCHW data.
pub fn forward_cpu(g: &Geometry, x: &[f32], w: &[f32]) -> Vec<f32> {
    let (ip, op, kk) = (g.h * g.w, g.oh * g.ow, g.k * g.k);
    let mut out = vec![0.0f32; g.n * g.c * op];
    out.par_chunks_mut(op.max(1))
        .enumerate()
        .for_each(|(p, o)| {
            let c = p % g.c;
            forward_plane(g, &x[p * ip..(p + 1) * ip], &w[c * kk..(c + 1) * kk], o);
        });
    out
}

/// Gradient of the depthwise convolution with respect to its input.
pub fn input_grad_cpu(g: &Geometry, w: &[f32], grad: &[f32]) -> Vec<f32> {
    let (ip, op, kk) = (g.h * g.w, g.oh * g.ow, g.k * g.k);
    let mut dx = vec![0.0f32; g.n * g.c * ip];
    dx.par_chunks_mut(ip.max(1)).enumerate().for_each(|(p, d)| {
        let c = p % g.c;
        input_grad_plane(g, &grad[p * op..(p + 1) * op], &w[c * kk..(c + 1) * kk], d);
    });
    dx
}

/// Gradient of the depthwise convolution with respect to its `[c, 1, k, k]` weight; summed over
/// the images in a fixed order, so it does not depend on the number of threads.
pub fn weight_grad_cpu(g: &Geometry, x: &[f32], grad: &[f32]) -> Vec<f32> {
    let (ip, op, kk) = (g.h * g.w, g.oh * g.ow, g.k * g.k);
    let mut dw = vec![0.0f32; g.c * kk];
    dw.par_chunks_mut(kk.max(1))
        .enumerate()
        .for_each(|(c, acc)| {
            for n in 0..g.n {
                let p = n * g.c + c;
                weight_grad_plane(
                    g,
                    &x[p * ip..(p + 1) * ip],
                    &grad[p * op..(p + 1) * op],
                    acc,
                );
            }
        });
    dw
}

/// A depthwise convolution as a backend extension: `flex` runs the loops above, `Autodiff<Flex>`
/// adds their backward; the cubecl backends (`Cube`, CUDA and wgpu) run Burn's convolution forward
/// with the weight gradient as per-tap reductions (`nn::gpu`).
#[backend_extension(Flex, Cube: cfg(any(feature = "wgpu", feature = "cuda")), Autodiff)]
pub trait DepthwiseBackend: Backend {
    /// Depthwise convolution of `x` `[n, c, h, w]` with `weight` `[c, 1, k, k]`, no bias; `geo`
    /// = `[stride, pad_top, pad_left, out_h, out_w]` (the padding after the image follows).
    fn depthwise_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        geo: [usize; 5],
    ) -> FloatTensor<Self>;
}

/// The geometry of the extension's arguments: shapes from the tensors, `geo` = `[stride,
/// pad_top, pad_left, out_h, out_w]`.
pub(crate) fn geometry<B: Backend>(
    x: &FloatTensor<B>,
    weight: &FloatTensor<B>,
    geo: [usize; 5],
) -> Geometry {
    let xs = x.shape();
    let k = weight.shape()[2];
    let [s, pt, pl, oh, ow] = geo;
    Geometry {
        n: xs[0],
        c: xs[1],
        h: xs[2],
        w: xs[3],
        k,
        s,
        pt,
        pl,
        oh,
        ow,
    }
}

fn flex_forward(
    x: FloatTensor<Flex>,
    weight: FloatTensor<Flex>,
    geo: [usize; 5],
) -> FloatTensor<Flex> {
    let g = geometry::<Flex>(&x, &weight, geo);
    let (x, weight) = (x.to_contiguous(), weight.to_contiguous());
    let out = forward_cpu(&g, x.storage::<f32>(), weight.storage::<f32>());
    flex_tensor(out, [g.n, g.c, g.oh, g.ow])
}

impl DepthwiseBackend for Flex {
    fn depthwise_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        geo: [usize; 5],
    ) -> FloatTensor<Self> {
        flex_forward(x, weight, geo)
    }
}

#[derive(Debug)]
struct DepthwiseBackward;

impl Backward<Flex, 2> for DepthwiseBackward {
    type State = (FloatTensor<Flex>, FloatTensor<Flex>, [usize; 5]);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let (x, weight, geo) = ops.state;
        let g = geometry::<Flex>(&x, &weight, geo);
        if let Some(node) = node_w {
            let x = x.to_contiguous();
            let dw = weight_grad_cpu(&g, x.storage::<f32>(), grad.storage::<f32>());
            grads.register::<Flex>(node.id, flex_tensor(dw, [g.c, 1, g.k, g.k]));
        }
        if let Some(node) = node_x {
            let weight = weight.to_contiguous();
            let dx = input_grad_cpu(&g, weight.storage::<f32>(), grad.storage::<f32>());
            grads.register::<Flex>(node.id, flex_tensor(dx, [g.n, g.c, g.h, g.w]));
        }
    }
}

impl<C: CheckpointStrategy> DepthwiseBackend for Autodiff<Flex, C> {
    fn depthwise_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        geo: [usize; 5],
    ) -> FloatTensor<Self> {
        tracked::<Flex, C, _>(DepthwiseBackward, x, weight, geo, flex_forward)
    }
}

/// The autodiff half of the extension for any backend: runs `forward` on the inner backend and,
/// when either input is tracked, records `backward` with `(x, weight, geo)` as its state.
pub(crate) fn tracked<B, C, W>(
    backward: W,
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    geo: [usize; 5],
    forward: fn(FloatTensor<B>, FloatTensor<B>, [usize; 5]) -> FloatTensor<B>,
) -> FloatTensor<Autodiff<B, C>>
where
    B: Backend,
    C: CheckpointStrategy,
    W: Backward<B, 2, State = (FloatTensor<B>, FloatTensor<B>, [usize; 5])>,
{
    match backward
        .prepare::<C>([x.node(), weight.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (xp, wp) = (x.primitive().clone(), weight.primitive().clone());
            let out = forward(xp.clone(), wp.clone(), geo);
            prep.finish((xp, wp, geo), out)
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(forward(x.into_primitive(), weight.into_primitive(), geo))
        }
    }
}
