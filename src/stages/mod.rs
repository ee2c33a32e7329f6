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
use crate::rundir::RunDir;
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
