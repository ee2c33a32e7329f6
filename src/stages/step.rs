//! One training step per kind of training: block distillation and classifier training. The
//! stages call these, and so does `plan --measure`, so a projection times exactly what a run does
//! (optimizer, weight decay, loss and path sampling included).

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Int, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::Classifier;
use crate::nn::{Mode, SuperBlock};
use crate::plan::{Plan, TrainSpec};
use crate::space::{Path, PathSampling};

/// A uniformly random path of a cell.
fn sample_path(rng: &mut ChaCha8Rng, cell: usize, layers: usize, ops: usize) -> Path {
    Path {
        cell,
        ops: (0..layers).map(|_| rng.random_range(0..ops)).collect(),
    }
}

/// The optimizer of a block's distillation: Adam with `distill.weight_decay`.
pub fn distill_optimizer(plan: &Plan) -> ModuleOptimizer {
    AdamConfig::new()
        .with_weight_decay(Some(WeightDecayConfig::new(
            plan.distill.weight_decay as f32,
        )))
        .init()
}

/// The paths step `step` of epoch `epoch` trains in block `i` (seeded by the plan, so a resumed
/// run samples the same): one per cell, `distill.sampling` saying how cells are drawn.
pub fn sampled_paths(plan: &Plan, i: usize, epoch: usize, step: usize) -> Vec<Path> {
    let mut rng = ChaCha8Rng::seed_from_u64(plan.seeds.distill_paths(i, epoch, step));
    let block = &plan.space.blocks[i];
    let ops = block.ops.len();
    match plan.distill.sampling {
        PathSampling::Cell => block
            .cells
            .iter()
            .enumerate()
            .map(|(ci, cell)| sample_path(&mut rng, ci, cell.layers, ops))
            .collect(),
        PathSampling::Path => {
            let counts: Vec<f64> = block
                .cells
                .iter()
                .map(|c| (ops as f64).powi(c.layers as i32))
                .collect();
            let total: f64 = counts.iter().sum();
            (0..block.cells.len())
                .map(|_| {
                    let mut u = rng.random_range(0.0..total);
                    let mut ci = 0;
                    while ci + 1 < counts.len() && u >= counts[ci] {
                        u -= counts[ci];
                        ci += 1;
                    }
                    sample_path(&mut rng, ci, block.cells[ci].layers, ops)
                })
                .collect()
        }
    }
}

/// Step `step` of epoch `epoch` of block `i`'s distillation: the sampled paths
/// ([`sampled_paths`]), the MSE of each against the teacher's tap, their mean, one optimizer
/// step at the block's learning rate for the epoch.
/// Returns the updated block and the loss (detached, still on the device: reading it back would
/// make a GPU wait for the step).
#[allow(clippy::too_many_arguments)]
pub fn distill_step(
    plan: &Plan,
    i: usize,
    net: SuperBlock,
    optim: &mut ModuleOptimizer,
    input: Tensor<4>,
    target: Tensor<4>,
    epoch: usize,
    step: usize,
) -> (SuperBlock, Tensor<1>) {
    let paths = sampled_paths(plan, i, epoch, step);
    let mut loss: Option<Tensor<1>> = None;
    for path in &paths {
        let diff = net.forward(path, input.clone(), Mode::TRAIN) - target.clone();
        let l = (diff.clone() * diff).mean();
        loss = Some(match loss {
            Some(s) => s + l,
            None => l,
        });
    }
    let loss = loss.expect("a block has cells") / paths.len() as f64;
    let detached = loss.clone().inner();
    let grads = GradientsParams::from_grads(loss.backward(), &net);
    let net = optim.step(plan.distill.lr(i, epoch), net, grads);
    (net, detached)
}

/// The optimizer of from-scratch training: Adam with the settings' weight decay.
pub fn classifier_optimizer(settings: &TrainSpec) -> ModuleOptimizer {
    AdamConfig::new()
        .with_weight_decay(Some(WeightDecayConfig::new(settings.weight_decay as f32)))
        .init()
}

/// One from-scratch training step of a classifier in epoch `epoch`: cross-entropy of its logits
/// (train mode), one optimizer step at the settings' learning rate decayed to that epoch.
/// Returns the updated model and the loss (detached, on the device).
pub fn classifier_step<M: Classifier>(
    settings: &TrainSpec,
    model: M,
    optim: &mut ModuleOptimizer,
    x: Tensor<4>,
    y: Tensor<1, Int>,
    epoch: usize,
) -> (M, Tensor<1>) {
    let loss = CrossEntropyLossConfig::new()
        .init(&x.device())
        .forward(model.logits(x, Mode::TRAIN), y);
    let detached = loss.clone().inner();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    (
        optim.step(classifier_lr(settings, epoch), model, grads),
        detached,
    )
}

/// The learning rate of epoch `epoch`: decayed once per epoch.
pub fn classifier_lr(settings: &TrainSpec, epoch: usize) -> f64 {
    settings.lr * settings.lr_decay.powi(epoch as i32)
}
