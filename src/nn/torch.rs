//! Reading PyTorch's legacy (pre-zip) `torch.save` format without Python, and mapping an
//! `efficientnet_pytorch` state dict onto the teacher. The file is a sequence of pickles (magic
//! number, protocol, system info, the state dict whose tensors point at storages by key, the
//! list of storage keys) followed by each storage: a little-endian u64 element count and the raw
//! little-endian data. Loading is strict: a missing tensor, a wrong shape or a tensor the model
//! has no place for is an error that names it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};

use super::layers::{Bn, ConvBn, MbConv};
use super::models::Teacher;
use crate::plan::TeacherSpec;

/// A weights file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file cannot be read or is not in the expected format.
    #[error("weights file `{path}` {problem}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The tensors do not fit the teacher the recipe describes.
    #[error("weights file `{path}` does not fit the teacher the recipe describes:\n{}", .problems.join("\n"))]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// One line per tensor: key, expected and found shape.
        problems: Vec<String>,
    },
}

/// A pickled value (only what state dicts use; some payloads are parsed but never read).
#[derive(Debug, Clone)]
#[allow(dead_code)]
enum V {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<V>),
    Tuple(Vec<V>),
    Dict(Vec<(V, V)>),
    Global(String, String),
    Call(Box<V>, Box<V>),
    PersId(Box<V>),
    Mark,
}

