//! The state files of a run's stages: what is finished, written after every unit of work.

use serde::{Deserialize, Serialize};

/// Progress of one block's distillation (`distill/blockI/state.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DistillState {
    /// Epochs finished.
    pub epochs_done: usize,
    /// Steps finished inside the current epoch (after a stop).
    pub steps_done: usize,
    /// Mean loss of each finished epoch.
    pub losses: Vec<f64>,
    /// Seconds spent.
    pub seconds: f64,
    /// Tag of the supernet and optimizer files this state belongs to (`supernet-<tag>.bpk`);
    /// the state is written last, so a kill between the writes never mixes checkpoints.
    #[serde(default)]
    pub checkpoint: String,
    /// The rank-stability evaluations so far (`distill.stability`).
    #[serde(default)]
    pub stability: Vec<StabilityPoint>,
    /// Stopped early: its stability tau stayed at or above `distill.stop_when_stable`.
    #[serde(default)]
    pub stable: bool,
}

/// One rank-stability evaluation of a block.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StabilityPoint {
    /// Epochs distilled when it was taken.
    pub epoch: usize,
    /// The loss of each path of the fixed sample on the held-out images.
    pub ratings: Vec<f64>,
    /// Kendall's tau of these ratings against the previous evaluation's (none at the first).
    pub tau: Option<f64>,
}

/// Progress of a from-scratch training (`teacher/state.json`, `retrain/NAME/state.json`). A
/// teacher loaded from weights has only `accuracy`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainState {
    /// Epochs finished.
    pub epochs_done: usize,
    /// Mean training loss of each finished epoch.
    pub losses: Vec<f64>,
    /// Test accuracy once training is complete (or the weights are loaded and evaluated).
    pub accuracy: Option<f64>,
    /// A loaded teacher whose classifier has other classes than the data: used for its
    /// features, its accuracy not measured (the stage is done all the same).
    pub features_only: bool,
    /// Tag of the model and optimizer files this state belongs to (`model-<tag>.bpk`; empty for
    /// the final `model.bpk`).
    pub checkpoint: String,
}
