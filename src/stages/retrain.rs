//! Retraining the chosen architectures (and random controls) from scratch, without the teacher,
//! and measuring their test accuracy. Each gets a re-loadable `arch.toml` beside its weights.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::StageError;
use super::search::{Chosen, SearchResult};
use super::{Ctx, train_classifier};
use crate::nn::Student;
use crate::plan::Plan;
use crate::rundir::{RunDirError, write_atomic};
use crate::space::Architecture;
use crate::track::RunStatus;

/// An architecture file: which run's recipe it belongs to and each block's path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchFile {
    /// The recipe or lock file whose search space the paths belong to, relative to this file.
    pub recipe: String,
    /// Name of the architecture in its run.
    pub name: String,
    /// Path of every block, e.g. `c1:k5e6-k3e3`.
    pub blocks: Vec<String>,
    /// Summed rating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<f64>,
    /// Multiply-accumulates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macs: Option<u64>,
    /// FLOPs in the DNA convention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flops_dna: Option<u64>,
    /// Parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<u64>,
    /// Predicted milliseconds per forward pass by the run's `search.latency_table`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Test accuracy after retraining.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
}

impl ArchFile {
    /// Reads an architecture file.
    pub fn read(path: &Path) -> Result<ArchFile, StageError> {
        let text = std::fs::read_to_string(path).map_err(|e| RunDirError::read(path, e))?;
        Ok(toml::from_str(&text).map_err(|e| {
            RunDirError::invalid(path, format!("is not a valid architecture file: {e}"))
        })?)
    }

    /// The architecture in a plan's space.
    pub fn architecture(&self, plan: &Plan) -> Result<Architecture, StageError> {
        super::search::parse_paths(plan, &self.blocks)
    }
}

/// The result of retraining one architecture.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Retrained {
    /// The architecture.
    pub chosen: Chosen,
    /// Test accuracy.
    pub accuracy: f64,
    /// Whether it is a random control.
    pub control: bool,
}

/// A retrained net's cache key: its architecture in the space, its name (its initialisation's
/// seed), the retraining settings, and the training and test images.
pub fn key(plan: &Plan, data: &crate::data::Dataset, chosen: &Chosen) -> crate::rundir::Key {
    super::trained_net_key("retrain", plan, data, &(&chosen.name, &chosen.paths))
}

/// Retrains one architecture into its folder of the run directory; `recipe_rel` is the recipe
/// its `arch.toml` names.
pub fn retrain_one(ctx: &mut Ctx, chosen: &Chosen, recipe_rel: &str) -> Result<f64, StageError> {
    let ck = ctx.dir.retrain(&chosen.name);
    let dir = ck.dir().to_path_buf();
    let arch = ArchFile {
        recipe: recipe_rel.into(),
        name: chosen.name.clone(),
        blocks: chosen.paths.clone(),
        rating: Some(chosen.rating),
        macs: Some(chosen.macs),
        flops_dna: Some(chosen.flops_dna),
        params: Some(chosen.params),
        latency_ms: chosen.latency_ms,
        accuracy: None,
    };
    let architecture = arch.architecture(ctx.plan)?;
    let header = "# An architecture found by dnarun. Retrain it from scratch with `dnarun retrain arch.toml`.\n";
    write_atomic(
        &dir.join("arch.toml"),
        format!("{header}{}", toml::to_string(&arch).expect("toml")).as_bytes(),
    )?;
    let run = ctx.track.child(
        &format!("retrain/{}", chosen.name),
        &[("architecture".into(), chosen.paths.join(" | "))],
    )?;
    ctx.track.tracker.log_params(
        &run,
        &[
            ("architecture".into(), chosen.paths.join(" | ")),
            ("rating".into(), chosen.rating.to_string()),
            ("params".into(), chosen.params.to_string()),
            ("flops_dna".into(), chosen.flops_dna.to_string()),
        ],
    )?;
    let plan = ctx.plan;
    let (unit, key) = (
        ctx.dir.retrain_unit(&chosen.name),
        key(plan, ctx.data, chosen),
    );
    ctx.adopt_trained(&unit, &key, &ck.state())?;
    let seed = plan.seeds.student_init(&chosen.name);
    let (model, acc) = train_classifier(
        ctx,
        &plan.retrain.train,
        plan.seeds,
        seed,
        ck,
        &run,
        |dev| Student::new(&plan.space, &architecture, dev),
    )?;
    crate::nn::weights::export_safetensors(&model, &dir.join("model.safetensors"))?;
    ctx.publish(&unit, &key)?;
    let done = ArchFile {
        accuracy: Some(acc),
        ..arch
    };
    write_atomic(
        &dir.join("arch.toml"),
        format!("{header}{}", toml::to_string(&done).expect("toml")).as_bytes(),
    )?;
    ctx.track.artifact(&run, &dir.join("arch.toml"), "")?;
    ctx.track
        .end(&format!("retrain/{}", chosen.name), RunStatus::Finished)?;
    Ok(acc)
}

/// Retrains every chosen architecture and control.
pub fn run(ctx: &mut Ctx, result: &SearchResult) -> Result<Vec<Retrained>, StageError> {
    let mut out = Vec::new();
    for (chosen, control) in result
        .top
        .iter()
        .map(|c| (c, false))
        .chain(result.controls.iter().map(|c| (c, true)))
    {
        if ctx.stopping() {
            return Err(ctx.stopped());
        }
        let acc = retrain_one(ctx, chosen, "../../dnarun.lock")?;
        tracing::info!(
            "retrained {}: test accuracy {:.2}%",
            chosen.name,
            acc * 100.0
        );
        out.push(Retrained {
            chosen: chosen.clone(),
            accuracy: acc,
            control,
        });
    }
    Ok(out)
}
