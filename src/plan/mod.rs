//! Recipe -> Plan: everything resolved and checked once. Concrete teacher stages and tap
//! shapes, the search space with its costs, budgets in absolute units, batch sizes and learning
//! rates with their defaults applied, named seeds, devices, paths made absolute. Every stage
//! takes `&Plan`; nothing downstream reads the raw recipe.
//!
//! Each concern resolves in its own file (`data`, `teacher`, `blocks`, `budget`, `devices`),
//! reporting into one [`Problems`] collector, so one run of `validate` reports every problem.

mod blocks;
mod budget;
mod data;
mod devices;
mod limits;
mod problems;
mod seeds;
mod summary;
pub use summary::count;
mod teacher;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::recipe::{DataFormat, StudySample, TeacherArch, WeightFormat};
pub use budget::Measure;
pub use data::{DataSpec, SplitSpec, format_name};
pub use devices::{BACKENDS, DeviceSpec, Devices, compiled_backends};
pub use seeds::Seeds;
pub use teacher::{
    Family, LayerKind, Member, StageSpec, TapSpec, TeacherSpec, layout_name, pretrained_spec,
    teachers_markdown,
};

use crate::recipe::{Diagnostics, Loaded, SCHEMA_VERSION};
use crate::space::predictor::Predictor;
use crate::space::{FlopsConvention, Space};
use problems::Problems;

/// The experiment: its name and where its runs go.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentSpec {
    /// Name (run directories are `<name>-NNN`).
    pub name: String,
    /// Absolute directory runs go under.
    pub output_dir: PathBuf,
    /// The stage cache's folder.
    pub cache_dir: PathBuf,
}

/// Where the plan came from: recorded in the lock file and in tracking.
#[derive(Debug, Clone)]
pub struct RecipeSource {
    /// The merged recipe as JSON (recorded in the lock file, flattened into MLflow params).
    pub value: serde_json::Value,
    /// The recipe file.
    pub path: PathBuf,
    /// Directory relative paths were resolved against.
    pub base_dir: PathBuf,
}

/// Optimiser and schedule of a from-scratch training, defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSpec {
    /// Passes over the training images.
    pub epochs: usize,
    /// Learning rate of Adam.
    pub lr: f64,
    /// Factor applied to the learning rate after every epoch.
    pub lr_decay: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Batch size.
    pub batch_size: usize,
    /// Steps per epoch at most (all when `None`).
    pub max_steps: Option<usize>,
}

/// Block-wise distillation.
#[derive(Debug, Clone, PartialEq)]
pub struct DistillSpec {
    /// Epochs over the search subset.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Learning rate of each block.
    pub block_lr: Vec<f64>,
    /// Factor applied to the learning rate after every epoch.
    pub lr_decay: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Steps per epoch at most (all when `None`).
    pub max_steps: Option<usize>,
    /// How a step picks its paths.
    pub sampling: crate::space::PathSampling,
    /// Evaluate rank stability every this many epochs (0: never).
    pub stability_every: usize,
    /// Paths per block in a stability evaluation.
    pub stability_paths: usize,
    /// Held-out images of a stability evaluation.
    pub stability_images: usize,
    /// Stop a block once its stability tau stays at or above this for two evaluations.
    pub stop_when_stable: Option<f64>,
}

impl DistillSpec {
    /// Block `i`'s learning rate in `epoch`.
    pub fn lr(&self, i: usize, epoch: usize) -> f64 {
        self.block_lr[i] * self.lr_decay.powi(epoch as i32)
    }
}

/// Rating every path.
#[derive(Debug, Clone, PartialEq)]
pub struct RateSpec {
    /// Batch size.
    pub batch_size: usize,
    /// Calibration batches for each path's BatchNorm statistics.
    pub calibration_batches: usize,
    /// Images of the rating subset rated on, at most (all when `None`).
    pub max_images: Option<usize>,
    /// The rating's loss.
    pub loss: crate::space::RateLoss,
}

