//! `dnarun plan --measure`: what a whole run will cost, from a few real steps. On the chosen
//! device and at the recipe's shapes, it times the teacher's forward pass, one distillation step
//! of every block, one rating evaluation of a path of every cell (eval and calibration), the
//! exact search on synthetic ratings of the real space, and one retraining step, then multiplies
//! by the work the plan implies (epochs x steps, layer evaluations with prefix sharing,
//! calibration batches). Inputs are random tensors: no dataset, weights or run directory needed.
//! With `--measure-batch N` the steps run at batch N and times scale linearly to the recipe's
//! batch sizes (for recipes whose batches do not fit this machine).

use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::RunError;
use super::resources::{peak_rss_bytes, reset_peak_rss};
use crate::nn::device::open_device;
use crate::nn::{Mode, Student, SuperBlock, Teacher};
use crate::plan::{DeviceSpec, Plan, TrainSpec};
use crate::space::search::{Candidate, suffix_fronts, top_k};
use crate::space::{Architecture, Path};
use crate::stages::{Classifier, step};

/// The projected cost of one stage.
#[derive(Debug, Clone, Serialize)]
pub struct StageCost {
    /// Projected seconds.
    pub seconds: f64,
    /// How the figure was made.
    pub detail: String,
}

/// The projected cost of one block.
#[derive(Debug, Clone, Serialize)]
pub struct BlockCost {
    /// Block index.
    pub block: usize,
    /// The device it runs on.
    pub device: String,
    /// Seconds of one distillation step (at the recipe's batch).
    pub distill_step_seconds: f64,
    /// Projected seconds of distillation (its share; the teacher's forward is in the stage).
    pub distill_seconds: f64,
    /// Layer evaluations to rate every path with prefix sharing.
    pub layer_evaluations: f64,
    /// Projected seconds of rating.
    pub rate_seconds: f64,
    /// Peak resident memory while the block was measured, in bytes.
    pub peak_rss_bytes: u64,
}

/// What `plan --measure` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Projection {
    /// The device measured on.
    pub device: String,
    /// The batch the steps ran at (`None`: the recipe's).
    pub measure_batch: Option<usize>,
    /// Per stage: `teacher`, `distill`, `rate`, `search`, `retrain`.
    pub stages: std::collections::BTreeMap<String, StageCost>,
    /// Sum of the stages, in seconds.
    pub total_seconds: f64,
    /// Peak resident memory of this measurement, in bytes.
    pub peak_rss_bytes: u64,
    /// Per block.
    pub blocks: Vec<BlockCost>,
}

/// The median seconds of `reps` calls after one warm-up (each call must wait for its results).
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn random(shape: [usize; 4], device: &Device) -> Tensor<4> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

use crate::nn::timing::sync;

struct Ctx<'a> {
    plan: &'a Plan,
    device: Device,
    /// Batch the steps run at, and the factor to each recipe batch.
    batch: Option<usize>,
}

impl Ctx<'_> {
    /// The batch to measure at for a recipe batch, and the factor that scales its times.
    fn at(&self, recipe_batch: usize) -> (usize, f64) {
        match self.batch {
            Some(b) => (b, recipe_batch as f64 / b as f64),
            None => (recipe_batch, 1.0),
        }
    }
}

