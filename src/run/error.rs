//! The edge: every module's error, wrapped, with the exit code it maps to. Bad input of any kind
//! (recipe, data, weights, tracking server, device, a request that does not fit the run) is 2; a
//! failure of the run itself (a worker that crashed, a run-directory file that cannot be written)
//! is 1; a stop asked for by the user is 130. No module below `run/` imports this.

use crate::data::DataError;
use crate::nn::device::DeviceError;
use crate::nn::weights::WeightsError;
use crate::recipe::Diagnostics;
use crate::rundir::RunDirError;
use crate::slurm::SlurmError;
use crate::stages::StageError;
use crate::track::TrackError;

/// Why a command stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The recipe is wrong.
    #[error("{0}")]
    Recipe(#[from] Diagnostics),
    /// A dataset file is wrong.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Tracking failed.
    #[error(transparent)]
    Track(#[from] TrackError),
    /// A weights file is wrong.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// A run directory or one of its files cannot be used.
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    /// A device cannot be used.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// A stage stopped.
    #[error(transparent)]
    Stage(#[from] StageError),
    /// Submitting to Slurm failed.
    #[error(transparent)]
    Slurm(#[from] SlurmError),
    /// `--worker K` beyond `runtime.devices`.
    #[error("`--worker {worker}`: the recipe lists {devices} device(s) in `runtime.devices`")]
    NoSuchWorker {
        /// K.
        worker: usize,
        /// How many devices the recipe lists.
        devices: usize,
    },
    /// `--block B` beyond the recipe's blocks.
    #[error("`--block {block}`: the recipe has blocks 0 to {last}")]
    NoSuchBlock {
        /// B.
        block: usize,
        /// The last block.
        last: usize,
    },
    /// `--resume` of a recipe that has no run yet.
    #[error("`--resume`: there is no run of `{experiment}` under `{}` yet", output_dir.display())]
    NothingToResume {
        /// `experiment.name`.
        experiment: String,
        /// `experiment.output_dir`.
        output_dir: std::path::PathBuf,
    },
    /// A command-line value that is not what the option takes.
    #[error("`--{option}`: {problem}")]
    BadOption {
        /// The option, without its dashes.
        option: &'static str,
        /// What is wrong, and the fix.
        problem: String,
    },
    /// `dnarun teachers NAME` of an unknown teacher.
    #[error("`{name}` is not a pretrained teacher{}; `dnarun teachers` lists them", near.as_ref().map(|n| format!(" (did you mean `{n}`?)")).unwrap_or_default())]
    UnknownTeacher {
        /// The name given.
        name: String,
        /// The nearest pretrained teacher's name.
        near: Option<String>,
    },
    /// A process the run starts (a per-device worker) cannot be started or waited for.
    #[error("cannot {what}: {reason}")]
    Process {
        /// What was attempted.
        what: String,
        /// What the system said.
        reason: String,
    },
    /// `dnarun sweep` of a recipe without a sweep.
    #[error("`{}` declares no sweep: add a `[sweep]` section with `grid` (dotted keys -> arrays of values) or `members` (tables of overrides), or pass `--set 'sweep.grid={{\"rate.calibration_batches\"=[1,2]}}'`", .0.display())]
    NoSweep(std::path::PathBuf),
    /// Per-device workers failed.
    #[error("{}", .0.join("; "))]
    WorkersFailed(Vec<String>),
}

impl RunError {
    /// The process exit code: 2 bad input, 1 a failure of the run itself, 130 stopped.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Stage(StageError::Stopped(_)) => 130,
            RunError::Stage(e) if e.is_failure() => 1,
            RunError::RunDir(e) if e.is_failure() => 1,
            RunError::Slurm(e) if e.is_failure() => 1,
            RunError::Process { .. } | RunError::WorkersFailed(_) => 1,
            _ => 2,
        }
    }

    /// Whether the user stopped the run.
    pub fn is_stop(&self) -> bool {
        matches!(self, RunError::Stage(StageError::Stopped(_)))
    }
}
