//! Benchmarks, each against a baseline measured in the same run:
//! (a) prefix-sharing rating vs naive per-path rating of a 4-layer, 6-op cell;
//! (b) exact top-10 search on the paper's 1.96e17 multi-cell space (synthetic ratings) vs the
//!     optimum alone;
//! (c) a supernet block's distillation train step (forward + backward + Adam) and its eval
//!     forward, with dnarun's CPU kernels vs Burn's own ops;
//! (d) batch decoding throughput vs the train step that consumes it.
//!
//! Run: `cargo run --release --example bench`

// The same allocator as the `dnarun` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::Device;
use dnarun::nn::{Mode, SuperBlock};
use dnarun::space::Path as SPath;
use dnarun::space::search::{Candidate, suffix_fronts, top_k};
use dnarun::stages::rate::{RateData, rate_block, rate_block_naive};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[path = "../tests/common/mod.rs"]
mod common;

use common::{plan, random};

fn main() {
    let device = Device::flex();

    // (a) Rating one cell of 4 layers and 6 ops (1296 paths).
    let ops = "{ k3e3 = { kernel = 3, expansion = 3 }, k5e3 = { kernel = 5, expansion = 3 }, k7e3 = { kernel = 7, expansion = 3 }, k3e6 = { kernel = 3, expansion = 6 }, k5e6 = { kernel = 5, expansion = 6 }, k7e6 = { kernel = 7, expansion = 6 } }";
    let p = plan(
        "recipes/quickstart.toml",
        &[
            &format!("ops={ops}"),
            "blocks.1.cells=[{ layers = 4, hidden = 16 }]",
            "search.max_mflops=8.0",
        ],
    );
    let net = SuperBlock::new(&p.space, 1, &device);
    let block = &p.space.blocks[1];
    let data = RateData {
        calibration: vec![random([16, 24, 14, 14], &device)],
        inputs: vec![random([16, 24, 14, 14], &device)],
        targets: vec![random([16, 40, 7, 7], &device)],
        loss: dnarun::recipe::RateLoss::Fair,
    };
    let t = Instant::now();
    let (fast, evals) = rate_block(&net, block, &data);
    let prefix = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let slow = rate_block_naive(&net, block, &data);
    let naive = t.elapsed().as_secs_f64();
    let max_diff = fast
        .iter()
        .zip(&slow)
        .map(|(a, b)| (a.1 - b.1).abs())
        .fold(0.0, f64::max);
    println!(
        "(a) rating a 4-layer x 6-op cell ({} paths, batch 16): prefix sharing {prefix:.2}s ({evals} layer evaluations), naive {naive:.2}s ({} layer evaluations): {:.2}x faster; largest rating difference {max_diff:.1e}",
        fast.len(),
        fast.len() * 4,
        naive / prefix
    );

    // (b) Search on the paper's space with synthetic ratings.
    let p = plan("recipes/dna-imagenet.toml", &[]);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let blocks: Vec<Vec<Candidate>> = p
        .space
        .blocks
        .iter()
        .map(|b| {
            b.paths()
                .iter()
                .map(|path| {
                    let c = b.path_cost(path);
                    // Bigger paths rate better on average, with noise, as real ratings do.
                    let size = c.flops(dnarun::recipe::FlopsConvention::Dna) as f64;
                    Candidate {
                        rating: 1.0 / (1.0 + size / 2e7) + rng.random_range(0.0..0.2),
                        cost: [
                            p.search.measures[0].of(&c) as f64,
                            p.search.measures[1].of(&c) as f64,
                            0.0,
                        ],
                    }
                })
                .collect()
        })
        .collect();
    let fixed = p.space.fixed_cost();
    let fixed = [
        p.search.measures[0].of(&fixed) as f64,
        p.search.measures[1].of(&fixed) as f64,
        0.0,
    ];
    let t = Instant::now();
    let fronts = suffix_fronts(&blocks);
    let optimum = fronts[0].best_within(p.search.limits[0] - fixed[0]);
    let t_front = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let top = top_k(&blocks, fixed, p.search.all_limits(), 10);
    let t_top = t.elapsed().as_secs_f64();
    assert!(
        (top[0].rating - optimum).abs() < 1e-9,
        "the top-1 is the optimum"
    );
    println!(
        "(b) search over {:.3e} architectures under {} MFLOPs: suffix fronts + optimum {:.1} ms ({} front points); exact top-10 {:.1} ms ({:.1}x the optimum alone); best {:.4}, 10th {:.4}",
        p.space.size(),
        p.search.limits[0] / 1e6,
        t_front * 1e3,
        fronts[0].0.len(),
        t_top * 1e3,
        t_top / t_front.max(1e-9),
        top[0].rating,
        top[9].rating
    );

    // (c) One distillation train step of a quickstart block at batch 64.
    let p = plan("recipes/quickstart.toml", &[]);
    let ad = device.clone().autodiff();
    let mut net = dnarun::nn::initialize(|d| SuperBlock::new(&p.space, 1, d), &ad, 1);
    let mut optim = AdamConfig::new().init();
    let x = random([64, 24, 14, 14], &device);
    let y = random([64, 40, 7, 7], &device);
    let path = SPath {
        cell: 1,
        ops: vec![2, 1],
    };
    let steps = 10;
    // (step ms, eval forward ms) with dnarun's CPU kernels (`false`) or Burn's own ops (`true`).
    let mut measure = |burn_ops: bool| {
        dnarun::nn::cpu::use_burn_ops(burn_ops);
        let eval_net = burn::module::Module::valid(&net);
        let _ = eval_net.forward(&path, x.clone(), Mode::Eval).into_data();
        let t = Instant::now();
        for _ in 0..steps {
            let _ = eval_net.forward(&path, x.clone(), Mode::Eval).into_data();
        }
        let fwd = t.elapsed().as_secs_f64() / steps as f64;
        let t = Instant::now();
        for _ in 0..steps {
            let out = net
                .clone()
                .forward(&path, x.clone().autodiff(), Mode::TRAIN);
            let d = out - y.clone().autodiff();
            let loss = (d.clone() * d).mean();
            let g = GradientsParams::from_grads(loss.backward(), &net);
            net = optim.step(1e-3, net.clone(), g);
        }
        dnarun::nn::cpu::use_burn_ops(false);
        (t.elapsed().as_secs_f64() / steps as f64, fwd)
    };
    let (burn_step, burn_fwd) = measure(true);
    let (step, fwd) = measure(false);
    println!(
        "(c) distill train step, quickstart block 1, path {}, batch 64: {:.1} ms, eval forward {:.1} ms; with Burn's own ops {:.1} ms and {:.1} ms: {:.2}x and {:.2}x faster",
        p.space.blocks[1].path_name(&path),
        step * 1e3,
        fwd * 1e3,
        burn_step * 1e3,
        burn_fwd * 1e3,
        burn_step / step,
        burn_fwd / fwd
    );

    // (d) Batch decoding throughput.
    let d = &p.data;
    let images = std::sync::Arc::new(dnarun::data::read_split(d, &d.train).unwrap());
    let idx: Vec<usize> = (0..images.len()).collect();
    let pre = dnarun::data::Preprocess::new(d, true);
    let t = Instant::now();
    let n: usize = dnarun::data::Loader::start(
        images,
        dnarun::data::batches(&idx, 64, Some(1)),
        pre,
        0,
        d.workers,
    )
    .map(|b| b.unwrap().labels.len())
    .sum();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "(d) decoding + augmenting {n} images: {:.0} images/s; a batch of 64 takes {:.2} ms, {:.1}% of the train step above",
        n as f64 / secs,
        secs / n as f64 * 64.0 * 1e3,
        secs / n as f64 * 64.0 / step * 100.0
    );
}
