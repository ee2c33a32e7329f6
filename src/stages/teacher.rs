//! The teacher stage: load pretrained weights or train the teacher, record its test accuracy,
//! and check that its taps have the shapes the recipe declares.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::{Ctx, RunError, evaluate, load_module, read_json, train_classifier, write_json};
use crate::data::{HostBatch, Preprocess};
use crate::nn::{Mode, Teacher, torch};
use crate::recipe::WeightFormat;

/// What the stage records for pretrained weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Loaded {
    accuracy: f64,
}

/// A freshly initialised teacher of the plan's shape.
pub fn build(ctx: &Ctx, device: &burn::tensor::Device) -> Teacher {
    let d = &ctx.plan.recipe.data;
    Teacher::new(&ctx.plan.teacher, d.channels, d.classes, device)
}

/// Loads or trains the teacher; returns it in eval form on the run's device.
pub fn run(ctx: &mut Ctx) -> Result<Teacher, RunError> {
    let dir = ctx.dir.join("teacher");
    let run = ctx.track.child("teacher", &[])?;
    let d = &ctx.plan.recipe.data;
    let batch = d.batch_size;
    let teacher = match ctx.plan.teacher.weights.clone() {
        Some((path, format)) => {
            let t = match format {
                WeightFormat::TorchLegacy | WeightFormat::Safetensors => {
                    let load = if matches!(format, WeightFormat::TorchLegacy) {
                        torch::load_teacher
                    } else {
                        torch::load_teacher_safetensors
                    };
                    load(&path, &ctx.plan.teacher, d.channels, d.classes, &ctx.device)?
                }
                WeightFormat::Burn => {
                    if !path.exists() {
                        return Err(super::RunError::file(
                            &path,
                            "does not exist; check `teacher.weights.path` (relative to the recipe)",
                        ));
                    }
                    load_module(build(ctx, &ctx.device), &path)?
                }
            };
            let t = burn::module::Module::valid(&t);
            let state_path = dir.join("state.json");
            let acc = match read_json::<Loaded>(&state_path)? {
                Some(l) => l.accuracy,
                None => {
                    let acc = evaluate(
                        &t,
                        &ctx.data.test,
                        &ctx.data.test_idx,
                        &Preprocess::new(d, false),
                        batch,
                        &ctx.device,
                    );
                    write_json(&state_path, &Loaded { accuracy: acc })?;
                    ctx.track.metrics(&run, 0, &[("test_accuracy", acc)])?;
                    acc
                }
            };
            tracing::info!(
                "teacher loaded from `{}`: test accuracy {:.2}%",
                path.display(),
                acc * 100.0
            );
            t
        }
        None => {
            let settings = ctx.plan.teacher.train.clone();
            let ctx_seed = |ctx: &Ctx, salt: u64| ctx.plan.recipe.experiment.seed ^ salt;
            let (spec, channels, classes) = (ctx.plan.teacher.clone(), d.channels, d.classes);
            let (t, acc) =
                train_classifier(ctx, &dir, &run, &settings, ctx_seed(ctx, 0x7EAC), |dev| {
                    Teacher::new(&spec, channels, classes, dev)
                })?;
            tracing::info!("teacher trained: test accuracy {:.2}%", acc * 100.0);
            t
        }
    };
    check_taps(ctx, &teacher)?;
    let export = dir.join("teacher.safetensors");
    if !export.exists() {
        torch::export_teacher_safetensors(&teacher, &export)?;
    }
    ctx.track
        .end("teacher", crate::track::RunStatus::Finished)?;
    Ok(teacher)
}

/// Runs one image through the teacher and compares every tap's shape with the recipe's.
fn check_taps(ctx: &Ctx, teacher: &Teacher) -> Result<(), RunError> {
    let pre = Preprocess::new(&ctx.plan.recipe.data, false);
    let b: HostBatch = pre.batch(&ctx.data.test, &ctx.data.test_idx[..1], 0);
    let x: Tensor<4> = b.images(&ctx.device);
    let stages: Vec<usize> = ctx.plan.taps.iter().map(|t| t.stage).collect();
    let taps = teacher.forward_taps(x, &stages, Mode::Eval);
    for (i, (tap, out)) in ctx.plan.taps.iter().zip(taps).enumerate() {
        let [_, c, h, w] = out.dims();
        if [c, h, w] != tap.shape {
            return Err(RunError::Usage(format!(
                "`teacher.taps[{i}].shape` is {:?}, but the teacher's stage {} outputs {:?}; write `shape = {:?}`",
                tap.shape,
                tap.stage,
                [c, h, w],
                [c, h, w]
            )));
        }
    }
    Ok(())
}