/// Measures and projects a whole run of `plan` on `device` (the first of `runtime.devices` when
/// `None`).
pub fn measure(
    plan: &Plan,
    device: Option<&DeviceSpec>,
    batch: Option<usize>,
) -> Result<Projection, RunError> {
    let spec = device.unwrap_or(&plan.devices.list[0]);
    let ctx = Ctx {
        plan,
        device: open_device(spec)?,
        batch,
    };
    reset_peak_rss();
    let d = &plan.data;
    let teacher = crate::nn::initialize(
        |dev| Teacher::new(&plan.teacher, d.channels, d.classes, dev),
        &ctx.device,
        1,
    );
    let stages: Vec<usize> = plan.taps.iter().map(|t| t.stage).collect();
    let taps_time = |recipe_batch: usize| {
        let (b, k) = ctx.at(recipe_batch);
        let x = random([b, d.channels, d.image_size, d.image_size], &ctx.device);
        k * time(3, || {
            for t in teacher.forward_taps(x.clone(), &stages, Mode::Eval) {
                sync(t);
            }
        })
    };
    let teacher_distill = taps_time(plan.distill.batch_size);
    let teacher_rate = taps_time(plan.rate.batch_size);
    let mut measured = Vec::new();
    for i in 0..plan.space.blocks.len() {
        reset_peak_rss();
        measured.push(measure_block(&ctx, i)?);
    }
    let mut out = Projection {
        device: spec.to_string(),
        measure_batch: batch,
        stages: Default::default(),
        total_seconds: 0.0,
        peak_rss_bytes: 0,
        blocks: Vec::new(),
    };
    out.stages
        .insert("teacher".into(), teacher_stage(&ctx, &teacher)?);
    let (distill, rate, blocks) = project_blocks(plan, measured, teacher_distill, teacher_rate);
    out.stages.insert("distill".into(), distill);
    out.stages.insert("rate".into(), rate);
    out.stages.insert("search".into(), search_stage(plan));
    out.stages.insert("retrain".into(), retrain_stage(&ctx)?);
    out.total_seconds = out.stages.values().map(|s| s.seconds).sum();
    out.peak_rss_bytes = blocks
        .iter()
        .map(|b| b.peak_rss_bytes)
        .chain(peak_rss_bytes())
        .max()
        .unwrap_or(0);
    out.blocks = blocks;
    Ok(out)
}

/// One block: a distillation step, and per cell a path's eval and calibration forward.
fn measure_block(ctx: &Ctx, i: usize) -> Result<(BlockCost, Vec<(f64, f64)>), RunError> {
    let plan = ctx.plan;
    let block = &plan.space.blocks[i];
    let ad = ctx.device.clone().autodiff();
    let mut net = crate::nn::initialize(|d| SuperBlock::new(&plan.space, i, d), &ad, 1);
    let mut optim = step::distill_optimizer(plan);
    let d = &plan.data;
    let in_shape = match i {
        0 => [d.channels, d.image_size, d.image_size],
        _ => plan.taps[i - 1].shape,
    };
    let out_shape = plan.taps[i].shape;
    let (b, k) = ctx.at(plan.distill.batch_size);
    let x = random([b, in_shape[0], in_shape[1], in_shape[2]], &ad);
    let y = random([b, out_shape[0], out_shape[1], out_shape[2]], &ad);
    let first = Path {
        cell: 0,
        ops: vec![0; block.cells[0].layers],
    };
    let x1 = random([1, in_shape[0], in_shape[1], in_shape[2]], &ctx.device);
    let step_seconds = k * time(3, || {
        net = distill_step(plan, i, net.clone(), &mut optim, x.clone(), y.clone());
        // A one-image forward through the updated weights waits for the step to finish.
        sync(net.valid().forward(&first, x1.clone(), Mode::Eval));
    });
    // Rating: one path of each cell, evaluated and calibrated, at the rating batch.
    let eval_net = net.valid();
    let (rb, rk) = ctx.at(plan.rate.batch_size);
    let xr = random([rb, in_shape[0], in_shape[1], in_shape[2]], &ctx.device);
    let cells: Vec<(f64, f64)> = block
        .cells
        .iter()
        .enumerate()
        .map(|(ci, c)| {
            let path = Path {
                cell: ci,
                ops: vec![0; c.layers],
            };
            let eval = rk * time(3, || sync(eval_net.forward(&path, xr.clone(), Mode::Eval)));
            let cal = rk
                * time(3, || {
                    sync(eval_net.forward(&path, xr.clone(), Mode::Train { momentum: 0.5 }))
                });
            (eval, cal)
        })
        .collect();
    let cost = BlockCost {
        block: i,
        device: plan.devices.label_of_block(i),
        distill_step_seconds: step_seconds,
        distill_seconds: 0.0,
        layer_evaluations: 0.0,
        rate_seconds: 0.0,
        peak_rss_bytes: peak_rss_bytes().unwrap_or(0),
    };
    Ok((cost, cells))
}

