//! Rating every path of every cell of every block with the fair loss
//! `mean|Y - Yhat| / std(Y)` on held-out images, after re-estimating the path's BatchNorm
//! statistics on fixed calibration batches. Paths are enumerated depth-first and each layer
//! prefix's outputs (and recalibrated statistics) are reused, so a cell of L layers and K ops
//! costs K + K^2 + ... + K^L layer evaluations instead of L * K^L.

use std::time::Instant;

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::StageError;
use super::{Ctx, progress};
use crate::data::{Loader, Preprocess, batches};
use crate::nn::{Bn, Mode, SuperBlock, Teacher};
use crate::rundir::{read_json, write_atomic, write_json};
use crate::space::RateLoss;
use crate::space::{BlockSpace, Path};
use crate::track::RunStatus;

/// One rated path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rating {
    /// Textual path, e.g. `c1:k5e6-k3e3`.
    pub path: String,
    /// Cell index.
    pub cell: usize,
    /// Op index per layer.
    pub ops: Vec<usize>,
    /// Fair loss (lower is better).
    pub rating: f64,
    /// Multiply-accumulates of the path.
    pub macs: u64,
    /// FLOPs in the DNA convention.
    pub flops: u64,
    /// Parameters.
    pub params: u64,
}

/// The ratings of one block.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockRatings {
    /// Block index.
    pub block: usize,
    /// Target tap.
    pub target: String,
    /// Every path, depth-first order.
    pub ratings: Vec<Rating>,
    /// Layer evaluations spent (with prefix sharing).
    pub layer_evaluations: usize,
    /// Seconds spent.
    pub seconds: f64,
}

impl BlockRatings {
    /// The rated path at index `k`.
    pub fn path(&self, k: usize) -> Path {
        Path {
            cell: self.ratings[k].cell,
            ops: self.ratings[k].ops.clone(),
        }
    }
}

/// The architecture that takes, in every block, the rated path at the given index.
pub fn architecture_of(ratings: &[BlockRatings], choice: &[usize]) -> crate::space::Architecture {
    crate::space::Architecture {
        paths: choice
            .iter()
            .zip(ratings)
            .map(|(&k, r)| r.path(k))
            .collect(),
    }
}

/// Each block's rating of a choice.
pub fn ratings_of(ratings: &[BlockRatings], choice: &[usize]) -> Vec<f64> {
    choice
        .iter()
        .zip(ratings)
        .map(|(&k, r)| r.ratings[k].rating)
        .collect()
}

/// The index of each block's path of an architecture in the ratings (`None` if one is unrated).
pub fn choice_of(
    arch: &crate::space::Architecture,
    ratings: &[BlockRatings],
) -> Option<Vec<usize>> {
    arch.paths
        .iter()
        .zip(ratings)
        .map(|(p, r)| {
            r.ratings
                .iter()
                .position(|x| x.cell == p.cell && x.ops == p.ops)
        })
        .collect()
}

/// The data a block is rated on: calibration inputs, held-out inputs and targets.
pub struct RateData {
    /// Calibration batches (block inputs).
    pub calibration: Vec<Tensor<4>>,
    /// Held-out inputs.
    pub inputs: Vec<Tensor<4>>,
    /// Held-out targets (the teacher's tap).
    pub targets: Vec<Tensor<4>>,
    /// The loss paths are rated by.
    pub loss: RateLoss,
}

/// `mean|Y - Yhat| / std(Y)` over batches (population std). Rating divides by the targets' std
/// once per block rather than per path ([`errors`] / [`target_std`]); this is that definition.
pub fn fair_loss(y: &[Tensor<4>], y_hat: &[Tensor<4>]) -> f64 {
    rating_loss(y, y_hat, RateLoss::Fair, target_std(y))
}

/// A loss's normaliser: the targets' std (fair) or variance (relative MSE).
fn normaliser(loss: RateLoss, std: f64) -> f64 {
    match loss {
        RateLoss::Fair => std,
        RateLoss::RelativeMse => std * std,
    }
}

