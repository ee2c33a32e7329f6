//! Pixel operations shared by decoding and preprocessing: centre crop, SIMD resize, HWC to CHW.

use image::RgbImage;

/// The centred `s`x`s` crop of a decoded photo, CHW with `c` channels.
pub fn centre_crop(img: &RgbImage, s: usize, c: usize) -> Vec<u8> {
    let (w, h) = (img.width(), img.height());
    let side = (s as u32).min(w).min(h);
    let (x, y) = ((w - side) / 2, (h - side) / 2);
    let sub = if side as usize == s {
        image::imageops::crop_imm(img, x, y, side, side).to_image()
    } else {
        resize(img, Some((x, y, side, side)), s as u32, s as u32)
    };
    to_chw(&sub, c)
}

/// A (cropped) region of `img` resized bilinearly to `w`x`h` with SIMD (`fast_image_resize`:
/// several times faster than `image`'s generic filter, which made resizing cost more than JPEG
/// decoding).
pub fn resize(img: &RgbImage, crop: Option<(u32, u32, u32, u32)>, w: u32, h: u32) -> RgbImage {
    use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
    thread_local! {
        static RESIZER: std::cell::RefCell<Resizer> = std::cell::RefCell::new(Resizer::new());
    }
    let mut out = RgbImage::new(w, h);
    let mut opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    if let Some((x, y, cw, ch)) = crop {
        opts = opts.crop(x as f64, y as f64, cw as f64, ch as f64);
    }
    RESIZER.with(|r| {
        r.borrow_mut()
            .resize(img, &mut out, &opts)
            .expect("RGB to RGB within the image")
    });
    out
}

/// HWC RGB to CHW with `c` channels (1: the mean of R, G, B).
pub fn to_chw(img: &RgbImage, c: usize) -> Vec<u8> {
    let n = (img.width() * img.height()) as usize;
    let raw = img.as_raw();
    if c == 1 {
        return raw
            .chunks_exact(3)
            .map(|p| ((p[0] as u32 + p[1] as u32 + p[2] as u32) / 3) as u8)
            .collect();
    }
    let mut out = vec![0u8; c * n];
    for (i, p) in raw.chunks_exact(3).enumerate() {
        for ch in 0..c.min(3) {
            out[ch * n + i] = p[ch];
        }
    }
    out
}
