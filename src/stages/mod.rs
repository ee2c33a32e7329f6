//! The stages of a run: teacher, distill, rate, search, retrain, report. Each is a function of
//! the plan and the previous stages' outputs on disk; each writes its outputs atomically and
//! skips the work it already finished, so a killed run resumes.

pub mod distill;
mod error;
pub mod rate;
pub mod report;
pub mod retrain;
pub mod search;
pub mod step;
pub mod study;
pub mod teacher;
mod train;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};

pub use error::StageError;
pub use train::{Classifier, evaluate, train_classifier};

use crate::data::Dataset;

use crate::plan::Plan;
use crate::rundir::{Cache, Key, KeyBuilder, RunDir, Unit};
use crate::track::{Metric, RunStatus, Tracker, now_ms};

/// The tracker of a run: the parent run and its named child runs, whose ids survive resumes.
pub struct Track {
    /// The backend.
    pub tracker: Box<dyn Tracker>,
    /// The parent run.
    pub parent: String,
    dir: RunDir,
    last_ts: i64,
    system: Option<crate::track::system::SystemMetrics>,
}

impl Track {
    /// Wraps a tracker for the run directory `dir`.
    pub fn new(tracker: Box<dyn Tracker>, parent: String, dir: RunDir) -> Track {
        Track {
            tracker,
            parent,
            dir,
            last_ts: 0,
            system: None,
        }
    }

    /// Samples the machine's load every `interval` into the parent run (`system/*` metrics).
    pub fn with_system_metrics(mut self, interval: std::time::Duration) -> Track {
        self.system = Some(crate::track::system::SystemMetrics::start(interval));
        self
    }

    /// Logs the system samples taken so far to the parent run.
    pub fn log_system(&mut self) -> Result<(), StageError> {
        if let Some(s) = &self.system {
            let samples = s.drain();
            if !samples.is_empty() {
                self.tracker.log_metrics(&self.parent, &samples)?;
            }
        }
        Ok(())
    }

    /// The child run `name`, started on first use.
    pub fn child(&mut self, name: &str, tags: &[(String, String)]) -> Result<String, StageError> {
        if let Some(id) = self.dir.tracking_ids().get(name) {
            return Ok(id.clone());
        }
        let id = self.tracker.start_run(name, Some(&self.parent), tags)?;
        self.dir.write_tracking_id(name, &id)?;
        Ok(id)
    }

    /// Ends the child run `name`.
    pub fn end(&mut self, name: &str, status: RunStatus) -> Result<(), StageError> {
        if let Some(id) = self.dir.tracking_ids().get(name) {
            self.tracker.end_run(id, status)?;
        }
        Ok(())
    }

    /// Logs metrics at a step, with strictly increasing timestamps.
    pub fn metrics(
        &mut self,
        run: &str,
        step: i64,
        values: &[(&str, f64)],
    ) -> Result<(), StageError> {
        self.log_system()?;
        let mut ts = now_ms();
        if ts <= self.last_ts {
            ts = self.last_ts + 1;
        }
        self.last_ts = ts;
        let m: Vec<Metric> = values
            .iter()
            .map(|(k, v)| Metric {
                key: k.to_string(),
                value: *v,
                step,
                timestamp: ts,
            })
            .collect();
        Ok(self.tracker.log_metrics(run, &m)?)
    }

    /// Logs a file as an artifact.
    pub fn artifact(&mut self, run: &str, file: &Path, dir: &str) -> Result<(), StageError> {
        Ok(self.tracker.log_artifact(run, file, dir)?)
    }
}

/// What every stage gets.
pub struct Ctx<'a> {
    /// The plan.
    pub plan: &'a Plan,
    /// The data.
    pub data: &'a Dataset,
    /// The device tensors live on (without autodiff).
    pub device: Device,
    /// The run directory.
    pub dir: RunDir,
    /// Tracking.
    pub track: &'a mut Track,
    /// Set by Ctrl-C: stop after saving.
    pub stop: Arc<AtomicBool>,
    /// The stage cache (off for `--no-cache`).
    pub cache: Cache,
}

impl Ctx<'_> {
    /// Whether the user asked to stop.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// The error that says the run stopped and how to resume it.
    pub fn stopped(&self) -> StageError {
        StageError::Stopped(self.dir.root().to_path_buf())
    }

    /// The device with autodiff.
    pub fn train_device(&self) -> Device {
        self.device.clone().autodiff()
    }

    /// Takes a unit that is not `done` here from the stage cache when it holds the unit's key
    /// (the run directory and the parent run's tag `dnarun.reused.<unit>` record from where).
    pub fn adopt(&mut self, unit: &Unit, key: &Key, done: bool) -> Result<(), StageError> {
        if done {
            return Ok(());
        }
        if let Some(from) = self.cache.adopt(&self.dir, unit, key)? {
            tracing::info!(
                "{}: taken from the stage cache (computed in `{from}`)",
                unit.name
            );
            let parent = self.track.parent.clone();
            self.track
                .tracker
                .set_tags(&parent, &[(format!("dnarun.reused.{}", unit.name), from)])?;
        }
        Ok(())
    }

    /// [`Ctx::adopt`] of a trained net's unit, done once its state (`state`) has an accuracy.
    pub fn adopt_trained(
        &mut self,
        unit: &Unit,
        key: &Key,
        state: &Path,
    ) -> Result<(), StageError> {
        let done = crate::rundir::read_json::<crate::rundir::TrainState>(state)?
            .is_some_and(|s| s.accuracy.is_some());
        self.adopt(unit, key, done)
    }

    /// Records a finished unit's key and stores it in the stage cache.
    pub fn publish(&self, unit: &Unit, key: &Key) -> Result<(), StageError> {
        Ok(self.cache.publish(&self.dir, unit, key)?)
    }
}

