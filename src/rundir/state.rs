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
