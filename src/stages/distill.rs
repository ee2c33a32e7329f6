//! Block-wise distillation: every block of the supernet learns to map the teacher's previous tap
//! (the image for block 0) to its own tap. One teacher forward per batch feeds every block; each
//! step trains one uniformly sampled path of every cell with MSE; Adam with weight decay, a
//! learning rate per block decayed every epoch. State is saved after every epoch (and on
//! Ctrl-C mid-epoch), so a killed run resumes.

use std::time::Instant;

use burn::optim::ModuleOptimizer;
use burn::tensor::Tensor;

use super::StageError;
use super::{Ctx, progress, step};
use crate::data::{HostBatch, Loader, Preprocess, batches};
use crate::nn::{Mode, SuperBlock, Teacher};
use crate::rundir::{DistillState, StabilityPoint, load_module};
use crate::track::RunStatus;

/// Block `i`'s distillation's cache key: the teacher it imitates, the block's space and taps,
/// the distillation settings (its own learning rate), and the images it learns and is checked on.
pub fn key(
    plan: &crate::plan::Plan,
    data: &crate::data::Dataset,
    teacher: &crate::rundir::Key,
    i: usize,
) -> crate::rundir::Key {
    let crate::plan::DistillSpec {
        epochs,
        batch_size,
        block_lr,
        lr_decay,
        weight_decay,
        max_steps,
        sampling,
        stability_every,
        stability_paths,
        stability_images,
        stop_when_stable,
    } = &plan.distill;
    super::block_key_base("distill", plan, data, teacher, i)
        .with(
            "distill",
            &(
                epochs,
                batch_size,
                block_lr[i],
                lr_decay,
                weight_decay,
                max_steps,
            ),
        )
        .with("distill.sampling", sampling)
        .with(
            "distill.stability",
            &(
                stability_every,
                stability_paths,
                stability_images,
                stop_when_stable,
            ),
        )
        .with("search_idx", &data.search)
        .with("held_out_idx", &held_out_idx(plan, data))
        .finish()
}

/// The rating-subset images the stability evaluation holds out (none when it is off).
fn held_out_idx<'a>(plan: &crate::plan::Plan, data: &'a crate::data::Dataset) -> &'a [usize] {
    let n = if plan.distill.stability_every == 0 {
        0
    } else {
        plan.distill.stability_images.min(data.rate.len())
    };
    &data.rate[..n]
}

/// Whether block `i` is fully distilled (all its epochs, or stopped once stable).
pub fn is_done(ctx: &Ctx, i: usize) -> Result<bool, StageError> {
    let state = ctx.dir.distill_state(i)?;
    Ok(state.stable || state.epochs_done >= ctx.plan.distill.epochs)
}

/// Loads block `i`'s distilled supernet (eval form, on the run's device).
pub fn load_block(ctx: &Ctx, i: usize) -> Result<SuperBlock, StageError> {
    let b = SuperBlock::new(&ctx.plan.space, i, &ctx.device);
    let state = ctx.dir.distill_state(i)?;
    Ok(load_module(
        b,
        &ctx.dir.distill(i).model(&state.checkpoint),
    )?)
}

struct Job {
    index: usize,
    net: SuperBlock,
    optim: ModuleOptimizer,
    state: DistillState,
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
            self.epoch_loss += crate::nn::read_back(sum)[0] as f64;
        }
    }
}

/// Distills the given blocks (all unfinished ones when `only` is `None`).
pub fn run(ctx: &mut Ctx, teacher: &Teacher, only: Option<&[usize]>) -> Result<(), StageError> {
    let mut jobs = open_jobs(ctx, only)?;
    if jobs.is_empty() {
        // Every block done (or taken from the stage cache): the summary still lists them all.
        return write_stability(ctx);
    }
    // Blocks in one process advance together: one teacher forward feeds them all.
    let start_epoch = jobs.iter().map(|j| j.state.epochs_done).min().unwrap_or(0);
    let held_out = held_out_batch(ctx)?;
    for epoch in start_epoch..ctx.plan.distill.epochs {
        if jobs.iter().all(|j| j.state.stable) {
            break;
        }
        let started = Instant::now();
        let steps = run_epoch(ctx, teacher, &mut jobs, epoch)?;
        finish_epoch(
            ctx,
            teacher,
            held_out.as_ref(),
            &mut jobs,
            epoch,
            steps,
            started.elapsed().as_secs_f64(),
        )?;
    }
    for job in &jobs {
        ctx.track
            .end(&format!("distill/block{}", job.index), RunStatus::Finished)?;
    }
    write_stability(ctx)?;
    Ok(())
}

