//! Checkpoint names mapped onto the teacher, both ways. One walk of the teacher ([`slots`])
//! names every tensor under a layout (`efficientnet_pytorch`, timm, torchvision); loading fills
//! the slots from a file's tensors, strictly (a missing, mis-shaped or unplaced tensor is an
//! error naming it and the closest key on the other side), and exporting writes them back under
//! the same names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use burn::module::{Param, RunningState};
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor, TensorData};

use super::safetensors::write_safetensors;
use super::{RawTensor, WeightsError, read_legacy, read_safetensors};
use crate::nn::layers::{Bn, ConvBn, MbConv, ResBlock};
use crate::nn::models::{Teacher, TeacherLayer};
use crate::plan::TeacherSpec;
use crate::recipe::{WeightLayout, did_you_mean};

/// Where one checkpoint tensor goes in the teacher.
enum Slot<'a> {
    /// A convolution kernel `[out, in/groups, k, k]`.
    Kernel(&'a mut Param<Tensor<4>>),
    /// A vector parameter (BN scale and shift, a bias).
    Vector(&'a mut Param<Tensor<1>>),
    /// A BN running statistic.
    Running(&'a mut RunningState<Tensor<1>>),
    /// The classifier's weight, stored `[classes, features]` (Burn keeps the transpose).
    Classifier(&'a mut Param<Tensor<2>>),
}

impl Slot<'_> {
    /// The shape the checkpoint stores.
    fn shape(&self) -> Vec<usize> {
        match self {
            Slot::Kernel(p) => p.val().dims().to_vec(),
            Slot::Vector(p) => p.val().dims().to_vec(),
            Slot::Running(r) => r.value().dims().to_vec(),
            Slot::Classifier(p) => {
                let [i, o] = p.val().dims();
                vec![o, i]
            }
        }
    }

    /// Fills the slot from row-major values of [`Slot::shape`].
    fn fill(&mut self, values: Vec<f32>, device: &Device) {
        let data = TensorData::new(values, self.shape());
        match self {
            Slot::Kernel(p) => **p = Param::from_tensor(Tensor::from_data(data, device)),
            Slot::Vector(p) => **p = Param::from_tensor(Tensor::from_data(data, device)),
            Slot::Running(r) => **r = RunningState::new(Tensor::from_data(data, device)),
            Slot::Classifier(p) => {
                let w: Tensor<2> = Tensor::from_data(data, device);
                **p = Param::from_tensor(w.transpose())
            }
        }
    }

    /// The values as the checkpoint stores them.
    fn values(&self) -> Vec<f32> {
        let data = match self {
            Slot::Kernel(p) => p.val().into_data(),
            Slot::Vector(p) => p.val().into_data(),
            Slot::Running(r) => r.value().into_data(),
            Slot::Classifier(p) => p.val().transpose().into_data(),
        };
        data.convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap_or_default()
    }
}

/// The named slots of a teacher, in order.
#[derive(Default)]
struct Slots<'a>(Vec<(String, Slot<'a>)>);

impl<'a> Slots<'a> {
    fn bn(&mut self, bn: &'a mut Bn, name: &str) {
        self.0
            .push((format!("{name}.weight"), Slot::Vector(&mut bn.gamma)));
        self.0
            .push((format!("{name}.bias"), Slot::Vector(&mut bn.beta)));
        self.0.push((
            format!("{name}.running_mean"),
            Slot::Running(&mut bn.running_mean),
        ));
        self.0.push((
            format!("{name}.running_var"),
            Slot::Running(&mut bn.running_var),
        ));
    }

    fn conv_bn(&mut self, c: &'a mut ConvBn, (conv, bn): (String, String)) {
        self.0
            .push((format!("{conv}.weight"), Slot::Kernel(&mut c.conv.weight)));
        self.bn(&mut c.bn, &bn);
    }

    fn biased(&mut self, c: &'a mut Conv2d, name: &str) {
        self.0
            .push((format!("{name}.weight"), Slot::Kernel(&mut c.weight)));
        if let Some(b) = &mut c.bias {
            self.0.push((format!("{name}.bias"), Slot::Vector(b)));
        }
    }

    fn mbconv(&mut self, m: &'a mut MbConv, n: MbNames) {
        if let (Some(e), Some(names)) = (&mut m.expand, n.expand) {
            self.conv_bn(e, names);
        }
        self.conv_bn(&mut m.depthwise, n.depthwise);
        if let Some(se) = &mut m.se {
            self.biased(&mut se.reduce, &n.se.0);
            self.biased(&mut se.expand, &n.se.1);
        }
        self.conv_bn(&mut m.project, n.project);
    }

    fn res(&mut self, r: &'a mut ResBlock, prefix: &str) {
        for (j, c) in r.convs.iter_mut().enumerate() {
            let j = j + 1;
            self.conv_bn(c, (format!("{prefix}.conv{j}"), format!("{prefix}.bn{j}")));
        }
        if let Some(d) = &mut r.downsample {
            self.conv_bn(
                d,
                (
                    format!("{prefix}.downsample.0"),
                    format!("{prefix}.downsample.1"),
                ),
            );
        }
    }
}

