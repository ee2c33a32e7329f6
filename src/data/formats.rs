//! Readers for the dataset formats users have: IDX (raw or gzipped), CIFAR binary batches,
//! image folders (one folder per class) and flat folders whose file names carry the label.
//! Every image is brought to the model's size and channels on load.

use std::io::Read;
use std::path::{Path, PathBuf};

use image::imageops::FilterType;

use super::DataError;

/// Decoded images, all `channels x size x size`, as u8 in CHW order.
#[derive(Debug, Clone, Default)]
pub struct Images {
    /// Channels per image.
    pub channels: usize,
    /// Height = width.
    pub size: usize,
    /// Pixels, `n * channels * size * size`.
    pub pixels: Vec<u8>,
    /// Label per image.
    pub labels: Vec<usize>,
    /// Class names, by label.
    pub class_names: Vec<String>,
    /// The files read (for the fingerprint).
    pub files: Vec<PathBuf>,
}

impl Images {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.channels * self.size * self.size;
        &self.pixels[i * n..(i + 1) * n]
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
            .read_to_end(&mut out)
            .map_err(|e| DataError::file(path, format!("is not a valid gzip file: {e}")))?;
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
    let need = 16 + n * h * w;
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
    let mut out = Images {
        channels,
        size,
        class_names: (0..classes).map(|c| c.to_string()).collect(),
        files: vec![images.into(), labels.into()],
        ..Default::default()
    };
    out.pixels.reserve(n * channels * size * size);
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
    Ok(out)
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
    let mut out = Images {
        channels,
        size,
        class_names: (0..classes).map(|c| c.to_string()).collect(),
        ..Default::default()
    };
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
        out.files.push(f.clone());
    }
    Ok(out)
}

fn decode(path: &Path) -> Result<(Vec<u8>, usize, usize, usize), DataError> {
    let img = image::open(path)
        .map_err(|e| DataError::file(path, format!("is not a readable PNG/JPEG image: {e}")))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let rgb = img.to_rgb8().into_raw();
    let mut chw = vec![0u8; 3 * h * w];
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        for c in 0..3 {
            chw[c * h * w + i] = px[c];
        }
    }
    Ok((chw, 3, h, w))
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

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| DataError::file(dir, format!("cannot be listed: {e}")))?;
    let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    v.sort();
    Ok(v)
}

/// Reads an image folder with one sub-folder per class (classes in name order).
pub fn read_folder(
    dir: &Path,
    channels: usize,
    size: usize,
    classes: usize,
) -> Result<Images, DataError> {
    let class_dirs: Vec<PathBuf> = sorted_entries(dir)?
        .into_iter()
        .filter(|p| p.is_dir())
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
    let mut out = Images {
        channels,
        size,
        ..Default::default()
    };
    for (label, cd) in class_dirs.iter().enumerate() {
        out.class_names.push(
            cd.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
        );
        for f in sorted_entries(cd)? {
            if !f.is_file() {
                continue;
            }
            if !is_image(&f) {
                return Err(DataError::file(
                    &f,
                    "is not a PNG or JPEG file; class folders must hold only images".into(),
                ));
            }
            let (chw, c, h, w) = decode(&f)?;
            out.push(&chw, c, h, w, label);
            out.files.push(f);
        }
    }
    Ok(out)
}

/// Reads a flat folder whose image names end in `_<label>.<ext>` (e.g. `cifar10_07_9.png`).
pub fn read_flat_folder(
    dir: &Path,
    channels: usize,
    size: usize,
    classes: usize,
) -> Result<Images, DataError> {
    let mut out = Images {
        channels,
        size,
        class_names: (0..classes).map(|c| c.to_string()).collect(),
        ..Default::default()
    };
    for f in sorted_entries(dir)? {
        if !f.is_file() {
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
        let (chw, c, h, w) = decode(&f)?;
        out.push(&chw, c, h, w, label);
        out.files.push(f);
    }
    if out.is_empty() {
        return Err(DataError::file(dir, "holds no images".into()));
    }
    Ok(out)
}
