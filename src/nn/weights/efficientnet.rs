//! The `efficientnet_pytorch` state dict names (`_conv_stem`, `_blocks.N._expand_conv`, ...)
//! mapped onto the teacher, both ways: loading a legacy torch or safetensors file, and exporting
//! the teacher under the same names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};

use super::safetensors::write_safetensors;
use super::{RawTensor, WeightsError, read_legacy, read_safetensors};
use crate::nn::layers::{Bn, ConvBn, MbConv};
use crate::nn::models::Teacher;
use crate::plan::TeacherSpec;

struct Mapper<'a> {
    tensors: &'a BTreeMap<String, RawTensor>,
    used: BTreeSet<String>,
    problems: Vec<String>,
    device: Device,
}

impl Mapper<'_> {
    fn take<const D: usize>(&mut self, key: &str, expected: [usize; D]) -> Option<Tensor<D>> {
        match self.tensors.get(key) {
            None => {
                self.problems
                    .push(format!("  missing `{key}` (expected shape {expected:?})"));
                None
            }
            Some(t) => {
                self.used.insert(key.to_string());
                if t.shape != expected {
                    self.problems.push(format!(
                        "  `{key}`: expected shape {expected:?}, found {:?}",
                        t.shape
                    ));
                    return None;
                }
                Some(Tensor::from_data(
                    TensorData::new(t.values.clone(), expected),
                    &self.device,
                ))
            }
        }
    }

    fn param<const D: usize>(&mut self, p: &mut Param<Tensor<D>>, key: &str) {
        let dims = p.val().dims();
        if let Some(t) = self.take(key, dims) {
            *p = Param::from_tensor(t);
        }
    }

    fn bn(&mut self, bn: &mut Bn, prefix: &str) {
        self.param(&mut bn.gamma, &format!("{prefix}.weight"));
        self.param(&mut bn.beta, &format!("{prefix}.bias"));
        let dims = bn.running_mean.value().dims();
        if let Some(t) = self.take(&format!("{prefix}.running_mean"), dims) {
            bn.running_mean = burn::module::RunningState::new(t);
        }
        if let Some(t) = self.take(&format!("{prefix}.running_var"), dims) {
            bn.running_var = burn::module::RunningState::new(t);
        }
    }

    fn conv_bn(&mut self, c: &mut ConvBn, conv: &str, bn: &str) {
        self.param(&mut c.conv.weight, &format!("{conv}.weight"));
        self.bn(&mut c.bn, bn);
    }

    fn mbconv(&mut self, m: &mut MbConv, p: &str) {
        if let Some(e) = &mut m.expand {
            self.conv_bn(e, &format!("{p}._expand_conv"), &format!("{p}._bn0"))
        }
        self.conv_bn(
            &mut m.depthwise,
            &format!("{p}._depthwise_conv"),
            &format!("{p}._bn1"),
        );
        self.conv_bn(
            &mut m.project,
            &format!("{p}._project_conv"),
            &format!("{p}._bn2"),
        );
    }
}

/// Loads an `efficientnet_pytorch`-named legacy torch file into a teacher of the plan's shape.
pub fn load_teacher(
    path: &Path,
    spec: &TeacherSpec,
    channels: usize,
    classes: usize,
    device: &Device,
) -> Result<Teacher, WeightsError> {
    teacher_from(read_legacy(path)?, path, spec, channels, classes, device)
}

/// Loads an `efficientnet_pytorch`-named safetensors file into a teacher of the plan's shape.
pub fn load_teacher_safetensors(
    path: &Path,
    spec: &TeacherSpec,
    channels: usize,
    classes: usize,
    device: &Device,
) -> Result<Teacher, WeightsError> {
    teacher_from(
        read_safetensors(path)?,
        path,
        spec,
        channels,
        classes,
        device,
    )
}