/// The names of one MBConv's parts: (conv, BN) pairs and the SE's (reduce, expand).
struct MbNames {
    expand: Option<(String, String)>,
    depthwise: (String, String),
    se: (String, String),
    project: (String, String),
}

/// An MBConv's names: layer `i` of stage `s` (0-based), the `g`-th layer overall.
fn mb_names(layout: WeightLayout, s: usize, i: usize, g: usize, expand: bool) -> MbNames {
    let pair = |p: &str, a: &str, b: &str| (format!("{p}.{a}"), format!("{p}.{b}"));
    match layout {
        WeightLayout::EfficientnetPytorch => {
            let p = format!("_blocks.{g}");
            MbNames {
                expand: Some(pair(&p, "_expand_conv", "_bn0")),
                depthwise: pair(&p, "_depthwise_conv", "_bn1"),
                se: pair(&p, "_se_reduce", "_se_expand"),
                project: pair(&p, "_project_conv", "_bn2"),
            }
        }
        WeightLayout::Timm => {
            let p = format!("blocks.{s}.{i}");
            let se = pair(&p, "se.conv_reduce", "se.conv_expand");
            if expand {
                MbNames {
                    expand: Some(pair(&p, "conv_pw", "bn1")),
                    depthwise: pair(&p, "conv_dw", "bn2"),
                    se,
                    project: pair(&p, "conv_pwl", "bn3"),
                }
            } else {
                MbNames {
                    expand: None,
                    depthwise: pair(&p, "conv_dw", "bn1"),
                    se,
                    project: pair(&p, "conv_pw", "bn2"),
                }
            }
        }
        WeightLayout::Torchvision => {
            let p = format!("features.{}.conv", g + 1);
            let o = usize::from(expand);
            MbNames {
                expand: Some(pair(&p, "0.0", "0.1")),
                depthwise: pair(&p, &format!("{o}.0"), &format!("{o}.1")),
                se: pair(&p, "se.fc1", "se.fc2"),
                project: pair(&p, &(o + 1).to_string(), &(o + 2).to_string()),
            }
        }
    }
}

/// The classifier's name in a layout (ResNets name it `fc` in both of theirs).
fn classifier(layout: WeightLayout, resnet: bool) -> &'static str {
    match layout {
        _ if resnet => "fc",
        WeightLayout::EfficientnetPytorch => "_fc",
        WeightLayout::Timm => "classifier",
        WeightLayout::Torchvision => "classifier.1",
    }
}

/// Every tensor of `t` under its name in `layout`.
fn slots(t: &mut Teacher, layout: WeightLayout) -> Slots<'_> {
    let mut out = Slots::default();
    let resnet = matches!(
        t.stages.first().and_then(|s| s.first()),
        Some(TeacherLayer::Res(_))
    );
    let total: usize = t.stages.iter().map(Vec::len).sum();
    let fc = classifier(layout, resnet);
    let (stem, head) = match layout {
        _ if resnet => (("conv1", "bn1"), None),
        WeightLayout::EfficientnetPytorch => (
            ("_conv_stem", "_bn0"),
            Some(("_conv_head".to_string(), "_bn1".to_string())),
        ),
        WeightLayout::Timm => (
            ("conv_stem", "bn1"),
            Some(("conv_head".to_string(), "bn2".to_string())),
        ),
        WeightLayout::Torchvision => (
            ("features.0.0", "features.0.1"),
            Some((
                format!("features.{}.0", total + 1),
                format!("features.{}.1", total + 1),
            )),
        ),
    };
    out.conv_bn(&mut t.stem, (stem.0.to_string(), stem.1.to_string()));
    let mut g = 0;
    for (s, stage) in t.stages.iter_mut().enumerate() {
        for (i, layer) in stage.iter_mut().enumerate() {
            match layer {
                TeacherLayer::MbConv(m) => {
                    let names = mb_names(layout, s, i, g, m.expand.is_some());
                    out.mbconv(m, names)
                }
                TeacherLayer::Res(r) => out.res(r, &format!("layer{}.{i}", s + 1)),
            }
            g += 1;
        }
    }
    if let (Some(h), Some(names)) = (&mut t.head, head) {
        out.conv_bn(h, names);
    }
    out.0
        .push((format!("{fc}.weight"), Slot::Classifier(&mut t.fc.weight)));
    if let Some(b) = &mut t.fc.bias {
        out.0.push((format!("{fc}.bias"), Slot::Vector(b)));
    }
    out
}

/// Loads a checkpoint (torch, either format, or safetensors) into a teacher of the plan's
/// shape, reading names in the plan's layout.
pub fn load_teacher(
    path: &Path,
    spec: &TeacherSpec,
    channels: usize,
    classes: usize,
    device: &Device,
) -> Result<Teacher, WeightsError> {
    teacher_from(read_legacy(path)?, path, spec, channels, classes, device)
}

/// [`load_teacher`] for a safetensors file.
pub fn load_teacher_safetensors(
    path: &Path,
    spec: &TeacherSpec,
    channels: usize,
    classes: usize,
    device: &Device,
) -> Result<Teacher, WeightsError> {
    let tensors = read_safetensors(path)?;
    teacher_from(tensors, path, spec, channels, classes, device)
}

