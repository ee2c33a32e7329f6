//! dnarun's own CPU kernels for the operations an MBConv training step spends its time in:
//! depthwise convolution, BatchNorm with batch statistics, and the activations, each with a
//! handwritten backward pass.
//!
//! Each is a Burn backend extension implemented for `Flex` (the CPU backend) and
//! `Autodiff<Flex>`; on other devices (CUDA, wgpu) the functions here call Burn's own operations,
//! except the depthwise convolution, whose weight gradient runs as per-tap reductions there
//! (`nn::gpu`).
//! The loops work on whole `(image, channel)` planes and are spread over the rayon pool that
//! `flex` already uses; every reduction runs in a fixed order, so results do not depend on the
//! number of threads. `tests/models.rs` checks outputs and gradients against Burn's operations on
//! random inputs; `examples/step.rs` measures both (docs/benchmarks.md).

pub mod activation;
pub mod batchnorm;
pub mod depthwise;

use std::sync::atomic::{AtomicBool, Ordering};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Dispatch, Flex};
use burn::tensor::module::conv2d;
use burn::tensor::{DType, Device, Tensor, TensorData};

use crate::space::{Activation, Padding};
use activation::ActivationBackend;
use batchnorm::BatchNormBackend;
use depthwise::{DepthwiseBackend, Geometry};

static BURN_OPS: AtomicBool = AtomicBool::new(false);

/// Routes every operation here through Burn's own implementation (`true`) or dnarun's kernels
/// (`false`, the default): the in-run baseline of the benchmarks (`examples/step.rs`,
/// `examples/bench.rs`). The tests call Burn's operations directly instead.
pub fn use_burn_ops(on: bool) {
    BURN_OPS.store(on, Ordering::Relaxed);
}

/// Whether dnarun's kernels run for tensors on `device`.
pub fn kernels_for(device: &Device) -> bool {
    !BURN_OPS.load(Ordering::Relaxed) && *device == Device::flex()
}

/// Whether dnarun's kernels run for `x`: on the CPU backend, in `f32` (the kernels' only type).
fn kernels_run<const D: usize>(x: &Tensor<D>) -> bool {
    kernels_for(&x.device()) && x.dtype() == DType::F32
}

pub(crate) fn flex_tensor<const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
) -> FloatTensor<Flex> {
    Flex::float_from_data(TensorData::new(values, shape), &Default::default())
}

/// The backward of an output that carries no gradient (statistics read off a tensor).
#[derive(Debug)]
pub(crate) struct NoGrad;

impl Backward<Flex, 1> for NoGrad {
    type State = ();

    fn backward(self, _: Ops<(), 1>, _: &mut Gradients, _: &mut Checkpointer) {}
}

/// Which depthwise convolution runs on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depthwise {
    /// dnarun's CPU kernels (`flex`, f32).
    CpuKernels,
    /// Burn's forward and input gradient, the weight gradient as per-tap reductions (`nn::gpu`):
    /// the GPU backends.
    TapWeightGrad,
    /// Burn's grouped `conv2d` throughout (`use_burn_ops(true)`, or a build without GPU backends).
    Burn,
}

/// The depthwise convolution that runs for f32 tensors on `device`.
pub fn depthwise_on(device: &Device) -> Depthwise {
    if kernels_for(device) {
        Depthwise::CpuKernels
    } else if *device != Device::flex()
        && cfg!(any(feature = "wgpu", feature = "cuda"))
        && !BURN_OPS.load(Ordering::Relaxed)
    {
        Depthwise::TapWeightGrad
    } else {
        Depthwise::Burn
    }
}

/// Depthwise convolution (`groups` = channels, no bias) with "same" or symmetric padding.
pub fn depthwise_conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    stride: usize,
    padding: Padding,
) -> Tensor<4> {
    let g = Geometry::new(x.dims(), weight.dims()[2], stride, padding);
    let ours = match depthwise_on(&x.device()) {
        Depthwise::CpuKernels => kernels_run(&x) && kernels_run(&weight),
        Depthwise::TapWeightGrad => true,
        Depthwise::Burn => false,
    };
    if ours {
        Tensor::from_dispatch(<Dispatch as DepthwiseBackend>::depthwise_conv2d(
            x.into_dispatch(),
            weight.into_dispatch(),
            [g.s, g.pt, g.pl, g.oh, g.ow],
        ))
    } else {
        conv2d(x, weight, None, g.options())
    }
}

/// An activation function.
pub fn activate<const D: usize>(x: Tensor<D>, act: Activation) -> Tensor<D> {
    use burn::tensor::activation::{relu, relu6, silu};
    if kernels_run(&x) {
        return Tensor::from_dispatch(<Dispatch as ActivationBackend>::activation(
            x.into_dispatch(),
            act as usize,
        ));
    }
    match act {
        Activation::Relu => relu(x),
        Activation::Relu6 => relu6(x),
        Activation::Swish => silu(x),
    }
}

/// BatchNorm with batch statistics over `[N, C, ...]`: the normalised output (differentiable in
/// `x`, `gamma` and `beta`) and the per-channel mean and biased variance (not differentiable).
pub fn batch_norm_train<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> (Tensor<D>, Tensor<1>, Tensor<1>) {
    if !kernels_run(&x) || D < 2 {
        let out = burn::tensor::module::batch_norm_train(x, gamma, beta, eps);
        return (out.output, out.mean, out.variance);
    }
    let dims = x.dims();
    let rest: usize = dims[2..].iter().product();
    let x4: Tensor<4> = x.reshape([dims[0], dims[1], rest, 1]);
    let stats: Tensor<2> = Tensor::from_dispatch(<Dispatch as BatchNormBackend>::bn_stats(
        x4.clone().into_dispatch(),
    ));
    let y: Tensor<4> = Tensor::from_dispatch(<Dispatch as BatchNormBackend>::bn_train(
        x4.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        stats.clone().into_dispatch(),
        eps,
    ));
    let c = dims[1];
    let [mean, var] = [0, 1].map(|i| stats.clone().slice([i..i + 1, 0..c]).reshape([c]));
    (y.reshape(dims), mean, var)
}

/// BatchNorm with fixed statistics (`mean`, `var`): `(x - mean) / sqrt(var + eps) * gamma + beta`.
pub fn batch_norm_eval<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    mean: Tensor<1>,
    var: Tensor<1>,
    eps: f64,
) -> Tensor<D> {
    if !kernels_run(&x) || D < 2 {
        return burn::tensor::module::batch_norm(x, gamma, beta, mean, var, eps);
    }
    let scale = gamma / var.add_scalar(eps).sqrt();
    let shift = beta - mean * scale.clone();
    let dims = x.dims();
    let rest: usize = dims[2..].iter().product();
    let x4: Tensor<4> = x.reshape([dims[0], dims[1], rest, 1]);
    let y: Tensor<4> = Tensor::from_dispatch(<Dispatch as BatchNormBackend>::bn_affine(
        x4.into_dispatch(),
        scale.into_dispatch(),
        shift.into_dispatch(),
    ));
    y.reshape(dims)
}

/// Burn's own grouped `conv2d` for the convolution [`depthwise_conv2d`] computes (the tests'
/// reference).
pub fn reference_depthwise_conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    stride: usize,
    padding: Padding,
) -> Tensor<4> {
    let g = Geometry::new(x.dims(), weight.dims()[2], stride, padding);
    conv2d(x, weight, None, g.options())
}
