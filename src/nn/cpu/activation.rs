//! ReLU, ReLU6 and swish in one pass each way. Burn 0.22 builds them from comparisons, masks and
//! (for swish) a sigmoid and a product, each a full pass over the tensor with its own allocation,
//! forward and backward.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use rayon::prelude::*;

use super::flex_tensor;

const CHUNK: usize = 1 << 14;

/// `Activation as usize`: 0 ReLU, 1 ReLU6, 2 swish.
fn forward_value(kind: usize, x: f32) -> f32 {
    match kind {
        0 => x.max(0.0),
        1 => x.clamp(0.0, 6.0),
        _ => x / (1.0 + (-x).exp()),
    }
}

fn derivative(kind: usize, x: f32) -> f32 {
    match kind {
        0 => (x > 0.0) as u8 as f32,
        1 => (x > 0.0 && x < 6.0) as u8 as f32,
        _ => {
            let s = 1.0 / (1.0 + (-x).exp());
            s * (1.0 + x * (1.0 - s))
        }
    }
}

/// The activation applied to every element.
pub fn forward_cpu(kind: usize, x: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(o, x)| {
            for (o, &x) in o.iter_mut().zip(x) {
                *o = forward_value(kind, x);
            }
        });
    out
}

/// The gradient with respect to the input, given the input and the output's gradient.
pub fn backward_cpu(kind: usize, x: &[f32], grad: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(grad.par_chunks(CHUNK)))
        .for_each(|(o, (x, g))| {
            for ((o, &x), &g) in o.iter_mut().zip(x).zip(g) {
                *o = g * derivative(kind, x);
            }
        });
    out
}

/// An elementwise activation as a backend extension.
#[backend_extension(Flex, Autodiff)]
pub trait ActivationBackend: Backend {
    /// `kind`: 0 ReLU, 1 ReLU6, 2 swish.
    fn activation(x: FloatTensor<Self>, kind: usize) -> FloatTensor<Self>;
}

fn flex_forward(x: FloatTensor<Flex>, kind: usize) -> FloatTensor<Flex> {
    let x = x.to_contiguous();
    let shape = x.layout().shape().clone();
    let out = forward_cpu(kind, x.storage::<f32>());
    flex_tensor(out, [shape.num_elements()]).reshape(shape)
}

impl ActivationBackend for Flex {
    fn activation(x: FloatTensor<Self>, kind: usize) -> FloatTensor<Self> {
        flex_forward(x, kind)
    }
}

#[derive(Debug)]
struct ActivationBackward;

impl Backward<Flex, 1> for ActivationBackward {
    type State = (FloatTensor<Flex>, usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let (x, kind) = ops.state;
        if let Some(node) = node {
            let x = x.to_contiguous();
            let shape = x.layout().shape().clone();
            let dx = backward_cpu(kind, x.storage::<f32>(), grad.storage::<f32>());
            grads.register::<Flex>(
                node.id,
                flex_tensor(dx, [shape.num_elements()]).reshape(shape),
            );
        }
    }
}

impl<C: CheckpointStrategy> ActivationBackend for Autodiff<Flex, C> {
    fn activation(x: FloatTensor<Self>, kind: usize) -> FloatTensor<Self> {
        match ActivationBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let xp = x.primitive().clone();
                let out = flex_forward(xp.clone(), kind);
                prep.finish((xp, kind), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(flex_forward(x.into_primitive(), kind)),
        }
    }
}