/// The content keys of a run's units that the plan and the data fix before any stage runs
/// (a retrained net's also depends on what the search found: [`retrain::key`]). Each stage
/// declares what it reads in its own `key` function. The search is not cached: it takes
/// milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct StageKeys {
    /// The teacher's.
    pub teacher: Key,
    /// Each block's distillation.
    pub distill: Vec<Key>,
    /// Each block's ratings.
    pub rate: Vec<Key>,
}

impl StageKeys {
    /// The keys of a plan's units on this data.
    pub fn of(plan: &Plan, data: &Dataset) -> StageKeys {
        let teacher = teacher::key(plan, data);
        let distill: Vec<Key> = (0..plan.space.blocks.len())
            .map(|i| distill::key(plan, data, &teacher, i))
            .collect();
        let rate: Vec<Key> = distill
            .iter()
            .enumerate()
            .map(|(i, d)| rate::key(plan, data, d, i))
            .collect();
        StageKeys {
            teacher,
            distill,
            rate,
        }
    }
}

/// The start of block `i`'s distillation and rating keys: the unit they consume (`upstream`),
/// the block's supernet and taps, and for a photo folder the sampled photos' bytes (its file
/// fingerprint holds sizes, not bytes).
fn block_key_base(
    stage: &str,
    plan: &Plan,
    data: &Dataset,
    upstream: &Key,
    i: usize,
) -> KeyBuilder {
    let k = key_base(stage, plan)
        .with("upstream", upstream)
        .with("block", &supernet_block(plan, i))
        .with("taps", &plan.taps[i.saturating_sub(1)..=i]);
    if data.train.is_photos() {
        k.with("fingerprint", &data.fingerprint)
    } else {
        k
    }
}

/// The key of a net retrained from scratch (a retrained architecture, a study net's seed):
/// `net` (what names it and seeds its initialisation, and its architecture), the space, the
/// retraining settings, and the training and test images.
fn trained_net_key(stage: &str, plan: &Plan, data: &Dataset, net: &impl std::fmt::Debug) -> Key {
    key_base(stage, plan)
        .with("space", &plan.space)
        .with("net", net)
        .with("retrain.train", &plan.retrain.train)
        .with("data.batch_size", &plan.data.batch_size)
        .with("files", &data.files_fingerprint)
        .with("train_idx", &data.train_idx)
        .with("test_idx", &data.test_idx)
        .finish()
}

/// What block `i`'s supernet is built from (`SuperBlock::new`): its space, and for block 0 the
/// student's stem.
fn supernet_block(
    plan: &Plan,
    i: usize,
) -> (&crate::space::BlockSpace, Option<(usize, usize, usize)>) {
    let s = &plan.space;
    (
        &s.blocks[i],
        (i == 0).then_some((s.image_channels, s.stem, s.stem_stride)),
    )
}

/// The start of every stage's key: what all of them read (the images' shape and
/// preprocessing, the seed, and the backends that compute: another backend gives other bits).
fn key_base(stage: &str, plan: &Plan) -> KeyBuilder {
    // Every field named: a new one does not compile until it is placed here or left out.
    let crate::plan::DataSpec {
        // Which images: in the keys through the data's fingerprints and index sets.
        format: _,
        train: _,
        test: _,
        samples_per_class: _,
        rate_per_class: _,
        train_per_class: _,
        test_per_class: _,
        skip_bad: _,
        // How images become tensors.
        classes,
        image_size,
        channels,
        mean,
        std,
        crop_padding,
        hflip,
        scale,
        ratio,
        eval_crop,
        // Read by the stages that use it (`data.batch_size` is the default of theirs).
        batch_size: _,
        // Speed only.
        cache: _,
        workers: _,
    } = &plan.data;
    let mut backends: Vec<&str> = plan
        .devices
        .list
        .iter()
        .map(|s| match s {
            crate::plan::DeviceSpec::Cpu => "flex",
            crate::plan::DeviceSpec::Cuda(_) => "cuda",
            crate::plan::DeviceSpec::Wgpu(_) => "wgpu",
        })
        .collect();
    backends.sort_unstable();
    backends.dedup();
    KeyBuilder::new(stage)
        .with("data.shape", &(classes, channels, image_size))
        .with(
            "data.preprocessing",
            &(mean, std, crop_padding, hflip, scale, ratio, eval_crop),
        )
        .with("seed", &plan.seeds)
        .with("backends", &backends)
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress(len: u64, prefix: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{prefix:>14} [{bar:30}] {pos}/{len} {msg} ({per_sec}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_prefix(prefix.to_string());
    pb
}
