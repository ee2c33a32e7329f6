//! Datasets: the full Fashion-MNIST in IDX, foolbox's real CIFAR-10 photos, a generated CIFAR
//! binary batch, deterministic and disjoint sampling, and a clear error for every bad input.

use std::io::Write;
use std::path::{Path, PathBuf};

use dnarun::data::{
    DataError, Images, read_cifar, read_flat_folder, read_folder, read_idx, subsets,
};
use dnarun::recipe::{self, Overrides};

const FMNIST: &str = "/usr/share/datasets/fashion-mnist";

fn scratch(name: &str) -> PathBuf {
    let d = Path::new("target/data-tests").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tiny_data() -> dnarun::plan::DataSpec {
    let l = recipe::load(Path::new("tests/fixtures/tiny.toml"), &Overrides::default()).unwrap();
    dnarun::plan::Plan::resolve(&l).unwrap().data
}

#[test]
fn full_fashion_mnist() {
    let dir = Path::new(FMNIST);
    assert!(
        dir.exists(),
        "{FMNIST} is missing: run the suite with `scripts/test` (installs dataset-fashion-mnist)"
    );
    let split = |name: &str| {
        read_idx(
            &dir.join(format!("{name}-images-idx3-ubyte.gz")),
            &dir.join(format!("{name}-labels-idx1-ubyte.gz")),
            1,
            28,
            10,
        )
        .unwrap()
    };
    let (train, test) = (split("train"), split("t10k"));
    assert_eq!(train.len(), 60_000);
    assert_eq!(test.len(), 10_000);
    assert_eq!(train.histogram(10), vec![6000; 10]);
    assert_eq!(test.histogram(10), vec![1000; 10]);
    // The first training image is an ankle boot (label 9) with a dark border.
    assert_eq!(train.labels[0], 9);
    assert_eq!(train.image(0).unwrap()[0], 0);
}

#[test]
fn bundled_quickstart_data_matches_its_checksums() {
    use sha2::{Digest, Sha256};
    let dir = Path::new("data/fashion-mnist-small");
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    for line in sums.lines() {
        let (sum, name) = line.split_once("  ").unwrap();
        let bytes = std::fs::read(dir.join(name)).unwrap();
        assert_eq!(format!("{:x}", Sha256::digest(&bytes)), sum, "{name}");
    }
    let train = read_idx(
        &dir.join("train-images-idx3-ubyte.gz"),
        &dir.join("train-labels-idx1-ubyte.gz"),
        1,
        28,
        10,
    )
    .unwrap();
    assert_eq!(train.histogram(10), vec![500; 10]);
}

#[test]
fn foolbox_cifar10_photos_have_the_known_labels() {
    let photos = std::env::var_os("DNARUN_TEST_FOOLBOX")
        .expect("DNARUN_TEST_FOOLBOX must be set: run the suite with `scripts/test`");
    let dir = scratch("foolbox-cifar10");
    for e in std::fs::read_dir(&photos).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("cifar10_") {
            std::fs::copy(e.path(), dir.join(&name)).unwrap();
        }
    }
    let images = read_flat_folder(&dir, 3, 32, 10, 0.875).unwrap();
    // The first 20 CIFAR-10 test labels.
    assert_eq!(
        images.labels,
        vec![3, 8, 8, 0, 6, 6, 1, 6, 3, 1, 0, 9, 5, 7, 9, 8, 5, 7, 8, 6]
    );
    assert!(images.is_photos());
    assert_eq!(images.image(0).unwrap().len(), 3 * 32 * 32);
    // Resizing to 16 px and converting to grey keep the count.
    let small = read_flat_folder(&dir, 1, 16, 10, 0.875).unwrap();
    assert_eq!(small.len(), 20);
    assert_eq!(small.image(19).unwrap().len(), 16 * 16);
}

