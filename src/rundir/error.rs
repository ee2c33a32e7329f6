//! What can go wrong with a run directory's files.

use std::path::PathBuf;

/// Why a run directory (or one of its files) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    /// A file of the run cannot be written: the run fails, not its input.
    #[error("`{}` cannot be written: {reason}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the system said.
        reason: String,
    },
    /// A file of the run (or one it reads back) cannot be read.
    #[error("`{}` cannot be read: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        reason: String,
    },
    /// A file is there but is not what it should be.
    #[error("`{}` {problem}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The folder is not a run directory.
    #[error("`{}` is not a run directory: {why}", path.display())]
    NotARunDir {
        /// The folder.
        path: PathBuf,
        /// Why not.
        why: &'static str,
    },
    /// Another process holds the run directory.
    #[error(
        "`{}` is in use by another dnarun process{} ({part}); wait for it to finish or stop it, then resume",
        path.display(),
        holder.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Busy {
        /// The run directory.
        path: PathBuf,
        /// What is held: the whole run, or a block, a worker, a net.
        part: String,
        /// The process holding it, when it wrote its id.
        holder: Option<u32>,
    },
    /// The recipe differs from the one the run was started with.
    #[error(
        "the recipe changed since the run in `{}` started, so it cannot be resumed; keys that differ: {}. Start a new run instead (drop `--resume`)",
        path.display(),
        keys.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
    )]
    RecipeChanged {
        /// The run directory.
        path: PathBuf,
        /// The dotted keys that differ.
        keys: Vec<String>,
    },
    /// The dataset differs from the one the run was started with.
    #[error(
        "the dataset changed since the run in `{}` started (fingerprint {} -> {}), so it cannot be resumed; start a new run",
        path.display(),
        &old[..12.min(old.len())],
        &new[..12.min(new.len())]
    )]
    DataChanged {
        /// The run directory.
        path: PathBuf,
        /// The fingerprint the run started with.
        old: String,
        /// Today's.
        new: String,
    },
}

impl RunDirError {
    /// A file that cannot be written.
    pub fn write(path: &std::path::Path, e: impl std::fmt::Display) -> RunDirError {
        RunDirError::Write {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    }

    /// A file that cannot be read.
    pub fn read(path: &std::path::Path, e: impl std::fmt::Display) -> RunDirError {
        RunDirError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    }

    /// A file that is not what it should be.
    pub fn invalid(path: &std::path::Path, problem: impl Into<String>) -> RunDirError {
        RunDirError::Invalid {
            path: path.to_path_buf(),
            problem: problem.into(),
        }
    }

    /// Whether the run itself failed (a file of it cannot be written) rather than its input.
    pub fn is_failure(&self) -> bool {
        matches!(self, RunDirError::Write { .. })
    }
}
