//! From images to a batch: augmentation and normalisation. Small images (IDX, CIFAR) keep their
//! size: a random crop after zero padding and a horizontal flip when training. Photos follow the
//! usual ImageNet protocol on their decoded form (shorter side `image_size / eval_crop`): a random
//! resized crop (area and aspect ratio drawn from `data.augment.scale` / `ratio`) and a flip when
//! training, the centre crop when evaluating. Every image draws from its own seeded generator, so
//! a batch is the same bit for bit however many threads build it.

use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::images::{Images, Pixels};
use super::pixels::{centre_crop, resize, to_chw};
use super::{DataError, HostBatch};
use crate::plan::DataSpec;

/// Preprocessing: normalisation, and augmentation for training batches.
#[derive(Debug, Clone)]
pub struct Preprocess {
    mean: Vec<f32>,
    std: Vec<f32>,
    augment: bool,
    crop_padding: usize,
    hflip: bool,
    scale: [f64; 2],
    ratio: [f64; 2],
    skip_bad: bool,
}

impl Preprocess {
    /// From the plan's data; `augment` false gives plain normalisation (rating, test).
    pub fn new(d: &DataSpec, augment: bool) -> Preprocess {
        Preprocess {
            mean: d.mean.clone(),
            std: d.std.clone(),
            augment,
            crop_padding: if augment { d.crop_padding } else { 0 },
            hflip: augment && d.hflip,
            scale: d.scale,
            ratio: d.ratio,
            skip_bad: d.skip_bad,
        }
    }

    /// Builds a batch of the given images (in parallel on the current rayon pool); `seed`
    /// drives augmentation. An image that cannot be decoded fails the batch, naming its file, or
    /// with `data.skip_bad` is left out and recorded.
    pub fn batch(&self, images: &Images, idx: &[usize], seed: u64) -> Result<HostBatch, DataError> {
        let (c, s) = (images.channels, images.size);
        let per = c * s * s;
        let built: Vec<Option<(Vec<u8>, i64)>> = idx
            .par_iter()
            .enumerate()
            .map(|(pos, &i)| {
                let mut rng = ChaCha8Rng::seed_from_u64(
                    seed ^ (pos as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                );
                let chw = match images.pixels(i) {
                    Ok(Pixels::Sized(px)) => self.small(px, c, s, &mut rng),
                    Ok(Pixels::Photo(img)) => self.photo(&img, c, s, &mut rng),
                    Err(e) if self.skip_bad => {
                        tracing::warn!("{e}; skipped (`data.skip_bad`)");
                        images.skip(i);
                        return Ok(None);
                    }
                    Err(e) => return Err(e),
                };
                Ok(Some((chw, images.labels[i] as i64)))
            })
            .collect::<Result<_, DataError>>()?;
        let mut out = Vec::with_capacity(idx.len() * per);
        let mut labels = Vec::with_capacity(idx.len());
        for (px, l) in built.into_iter().flatten() {
            out.extend_from_slice(&px);
            labels.push(l);
        }
        Ok(HostBatch {
            shape: [labels.len(), c, s, s],
            pixels: out,
            labels,
            mean: self.mean.clone(),
            std: self.std.clone(),
        })
    }

    /// A small image: random crop after zero padding, and a flip.
    fn small(&self, img: &[u8], c: usize, s: usize, rng: &mut ChaCha8Rng) -> Vec<u8> {
        let p = self.crop_padding as i64;
        let (dy, dx) = if p > 0 {
            (
                rng.random_range(-p..=p) as isize,
                rng.random_range(-p..=p) as isize,
            )
        } else {
            (0, 0)
        };
        let flip = self.hflip && rng.random_bool(0.5);
        if (dy, dx) == (0, 0) && !flip {
            return img.to_vec();
        }
        let mut out = Vec::with_capacity(img.len());
        let si = s as isize;
        for ch in 0..c {
            let plane = &img[ch * s * s..(ch + 1) * s * s];
            for y in 0..si {
                for x in 0..si {
                    let sx = if flip { si - 1 - x } else { x };
                    let (yy, xx) = (y + dy, sx + dx);
                    out.push(if yy >= 0 && yy < si && xx >= 0 && xx < si {
                        plane[(yy * si + xx) as usize]
                    } else {
                        0
                    });
                }
            }
        }
        out
    }

    /// A photo: random resized crop and flip when training, the centre crop otherwise.
    fn photo(&self, img: &RgbImage, c: usize, s: usize, rng: &mut ChaCha8Rng) -> Vec<u8> {
        if !self.augment {
            return centre_crop(img, s, c);
        }
        let (w, h) = (img.width() as f64, img.height() as f64);
        let area = w * h;
        let (lr0, lr1) = (self.ratio[0].ln(), self.ratio[1].ln());
        let mut crop = None;
        for _ in 0..10 {
            let target = area * rng.random_range(self.scale[0]..=self.scale[1]);
            let ratio = rng.random_range(lr0..=lr1).exp();
            let cw = (target * ratio).sqrt().round();
            let ch = (target / ratio).sqrt().round();
            if cw >= 1.0 && ch >= 1.0 && cw <= w && ch <= h {
                let x = rng.random_range(0..=(w - cw) as u32);
                let y = rng.random_range(0..=(h - ch) as u32);
                crop = Some((x, y, cw as u32, ch as u32));
                break;
            }
        }
        // Fallback: the largest centred crop within the ratio range, at least one pixel each
        // way (a ratio far from the photo's would round a side to 0, which no resize can take).
        let (x, y, cw, ch) = crop.unwrap_or_else(|| {
            let r = w / h;
            let (cw, ch) = if r < self.ratio[0] {
                (w, (w / self.ratio[0]).round().max(1.0))
            } else if r > self.ratio[1] {
                ((h * self.ratio[1]).round().max(1.0), h)
            } else {
                (w, h)
            };
            (
                ((w - cw) / 2.0) as u32,
                ((h - ch) / 2.0) as u32,
                cw as u32,
                ch as u32,
            )
        });
        let flip = self.hflip && rng.random_bool(0.5);
        let mut out = resize(img, Some((x, y, cw, ch)), s as u32, s as u32);
        if flip {
            image::imageops::flip_horizontal_in_place(&mut out);
        }
        to_chw(&out, c)
    }
}
