//! Datasets in real formats, deterministic per-class sampling into the roles DNA needs (a search
//! subset to distill on, a disjoint rating subset, the training set for teacher and retraining,
//! the untouched test split), preprocessing, augmentation and batching on background threads.

mod formats;
mod images;
mod pixels;
mod preprocess;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

pub use formats::{photo_base, read_cifar, read_flat_folder, read_folder, read_idx};
pub use images::{Images, Pixels, decode_photo};
pub use pixels::centre_crop;
pub use preprocess::Preprocess;

use crate::plan::{DataFormat, DataSpec, Plan, SplitSpec};

/// A dataset problem: which file, what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder is missing, unreadable or malformed.
    #[error("dataset file `{path}` {problem}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it, and how to fix it where that is not obvious.
        problem: String,
    },
    /// The images cannot fill the requested subsets.
    #[error("{0}")]
    Sampling(String),
}

impl DataError {
    pub(crate) fn file(path: &Path, problem: String) -> DataError {
        DataError::File {
            path: path.to_path_buf(),
            problem,
        }
    }
}

/// The images of a run, split into the roles of the method.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The training split.
    pub train: Arc<Images>,
    /// The test split.
    pub test: Arc<Images>,
    /// Indices into `train` of the search subset (distillation).
    pub search: Vec<usize>,
    /// Indices into `train` of the rating subset (disjoint from `search`).
    pub rate: Vec<usize>,
    /// Indices into `train` used to train the teacher and retrain students.
    pub train_idx: Vec<usize>,
    /// Indices into `test` used to report accuracy.
    pub test_idx: Vec<usize>,
    /// SHA-256 of the data files and the chosen indices.
    pub fingerprint: String,
    /// SHA-256 of the data files alone (photo folders: their list of files, sizes and labels):
    /// with the index sets a stage reads, what its cache key holds of the data.
    pub files_fingerprint: String,
}

/// Reads one split.
pub fn read_split(d: &DataSpec, split: &SplitSpec) -> Result<Images, DataError> {
    let check = |path: &PathBuf| -> Result<PathBuf, DataError> {
        if path.exists() {
            Ok(path.clone())
        } else {
            Err(DataError::file(
                path,
                "does not exist; check the path in `data` (relative to the recipe)".into(),
            ))
        }
    };
    match (split, d.format) {
        (SplitSpec::Idx { images, labels }, _) => read_idx(
            &check(images)?,
            &check(labels)?,
            d.channels,
            d.image_size,
            d.classes,
        ),
        (SplitSpec::Cifar { files }, format) => {
            let files = files.iter().map(check).collect::<Result<Vec<_>, _>>()?;
            read_cifar(
                &files,
                format == DataFormat::Cifar100,
                d.channels,
                d.image_size,
                d.classes,
            )
        }
        (SplitSpec::Folder { dir }, DataFormat::FlatFolder) => read_flat_folder(
            &check(dir)?,
            d.channels,
            d.image_size,
            d.classes,
            d.eval_crop,
        ),
        (SplitSpec::Folder { dir }, _) => read_folder(
            &check(dir)?,
            d.channels,
            d.image_size,
            d.classes,
            d.eval_crop,
        ),
    }
}

/// Per class, the indices of `labels` in a seeded random order.
fn shuffled_by_class(labels: &[usize], classes: usize, seed: u64, salt: u64) -> Vec<Vec<usize>> {
    let mut by_class = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l].push(i);
    }
    for (c, v) in by_class.iter_mut().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(
            seed ^ (salt << 32) ^ (c as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        v.shuffle(&mut rng);
    }
    by_class
}

/// Reads (or, for photo folders, indexes) both splits and draws the subsets.
pub fn load(plan: &Plan) -> Result<Dataset, DataError> {
    let d = &plan.data;
    let train = read_split(d, &d.train)?;
    let test = read_split(d, &d.test)?;
    subsets(d, plan.seeds.subsets(), train, test)
}

/// [`load`] without the fingerprint (empty), which reads the bytes of every sampled photo: what
/// `validate` and `plan` need to know that the data can be read and sampled, at the cost of
/// listing the folders only.
pub fn load_unhashed(plan: &Plan) -> Result<Dataset, DataError> {
    let d = &plan.data;
    let train = read_split(d, &d.train)?;
    let test = read_split(d, &d.test)?;
    draw(d, plan.seeds.subsets(), train, test, false)
}