#[test]
fn class_folders_read_in_name_order() {
    let photos = std::env::var_os("DNARUN_TEST_FOOLBOX").expect("DNARUN_TEST_FOOLBOX must be set");
    let dir = scratch("folder");
    for e in std::fs::read_dir(&photos).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(rest) = name.strip_prefix("cifar10_") {
            let label = rest.rsplit('_').next().unwrap().split('.').next().unwrap();
            let class = dir.join(format!("class{label}"));
            std::fs::create_dir_all(&class).unwrap();
            std::fs::copy(e.path(), class.join(&name)).unwrap();
        }
    }
    let n_classes = std::fs::read_dir(&dir).unwrap().count();
    let images = read_folder(&dir, 3, 24, n_classes, 0.875).unwrap();
    assert_eq!(images.len(), 20);
    assert_eq!(images.class_names.len(), n_classes);
    assert!(images.class_names.windows(2).all(|w| w[0] < w[1]));
}

fn cifar_record(label: u8, fill: u8) -> Vec<u8> {
    let mut r = vec![label];
    r.extend(std::iter::repeat_n(fill, 3072));
    r
}

#[test]
fn generated_cifar_binary_batch() {
    let dir = scratch("cifar");
    let f = dir.join("data_batch_1.bin");
    let mut bytes = Vec::new();
    for (l, fill) in [(3u8, 10u8), (7, 200), (0, 99)] {
        bytes.extend(cifar_record(l, fill));
    }
    std::fs::write(&f, &bytes).unwrap();
    let images = read_cifar(std::slice::from_ref(&f), false, 3, 32, 10).unwrap();
    assert_eq!(images.labels, vec![3, 7, 0]);
    assert_eq!(images.image(1).unwrap()[0], 200);
    // CIFAR-100: coarse + fine label bytes, the fine one is used.
    let f100 = dir.join("train.bin");
    let mut rec = vec![4u8, 42u8];
    rec.extend(std::iter::repeat_n(5u8, 3072));
    std::fs::write(&f100, &rec).unwrap();
    assert_eq!(
        read_cifar(&[f100], true, 3, 32, 100).unwrap().labels,
        vec![42]
    );
    // A size that is not a whole number of records.
    std::fs::write(&f, &bytes[..bytes.len() - 7]).unwrap();
    let e = read_cifar(&[f], false, 3, 32, 10).unwrap_err().to_string();
    assert!(
        e.contains("data_batch_1.bin") && e.contains("is not a multiple of 3073"),
        "{e}"
    );
}

fn fake_images(labels: Vec<usize>) -> Images {
    Images::in_memory(
        1,
        2,
        vec![0; labels.len() * 4],
        labels,
        (0..10).map(|c| c.to_string()).collect(),
        vec![],
    )
}

#[test]
fn sampling_is_deterministic_and_disjoint() {
    let d = tiny_data();
    let labels: Vec<usize> = (0..400).map(|i| i % 10).collect();
    let a = subsets(
        &d,
        3,
        fake_images(labels.clone()),
        fake_images(labels.clone()),
    )
    .unwrap();
    let b = subsets(
        &d,
        3,
        fake_images(labels.clone()),
        fake_images(labels.clone()),
    )
    .unwrap();
    let c = subsets(&d, 4, fake_images(labels.clone()), fake_images(labels)).unwrap();
    assert_eq!(a.search, b.search);
    assert_eq!(a.rate, b.rate);
    assert_eq!(a.fingerprint, b.fingerprint);
    assert_ne!(a.search, c.search, "another seed, another sample");
    assert_eq!(a.search.len(), 10 * d.samples_per_class);
    assert_eq!(a.rate.len(), 10 * d.rate_per_class);
    assert!(
        a.search.iter().all(|i| !a.rate.contains(i)),
        "search and rate subsets are disjoint"
    );
    assert_eq!(a.test_idx.len(), 10 * 20);
}

