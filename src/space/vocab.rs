//! The vocabulary of the search space that recipes also name: activations, padding, the FLOPs
//! convention and the rating's loss. Pure data (serde + schemars for the recipe schema), no Burn.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where a convolution's zero padding goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Padding {
    /// TensorFlow's "same": `ceil(size / stride)` outputs, the odd pad after the image.
    #[default]
    Same,
    /// PyTorch's `padding = k // 2` on both sides.
    Symmetric,
}

/// Activation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `x * sigmoid(x)` (swish / SiLU).
    Swish,
}

/// How FLOPs are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FlopsConvention {
    /// The DNA paper's: multiply-accumulates + 2 x BatchNorm output elements.
    #[default]
    Dna,
    /// Plain multiply-accumulates of convolutions and linear layers.
    Macs,
}

/// How a path's output is compared with the teacher's tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RateLoss {
    /// DNA's "fair" loss: `mean|Y - Yhat| / std(Y)`.
    #[default]
    Fair,
    /// The distillation loss made scale-free: `mean((Y - Yhat)^2) / var(Y)`.
    RelativeMse,
}

/// How a distillation step picks the paths it trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PathSampling {
    /// Every cell once per step, a uniformly random path of each (the public DNA code's): every
    /// cell's weights are trained equally often, so a cell of many paths gives each of them fewer
    /// updates than a cell of few, and short distillation rates shallow cells better.
    #[default]
    Cell,
    /// As many draws per step as there are cells, each cell drawn in proportion to its number of
    /// paths, then a uniformly random path of it: every path of the block gets the same expected
    /// number of updates, so a deep cell's weights are trained far more often than a shallow
    /// cell's, and the rating favours deep cells (docs/study.md, experiment 6). Its ranking
    /// settles sooner; compare paths within a cell, or prefer `cell`.
    Path,
}