/// The distillation step `plan --measure` times: the distill stage's own ([`step::distill_step`]).
pub fn distill_step(
    plan: &Plan,
    i: usize,
    net: SuperBlock,
    optim: &mut burn::optim::ModuleOptimizer,
    x: Tensor<4>,
    y: Tensor<4>,
) -> SuperBlock {
    step::distill_step(plan, i, net, optim, x, y, 0, 0).0
}

/// The training step `plan --measure` times for the teacher and retraining: the stages' own
/// ([`step::classifier_step`]).
pub fn training_step<M: Classifier>(
    settings: &TrainSpec,
    model: M,
    optim: &mut burn::optim::ModuleOptimizer,
    x: Tensor<4>,
    y: Tensor<1, Int>,
) -> (M, Tensor<1>) {
    step::classifier_step(settings, model, optim, x, y, 0)
}

/// Distillation and rating of every block, per device: each device's worker runs the teacher
/// itself for its blocks, so a stage takes as long as its slowest device.
fn project_blocks(
    plan: &Plan,
    measured: Vec<(BlockCost, Vec<(f64, f64)>)>,
    teacher_distill: f64,
    teacher_rate: f64,
) -> (StageCost, StageCost, Vec<BlockCost>) {
    let d = &plan.data;
    let steps = (d.samples_per_class * d.classes)
        .div_ceil(plan.distill.batch_size)
        .min(plan.distill.max_steps.unwrap_or(usize::MAX));
    let epochs = plan.distill.epochs;
    let rated = (d.rate_per_class * d.classes).min(plan.rate.max_images.unwrap_or(usize::MAX));
    let rate_batches = rated.div_ceil(plan.rate.batch_size);
    let cal_batches = plan
        .rate
        .calibration_batches
        .min((d.samples_per_class * d.classes).div_ceil(plan.rate.batch_size));
    let mut blocks = Vec::new();
    for (mut b, cells) in measured {
        let block = &plan.space.blocks[b.block];
        let k = block.ops.len() as f64;
        b.distill_seconds = (epochs * steps) as f64 * b.distill_step_seconds;
        for (c, (eval, cal)) in block.cells.iter().zip(cells) {
            // Every prefix is recalibrated on the calibration batches, then evaluated.
            let evals: f64 = (1..=c.layers).map(|l| k.powi(l as i32)).sum();
            let per_layer =
                (eval * rate_batches as f64 + cal * cal_batches as f64) / c.layers as f64;
            b.layer_evaluations += evals;
            b.rate_seconds += evals * per_layer;
        }
        blocks.push(b);
    }
    let n = plan.devices.len();
    let per_device = |f: &dyn Fn(&BlockCost) -> f64, teacher: f64| {
        (0..n)
            .map(|k| {
                let mine: Vec<&BlockCost> = blocks
                    .iter()
                    .filter(|b| plan.devices.device_of_block(b.block) == k)
                    .collect();
                if mine.is_empty() {
                    0.0
                } else {
                    teacher + mine.iter().map(|b| f(b)).sum::<f64>()
                }
            })
            .fold(0.0, f64::max)
    };
    let distill = per_device(
        &|b| b.distill_seconds,
        teacher_distill * (epochs * steps) as f64,
    );
    let rate = per_device(
        &|b| b.rate_seconds,
        teacher_rate * (rate_batches + cal_batches) as f64,
    );
    let evals: f64 = blocks.iter().map(|b| b.layer_evaluations).sum();
    (
        StageCost {
            seconds: distill,
            detail: format!(
                "{epochs} epochs x {steps} steps at batch {}, one teacher forward per step{}",
                plan.distill.batch_size,
                if n > 1 {
                    format!(", {n} devices")
                } else {
                    String::new()
                }
            ),
        },
        StageCost {
            seconds: rate,
            detail: format!(
                "{evals:.4e} layer evaluations x ({rate_batches} held-out + {cal_batches} calibration batches of {})",
                plan.rate.batch_size
            ),
        },
        blocks,
    )
}

