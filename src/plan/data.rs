//! The data section resolved: the files of each split as absolute paths in the form the format
//! reads, normalisation per channel, and the subsets' sizes.

use std::path::{Path, PathBuf};

use super::problems::Problems;
use crate::recipe::{Data, DataFormat, Split};

/// The files of one split.
#[derive(Debug, Clone, PartialEq)]
pub enum SplitSpec {
    /// IDX: an images file and a labels file (optionally gzipped).
    Idx {
        /// Images.
        images: PathBuf,
        /// Labels.
        labels: PathBuf,
    },
    /// CIFAR binary batches.
    Cifar {
        /// The batch files.
        files: Vec<PathBuf>,
    },
    /// A folder (of class folders, or flat with labels in the names).
    Folder {
        /// The folder.
        dir: PathBuf,
    },
}

/// The resolved data.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSpec {
    /// Format of both splits.
    pub format: DataFormat,
    /// Training split.
    pub train: SplitSpec,
    /// Test split.
    pub test: SplitSpec,
    /// Classes.
    pub classes: usize,
    /// Side of the square images the networks see.
    pub image_size: usize,
    /// Image channels.
    pub channels: usize,
    /// Images per class to distill on.
    pub samples_per_class: usize,
    /// Images per class to rate on (disjoint from the distillation ones).
    pub rate_per_class: usize,
    /// Training images per class for the teacher and retraining (all when `None`).
    pub train_per_class: Option<usize>,
    /// Test images per class (all when `None`).
    pub test_per_class: Option<usize>,
    /// Normalisation mean, one per channel.
    pub mean: Vec<f32>,
    /// Normalisation std, one per channel.
    pub std: Vec<f32>,
    /// Random-crop padding of training images (0: none).
    pub crop_padding: usize,
    /// Random horizontal flips of training images.
    pub hflip: bool,
    /// Photos: the random resized crop's area range (fraction of the image).
    pub scale: [f64; 2],
    /// Photos: the random resized crop's aspect-ratio range.
    pub ratio: [f64; 2],
    /// Photos: the centre crop's fraction of the decoded image's shorter side.
    pub eval_crop: f64,
    /// Photos: keep decoded distillation and rating images in memory.
    pub cache: bool,
    /// Photos: skip undecodable images instead of failing.
    pub skip_bad: bool,
    /// Default batch size.
    pub batch_size: usize,
    /// Threads that decode and augment images.
    pub workers: usize,
}

/// The recipe spelling of a data format.
pub fn format_name(f: DataFormat) -> &'static str {
    match f {
        DataFormat::Idx => "idx",
        DataFormat::Cifar10 => "cifar10",
        DataFormat::Cifar100 => "cifar100",
        DataFormat::Folder => "folder",
        DataFormat::FlatFolder => "flat-folder",
    }
}

/// Resolves the data section; `normalize` is `data.normalize`, or its default for the teacher.
pub(super) fn resolve(
    d: &Data,
    normalize: &crate::recipe::Normalize,
    base: &Path,
    p: &mut Problems,
) -> DataSpec {
    for (split, s) in [("train", &d.train), ("test", &d.test)] {
        let need: &[(&str, bool)] = match d.format {
            DataFormat::Idx => &[
                ("images", s.images.is_some()),
                ("labels", s.labels.is_some()),
            ],
            DataFormat::Cifar10 | DataFormat::Cifar100 => &[("files", s.files.is_some())],
            DataFormat::Folder | DataFormat::FlatFolder => &[("dir", s.dir.is_some())],
        };
        for (key, present) in need {
            if !present {
                p.err(
                    &format!("/data/{split}"),
                    format!(
                        "`data.{split}.{key}` is missing: `data.format = \"{}\"` reads it",
                        format_name(d.format)
                    ),
                    None,
                );
            }
        }
    }
    for (key, v) in [("mean", &normalize.mean), ("std", &normalize.std)] {
        if v.len() != 1 && v.len() != d.channels {
            p.err(
                &format!("/data/normalize/{key}"),
                format!(
                    "`data.normalize.{key}` has {} values; give 1 or `data.channels` ({})",
                    v.len(),
                    d.channels
                ),
                None,
            );
        }
    }
    for (i, s) in normalize.std.iter().enumerate() {
        if *s <= 0.0 {
            p.err(
                &format!("/data/normalize/std/{i}"),
                format!("`data.normalize.std[{i}]` must be positive, found {s}"),
                None,
            );
        }
    }
    for (key, r, lo) in [
        ("scale", d.augment.scale, 0.0),
        ("ratio", d.augment.ratio, 0.0),
    ] {
        if !(r[0] > lo && r[0] <= r[1] && r[1].is_finite() && (key != "scale" || r[1] <= 1.0)) {
            p.err(
                &format!("/data/augment/{key}"),
                format!(
                    "`data.augment.{key}` is [{}, {}]; it must be [low, high] with 0 < low <= high{}",
                    r[0],
                    r[1],
                    if key == "scale" { " <= 1" } else { "" }
                ),
                None,
            );
        }
    }
    // One value applies to every channel.
    let per = |v: &Vec<f32>| {
        (0..d.channels)
            .map(|c| {
                v.get(c.min(v.len().saturating_sub(1)))
                    .copied()
                    .unwrap_or(1.0)
            })
            .collect()
    };
    DataSpec {
        format: d.format,
        train: split(d.format, &d.train, base),
        test: split(d.format, &d.test, base),
        classes: d.classes,
        image_size: d.image_size,
        channels: d.channels,
        samples_per_class: d.samples_per_class,
        rate_per_class: d.rate_per_class,
        train_per_class: d.train_per_class,
        test_per_class: d.test_per_class,
        mean: per(&normalize.mean),
        std: per(&normalize.std),
        crop_padding: d.augment.crop_padding,
        hflip: d.augment.hflip,
        scale: d.augment.scale,
        ratio: d.augment.ratio,
        eval_crop: d.eval_crop,
        cache: d.cache,
        skip_bad: d.skip_bad,
        batch_size: d.batch_size,
        workers: d.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        }),
    }
}

fn split(format: DataFormat, s: &Split, base: &Path) -> SplitSpec {
    let p = |v: &Option<String>| base.join(v.as_deref().unwrap_or_default());
    match format {
        DataFormat::Idx => SplitSpec::Idx {
            images: p(&s.images),
            labels: p(&s.labels),
        },
        DataFormat::Cifar10 | DataFormat::Cifar100 => SplitSpec::Cifar {
            files: s.files.iter().flatten().map(|f| base.join(f)).collect(),
        },
        DataFormat::Folder | DataFormat::FlatFolder => SplitSpec::Folder { dir: p(&s.dir) },
    }
}