/// The search under the budget.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchSpec {
    /// Architectures to return.
    pub top_k: usize,
    /// The FLOPs convention of budgets and reports.
    pub flops_convention: FlopsConvention,
    /// What the budgets limit (primary, secondary).
    pub measures: [Measure; 2],
    /// Budget limits in absolute units (infinity where unset).
    pub limits: [f64; 2],
    /// With `search.objective = "predicted"`: the predictor whose accuracy the search maximises.
    pub predictor: Option<Predictor>,
    /// With `search.latency_table`: the table, and the budget `search.max_latency_ms`.
    pub latency: Option<LatencyBudget>,
}

/// A latency table and budget (`search.latency_table`, `search.max_latency_ms`).
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyBudget {
    /// The table's file.
    pub file: std::path::PathBuf,
    /// The table (it has every entry the space needs: checked when resolved).
    pub table: crate::space::latency::LatencyTable,
    /// Most predicted milliseconds (infinity without `search.max_latency_ms`).
    pub max_ms: f64,
}

impl SearchSpec {
    /// A cost in the budget's two measures (primary, secondary).
    pub fn costs(&self, c: &crate::space::Cost) -> [f64; 2] {
        [self.measures[0].of(c) as f64, self.measures[1].of(c) as f64]
    }

    /// A path's costs for the search: the two measures and its predicted milliseconds (0 without a
    /// latency table).
    pub fn path_costs(
        &self,
        block: &crate::space::BlockSpace,
        path: &crate::space::Path,
    ) -> [f64; crate::space::search::COSTS] {
        let [a, b] = self.costs(&block.path_cost(path));
        let ms = self.latency.as_ref().map_or(0.0, |l| {
            l.table.path_ms(block, path).unwrap_or(f64::INFINITY)
        });
        [a, b, ms]
    }

    /// The costs every student pays (stem and head).
    pub fn fixed_costs(&self, space: &crate::space::Space) -> [f64; crate::space::search::COSTS] {
        let [a, b] = self.costs(&space.fixed_cost());
        let ms = self
            .latency
            .as_ref()
            .map_or(0.0, |l| l.table.fixed_ms(space).unwrap_or(f64::INFINITY));
        [a, b, ms]
    }

    /// The limits of the three costs.
    pub fn all_limits(&self) -> [f64; crate::space::search::COSTS] {
        [
            self.limits[0],
            self.limits[1],
            self.latency.as_ref().map_or(f64::INFINITY, |l| l.max_ms),
        ]
    }

    /// A student's predicted milliseconds, with a latency table.
    pub fn latency_ms(
        &self,
        space: &crate::space::Space,
        arch: &crate::space::Architecture,
    ) -> Option<f64> {
        self.latency
            .as_ref()
            .and_then(|l| l.table.arch_ms(space, arch).ok())
    }

    /// What the search minimises for block `i`'s path of rating `r`.
    pub fn score(&self, i: usize, r: f64) -> f64 {
        match &self.predictor {
            Some(p) => p.block_score(i, r),
            None => r,
        }
    }
}

/// A ranking study.
#[derive(Debug, Clone, PartialEq)]
pub struct StudySpec {
    /// Architectures sampled.
    pub architectures: usize,
    /// Seeds per architecture.
    pub seeds: usize,
    /// How they are chosen.
    pub sample: StudySample,
    /// The band below the first budget, as a fraction of it.
    pub band: f64,
    /// With `sample = "files"`: the files, absolute.
    pub files: Vec<PathBuf>,
    /// Ridge strength of the predictor.
    pub ridge: f64,
}

/// Retraining the chosen architectures.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrainSpec {
    /// The training.
    pub train: TrainSpec,
    /// Random architectures within the budget retrained as controls.
    pub random_controls: usize,
}

/// Where tracking goes.
#[derive(Debug, Clone, PartialEq)]
pub enum TrackingTarget {
    /// An MLflow server (`http(s)://...`).
    Server(String),
    /// A local `mlruns/` store at this absolute path.
    Local(PathBuf),
}

/// Tracking.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackingSpec {
    /// The URI as written.
    pub uri: String,
    /// Where it points.
    pub target: TrackingTarget,
    /// The MLflow experiment.
    pub experiment: String,
    /// The local store to write to when the server cannot be reached at start, if allowed.
    pub fallback: Option<PathBuf>,
    /// Seconds between `system/*` samples (`None`: off).
    pub system_metrics: Option<std::time::Duration>,
}