/// SHA-256 of the dataset: small formats hash their files; photo folders hash the sorted list
/// of (path relative to the folder, size, label) and the bytes of the images in `sampled` (the
/// distillation and rating subsets), so a start never reads the whole dataset.
fn fingerprint(
    train: &Images,
    test: &Images,
    sampled: &[usize],
    sets: &[&Vec<usize>],
) -> (String, String) {
    let mut h = Sha256::new();
    for split in [train, test] {
        if split.is_photos() {
            let root = common_root(&split.files);
            for ((f, size), label) in split.files.iter().zip(&split.file_sizes).zip(&split.labels) {
                let rel = f.strip_prefix(&root).unwrap_or(f);
                h.update(rel.to_string_lossy().as_bytes());
                h.update(size.to_le_bytes());
                h.update((*label as u64).to_le_bytes());
            }
        } else {
            for f in &split.files {
                if let Ok(bytes) = std::fs::read(f) {
                    h.update(&bytes);
                }
            }
        }
    }
    let files = format!("{:x}", h.clone().finalize());
    if train.is_photos() {
        use rayon::prelude::*;
        let digests: Vec<Vec<u8>> = sampled
            .par_iter()
            .map(|&i| {
                let bytes = std::fs::read(&train.files[i]).unwrap_or_default();
                Sha256::digest(&bytes).to_vec()
            })
            .collect();
        for d in digests {
            h.update(&d);
        }
    }
    for set in sets {
        h.update((set.len() as u64).to_le_bytes());
        for &i in set.iter() {
            h.update((i as u64).to_le_bytes());
        }
    }
    (format!("{:x}", h.finalize()), files)
}

/// The longest folder every path lies in.
fn common_root(files: &[PathBuf]) -> PathBuf {
    let Some(first) = files.first() else {
        return PathBuf::new();
    };
    let mut root = first.parent().map(Path::to_path_buf).unwrap_or_default();
    for f in files {
        while !f.starts_with(&root) {
            if !root.pop() {
                return PathBuf::new();
            }
        }
    }
    root
}

/// Draws the subsets of already-read splits.
pub fn subsets(d: &DataSpec, seed: u64, train: Images, test: Images) -> Result<Dataset, DataError> {
    draw(d, seed, train, test, true)
}

fn draw(
    d: &DataSpec,
    seed: u64,
    train: Images,
    test: Images,
    hash: bool,
) -> Result<Dataset, DataError> {
    // Every class is sampled from the training split, so it must have them all (a test split
    // may lack some: a validation subset of an ImageNet teacher's classes).
    let present = train.labels.iter().max().map_or(0, |m| m + 1);
    if present < d.classes {
        return Err(DataError::Sampling(format!(
            "`data.classes` is {}, but the labels of the training split go up to {} ({present} classes); set `data.classes = {present}`",
            d.classes,
            present.saturating_sub(1),
        )));
    }
    let by_class = shuffled_by_class(&train.labels, d.classes, seed, 1);
    let need = d.samples_per_class + d.rate_per_class;
    let (mut search, mut rate, mut train_idx) = (Vec::new(), Vec::new(), Vec::new());
    for (c, v) in by_class.iter().enumerate() {
        if v.len() < need {
            return Err(DataError::Sampling(format!(
                "class {c} (`{}`) of the training split has {} images, fewer than `data.samples_per_class` + `data.rate_per_class` = {need}; lower them or add images",
                train.class_names.get(c).map(String::as_str).unwrap_or("?"),
                v.len()
            )));
        }
        search.extend_from_slice(&v[..d.samples_per_class]);
        rate.extend_from_slice(&v[d.samples_per_class..need]);
        let n = d.train_per_class.map_or(v.len(), |n| n.min(v.len()));
        train_idx.extend_from_slice(&v[..n]);
    }
    let mut test_idx = Vec::new();
    for v in shuffled_by_class(&test.labels, d.classes, seed, 2) {
        let n = d.test_per_class.map_or(v.len(), |n| n.min(v.len()));
        let mut chosen = v[..n].to_vec();
        chosen.sort_unstable();
        test_idx.extend(chosen);
    }
    let mut sampled: Vec<usize> = search.iter().chain(&rate).copied().collect();
    sampled.sort_unstable();
    let (fingerprint, files_fingerprint) = if hash {
        fingerprint(
            &train,
            &test,
            &sampled,
            &[&search, &rate, &train_idx, &test_idx],
        )
    } else {
        (String::new(), String::new())
    };
    let mut train = train;
    if d.cache {
        train.allow_cache(&sampled);
    }
    Ok(Dataset {
        train: Arc::new(train),
        test: Arc::new(test),
        search,
        rate,
        train_idx,
        test_idx,
        fingerprint,
        files_fingerprint,
    })
}

