//! Data loading throughput on an ImageNet-shaped folder: 100 class folders x 50 JPEGs of real
//! photo content at about 500x375 (made once from the foolbox ImageNet photos with varied crops
//! and JPEG quality, under `target/data-bench/`). Prints decoded + augmented images/s at 224 px
//! (training view: decode, resize, random resized crop, flip, normalise; evaluation view:
//! decode, resize, centre crop, normalise) for 1, 2 and all workers, then runs the Pillow
//! reference (`examples/pillow_ref.py`: the same work with one process per core, same files)
//! when a Python with Pillow is given, and prints the ratios.
//!
//! `scripts/bench-data` installs Pillow and runs this: `cargo run --release --example data_bench
//! -- PHOTOS_DIR [PYTHON]`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use dnarun::data::{Loader, Preprocess, batches, read_folder};
use image::codecs::jpeg::JpegEncoder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

const CLASSES: usize = 100;
const PER_CLASS: usize = 50;

fn make_folder(photos: &Path, dir: &Path) {
    if dir.join(".complete").exists() {
        return;
    }
    let sources = common::imagenet_photos(photos);
    let images: Vec<image::RgbImage> = sources
        .iter()
        .map(|p| image::open(p).unwrap().to_rgb8())
        .collect();
    (0..CLASSES).into_par_iter().for_each(|c| {
        let class = dir.join(format!("n{c:08}"));
        std::fs::create_dir_all(&class).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(c as u64);
        for i in 0..PER_CLASS {
            let src = &images[(c * PER_CLASS + i) % images.len()];
            // A crop of 60-100 % of the photo, scaled to about 500x375 (either orientation).
            let (w, h) = (src.width(), src.height());
            let f = rng.random_range(0.6..=1.0);
            let (cw, ch) = ((w as f64 * f) as u32, (h as f64 * f * 0.75) as u32);
            let (x, y) = (rng.random_range(0..=w - cw), rng.random_range(0..=h - ch));
            let crop = image::imageops::crop_imm(src, x, y, cw, ch).to_image();
            let (tw, th) = if rng.random_bool(0.8) {
                (500, 375)
            } else {
                (375, 500)
            };
            let img = image::imageops::resize(&crop, tw, th, image::imageops::FilterType::Triangle);
            let quality = rng.random_range(75..=95);
            let mut bytes = Vec::new();
            JpegEncoder::new_with_quality(&mut bytes, quality)
                .encode_image(&img)
                .unwrap();
            std::fs::write(class.join(format!("img_{i:03}.JPEG")), bytes).unwrap();
        }
    });
    std::fs::write(dir.join(".complete"), "").unwrap();
}

fn rate(dir: &Path, workers: usize, augment: bool) -> f64 {
    let mut plan = common::plan("recipes/dna-imagenet.toml", &[]);
    plan.data.classes = CLASSES;
    let images = std::sync::Arc::new(read_folder(dir, 3, 224, CLASSES, 0.875).unwrap());
    let idx: Vec<usize> = (0..images.len()).collect();
    let pre = Preprocess::new(&plan.data, augment);
    let t = Instant::now();
    let n: usize = Loader::start(images, batches(&idx, 64, Some(1)), pre, 0, workers)
        .map(|b| b.unwrap().labels.len())
        .sum();
    n as f64 / t.elapsed().as_secs_f64()
}

#[path = "../tests/common/mod.rs"]
mod common;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let photos = PathBuf::from(args.get(1).expect("usage: data_bench PHOTOS_DIR [PYTHON]"));
    let python = args.get(2);
    let dir = PathBuf::from("target/data-bench/imagenet-shaped");
    let t = Instant::now();
    make_folder(&photos, &dir);
    println!(
        "folder: {CLASSES} classes x {PER_CLASS} JPEGs (~500x375) ready in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let images = read_folder(&dir, 3, 224, CLASSES, 0.875).unwrap();
    println!(
        "index: {} files in {:.3}s",
        images.len(),
        t.elapsed().as_secs_f64()
    );
    // Where one image's time goes, on one core: decoding, then scaling to the base size.
    let sample: Vec<PathBuf> = images.files.iter().take(200).cloned().collect();
    let t = Instant::now();
    let decoded: Vec<image::RgbImage> = sample
        .iter()
        .map(|p| image::open(p).unwrap().to_rgb8())
        .collect();
    let decode = t.elapsed().as_secs_f64() / sample.len() as f64;
    let t = Instant::now();
    for p in &sample {
        let _ = dnarun::data::decode_photo(p, 256).unwrap();
    }
    let both = t.elapsed().as_secs_f64() / sample.len() as f64;
    println!(
        "one core: JPEG decode {:.2} ms, decode + resize to 256 {:.2} ms per image ({} x {} px)",
        decode * 1e3,
        both * 1e3,
        decoded[0].width(),
        decoded[0].height()
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut counts = vec![1, 2, cores];
    counts.dedup();
    let mut ours = Vec::new();
    for &w in &counts {
        let train = rate(&dir, w, true);
        let eval = rate(&dir, w, false);
        println!(
            "dnarun {w} worker(s): {train:.0} images/s training view, {eval:.0} images/s evaluation view ({:.0} / {:.0} per worker)",
            train / w as f64,
            eval / w as f64
        );
        ours.push((w, train, eval));
    }
    let Some(python) = python else {
        println!("no Python given: skipping the Pillow reference");
        return;
    };
    let out = std::process::Command::new(python)
        .args(["examples/pillow_ref.py", &dir.display().to_string()])
        .output()
        .expect("the Python with Pillow");
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    let field = |key: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    if let (Some(pt), Some(pe), Some(procs)) = (field("train"), field("eval"), field("processes")) {
        let (w, t, e) = ours.last().copied().unwrap();
        println!(
            "ratio dnarun/Pillow at {w} workers vs {procs} processes: training view {:.2}x, evaluation view {:.2}x",
            t / pt,
            e / pe
        );
        println!(
            "per core: dnarun {:.0} / {:.0}, Pillow {:.0} / {:.0} images/s (training / evaluation)",
            t / w as f64,
            e / w as f64,
            pt / procs,
            pe / procs
        );
    }
}