/// Checks an error names what it must, and keeps its message for the snapshot.
fn expect_err<T: std::fmt::Debug>(
    seen: &mut Vec<String>,
    r: Result<T, DataError>,
    needles: &[&str],
) {
    let e = r.expect_err("should fail").to_string();
    for n in needles {
        assert!(e.contains(n), "`{n}` not in: {e}");
    }
    seen.push(e);
}

#[test]
fn bad_inputs_get_clear_errors() {
    let dir = scratch("bad");
    let mut seen = Vec::new();
    let small = Path::new("data/fashion-mnist-small");
    let (imgs, labs) = (
        small.join("train-images-idx3-ubyte.gz"),
        small.join("train-labels-idx1-ubyte.gz"),
    );
    // Missing file.
    expect_err(
        &mut seen,
        read_idx(&dir.join("nope.gz"), &labs, 1, 28, 10),
        &["nope.gz", "cannot be read"],
    );
    // Wrong magic: labels given as images.
    expect_err(
        &mut seen,
        read_idx(&labs, &labs, 1, 28, 10),
        &[
            "train-labels-idx1-ubyte.gz",
            "magic number 0x00000803",
            "found 0x00000801",
        ],
    );
    // Truncated images.
    let raw = {
        use std::io::Read;
        let mut v = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&imgs).unwrap())
            .read_to_end(&mut v)
            .unwrap();
        v
    };
    let cut = dir.join("cut-images-idx3-ubyte");
    std::fs::write(&cut, &raw[..raw.len() - 100]).unwrap();
    expect_err(
        &mut seen,
        read_idx(&cut, &labs, 1, 28, 10),
        &["cut-images-idx3-ubyte", "is truncated", "5000 images"],
    );
    // Unequal counts.
    let few = dir.join("few-labels-idx1-ubyte");
    let mut l = vec![0, 0, 8, 1, 0, 0, 0, 3];
    l.extend([1, 2, 3]);
    std::fs::write(&few, &l).unwrap();
    expect_err(
        &mut seen,
        read_idx(&imgs, &few, 1, 28, 10),
        &["few-labels-idx1-ubyte", "holds 3 labels", "5000 images"],
    );
    // A file that is not an image in a class folder.
    let folder = dir.join("folder");
    std::fs::create_dir_all(folder.join("cat")).unwrap();
    std::fs::File::create(folder.join("cat/notes.txt"))
        .unwrap()
        .write_all(b"hi")
        .unwrap();
    expect_err(
        &mut seen,
        read_folder(&folder, 3, 8, 1, 0.875),
        &["notes.txt", "is not a PNG or JPEG"],
    );
    // A corrupt image: indexed, then named when a batch needs it.
    std::fs::remove_file(folder.join("cat/notes.txt")).unwrap();
    std::fs::write(folder.join("cat/broken.png"), b"\x89PNG not really").unwrap();
    let images = read_folder(&folder, 3, 8, 1, 0.875).unwrap();
    expect_err(
        &mut seen,
        images.image(0).map(|_| ()),
        &["broken.png", "is not a readable PNG/JPEG image"],
    );
    // An empty class folder.
    std::fs::create_dir_all(folder.join("dog")).unwrap();
    expect_err(
        &mut seen,
        read_folder(&folder, 3, 8, 2, 0.875).map(|_| ()),
        &["dog", "holds no images"],
    );
    // A class with fewer images than the subsets need.
    let d = tiny_data();
    let labels: Vec<usize> = (0..10)
        .flat_map(|c| std::iter::repeat_n(c, if c == 3 { 5 } else { 30 }))
        .collect();
    let e = subsets(&d, 1, fake_images(labels.clone()), fake_images(labels))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("class 3")
            && e.contains("has 5 images")
            && e.contains("`data.samples_per_class` + `data.rate_per_class` = 16"),
        "{e}"
    );
    seen.push(e);
    // Every message in full, as the user reads it.
    insta::assert_snapshot!(seen.join("\n\n"));
}

