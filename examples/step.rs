//! Training-step benchmark on the CPU (issue 8), every line against a baseline measured in the
//! same run:
//! - the machine's practical peak: a 1024^3 f32 matmul on the same backend;
//! - (1) one MBConv block, 16 -> 96 -> 16 channels, depthwise 3x3, BN, ReLU6, batch 32 at
//!   32x32, MSE, Adam: forward / backward / optimizer split and GFLOP/s;
//! - (2) a 4-layer supernet cell (quickstart block 1, 4 ops per layer) at batch 32, a random path
//!   each step, as distillation trains it;
//!
//! - (3) the depthwise convolution alone, forward + both gradients, at the shapes of the paper's
//!   search space (ImageNet, 224 px; batch 4, `--dw-batch N` to change it, 0 to skip it;
//!   `--only-depthwise` skips (1) and (2));
//!
//! each with dnarun's CPU kernels (`dnarun::nn::cpu`) and with Burn's own ops (the baseline).
//!
//! Run: `cargo run --release --example step` (add `--json` for one JSON line at the end, and
//! `--device wgpu:0` / `cuda:0` to time the steps on a GPU: there the second line is dnarun's GPU
//! depthwise convolution, whose weight gradient runs as per-tap reductions (`dnarun::nn::gpu`),
//! everything else being Burn's ops in both lines, and every phase ends with a device sync). `scripts/bench-torch` runs this and the identical steps
//! in PyTorch and prints the ratios; `scripts/gpu-check` does the same on a GPU.

// The same allocator as the `dnarun` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Tensor};
use dnarun::nn::cpu::use_burn_ops;
use dnarun::nn::{MbConv, Mode, SuperBlock};
use dnarun::recipe::Activation;
use dnarun::space::{LayerShape, OpSpec, Padding, Path as SPath, mbconv_cost};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const STEPS: usize = 12;
const WARMUP: usize = 3;

#[path = "../tests/common/mod.rs"]
mod common;

use common::random;

/// Median forward, backward and optimizer milliseconds of `STEPS` train steps after `WARMUP`,
/// and the first step (on a GPU: kernel compilation and autotuning included).
#[derive(Debug, Clone, Copy)]
struct Split {
    fwd: f64,
    bwd: f64,
    opt: f64,
    first: f64,
}

