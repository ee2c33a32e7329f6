//! Burn modules: layers, the teacher with its taps, the block supernet, the standalone student,
//! and weight import.

pub mod cpu;
pub mod device;
pub mod layers;
pub mod models;
pub mod weights;

pub use layers::{Bn, ConvBn, ConvBnConfig, MbConv, Mode};
pub use models::{STUDENT_EPS, Student, SuperBlock, Teacher};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};

struct Touch;

impl ModuleVisitor for Touch {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
}

/// Initialises every parameter of a freshly built module now, from `seed`. Burn initialises
/// parameters lazily from a global generator, so without this the values would depend on what
/// ran before; with it a run (and a resumed run) is reproducible.
pub fn initialize<M: Module>(module: M, device: &Device, seed: u64) -> M {
    device.clone().inner().seed(seed);
    module.visit(&mut Touch);
    module
}
