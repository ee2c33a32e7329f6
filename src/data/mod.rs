//! Datasets in real formats, deterministic per-class sampling into the roles DNA needs (a search
//! subset to distill on, a disjoint rating subset, the training set for teacher and retraining,
//! the untouched test split), preprocessing, augmentation and batching on background threads.

mod formats;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

pub use formats::{Images, read_cifar, read_flat_folder, read_folder, read_idx};

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
        (SplitSpec::Folder { dir }, DataFormat::FlatFolder) => {
            read_flat_folder(&check(dir)?, d.channels, d.image_size, d.classes)
        }
        (SplitSpec::Folder { dir }, _) => {
            read_folder(&check(dir)?, d.channels, d.image_size, d.classes)
        }
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

/// Loads both splits and draws the subsets.
pub fn load(plan: &Plan) -> Result<Dataset, DataError> {
    let d = &plan.data;
    let train = read_split(d, &d.train)?;
    let test = read_split(d, &d.test)?;
    subsets(d, plan.seeds.subsets(), train, test)
}

/// Draws the subsets of already-read splits.
pub fn subsets(d: &DataSpec, seed: u64, train: Images, test: Images) -> Result<Dataset, DataError> {
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
    let mut h = Sha256::new();
    for f in train.files.iter().chain(&test.files) {
        if let Ok(bytes) = std::fs::read(f) {
            h.update(&bytes);
        }
    }
    for set in [&search, &rate, &train_idx, &test_idx] {
        h.update((set.len() as u64).to_le_bytes());
        for &i in set.iter() {
            h.update((i as u64).to_le_bytes());
        }
    }
    let fingerprint = format!("{:x}", h.finalize());
    Ok(Dataset {
        train: Arc::new(train),
        test: Arc::new(test),
        search,
        rate,
        train_idx,
        test_idx,
        fingerprint,
    })
}

/// A batch on the host: normalised CHW floats and labels.
#[derive(Debug, Clone)]
pub struct HostBatch {
    /// `n * c * h * w` floats.
    pub images: Vec<f32>,
    /// Labels.
    pub labels: Vec<i64>,
    /// Shape `[n, c, h, w]`.
    pub shape: [usize; 4],
}

impl HostBatch {
    /// The images as a tensor.
    pub fn images(&self, device: &Device) -> Tensor<4> {
        Tensor::from_data(TensorData::new(self.images.clone(), self.shape), device)
    }

    /// The labels as a tensor.
    pub fn labels(&self, device: &Device) -> Tensor<1, Int> {
        Tensor::from_data(
            TensorData::new(self.labels.clone(), [self.labels.len()]),
            device,
        )
    }
}

/// Preprocessing: normalisation, and augmentation for training batches.
#[derive(Debug, Clone)]
pub struct Preprocess {
    mean: Vec<f32>,
    std: Vec<f32>,
    crop_padding: usize,
    hflip: bool,
}

impl Preprocess {
    /// From the plan's data; `augment` false gives plain normalisation (rating, test).
    pub fn new(d: &DataSpec, augment: bool) -> Preprocess {
        Preprocess {
            mean: d.mean.clone(),
            std: d.std.clone(),
            crop_padding: if augment { d.crop_padding } else { 0 },
            hflip: augment && d.hflip,
        }
    }

    /// Builds a batch of the given images; `rng_seed` drives augmentation.
    pub fn batch(&self, images: &Images, idx: &[usize], rng_seed: u64) -> HostBatch {
        let (c, s) = (images.channels, images.size);
        let mut rng = ChaCha8Rng::seed_from_u64(rng_seed);
        let mut out = Vec::with_capacity(idx.len() * c * s * s);
        let p = self.crop_padding as i64;
        for &i in idx {
            let img = images.image(i);
            let (dy, dx) = if p > 0 {
                (
                    rng.random_range(-p..=p) as isize,
                    rng.random_range(-p..=p) as isize,
                )
            } else {
                (0, 0)
            };
            let flip = self.hflip && rng.random_bool(0.5);
            for ch in 0..c {
                let (m, sd) = (self.mean[ch], self.std[ch]);
                let plane = &img[ch * s * s..(ch + 1) * s * s];
                for y in 0..s as isize {
                    for x in 0..s as isize {
                        let sx = if flip { s as isize - 1 - x } else { x };
                        let (yy, xx) = (y + dy, sx + dx);
                        let v = if yy >= 0 && yy < s as isize && xx >= 0 && xx < s as isize {
                            plane[(yy * s as isize + xx) as usize] as f32 / 255.0
                        } else {
                            0.0
                        };
                        out.push((v - m) / sd);
                    }
                }
            }
        }
        HostBatch {
            images: out,
            labels: idx.iter().map(|&i| images.labels[i] as i64).collect(),
            shape: [idx.len(), c, s, s],
        }
    }
}

/// Splits indices into batches, shuffled with a seed (or in order).
pub fn batches(idx: &[usize], batch: usize, shuffle_seed: Option<u64>) -> Vec<Vec<usize>> {
    let mut v = idx.to_vec();
    if let Some(seed) = shuffle_seed {
        v.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    }
    v.chunks(batch.max(1)).map(<[usize]>::to_vec).collect()
}

/// Decodes batches on `workers` background threads, delivered in order.
pub struct Loader {
    receivers: Vec<Receiver<HostBatch>>,
    next: usize,
    total: usize,
}

impl Loader {
    /// Starts decoding `batches` of `images`; batch i is augmented with seed `seed + i`.
    pub fn start(
        images: std::sync::Arc<Images>,
        batches: Vec<Vec<usize>>,
        pre: Preprocess,
        seed: u64,
        workers: usize,
    ) -> Loader {
        let workers = workers.max(1);
        let total = batches.len();
        let batches = std::sync::Arc::new(batches);
        let receivers = (0..workers)
            .map(|w| {
                let (tx, rx) = sync_channel(2);
                let (images, batches, pre) = (images.clone(), batches.clone(), pre.clone());
                std::thread::spawn(move || {
                    for i in (w..batches.len()).step_by(workers) {
                        if tx
                            .send(pre.batch(&images, &batches[i], seed.wrapping_add(i as u64)))
                            .is_err()
                        {
                            return;
                        }
                    }
                });
                rx
            })
            .collect();
        Loader {
            receivers,
            next: 0,
            total,
        }
    }
}

impl Iterator for Loader {
    type Item = HostBatch;
    fn next(&mut self) -> Option<HostBatch> {
        if self.next >= self.total {
            return None;
        }
        let w = self.next % self.receivers.len();
        self.next += 1;
        self.receivers[w].recv().ok()
    }
}
