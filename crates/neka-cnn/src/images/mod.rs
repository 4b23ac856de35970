//! Reading an image file as a CNN's input (`mnist_cnn predict`, the demo): decoded within
//! bounds ([`decode`]), made 8-bit gray with transparency composited, resized or framed as
//! MNIST's digits were, inverted when the background is light, normalised as the model was
//! trained.

pub mod decode;
mod jpeg;

pub use decode::{decode_image_bytes, MAX_IMAGE_ALLOC, MAX_IMAGE_FILE_BYTES, MAX_IMAGE_PIXELS};

use crate::{Error, Result};
use candle_core::{Device, Tensor};
use decode::decode_image;
use neka_common::data::Normalize;
use std::path::Path;

/// Reads an image file as a model input `(1, 1, size, size)`: grayscale, transparency
/// composited (see below), resized (triangle filter), inverted when its background is light
/// (MNIST digits are white on black), then normalised as the model was trained.
///
/// The format (PNG or JPEG) is detected from the content. Decoding is bounded: an image of
/// more than [`MAX_IMAGE_PIXELS`] pixels is refused from its header and the decoder may
/// allocate at most [`MAX_IMAGE_ALLOC`] bytes.
///
/// Transparency: a transparent pixel shows the background, never the colour stored under it.
/// When the (alpha-weighted) visible pixels cover less than half the image they are the ink of
/// a drawing on a transparent background, and the background is the opposite of their mean
/// shade (dark ink → white, light ink → black); otherwise the visible pixels include the
/// background and transparent ones take their dominant shade. Each pixel is then composited
/// `l' = (α·l + (255 − α)·bg) / 255`. So black-on-transparent and white-on-transparent digits
/// both come out as white-on-black; a fully transparent image is blank.
pub fn load_image(path: &Path, size: u32, norm: &Normalize) -> Result<Tensor> {
    let img = decode_image(path)?;
    image_to_input(&img, size, norm, false)
}

/// An image already decoded (see [`decode_image_bytes`]) as the model's input
/// `(1, 1, size, size)`: what [`load_image`] does after decoding (transparency composited,
/// resized, inverted when its background is light, normalised). With `centre`, the digit is
/// framed as MNIST's were instead of the whole image being resized: its bounding box scaled
/// to fit 20/28 of the side and its centre of mass put at the centre ([`centre_like_mnist`]),
/// which suits a digit drawn anywhere on a large canvas.
pub fn image_to_input(
    img: &image::DynamicImage,
    size: u32,
    norm: &Normalize,
    centre: bool,
) -> Result<Tensor> {
    if size == 0 {
        return Err(Error::config("image size", "must be at least 1"));
    }
    let gray = composite_gray(img);
    let px: Vec<u8> = if centre {
        let mut gray = gray;
        invert_if_light(&mut gray);
        centre_like_mnist(&gray, size).into_raw()
    } else {
        let resized =
            image::imageops::resize(&gray, size, size, image::imageops::FilterType::Triangle);
        let mut resized = resized;
        invert_if_light(&mut resized);
        resized.into_raw()
    };
    Ok(Tensor::from_vec(
        norm.apply(&px),
        (1, 1, size as usize, size as usize),
        &Device::Cpu,
    )?)
}

/// MNIST digits are white on black: a light image (mean > 127) is inverted.
fn invert_if_light(gray: &mut image::GrayImage) {
    let px: &mut [u8] = gray;
    let mean = px.iter().map(|&p| p as f64).sum::<f64>() / px.len().max(1) as f64;
    if mean > 127.0 {
        px.iter_mut().for_each(|p| *p = 255 - *p);
    }
}

/// Pixels darker than this count as background when [`centre_like_mnist`] looks for the
/// digit's bounding box (so faint noise or JPEG ringing does not widen it).
pub const INK_THRESHOLD: u8 = 16;

