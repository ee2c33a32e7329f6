//! Weights files: PyTorch's pickle formats (`pickle`), safetensors (`safetensors`), and the
//! checkpoint layouts (`efficientnet_pytorch`, timm, torchvision) mapped onto the teacher
//! (`layout`). Loading is strict: a missing tensor, a wrong shape or a tensor the model has no
//! place for is an error that names it and the closest key on the other side.

mod layout;
mod pickle;
mod safetensors;

use std::path::{Path, PathBuf};

pub use layout::{
    export_teacher_safetensors, load_teacher, load_teacher_safetensors, teacher_keys,
};
pub use pickle::{PickleError, read_legacy};
pub use safetensors::{export_safetensors, read_safetensors};

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
    /// A torch file whose contents are malformed.
    #[error("weights file `{path}` {problem}")]
    Torch {
        /// The file.
        path: PathBuf,
        /// What is wrong inside it.
        problem: pickle::PickleError,
    },
    /// The tensors do not fit the teacher the recipe describes.
    #[error("weights file `{path}` does not fit the teacher the recipe describes (names read in the `{layout}` layout; `teacher.weights.layout` chooses another):\n{}", .problems.join("\n"))]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The layout its names were read in.
        layout: &'static str,
        /// One line per tensor: key, expected and found shape.
        problems: Vec<String>,
    },
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

/// Reads a teacher's weights file as the teacher stage will, on the CPU, and drops the teacher:
/// a missing, unreadable or mismatched file (header, tensor names, shapes) is found by `validate`,
/// `plan` and before a run creates anything, not in the teacher stage. A Burn record (a teacher
/// dnarun trained) is checked for existence only.
pub fn check_teacher(
    path: &Path,
    format: crate::plan::WeightFormat,
    spec: &crate::plan::TeacherSpec,
    channels: usize,
    classes: usize,
) -> Result<(), WeightsError> {
    use crate::plan::WeightFormat;
    let device = burn::tensor::Device::flex();
    match format {
        WeightFormat::Torch | WeightFormat::TorchLegacy => {
            load_teacher(path, spec, channels, classes, &device).map(drop)
        }
        WeightFormat::Safetensors => {
            load_teacher_safetensors(path, spec, channels, classes, &device).map(drop)
        }
        WeightFormat::Burn if path.is_file() => Ok(()),
        WeightFormat::Burn => Err(WeightsError::Format {
            path: path.to_path_buf(),
            problem: "does not exist; check `teacher.weights.path` (relative to the recipe)".into(),
        }),
    }
}