/// The fully resolved, checked run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The experiment.
    pub experiment: ExperimentSpec,
    /// The recipe the plan was resolved from.
    pub source: RecipeSource,
    /// The data.
    pub data: DataSpec,
    /// The teacher.
    pub teacher: TeacherSpec,
    /// Its taps, in block order.
    pub taps: Vec<TapSpec>,
    /// The search space.
    pub space: Space,
    /// Distillation.
    pub distill: DistillSpec,
    /// Rating.
    pub rate: RateSpec,
    /// Search.
    pub search: SearchSpec,
    /// Retraining.
    pub retrain: RetrainSpec,
    /// The ranking study (`dnarun study`).
    pub study: StudySpec,
    /// Every seed of the run, derived from `experiment.seed`.
    pub seeds: Seeds,
    /// Tracking.
    pub tracking: TrackingSpec,
    /// Devices.
    pub devices: Devices,
    /// What the user should know about the recipe that is not an error (`validate`, `plan` and
    /// the start of a run print them).
    pub notes: Vec<String>,
}

impl Plan {
    /// Loads a recipe ([`crate::recipe::load`]) and resolves it. Where the schema rejects
    /// values, the semantic checks still run on the rest (the rejected values dropped), so the
    /// diagnostics hold every problem one pass can find.
    pub fn load(
        path: &std::path::Path,
        overrides: &crate::recipe::Overrides,
    ) -> Result<Plan, Diagnostics> {
        match crate::recipe::load_partial(path, overrides) {
            Ok(l) => Plan::resolve(&l),
            Err((mut d, partial)) => {
                if let Some(Err(more)) = partial.map(|l| Plan::resolve(&l)) {
                    d.items.extend(more.items);
                }
                Err(d)
            }
        }
    }

    /// Resolves and checks a loaded recipe, reporting every problem at once.
    pub fn resolve(loaded: &Loaded) -> Result<Plan, Diagnostics> {
        let r = &loaded.recipe;
        let base = loaded.base_dir();
        let mut p = Problems::new(loaded);
        if r.experiment.schema_version != SCHEMA_VERSION {
            p.err(
                "/experiment/schema_version",
                format!(
                    "`experiment.schema_version` is {}, but this dnarun reads version {SCHEMA_VERSION}",
                    r.experiment.schema_version
                ),
                Some("upgrade dnarun, or write the recipe for version 1".into()),
            );
        }
        check_name(&r.experiment.name, &mut p);
        let mut notes = Vec::new();
        let normalize = normalization(r, &mut notes);
        let data = data::resolve(&r.data, &normalize, &base, &mut p);
        let teacher = teacher::resolve(r, &base, &mut p);
        let taps = teacher::taps(r, &teacher, &mut p);
        let (space, block_lr) = blocks::resolve(r, &taps, &mut p);
        let mut search = budget::resolve(&r.search, &space, &mut p, &mut notes);
        search.predictor = budget::predictor(&r.search, &base, space.blocks.len(), &mut p);
        search.latency = budget::latency(&r.search, &base, &space, &mut p, &mut notes);
        let devices = devices::resolve(&r.runtime, &mut p);
        let batch = |b: Option<usize>| b.unwrap_or(r.data.batch_size);
        let rate = RateSpec {
            batch_size: batch(r.rate.batch_size),
            calibration_batches: r.rate.calibration_batches,
            max_images: r.rate.max_images,
            loss: r.rate.loss,
        };
        if r.distill.stop_when_stable.is_some() && r.distill.stability.every == 0 {
            p.err(
                "/distill/stop_when_stable",
                "`distill.stop_when_stable` needs the stability evaluation, which `distill.stability.every = 0` turns off".into(),
                Some("set `distill.stability.every` to 1 (or more), or remove `stop_when_stable`".into()),
            );
        }
        if p.is_empty() {
            limits::check(&space, &taps, &data, &rate, &mut p);
        }
        p.finish()?;
        Ok(Plan {
            experiment: ExperimentSpec {
                name: r.experiment.name.clone(),
                output_dir: base.join(&r.experiment.output_dir),
                cache_dir: match &r.experiment.cache_dir {
                    Some(c) => base.join(c),
                    None => base.join(&r.experiment.output_dir).join("cache"),
                },
            },
            distill: DistillSpec {
                epochs: r.distill.epochs,
                batch_size: batch(r.distill.batch_size),
                block_lr,
                lr_decay: r.distill.lr_decay,
                weight_decay: r.distill.weight_decay,
                max_steps: r.distill.max_steps,
                sampling: r.distill.sampling,
                stability_every: r.distill.stability.every,
                stability_paths: r.distill.stability.paths,
                stability_images: r.distill.stability.images,
                stop_when_stable: r.distill.stop_when_stable,
            },
            rate,
            retrain: RetrainSpec {
                train: train_spec(&r.retrain.settings(), r.data.batch_size),
                random_controls: r.retrain.random_controls,
            },
            study: StudySpec {
                architectures: r.study.architectures,
                seeds: r.study.seeds,
                sample: r.study.sample,
                band: r.study.band,
                files: r.study.files.iter().map(|f| base.join(f)).collect(),
                ridge: r.study.ridge,
            },
            seeds: Seeds {
                base: r.experiment.seed,
            },
            tracking: tracking(r, &base),
            source: RecipeSource {
                value: loaded.value.clone(),
                path: loaded.path.clone(),
                base_dir: base,
            },
            data,
            teacher,
            taps,
            space,
            search,
            devices,
            notes,
        })
    }
}

