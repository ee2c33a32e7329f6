//! Block-wise distillation: every block of the supernet learns to map the teacher's previous tap
//! (the image for block 0) to its own tap. One teacher forward per batch feeds every block; each
//! step trains one uniformly sampled path of every cell with MSE; Adam with weight decay, a
//! learning rate per block decayed every epoch. State is saved after every epoch (and on
//! Ctrl-C mid-epoch), so a killed run resumes.

use std::time::Instant;

use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{Ctx, RunError, load_module, progress, read_json, save_module, save_optim, write_json};
use crate::data::{Loader, Preprocess, batches};
use crate::nn::{Mode, SuperBlock, Teacher};
use crate::space::Path;
use crate::track::RunStatus;

/// Progress of one block's distillation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BlockState {
    /// Epochs finished.
    pub epochs_done: usize,
    /// Steps finished inside the current epoch (after a stop).
    pub steps_done: usize,
    /// Mean loss of each finished epoch.
    pub losses: Vec<f64>,
    /// Seconds spent.
    pub seconds: f64,
    /// Tag of the supernet and optimizer files this state belongs to (`supernet-<tag>.bpk`);
    /// the state is written last, so a kill between the writes never mixes checkpoints.
    #[serde(default)]
    pub checkpoint: String,
}

fn net_file(dir: &std::path::Path, tag: &str) -> std::path::PathBuf {
    dir.join(if tag.is_empty() {
        "supernet.bpk".to_string()
    } else {
        format!("supernet-{tag}.bpk")
    })
}

fn optim_file(dir: &std::path::Path, tag: &str) -> std::path::PathBuf {
    dir.join(if tag.is_empty() {
        "optim.bpk".to_string()
    } else {
        format!("optim-{tag}.bpk")
    })
}

/// Where block `i`'s files are.
pub fn block_dir(ctx: &Ctx, i: usize) -> std::path::PathBuf {
    ctx.dir.join("distill").join(format!("block{i}"))
}

/// Whether block `i` is fully distilled.
pub fn is_done(ctx: &Ctx, i: usize) -> Result<bool, RunError> {
    let s: Option<BlockState> = read_json(&block_dir(ctx, i).join("state.json"))?;
    Ok(s.is_some_and(|s| s.epochs_done >= ctx.plan.recipe.distill.epochs))
}

/// Loads block `i`'s distilled supernet (eval form, on the run's device).
pub fn load_block(ctx: &Ctx, i: usize) -> Result<SuperBlock, RunError> {
    let b = SuperBlock::new(&ctx.plan.space, i, &ctx.device);
    let dir = block_dir(ctx, i);
    let state: BlockState = read_json(&dir.join("state.json"))?.unwrap_or_default();
    load_module(b, &net_file(&dir, &state.checkpoint))
}

struct Job {
    index: usize,
    net: SuperBlock,
    optim: ModuleOptimizer,
    state: BlockState,
    run: String,
    epoch_loss: f64,
    /// Losses of this epoch's steps not yet added to `epoch_loss`, summed on the device: reading a
    /// loss back every step would make a GPU wait for each step to finish.
    pending: Option<Tensor<1>>,
}

impl Job {
    /// Adds the device-side losses to `epoch_loss` (one read-back).
    fn flush(&mut self) {
        if let Some(sum) = self.pending.take() {
            self.epoch_loss += sum.into_scalar::<f32>() as f64;
        }
    }
}

/// A uniformly random path of a cell.
pub fn sample_path(rng: &mut ChaCha8Rng, cell: usize, layers: usize, ops: usize) -> Path {
    Path {
        cell,
        ops: (0..layers).map(|_| rng.random_range(0..ops)).collect(),
    }
}