impl Split {
    fn total(&self) -> f64 {
        self.fwd + self.bwd + self.opt
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Waits for the device (a GPU queues work; the CPU backend computes eagerly).
fn sync(device: &Device) {
    if *device != Device::flex() {
        device.sync().expect("the device failed");
    }
}

fn train_steps<M: Module>(
    device: &Device,
    mut net: M,
    forward: impl Fn(&M, usize, Tensor<4>) -> Tensor<4>,
    x: &Tensor<4>,
    y: &Tensor<4>,
) -> Split {
    let mut optim = AdamConfig::new().init();
    let (mut f, mut b, mut o) = (vec![], vec![], vec![]);
    let mut first = 0.0;
    for step in 0..WARMUP + STEPS {
        let t = Instant::now();
        let d = forward(&net, step, x.clone()) - y.clone();
        let loss = (d.clone() * d).mean();
        sync(device);
        let t1 = Instant::now();
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        sync(device);
        let t2 = Instant::now();
        net = optim.step(1e-3, net, grads);
        sync(device);
        let t3 = Instant::now();
        if step == 0 {
            first = (t3 - t).as_secs_f64() * 1e3;
        }
        if step >= WARMUP {
            f.push((t1 - t).as_secs_f64() * 1e3);
            b.push((t2 - t1).as_secs_f64() * 1e3);
            o.push((t3 - t2).as_secs_f64() * 1e3);
        }
    }
    Split {
        fwd: median(f),
        bwd: median(b),
        opt: median(o),
        first,
    }
}

/// `(channels, size, kernel, stride)` of depthwise convolutions in the paper's search space at
/// 224 px: expanded widths of its first to last stages.
const DEPTHWISE_SHAPES: [(usize, usize, usize, usize); 6] = [
    (96, 112, 3, 2),
    (144, 56, 5, 1),
    (240, 28, 7, 1),
    (480, 14, 3, 1),
    (672, 14, 5, 2),
    (1152, 7, 7, 1),
];

/// Median milliseconds of a depthwise forward + backward (both gradients, read back as one
/// scalar so the device finishes them) at each of [`DEPTHWISE_SHAPES`], Burn's grouped `conv2d`
/// against dnarun's formulation for the device.
fn depthwise_times(ad: &Device, batch: usize) -> Vec<(String, f64, f64)> {
    use dnarun::nn::cpu::depthwise_conv2d;
    let mut rows = Vec::new();
    for (c, size, k, s) in DEPTHWISE_SHAPES {
        let x = random([batch, c, size, size], ad).require_grad();
        let w = random([c, 1, k, k], ad).require_grad();
        let mut ms = [0.0; 2];
        for (i, burn) in [true, false].into_iter().enumerate() {
            use_burn_ops(burn);
            let times = (0..4)
                .map(|_| {
                    let t = Instant::now();
                    let y = depthwise_conv2d(x.clone(), w.clone(), s, Padding::Same);
                    let g = (y.clone() * y).sum().backward();
                    let (gx, gw) = (x.grad(&g).unwrap(), w.grad(&g).unwrap());
                    let _ = (gx.sum() + gw.sum()).into_data();
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect::<Vec<_>>();
            // The first run compiles (and on a GPU autotunes) the kernels.
            ms[i] = median(times[1..].to_vec());
        }
        use_burn_ops(false);
        rows.push((format!("{c} ch {size} px k{k} s{s}"), ms[0], ms[1]));
    }
    rows
}

/// Matmul GFLOP/s: the practical peak of this backend on this machine.
fn peak(device: &Device) -> f64 {
    let n = 1024;
    let a: Tensor<2> = Tensor::random([n, n], Distribution::Normal(0.0, 1.0), device);
    let b: Tensor<2> = Tensor::random([n, n], Distribution::Normal(0.0, 1.0), device);
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let _ = a.clone().matmul(b.clone()).into_data();
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (n * n * n) as f64 / best / 1e9
}

fn line(name: &str, s: &Split, gflop: f64, peak: f64) {
    println!(
        "  {name:<22} step {:7.1} ms  (forward {:6.1}, backward {:6.1}, optimizer {:5.1})  {:5.1} GFLOP/s = {:4.1}% of peak",
        s.total(),
        s.fwd,
        s.bwd,
        s.opt,
        gflop / (s.total() / 1e3),
        100.0 * gflop / (s.total() / 1e3) / peak
    );
}

/// Sections (1) and (2): the MBConv and the supernet cell train steps, Burn's ops against
/// dnarun's; their JSON.
fn train_sections(
    device: &Device,
    ad: &Device,
    peak: f64,
    ours: &str,
) -> (serde_json::Value, serde_json::Value) {
    // (1) One MBConv block.
    let op = OpSpec {
        name: "k3e6".into(),
        kernel: 3,
        expansion: 6,
        se: 0.0,
        act: Activation::Relu6,
    };
    let shape = LayerShape {
        cin: 16,
        cout: 16,
        stride: 1,
        size: 32,
    };
    let batch = 32;
    // Training FLOPs: forward, input gradient and weight gradient, 2 per multiply-add each.
    let mbconv_gflop = 3.0 * 2.0 * (mbconv_cost(&op, &shape).macs * batch as u64) as f64 / 1e9;
    let x = random([batch, 16, 32, 32], ad);
    let y = random([batch, 16, 32, 32], ad);
    let mut mb = [None, None];
    for (i, burn_conv) in [true, false].into_iter().enumerate() {
        use_burn_ops(burn_conv);
        let net = dnarun::nn::initialize(|d| MbConv::new(&op, &shape, 1e-3, d), ad, 1);
        mb[i] = Some(train_steps(
            device,
            net,
            |n: &MbConv, _, x| n.forward(x, Mode::TRAIN),
            &x,
            &y,
        ));
    }
    let (mb_burn, mb_ours) = (mb[0].unwrap(), mb[1].unwrap());
    println!(
        "(1) MBConv 16->96->16, k3, ReLU6, batch 32 at 32x32, MSE + Adam ({mbconv_gflop:.2} GFLOP per step):"
    );
    line("Burn ops", &mb_burn, mbconv_gflop, peak);
    line(ours, &mb_ours, mbconv_gflop, peak);
    println!(
        "  {ours}: {:.2}x faster step, {:.2}x faster backward",
        mb_burn.total() / mb_ours.total(),
        mb_burn.bwd / mb_ours.bwd
    );

    // (2) A 4-layer supernet cell with a random path each step.
    let plan = common::plan(
        "recipes/quickstart.toml",
        &["blocks.1.cells=[{ layers = 4, hidden = 16 }]"],
    );
    let block = &plan.space.blocks[1];
    let paths: Vec<SPath> = {
        let all = block.paths();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        (0..WARMUP + STEPS)
            .map(|_| all[rng.random_range(0..all.len())].clone())
            .collect()
    };
    let cell_gflop = 3.0
        * 2.0
        * paths[WARMUP..]
            .iter()
            .map(|p| (block.path_cost(p).macs * batch as u64) as f64)
            .sum::<f64>()
        / STEPS as f64
        / 1e9;
    let (cin, cout) = (plan.taps[0].shape, plan.taps[1].shape);
    let x = random([batch, cin[0], cin[1], cin[2]], ad);
    let y = random([batch, cout[0], cout[1], cout[2]], ad);
    let mut cell = [None, None];
    for (i, burn_conv) in [true, false].into_iter().enumerate() {
        use_burn_ops(burn_conv);
        let net = dnarun::nn::initialize(|d| SuperBlock::new(&plan.space, 1, d), ad, 1);
        cell[i] = Some(train_steps(
            device,
            net,
            |n: &SuperBlock, step, x| n.forward(&paths[step], x, Mode::TRAIN),
            &x,
            &y,
        ));
    }
    use_burn_ops(false);
    let (cell_burn, cell_ours) = (cell[0].unwrap(), cell[1].unwrap());
    println!(
        "(2) 4-layer supernet cell {}->{} ch at {} px, random paths, batch 32 ({cell_gflop:.2} GFLOP per step on average):",
        cin[0], cout[0], cin[1]
    );
    line("Burn ops", &cell_burn, cell_gflop, peak);
    line(ours, &cell_ours, cell_gflop, peak);
    println!(
        "  {ours}: {:.2}x faster step",
        cell_burn.total() / cell_ours.total()
    );
    (
        serde_json::json!({"fwd": mb_ours.fwd, "bwd": mb_ours.bwd, "opt": mb_ours.opt,
                           "first_step": mb_burn.first,
                           "burn_ops_step": mb_burn.total(), "gflop": mbconv_gflop}),
        serde_json::json!({"fwd": cell_ours.fwd, "bwd": cell_ours.bwd, "opt": cell_ours.opt,
                         "first_step": cell_burn.first,
                         "burn_ops_step": cell_burn.total(), "gflop": cell_gflop,
                         "in": cin, "out": cout,
                         "paths": paths[WARMUP..].iter().map(|p| block.path_name(p)).collect::<Vec<_>>()}),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let json = args.iter().any(|a| a == "--json");
    // The value after a flag.
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let spec = value("--device").map_or(dnarun::plan::DeviceSpec::Cpu, |s| {
        dnarun::plan::DeviceSpec::parse(s).unwrap_or_else(|e| panic!("{e}"))
    });
    let device = dnarun::nn::device::open_device(&spec).unwrap_or_else(|e| panic!("{e}"));
    println!("device {spec}");
    let ad = device.clone().autodiff();
    let ours = match dnarun::nn::cpu::depthwise_on(&ad) {
        dnarun::nn::cpu::Depthwise::TapWeightGrad => "dnarun per-tap wgrad",
        _ => "dnarun kernels",
    };
    let dw_batch = value("--dw-batch").map_or(4, |s| s.parse().expect("--dw-batch takes a number"));
    let mut out = serde_json::json!({"device": spec.to_string()});
    if !args.iter().any(|a| a == "--only-depthwise") {
        let peak = peak(&device);
        println!("practical peak (1024^3 f32 matmul): {peak:.1} GFLOP/s");
        out["peak_gflops"] = peak.into();
        let (mbconv, cell) = train_sections(&device, &ad, peak, ours);
        out["mbconv"] = mbconv;
        out["cell"] = cell;
    }
    if dw_batch > 0 {
        println!(
            "(3) depthwise convolution alone, forward + both gradients, batch {dw_batch} (median ms):"
        );
        let dw = depthwise_times(&ad, dw_batch);
        for (name, burn, mine) in &dw {
            println!(
                "  {name:<24} Burn ops {burn:8.2}  {ours} {mine:8.2}  {:.2}x faster",
                burn / mine
            );
        }
        out["depthwise"] = serde_json::json!({"batch": dw_batch, "shapes": dw.iter().map(|(name, burn, mine)|
            serde_json::json!({"shape": name, "burn_ops_ms": burn, "ours_ms": mine})).collect::<Vec<_>>()});
    }
    if json {
        println!("{out}");
    }
}