/// The teacher stage: evaluating loaded weights on the test split, or training from scratch.
fn teacher_stage(ctx: &Ctx, teacher: &Teacher) -> Result<StageCost, RunError> {
    let plan = ctx.plan;
    let d = &plan.data;
    let test = split_size(plan, false);
    let (b, k) = ctx.at(d.batch_size);
    let x = random([b, d.channels, d.image_size, d.image_size], &ctx.device);
    let forward = k * time(3, || sync(teacher.logits(x.clone(), Mode::Eval)));
    let eval = test.0.div_ceil(d.batch_size) as f64 * forward;
    if plan.teacher.weights.is_some() {
        return Ok(StageCost {
            seconds: eval,
            detail: format!(
                "evaluate the loaded weights on {} test images{}",
                test.0, test.1
            ),
        });
    }
    let t = &plan.teacher.train;
    let train = split_size(plan, true);
    let step = train_step(ctx, t, |dev| {
        Teacher::new(&plan.teacher, d.channels, d.classes, dev)
    })?;
    let per_epoch = train
        .0
        .div_ceil(t.batch_size)
        .min(t.max_steps.unwrap_or(usize::MAX));
    let steps = per_epoch * t.epochs;
    Ok(StageCost {
        seconds: steps as f64 * step + eval,
        detail: format!(
            "train {} epochs x {} steps at batch {}{}, then evaluate",
            t.epochs, per_epoch, t.batch_size, train.1
        ),
    })
}

/// Images of the training (or test) split the stages use, and a note when it is a guess.
fn split_size(plan: &Plan, train: bool) -> (usize, String) {
    let d = &plan.data;
    let per = if train {
        d.train_per_class
    } else {
        d.test_per_class
    };
    let split = if train { &d.train } else { &d.test };
    match crate::data::read_split(d, split) {
        Ok(images) => {
            let n = images
                .histogram(d.classes)
                .iter()
                .map(|&h| per.map_or(h, |p| p.min(h)))
                .sum();
            (n, String::new())
        }
        Err(_) => {
            let n = per.unwrap_or(if train { 1300 } else { 50 }) * d.classes;
            (
                n,
                format!(" (the split is not readable here: {n} images assumed)"),
            )
        }
    }
}

/// Seconds of one from-scratch training step of `init`'s model: the step the stages take.
fn train_step<M: Classifier>(
    ctx: &Ctx,
    settings: &TrainSpec,
    init: impl Fn(&Device) -> M,
) -> Result<f64, RunError> {
    let d = &ctx.plan.data;
    let ad = ctx.device.clone().autodiff();
    let mut model = crate::nn::initialize(&init, &ad, 1);
    let mut optim = step::classifier_optimizer(settings);
    let (b, k) = ctx.at(settings.batch_size);
    let x = random([b, d.channels, d.image_size, d.image_size], &ad);
    let labels: Vec<i64> = (0..b).map(|i| (i % d.classes) as i64).collect();
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [b]), &ad);
    Ok(k * time(3, || {
        let loss;
        (model, loss) = training_step(settings, model.clone(), &mut optim, x.clone(), y.clone());
        sync(loss);
    }))
}

