//! Burn modules: layers, the teacher with its taps, the block supernet, the standalone student,
//! and weight import.

pub mod layers;
pub mod models;
pub mod torch;

pub use layers::{Bn, ConvBn, MbConv, Mode};
pub use models::{STUDENT_EPS, Student, SuperBlock, Teacher};
