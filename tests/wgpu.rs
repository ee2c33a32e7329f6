//! The accelerator path, executed: with `--features wgpu` on the first wgpu adapter (Mesa's
//! software Vulkan driver, lavapipe, in CI: `scripts/test` installs it and runs
//! `cargo test --release --features wgpu --test wgpu`). Every GPU user's code path: devices
//! listed and opened, weights initialised on the host, Burn's operations under fusion and
//! autotune instead of dnarun's CPU kernels, the depthwise formulation for GPUs, and the tiny
//! recipe end to end, compared with the CPU.
#![cfg(feature = "wgpu")]

mod common;

use std::path::Path;
use std::process::Command;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Distribution, Tensor};
use common::{out_dir, plan, sets};
use dnarun::nn::device::open_device;
use dnarun::nn::{Mode, SuperBlock};
use dnarun::plan::DeviceSpec;

type Grads = burn::tensor::Gradients;

const BIN: &str = env!("CARGO_BIN_EXE_dnarun");

/// Tests that seed the host's (global) random generator run one at a time.
static HOST_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `wgpu:0`, opened once (opening probes the device with the panic hook swapped out).
fn gpu() -> Device {
    static GPU: std::sync::OnceLock<Device> = std::sync::OnceLock::new();
    GPU.get_or_init(|| open_device(&DeviceSpec::Wgpu(0)).unwrap_or_else(|e| panic!("{e}")))
        .clone()
}

struct Values(Vec<Vec<f32>>);

impl ModuleVisitor for Values {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push(dnarun::nn::read_back(param.val()));
    }
}

fn values<M: Module>(m: &M) -> Vec<Vec<f32>> {
    let mut v = Values(Vec::new());
    m.visit(&mut v);
    v.0
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    a.iter()
        .zip(b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs() / scale))
}

#[test]
fn devices_lists_the_software_adapter_and_a_missing_one_is_an_error() {
    let out = Command::new(BIN).arg("devices").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("cpu "), "{text}");
    assert!(text.contains("wgpu:0"), "{text}");
    let err = open_device(&DeviceSpec::Wgpu(99)).unwrap_err().to_string();
    assert!(
        err.contains("`wgpu:99`") && err.contains("`wgpu:0`") && err.contains("dnarun devices"),
        "{err}"
    );
}

#[test]
fn one_seed_gives_the_same_initial_weights_on_every_device() {
    let _rng = HOST_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let p = plan("tests/fixtures/tiny.toml", &[]);
    let build = |d: &Device| SuperBlock::new(&p.space, 1, d);
    let cpu = dnarun::nn::initialize(build, &Device::flex().autodiff(), 5);
    let gpu = dnarun::nn::initialize(build, &gpu().autodiff(), 5);
    let (a, b) = (values(&cpu), values(&gpu));
    assert_eq!(a.len(), b.len());
    assert!(a.iter().zip(&b).all(|(x, y)| x == y), "weights differ");
    let again = dnarun::nn::initialize(build, &Device::flex().autodiff(), 6);
    assert_ne!(values(&again), a, "the seed changes the weights");
}

/// The depthwise convolution GPU users run (Burn's forward and input gradient, the per-tap weight
/// gradient of `nn::gpu`) against Burn's grouped `conv2d` on the same wgpu device: outputs and
/// both gradients, every shape and padding the CPU kernels are tested on.
#[test]
fn the_gpu_depthwise_convolution_matches_burn_conv2d_and_its_gradients() {
    // Draws its inputs on the host too (the upstream gradients).
    let _rng = HOST_RNG.lock().unwrap_or_else(|e| e.into_inner());
    use dnarun::nn::cpu::{Depthwise, depthwise_on};
    assert_eq!(depthwise_on(&gpu().autodiff()), Depthwise::TapWeightGrad);
    common::depthwise_matches_burn(&gpu().autodiff());
}

/// A training step of a block supernet (every cell, every op: depthwise convolutions,
/// BatchNorm with batch statistics, squeeze-excitation, the activations) on the GPU, against
/// the CPU kernels: outputs and every parameter's gradient.
#[test]
fn a_supernet_step_on_the_gpu_matches_the_cpu_kernels() {
    let _rng = HOST_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let p = plan("tests/fixtures/tiny.toml", &[]);
    let mut grads_of = Vec::new();
    for device in [Device::flex(), gpu()] {
        let ad = device.clone().autodiff();
        let net = dnarun::nn::initialize(|d| SuperBlock::new(&p.space, 0, d), &ad, 9);
        // The same inputs on both devices: drawn on the host.
        let host = Device::flex();
        host.seed(4);
        let x = Tensor::<4>::random([4, 1, 16, 16], Distribution::Normal(0.0, 1.0), &host);
        let x = x.to_device(&ad);
        let mut outs = Vec::new();
        let mut loss: Option<Tensor<1>> = None;
        {
            for path in p.space.blocks[0].paths() {
                let y = net.forward(&path, x.clone(), Mode::TRAIN);
                outs.push(dnarun::nn::read_back(y.clone().inner()));
                let l = (y.clone() * y).mean().reshape([1]);
                loss = Some(match loss {
                    Some(s) => s + l,
                    None => l,
                });
            }
        }
        let grads = loss.unwrap().backward();
        let g: Vec<Vec<f32>> = {
            struct G<'a>(&'a Grads, Vec<Vec<f32>>);
            impl ModuleVisitor for G<'_> {
                fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                    if let Some(g) = param.val().grad(self.0) {
                        self.1.push(dnarun::nn::read_back(g));
                    }
                }
            }
            let mut v = G(&grads, Vec::new());
            net.visit(&mut v);
            v.1
        };
        grads_of.push((outs, g));
    }
    let (cpu, gpu) = (&grads_of[0], &grads_of[1]);
    for (a, b) in cpu.0.iter().zip(&gpu.0) {
        let d = max_rel_diff(a, b);
        assert!(d < 1e-4, "outputs differ by {d}");
    }
    assert_eq!(cpu.1.len(), gpu.1.len());
    assert!(!cpu.1.is_empty());
    // Relative to each gradient's largest value, plus an absolute floor: some gradients are zero
    // in exact arithmetic (a BatchNorm shift followed by another BatchNorm) and hold only
    // rounding noise of about 1e-9 on either device.
    for (i, (a, b)) in cpu.1.iter().zip(&gpu.1).enumerate() {
        let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
        let worst = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            worst <= 1e-3 * scale + 1e-6,
            "parameter {i}: gradients differ by {worst} (largest {scale})"
        );
    }
}

