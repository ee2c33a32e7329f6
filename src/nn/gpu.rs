//! The depthwise convolution on the GPU backends (cubecl: CUDA and wgpu).
//!
//! Burn 0.22.1 computes a depthwise convolution's weight gradient on cubecl as one grouped
//! convolution whose "kernel" is the whole output gradient (the batch folded into the
//! channels): none of cubek's fast paths accept it, so it runs as a direct convolution with one
//! thread per weight (`channels * k * k` of them: 864 for 96 channels at 3x3), each summing
//! `images * out_h * out_w` products (200,704 at batch 64 and 56 px). Here the weight gradient is `k * k` per-tap reductions
//! instead: for tap `(i, j)`, the output gradient times the input shifted by the tap (a strided
//! slice, no padding copy), summed over images and positions. Each is an elementwise product and
//! a sum that cubecl parallelises over the whole tensor, and that fusion can merge into one
//! kernel. The forward pass and the input gradient stay Burn's own (cubecl has a depthwise
//! forward routine, and the input gradient is a transposed convolution autotune chooses for).
//!
//! [`tap_weight_grad`] is written over any backend's primitive operations, so the CPU suite tests
//! it against the CPU kernel; `tests/wgpu.rs` checks the whole operation against Burn's grouped
//! convolution on a wgpu device.

use burn::backend::{Backend, Shape, Slice, TensorMetadata, tensor::FloatTensor};

use super::cpu::depthwise::Geometry;

/// Gradient of a depthwise convolution with respect to its `[c, 1, k, k]` weight, as `k * k`
/// reductions of `grad * shifted x` over images and output positions.
pub fn tap_weight_grad<B: Backend>(
    x: FloatTensor<B>,
    grad: FloatTensor<B>,
    g: &Geometry,
) -> FloatTensor<B> {
    let device = x.device();
    let dtype = x.dtype();
    let outputs = |lo: usize, hi: usize| Slice::new(lo as isize, Some(hi as isize), 1);
    // Inputs `o * s + tap - pad` for outputs `lo..hi` (all inside the image: see `valid`).
    let inputs = |lo: usize, hi: usize, tap: usize, pad: usize| {
        let first = lo * g.s + tap - pad;
        let last = (hi - 1) * g.s + tap - pad;
        Slice::new(first as isize, Some(last as isize + 1), g.s as isize)
    };
    let mut taps = Vec::with_capacity(g.k * g.k);
    for i in 0..g.k {
        let (r0, r1) = g.valid(i, g.pt, g.h, g.oh);
        for j in 0..g.k {
            let (q0, q1) = g.valid(j, g.pl, g.w, g.ow);
            if r0 >= r1 || q0 >= q1 {
                // The tap reads only padding.
                taps.push(B::float_zeros(
                    Shape::new([1, g.c, 1]),
                    &device,
                    dtype.into(),
                ));
                continue;
            }
            let all = Slice::full();
            let gs = B::float_slice(grad.clone(), &[all, all, outputs(r0, r1), outputs(q0, q1)]);
            let xs = B::float_slice(
                x.clone(),
                &[all, all, inputs(r0, r1, i, g.pt), inputs(q0, q1, j, g.pl)],
            );
            let p = B::float_reshape(
                B::float_mul(gs, xs),
                Shape::new([g.n, g.c, (r1 - r0) * (q1 - q0)]),
            );
            taps.push(B::float_sum_dim(B::float_sum_dim(p, 2), 0));
        }
    }
    B::float_reshape(B::float_cat(taps, 2), Shape::new([g.c, 1, g.k, g.k]))
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod cube {
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops};
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Autodiff, Backend, Cube};

    use super::tap_weight_grad;
    use crate::nn::cpu::depthwise::{DepthwiseBackend, geometry, tracked};

    /// Burn's convolution; `geo` as the extension passes it.
    fn forward<B: Backend>(
        x: FloatTensor<B>,
        w: FloatTensor<B>,
        geo: [usize; 5],
    ) -> FloatTensor<B> {
        let g = geometry::<B>(&x, &w, geo);
        B::conv2d(x, w, None, g.options())
    }

    impl DepthwiseBackend for Cube {
        fn depthwise_conv2d(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            geo: [usize; 5],
        ) -> FloatTensor<Self> {
            forward::<Cube>(x, weight, geo)
        }
    }

    /// Burn's input gradient, the per-tap weight gradient.
    #[derive(Debug)]
    struct TapsBackward;

    impl<B: Backend> Backward<B, 2> for TapsBackward {
        type State = (FloatTensor<B>, FloatTensor<B>, [usize; 5]);

        fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
            let [node_x, node_w] = ops.parents;
            let grad = grads.consume::<B>(&ops.node);
            let (x, weight, geo) = ops.state;
            let g = geometry::<B>(&x, &weight, geo);
            if let Some(node) = node_w {
                let dw = tap_weight_grad::<B>(x.clone(), grad.clone(), &g);
                grads.register::<B>(node.id, dw);
            }
            if let Some(node) = node_x {
                let dx = B::conv2d_x_backward(x, weight, grad, g.options());
                grads.register::<B>(node.id, dx);
            }
        }
    }

    impl<C: CheckpointStrategy> DepthwiseBackend for Autodiff<Cube, C> {
        fn depthwise_conv2d(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            geo: [usize; 5],
        ) -> FloatTensor<Self> {
            tracked::<Cube, C, _>(TapsBackward, x, weight, geo, forward::<Cube>)
        }
    }
}