/// The search, run for real on random ratings of the real space.
fn search_stage(plan: &Plan) -> StageCost {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let started = Instant::now();
    let blocks: Vec<Vec<Candidate>> = plan
        .space
        .blocks
        .iter()
        .map(|b| {
            b.paths()
                .iter()
                .map(|p| Candidate {
                    rating: rng.random_range(0.1..1.0),
                    cost: plan.search.path_costs(b, p),
                })
                .collect()
        })
        .collect();
    let fixed = plan.search.fixed_costs(&plan.space);
    // As the search stage does: the top-k, then the whole front for the report.
    let _ = suffix_fronts(&blocks);
    let found = top_k(&blocks, fixed, plan.search.all_limits(), plan.search.top_k);
    StageCost {
        seconds: started.elapsed().as_secs_f64(),
        detail: format!(
            "measured: the exact top {} of {:.3e} architectures (random ratings), {} found",
            plan.search.top_k,
            plan.space.size(),
            found.len()
        ),
    }
}

/// Retraining the top architectures and the random controls from scratch.
fn retrain_stage(ctx: &Ctx) -> Result<StageCost, RunError> {
    let plan = ctx.plan;
    let t = &plan.retrain.train;
    // A typical architecture: every block's path of median cost.
    let arch = Architecture {
        paths: plan
            .space
            .blocks
            .iter()
            .map(|b| {
                let mut paths = b.paths();
                paths.sort_by_key(|p| b.path_cost(p).macs);
                paths.swap_remove(paths.len() / 2)
            })
            .collect(),
    };
    let step = train_step(ctx, t, |dev| Student::new(&plan.space, &arch, dev))?;
    let train = split_size(plan, true);
    let nets = plan.search.top_k + plan.retrain.random_controls;
    let per_epoch = train
        .0
        .div_ceil(t.batch_size)
        .min(t.max_steps.unwrap_or(usize::MAX));
    let test = split_size(plan, false).0.div_ceil(t.batch_size);
    let d = &plan.data;
    let (b, k) = ctx.at(t.batch_size);
    let student = Student::new(&plan.space, &arch, &ctx.device);
    let x = random([b, d.channels, d.image_size, d.image_size], &ctx.device);
    let eval = test as f64 * k * time(3, || sync(student.logits(x.clone(), Mode::Eval)));
    Ok(StageCost {
        seconds: nets as f64 * ((per_epoch * t.epochs) as f64 * step + eval),
        detail: format!(
            "{nets} nets x {} epochs x {} steps at batch {} (a median-cost architecture), then evaluate{}",
            t.epochs, per_epoch, t.batch_size, train.1
        ),
    })
}

impl Projection {
    /// The table `plan --measure` prints.
    pub fn table(&self) -> String {
        let h = |s: f64| s / 3600.0;
        let mut out = format!(
            "measured on {}{}:\n{:<8} {:>12} {:>10}  how\n",
            self.device,
            self.measure_batch
                .map(|b| format!(" at batch {b}, scaled linearly to the recipe's batches"))
                .unwrap_or_default(),
            "stage",
            "seconds",
            "hours"
        );
        for name in ["teacher", "distill", "rate", "search", "retrain"] {
            let s = &self.stages[name];
            out += &format!(
                "{name:<8} {:>12.1} {:>10.3}  {}\n",
                s.seconds,
                h(s.seconds),
                s.detail
            );
        }
        out += &format!(
            "{:<8} {:>12.1} {:>10.3}  device-hours on {}\n",
            "total",
            self.total_seconds,
            h(self.total_seconds),
            self.device
        );
        out += "block  device      distill step s   distill h   layer evals   rate h   peak MiB\n";
        for b in &self.blocks {
            out += &format!(
                "{:>5}  {:<10} {:>15.4} {:>11.3} {:>13.4e} {:>8.3} {:>10.0}\n",
                b.block,
                b.device,
                b.distill_step_seconds,
                h(b.distill_seconds),
                b.layer_evaluations,
                h(b.rate_seconds),
                b.peak_rss_bytes as f64 / 1048576.0
            );
        }
        out += &format!(
            "peak memory of the measurement: {:.0} MiB (host)\n",
            self.peak_rss_bytes as f64 / 1048576.0
        );
        out
    }
}