/// Frames a white-on-black digit as the MNIST images were made (LeCun et al.): the bounding
/// box of its ink (pixels above [`INK_THRESHOLD`]) resized, keeping its aspect ratio, to fit
/// a box of `20/28 · size` pixels, then placed on a black `size × size` image so that its
/// centre of mass sits at the centre. An image without ink comes out black.
pub fn centre_like_mnist(gray: &image::GrayImage, size: u32) -> image::GrayImage {
    let mut out = image::GrayImage::new(size, size);
    let (w, h) = gray.dimensions();
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for (x, y, p) in gray.enumerate_pixels() {
        if p.0[0] > INK_THRESHOLD {
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
    }
    if x0 > x1 || w == 0 || h == 0 {
        return out;
    }
    let (bw, bh) = (x1 - x0 + 1, y1 - y0 + 1);
    let fit = ((size as f64 * 20.0 / 28.0).round() as u32).max(1);
    let scale = fit as f64 / bw.max(bh) as f64;
    let nw = ((bw as f64 * scale).round() as u32).clamp(1, size);
    let nh = ((bh as f64 * scale).round() as u32).clamp(1, size);
    let crop = image::imageops::crop_imm(gray, x0, y0, bw, bh).to_image();
    let digit = image::imageops::resize(&crop, nw, nh, image::imageops::FilterType::Triangle);
    let (mut mass, mut mx, mut my) = (0f64, 0f64, 0f64);
    for (x, y, p) in digit.enumerate_pixels() {
        let v = p.0[0] as f64;
        mass += v;
        mx += v * (x as f64 + 0.5);
        my += v * (y as f64 + 0.5);
    }
    let (cx, cy) = if mass > 0.0 {
        (mx / mass, my / mass)
    } else {
        (nw as f64 / 2.0, nh as f64 / 2.0)
    };
    let half = size as f64 / 2.0;
    let ox = (half - cx).round().clamp(0.0, (size - nw) as f64) as i64;
    let oy = (half - cy).round().clamp(0.0, (size - nh) as f64) as i64;
    image::imageops::overlay(&mut out, &digit, ox, oy);
    out
}

/// A grey image from `values` (row-major, `width × height` numbers in 0 … 255, as the bytes
/// of an MNIST image): an error saying what is wrong for a wrong count, a value that is not
/// a finite number in that range, or a zero side.
pub fn gray_from_values(values: &[f64], width: u32, height: u32) -> Result<image::GrayImage> {
    let n = width as usize * height as usize;
    if n == 0 {
        return Err(Error::config(
            "pixels",
            "the image has no pixels (0 wide or high)",
        ));
    }
    if values.len() != n {
        return Err(Error::config(
            "pixels",
            format!(
                "{} values given; the model takes {width}x{height} = {n} (row-major, 0-255, \
                 white digit on black)",
                values.len()
            ),
        ));
    }
    if let Some((i, v)) = values
        .iter()
        .enumerate()
        .find(|(_, v)| !(v.is_finite() && (0.0..=255.0).contains(*v)))
    {
        return Err(Error::config(
            "pixels",
            format!("value {i} is {v}: every pixel must be a number from 0 to 255"),
        ));
    }
    let bytes = values.iter().map(|v| v.round() as u8).collect();
    image::GrayImage::from_raw(width, height, bytes)
        .ok_or_else(|| Error::config("pixels", "could not build the image"))
}

/// The image as 8-bit gray with transparency composited onto its background (the rule of
/// [`load_image`]).
fn composite_gray(img: &image::DynamicImage) -> image::GrayImage {
    if !img.color().has_alpha() {
        return img.to_luma8();
    }
    let la = img.to_luma_alpha8();
    let (w, h) = la.dimensions();
    let (mut alpha_sum, mut ink_sum) = (0u64, 0u64);
    for p in la.pixels() {
        let [l, a] = p.0;
        alpha_sum += u64::from(a);
        ink_sum += u64::from(a) * u64::from(l);
    }
    let n = u64::from(w) * u64::from(h);
    let ink_light = alpha_sum > 0 && ink_sum > 127 * alpha_sum;
    let drawing = alpha_sum < n * 255 / 2;
    let bg: u32 = match (drawing, ink_light) {
        (true, true) | (false, false) => 0,
        (true, false) | (false, true) => 255,
    };
    let bg = if alpha_sum == 0 { 0 } else { bg };
    image::GrayImage::from_fn(w, h, |x, y| {
        let [l, a] = la.get_pixel(x, y).0;
        let (l, a) = (u32::from(l), u32::from(a));
        image::Luma([((a * l + (255 - a) * bg + 127) / 255) as u8])
    })
}

#[cfg(test)]
mod bad_images;

#[cfg(test)]
mod tests {
    use super::bad_images::crc32;
    use super::*;

    #[test]
    fn a_light_background_is_inverted() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("digit.png");
        let mut img = image::GrayImage::from_pixel(28, 28, image::Luma([250]));
        img.put_pixel(14, 14, image::Luma([0]));
        img.save(&path).unwrap();
        let norm = Normalize {
            mean: vec![0.0],
            std: vec![1.0],
        };
        let x: Vec<f32> = load_image(&path, 28, &norm)?.flatten_all()?.to_vec1()?;
        assert!(
            x[14 * 28 + 14] > 0.9 && x[0] < 0.1,
            "{} {}",
            x[14 * 28 + 14],
            x[0]
        );
        let err = load_image(&dir.path().join("none.png"), 28, &norm).unwrap_err();
        assert!(err.to_string().contains("none.png"), "{err}");
        Ok(())
    }

    /// A digit stroke (a 3-pixel-wide vertical bar) in `ink` on a fully transparent
    /// background whose hidden colour is `hidden`.
    fn transparent_digit(ink: u8, hidden: u8) -> image::RgbaImage {
        image::RgbaImage::from_fn(28, 28, |x, y| {
            if (13..=15).contains(&x) && (4..24).contains(&y) {
                image::Rgba([ink, ink, ink, 255])
            } else {
                image::Rgba([hidden, hidden, hidden, 0])
            }
        })
    }

    #[test]
    fn a_digit_on_a_transparent_background_comes_out_white_on_black() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let norm = Normalize {
            mean: vec![0.0],
            std: vec![1.0],
        };
        // black ink over hidden black (what most editors store) and over hidden white; white
        // ink over hidden white and over hidden black
        for (ink, hidden) in [(0, 0), (0, 255), (255, 255), (255, 0)] {
            let path = dir.path().join(format!("t{ink}-{hidden}.png"));
            transparent_digit(ink, hidden).save(&path).unwrap();
            let x: Vec<f32> = load_image(&path, 28, &norm)?.flatten_all()?.to_vec1()?;
            let (stroke, bg) = (x[14 * 28 + 14], x[2 * 28 + 2]);
            assert!(
                stroke > 0.9 && bg < 0.1,
                "ink {ink} hidden {hidden}: stroke {stroke} bg {bg}"
            );
        }
        // half-transparent anti-aliased edge: in between
        let mut img = transparent_digit(0, 0);
        img.put_pixel(12, 10, image::Rgba([0, 0, 0, 128]));
        let path = dir.path().join("aa.png");
        img.save(&path).unwrap();
        let x: Vec<f32> = load_image(&path, 28, &norm)?.flatten_all()?.to_vec1()?;
        assert!(
            x[10 * 28 + 12] > 0.2 && x[10 * 28 + 12] < 0.8,
            "{}",
            x[10 * 28 + 12]
        );
        // fully transparent: blank, not an error
        let path = dir.path().join("empty.png");
        image::RgbaImage::new(28, 28).save(&path).unwrap();
        let x: Vec<f32> = load_image(&path, 28, &norm)?.flatten_all()?.to_vec1()?;
        assert!(x.iter().all(|&v| v == 0.0));
        Ok(())
    }

    #[test]
    fn centring_frames_a_digit_as_mnist_did() -> Result<()> {
        // a 40x100 white bar in the top-left corner of a 280x280 black canvas
        let img = image::GrayImage::from_fn(280, 280, |x, y| {
            image::Luma([if (10..50).contains(&x) && (5..105).contains(&y) {
                255
            } else {
                0
            }])
        });
        let out = centre_like_mnist(&img, 28);
        let ink: Vec<(u32, u32)> = out
            .enumerate_pixels()
            .filter(|p| p.2 .0[0] > 128)
            .map(|p| (p.0, p.1))
            .collect();
        let (ys, xs): (Vec<u32>, Vec<u32>) = ink.iter().map(|&(x, y)| (y, x)).unzip();
        let height = ys.iter().max().unwrap() - ys.iter().min().unwrap() + 1;
        let width = xs.iter().max().unwrap() - xs.iter().min().unwrap() + 1;
        // longest side scaled to 20, aspect kept (8 wide), centred on (14, 14)
        assert_eq!((width, height), (8, 20));
        assert_eq!(
            (*xs.iter().min().unwrap(), *ys.iter().min().unwrap()),
            (10, 4)
        );
        // no ink: black
        let blank = centre_like_mnist(&image::GrayImage::new(50, 50), 28);
        assert!(blank.pixels().all(|p| p.0[0] == 0));
        // through image_to_input, a dark-on-light drawing comes out the same
        let norm = Normalize {
            mean: vec![0.0],
            std: vec![1.0],
        };
        let mut light = img.clone();
        light.pixels_mut().for_each(|p| p.0[0] = 255 - p.0[0]);
        let a = image_to_input(&img.into(), 28, &norm, true)?;
        let b = image_to_input(&light.into(), 28, &norm, true)?;
        let (a, b): (Vec<f32>, Vec<f32>) =
            (a.flatten_all()?.to_vec1()?, b.flatten_all()?.to_vec1()?);
        assert_eq!(a, b);
        Ok(())
    }

    #[test]
    fn pixel_values_are_checked_and_image_bytes_decoded() -> Result<()> {
        let g = gray_from_values(&[0.0, 255.0, 127.6, 1.0], 2, 2)?;
        assert_eq!(g.into_raw(), vec![0, 255, 128, 1]);
        let e = gray_from_values(&[0.0; 3], 2, 2).unwrap_err().to_string();
        assert!(e.contains("3 values") && e.contains("4"), "{e}");
        let e = gray_from_values(&[0.0, 300.0, 0.0, 0.0], 2, 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("value 1 is 300"), "{e}");
        assert!(gray_from_values(&[f64::NAN; 4], 2, 2).is_err());
        // PNG bytes decode as the file would; other bytes are refused naming the source
        let mut png = Vec::new();
        image::GrayImage::from_pixel(3, 2, image::Luma([9]))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let img = decode_image_bytes(&png, "request body", 1 << 20)?;
        assert_eq!((img.width(), img.height()), (3, 2));
        let e = decode_image_bytes(b"not an image", "request body", 1 << 20).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("request body: cannot read as an image"),
            "{e}"
        );
        let e = decode_image_bytes(&png, "request body", 5)
            .unwrap_err()
            .to_string();
        assert!(e.contains("3x2 pixels"), "{e}");
        Ok(())
    }

    #[test]
    fn a_huge_image_is_refused_from_its_header() {
        // a 60-byte PNG claiming 30000 x 30000 gray pixels (900 megapixels)
        let chunk = |kind: &[u8], data: &[u8]| {
            let mut c = (data.len() as u32).to_be_bytes().to_vec();
            let body = [kind, data].concat();
            c.extend_from_slice(&body);
            c.extend_from_slice(&crc32(&body).to_be_bytes());
            c
        };
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&30000u32.to_be_bytes());
        ihdr.extend_from_slice(&30000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
        // zlib: header, one empty final stored block, adler32 of nothing
        let idat = [0x78, 0x01, 0x01, 0x00, 0x00, 0xff, 0xff, 0, 0, 0, 1];
        let png = [
            b"\x89PNG\r\n\x1a\n".to_vec(),
            chunk(b"IHDR", &ihdr),
            chunk(b"IDAT", &idat),
            chunk(b"IEND", &[]),
        ]
        .concat();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bomb.png");
        std::fs::write(&path, png).unwrap();
        let norm = Normalize {
            mean: vec![0.0],
            std: vec![1.0],
        };
        let e = load_image(&path, 28, &norm).unwrap_err().to_string();
        assert!(
            e.contains("bomb.png") && e.contains("30000x30000") && e.contains("megapixels"),
            "{e}"
        );
    }
}
