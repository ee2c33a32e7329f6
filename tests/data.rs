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
    assert_eq!(train.image(0)[0], 0);
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
    let images = read_flat_folder(&dir, 3, 32, 10).unwrap();
    // The first 20 CIFAR-10 test labels.
    assert_eq!(
        images.labels,
        vec![3, 8, 8, 0, 6, 6, 1, 6, 3, 1, 0, 9, 5, 7, 9, 8, 5, 7, 8, 6]
    );
    assert_eq!(images.pixels.len(), 20 * 3 * 32 * 32);
    // Resizing to 16 px and converting to grey keep the count.
    let small = read_flat_folder(&dir, 1, 16, 10).unwrap();
    assert_eq!(small.pixels.len(), 20 * 16 * 16);
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
    let images = read_folder(&dir, 3, 24, n_classes).unwrap();
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
    assert_eq!(images.image(1)[0], 200);
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
    Images {
        channels: 1,
        size: 2,
        pixels: vec![0; labels.len() * 4],
        labels,
        class_names: (0..10).map(|c| c.to_string()).collect(),
        files: vec![],
    }
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

fn expect_err(r: Result<Images, DataError>, needles: &[&str]) {
    let e = r.expect_err("should fail").to_string();
    for n in needles {
        assert!(e.contains(n), "`{n}` not in: {e}");
    }
}

#[test]
fn bad_inputs_get_clear_errors() {
    let dir = scratch("bad");
    let small = Path::new("data/fashion-mnist-small");
    let (imgs, labs) = (
        small.join("train-images-idx3-ubyte.gz"),
        small.join("train-labels-idx1-ubyte.gz"),
    );
    // Missing file.
    expect_err(
        read_idx(&dir.join("nope.gz"), &labs, 1, 28, 10),
        &["nope.gz", "cannot be read"],
    );
    // Wrong magic: labels given as images.
    expect_err(
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
        read_idx(&cut, &labs, 1, 28, 10),
        &["cut-images-idx3-ubyte", "is truncated", "5000 images"],
    );
    // Unequal counts.
    let few = dir.join("few-labels-idx1-ubyte");
    let mut l = vec![0, 0, 8, 1, 0, 0, 0, 3];
    l.extend([1, 2, 3]);
    std::fs::write(&few, &l).unwrap();
    expect_err(
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
        read_folder(&folder, 3, 8, 1),
        &["notes.txt", "is not a PNG or JPEG"],
    );
    // A corrupt image.
    std::fs::remove_file(folder.join("cat/notes.txt")).unwrap();
    std::fs::write(folder.join("cat/broken.png"), b"\x89PNG not really").unwrap();
    expect_err(
        read_folder(&folder, 3, 8, 1),
        &["broken.png", "is not a readable PNG/JPEG image"],
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
