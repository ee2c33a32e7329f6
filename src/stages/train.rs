//! From-scratch training of a classifier (the teacher, a retrained student): Adam with weight
//! decay, step decay per epoch, cross-entropy; a checkpoint after every epoch; test accuracy.

use std::path::Path;
use std::sync::Arc;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::{Ctx, RunError, load_module, progress, read_json, save_module, save_optim, write_json};
use crate::data::{Images, Loader, Preprocess, batches};
use crate::nn::{Mode, Student, Teacher};
use crate::recipe::TrainSettings;

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

/// Progress of a training, saved after every epoch.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrainState {
    /// Epochs finished.
    pub epochs_done: usize,
    /// Mean training loss of each finished epoch.
    pub losses: Vec<f64>,
    /// Test accuracy once training is complete.
    pub accuracy: Option<f64>,
    /// Tag of the model and optimizer files this state belongs to (`model-<tag>.bpk`; empty for
    /// the final `model.bpk`). The state is written last, so a kill between the writes never
    /// pairs a model with another epoch's optimizer or state.
    #[serde(default)]
    pub checkpoint: String,
}

fn tagged(dir: &Path, stem: &str, tag: &str) -> std::path::PathBuf {
    dir.join(if tag.is_empty() {
        format!("{stem}.bpk")
    } else {
        format!("{stem}-{tag}.bpk")
    })
}

/// Top-1 accuracy of a model (in eval mode) on some images.
pub fn evaluate<M: Classifier>(
    model: &M,
    images: &Arc<Images>,
    idx: &[usize],
    pre: &Preprocess,
    batch: usize,
    device: &Device,
) -> f64 {
    let mut correct = 0usize;
    for b in Loader::start(images.clone(), batches(idx, batch, None), pre.clone(), 0, 1) {
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
    correct as f64 / idx.len().max(1) as f64
}

/// Trains `init`'s model from scratch on the training images, checkpointing into `dir` after
/// every epoch and resuming from there; returns the model in eval form and its test accuracy.
pub fn train_classifier<M: Classifier>(
    ctx: &mut Ctx,
    dir: &Path,
    run: &str,
    settings: &TrainSettings,
    seed: u64,
    init: impl Fn(&Device) -> M,
) -> Result<(M, f64), RunError> {
    let plan = ctx.plan;
    let d = &plan.recipe.data;
    let state_path = dir.join("state.json");
    let mut state: TrainState = read_json(&state_path)?.unwrap_or_default();
    let ad = ctx.train_device();
    let mut model = crate::nn::initialize(init(&ad), &ctx.device, seed);
    let mut optim = AdamConfig::new()
        .with_weight_decay(Some(WeightDecayConfig::new(settings.weight_decay as f32)))
        .init();
    if state.epochs_done > 0 {
        model = load_module(model, &tagged(dir, "model", &state.checkpoint))?;
        let optim_path = tagged(dir, "optim", &state.checkpoint);
        optim = optim
            .load(&optim_path)
            .map_err(|e| RunError::file(&optim_path, e))?;
    }
    let batch = settings.batch_size.unwrap_or(d.batch_size);
    let test_pre = Preprocess::new(d, false);
    if let Some(acc) = state.accuracy {
        return Ok((model.valid(), acc));
    }
    let loss_fn = CrossEntropyLossConfig::new().init(&ad);
    let train_pre = Preprocess::new(d, true);
    let seed = plan.recipe.experiment.seed;
    for epoch in state.epochs_done..settings.epochs {
        let lr = settings.lr * settings.lr_decay.powi(epoch as i32);
        let order = batches(
            &ctx.data.train_idx,
            batch,
            Some(seed ^ ((epoch as u64 + 1) * 7919)),
        );
        let pb = progress(
            order.len() as u64,
            &format!(
                "{} e{}",
                dir.file_name().unwrap_or_default().to_string_lossy(),
                epoch + 1
            ),
        );
        let (mut sum, mut n) = (0.0, 0usize);
        for b in Loader::start(
            ctx.data.train.clone(),
            order,
            train_pre.clone(),
            seed.wrapping_mul(31).wrapping_add(epoch as u64 * 100_003),
            d.workers,
        ) {
            if ctx.stopping() {
                pb.abandon();
                return Err(ctx.stopped());
            }
            let logits = model.logits(b.images(&ad), Mode::TRAIN);
            let loss = loss_fn.forward(logits, b.labels(&ad));
            let value = loss.clone().into_scalar::<f32>() as f64;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr, model, grads);
            sum += value;
            n += 1;
            pb.inc(1);
            pb.set_message(format!("loss {:.4}", sum / n as f64));
        }
        pb.finish_and_clear();
        let mean = sum / n.max(1) as f64;
        // The last epoch's files are the final `model.bpk`/`optim.bpk`; earlier ones are tagged.
        let old = std::mem::take(&mut state.checkpoint);
        let tag = if epoch + 1 == settings.epochs {
            String::new()
        } else {
            format!("e{}", epoch + 1)
        };
        save_module(&model, &tagged(dir, "model", &tag))?;
        save_optim(&optim, &tagged(dir, "optim", &tag))?;
        state.epochs_done = epoch + 1;
        state.losses.truncate(epoch);
        state.losses.push(mean);
        state.checkpoint = tag.clone();
        write_json(&state_path, &state)?;
        if old != tag {
            let _ = std::fs::remove_file(tagged(dir, "model", &old));
            let _ = std::fs::remove_file(tagged(dir, "optim", &old));
        }
        ctx.track
            .metrics(run, epoch as i64, &[("train_loss", mean), ("lr", lr)])?;
        tracing::info!("{}: epoch {} loss {mean:.4}", dir.display(), epoch + 1);
    }
    let eval = model.valid();
    let acc = evaluate(
        &eval,
        &ctx.data.test,
        &ctx.data.test_idx,
        &test_pre,
        batch,
        &ctx.device,
    );
    state.accuracy = Some(acc);
    write_json(&state_path, &state)?;
    ctx.track
        .metrics(run, settings.epochs as i64, &[("test_accuracy", acc)])?;
    Ok((eval, acc))
}
