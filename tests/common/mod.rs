//! Helpers shared by the test binaries and the benchmarks (`#[path]`-included by `examples/`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Distribution, Tensor};
use dnarun::plan::Plan;
use dnarun::recipe::{self, Overrides};

/// Loads and resolves a recipe with `--set` overrides (no environment), panicking with the
/// rendered diagnostics if it is invalid.
pub fn plan(path: &str, sets: &[&str]) -> Plan {
    let l = recipe::load(
        Path::new(path),
        &Overrides {
            sets: sets.iter().map(|s| s.to_string()).collect(),
            env: false,
        },
    )
    .unwrap_or_else(|d| panic!("{}", d.render()));
    Plan::resolve(&l).unwrap_or_else(|d| panic!("{}", d.render()))
}

/// A standard-normal tensor.
pub fn random(shape: [usize; 4], device: &Device) -> Tensor<4> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

/// A fresh, empty `target/<area>/<name>` directory.
pub fn out_dir(area: &str, name: &str) -> PathBuf {
    let d = std::env::current_dir()
        .unwrap()
        .join("target")
        .join(area)
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `--set` arguments that put a run's directory and its local MLflow store under `dir`, plus
/// `extra` overrides.
pub fn sets(dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        "--set".to_string(),
        format!("experiment.output_dir=\"{}\"", dir.display()),
        "--set".into(),
        format!("tracking.uri=\"file:{}/mlruns\"", dir.display()),
    ];
    for e in extra {
        v.push("--set".into());
        v.push(e.to_string());
    }
    v
}
