//! Opening the devices a plan names, with a clear error (not a panic) when one cannot be used.

use burn::tensor::Device;

use crate::error::RunError;
use crate::plan::DeviceSpec;

/// Opens a device, failing with a clear message when this build or this machine cannot use it.
pub fn open_device(spec: &DeviceSpec) -> Result<Device, RunError> {
    match spec {
        DeviceSpec::Cpu => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(i) => probe(spec, || Device::cuda(*i)),
        #[cfg(feature = "wgpu")]
        DeviceSpec::Wgpu(i) => probe(spec, || {
            Device::wgpu(burn::tensor::DeviceKind::DiscreteGpu(*i))
        }),
        #[allow(unreachable_patterns)]
        other => {
            let (name, feature) = if matches!(other, DeviceSpec::Cuda(_)) {
                ("CUDA", "cuda")
            } else {
                ("wgpu", "wgpu")
            };
            Err(RunError::Device(format!(
                "`runtime.devices` asks for `{other}`, but this dnarun was built without {name}; rebuild with `cargo build --release --features {feature}` or use `cpu`"
            )))
        }
    }
}

/// Opens a device and runs a tiny computation on it, turning a backend panic into an error.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn probe(
    spec: &DeviceSpec,
    make: impl Fn() -> Device + std::panic::UnwindSafe,
) -> Result<Device, RunError> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(move || {
        let d = make();
        let t = burn::tensor::Tensor::<1>::ones([4], &d);
        let _ = t.sum().into_data();
        d
    });
    std::panic::set_hook(hook);
    r.map_err(|e| {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        RunError::Device(format!(
            "the device `{spec}` in `runtime.devices` cannot be used ({msg}); check the driver, or use `cpu`"
        ))
    })
}

/// Opens every device of `devices` once, so that a missing one is reported before any work.
pub fn check_devices(devices: &[DeviceSpec]) -> Result<(), RunError> {
    for (i, d) in devices.iter().enumerate() {
        if !devices[..i].contains(d) {
            open_device(d)?;
        }
    }
    Ok(())
}