/// The targets' population std, from per-batch sums and sums of squares read in one go.
fn target_std(y: &[Tensor<4>]) -> f64 {
    let parts: Vec<Tensor<1>> = y
        .iter()
        .flat_map(|t| [t.clone().sum(), (t.clone() * t.clone()).sum()])
        .collect();
    let v = crate::nn::read_back(Tensor::cat(parts, 0));
    let (mut s, mut s2) = (0.0, 0.0);
    for pair in v.chunks(2) {
        s += pair[0] as f64;
        s2 += pair[1] as f64;
    }
    let n: f64 = y.iter().map(|t| t.shape().num_elements() as f64).sum();
    let mean = s / n;
    (s2 / n - mean * mean).max(1e-12).sqrt()
}

/// Per held-out batch, the summed absolute (fair) or squared (relative MSE) error, left on the
/// device.
fn errors(y: &[Tensor<4>], y_hat: &[Tensor<4>], loss: RateLoss) -> Vec<Tensor<1>> {
    y.iter()
        .zip(y_hat)
        .map(|(a, b)| {
            let d = a.clone() - b.clone();
            match loss {
                RateLoss::Fair => d.abs().sum(),
                RateLoss::RelativeMse => (d.clone() * d).sum(),
            }
        })
        .collect()
}

/// The rating of `y_hat` against `y`: the mean error divided by the loss's normaliser of `std`.
fn rating_loss(y: &[Tensor<4>], y_hat: &[Tensor<4>], loss: RateLoss, std: f64) -> f64 {
    let v = crate::nn::read_back(Tensor::cat(errors(y, y_hat, loss), 0));
    let n: f64 = y.iter().map(|t| t.shape().num_elements() as f64).sum();
    v.iter().map(|&x| x as f64).sum::<f64>() / n / normaliser(loss, std)
}

/// Runs `f` over the calibration batches in train mode, averaging their statistics into the
/// running ones, and returns the outputs.
fn calibrate(cal: &[Tensor<4>], f: impl Fn(Tensor<4>, Mode) -> Tensor<4>) -> Vec<Tensor<4>> {
    cal.iter()
        .enumerate()
        .map(|(t, x)| {
            f(
                x.clone(),
                Mode::Train {
                    momentum: 1.0 / (t as f64 + 1.0),
                },
            )
        })
        .collect()
}

fn run_all(xs: &[Tensor<4>], f: impl Fn(Tensor<4>, Mode) -> Tensor<4>) -> Vec<Tensor<4>> {
    xs.iter().map(|x| f(x.clone(), Mode::Eval)).collect()
}

/// Rates every path with prefix sharing. Returns (path, rating) in depth-first order and the
/// number of layer evaluations.
pub fn rate_block(
    net: &SuperBlock,
    block: &BlockSpace,
    data: &RateData,
) -> (Vec<(Path, f64)>, usize) {
    let std = target_std(&data.targets);
    let cal = calibrate(&data.calibration, |x, m| net.enter(x, m));
    let inputs = run_all(&data.inputs, |x, m| net.enter(x, m));
    let n: f64 = data
        .targets
        .iter()
        .map(|t| t.shape().num_elements() as f64)
        .sum();
    let mut out = Vec::new();
    let mut evals = 0;
    for (ci, cell) in block.cells.iter().enumerate() {
        let mut prefix = Vec::with_capacity(cell.layers);
        let mut pending = Vec::new();
        dfs(
            net,
            block,
            ci,
            0,
            &cal,
            &inputs,
            (&data.targets, data.loss),
            &mut prefix,
            &mut pending,
            &mut evals,
        );
        // One read per cell: every path's per-batch errors, summed on the host.
        let batches = data.targets.len();
        let (paths, sums): (Vec<Path>, Vec<Vec<Tensor<1>>>) = pending.into_iter().unzip();
        let all = crate::nn::read_back(Tensor::cat(sums.into_iter().flatten().collect(), 0));
        for (path, errs) in paths.into_iter().zip(all.chunks(batches.max(1))) {
            let sum: f64 = errs.iter().map(|&x| x as f64).sum();
            out.push((path, sum / n / normaliser(data.loss, std)));
        }
    }
    (out, evals)
}