fn teacher_from(
    tensors: BTreeMap<String, RawTensor>,
    path: &Path,
    spec: &TeacherSpec,
    channels: usize,
    classes: usize,
    device: &Device,
) -> Result<Teacher, WeightsError> {
    let mut t = Teacher::new(spec, channels, classes, device);
    let mut m = Mapper {
        tensors: &tensors,
        used: BTreeSet::new(),
        problems: Vec::new(),
        device: device.clone(),
    };
    m.conv_bn(&mut t.stem, "_conv_stem", "_bn0");
    let mut i = 0;
    for stage in &mut t.stages {
        for layer in stage.iter_mut() {
            m.mbconv(layer, &format!("_blocks.{i}"));
            i += 1;
        }
    }
    m.conv_bn(&mut t.head, "_conv_head", "_bn1");
    let [hin, hout] = t.fc.weight.val().dims();
    if let Some(w) = m.take("_fc.weight", [hout, hin]) {
        t.fc.weight = Param::from_tensor(w.transpose());
    }
    if let Some(b) = &mut t.fc.bias {
        m.param(b, "_fc.bias");
    }
    for key in tensors.keys() {
        if !m.used.contains(key) {
            m.problems.push(format!(
                "  `{key}` has no place in the teacher (shape {:?})",
                tensors[key].shape
            ));
        }
    }
    if !m.problems.is_empty() {
        return Err(WeightsError::Mismatch {
            path: path.to_path_buf(),
            problems: m.problems,
        });
    }
    Ok(t)
}

/// Writes a teacher's weights as safetensors with `efficientnet_pytorch` names (what
/// `format = "safetensors"` reads back).
pub fn export_teacher_safetensors(t: &Teacher, path: &Path) -> Result<(), WeightsError> {
    let mut out: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut put = |name: String, t: Tensor<4>| {
        let dims = t.dims().to_vec();
        let v: Vec<f32> = t
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap_or_default();
        out.push((name, dims, v.iter().flat_map(|x| x.to_le_bytes()).collect()));
    };
    let put1 = |name: String, t: Tensor<1>, out: &mut Vec<(String, Vec<usize>, Vec<u8>)>| {
        let dims = t.dims().to_vec();
        let v: Vec<f32> = t
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap_or_default();
        out.push((name, dims, v.iter().flat_map(|x| x.to_le_bytes()).collect()));
    };
    let mut convs: Vec<(String, &ConvBn, String)> =
        vec![("_conv_stem".into(), &t.stem, "_bn0".into())];
    let mut i = 0;
    for stage in &t.stages {
        for l in stage {
            let p = format!("_blocks.{i}");
            if let Some(e) = &l.expand {
                convs.push((format!("{p}._expand_conv"), e, format!("{p}._bn0")));
            }
            convs.push((
                format!("{p}._depthwise_conv"),
                &l.depthwise,
                format!("{p}._bn1"),
            ));
            convs.push((
                format!("{p}._project_conv"),
                &l.project,
                format!("{p}._bn2"),
            ));
            i += 1;
        }
    }
    convs.push(("_conv_head".into(), &t.head, "_bn1".into()));
    let mut ones: Vec<(String, Tensor<1>)> = Vec::new();
    for (conv, c, bn) in &convs {
        put(format!("{conv}.weight"), c.conv.weight.val());
        ones.push((format!("{bn}.weight"), c.bn.gamma.val()));
        ones.push((format!("{bn}.bias"), c.bn.beta.val()));
        ones.push((format!("{bn}.running_mean"), c.bn.running_mean.value_sync()));
        ones.push((format!("{bn}.running_var"), c.bn.running_var.value_sync()));
    }
    if let Some(b) = &t.fc.bias {
        ones.push(("_fc.bias".into(), b.val()));
    }
    let fc: Tensor<2> = t.fc.weight.val().transpose();
    let fc_dims = fc.dims().to_vec();
    let fc_v: Vec<f32> = fc
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_default();
    out.push((
        "_fc.weight".into(),
        fc_dims,
        fc_v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    ));
    for (n, t) in ones {
        put1(n, t, &mut out);
    }
    write_safetensors(&out, path)
}
