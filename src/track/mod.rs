//! Tracking: the [`Tracker`] trait the stages log through, a local MLflow file store (the
//! default; `mlflow ui` reads it) and an MLflow server over REST with a spool for when the
//! server goes away.

mod local;
mod mlflow;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub mod system;

pub use local::LocalStore;
pub use mlflow::{MlflowServer, replay};

/// A tracking problem.
#[derive(Debug, thiserror::Error)]
pub enum TrackError {
    /// The tracking server cannot be reached or refused a call.
    #[error("the MLflow server at `{uri}` {problem}")]
    Server {
        /// The server.
        uri: String,
        /// What happened.
        problem: String,
    },
    /// The local store cannot be written.
    #[error("the local MLflow store `{path}` cannot be written: {problem}")]
    Store {
        /// The store or file.
        path: PathBuf,
        /// What happened.
        problem: String,
    },
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Still going.
    Running,
    /// Completed.
    Finished,
    /// Failed.
    Failed,
    /// Stopped by the user.
    Killed,
}

impl RunStatus {
    /// MLflow's name.
    pub fn name(&self) -> &'static str {
        match self {
            RunStatus::Running => "RUNNING",
            RunStatus::Finished => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Killed => "KILLED",
        }
    }
}

/// One metric value.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// Key.
    pub key: String,
    /// Value (NaN and infinities are kept).
    pub value: f64,
    /// Step.
    pub step: i64,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
}

/// A dataset a run used, as MLflow's dataset inputs describe it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DatasetInput {
    /// Name (`<experiment>-<role>`).
    pub name: String,
    /// Digest (the start of the run's data fingerprint).
    pub digest: String,
    /// Where it is read from.
    pub source: String,
    /// Its role: `train`, `distill`, `rate`, `test`.
    pub context: String,
    /// Images in it.
    pub rows: usize,
}

/// What the stages log through.
pub trait Tracker: Send {
    /// Starts a run (a child of `parent` when given); returns its id.
    fn start_run(
        &mut self,
        name: &str,
        parent: Option<&str>,
        tags: &[(String, String)],
    ) -> Result<String, TrackError>;
    /// Logs params (a param cannot change once logged).
    fn log_params(&mut self, run: &str, params: &[(String, String)]) -> Result<(), TrackError>;
    /// Logs metric values.
    fn log_metrics(&mut self, run: &str, metrics: &[Metric]) -> Result<(), TrackError>;
    /// Sets tags.
    fn set_tags(&mut self, run: &str, tags: &[(String, String)]) -> Result<(), TrackError>;
    /// Copies a file into the run's artifacts under `dir` ("" for the root).
    fn log_artifact(&mut self, run: &str, file: &Path, dir: &str) -> Result<(), TrackError>;
    /// Ends a run.
    fn end_run(&mut self, run: &str, status: RunStatus) -> Result<(), TrackError>;
    /// Records the datasets a run used (MLflow dataset inputs: the Dataset column and panel).
    fn log_inputs(&mut self, run: &str, datasets: &[DatasetInput]) -> Result<(), TrackError>;
    /// Sends anything held back; returns how many items are still unsent.
    fn flush(&mut self) -> usize {
        0
    }
    /// Where the runs can be seen.
    fn describe(&self) -> String;
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A new run id: 32 hex digits.
pub fn new_run_id() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..32)
        .map(|_| format!("{:x}", rng.random_range(0..16u8)))
        .collect()
}

pub use crate::recipe::flatten_params;

/// Opens the tracking a plan names: an MLflow server (unsent calls spooled to `spool`), or the
/// local store; with `tracking.fallback_to_local`, the local store when the server is down.
pub fn open(
    spec: &crate::plan::TrackingSpec,
    spool: &Path,
) -> Result<Box<dyn Tracker>, TrackError> {
    use crate::plan::TrackingTarget;
    let local = |root: &Path| -> Result<Box<dyn Tracker>, TrackError> {
        Ok(Box::new(LocalStore::open(root, &spec.experiment)?))
    };
    match &spec.target {
        TrackingTarget::Local(root) => local(root),
        TrackingTarget::Server(uri) => match MlflowServer::connect(uri, &spec.experiment, spool) {
            Ok(s) => Ok(Box::new(s)),
            Err(e) => match &spec.fallback {
                Some(root) => {
                    tracing::warn!(
                        "{e}; writing to the local store `mlruns` instead (`tracking.fallback_to_local`)"
                    );
                    local(root)
                }
                None => Err(e),
            },
        },
    }
}