/// The held-out images of the stability evaluation: the first `distill.stability.images` of the
/// rating subset (never distilled on), without augmentation. `None` when it is off.
fn held_out_batch(ctx: &Ctx) -> Result<Option<HostBatch>, StageError> {
    let plan = ctx.plan;
    if plan.distill.stability_every == 0 {
        return Ok(None);
    }
    let idx = held_out_idx(plan, ctx.data);
    Ok(Some(Preprocess::new(&plan.data, false).batch(
        &ctx.data.train,
        idx,
        plan.seeds.calibration(),
    )?))
}

/// The fixed sample of block `i`'s paths the stability evaluation rates (all when fewer).
pub fn stability_paths(plan: &crate::plan::Plan, i: usize) -> Vec<crate::space::Path> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let mut all = plan.space.blocks[i].paths();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(plan.seeds.supernet_init(i) ^ 0x57AB);
    all.shuffle(&mut rng);
    all.truncate(plan.distill.stability_paths);
    all
}

/// Rates the fixed path sample of every block in `jobs` that is still distilling on the
/// held-out images (BatchNorm on the batch's statistics, the running ones untouched): one teacher
/// forward, one read-back per block. Returns each job's ratings, in `jobs` order.
fn rate_samples(
    ctx: &Ctx,
    teacher: &Teacher,
    jobs: &[Job],
    held_out: &HostBatch,
) -> Vec<Option<Vec<f64>>> {
    let plan = ctx.plan;
    let stages: Vec<usize> = plan.taps.iter().map(|t| t.stage).collect();
    let x = held_out.images(&ctx.device);
    let taps = teacher.forward_taps(x.clone(), &stages, Mode::Eval);
    let batch_stats = Mode::Train { momentum: 0.0 };
    jobs.iter()
        .map(|job| {
            if job.state.stable {
                return None;
            }
            let i = job.index;
            let net = burn::module::Module::valid(&job.net);
            let input = if i == 0 {
                x.clone()
            } else {
                taps[i - 1].clone()
            };
            let losses: Vec<Tensor<1>> = stability_paths(plan, i)
                .iter()
                .map(|p| {
                    let diff = net.forward(p, input.clone(), batch_stats) - taps[i].clone();
                    (diff.clone() * diff).mean()
                })
                .collect();
            Some(
                crate::nn::read_back(Tensor::cat(losses, 0))
                    .into_iter()
                    .map(f64::from)
                    .collect(),
            )
        })
        .collect()
}

/// `distill/stability.json`: every block's evaluations (epoch, tau) and where it stopped, from
/// the blocks' saved states (each process that distilled writes it, so it holds every block).
fn write_stability(ctx: &Ctx) -> Result<(), StageError> {
    if ctx.plan.distill.stability_every == 0 {
        return Ok(());
    }
    let mut blocks = Vec::new();
    for i in 0..ctx.plan.space.blocks.len() {
        let st = ctx.dir.distill_state(i)?;
        blocks.push(serde_json::json!({
            "block": i,
            "paths": stability_paths(ctx.plan, i).len(),
            "evaluations": st.stability.iter().map(|p| serde_json::json!({
                "epoch": p.epoch,
                "tau": p.tau,
            })).collect::<Vec<_>>(),
            "epochs_distilled": st.epochs_done,
            "stopped_as_stable": st.stable,
        }));
    }
    let doc = serde_json::json!({
        "images": ctx.plan.distill.stability_images.min(ctx.data.rate.len()),
        "every": ctx.plan.distill.stability_every,
        "stop_when_stable": ctx.plan.distill.stop_when_stable,
        "blocks": blocks,
    });
    Ok(crate::rundir::write_json(&ctx.dir.stability(), &doc)?)
}