/// Distills the given blocks (all unfinished ones when `only` is `None`).
pub fn run(ctx: &mut Ctx, teacher: &Teacher, only: Option<&[usize]>) -> Result<(), RunError> {
    let plan = ctx.plan;
    let r = &plan.recipe;
    let ad = ctx.train_device();
    let mut jobs = Vec::new();
    for i in 0..plan.space.blocks.len() {
        if only.is_some_and(|o| !o.contains(&i)) || is_done(ctx, i)? {
            continue;
        }
        let dir = block_dir(ctx, i);
        let state: BlockState = read_json(&dir.join("state.json"))?.unwrap_or_default();
        let mut net = crate::nn::initialize(
            SuperBlock::new(&plan.space, i, &ad),
            &ctx.device,
            r.experiment.seed ^ 0xB10C ^ ((i as u64) << 16),
        );
        let mut optim = AdamConfig::new()
            .with_weight_decay(Some(WeightDecayConfig::new(r.distill.weight_decay as f32)))
            .init();
        if state.epochs_done > 0 || state.steps_done > 0 {
            net = load_module(net, &net_file(&dir, &state.checkpoint))?;
            let p = optim_file(&dir, &state.checkpoint);
            optim = optim.load(&p).map_err(|e| RunError::file(&p, e))?;
        }
        let run = ctx.track.child(
            &format!("distill/block{i}"),
            &[("block".into(), i.to_string())],
        )?;
        ctx.track.tracker.log_params(
            &run,
            &[
                ("block".into(), i.to_string()),
                ("target".into(), plan.space.blocks[i].target.clone()),
                ("lr".into(), plan.block_lr[i].to_string()),
                (
                    "paths".into(),
                    format!("{}", plan.space.blocks[i].num_paths()),
                ),
            ],
        )?;
        jobs.push(Job {
            index: i,
            net,
            optim,
            state,
            run,
            epoch_loss: 0.0,
            pending: None,
        });
    }
    if jobs.is_empty() {
        return Ok(());
    }
    let d = &r.data;
    let batch = r.distill.batch_size.unwrap_or(d.batch_size);
    let seed = r.experiment.seed;
    let stages: Vec<usize> = plan.taps.iter().map(|t| t.stage).collect();
    let teacher_mode = if plan.teacher.eval_mode {
        Mode::Eval
    } else {
        Mode::TRAIN
    };
    let pre = Preprocess::new(d, true);
    // Blocks in one process advance together: one teacher forward feeds them all.
    let start_epoch = jobs.iter().map(|j| j.state.epochs_done).min().unwrap_or(0);
    for epoch in start_epoch..r.distill.epochs {
        let order = batches(
            &ctx.data.search,
            batch,
            Some(seed ^ 0xD15 ^ (epoch as u64) << 8),
        );
        let skip = jobs
            .iter()
            .filter(|j| j.state.epochs_done == epoch)
            .map(|j| j.state.steps_done)
            .min()
            .unwrap_or(0);
        let steps = order.len();
        let pb = progress(
            steps as u64,
            &format!("distill e{}/{}", epoch + 1, r.distill.epochs),
        );
        pb.set_position(skip as u64);
        let started = Instant::now();
        for job in jobs.iter_mut() {
            job.epoch_loss = if job.state.steps_done > 0 && job.state.epochs_done == epoch {
                job.state.losses.get(epoch).copied().unwrap_or(0.0) * job.state.steps_done as f64
            } else {
                0.0
            };
        }
        let loader = Loader::start(
            ctx.data.train.clone(),
            order[skip..].to_vec(),
            pre.clone(),
            seed.wrapping_add(epoch as u64 * 1_000_003 + skip as u64),
            d.workers,
        );
        for (k, b) in loader.enumerate() {
            let step = skip + k;
            if ctx.stopping() {
                for job in jobs.iter_mut() {
                    job.flush();
                    save_job(ctx, job, epoch, step)?;
                }
                pb.abandon();
                return Err(ctx.stopped());
            }
            let x = b.images(&ctx.device);
            let taps = teacher.forward_taps(x.clone(), &stages, teacher_mode);
            for job in jobs.iter_mut() {
                if job.state.epochs_done > epoch {
                    continue;
                }
                let i = job.index;
                let input = if i == 0 {
                    x.clone()
                } else {
                    taps[i - 1].clone()
                }
                .autodiff();
                let target = taps[i].clone().autodiff();
                let mut rng = ChaCha8Rng::seed_from_u64(
                    seed ^ ((i as u64) << 40) ^ ((epoch as u64) << 20) ^ step as u64,
                );
                let block = &plan.space.blocks[i];
                let mut loss: Option<Tensor<1>> = None;
                for (ci, cell) in block.cells.iter().enumerate() {
                    let path = sample_path(&mut rng, ci, cell.layers, block.ops.len());
                    let out = job.net.forward(&path, input.clone(), Mode::TRAIN);
                    let diff = out - target.clone();
                    let l = (diff.clone() * diff).mean();
                    loss = Some(match loss {
                        Some(s) => s + l,
                        None => l,
                    });
                }
                let loss = loss.expect("a block has cells") / block.cells.len() as f64;
                let detached = loss.clone().inner();
                job.pending = Some(match job.pending.take() {
                    Some(sum) => sum + detached,
                    None => detached,
                });
                let grads = GradientsParams::from_grads(loss.backward(), &job.net);
                let lr = plan.block_lr[i] * r.distill.lr_decay.powi(epoch as i32);
                job.net = job.optim.step(lr, job.net.clone(), grads);
            }
            pb.inc(1);
            // The running mean loss of each block, read back every 16 steps.
            if (k + 1) % 16 == 0 || k + 1 == steps - skip {
                let msg: Vec<String> = jobs
                    .iter_mut()
                    .filter(|j| j.state.epochs_done <= epoch)
                    .map(|j| {
                        j.flush();
                        format!("b{} {:.4}", j.index, j.epoch_loss / (step + 1) as f64)
                    })
                    .collect();
                pb.set_message(msg.join(" "));
            }
        }
        pb.finish_and_clear();
        let secs = started.elapsed().as_secs_f64();
        for job in jobs.iter_mut() {
            if job.state.epochs_done > epoch {
                continue;
            }
            job.flush();
            let mean = job.epoch_loss / steps.max(1) as f64;
            job.state.losses.truncate(epoch);
            job.state.losses.push(mean);
            job.state.epochs_done = epoch + 1;
            job.state.steps_done = 0;
            job.state.seconds += secs;
            save_job(ctx, job, epoch + 1, 0)?;
            let lr = plan.block_lr[job.index] * r.distill.lr_decay.powi(epoch as i32);
            let images_per_s = (steps * batch) as f64 / secs.max(1e-9);
            ctx.track.metrics(
                &job.run,
                epoch as i64,
                &[
                    ("distill_loss", mean),
                    ("lr", lr),
                    ("images_per_s", images_per_s),
                ],
            )?;
            tracing::info!(
                "distill block {}: epoch {} loss {mean:.5} ({images_per_s:.0} images/s)",
                job.index,
                epoch + 1
            );
        }
    }
    for job in &jobs {
        ctx.track
            .end(&format!("distill/block{}", job.index), RunStatus::Finished)?;
    }
    Ok(())
}

fn save_job(ctx: &Ctx, job: &mut Job, epoch: usize, step: usize) -> Result<(), RunError> {
    let dir = block_dir(ctx, job.index);
    let old = job.state.checkpoint.clone();
    let tag = format!("e{epoch}s{step}");
    save_module(&job.net, &net_file(&dir, &tag))?;
    save_optim(&job.optim, &optim_file(&dir, &tag))?;
    job.state.checkpoint = tag.clone();
    if step > 0 {
        job.state.epochs_done = epoch;
        job.state.steps_done = step;
        job.state.losses.truncate(epoch);
        job.state.losses.push(job.epoch_loss / step as f64);
    }
    write_json(&dir.join("state.json"), &job.state)?;
    if old != tag {
        let _ = std::fs::remove_file(net_file(&dir, &old));
        let _ = std::fs::remove_file(optim_file(&dir, &old));
    }
    Ok(())
}
