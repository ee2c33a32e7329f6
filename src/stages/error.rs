//! What can stop a stage.

use std::path::PathBuf;

use crate::data::DataError;
use crate::nn::weights::WeightsError;
use crate::rundir::RunDirError;
use crate::track::TrackError;

/// Why a stage stopped.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// A dataset file is wrong.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A weights file is wrong.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// Tracking failed.
    #[error(transparent)]
    Track(#[from] TrackError),
    /// A file of the run cannot be read or written.
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    /// Ctrl-C or SIGTERM: the stage saved its state and stopped.
    #[error(
        "stopped by the user; everything finished so far is saved. Resume with `dnarun resume {}`",
        .0.display()
    )]
    Stopped(PathBuf),
    /// A stage that reads the ratings ran before the `rate` stage.
    #[error("block {block} has no ratings yet (`{}`); run the `rate` stage first", path.display())]
    NotRated {
        /// The block.
        block: usize,
        /// Its ratings file.
        path: PathBuf,
    },
    /// An architecture names a path its block does not have.
    #[error("`{}` names a path that was not rated", path.display())]
    UnratedPath {
        /// The architecture file.
        path: PathBuf,
    },
    /// The weights file the recipe names does not exist.
    #[error(
        "`{}` does not exist; check `teacher.weights.path` (relative to the recipe)",
        path.display()
    )]
    NoWeights {
        /// The file.
        path: PathBuf,
    },
    /// An architecture (file) does not fit the recipe's space.
    #[error("{0}")]
    Architecture(String),
    /// No architecture fits the budget.
    #[error(
        "no architecture fits the budget in `search`; raise `search.max_mflops` / `search.max_mparams`"
    )]
    NothingFits,
    /// The study's band holds too few architectures.
    #[error(
        "`study.architectures` is {asked}, but only {found} distinct architectures lie in the band of `study.band` = {band} below the budget; widen the band or study fewer"
    )]
    BandTooNarrow {
        /// `study.architectures`.
        asked: usize,
        /// How many the band holds.
        found: usize,
        /// `study.band`.
        band: f64,
    },
    /// `--net K` beyond the study's nets.
    #[error("`--net {net}`: the study has nets 0 to {last} (the last is the searched top-1)")]
    NoSuchNet {
        /// K.
        net: usize,
        /// The last net.
        last: usize,
    },
    /// No test image decodes, so the teacher's taps cannot be checked.
    #[error("no test image can be decoded; check `data.test`")]
    NoTestImage,
    /// A declared tap shape differs from what the teacher outputs.
    #[error(
        "`teacher.taps[{tap}].shape` is {declared:?}, but the teacher's stage {stage} outputs {actual:?}; write `shape = {actual:?}`"
    )]
    TapShape {
        /// The tap.
        tap: usize,
        /// Its stage.
        stage: usize,
        /// What the recipe says.
        declared: [usize; 3],
        /// What the teacher outputs.
        actual: [usize; 3],
    },
}

impl StageError {
    /// Whether the run itself failed (a file of it cannot be written) rather than its input.
    pub fn is_failure(&self) -> bool {
        matches!(self, StageError::RunDir(e) if e.is_failure())
    }
}
