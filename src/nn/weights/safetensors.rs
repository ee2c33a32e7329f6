//! safetensors: reading f32 tensors, and writing any module's weights under their module paths.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use burn::module::Param;
use burn::tensor::Tensor;

use super::{RawTensor, WeightsError, read_weights};

/// Reads every f32 tensor of a safetensors file.
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, RawTensor>, WeightsError> {
    let (bytes, fail) = read_weights(path)?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| fail(format!("is not a valid safetensors file: {e}")))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let bytes = view.data();
        let values: Vec<f32> = match view.dtype() {
            safetensors::Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            safetensors::Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes(c.try_into().unwrap()).to_f32())
                .collect(),
            safetensors::Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes(c.try_into().unwrap()).to_f32())
                .collect(),
            // Integer tensors are counters, not weights (BatchNorm's `num_batches_tracked`).
            safetensors::Dtype::I64 | safetensors::Dtype::I32 => continue,
            other => {
                return Err(fail(format!(
                    "tensor `{name}` is {other:?}; dnarun reads f32, f16 and bf16 weights"
                )));
            }
        };
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

/// Writes named f32 tensors (name, shape, little-endian bytes) as safetensors, atomically.
pub(super) fn write_safetensors(
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
    // The temp name is unique per process: block tasks running at once may export one teacher.
    crate::atomic::write(path, &bytes).map_err(|e| fail(format!("cannot be written: {e}")))
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