/// The unfinished blocks, each with its supernet and optimizer (resumed where it stopped).
fn open_jobs(ctx: &mut Ctx, only: Option<&[usize]>) -> Result<Vec<Job>, StageError> {
    let plan = ctx.plan;
    let ad = ctx.train_device();
    let mut jobs = Vec::new();
    for i in 0..plan.space.blocks.len() {
        if only.is_some_and(|o| !o.contains(&i)) || is_done(ctx, i)? {
            continue;
        }
        let state = ctx.dir.distill_state(i)?;
        let mut net = crate::nn::initialize(
            |d| SuperBlock::new(&plan.space, i, d),
            &ad,
            plan.seeds.supernet_init(i),
        );
        let mut optim = step::distill_optimizer(plan);
        if state.epochs_done > 0 || state.steps_done > 0 {
            (net, optim) = ctx.dir.distill(i).load(net, optim, &state.checkpoint)?;
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
                ("lr".into(), plan.distill.block_lr[i].to_string()),
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
    Ok(jobs)
}

/// One epoch of every unfinished block (resuming mid-epoch); returns the epoch's step count.
fn run_epoch(
    ctx: &mut Ctx,
    teacher: &Teacher,
    jobs: &mut [Job],
    epoch: usize,
) -> Result<usize, StageError> {
    let plan = ctx.plan;
    let mut order = batches(
        &ctx.data.search,
        plan.distill.batch_size,
        Some(plan.seeds.distill_order(epoch)),
    );
    order.truncate(plan.distill.max_steps.unwrap_or(usize::MAX));
    let skip = jobs
        .iter()
        .filter(|j| j.state.epochs_done == epoch)
        .map(|j| j.state.steps_done)
        .min()
        .unwrap_or(0);
    let steps = order.len();
    let pb = progress(
        steps as u64,
        &format!("distill e{}/{}", epoch + 1, plan.distill.epochs),
    );
    pb.set_position(skip as u64);
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
        Preprocess::new(&plan.data, true),
        plan.seeds.distill_augment(epoch, skip),
        plan.data.workers,
    );
    for (k, b) in loader.enumerate() {
        let b = b?;
        let step = skip + k;
        if ctx.stopping() {
            for job in jobs.iter_mut() {
                job.flush();
                save_job(ctx, job, epoch, step)?;
            }
            pb.abandon();
            return Err(ctx.stopped());
        }
        train_step(ctx, teacher, jobs, &b, epoch, step);
        pb.inc(1);
        // The running mean loss of each block, read back every 16 steps.
        if (k + 1) % 16 == 0 || k + 1 == steps - skip {
            let msg: Vec<String> = jobs
                .iter_mut()
                .filter(|j| j.state.epochs_done <= epoch && !j.state.stable)
                .map(|j| {
                    j.flush();
                    format!("b{} {:.4}", j.index, j.epoch_loss / (step + 1) as f64)
                })
                .collect();
            pb.set_message(msg.join(" "));
        }
    }
    pb.finish_and_clear();
    Ok(steps)
}

/// One step: one teacher forward, then one sampled path per cell of every block, MSE, Adam.
fn train_step(
    ctx: &Ctx,
    teacher: &Teacher,
    jobs: &mut [Job],
    b: &HostBatch,
    epoch: usize,
    step: usize,
) {
    let plan = ctx.plan;
    let stages: Vec<usize> = plan.taps.iter().map(|t| t.stage).collect();
    let teacher_mode = if plan.teacher.eval_mode {
        Mode::Eval
    } else {
        Mode::TRAIN
    };
    let x = b.images(&ctx.device);
    let taps = teacher.forward_taps(x.clone(), &stages, teacher_mode);
    for job in jobs.iter_mut() {
        if job.state.epochs_done > epoch || job.state.stable {
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
        let (net, loss) = step::distill_step(
            plan,
            i,
            job.net.clone(),
            &mut job.optim,
            input,
            target,
            epoch,
            step,
        );
        job.net = net;
        job.pending = Some(match job.pending.take() {
            Some(sum) => sum + loss,
            None => loss,
        });
    }
}

/// Records a finished epoch of every block that ran it: its rank stability (when due), state,
/// checkpoint, metrics.
fn finish_epoch(
    ctx: &mut Ctx,
    teacher: &Teacher,
    held_out: Option<&HostBatch>,
    jobs: &mut [Job],
    epoch: usize,
    steps: usize,
    secs: f64,
) -> Result<(), StageError> {
    let plan = ctx.plan;
    let every = plan.distill.stability_every;
    let ratings = match held_out {
        Some(b) if every > 0 && (epoch + 1) % every == 0 => rate_samples(ctx, teacher, jobs, b),
        _ => vec![None; jobs.len()],
    };
    for (job, ratings) in jobs.iter_mut().zip(ratings) {
        if job.state.epochs_done > epoch || job.state.stable {
            continue;
        }
        job.flush();
        let mean = job.epoch_loss / steps.max(1) as f64;
        job.state.losses.truncate(epoch);
        job.state.losses.push(mean);
        job.state.epochs_done = epoch + 1;
        job.state.steps_done = 0;
        job.state.seconds += secs;
        let tau =
            ratings.map(|r| record_stability(&mut job.state, r, plan.distill.stop_when_stable));
        save_job(ctx, job, epoch + 1, 0)?;
        let lr = plan.distill.lr(job.index, epoch);
        let images_per_s = (steps * plan.distill.batch_size) as f64 / secs.max(1e-9);
        let mut m = vec![
            ("distill_loss", mean),
            ("lr", lr),
            ("images_per_s", images_per_s),
        ];
        if let Some(Some(t)) = tau {
            m.push(("stability_tau", t));
        }
        ctx.track.metrics(&job.run, epoch as i64, &m)?;
        let stability = match tau {
            Some(Some(t)) => format!(", stability tau {t:.2}"),
            _ => String::new(),
        };
        let stopped = if job.state.stable {
            format!(
                "; stable (tau >= {} twice): stops here",
                plan.distill.stop_when_stable.unwrap_or_default()
            )
        } else {
            String::new()
        };
        tracing::info!(
            "distill block {}: epoch {} loss {mean:.5} ({images_per_s:.0} images/s){stability}{stopped}",
            job.index,
            epoch + 1
        );
    }
    Ok(())
}

/// Adds a stability evaluation to a block's state: its tau against the previous one, and
/// whether the block is now stable (the last two taus at or above `stop_when_stable`). Returns
/// the tau.
pub fn record_stability(
    state: &mut DistillState,
    ratings: Vec<f64>,
    stop_when_stable: Option<f64>,
) -> Option<f64> {
    let tau = state
        .stability
        .last()
        .map(|prev| crate::stats::kendall_tau(&prev.ratings, &ratings));
    state.stability.push(StabilityPoint {
        epoch: state.epochs_done,
        ratings,
        tau,
    });
    if let Some(threshold) = stop_when_stable {
        let last: Vec<f64> = state
            .stability
            .iter()
            .rev()
            .take(2)
            .filter_map(|p| p.tau)
            .collect();
        state.stable = last.len() == 2 && last.iter().all(|&t| t >= threshold);
    }
    tau
}

fn save_job(ctx: &Ctx, job: &mut Job, epoch: usize, step: usize) -> Result<(), StageError> {
    let old = job.state.checkpoint.clone();
    let tag = format!("e{epoch}s{step}");
    job.state.checkpoint = tag.clone();
    if step > 0 {
        job.state.epochs_done = epoch;
        job.state.steps_done = step;
        job.state.losses.truncate(epoch);
        job.state.losses.push(job.epoch_loss / step as f64);
    }
    Ok(ctx
        .dir
        .distill(job.index)
        .save(&job.net, &job.optim, &tag, &old, &job.state)?)
}
