//! The stages of a run: teacher, distill, rate, search, retrain, report. Each is a function of
//! the plan and the previous stages' outputs on disk; each writes its outputs atomically and
//! skips the work it already finished, so a killed run resumes.

pub mod distill;
pub mod rate;
pub mod report;
pub mod retrain;
pub mod search;
pub mod teacher;
mod train;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use train::{Classifier, evaluate, train_classifier};

use crate::data::{DataError, Dataset};
use crate::plan::Plan;
use crate::recipe::Diagnostics;
use crate::track::{Metric, RunStatus, TrackError, Tracker, now_ms};

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The recipe is wrong.
    #[error("{0}")]
    Recipe(#[from] Diagnostics),
    /// A dataset file is wrong.
    #[error("{0}")]
    Data(#[from] DataError),
    /// Tracking failed.
    #[error("{0}")]
    Track(#[from] TrackError),
    /// A weights file is wrong.
    #[error("{0}")]
    Weights(#[from] crate::nn::torch::WeightsError),
    /// A file of the run cannot be read or written.
    #[error("`{path}` {problem}")]
    File {
        /// The file.
        path: PathBuf,
        /// What happened.
        problem: String,
    },
    /// The user's request does not fit the run (resume of a changed recipe, unknown block...).
    #[error("{0}")]
    Usage(String),
    /// A device cannot be used.
    #[error("{0}")]
    Device(String),
    /// Ctrl-C: the run saved its state and stopped.
    #[error(
        "stopped by the user; everything finished so far is saved. Resume with `dnarun resume {0}`"
    )]
    Stopped(PathBuf),
}

impl RunError {
    pub(crate) fn file(path: &Path, e: impl std::fmt::Display) -> RunError {
        RunError::File {
            path: path.to_path_buf(),
            problem: e.to_string(),
        }
    }
}

/// The run ids of a run directory: one file per tracked run under `tracking/` (`parent.id`,
/// `distill__block0.id`, ...), so that processes working on different blocks at once (a Slurm
/// array) never overwrite each other's.
pub fn read_ids(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir(dir.join("tracking")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let (Some(stem), Ok(id)) =
                (name.strip_suffix(".id"), std::fs::read_to_string(e.path()))
            {
                out.insert(stem.replace("__", "/"), id.trim().to_string());
            }
        }
    }
    out
}

/// Records the id of a tracked run of a run directory.
pub fn write_id(dir: &Path, name: &str, id: &str) -> Result<(), RunError> {
    write_atomic(
        &dir.join("tracking")
            .join(format!("{}.id", name.replace('/', "__"))),
        id.as_bytes(),
    )
}

/// The tracker of a run: the parent run and its named child runs, whose ids survive resumes.
pub struct Track {
    /// The backend.
    pub tracker: Box<dyn Tracker>,
    /// The parent run.
    pub parent: String,
    dir: PathBuf,
    last_ts: i64,
}

impl Track {
    /// Wraps a tracker for the run directory `dir`.
    pub fn new(tracker: Box<dyn Tracker>, parent: String, dir: PathBuf) -> Track {
        Track {
            tracker,
            parent,
            dir,
            last_ts: 0,
        }
    }

    /// The child run `name`, started on first use.
    pub fn child(&mut self, name: &str, tags: &[(String, String)]) -> Result<String, RunError> {
        if let Some(id) = read_ids(&self.dir).get(name) {
            return Ok(id.clone());
        }
        let id = self.tracker.start_run(name, Some(&self.parent), tags)?;
        write_id(&self.dir, name, &id)?;
        Ok(id)
    }

    /// Ends the child run `name`.
    pub fn end(&mut self, name: &str, status: RunStatus) -> Result<(), RunError> {
        if let Some(id) = read_ids(&self.dir).get(name) {
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
    ) -> Result<(), RunError> {
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
    pub fn artifact(&mut self, run: &str, file: &Path, dir: &str) -> Result<(), RunError> {
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
    pub dir: PathBuf,
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
    pub fn stopped(&self) -> RunError {
        RunError::Stopped(self.dir.clone())
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

/// A temp name beside `path`, unique to this process and call (block tasks may run at once).
fn tmp_path(path: &Path) -> PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.{n}.tmp~", std::process::id()));
    path.with_file_name(name)
}

/// Writes bytes through a temp file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| RunError::file(dir, e))?;
    }
    let tmp = tmp_path(path);
    std::fs::write(&tmp, bytes).map_err(|e| RunError::file(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| RunError::file(path, e))
}

/// Writes pretty JSON atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RunError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| RunError::file(path, e))?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Reads JSON, `None` when the file does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, RunError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| RunError::file(path, format!("is not valid: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RunError::file(path, e)),
    }
}

/// Saves a module's weights (Burn record) atomically.
pub fn save_module<M: Module>(module: &M, path: &Path) -> Result<(), RunError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| RunError::file(dir, e))?;
    }
    let tmp = tmp_path(path);
    // `valid` folds pending BatchNorm running-stat updates in; a plain record would miss the last.
    module
        .valid()
        .into_record()
        .save(&tmp)
        .map_err(|e| RunError::file(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| RunError::file(path, e))
}

/// Loads weights saved by [`save_module`] into a module of the same shape.
pub fn load_module<M: Module>(module: M, path: &Path) -> Result<M, RunError> {
    let record = ModuleRecord::load(path)
        .map_err(|e| RunError::file(path, format!("is not a readable Burn record: {e}")))?;
    module.try_load_record(record).map_err(|e| {
        RunError::file(
            path,
            format!("does not fit the model the recipe describes: {e}"),
        )
    })
}

/// Saves an optimizer's state atomically.
pub fn save_optim(optim: &burn::optim::ModuleOptimizer, path: &Path) -> Result<(), RunError> {
    let tmp = tmp_path(path);
    optim.save(&tmp).map_err(|e| RunError::file(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| RunError::file(path, e))
}
