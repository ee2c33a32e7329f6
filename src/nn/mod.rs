//! Burn modules: layers, the teacher with its taps, the block supernet, the standalone student,
//! and weight import.

pub mod cpu;
pub mod device;
pub mod gpu;
pub mod layers;
pub mod models;
pub mod onnx;
pub mod timing;
pub mod weights;

pub use layers::{Bn, ConvBn, ConvBnConfig, MbConv, Mode};
pub use models::{STUDENT_EPS, Student, SuperBlock, Teacher};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};

thread_local! {
    /// Device-to-host reads made by this thread (each waits for the device to finish what was
    /// queued): rating reads once per cell, training once every 16 steps and per epoch.
    static HOST_READS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many device-to-host reads this thread has made.
pub fn host_reads() -> usize {
    HOST_READS.with(std::cell::Cell::get)
}

/// Reads a tensor back to the host as f32 values, counting the read.
pub fn read_back<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    HOST_READS.with(|c| c.set(c.get() + 1));
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_default()
}

/// Trainable values of a module built on an autodiff device: its parameters, not BatchNorm's
/// running statistics (which Burn's `num_params` also counts and published counts leave out).
pub fn trainable_params<M: Module>(m: &M) -> usize {
    struct Count(usize);
    impl ModuleVisitor for Count {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            // A parameter not yet initialised is a fresh layer's weight (trainable); counting its
            // shape spares drawing its values (the 35 teachers of `dnarun teachers` in
            // milliseconds instead of seconds).
            if !p.is_initialized() {
                self.0 += p.lazy_shape().num_elements();
            } else if p.val().is_require_grad() {
                self.0 += p.shape().num_elements();
            }
        }
    }
    let mut c = Count(0);
    m.visit(&mut c);
    c.0
}

struct Touch;

impl ModuleVisitor for Touch {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
}

/// Builds a module and initialises every parameter now, on the host from `seed`, then moves it to
/// `device` (which carries the autodiff setting the module is built for). Burn initialises
/// parameters lazily from the generator of the device they live on, so without this the values
/// would depend on what ran before and on the device; with it a run (and a resumed run) is
/// reproducible and one seed gives the same initial weights on every device.
pub fn initialize<M: Module>(build: impl FnOnce(&Device) -> M, device: &Device, seed: u64) -> M {
    let host = Device::flex();
    host.seed(seed);
    let on_host = if device.is_autodiff() {
        host.autodiff()
    } else {
        host
    };
    let module = build(&on_host);
    module.visit(&mut Touch);
    if on_host == *device {
        module
    } else {
        module.fork(device)
    }
}