#[allow(clippy::too_many_arguments)]
fn dfs(
    net: &SuperBlock,
    block: &BlockSpace,
    cell: usize,
    layer: usize,
    cal: &[Tensor<4>],
    inputs: &[Tensor<4>],
    targets: (&[Tensor<4>], RateLoss),
    prefix: &mut Vec<usize>,
    out: &mut Vec<(Path, Vec<Tensor<1>>)>,
    evals: &mut usize,
) {
    let layers = block.cells[cell].layers;
    for op in 0..block.ops.len() {
        let cal_out = calibrate(cal, |x, m| net.layer(cell, layer, op, x, m));
        let eval_out = run_all(inputs, |x, m| net.layer(cell, layer, op, x, m));
        *evals += 1;
        prefix.push(op);
        if layer + 1 == layers {
            calibrate(&cal_out, |x, m| net.exit(cell, x, m));
            let y_hat = run_all(&eval_out, |x, m| net.exit(cell, x, m));
            out.push((
                Path {
                    cell,
                    ops: prefix.clone(),
                },
                errors(targets.0, &y_hat, targets.1),
            ));
        } else {
            dfs(
                net,
                block,
                cell,
                layer + 1,
                &cal_out,
                &eval_out,
                targets,
                prefix,
                out,
                evals,
            );
        }
        prefix.pop();
    }
}

/// Rates every path one by one, recalibrating and running the whole path each time (the
/// reference the prefix-sharing version must equal).
pub fn rate_block_naive(net: &SuperBlock, block: &BlockSpace, data: &RateData) -> Vec<(Path, f64)> {
    let std = target_std(&data.targets);
    block
        .paths()
        .into_iter()
        .map(|path| {
            let bns: Vec<&Bn> = net.path_bns(&path);
            for bn in &bns {
                bn.reset_stats();
            }
            calibrate(&data.calibration, |x, m| net.forward(&path, x, m));
            let y_hat = run_all(&data.inputs, |x, m| net.forward(&path, x, m));
            let r = rating_loss(&data.targets, &y_hat, data.loss, std);
            (path, r)
        })
        .collect()
}

/// Reads every block's ratings.
pub fn load_all(ctx: &Ctx) -> Result<Vec<BlockRatings>, StageError> {
    (0..ctx.plan.space.blocks.len())
        .map(|i| {
            let p = ctx.dir.ratings(i);
            read_json(&p)?.ok_or_else(|| StageError::NotRated {
                block: i,
                path: p.clone(),
            })
        })
        .collect()
}

/// The teacher's features on the calibration and held-out images, computed once for all blocks.
struct Features {
    cal_x: Vec<Tensor<4>>,
    cal_taps: Vec<Vec<Tensor<4>>>,
    x: Vec<Tensor<4>>,
    taps: Vec<Vec<Tensor<4>>>,
}

impl Features {
    fn compute(ctx: &Ctx, teacher: &Teacher) -> Result<Features, StageError> {
        let plan = ctx.plan;
        let batch = plan.rate.batch_size;
        let pre = Preprocess::new(&plan.data, false);
        let stages: Vec<usize> = plan.taps.iter().map(|t| t.stage).collect();
        let mut cal_order = batches(&ctx.data.search, batch, Some(plan.seeds.calibration()));
        cal_order.truncate(plan.rate.calibration_batches);
        let workers = plan.data.workers;
        let run = |order: Vec<Vec<usize>>| -> Result<_, StageError> {
            let (mut xs, mut taps) = (Vec::new(), Vec::new());
            for b in Loader::start(ctx.data.train.clone(), order, pre.clone(), 0, workers) {
                let x = b?.into_tensors(&ctx.device).0;
                taps.push(teacher.forward_taps(x.clone(), &stages, Mode::Eval));
                xs.push(x);
            }
            Ok((xs, taps))
        };
        let (cal_x, cal_taps) = run(cal_order)?;
        let rated = &ctx.data.rate[..plan
            .rate
            .max_images
            .unwrap_or(usize::MAX)
            .min(ctx.data.rate.len())];
        let (x, taps) = run(batches(rated, batch, None))?;
        Ok(Features {
            cal_x,
            cal_taps,
            x,
            taps,
        })
    }

