//! From-scratch training of a classifier (the teacher, a retrained student): Adam with weight
//! decay, step decay per epoch, cross-entropy; a checkpoint after every epoch; test accuracy.

use std::sync::Arc;

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::StageError;
use super::{Ctx, progress, step};
use crate::data::{DataError, Images, Loader, Preprocess, batches};
use crate::nn::{Mode, Student, Teacher};
use crate::plan::{Seeds, TrainSpec};
use crate::rundir::{Checkpoints, TrainState, read_json, write_json};

/// A network that maps images to class logits.
pub trait Classifier: Module {
    /// Class logits.
    fn logits(&self, x: Tensor<4>, mode: Mode) -> Tensor<2>;
}

impl Classifier for Teacher {
    fn logits(&self, x: Tensor<4>, mode: Mode) -> Tensor<2> {
        Teacher::logits(self, x, mode)
    }
}

impl Classifier for Student {
    fn logits(&self, x: Tensor<4>, mode: Mode) -> Tensor<2> {
        Student::logits(self, x, mode)
    }
}

/// Top-1 accuracy of a model (in eval mode) on some images.
pub fn evaluate<M: Classifier>(
    model: &M,
    images: &Arc<Images>,
    idx: &[usize],
    pre: &Preprocess,
    batch: usize,
    device: &Device,
) -> Result<f64, DataError> {
    let mut correct = 0usize;
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    for b in Loader::start(
        images.clone(),
        batches(idx, batch, None),
        pre.clone(),
        0,
        workers,
    ) {
        let b = b?;
        let pred = model
            .logits(b.images(device), Mode::Eval)
            .argmax(1)
            .reshape([b.labels.len()]);
        let pred: Vec<i64> = pred
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .unwrap_or_default();
        correct += pred.iter().zip(&b.labels).filter(|(p, l)| p == l).count();
    }
    Ok(correct as f64 / idx.len().max(1) as f64)
}

/// Trains `init`'s model from scratch on the training images, checkpointing into `ck` after
/// every epoch and resuming from there; returns the model in eval form and its test accuracy.
pub fn train_classifier<M: Classifier>(
    ctx: &mut Ctx,
    settings: &TrainSpec,
    seeds: Seeds,
    init_seed: u64,
    ck: Checkpoints,
    run: &str,
    init: impl Fn(&Device) -> M,
) -> Result<(M, f64), StageError> {
    let plan = ctx.plan;
    let mut state: TrainState = read_json(&ck.state())?.unwrap_or_default();
    let ad = ctx.train_device();
    let mut model = crate::nn::initialize(&init, &ad, init_seed);
    let mut optim = step::classifier_optimizer(settings);
    if state.epochs_done > 0 {
        (model, optim) = ck.load(model, optim, &state.checkpoint)?;
    }
    if let Some(acc) = state.accuracy {
        return Ok((model.valid(), acc));
    }
    let train_pre = Preprocess::new(&plan.data, true);
    let name = ck
        .dir()
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    for epoch in state.epochs_done..settings.epochs {
        let lr = step::classifier_lr(settings, epoch);
        let mut order = batches(
            &ctx.data.train_idx,
            settings.batch_size,
            Some(seeds.train_order(epoch)),
        );
        order.truncate(settings.max_steps.unwrap_or(usize::MAX));
        let pb = progress(order.len() as u64, &format!("{name} e{}", epoch + 1));
        let (mut sum, mut n) = (0.0, 0usize);
        // Losses summed on the device, read back every 16 steps (a read waits for the device).
        let mut pending: Option<Tensor<1>> = None;
        for b in Loader::start(
            ctx.data.train.clone(),
            order,
            train_pre.clone(),
            seeds.train_augment(epoch),
            plan.data.workers,
        ) {
            let b = b?;
            if ctx.stopping() {
                pb.abandon();
                return Err(ctx.stopped());
            }
            let (x, y) = b.into_tensors(&ad);
            let loss;
            (model, loss) = step::classifier_step(settings, model, &mut optim, x, y, epoch);
            pending = Some(match pending.take() {
                Some(p) => p + loss,
                None => loss,
            });
            n += 1;
            pb.inc(1);
            if n % 16 == 0 {
                sum += pending
                    .take()
                    .map_or(0.0, |p| crate::nn::read_back(p)[0] as f64);
                pb.set_message(format!("loss {:.4}", sum / n as f64));
            }
        }
        sum += pending
            .take()
            .map_or(0.0, |p| crate::nn::read_back(p)[0] as f64);
        pb.finish_and_clear();
        let mean = sum / n.max(1) as f64;
        // The last epoch's files are the final `model.bpk`/`optim.bpk`; earlier ones are tagged.
        let old = std::mem::take(&mut state.checkpoint);
        let tag = if epoch + 1 == settings.epochs {
            String::new()
        } else {
            format!("e{}", epoch + 1)
        };
        state.epochs_done = epoch + 1;
        state.losses.truncate(epoch);
        state.losses.push(mean);
        state.checkpoint = tag.clone();
        ck.save(&model, &optim, &tag, &old, &state)?;
        ctx.track
            .metrics(run, epoch as i64, &[("train_loss", mean), ("lr", lr)])?;
        tracing::info!("{}: epoch {} loss {mean:.4}", ck.dir().display(), epoch + 1);
    }
    let eval = model.valid();
    let acc = evaluate(
        &eval,
        &ctx.data.test,
        &ctx.data.test_idx,
        &Preprocess::new(&plan.data, false),
        settings.batch_size,
        &ctx.device,
    )?;
    state.accuracy = Some(acc);
    write_json(&ck.state(), &state)?;
    ctx.track
        .metrics(run, settings.epochs as i64, &[("test_accuracy", acc)])?;
    Ok((eval, acc))
}
