//! Opening the devices a plan names, with a clear error (not a panic) when one cannot be used,
//! and listing the devices this build can open (`dnarun devices`).
//!
//! `wgpu:N` is the N-th adapter wgpu offers in this order: discrete GPUs, integrated GPUs,
//! virtual GPUs, other adapters, then software rasterisers (Mesa's lavapipe), each kind in
//! wgpu's own order; a plain `wgpu` is `wgpu:0`. `cuda:N` is CUDA's device N.

use burn::tensor::Device;

use crate::plan::DeviceSpec;

/// A device this build can open.
#[derive(Debug, Clone)]
pub struct Listed {
    /// How a recipe names it (`cpu`, `wgpu:0`, `cuda:1`).
    pub spec: DeviceSpec,
    /// Its kind: `cpu`, `discrete GPU`, `integrated GPU`, `virtual GPU`, `other`, `software`.
    pub kind: &'static str,
    /// The name the driver gives it (empty where it gives none).
    pub name: String,
    device: Device,
}

/// The kind of a wgpu device and its place in the `wgpu:N` order, read from Burn's description
/// of the device (`DiscreteGpu(0)`, `IntegratedGpu(1)`, `Cpu`, ...).
#[cfg_attr(not(feature = "wgpu"), allow(dead_code))]
fn wgpu_kind(description: &str) -> (usize, &'static str) {
    [
        ("DiscreteGpu", "discrete GPU"),
        ("IntegratedGpu", "integrated GPU"),
        ("VirtualGpu", "virtual GPU"),
        ("Other", "other"),
        ("Cpu", "software"),
    ]
    .iter()
    .enumerate()
    .find(|(_, (key, _))| description.contains(key))
    .map_or((5, "unknown"), |(rank, (_, kind))| (rank, *kind))
}

/// Every device this build can open, in the order `wgpu:N` and `cuda:N` count them. Opens none;
/// `with_names` opens each GPU once to ask its name.
pub fn list(with_names: bool) -> Vec<Listed> {
    let mut out = vec![Listed {
        spec: DeviceSpec::Cpu,
        kind: "cpu",
        name: format!("{} threads", rayon::current_num_threads()),
        device: Device::flex(),
    }];
    #[cfg(feature = "wgpu")]
    {
        let mut found: Vec<(usize, &'static str, Device)> =
            Device::enumerate(burn::tensor::DeviceType::Wgpu)
                .into_iter()
                .map(|d| {
                    let (rank, kind) = wgpu_kind(&format!("{d:?}"));
                    (rank, kind, d)
                })
                .collect();
        found.sort_by_key(|(rank, _, _)| *rank);
        out.extend(
            found
                .into_iter()
                .enumerate()
                .map(|(i, (_, kind, device))| Listed {
                    spec: DeviceSpec::Wgpu(i),
                    kind,
                    name: String::new(),
                    device,
                }),
        );
    }
    #[cfg(feature = "cuda")]
    out.extend(
        Device::enumerate(burn::tensor::DeviceType::Cuda)
            .into_iter()
            .enumerate()
            .map(|(i, device)| Listed {
                spec: DeviceSpec::Cuda(i),
                kind: "CUDA GPU",
                name: String::new(),
                device,
            }),
    );
    if with_names {
        for l in out.iter_mut().filter(|l| l.spec != DeviceSpec::Cpu) {
            l.name = name_of(&l.device);
        }
    }
    out
}

#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn name_of(d: &Device) -> String {
    quietly(|| d.identity().map(|i| i.name).unwrap_or_default()).unwrap_or_default()
}

#[cfg(not(any(feature = "cuda", feature = "wgpu")))]
fn name_of(_: &Device) -> String {
    String::new()
}