impl V {
    fn as_str(&self) -> Option<&str> {
        match self {
            V::Str(s) => Some(s),
            _ => None,
        }
    }
    fn as_int(&self) -> Option<i64> {
        match self {
            V::Int(i) => Some(*i),
            _ => None,
        }
    }
    fn items(&self) -> Option<&[V]> {
        match self {
            V::Tuple(v) | V::List(v) => Some(v),
            _ => None,
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.pos + n > self.b.len() {
            return Err(format!(
                "is truncated: needed {n} more bytes at offset {}",
                self.pos
            ));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<usize, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()) as usize)
    }
    fn u32(&mut self) -> Result<usize, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()) as usize)
    }
    fn line(&mut self) -> Result<String, String> {
        let start = self.pos;
        while self.u8()? != b'\n' {}
        Ok(String::from_utf8_lossy(&self.b[start..self.pos - 1]).into_owned())
    }

    /// One pickle, up to its STOP.
    fn pickle(&mut self) -> Result<V, String> {
        let mut stack: Vec<V> = Vec::new();
        let mut memo: HashMap<usize, V> = HashMap::new();
        let pop = |stack: &mut Vec<V>| {
            stack
                .pop()
                .ok_or_else(|| "has a malformed pickle (stack underflow)".to_string())
        };
        let pop_mark = |stack: &mut Vec<V>| -> Result<Vec<V>, String> {
            let at = stack
                .iter()
                .rposition(|v| matches!(v, V::Mark))
                .ok_or("has a malformed pickle (no mark)")?;
            let items = stack.split_off(at + 1);
            stack.pop();
            Ok(items)
        };
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?;
                }
                0x95 => {
                    self.take(8)?;
                }
                b'.' => return pop(&mut stack),
                b'(' => stack.push(V::Mark),
                b'N' => stack.push(V::None),
                0x88 => stack.push(V::Bool(true)),
                0x89 => stack.push(V::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.take(4)?.try_into().unwrap());
                    stack.push(V::Int(v as i64));
                }
                b'K' => {
                    let v = self.u8()?;
                    stack.push(V::Int(v as i64));
                }
                b'M' => {
                    let v = self.u16()?;
                    stack.push(V::Int(v as i64));
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let bytes = self.take(n)?;
                    let mut v: i128 = 0;
                    for (i, b) in bytes.iter().enumerate().take(16) {
                        v |= (*b as i128) << (8 * i);
                    }
                    if n > 0 && n < 16 && bytes[n - 1] & 0x80 != 0 {
                        v -= 1i128 << (8 * n);
                    }
                    stack.push(V::Int(v as i64));
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                    stack.push(V::Float(v));
                }
                b'X' => {
                    let n = self.u32()?;
                    stack.push(V::Str(String::from_utf8_lossy(self.take(n)?).into_owned()));
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    stack.push(V::Str(String::from_utf8_lossy(self.take(n)?).into_owned()));
                }
                b'T' => {
                    let n = self.u32()?;
                    stack.push(V::Str(String::from_utf8_lossy(self.take(n)?).into_owned()));
                }
                b'U' => {
                    let n = self.u8()? as usize;
                    stack.push(V::Str(String::from_utf8_lossy(self.take(n)?).into_owned()));
                }
                b'B' => {
                    let n = self.u32()?;
                    stack.push(V::Bytes(self.take(n)?.to_vec()));
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    stack.push(V::Bytes(self.take(n)?.to_vec()));
                }
                b'}' => stack.push(V::Dict(Vec::new())),
                b']' => stack.push(V::List(Vec::new())),
                b')' => stack.push(V::Tuple(Vec::new())),
                b't' => {
                    let items = pop_mark(&mut stack)?;
                    stack.push(V::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if stack.len() < n {
                        return Err("has a malformed pickle (stack underflow)".into());
                    }
                    let items = stack.split_off(stack.len() - n);
                    stack.push(V::Tuple(items));
                }
                b'q' => {
                    let i = self.u8()? as usize;
                    memo.insert(i, stack.last().cloned().unwrap_or(V::None));
                }
                b'r' => {
                    let i = self.u32()?;
                    memo.insert(i, stack.last().cloned().unwrap_or(V::None));
                }
                0x94 => {
                    let i = memo.len();
                    memo.insert(i, stack.last().cloned().unwrap_or(V::None));
                }
                b'h' => {
                    let i = self.u8()? as usize;
                    stack.push(
                        memo.get(&i)
                            .cloned()
                            .ok_or("has a malformed pickle (memo)")?,
                    );
                }
                b'j' => {
                    let i = self.u32()?;
                    stack.push(
                        memo.get(&i)
                            .cloned()
                            .ok_or("has a malformed pickle (memo)")?,
                    );
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    stack.push(V::Global(module, name));
                }
                0x93 => {
                    let name = pop(&mut stack)?;
                    let module = pop(&mut stack)?;
                    stack.push(V::Global(
                        module.as_str().unwrap_or_default().into(),
                        name.as_str().unwrap_or_default().into(),
                    ));
                }
                b'R' | 0x81 => {
                    let args = pop(&mut stack)?;
                    let f = pop(&mut stack)?;
                    // An OrderedDict() is filled by SETITEMS afterwards: make it a dict now.
                    let v = match &f {
                        V::Global(m, n) if m == "collections" && n == "OrderedDict" => {
                            V::Dict(Vec::new())
                        }
                        _ => V::Call(Box::new(f), Box::new(args)),
                    };
                    stack.push(v);
                }
                b'b' => {
                    pop(&mut stack)?; // state set on an object: not needed
                }
                b'Q' => {
                    let pid = pop(&mut stack)?;
                    stack.push(V::PersId(Box::new(pid)));
                }
                b's' => {
                    let v = pop(&mut stack)?;
                    let k = pop(&mut stack)?;
                    if let Some(V::Dict(d)) = stack.last_mut() {
                        d.push((k, v));
                    }
                }
                b'u' => {
                    let items = pop_mark(&mut stack)?;
                    if let Some(V::Dict(d)) = stack.last_mut() {
                        let mut it = items.into_iter();
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            d.push((k, v));
                        }
                    }
                }
                b'a' => {
                    let v = pop(&mut stack)?;
                    if let Some(V::List(l)) = stack.last_mut() {
                        l.push(v);
                    }
                }
                b'e' => {
                    let items = pop_mark(&mut stack)?;
                    if let Some(V::List(l)) = stack.last_mut() {
                        l.extend(items);
                    }
                }
                other => {
                    return Err(format!(
                        "uses pickle opcode 0x{other:02x} at offset {}, which a legacy torch file does not",
                        self.pos - 1
                    ));
                }
            }
        }
    }
}

