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

/// foolbox's 20 ImageNet photos (`imagenet_NN_<label>.jpg`) in `folder`, sorted by name.
pub fn imagenet_photos(folder: &Path) -> Vec<PathBuf> {
    let mut photos: Vec<PathBuf> = std::fs::read_dir(folder)
        .unwrap_or_else(|e| panic!("the foolbox photo folder {}: {e}", folder.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("imagenet_")
        })
        .collect();
    photos.sort();
    photos
}

/// foolbox's data folder, from `DNARUN_TEST_FOOLBOX` (set by `scripts/test`).
pub fn foolbox() -> PathBuf {
    std::env::var_os("DNARUN_TEST_FOOLBOX")
        .expect("DNARUN_TEST_FOOLBOX must be set: run the suite with `scripts/test`")
        .into()
}

/// Every file under `dir`, recursively (none when it does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
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

/// Depthwise shapes the kernel tests cover: `(n, c, h, w, k, stride)`, odd and even sizes, 3/5/7
/// kernels, one channel.
pub const DEPTHWISE_CASES: [(usize, usize, usize, usize, usize, usize); 6] = [
    (2, 8, 14, 14, 3, 1),
    (3, 5, 9, 7, 5, 2),
    (2, 4, 8, 8, 3, 2),
    (1, 6, 7, 11, 7, 1),
    (2, 1, 6, 6, 3, 1),
    (2, 3, 4, 4, 5, 2),
];

/// The largest absolute difference of two equally shaped tensors.
pub fn max_abs_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
    let (a, b) = (
        a.into_data().try_to_vec::<f32>().unwrap(),
        b.into_data().try_to_vec::<f32>().unwrap(),
    );
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// `dnarun::nn::cpu::depthwise_conv2d` (whatever formulation runs on `device`, an autodiff
/// device) against Burn's grouped `conv2d` on the same device: the output and both gradients,
/// for every case in [`DEPTHWISE_CASES`] with TensorFlow's "same" and PyTorch's symmetric
/// padding.
pub fn depthwise_matches_burn(device: &Device) {
    use dnarun::nn::cpu::{depthwise_conv2d, reference_depthwise_conv2d};
    use dnarun::space::Padding;
    for pad in [Padding::Same, Padding::Symmetric] {
        for (n, c, h, w, k, s) in DEPTHWISE_CASES {
            let case = format!("n{n} c{c} {h}x{w} k{k} s{s} {pad:?}");
            let x = random([n, c, h, w], device).require_grad();
            let wt = random([c, 1, k, k], device).require_grad();
            let ours = depthwise_conv2d(x.clone(), wt.clone(), s, pad);
            let xr = x.clone().detach().require_grad();
            let wr = wt.clone().detach().require_grad();
            let reference = reference_depthwise_conv2d(xr.clone(), wr.clone(), s, pad);
            assert_eq!(ours.dims(), reference.dims(), "{case}");
            assert_eq!(ours.dims()[2], h.div_ceil(s), "{case}");
            // A random upstream gradient, the same for both.
            let up = random(ours.dims(), &Device::flex());
            let up = Tensor::<4>::from_data(up.into_data(), device);
            let out = max_abs_diff(ours.clone(), reference.clone());
            assert!(out < 1e-4, "output {case}: {out}");
            let g1 = (ours * up.clone()).sum().backward();
            let g2 = (reference * up).sum().backward();
            let dx = max_abs_diff(x.grad(&g1).unwrap(), xr.grad(&g2).unwrap());
            let dw = max_abs_diff(wt.grad(&g1).unwrap(), wr.grad(&g2).unwrap());
            assert!(dx < 1e-4, "input gradient {case}: {dx}");
            assert!(dw < 1e-3, "weight gradient {case}: {dw}");
        }
    }
}