/// What `dnarun devices` prints.
pub fn render(list: &[Listed]) -> String {
    let mut s = String::from("device   kind            name\n");
    for l in list {
        s += &format!("{:<8} {:<15} {}\n", l.spec.to_string(), l.kind, l.name);
    }
    let missing: Vec<&str> = [
        (
            cfg!(feature = "wgpu"),
            "`--features wgpu` (Vulkan, Metal, DX12)",
        ),
        (cfg!(feature = "cuda"), "`--features cuda` (NVIDIA)"),
    ]
    .into_iter()
    .filter(|m| !m.0)
    .map(|m| m.1)
    .collect();
    if !missing.is_empty() {
        s += &format!(
            "\nthis build has the backends: {}; for {} rebuild with `cargo build --release` and {}\n",
            crate::plan::compiled_backends(),
            if missing.len() == 2 {
                "GPUs"
            } else {
                "the others"
            },
            missing.join(" or ")
        );
    }
    if cfg!(any(feature = "cuda", feature = "wgpu")) && list.len() == 1 {
        s += "\nno GPU adapter found: check the driver (for wgpu: a Vulkan driver such as Mesa's, `vulkaninfo --summary`)\n";
    }
    s
}

/// Why a device cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The device's backend is not compiled into this build.
    #[error(
        "`runtime.devices` asks for `{device}`, but this dnarun was built without {backend}; rebuild with `cargo build --release --features {feature}` or use `cpu`"
    )]
    NotCompiled {
        /// The device asked for.
        device: String,
        /// The backend's name.
        backend: &'static str,
        /// The crate feature that compiles it in.
        feature: &'static str,
    },
    /// This machine has no such device.
    #[error(
        "the device `{device}` in `runtime.devices` does not exist on this machine ({}); `dnarun devices` lists what this build can open",
        if present.is_empty() {
            "no adapter of that backend was found: check the driver".to_string()
        } else {
            format!("it has {}", present.join(", "))
        }
    )]
    Missing {
        /// The device asked for.
        device: String,
        /// The devices of the same backend that exist.
        present: Vec<String>,
    },
    /// The device exists but fails a tiny computation.
    #[error(
        "the device `{device}` in `runtime.devices` cannot be used ({reason}); check the driver, or use `cpu`"
    )]
    Unusable {
        /// The device.
        device: String,
        /// What the backend said.
        reason: String,
    },
}

/// Opens a device, failing with a clear message when this build or this machine cannot use it.
pub fn open_device(spec: &DeviceSpec) -> Result<Device, DeviceError> {
    match spec {
        DeviceSpec::Cpu => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        DeviceSpec::Wgpu(_) => open_listed(spec),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(_) => open_listed(spec),
        #[allow(unreachable_patterns)]
        other => {
            let (name, feature) = if matches!(other, DeviceSpec::Cuda(_)) {
                ("CUDA", "cuda")
            } else {
                ("wgpu", "wgpu")
            };
            Err(DeviceError::NotCompiled {
                device: other.to_string(),
                backend: name,
                feature,
            })
        }
    }
}

/// Opens a listed GPU, or says which this machine has.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn open_listed(spec: &DeviceSpec) -> Result<Device, DeviceError> {
    let all = list(false);
    let found = all.iter().find(|l| l.spec == *spec).ok_or_else(|| {
        let same: Vec<String> = all
            .iter()
            .filter(|l| std::mem::discriminant(&l.spec) == std::mem::discriminant(spec))
            .map(|l| format!("`{}` ({})", l.spec, l.kind))
            .collect();
        DeviceError::Missing {
            device: spec.to_string(),
            present: same,
        }
    })?;
    probe(spec, found.device.clone())
}

/// Runs `f` with panics turned into `Err(message)` and the panic message kept off the terminal.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn quietly<T>(f: impl FnOnce() -> T + std::panic::UnwindSafe) -> Result<T, String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(f);
    std::panic::set_hook(hook);
    r.map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

/// Runs a tiny computation on a device, turning a backend panic into an error.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn probe(spec: &DeviceSpec, d: Device) -> Result<Device, DeviceError> {
    let probe = d.clone();
    quietly(move || {
        let t = burn::tensor::Tensor::<1>::ones([4], &probe);
        let _ = t.sum().into_data();
    })
    .map_err(|msg| DeviceError::Unusable {
        device: spec.to_string(),
        reason: msg,
    })?;
    Ok(d)
}