/// A tensor read from a file: shape and f32 values.
#[derive(Debug, Clone)]
pub struct RawTensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub values: Vec<f32>,
}

/// A weights file's bytes, and the error constructor naming that file.
fn read_weights(path: &Path) -> Result<(Vec<u8>, impl Fn(String) -> WeightsError), WeightsError> {
    let fail = |problem: String| WeightsError::Format {
        path: path.to_path_buf(),
        problem,
    };
    let bytes = std::fs::read(path).map_err(|e| {
        fail(format!(
            "cannot be read: {e}; check `teacher.weights.path` (relative to the recipe)"
        ))
    })?;
    Ok((bytes, fail))
}

/// Reads every tensor of a legacy `torch.save` state dict.
pub fn read_legacy(path: &Path) -> Result<BTreeMap<String, RawTensor>, WeightsError> {
    let (bytes, fail) = read_weights(path)?;
    if bytes.starts_with(b"PK") {
        return Err(fail("is a zip-format torch file; dnarun reads the legacy format (`torch.save(..., _use_new_zipfile_serialization=False)`)".into()));
    }
    let mut r = Reader { b: &bytes, pos: 0 };
    let magic = r.pickle().map_err(&fail)?;
    if !matches!(magic, V::Int(_)) {
        return Err(fail("is not a legacy torch file (no magic number)".into()));
    }
    r.pickle().map_err(&fail)?; // protocol version
    r.pickle().map_err(&fail)?; // system info
    let dict = r.pickle().map_err(&fail)?;
    let keys = r.pickle().map_err(&fail)?;
    let V::Dict(entries) = dict else {
        return Err(fail("does not hold a state dict".into()));
    };
    // Storage key -> (element size, data).
    let mut storage_types: HashMap<String, (String, usize)> = HashMap::new();
    let mut tensors = Vec::new();
    for (k, v) in &entries {
        let name = k
            .as_str()
            .ok_or_else(|| fail("has a state dict key that is not a string".into()))?
            .to_string();
        let V::Call(f, args) = v else { continue };
        if !matches!(&**f, V::Global(_, n) if n == "_rebuild_tensor_v2" || n == "_rebuild_tensor") {
            continue;
        }
        let args = args
            .items()
            .ok_or_else(|| fail(format!("tensor `{name}` is malformed")))?;
        let V::PersId(pid) = &args[0] else {
            return Err(fail(format!("tensor `{name}` has no storage")));
        };
        let pid = pid
            .items()
            .ok_or_else(|| fail(format!("tensor `{name}` has a malformed storage id")))?;
        let ty = match &pid[1] {
            V::Global(_, n) => n.clone(),
            _ => String::new(),
        };
        let key = pid[2].as_str().unwrap_or_default().to_string();
        let offset = args[1].as_int().unwrap_or(0) as usize;
        let shape: Vec<usize> = args[2]
            .items()
            .unwrap_or(&[])
            .iter()
            .filter_map(V::as_int)
            .map(|x| x as usize)
            .collect();
        let strides: Vec<usize> = args[3]
            .items()
            .unwrap_or(&[])
            .iter()
            .filter_map(V::as_int)
            .map(|x| x as usize)
            .collect();
        let size = match ty.as_str() {
            "FloatStorage" | "IntStorage" => 4,
            "LongStorage" | "DoubleStorage" => 8,
            "HalfStorage" | "BFloat16Storage" | "ShortStorage" => 2,
            _ => 1,
        };
        storage_types.insert(key.clone(), (ty.clone(), size));
        tensors.push((name, key, ty, offset, shape, strides));
    }
    let order: Vec<String> = keys
        .items()
        .unwrap_or(&[])
        .iter()
        .filter_map(|k| k.as_str().map(String::from))
        .collect();
    let mut storages: HashMap<String, &[u8]> = HashMap::new();
    for key in &order {
        let head = r
            .take(8)
            .map_err(|p| fail(format!("{p} (storage `{key}`)")))?;
        let numel = u64::from_le_bytes(head.try_into().unwrap()) as usize;
        let size = storage_types.get(key).map(|t| t.1).unwrap_or(4);
        let data = r
            .take(numel * size)
            .map_err(|p| fail(format!("{p} (storage `{key}` of {numel} elements)")))?;
        storages.insert(key.clone(), data);
    }
    let mut out = BTreeMap::new();
    for (name, key, ty, offset, shape, strides) in tensors {
        if ty != "FloatStorage" {
            continue; // integer buffers (num_batches_tracked) are not weights
        }
        let data = storages.get(&key).ok_or_else(|| {
            fail(format!(
                "has no data for storage `{key}` of tensor `{name}`"
            ))
        })?;
        let numel: usize = shape.iter().product();
        let f32_at = |i: usize| -> Option<f32> {
            data.get(i * 4..i * 4 + 4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        };
        // Gather in row-major order through the strides (torch may store channels-last).
        let mut values = Vec::with_capacity(numel);
        let mut index = vec![0usize; shape.len()];
        for _ in 0..numel {
            let at = offset
                + index
                    .iter()
                    .zip(&strides)
                    .map(|(i, s)| i * s)
                    .sum::<usize>();
            values.push(
                f32_at(at)
                    .ok_or_else(|| fail(format!("tensor `{name}` lies outside its storage")))?,
            );
            for d in (0..shape.len()).rev() {
                index[d] += 1;
                if index[d] < shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        out.insert(name, RawTensor { shape, values });
    }
    Ok(out)
}

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

/// Reads every f32 tensor of a safetensors file.
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, RawTensor>, WeightsError> {
    let (bytes, fail) = read_weights(path)?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| fail(format!("is not a valid safetensors file: {e}")))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(fail(format!(
                "tensor `{name}` is {:?}; dnarun reads f32 weights",
                view.dtype()
            )));
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        out.insert(
            name,
            RawTensor {
                shape: view.shape().to_vec(),
                values,
            },
        );
    }
    Ok(out)
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

/// Writes named f32 tensors (name, shape, little-endian bytes) as safetensors, atomically.
fn write_safetensors(
    tensors: &[(String, Vec<usize>, Vec<u8>)],
    path: &Path,
) -> Result<(), WeightsError> {
    let fail = |problem: String| WeightsError::Format {
        path: path.to_path_buf(),
        problem,
    };
    let views = tensors
        .iter()
        .map(|(n, shape, bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|v| (n.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))?;
    let bytes = safetensors::serialize(views, None).map_err(|e| fail(e.to_string()))?;
    // Unique per process: block tasks running at once may export the same teacher.
    let tmp = path.with_extension(format!("safetensors.{}.tmp~", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| fail(format!("cannot be written: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| fail(format!("cannot be written: {e}")))
}

struct Collect {
    path: Vec<String>,
    out: Vec<(String, Vec<usize>, Vec<u8>)>,
}

impl burn::module::ModuleVisitor for Collect {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        let dims = t.dims().to_vec();
        let v: Vec<f32> = t
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap_or_default();
        self.out.push((
            self.path.join("."),
            dims,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ));
    }
}

/// Writes any module's weights (BatchNorm running statistics included) as safetensors, named by
/// their path in the module (`cells.0.layers.1.expand.conv.weight`).
pub fn export_safetensors<M: burn::module::Module>(
    module: &M,
    path: &Path,
) -> Result<(), WeightsError> {
    let mut c = Collect {
        path: Vec::new(),
        out: Vec::new(),
    };
    module.valid().visit(&mut c);
    let mut seen = BTreeSet::new();
    let unique: Vec<_> = c
        .out
        .into_iter()
        .filter(|(n, _, _)| seen.insert(n.clone()))
        .collect();
    write_safetensors(&unique, path)
}