#[test]
fn a_missing_dataset_file_exits_2_naming_it() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dnarun"))
        .args([
            "tests/fixtures/tiny.toml",
            "--set",
            "data.test.images=\"../../data/missing.gz\"",
            "--set",
            "experiment.output_dir=\"../../target/data-tests/runs\"",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("data/missing.gz` does not exist"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A class-folder dataset of `classes` x `per_class` small JPEGs (made once, reused).
fn photo_folder(name: &str, classes: usize, per_class: usize) -> PathBuf {
    use rayon::prelude::*;
    let dir = Path::new("target/data-tests").join(name);
    let done = dir.join(".complete");
    if done.exists() {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    (0..classes).into_par_iter().for_each(|c| {
        let class = dir.join(format!("n{c:08}"));
        std::fs::create_dir_all(&class).unwrap();
        for i in 0..per_class {
            // Per class a colour, per image a gradient: real JPEG content, varied sizes.
            let (w, h) = (20 + (i % 7) as u32, 16 + (i % 5) as u32);
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([
                    (c * 37 % 256) as u8,
                    ((x * 11 + i as u32) % 256) as u8,
                    ((y * 13 + c as u32) % 256) as u8,
                ])
            });
            img.save(class.join(format!("img_{i:05}.jpg"))).unwrap();
        }
    });
    std::fs::write(&done, "").unwrap();
    dir
}

fn photo_plan(dir: &Path, sets: &[String]) -> dnarun::plan::Plan {
    let mut all = vec![
        format!(
            "data.train.dir=\"{}\"",
            dir.canonicalize().unwrap().display()
        ),
        format!(
            "data.test.dir=\"{}\"",
            dir.canonicalize().unwrap().display()
        ),
    ];
    all.extend(sets.iter().cloned());
    let l = recipe::load(
        Path::new("tests/fixtures/photos.toml"),
        &Overrides {
            sets: all,
            env: false,
        },
    )
    .unwrap_or_else(|d| panic!("{}", d.render()));
    dnarun::plan::Plan::resolve(&l).unwrap_or_else(|d| panic!("{}", d.render()))
}

fn all_batches(plan: &dnarun::plan::Plan, augment: bool) -> Vec<dnarun::data::HostBatch> {
    use dnarun::data::{Loader, Preprocess, batches, load};
    let data = load(plan).unwrap();
    let order = batches(&data.search, 16, Some(9));
    let pre = Preprocess::new(&plan.data, augment);
    let mut out = Vec::new();
    // Twice: the second epoch reads the cache where it is on.
    for _ in 0..2 {
        for b in Loader::start(
            data.train.clone(),
            order.clone(),
            pre.clone(),
            11,
            plan.data.workers,
        ) {
            out.push(b.unwrap());
        }
    }
    out
}

#[test]
fn photo_batches_are_the_same_cached_or_not_whatever_the_workers() {
    let dir = photo_folder("photos-small", 100, 6);
    let base = all_batches(&photo_plan(&dir, &["data.workers=1".into()]), true);
    for sets in [
        vec!["data.workers=3".to_string()],
        vec!["data.workers=2".into(), "data.cache=true".into()],
    ] {
        let other = all_batches(&photo_plan(&dir, &sets), true);
        assert_eq!(base.len(), other.len());
        for (a, b) in base.iter().zip(&other) {
            assert_eq!(a.labels, b.labels, "{sets:?}");
            assert!(a.pixels == b.pixels, "batches differ with {sets:?}");
        }
    }
    // Augmented training views differ from the evaluation (centre-crop) views.
    let eval = all_batches(&photo_plan(&dir, &[]), false);
    assert_eq!(eval[0].shape, [16, 3, 192, 192]);
    assert!(eval[0].pixels != base[0].pixels);
}

#[test]
fn a_corrupt_photo_fails_the_run_naming_it_or_is_skipped_and_counted() {
    let src = photo_folder("photos-small", 100, 6);
    let dir = scratch("photos-corrupt");
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        if e.path().is_dir() {
            let to = dir.join(e.file_name());
            std::fs::create_dir_all(&to).unwrap();
            for f in std::fs::read_dir(e.path()).unwrap().flatten() {
                std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
            }
        }
    }
    // Break every image of class 0 (a JPEG start, then garbage), so whichever are sampled are.
    for f in std::fs::read_dir(dir.join("n00000000")).unwrap().flatten() {
        let mut bytes = vec![0xff, 0xd8, 0xff];
        bytes.extend(std::iter::repeat_n(0x5a, 64));
        std::fs::write(f.path(), &bytes).unwrap();
    }
    let abs = dir.canonicalize().unwrap();
    let out_abs = scratch("photos-corrupt-runs").canonicalize().unwrap();
    let run = |extra: &[&str]| {
        let mut a = vec![
            "tests/fixtures/photos.toml".to_string(),
            "--set".into(),
            format!("data.train.dir=\"{}\"", abs.display()),
            "--set".into(),
            format!("data.test.dir=\"{}\"", abs.display()),
            "--set".into(),
            format!("experiment.output_dir=\"{}/runs\"", out_abs.display()),
            "--set".into(),
            format!("tracking.uri=\"file:{}/mlruns\"", out_abs.display()),
        ];
        for e in extra {
            a.push("--set".into());
            a.push(e.to_string());
        }
        std::process::Command::new(env!("CARGO_BIN_EXE_dnarun"))
            .args(&a)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("n00000000/img_") && err.contains("is not a readable PNG/JPEG image"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let out = run(&["data.skip_bad=true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out_abs.join("runs/photos-002/report.json")).unwrap(),
    )
    .unwrap();
    let skipped = report["skipped_images"].as_array().unwrap();
    assert!(!skipped.is_empty());
    assert!(
        skipped
            .iter()
            .all(|s| s.as_str().unwrap().contains("n00000000"))
    );
}

#[test]
fn an_imagenet_shaped_folder_streams_in_bounded_memory() {
    // 100 classes x 200 JPEGs: decoded whole at 192 px they would take 20,000 x 3 x 192^2 =
    // 2.2 GB; indexed and decoded on demand, distillation and rating stay far below 1 GB.
    let dir = photo_folder("photos-imagenet-shaped", 100, 200);
    let abs = dir.canonicalize().unwrap();
    let out_dir = scratch("photos-stream");
    let out_abs = out_dir.canonicalize().unwrap();
    let base = vec![
        "--set".to_string(),
        format!("data.train.dir=\"{}\"", abs.display()),
        "--set".into(),
        format!("data.test.dir=\"{}\"", abs.display()),
        "--set".into(),
        format!("experiment.output_dir=\"{}\"", out_abs.display()),
        "--set".into(),
        format!("tracking.uri=\"file:{}/mlruns\"", out_abs.display()),
    ];
    let started = std::time::Instant::now();
    let plan = std::process::Command::new(env!("CARGO_BIN_EXE_dnarun"))
        .arg("plan")
        .arg("tests/fixtures/photos.toml")
        .args(&base)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        text.contains("train split: 20000 images, 100 classes, 200 per class"),
        "{text}"
    );
    assert!(text.contains("192x192 images"), "{text}");
    // What decoding the whole split at the recipe's size would take.
    let whole: u64 = 20_000 * 3 * 192 * 192;
    eprintln!(
        "indexing 20,000 files (plan): {:.2}s",
        started.elapsed().as_secs_f64()
    );
    for (stage, resume) in [("distill", false), ("rate", true)] {
        let mut a = vec!["run".to_string(), "tests/fixtures/photos.toml".into()];
        a.extend(base.iter().cloned());
        a.extend(["--stage".into(), stage.into()]);
        if resume {
            a.extend([
                "--run-dir".into(),
                out_abs.join("photos-001").display().to_string(),
            ]);
        }
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dnarun"))
            .args(&a)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let run = out_abs.join("photos-001");
    assert!(run.join("rate/block1.json").exists());
    let resources: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("resources.json")).unwrap())
            .unwrap();
    let peaks: std::collections::BTreeMap<String, u64> =
        serde_json::from_value(resources["peak_rss_bytes"].clone()).unwrap();
    for stage in ["teacher", "distill", "rate"] {
        let peak = peaks[stage];
        eprintln!("{stage}: peak RSS {:.0} MiB", peak as f64 / 1048576.0);
        assert!(peak > 0 && peak < 1 << 30, "{stage}: {peak} bytes");
        assert!(
            peak < whole / 2,
            "{stage}: {peak} bytes against {whole} decoded"
        );
    }
}

fn mutate(rng: &mut rand_chacha::ChaCha8Rng, bytes: &mut Vec<u8>, region: usize) {
    use rand::Rng;
    for _ in 0..rng.random_range(1..6) {
        if bytes.is_empty() {
            return;
        }
        let at = rng.random_range(0..region.min(bytes.len()));
        match rng.random_range(0..3) {
            0 => bytes[at] = rng.random(),
            1 => bytes.truncate(at),
            _ => {
                let x: u8 = rng.random();
                bytes.insert(at, x);
            }
        }
    }
}

#[test]
fn fuzzed_dataset_files_never_crash_the_readers() {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(23);
    let dir = scratch("fuzz");
    let (mut cases, mut errors) = (0usize, 0usize);
    let mut tally = |r: std::thread::Result<bool>, what: &str| {
        assert!(r.is_ok(), "{what} panicked");
        cases += 1;
        errors += usize::from(!r.unwrap());
    };
    // IDX: the raw quickstart files, headers included.
    let gz = |name: &str| {
        let mut out = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(
                &std::fs::read(format!("data/fashion-mnist-small/{name}")).unwrap()[..],
            ),
            &mut out,
        )
        .unwrap();
        out
    };
    let (images, labels) = (
        gz("t10k-images-idx3-ubyte.gz"),
        gz("t10k-labels-idx1-ubyte.gz"),
    );
    for case in 0..120 {
        let (mut i, mut l) = (images.clone(), labels.clone());
        if case % 2 == 0 {
            mutate(&mut rng, &mut i, 64);
        } else {
            mutate(&mut rng, &mut l, 32);
        }
        std::fs::write(dir.join("i"), &i).unwrap();
        std::fs::write(dir.join("l"), &l).unwrap();
        let r =
            std::panic::catch_unwind(|| read_idx(&dir.join("i"), &dir.join("l"), 1, 8, 10).is_ok());
        tally(r, "IDX");
    }
    // CIFAR: a generated batch.
    let mut batch = Vec::new();
    for k in 0..4u8 {
        batch.extend(cifar_record(k, k * 40));
    }
    for _ in 0..60 {
        let mut b = batch.clone();
        mutate(&mut rng, &mut b, 3073 * 4);
        std::fs::write(dir.join("c.bin"), &b).unwrap();
        let r =
            std::panic::catch_unwind(|| read_cifar(&[dir.join("c.bin")], false, 3, 8, 10).is_ok());
        tally(r, "CIFAR");
    }
    // Photos: a real JPEG and PNG from foolbox, mutated, decoded on demand.
    let photos = std::env::var_os("DNARUN_TEST_FOOLBOX").expect("DNARUN_TEST_FOOLBOX must be set");
    for (src, ext) in [("imagenet_00_243.jpg", "jpg"), ("cifar10_00_3.png", "png")] {
        let clean = std::fs::read(Path::new(&photos).join(src)).unwrap();
        for _ in 0..60 {
            let mut b = clean.clone();
            mutate(&mut rng, &mut b, 2048);
            let flat = dir.join("flat");
            let _ = std::fs::remove_dir_all(&flat);
            std::fs::create_dir_all(&flat).unwrap();
            std::fs::write(flat.join(format!("x_1.{ext}")), &b).unwrap();
            let r = std::panic::catch_unwind(|| {
                read_flat_folder(&flat, 3, 32, 10, 0.875).is_ok_and(|im| im.image(0).is_ok())
            });
            tally(r, "photo");
        }
    }
    // A 16-byte IDX header whose sizes multiply past 2^64, and 0x0 images.
    let mut h = vec![0, 0, 8, 3];
    for d in [u32::MAX, u32::MAX, u32::MAX] {
        h.extend(d.to_be_bytes());
    }
    std::fs::write(dir.join("wrap"), &h).unwrap();
    std::fs::write(dir.join("l"), &labels).unwrap();
    assert!(
        read_idx(&dir.join("wrap"), &dir.join("l"), 1, 8, 10)
            .unwrap_err()
            .to_string()
            .contains("truncated")
    );
    let mut z = vec![0, 0, 8, 3];
    for d in [10u32, 0, 0] {
        z.extend(d.to_be_bytes());
    }
    std::fs::write(dir.join("zero"), &z).unwrap();
    assert!(
        read_idx(&dir.join("zero"), &dir.join("l"), 1, 8, 10)
            .unwrap_err()
            .to_string()
            .contains("0x0 pixels")
    );
    eprintln!("fuzzed dataset readers: {cases} cases, {errors} refused with an error, 0 crashes");
}

#[test]
fn batches_cross_to_the_device_as_bytes_and_are_normalised_there() {
    let pixels: Vec<u8> = (0..2 * 2 * 3 * 3).map(|i| (i * 17 % 256) as u8).collect();
    let (mean, std) = (vec![0.5f32, 0.25], vec![0.2f32, 0.4]);
    let b = dnarun::data::HostBatch {
        pixels: pixels.clone(),
        labels: vec![0, 1],
        shape: [2, 2, 3, 3],
        mean: mean.clone(),
        std: std.clone(),
    };
    let device = burn::tensor::Device::flex();
    let got = dnarun::nn::read_back(b.clone().into_tensors(&device).0);
    let want: Vec<f32> = pixels
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = i / 9 % 2;
            (v as f32 / 255.0 - mean[c]) / std[c]
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(dnarun::nn::read_back(b.images(&device)), want);
}

/// An aspect-ratio range far from every photo's (a 20x16 photo cropped to a ratio of 100, or of
/// 1/1000) still gives a crop of at least one pixel each way: batches, not a panic.
#[test]
fn an_extreme_crop_ratio_range_still_crops() {
    let dir = photo_folder("photos-small", 100, 6);
    for ratio in ["[100.0, 200.0]", "[0.001, 0.002]"] {
        let plan = photo_plan(&dir, &[format!("data.augment.ratio={ratio}")]);
        let b = all_batches(&plan, true);
        assert_eq!(b[0].shape, [16, 3, 192, 192], "ratio {ratio}");
    }
}

/// `dnarun ARGS...`: (exit code, stdout, stderr).
fn dnarun(args: &[String]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dnarun"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn args(cmd: &str, recipe: &str, sets: &[String]) -> Vec<String> {
    let mut a = vec![cmd.to_string(), recipe.to_string()];
    for s in sets {
        a.extend(["--set".to_string(), s.clone()]);
    }
    a
}

/// `validate` and `plan` read the data and the teacher's weights as a run would, so a recipe that
/// cannot run is not called valid; `--skip-data-checks` leaves them out and says so.
#[test]
fn validate_and_plan_read_the_data_and_the_weights_as_a_run_would() {
    let tiny = "tests/fixtures/tiny.toml";
    let bad = [
        ("data.classes=1000", "set `data.classes = 10`"),
        (
            "data.samples_per_class=600",
            "fewer than `data.samples_per_class` + `data.rate_per_class` = 604",
        ),
        (
            "data.train.images=\"../../data/nope.gz\"",
            "data/nope.gz` does not exist",
        ),
    ];
    for (set, says) in bad {
        for cmd in ["validate", "plan"] {
            let (code, out, err) = dnarun(&args(cmd, tiny, &[set.to_string()]));
            assert_eq!(code, Some(2), "{cmd} {set}: {out}{err}");
            assert!(err.contains(says), "{cmd} {set}: {err}");
            assert!(!out.contains("is valid"), "{out}");
        }
        let (code, out, err) = dnarun(&[
            "validate".into(),
            "--skip-data-checks".into(),
            tiny.into(),
            "--set".into(),
            set.into(),
        ]);
        assert_eq!(code, Some(0), "{err}");
        assert!(
            out.contains("is valid\nnot checked (`--skip-data-checks`): the data"),
            "{out}"
        );
    }
    let (code, out, err) = dnarun(&args("validate", tiny, &[]));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("checked: the data (5000 training and 1000 test images"),
        "{out}"
    );

    // A class folder holding a file manager's `.DS_Store` and a hidden folder beside the
    // classes: both ignored.
    let dir = scratch("hidden-files");
    let photos = photo_folder("photos-3x6", 3, 6);
    for class in ["n00000000", "n00000001", "n00000002"] {
        let to = dir.join(class);
        std::fs::create_dir_all(&to).unwrap();
        for e in std::fs::read_dir(photos.join(class)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
    std::fs::write(dir.join("n00000001/.DS_Store"), b"\0\0\0\x01Bud1").unwrap();
    std::fs::write(dir.join("n00000001/._img_00000.jpg"), b"AppleDouble").unwrap();
    std::fs::create_dir_all(dir.join(".ipynb_checkpoints")).unwrap();
    let abs = dir.canonicalize().unwrap();
    let photo_sets = [
        format!("data.train.dir=\"{}\"", abs.display()),
        format!("data.test.dir=\"{}\"", abs.display()),
        "data.classes=3".to_string(),
    ];
    let (code, out, err) = dnarun(&args("plan", "tests/fixtures/photos.toml", &photo_sets));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("train split: 18 images, 3 classes, 6 per class"),
        "{out}"
    );

    // The paper's teacher on those photos: its weights file is read at `validate`, and a run
    // whose weights cannot be read creates nothing.
    let lite0 = std::env::var("DNARUN_TEST_LITE0")
        .expect("DNARUN_TEST_LITE0 must be set: run the suite with `scripts/test`");
    let junk = scratch("weights").join("junk.pth");
    std::fs::write(&junk, b"not a checkpoint").unwrap();
    let runs = scratch("weights-runs").canonicalize().unwrap();
    let paper = |weights: &str| {
        let mut sets = photo_sets.to_vec();
        sets.extend([
            "data.samples_per_class=2".to_string(),
            "data.rate_per_class=1".into(),
            format!("teacher.weights.path=\"{weights}\""),
            format!("experiment.output_dir=\"{}\"", runs.display()),
            format!("tracking.uri=\"file:{}/mlruns\"", runs.display()),
        ]);
        sets
    };
    let recipe = "recipes/dna-imagenet.toml";
    let (code, out, err) = dnarun(&args("validate", recipe, &paper(&lite0)));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("the teacher's weights `"), "{out}");
    let missing = runs.join("missing.pth").display().to_string();
    for (weights, says) in [
        (missing.as_str(), "missing.pth` cannot be read"),
        (junk.to_str().unwrap(), "junk.pth"),
    ] {
        for cmd in ["validate", "run"] {
            let (code, _, err) = dnarun(&args(cmd, recipe, &paper(weights)));
            assert_eq!(code, Some(2), "{cmd}: {err}");
            assert!(err.contains(says), "{cmd}: {err}");
        }
    }
    assert!(
        std::fs::read_dir(&runs).unwrap().next().is_none(),
        "a run whose weights cannot be read writes nothing"
    );
}
