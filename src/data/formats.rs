//! Readers for the dataset formats users have: IDX (raw or gzipped), CIFAR binary batches,
//! image folders (one folder per class) and flat folders whose file names carry the label.
//! Every image is brought to the model's size and channels on load.

use std::io::Read;
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use rayon::prelude::*;

use super::DataError;
use super::images::Images;

/// The most bytes a gzipped dataset file may inflate to (the full ImageNet as IDX would be less).
const MAX_INFLATED: u64 = 1 << 36;

/// Small images being read into memory, all brought to `channels x size x size`.
struct InMemory {
    channels: usize,
    size: usize,
    pixels: Vec<u8>,
    labels: Vec<usize>,
}

impl InMemory {
    fn new(channels: usize, size: usize) -> InMemory {
        InMemory {
            channels,
            size,
            pixels: Vec::new(),
            labels: Vec::new(),
        }
    }

    fn finish(self, classes: usize, files: Vec<PathBuf>) -> Images {
        Images::in_memory(
            self.channels,
            self.size,
            self.pixels,
            self.labels,
            (0..classes).map(|c| c.to_string()).collect(),
            files,
        )
    }

    fn push(&mut self, chw: &[u8], c: usize, h: usize, w: usize, label: usize) {
        let target = self.size;
        if c == self.channels && h == target && w == target {
            self.pixels.extend_from_slice(chw);
        } else {
            // Resize each channel, then map channels (grey -> RGB repeats, RGB -> grey averages).
            let mut planes: Vec<Vec<u8>> = (0..c)
                .map(|ch| {
                    let plane = &chw[ch * h * w..(ch + 1) * h * w];
                    if h == target && w == target {
                        plane.to_vec()
                    } else {
                        let img = image::GrayImage::from_raw(w as u32, h as u32, plane.to_vec())
                            .expect("plane size");
                        image::imageops::resize(
                            &img,
                            target as u32,
                            target as u32,
                            FilterType::Triangle,
                        )
                        .into_raw()
                    }
                })
                .collect();
            if c != self.channels {
                if c == 1 {
                    planes = vec![planes[0].clone(); self.channels];
                } else if self.channels == 1 {
                    let n = planes[0].len();
                    let grey = (0..n)
                        .map(|i| (planes.iter().map(|p| p[i] as u32).sum::<u32>() / c as u32) as u8)
                        .collect();
                    planes = vec![grey];
                } else {
                    planes.truncate(self.channels);
                }
            }
            for p in planes {
                self.pixels.extend_from_slice(&p);
            }
        }
        self.labels.push(label);
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    let bytes =
        std::fs::read(path).map_err(|e| DataError::file(path, format!("cannot be read: {e}")))?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .take(MAX_INFLATED + 1)
            .read_to_end(&mut out)
            .map_err(|e| DataError::file(path, format!("is not a valid gzip file: {e}")))?;
        if out.len() as u64 > MAX_INFLATED {
            return Err(DataError::file(
                path,
                format!("inflates to more than {MAX_INFLATED} bytes; it is not a dataset file"),
            ));
        }
        Ok(out)
    } else {
        Ok(bytes)
    }
}

fn be_u32(b: &[u8], at: usize) -> usize {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

/// Reads an IDX image file and its label file.
pub fn read_idx(
    images: &Path,
    labels: &Path,
    channels: usize,
    size: usize,
    classes: usize,
) -> Result<Images, DataError> {
    let img = read_file(images)?;
    let lab = read_file(labels)?;
    if img.len() < 16 || be_u32(&img, 0) != 0x0803 {
        return Err(DataError::file(
            images,
            format!(
                "is not an IDX image file: it must start with the magic number 0x00000803, found {}",
                if img.len() < 4 {
                    "fewer than 4 bytes".into()
                } else {
                    format!("0x{:08x}", be_u32(&img, 0))
                }
            ),
        ));
    }
    if lab.len() < 8 || be_u32(&lab, 0) != 0x0801 {
        return Err(DataError::file(
            labels,
            format!(
                "is not an IDX label file: it must start with the magic number 0x00000801, found {}",
                if lab.len() < 4 {
                    "fewer than 4 bytes".into()
                } else {
                    format!("0x{:08x}", be_u32(&lab, 0))
                }
            ),
        ));
    }
    let (n, h, w) = (be_u32(&img, 4), be_u32(&img, 8), be_u32(&img, 12));
    if h == 0 || w == 0 {
        return Err(DataError::file(
            images,
            format!("declares images of {h}x{w} pixels; an image needs at least one"),
        ));
    }
    let need = n
        .checked_mul(h)
        .and_then(|x| x.checked_mul(w))
        .and_then(|x| x.checked_add(16))
        .unwrap_or(usize::MAX);
    if img.len() < need {
        return Err(DataError::file(
            images,
            format!(
                "is truncated: its header declares {n} images of {h}x{w} ({need} bytes) but it holds {} bytes",
                img.len()
            ),
        ));
    }
    let nl = be_u32(&lab, 4);
    if lab.len() < 8 + nl {
        return Err(DataError::file(
            labels,
            format!(
                "is truncated: its header declares {nl} labels but it holds {} bytes",
                lab.len()
            ),
        ));
    }
    if nl != n {
        return Err(DataError::file(
            labels,
            format!(
                "holds {nl} labels but `{}` holds {n} images; they must match",
                images.display()
            ),
        ));
    }
    let mut out = InMemory::new(channels, size);
    out.pixels
        .reserve(n.saturating_mul(channels * size * size).min(1 << 32));
    for i in 0..n {
        let label = lab[8 + i] as usize;
        if label >= classes {
            return Err(DataError::file(
                labels,
                format!("label {label} of image {i} is not below `data.classes` = {classes}"),
            ));
        }
        out.push(&img[16 + i * h * w..16 + (i + 1) * h * w], 1, h, w, label);
    }
    Ok(out.finish(classes, vec![images.into(), labels.into()]))
}

/// Reads CIFAR-10 (1 label byte) or CIFAR-100 (coarse + fine label bytes; the fine one is used)
/// binary batches: per image the label byte(s) then 3072 bytes of 32x32 RGB planes.
pub fn read_cifar(
    files: &[PathBuf],
    hundred: bool,
    channels: usize,
    size: usize,
    classes: usize,
) -> Result<Images, DataError> {
    let head = if hundred { 2 } else { 1 };
    let rec = head + 3072;
    let mut out = InMemory::new(channels, size);
    for f in files {
        let bytes = read_file(f)?;
        if bytes.is_empty() || bytes.len() % rec != 0 {
            return Err(DataError::file(
                f,
                format!(
                    "is not a CIFAR-{} binary batch: its size ({} bytes) is not a multiple of {rec} (one record)",
                    if hundred { 100 } else { 10 },
                    bytes.len()
                ),
            ));
        }
        for (i, r) in bytes.chunks_exact(rec).enumerate() {
            let label = r[head - 1] as usize;
            if label >= classes {
                return Err(DataError::file(
                    f,
                    format!("label {label} of record {i} is not below `data.classes` = {classes}"),
                ));
            }
            out.push(&r[head..], 3, 32, 32, label);
        }
    }
    Ok(out.finish(classes, files.to_vec()))
}

fn is_image(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("png" | "jpg" | "jpeg")
    )
}