fn ratings(run_dir: &Path, block: usize) -> Vec<(String, f64)> {
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run_dir.join(format!("rate/block{block}.json"))).unwrap(),
    )
    .unwrap();
    v["ratings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap().to_string(),
                r["rating"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// The tiny recipe end to end on `wgpu:0` and on the CPU, same seed. Autotuning runs at its
/// `minimal` level here: on a software rasteriser every candidate kernel is compiled by LLVM and
/// timed on the CPU, which took the run from 2.3 to 5.3 minutes while tuning nothing real. Float sums run in other
/// orders on the two devices (GPU reductions are parallel trees; the CPU kernels sum in fixed
/// loops), and three epochs of Adam carry those last-bit differences into the weights, so the
/// ratings agree closely, not bit for bit (measured here: at most 0.001 % apart). Tolerance:
/// every rating within 0.5 % of the CPU's, and each block's three best paths in the same order.
#[test]
fn the_tiny_recipe_runs_end_to_end_on_the_gpu_and_agrees_with_the_cpu() {
    let mut dirs = Vec::new();
    for device in ["cpu", "wgpu:0"] {
        let dir = out_dir("wgpu", &device.replace(':', ""));
        let mut a = vec!["run".to_string(), "tests/fixtures/tiny.toml".into()];
        a.extend(sets(&dir, &[&format!("runtime.devices=[\"{device}\"]")]));
        let out = Command::new(BIN)
            .args(&a)
            .env("CUBECL_AUTOTUNE_LEVEL", "minimal")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dnarun on {device} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dirs.push(dir.join("tiny-001"));
    }
    let lock = std::fs::read_to_string(dirs[1].join("dnarun.lock")).unwrap();
    assert!(lock.contains("device = \"wgpu:0\""), "{lock}");
    for block in 0..2 {
        let (cpu, gpu) = (ratings(&dirs[0], block), ratings(&dirs[1], block));
        assert_eq!(cpu.len(), gpu.len());
        let mut worst = 0f64;
        for ((pa, ra), (pb, rb)) in cpu.iter().zip(&gpu) {
            assert_eq!(pa, pb);
            worst = worst.max((ra - rb).abs() / ra.abs());
        }
        eprintln!(
            "block {block}: ratings differ by at most {:.3} %",
            worst * 100.0
        );
        assert!(worst < 0.005, "block {block}: ratings differ by {worst}");
        let top = |r: &[(String, f64)]| {
            let mut v = r.to_vec();
            v.sort_by(|a, b| a.1.total_cmp(&b.1));
            v.into_iter().take(3).map(|p| p.0).collect::<Vec<_>>()
        };
        assert_eq!(top(&cpu), top(&gpu), "block {block}: the best paths");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dirs[1].join("report.json")).unwrap())
            .unwrap();
    let cpu_report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dirs[0].join("report.json")).unwrap())
            .unwrap();
    let (a, b) = (
        cpu_report["teacher_accuracy"].as_f64().unwrap(),
        report["teacher_accuracy"].as_f64().unwrap(),
    );
    assert!(
        (a - b).abs() <= 0.02,
        "teacher accuracy {a} on the CPU, {b} on the GPU"
    );
}

/// A device that runs out of memory ends the command with one paragraph and exit code 2, not a
/// panic: lavapipe cannot allocate a 200 MB buffer, which the tiny recipe at 512 px needs.
#[test]
fn running_out_of_device_memory_is_a_clear_error() {
    let out = Command::new(BIN)
        .args([
            "plan",
            "tests/fixtures/tiny.toml",
            "--measure",
            "--device",
            "wgpu:0",
        ])
        .args(["--measure-batch", "64", "--set", "data.image_size=512"])
        .args([
            "--set",
            r#"teacher.taps=[{ name = "t1", stage = 1 }, { name = "t2", stage = 2 }]"#,
        ])
        .args(["--set", "search.max_mflops=120"])
        .env("CUBECL_AUTOTUNE_LEVEL", "minimal")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("error: the device failed while computing (can't allocate buffer")
            && err.contains("lower `data.batch_size`"),
        "{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}
