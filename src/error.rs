//! The crate-wide error: every way a run can end early, each with the exit code it maps to.
//! Bad input of any kind (recipe, data, weights, tracking server, device, a request that does not
//! fit the run) is 2; a failure of the run itself (a worker that crashed, a run-directory file
//! that cannot be written) is 1; a stop asked for by the user is 130.

use std::path::{Path, PathBuf};

use crate::data::DataError;
use crate::nn::weights::WeightsError;
use crate::recipe::Diagnostics;
use crate::track::TrackError;

/// Why a command stopped.
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
    Weights(#[from] WeightsError),
    /// An input file (weights, an architecture file, a run's saved state) cannot be read or does
    /// not fit the recipe.
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
    /// The run itself failed: a file of the run cannot be written, a worker process crashed.
    #[error("{0}")]
    Failed(String),
    /// Ctrl-C or SIGTERM: the run saved its state and stopped.
    #[error(
        "stopped by the user; everything finished so far is saved. Resume with `dnarun resume {0}`"
    )]
    Stopped(PathBuf),
}

impl RunError {
    /// A problem with a file, named by its path.
    pub(crate) fn file(path: &Path, e: impl std::fmt::Display) -> RunError {
        RunError::File {
            path: path.to_path_buf(),
            problem: e.to_string(),
        }
    }

    /// A file of the run that cannot be written: the run fails (exit 1), not the input.
    pub(crate) fn write(path: &Path, e: impl std::fmt::Display) -> RunError {
        RunError::Failed(format!("`{}` cannot be written: {e}", path.display()))
    }

    /// The process exit code: 2 bad input, 1 a failure of the run itself, 130 stopped.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Failed(_) => 1,
            RunError::Stopped(_) => 130,
            _ => 2,
        }
    }
}