/// Opens every device of `devices` once, so that a missing one is reported before any work.
pub fn check_devices(devices: &[DeviceSpec]) -> Result<(), DeviceError> {
    for (i, d) in devices.iter().enumerate() {
        if !devices[..i].contains(d) {
            open_device(d)?;
        }
    }
    Ok(())
}

/// The reason in a Burn panic raised when a device failed while computing (out of device
/// memory, a lost device): the innermost `Caused by:` line of its message. `None` for any other
/// panic.
pub fn device_failure(message: &str) -> Option<String> {
    let device = message.contains("Error while reading data")
        || message.contains("An error happened during execution");
    if !device {
        return None;
    }
    let lines: Vec<&str> = message.lines().map(str::trim).collect();
    let reason = lines
        .iter()
        .enumerate()
        .rev()
        .find(|(i, l)| **l == "Caused by:" && lines.get(i + 1).is_some_and(|n| !n.is_empty()))
        .map(|(i, _)| lines[i + 1].to_string());
    Some(reason.unwrap_or_else(|| "the backend gave no reason".into()))
}

/// Makes a device failure during a command (Burn panics when a device runs out of memory or is
/// lost) end the process with one paragraph and exit code 2 instead of a panic and a backtrace;
/// the panics of failing autotune candidates (caught by cubecl's tuner) are logged at debug; other
/// panics keep Rust's report. What finished before is already saved atomically.
pub fn report_device_failures() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        // cubecl's autotuner tries candidate kernels that may not fit a shape on its device
        // thread; one that fails panics there and the tuner moves on to the next. Not a failure
        // of the run (were it one, the command's own thread reports it next).
        let tuner = info
            .location()
            .is_some_and(|l| l.file().contains("cubecl") && l.file().contains("tune"));
        if tuner && std::thread::current().name() != Some("main") {
            tracing::debug!("an autotune candidate failed: {message}");
            return;
        }
        match device_failure(message) {
            Some(reason) => {
                let memory = if reason.contains("allocate") || reason.contains("memory") {
                    " This is the device's memory: lower `data.batch_size` (or the stage's \
                     `batch_size`; `--measure-batch` for `dnarun plan --measure`), or run on a \
                     device with more memory."
                } else {
                    " Check the driver with `dnarun devices`, or run on `cpu`."
                };
                eprintln!(
                    "error: the device failed while computing ({reason}).{memory} What a run \
                     finished before (stages, checkpoints) is saved in its run directory."
                );
                std::process::exit(2);
            }
            None => default(info),
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::{device_failure, wgpu_kind};

    #[test]
    fn a_device_failure_is_told_by_its_innermost_cause() {
        // Burn 0.22.1's message when lavapipe could not allocate a batch's activation.
        let message = "Error while reading data: use `try_into_scalar` instead to catch the error \
            at runtime: Execution(An error happened during execution\nCaused by:\n  Several \
            failures at once\nCaused by:\n  The bytes were never written (failure #26894)\n  \
            skipped `ReduceKernel`: it needed memory\nCaused by:\n  An IO error happened\n\
            Caused by:\n  can't allocate buffer of size: 308281344\nNo backtrace available)";
        assert_eq!(
            device_failure(message).as_deref(),
            Some("can't allocate buffer of size: 308281344")
        );
        assert_eq!(device_failure("index out of bounds: the len is 3"), None);
    }

    #[test]
    fn wgpu_adapters_are_ordered_discrete_first_software_last() {
        let order: Vec<usize> = [
            "Wgpu(WgpuDevice { kind: Cpu })",
            "Wgpu(WgpuDevice { kind: IntegratedGpu(0) })",
            "Wgpu(WgpuDevice { kind: DiscreteGpu(1) })",
            "Wgpu(WgpuDevice { kind: VirtualGpu(0) })",
        ]
        .iter()
        .map(|d| wgpu_kind(d).0)
        .collect();
        assert_eq!(order, [4, 1, 0, 2]);
        assert_eq!(wgpu_kind("Cpu").1, "software");
    }
}
