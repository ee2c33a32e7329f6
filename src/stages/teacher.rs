//! The teacher stage: load pretrained weights or train the teacher, record its test accuracy,
//! and check that its taps have the shapes the recipe declares.

use burn::tensor::Tensor;

use super::StageError;
use super::{Ctx, evaluate, train_classifier};
use crate::data::{HostBatch, Preprocess};
use crate::nn::{Mode, Teacher, weights};
use crate::plan::WeightFormat;
use crate::rundir::{TrainState, load_module, read_json, write_json};

/// The teacher's cache key: what the teacher stage reads. A loaded teacher: its architecture,
/// the weights file's contents, and the test images it is evaluated on; a trained one: its
/// architecture, training settings and the training images instead of the file.
pub fn key(plan: &crate::plan::Plan, data: &crate::data::Dataset) -> crate::rundir::Key {
    // Every field named: a new one does not compile until it is placed in the key or left out.
    let crate::plan::TeacherSpec {
        arch,
        stem,
        stem_kernel,
        stem_stride,
        stem_pool,
        stages,
        head,
        se,
        act,
        padding,
        bn_eps,
        weights,
        layout,
        train,
        eval_mode,
    } = &plan.teacher;
    let k = super::key_base("teacher", plan)
        .with("files", &data.files_fingerprint)
        .with("test_idx", &data.test_idx)
        .with("data.batch_size", &plan.data.batch_size)
        .with(
            "teacher",
            &(
                arch,
                (stem, stem_kernel, stem_stride, stem_pool),
                stages,
                (head, se, act, padding, bn_eps, eval_mode),
            ),
        );
    match weights {
        Some((path, format)) => k
            .with("teacher.weights", &(format, layout))
            .file("teacher.weights.contents", path),
        None => k
            .with("teacher.train", train)
            .with("train_idx", &data.train_idx),
    }
    .finish()
}

/// A freshly initialised teacher of the plan's shape.
pub fn build(ctx: &Ctx, device: &burn::tensor::Device) -> Teacher {
    let d = &ctx.plan.data;
    Teacher::new(&ctx.plan.teacher, d.channels, d.classes, device)
}

/// Loads or trains the teacher; returns it in eval form on the run's device.
pub fn run(ctx: &mut Ctx) -> Result<Teacher, StageError> {
    let run = ctx.track.child("teacher", &[])?;
    let teacher = match ctx.plan.teacher.weights.clone() {
        Some((path, format)) => {
            let t = load(ctx, &path, format)?;
            match loaded_accuracy(ctx, &t, &run)? {
                Some(acc) => tracing::info!(
                    "teacher loaded from `{}`: test accuracy {:.2}%",
                    path.display(),
                    acc * 100.0
                ),
                None => tracing::info!(
                    "teacher loaded from `{}`: its classifier has {} classes and the data {}, so it is used for its features and its accuracy is not measured",
                    path.display(),
                    teacher_classes(&t),
                    ctx.plan.data.classes
                ),
            }
            t
        }
        None => {
            let plan = ctx.plan;
            let (spec, d) = (&plan.teacher, &plan.data);
            let (t, acc) = train_classifier(
                ctx,
                &plan.teacher.train,
                plan.seeds,
                plan.seeds.teacher_init(),
                ctx.dir.teacher(),
                &run,
                |dev| Teacher::new(spec, d.channels, d.classes, dev),
            )?;
            tracing::info!("teacher trained: test accuracy {:.2}%", acc * 100.0);
            t
        }
    };
    check_taps(ctx, &teacher)?;
    let export = ctx.dir.teacher_export();
    if !export.exists() {
        weights::export_teacher_safetensors(&teacher, ctx.plan.teacher.layout, &export)?;
    }
    ctx.track
        .end("teacher", crate::track::RunStatus::Finished)?;
    Ok(teacher)
}

/// The teacher from its weights file, in eval form.
fn load(ctx: &Ctx, path: &std::path::Path, format: WeightFormat) -> Result<Teacher, StageError> {
    let d = &ctx.plan.data;
    let t = match format {
        WeightFormat::Torch | WeightFormat::TorchLegacy => {
            weights::load_teacher(path, &ctx.plan.teacher, d.channels, d.classes, &ctx.device)?
        }
        WeightFormat::Safetensors => weights::load_teacher_safetensors(
            path,
            &ctx.plan.teacher,
            d.channels,
            d.classes,
            &ctx.device,
        )?,
        WeightFormat::Burn => {
            if !path.exists() {
                return Err(StageError::NoWeights {
                    path: path.to_path_buf(),
                });
            }
            load_module(build(ctx, &ctx.device), path)?
        }
    };
    Ok(burn::module::Module::valid(&t))
}

/// The classes a teacher's classifier predicts.
fn teacher_classes(t: &Teacher) -> usize {
    t.fc.weight.val().dims()[1]
}

/// The loaded teacher's test accuracy, measured once and kept in the teacher's state; `None`
/// when its classifier has other classes than the data (then only its features are used).
fn loaded_accuracy(ctx: &mut Ctx, t: &Teacher, run: &str) -> Result<Option<f64>, StageError> {
    let state_path = ctx.dir.teacher().state();
    if let Some(state) = read_json::<TrainState>(&state_path)?
        && (state.accuracy.is_some() || state.features_only)
    {
        return Ok(state.accuracy);
    }
    if teacher_classes(t) != ctx.plan.data.classes {
        let state = TrainState {
            features_only: true,
            ..TrainState::default()
        };
        write_json(&state_path, &state)?;
        return Ok(None);
    }
    let acc = evaluate(
        t,
        &ctx.data.test,
        &ctx.data.test_idx,
        &Preprocess::new(&ctx.plan.data, false),
        ctx.plan.data.batch_size,
        &ctx.device,
    )?;
    let state = TrainState {
        accuracy: Some(acc),
        ..TrainState::default()
    };
    write_json(&state_path, &state)?;
    ctx.track.metrics(run, 0, &[("test_accuracy", acc)])?;
    Ok(Some(acc))
}

/// Runs one image through the teacher and compares every tap's shape with the recipe's.
fn check_taps(ctx: &Ctx, teacher: &Teacher) -> Result<(), StageError> {
    let pre = Preprocess::new(&ctx.plan.data, false);
    // The first test image that decodes (with `data.skip_bad`, broken ones are passed over).
    let mut b: Option<HostBatch> = None;
    for &i in &ctx.data.test_idx {
        let one = pre.batch(&ctx.data.test, &[i], 0)?;
        if !one.labels.is_empty() {
            b = Some(one);
            break;
        }
    }
    let Some(b) = b else {
        return Err(StageError::NoTestImage);
    };
    let x: Tensor<4> = b.images(&ctx.device);
    let stages: Vec<usize> = ctx.plan.taps.iter().map(|t| t.stage).collect();
    let taps = teacher.forward_taps(x, &stages, Mode::Eval);
    for (i, (tap, out)) in ctx.plan.taps.iter().zip(taps).enumerate() {
        let [_, c, h, w] = out.dims();
        if [c, h, w] != tap.shape {
            return Err(StageError::TapShape {
                tap: i,
                stage: tap.stage,
                declared: tap.shape,
                actual: [c, h, w],
            });
        }
    }
    Ok(())
}
