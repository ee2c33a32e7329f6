//! The teacher resolved: its stages (a table row per known architecture, or the recipe's own
//! CNN), weights as an absolute path, and the taps with their shapes checked against the stages.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::problems::Problems;
use super::{TrainSpec, train_spec};
use crate::recipe::{Recipe, TeacherArch, WeightFormat};
use crate::space::Activation;

/// One stage of a teacher: `layers` MBConv layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageSpec {
    /// Output channels.
    pub channels: usize,
    /// Layers.
    pub layers: usize,
    /// Stride of the first layer.
    pub stride: usize,
    /// Depthwise kernel.
    pub kernel: usize,
    /// Expansion ratio.
    pub expansion: usize,
}

/// The resolved teacher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherSpec {
    /// Architecture.
    pub arch: TeacherArch,
    /// Stem channels.
    pub stem: usize,
    /// Stem stride.
    pub stem_stride: usize,
    /// Stages in order.
    pub stages: Vec<StageSpec>,
    /// Head channels.
    pub head: usize,
    /// Activation.
    pub act: Activation,
    /// BatchNorm epsilon.
    pub bn_eps: f64,
    /// Pretrained weights (absolute path) and format.
    pub weights: Option<(PathBuf, WeightFormat)>,
    /// Training settings when there are no weights.
    pub train: TrainSpec,
    /// BN in eval mode while producing targets.
    pub eval_mode: bool,
}

impl TeacherSpec {
    /// Output shape `[C, H, W]` of every stage (index s-1 for stage s) at an image size.
    pub fn stage_shapes(&self, image_size: usize) -> Vec<[usize; 3]> {
        let mut size = image_size.div_ceil(self.stem_stride);
        self.stages
            .iter()
            .map(|s| {
                size = size.div_ceil(s.stride);
                [s.channels, size, size]
            })
            .collect()
    }
}

/// A block boundary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TapSpec {
    /// Name.
    pub name: String,
    /// The stage whose output it is (1-based).
    pub stage: usize,
    /// Shape `[C, H, W]`.
    pub shape: [usize; 3],
}

const LITE0_STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
];

pub(super) fn resolve(r: &Recipe, base: &Path, p: &mut Problems) -> TeacherSpec {
    let train = train_spec(&r.teacher.train, r.data.batch_size);
    // Teacher.
    let teacher = match r.teacher.arch {
        TeacherArch::EfficientnetLite0 => {
            if r.teacher.weights.is_none() {
                p.err("/teacher", "`teacher.weights` is missing: an `efficientnet-lite0` teacher is loaded, not trained".into(),
                        Some("point `teacher.weights.path` at `efficientnet-lite0-57934424.pth` with `format = \"torch-legacy\"`".into()));
            }
            if r.data.channels != 3 {
                p.err(
                    "/data/channels",
                    format!(
                        "`data.channels` is {}, but an `efficientnet-lite0` teacher needs 3 (RGB)",
                        r.data.channels
                    ),
                    None,
                );
            }
            TeacherSpec {
                arch: r.teacher.arch,
                stem: 32,
                stem_stride: 2,
                stages: LITE0_STAGES
                    .iter()
                    .map(|&(layers, kernel, stride, expansion, channels)| StageSpec {
                        channels,
                        layers,
                        stride,
                        kernel,
                        expansion,
                    })
                    .collect(),
                head: 1280,
                act: Activation::Relu6,
                bn_eps: 1e-3,
                weights: None,
                train: train.clone(),
                eval_mode: r.teacher.eval_mode,
            }
        }
        TeacherArch::Cnn => {
            match &r.teacher.cnn {
                Some(cnn) => TeacherSpec {
                    arch: r.teacher.arch,
                    stem: cnn.stem,
                    stem_stride: cnn.stem_stride,
                    stages: cnn
                        .stages
                        .iter()
                        .map(|s| StageSpec {
                            channels: s.channels,
                            layers: s.layers,
                            stride: s.stride,
                            kernel: s.kernel,
                            expansion: s.expansion,
                        })
                        .collect(),
                    head: cnn.head,
                    act: Activation::Relu6,
                    bn_eps: 1e-3,
                    weights: None,
                    train: train.clone(),
                    eval_mode: r.teacher.eval_mode,
                },
                None => {
                    p.err("/teacher", "`teacher.cnn` is missing: `teacher.arch = \"cnn\"` declares its stages there".into(),
                        Some("add `[teacher.cnn]` with `stem`, `head` and `[[teacher.cnn.stages]]`".into()));
                    TeacherSpec {
                        arch: r.teacher.arch,
                        stem: 1,
                        stem_stride: 1,
                        stages: vec![],
                        head: 1,
                        act: Activation::Relu6,
                        bn_eps: 1e-3,
                        weights: None,
                        train: train.clone(),
                        eval_mode: true,
                    }
                }
            }
        }
    };
    let mut teacher = teacher;
    teacher.weights = r
        .teacher
        .weights
        .as_ref()
        .map(|w| (base.join(&w.path), w.format));
    for (i, s) in teacher.stages.iter().enumerate() {
        if s.kernel % 2 == 0 {
            p.err(
                &format!("/teacher/cnn/stages/{i}/kernel"),
                format!(
                    "`teacher.cnn.stages[{i}].kernel` must be odd, found {}",
                    s.kernel
                ),
                None,
            );
        }
    }
    teacher
}

pub(super) fn taps(r: &Recipe, teacher: &TeacherSpec, p: &mut Problems) -> Vec<TapSpec> {
    let stage_shapes = teacher.stage_shapes(r.data.image_size);
    // Taps.
    if r.teacher.taps.is_empty() {
        p.err(
            "/teacher/taps",
            "`teacher.taps` is empty: declare at least one block boundary".into(),
            None,
        );
    }
    let mut taps = Vec::new();
    for (i, t) in r.teacher.taps.iter().enumerate() {
        let at = format!("/teacher/taps/{i}");
        if r.teacher.taps[..i].iter().any(|o| o.name == t.name) {
            p.err(
                &format!("{at}/name"),
                format!("`teacher.taps[{i}].name` repeats the tap name `{}`", t.name),
                None,
            );
        }
        if i > 0 && t.stage <= r.teacher.taps[i - 1].stage {
            p.err(
                    &format!("{at}/stage"),
                    format!(
                        "`teacher.taps[{i}].stage` is {}, but taps must be in teacher order: the previous tap is at stage {}",
                        t.stage,
                        r.teacher.taps[i - 1].stage
                    ),
                    None,
                );
        }
        match stage_shapes.get(t.stage.wrapping_sub(1)) {
                None if !teacher.stages.is_empty() => p.err(
                    &format!("{at}/stage"),
                    format!(
                        "`teacher.taps[{i}].stage` is {}, but the teacher has stages 1 to {}",
                        t.stage,
                        teacher.stages.len()
                    ),
                    None,
                ),
                Some(shape) if *shape != t.shape => p.err(
                    &format!("{at}/shape"),
                    format!(
                        "`teacher.taps[{i}].shape` is {:?}, but stage {} of the teacher outputs {:?} at `data.image_size = {}`",
                        t.shape, t.stage, shape, r.data.image_size
                    ),
                    Some(format!("write `shape = {shape:?}`")),
                ),
                _ => {}
            }
        taps.push(TapSpec {
            name: t.name.clone(),
            stage: t.stage,
            shape: t.shape,
        });
    }

    taps
}
