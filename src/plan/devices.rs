//! The devices resolved: `runtime.devices` parsed, and which device computes which block.

use serde::{Deserialize, Serialize};

use super::problems::Problems;
use crate::recipe::Runtime;

/// A compute device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceSpec {
    /// The CPU (Burn's flex backend).
    Cpu,
    /// CUDA device N.
    Cuda(usize),
    /// wgpu device N.
    Wgpu(usize),
}

impl DeviceSpec {
    /// Parses `cpu`, `cuda:N`, `wgpu:N`.
    pub fn parse(s: &str) -> Result<DeviceSpec, String> {
        let s = s.trim();
        if s == "cpu" {
            return Ok(DeviceSpec::Cpu);
        }
        let (kind, idx) = s.split_once(':').unwrap_or((s, "0"));
        let idx: usize = idx
            .parse()
            .map_err(|_| format!("`{s}`: `{idx}` is not a device index"))?;
        match kind {
            "cuda" => Ok(DeviceSpec::Cuda(idx)),
            "wgpu" => Ok(DeviceSpec::Wgpu(idx)),
            _ => Err(format!(
                "`{s}` is not a device: write `cpu`, `cuda:N` or `wgpu:N`"
            )),
        }
    }
}

/// The backends compiled into this build, as `--version` lists them.
pub const BACKENDS: &[(&str, bool)] = &[
    ("cpu", true),
    ("wgpu", cfg!(feature = "wgpu")),
    ("cuda", cfg!(feature = "cuda")),
];

/// `cpu, wgpu`: the backends this build has.
pub fn compiled_backends() -> String {
    BACKENDS
        .iter()
        .filter(|b| b.1)
        .map(|b| b.0)
        .collect::<Vec<_>>()
        .join(", ")
}

impl DeviceSpec {
    /// The backend's name and the crate feature that compiles it in, when this build lacks it.
    pub fn missing_backend(&self) -> Option<(&'static str, &'static str)> {
        match self {
            DeviceSpec::Cpu => None,
            DeviceSpec::Cuda(_) => (!cfg!(feature = "cuda")).then_some(("CUDA", "cuda")),
            DeviceSpec::Wgpu(_) => (!cfg!(feature = "wgpu")).then_some(("wgpu", "wgpu")),
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
            DeviceSpec::Wgpu(i) => write!(f, "wgpu:{i}"),
        }
    }
}

/// The devices of a run, in the order the recipe lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Devices {
    /// Every device.
    pub list: Vec<DeviceSpec>,
}

impl Devices {
    /// How many.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none (never, in a resolved plan).
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The index of the device that computes block `i`: blocks go round-robin.
    pub fn device_of_block(&self, i: usize) -> usize {
        i % self.list.len()
    }

    /// The blocks device `k` computes, of `n`.
    pub fn blocks_of(&self, k: usize, n: usize) -> Vec<usize> {
        (0..n).filter(|&i| self.device_of_block(i) == k).collect()
    }

    /// What `dnarun plan` shows for block `i`: the device, and the worker when there are several.
    pub fn label_of_block(&self, i: usize) -> String {
        let k = self.device_of_block(i);
        if self.list.len() > 1 {
            format!("{} (worker {k})", self.list[k])
        } else {
            self.list[k].to_string()
        }
    }
}

pub(super) fn resolve(rt: &Runtime, p: &mut Problems) -> Devices {
    // Devices.
    let mut devices = Vec::new();
    for (i, d) in rt.devices.iter().enumerate() {
        match DeviceSpec::parse(d) {
            Ok(d) => {
                if let Some((backend, feature)) = d.missing_backend() {
                    p.err(
                        &format!("/runtime/devices/{i}"),
                        format!(
                            "`runtime.devices[{i}]` is `{d}`, but this dnarun was built without {backend} (it has {})",
                            compiled_backends()
                        ),
                        Some(format!(
                            "rebuild with `cargo build --release --features {feature}`, or use `cpu`"
                        )),
                    );
                }
                devices.push(d)
            }
            Err(m) => p.err(
                &format!("/runtime/devices/{i}"),
                format!("`runtime.devices[{i}]`: {m}"),
                None,
            ),
        }
    }
    if rt.devices.is_empty() {
        p.err(
            "/runtime/devices",
            "`runtime.devices` is empty: name at least one device, e.g. `[\"cpu\"]`".into(),
            None,
        );
    }

    Devices { list: devices }
}