/// The entries of a folder, sorted by name, each with whether it is a folder and its size.
fn sorted_entries(dir: &Path) -> Result<Vec<(PathBuf, bool, u64)>, DataError> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| DataError::file(dir, format!("cannot be listed: {e}")))?;
    let mut v = Vec::new();
    for e in rd {
        let e = e.map_err(|e| DataError::file(dir, format!("cannot be listed: {e}")))?;
        // Hidden entries are the file manager's and the tools' (`.DS_Store`, `._x.jpg`,
        // `.ipynb_checkpoints`), never images or classes.
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = e.path();
        // `metadata` follows symlinks, so a linked image or class folder counts as one.
        let meta = std::fs::metadata(&path)
            .map_err(|e| DataError::file(&path, format!("cannot be read: {e}")))?;
        v.push((path, meta.is_dir(), meta.len()));
    }
    v.sort();
    Ok(v)
}

/// The shorter side photos are decoded to: the crop of `size` is `eval_crop` of it.
pub fn photo_base(size: usize, eval_crop: f64) -> usize {
    ((size as f64 / eval_crop).round() as usize).max(size)
}

/// Indexes an image folder with one sub-folder per class (classes in name order): names and
/// sizes only, the class folders listed in parallel. Images are decoded when a batch needs them.
pub fn read_folder(
    dir: &Path,
    channels: usize,
    size: usize,
    classes: usize,
    eval_crop: f64,
) -> Result<Images, DataError> {
    let class_dirs: Vec<PathBuf> = sorted_entries(dir)?
        .into_iter()
        .filter(|e| e.1)
        .map(|e| e.0)
        .collect();
    if class_dirs.len() != classes {
        return Err(DataError::file(
            dir,
            format!(
                "holds {} class folders but `data.classes` is {classes}",
                class_dirs.len()
            ),
        ));
    }
    let listed: Vec<Vec<(PathBuf, u64, usize)>> = class_dirs
        .par_iter()
        .enumerate()
        .map(|(label, cd)| {
            let mut files = Vec::new();
            for (f, is_dir, len) in sorted_entries(cd)? {
                if is_dir {
                    continue;
                }
                if !is_image(&f) {
                    return Err(DataError::file(
                        &f,
                        "is not a PNG or JPEG file; class folders must hold only images".into(),
                    ));
                }
                files.push((f, len, label));
            }
            if files.is_empty() {
                return Err(DataError::file(
                    cd,
                    "holds no images; every class folder needs at least one".into(),
                ));
            }
            Ok(files)
        })
        .collect::<Result<_, _>>()?;
    let names = class_dirs
        .iter()
        .map(|cd| {
            cd.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let base = photo_base(size, eval_crop);
    Ok(Images::photos(
        channels,
        size,
        base,
        listed.into_iter().flatten().collect(),
        names,
    ))
}

/// Indexes a flat folder whose image names end in `_<label>.<ext>` (e.g. `cifar10_07_9.png`).
pub fn read_flat_folder(
    dir: &Path,
    channels: usize,
    size: usize,
    classes: usize,
    eval_crop: f64,
) -> Result<Images, DataError> {
    let mut files = Vec::new();
    for (f, is_dir, len) in sorted_entries(dir)? {
        if is_dir {
            continue;
        }
        let stem = f
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let label = stem
            .rsplit('_')
            .next()
            .and_then(|l| l.parse::<usize>().ok());
        let Some(label) = label.filter(|_| is_image(&f)) else {
            return Err(DataError::file(&f, "is not an image named `<name>_<label>.png|jpg`; a flat folder must hold only such files".into()));
        };
        if label >= classes {
            return Err(DataError::file(
                &f,
                format!("has label {label}, not below `data.classes` = {classes}"),
            ));
        }
        files.push((f, len, label));
    }
    if files.is_empty() {
        return Err(DataError::file(dir, "holds no images".into()));
    }
    let names = (0..classes).map(|c| c.to_string()).collect();
    Ok(Images::photos(
        channels,
        size,
        photo_base(size, eval_crop),
        files,
        names,
    ))
}