    /// What block `i` is rated on: its inputs (the image or the previous tap) and its tap.
    fn of_block(&self, i: usize, loss: RateLoss) -> RateData {
        let pick = |xs: &Vec<Tensor<4>>, ts: &Vec<Vec<Tensor<4>>>, tap: Option<usize>| match tap {
            None => xs.clone(),
            Some(t) => ts.iter().map(|v| v[t].clone()).collect(),
        };
        RateData {
            calibration: pick(&self.cal_x, &self.cal_taps, i.checked_sub(1)),
            inputs: pick(&self.x, &self.taps, i.checked_sub(1)),
            targets: pick(&self.x, &self.taps, Some(i)),
            loss,
        }
    }
}

/// Block `i`'s ratings' cache key: its distilled supernet, the rating settings and images.
pub fn key(
    plan: &crate::plan::Plan,
    data: &crate::data::Dataset,
    distill: &crate::rundir::Key,
    i: usize,
) -> crate::rundir::Key {
    let crate::plan::RateSpec {
        batch_size,
        calibration_batches,
        max_images,
        loss,
    } = &plan.rate;
    super::block_key_base("rate", plan, data, distill, i)
        .with("rate", &(batch_size, calibration_batches, max_images, loss))
        .with("rate_idx", &data.rate)
        .finish()
}

/// Rates the given blocks (all unrated ones when `only` is `None`).
pub fn run(ctx: &mut Ctx, teacher: &Teacher, only: Option<&[usize]>) -> Result<(), StageError> {
    let todo: Vec<usize> = (0..ctx.plan.space.blocks.len())
        .filter(|i| only.is_none_or(|o| o.contains(i)) && !ctx.dir.ratings(*i).exists())
        .collect();
    if todo.is_empty() {
        return Ok(());
    }
    let features = Features::compute(ctx, teacher)?;
    for i in todo {
        if ctx.stopping() {
            return Err(ctx.stopped());
        }
        rate_one(ctx, i, &features.of_block(i, ctx.plan.rate.loss))?;
    }
    Ok(())
}

/// Rates block `i` and writes its ratings (JSON and CSV) and metrics.
fn rate_one(ctx: &mut Ctx, i: usize, data: &RateData) -> Result<(), StageError> {
    let block = &ctx.plan.space.blocks[i];
    let run = ctx.track.child(
        &format!("rate/block{i}"),
        &[("block".into(), i.to_string())],
    )?;
    let net = super::distill::load_block(ctx, i)?;
    let pb = progress(1, &format!("rate block {i}"));
    pb.set_message(format!("{} paths", block.num_paths()));
    let started = Instant::now();
    let (rated, evals) = rate_block(&net, block, data);
    let seconds = started.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let ratings: Vec<Rating> = rated
        .into_iter()
        .map(|(path, rating)| {
            let c = block.path_cost(&path);
            Rating {
                path: block.path_name(&path),
                cell: path.cell,
                ops: path.ops,
                rating,
                macs: c.macs,
                flops: c.flops(crate::space::FlopsConvention::Dna),
                params: c.params,
            }
        })
        .collect();
    let best = ratings
        .iter()
        .map(|r| r.rating)
        .fold(f64::INFINITY, f64::min);
    let worst = ratings
        .iter()
        .map(|r| r.rating)
        .fold(f64::NEG_INFINITY, f64::max);
    let out = BlockRatings {
        block: i,
        target: block.target.clone(),
        ratings,
        layer_evaluations: evals,
        seconds,
    };
    let csv_path = ctx.dir.ratings_csv(i);
    let mut csv = String::from("path,cell,rating,macs,flops_dna,params\n");
    for r in &out.ratings {
        csv.push_str(&format!(
            "{},{},{},{},{},{}\n",
            r.path, r.cell, r.rating, r.macs, r.flops, r.params
        ));
    }
    write_atomic(&csv_path, csv.as_bytes())?;
    write_json(&ctx.dir.ratings(i), &out)?;
    ctx.track.metrics(
        &run,
        0,
        &[
            ("best_rating", best),
            ("worst_rating", worst),
            ("paths", out.ratings.len() as f64),
            ("layer_evaluations", evals as f64),
            ("seconds", seconds),
        ],
    )?;
    ctx.track.artifact(&run, &csv_path, "")?;
    ctx.track
        .end(&format!("rate/block{i}"), RunStatus::Finished)?;
    tracing::info!(
        "rated block {i}: {} paths in {seconds:.1}s, best {best:.4}, worst {worst:.4}",
        out.ratings.len()
    );
    Ok(())
}