/// `data.normalize`, or its default: what a pretrained teacher's checkpoints were trained with
/// (a note when the recipe sets other values), else mean and std 0.5.
fn normalization(r: &crate::recipe::Recipe, notes: &mut Vec<String>) -> crate::recipe::Normalize {
    let layout = r
        .teacher
        .weights
        .as_ref()
        .and_then(|w| w.layout)
        .unwrap_or(r.teacher.arch.default_layout());
    let trained_with = r.teacher.arch.normalization(layout);
    match (&r.data.normalize, trained_with) {
        (Some(n), Some(t)) if *n != t => {
            notes.push(format!(
                "`data.normalize` is mean {:?}, std {:?}, but `{}` checkpoints in the `{}` layout were trained with mean {:?}, std {:?} (the default when `data.normalize` is left out); the teacher's features are only right for the statistics its weights were trained with",
                n.mean,
                n.std,
                r.teacher.arch.name(),
                layout_name(layout),
                t.mean,
                t.std
            ));
            n.clone()
        }
        (Some(n), _) => n.clone(),
        (None, Some(t)) => t,
        (None, None) => crate::recipe::Normalize::default(),
    }
}

/// `experiment.name` becomes a folder name, an MLflow run name and a Slurm job's log name: plain
/// characters only.
fn check_name(name: &str, p: &mut Problems) {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !name.starts_with('.');
    if !ok {
        p.err(
            "/experiment/name",
            format!("`experiment.name` is {name:?}; a name becomes a folder name and a job name"),
            Some(
                "use letters, digits, `-`, `_` and `.` (not first), at most 100 characters".into(),
            ),
        );
    }
}

/// A recipe's training settings with the batch-size default applied.
fn train_spec(t: &crate::recipe::TrainSettings, default_batch: usize) -> TrainSpec {
    TrainSpec {
        epochs: t.epochs,
        lr: t.lr,
        lr_decay: t.lr_decay,
        weight_decay: t.weight_decay,
        batch_size: t.batch_size.unwrap_or(default_batch),
        max_steps: t.max_steps,
    }
}

fn tracking(r: &crate::recipe::Recipe, base: &std::path::Path) -> TrackingSpec {
    let t = &r.tracking;
    let local = |uri: &str| {
        let rel = uri
            .strip_prefix("file://")
            .or_else(|| uri.strip_prefix("file:"))
            .unwrap_or(uri);
        base.join(rel)
    };
    let server = t.uri.starts_with("http://") || t.uri.starts_with("https://");
    TrackingSpec {
        uri: t.uri.clone(),
        target: if server {
            TrackingTarget::Server(t.uri.clone())
        } else {
            TrackingTarget::Local(local(&t.uri))
        },
        experiment: t
            .experiment
            .clone()
            .unwrap_or_else(|| r.experiment.name.clone()),
        fallback: t.fallback_to_local.then(|| local("file:./mlruns")),
        system_metrics: (t.system_metrics_seconds > 0.0)
            .then(|| std::time::Duration::from_secs_f64(t.system_metrics_seconds)),
    }
}