/// A batch on the host: CHW pixels as bytes, labels, and the normalisation that the device
/// applies after the upload (a quarter of the bytes of normalised floats cross to the device).
#[derive(Debug, Clone)]
pub struct HostBatch {
    /// `n * c * h * w` pixels.
    pub pixels: Vec<u8>,
    /// Labels.
    pub labels: Vec<i64>,
    /// Shape `[n, c, h, w]`.
    pub shape: [usize; 4],
    /// Per-channel mean of `pixel / 255`.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation of `pixel / 255`.
    pub std: Vec<f32>,
}

impl HostBatch {
    /// The normalised images as a tensor: `(pixel / 255 - mean) / std`, computed on the device
    /// from the pixels uploaded as bytes (as 32-bit integers where the device has no 8-bit
    /// type).
    pub fn images(&self, device: &Device) -> Tensor<4> {
        upload(
            self.pixels.clone(),
            self.shape,
            &self.mean,
            &self.std,
            device,
        )
    }

    /// The images and labels as tensors, without copying the pixels on the host.
    pub fn into_tensors(self, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
        let y = self.labels(device);
        (
            upload(self.pixels, self.shape, &self.mean, &self.std, device),
            y,
        )
    }

    /// The labels as a tensor.
    pub fn labels(&self, device: &Device) -> Tensor<1, Int> {
        Tensor::from_data(
            TensorData::new(self.labels.clone(), [self.labels.len()]),
            device,
        )
    }
}

fn upload(
    pixels: Vec<u8>,
    shape: [usize; 4],
    mean: &[f32],
    std: &[f32],
    device: &Device,
) -> Tensor<4> {
    let data = TensorData::new(pixels, shape);
    let x: Tensor<4, Int> = if device.supports_dtype(burn::tensor::DType::U8) {
        Tensor::from_data(data, (device, burn::tensor::DType::U8))
    } else {
        Tensor::from_data(data, device)
    };
    let c = shape[1];
    let per_channel = |v: &[f32]| {
        Tensor::<1>::from_data(TensorData::new(v.to_vec(), [c]), device).reshape([1, c, 1, 1])
    };
    (x.float() / 255.0 - per_channel(mean)) / per_channel(std)
}

/// Splits indices into batches, shuffled with a seed (or in order).
pub fn batches(idx: &[usize], batch: usize, shuffle_seed: Option<u64>) -> Vec<Vec<usize>> {
    let mut v = idx.to_vec();
    if let Some(seed) = shuffle_seed {
        v.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    }
    v.chunks(batch.max(1)).map(<[usize]>::to_vec).collect()
}

/// How many batches are decoded ahead of the one the model computes on.
const PREFETCH: usize = 2;

/// Decodes batches in order on a background thread, each batch's images in parallel on a pool
/// of `workers` threads, at most [`PREFETCH`] batches ahead: memory stays bounded by the
/// prefetch depth whatever the size of the dataset.
pub struct Loader {
    rx: Receiver<Result<HostBatch, DataError>>,
}

impl Loader {
    /// Starts decoding `batches` of `images`; batch i is augmented with seed `seed + i`.
    pub fn start(
        images: Arc<Images>,
        batches: Vec<Vec<usize>>,
        pre: Preprocess,
        seed: u64,
        workers: usize,
    ) -> Loader {
        let (tx, rx) = sync_channel(PREFETCH);
        std::thread::spawn(move || {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(workers.max(1))
                .thread_name(|i| format!("dnarun-data-{i}"))
                .build();
            let pool = match pool {
                Ok(p) => p,
                Err(e) => {
                    let _ = tx.send(Err(DataError::Sampling(format!(
                        "cannot start the data loading threads: {e}"
                    ))));
                    return;
                }
            };
            for (i, idx) in batches.iter().enumerate() {
                let b = pool.install(|| pre.batch(&images, idx, seed.wrapping_add(i as u64)));
                // Every image of this batch was skipped (`data.skip_bad`): nothing to send.
                if b.as_ref().is_ok_and(|b| b.labels.is_empty()) {
                    continue;
                }
                let failed = b.is_err();
                if tx.send(b).is_err() || failed {
                    return;
                }
            }
        });
        Loader { rx }
    }
}

impl Iterator for Loader {
    type Item = Result<HostBatch, DataError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.rx.recv().ok()
    }
}