/// The checkpoint names of a teacher in a layout, with the shapes stored under them.
pub fn teacher_keys(t: &Teacher, layout: WeightLayout) -> Vec<(String, Vec<usize>)> {
    let mut t = t.clone();
    slots(&mut t, layout)
        .0
        .iter()
        .map(|(k, s)| (k.clone(), s.shape()))
        .collect()
}

fn teacher_from(
    tensors: BTreeMap<String, RawTensor>,
    path: &Path,
    spec: &TeacherSpec,
    channels: usize,
    classes: usize,
    device: &Device,
) -> Result<Teacher, WeightsError> {
    // A classifier for other classes than the data's (an ImageNet teacher distilled on a subset)
    // is loaded as it is: the teacher is used for its features.
    let resnet = spec
        .stages
        .first()
        .is_some_and(|s| s.kind != crate::plan::LayerKind::MbConv);
    let features = spec.features();
    let fc = classifier(spec.layout, resnet);
    let classes = match (
        tensors.get(&format!("{fc}.weight")),
        tensors.get(&format!("{fc}.bias")),
    ) {
        (Some(w), bias)
            if w.shape.len() == 2
                && w.shape[1] == features
                && w.shape[0] > 0
                && bias.is_none_or(|b| b.shape == [w.shape[0]]) =>
        {
            w.shape[0]
        }
        _ => classes,
    };
    let mut t = Teacher::new(spec, channels, classes, device);
    let mut problems = Vec::new();
    let mut slots = slots(&mut t, spec.layout);
    let expected: BTreeSet<String> = slots.0.iter().map(|(k, _)| k.clone()).collect();
    let unplaced: Vec<&str> = tensors
        .keys()
        .map(String::as_str)
        .filter(|k| !expected.contains(*k))
        .collect();
    let mut missing = Vec::new();
    for (key, slot) in &mut slots.0 {
        let shape = slot.shape();
        match tensors.get(key.as_str()) {
            None => {
                let near = did_you_mean(key, unplaced.iter().copied())
                    .map(|n| format!("; the file has `{n}`"))
                    .unwrap_or_default();
                problems.push(format!("  missing `{key}` (shape {shape:?}){near}"));
                missing.push(key.clone());
            }
            Some(raw) => {
                if raw.shape != shape {
                    problems.push(format!(
                        "  `{key}`: the teacher needs shape {shape:?}, the file has {:?}",
                        raw.shape
                    ));
                } else {
                    slot.fill(raw.values.clone(), device);
                }
            }
        }
    }
    for key in unplaced {
        let near = did_you_mean(key, missing.iter().map(String::as_str))
            .map(|n| format!("; the teacher expects `{n}`"))
            .unwrap_or_default();
        problems.push(format!(
            "  `{key}` (shape {:?}) has no place in the teacher{near}",
            tensors[key].shape
        ));
    }
    drop(slots);
    if problems.is_empty() {
        return Ok(t);
    }
    let total = problems.len();
    if total > SHOWN {
        problems.truncate(SHOWN);
        problems.push(format!("  ... and {} more", total - SHOWN));
    }
    // A file saved in another layout: say which, when one fits better.
    let fits = |layout: WeightLayout| {
        let keys: BTreeSet<String> = teacher_keys(&t, layout).into_iter().map(|k| k.0).collect();
        tensors.keys().filter(|k| keys.contains(*k)).count()
    };
    let ours = fits(spec.layout);
    if let Some((best, n)) = spec
        .arch
        .layouts()
        .iter()
        .filter(|l| **l != spec.layout)
        .map(|l| (*l, fits(*l)))
        .max_by_key(|(_, n)| *n)
        .filter(|(_, n)| *n > ours)
    {
        problems.insert(
            0,
            format!(
                "  {n} of the file's {} tensors have `{}` names (and {ours} `{}` names): write `layout = \"{}\"` in `teacher.weights`",
                tensors.len(),
                crate::plan::layout_name(best),
                crate::plan::layout_name(spec.layout),
                crate::plan::layout_name(best),
            ),
        );
    }
    Err(WeightsError::Mismatch {
        path: path.to_path_buf(),
        layout: crate::plan::layout_name(spec.layout),
        problems,
    })
}

/// Problems listed before "... and N more".
const SHOWN: usize = 12;

/// Writes a teacher's weights as safetensors under its plan's layout names (what
/// `format = "safetensors"` reads back).
pub fn export_teacher_safetensors(
    t: &Teacher,
    layout: WeightLayout,
    path: &Path,
) -> Result<(), WeightsError> {
    let mut t = t.clone();
    let out: Vec<(String, Vec<usize>, Vec<u8>)> = slots(&mut t, layout)
        .0
        .iter()
        .map(|(k, s)| {
            let bytes = s.values().iter().flat_map(|x| x.to_le_bytes()).collect();
            (k.clone(), s.shape(), bytes)
        })
        .collect();
    write_safetensors(&out, path)
}
