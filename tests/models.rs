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

use common::{plan, random};

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

#[test]
fn prefix_sharing_rating_equals_naive_rating() {
    let p = plan("tests/fixtures/tiny.toml", &["blocks.1.cells.1.layers=3"]);
    let device = Device::flex();
    let net = SuperBlock::new(&p.space, 1, &device);
    let block = &p.space.blocks[1];
    let data = RateData {
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
    };
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
            "{}: {ra} vs {rb}",
            block.path_name(pa)
        );
    }
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

/// A family member's teacher, by the name a recipe writes.
fn lite(arch: &str, p: &Plan) -> dnarun::plan::TeacherSpec {
    let a = dnarun::plan::TeacherArch::PRETRAINED
        .into_iter()
        .find(|a| a.name() == arch)
        .unwrap();
    dnarun::plan::lite_spec(a, p.teacher.train.clone(), true).unwrap()
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
    for e in std::fs::read_dir(&photos).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("imagenet_") {
            std::fs::copy(e.path(), dir.join(&name)).unwrap();
        }
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

/// The EfficientNet-Lite family from its scaling rule has the published parameter counts at
/// 1000 classes (TensorFlow's `efficientnet_lite_builder` as ported by timm:
/// `tf_efficientnet_lite0` ... `lite4`, whose model cards list 4.65 / 5.42 / 6.09 / 8.20 /
/// 13.01 M), checked exactly where the weight files are at hand: the count equals the number of
/// trainable values in each PyPI weight file.
#[test]
fn the_lite_family_has_the_published_parameter_counts() {
    let counts = [
        ("efficientnet-lite0", 4_652_008usize),
        ("efficientnet-lite1", 5_416_680),
        ("efficientnet-lite2", 6_092_072),
        ("efficientnet-lite3", 8_197_096),
        ("efficientnet-lite4", 13_006_568),
    ];
    let device = Device::flex();
    let p = plan("recipes/dna-imagenet.toml", &[]);
    for (arch, published) in counts {
        let t = Teacher::new(&lite(arch, &p), 3, 1000, &device.clone().autodiff());
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
    other.head = 1000;
    let e = weights::load_teacher(&weights, &other, 3, 10, &device)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "`_conv_head.weight`: expected shape [1000, 320, 1, 1], found [1280, 320, 1, 1]"
        ),
        "{e}"
    );
    assert!(
        e.contains("`_fc.weight`: expected shape [10, 1000], found [1000, 1280]"),
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
    weights::export_teacher_safetensors(&t, out).unwrap();
    let back = weights::load_teacher_safetensors(out, &p.teacher, 3, 1000, &device).unwrap();
    let x = random([2, 3, 64, 64], &device);
    let a = t.logits(x.clone(), Mode::Eval);
    let b = back.logits(x, Mode::Eval);
    assert_eq!(a.into_data(), b.into_data(), "the same logits, bit for bit");
}

fn max_abs_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
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

/// dnarun's depthwise kernels against Burn's grouped `conv2d` on random inputs: the output and
/// both gradients agree within float tolerance, for odd and even sizes, 3/5/7 kernels, stride 1
/// and 2 (asymmetric "same" padding), and one channel.
#[test]
fn depthwise_kernels_match_burn_conv2d_and_its_gradients() {
    use dnarun::nn::cpu::{depthwise_conv2d, reference_depthwise_conv2d as reference_conv2d};
    let device = Device::flex().autodiff();
    for (n, c, h, w, k, s) in [
        (2, 8, 14, 14, 3, 1),
        (3, 5, 9, 7, 5, 2),
        (2, 4, 8, 8, 3, 2),
        (1, 6, 7, 11, 7, 1),
        (2, 1, 6, 6, 3, 1),
        (2, 3, 4, 4, 5, 2),
    ] {
        let x = random([n, c, h, w], &device).require_grad();
        let wt = random([c, 1, k, k], &device).require_grad();
        let ours = depthwise_conv2d(x.clone(), wt.clone(), s);
        let xr = x.clone().detach().require_grad();
        let wr = wt.clone().detach().require_grad();
        let reference = reference_conv2d(xr.clone(), wr.clone(), s);
        assert_eq!(ours.dims(), reference.dims(), "{n} {c} {h} {w} k{k} s{s}");
        assert_eq!(ours.dims()[2], h.div_ceil(s));
        // A random upstream gradient, the same for both.
        let up = random(ours.dims(), &Device::flex());
        let up_ad = Tensor::<4>::from_data(up.into_data(), &device);
        let case = format!("n{n} c{c} {h}x{w} k{k} s{s}");
        assert!(
            max_abs_diff(ours.clone(), reference.clone()) < 1e-4,
            "output {case}"
        );
        let g1 = (ours * up_ad.clone()).sum().backward();
        let g2 = (reference * up_ad).sum().backward();
        let dx = max_abs_diff(x.grad(&g1).unwrap(), xr.grad(&g2).unwrap());
        let dw = max_abs_diff(wt.grad(&g1).unwrap(), wr.grad(&g2).unwrap());
        assert!(dx < 1e-4, "input gradient {case}: {dx}");
        assert!(dw < 1e-3, "weight gradient {case}: {dw}");
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
    for (i, (name, t)) in tensors.iter().enumerate() {
        pkl.extend(s(name));
        pkl.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        pkl.extend(s("storage"));
        pkl.extend(b"ctorch\nFloatStorage\n");
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
    pkl.extend([b'u', b'.']);
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("archive/data.pkl", stored).unwrap();
    z.write_all(&pkl).unwrap();
    for (i, t) in tensors.values().enumerate() {
        z.start_file(format!("archive/data/{i}"), stored).unwrap();
        for v in &t.values {
            z.write_all(&v.to_le_bytes()).unwrap();
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
    weights::export_teacher_safetensors(&legacy, twin).unwrap();
    let from_st = weights::load_teacher_safetensors(twin, &p.teacher, 3, 1000, &device).unwrap();
    let x = random([2, 3, 64, 64], &device);
    let a = from_zip.logits(x.clone(), Mode::Eval).into_data();
    let b = from_st.logits(x, Mode::Eval).into_data();
    assert_eq!(a, b, "logits differ");
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
