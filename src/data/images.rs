//! The images of a split behind one interface, whatever the format: small formats (IDX, CIFAR
//! binaries) decoded into memory at the model's size; photo folders indexed as (file, label) and
//! decoded when a batch needs them, optionally cached after the first decode.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use image::RgbImage;

use super::DataError;

/// The images of one split.
#[derive(Debug)]
pub struct Images {
    /// Channels per image as the model sees it.
    pub channels: usize,
    /// Side of the square images the model sees.
    pub size: usize,
    /// Label per image.
    pub labels: Vec<usize>,
    /// Class names, by label.
    pub class_names: Vec<String>,
    /// In memory: the data files read. A photo folder: one file per image, sorted.
    pub files: Vec<PathBuf>,
    /// A photo folder: each file's size in bytes (for the fingerprint).
    pub file_sizes: Vec<u64>,
    source: Source,
}

#[derive(Debug)]
enum Source {
    /// Decoded at `size`, CHW u8, image after image.
    Memory(Vec<u8>),
    /// Photos decoded on demand.
    Photos(Photos),
}

#[derive(Debug)]
struct Photos {
    /// Decoded images are scaled so that their shorter side is this long.
    base: usize,
    /// Images kept after their first decode (those `cache` allows).
    cache: Vec<OnceLock<Arc<RgbImage>>>,
    /// Which images may be cached.
    cacheable: Vec<bool>,
    /// Images that could not be decoded and were skipped (`data.skip_bad`).
    skipped: Mutex<Vec<usize>>,
}

/// An image as a batch needs it.
pub enum Pixels<'a> {
    /// CHW u8 at the model's size (small formats).
    Sized(&'a [u8]),
    /// A decoded photo, RGB, shorter side at the base size.
    Photo(Arc<RgbImage>),
}

impl Images {
    /// Images decoded into memory: `pixels` holds `labels.len()` CHW images of `size`.
    pub fn in_memory(
        channels: usize,
        size: usize,
        pixels: Vec<u8>,
        labels: Vec<usize>,
        class_names: Vec<String>,
        files: Vec<PathBuf>,
    ) -> Images {
        Images {
            channels,
            size,
            labels,
            class_names,
            files,
            file_sizes: Vec::new(),
            source: Source::Memory(pixels),
        }
    }

    /// An indexed photo folder: one file per image, decoded on demand with its shorter side
    /// scaled to `base`.
    pub fn photos(
        channels: usize,
        size: usize,
        base: usize,
        files: Vec<(PathBuf, u64, usize)>,
        class_names: Vec<String>,
    ) -> Images {
        let n = files.len();
        let (mut paths, mut sizes, mut labels) = (Vec::new(), Vec::new(), Vec::new());
        for (p, s, l) in files {
            paths.push(p);
            sizes.push(s);
            labels.push(l);
        }
        Images {
            channels,
            size,
            labels,
            class_names,
            files: paths,
            file_sizes: sizes,
            source: Source::Photos(Photos {
                base,
                cache: (0..n).map(|_| OnceLock::new()).collect(),
                cacheable: vec![false; n],
                skipped: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Whether the images are photos decoded on demand (rather than small images in memory).
    pub fn is_photos(&self) -> bool {
        matches!(self.source, Source::Photos(_))
    }

    /// Images per class.
    pub fn histogram(&self, classes: usize) -> Vec<usize> {
        let mut h = vec![0; classes];
        for &l in &self.labels {
            if l < classes {
                h[l] += 1;
            }
        }
        h
    }

    /// Keeps these images in memory after their first decode (photos only; a no-op otherwise).
    pub fn allow_cache(&mut self, idx: &[usize]) {
        if let Source::Photos(p) = &mut self.source {
            for &i in idx {
                p.cacheable[i] = true;
            }
        }
    }

    /// Image `i`, decoding it if it is a photo.
    pub fn pixels(&self, i: usize) -> Result<Pixels<'_>, DataError> {
        match &self.source {
            Source::Memory(px) => {
                let n = self.channels * self.size * self.size;
                Ok(Pixels::Sized(&px[i * n..(i + 1) * n]))
            }
            Source::Photos(p) => {
                if let Some(img) = p.cache[i].get() {
                    return Ok(Pixels::Photo(img.clone()));
                }
                let img = Arc::new(decode_photo(&self.files[i], p.base)?);
                if p.cacheable[i] {
                    let _ = p.cache[i].set(img.clone());
                }
                Ok(Pixels::Photo(img))
            }
        }
    }

    /// The pixels of image `i` at the model's size, CHW u8: a small image as stored, a photo
    /// centre-cropped (the evaluation view).
    pub fn image(&self, i: usize) -> Result<Cow<'_, [u8]>, DataError> {
        Ok(match self.pixels(i)? {
            Pixels::Sized(px) => Cow::Borrowed(px),
            Pixels::Photo(img) => {
                Cow::Owned(super::pixels::centre_crop(&img, self.size, self.channels))
            }
        })
    }

    /// Records image `i` as skipped because it cannot be decoded.
    pub(crate) fn skip(&self, i: usize) {
        if let Source::Photos(p) = &self.source {
            p.skipped.lock().expect("not poisoned").push(i);
        }
    }

    /// The files skipped so far because they could not be decoded.
    pub fn skipped(&self) -> Vec<PathBuf> {
        match &self.source {
            Source::Photos(p) => {
                let mut v = p.skipped.lock().expect("not poisoned").clone();
                v.sort_unstable();
                v.dedup();
                v.into_iter().map(|i| self.files[i].clone()).collect()
            }
            _ => Vec::new(),
        }
    }
}

/// Decodes a PNG or JPEG and scales it so that its shorter side is `base` pixels.
pub fn decode_photo(path: &std::path::Path, base: usize) -> Result<RgbImage, DataError> {
    let bad = |e: String| {
        DataError::file(
            path,
            format!("is not a readable PNG/JPEG image: {}", e.trim()),
        )
    };
    let img = image::ImageReader::open(path)
        .map_err(|e| DataError::file(path, format!("cannot be read: {e}")))?
        .with_guessed_format()
        .map_err(|e| bad(e.to_string()))?
        .decode()
        .map_err(|e| bad(e.to_string()))?
        .to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return Err(bad("it has no pixels".into()));
    }
    let short = w.min(h);
    if short == base {
        return Ok(img);
    }
    let scaled = |long: usize| ((long * base + short / 2) / short).max(base);
    let (nw, nh) = if w <= h {
        (base, scaled(h))
    } else {
        (scaled(w), base)
    };
    Ok(super::pixels::resize(&img, None, nw as u32, nh as u32))
}
