//! Looking inside a trained CNN: its first layer's filters and the feature maps of one image
//! (`mnist_cnn inspect`), and reading an image file as the model's input (`mnist_cnn predict`).
//!
//! A filter is a small grid of weights slid over the image (the lecture's 합성곱 filter); a
//! feature map is that filter's response at every position, `ReLU(w ⋆ x + b)`: bright where
//! the image looks like the filter. Deeper maps respond to combinations of the first ones.

use crate::{CnnModel, Error, Result};
use candle_core::{Device, Tensor};
use neka_common::data::Normalize;
use neka_common::plot::images::{plot_image_grid, ImagePanel, Scale};
use std::path::Path;

/// The largest image [`load_image`] decodes, in pixels (64 megapixels): larger dimensions
/// are refused from the header, before any pixel is decoded.
pub const MAX_IMAGE_PIXELS: u64 = 64 * 1024 * 1024;

/// The most memory the image decoder may allocate (512 MiB), so that a decompression bomb is
/// a clear error rather than an out-of-memory kill.
pub const MAX_IMAGE_ALLOC: u64 = 512 * 1024 * 1024;

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

/// The largest image file [`load_image`] reads (256 MiB); a larger one is refused from its
/// size, before it is read.
pub const MAX_IMAGE_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// Reads `path` (at most [`MAX_IMAGE_FILE_BYTES`]) and decodes it as [`decode_image_bytes`].
fn decode_image(path: &Path) -> Result<image::DynamicImage> {
    use std::io::Read;
    let cannot =
        |e: &dyn std::fmt::Display| Error::bad_data(path, format!("cannot read as an image: {e}"));
    let file = std::fs::File::open(path).map_err(|e| cannot(&e))?;
    let len = file.metadata().map_err(|e| cannot(&e))?.len();
    if len > MAX_IMAGE_FILE_BYTES {
        return Err(Error::bad_data(
            path,
            format!(
                "the file is {len} bytes, more than the {} MiB neka reads as an image; \
                 scale it down first (the model sees it at 28x28)",
                MAX_IMAGE_FILE_BYTES >> 20
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(MAX_IMAGE_FILE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| cannot(&e))?;
    decode_bounded(&bytes, path, MAX_IMAGE_PIXELS)
}

/// Decodes image bytes (PNG or JPEG, detected from the content) as [`load_image`] decodes a
/// file, refusing from the header an image of more than `max_pixels` pixels or of zero
/// width or height; `what` names the bytes in errors ("request body: cannot read …").
///
/// Decoding is bounded and whole:
/// - PNG: only the critical chunks (IHDR, PLTE, IDAT, IEND) and tRNS (transparency) reach the
///   decoder; every other ancillary chunk (an ICC profile, compressed text, Exif, …) is dropped
///   unread, so the only data ever inflated are the pixels, at most `max_pixels` × 8 bytes and
///   [`MAX_IMAGE_ALLOC`] in all. A file cut off (a chunk longer than what is left, no IEND) is
///   refused by name before decoding; a corrupt chunk fails its CRC.
/// - JPEG: its structure is checked before any pixel is decoded: the segments walked by their
///   lengths, every baseline scan's blocks Huffman-decoded (without pixels) and counted against
///   the frame's `⌈W/8H⌉ × ⌈H/8V⌉` MCUs, and the end-of-image marker required after the scans.
///   So a cut file or a SOF whose size was changed is an error naming it, never gray or blank
///   rows (zune-jpeg fills missing scan data with zeros, even in its strict mode, which is used
///   too). Memory is the output (`width × height × channels` bytes) plus the decoder's
///   per-component planes, both bounded by `max_pixels`.
pub fn decode_image_bytes(
    bytes: &[u8],
    what: &str,
    max_pixels: u64,
) -> Result<image::DynamicImage> {
    decode_bounded(bytes, Path::new(what), max_pixels.min(MAX_IMAGE_PIXELS))
}

fn decode_bounded(bytes: &[u8], path: &Path, max_pixels: u64) -> Result<image::DynamicImage> {
    match image::guess_format(bytes) {
        Ok(image::ImageFormat::Png) => decode_png(bytes, path, max_pixels),
        Ok(image::ImageFormat::Jpeg) => decode_jpeg(bytes, path, max_pixels),
        other => {
            let found = other.map_or("unrecognised content".to_string(), |f| format!("{f:?}"));
            Err(Error::bad_data(
                path,
                format!("cannot read as an image: not a PNG or JPEG ({found})"),
            ))
        }
    }
}

/// Refuses a `w × h` image with nothing in it or with more than `max_pixels` pixels.
fn check_dimensions(w: u32, h: u32, path: &Path, max_pixels: u64) -> Result<()> {
    if w == 0 || h == 0 {
        return Err(Error::bad_data(
            path,
            format!("the image is {w}x{h} pixels: it has nothing to read"),
        ));
    }
    if u64::from(w) * u64::from(h) > max_pixels {
        let mp = max_pixels as f64 / (1024.0 * 1024.0);
        return Err(Error::bad_data(
            path,
            format!(
                "the image is {w}x{h} pixels, more than the {mp} megapixels neka decodes; \
                 scale it down first (the model sees it at 28x28)"
            ),
        ));
    }
    Ok(())
}

fn decode_png(bytes: &[u8], path: &Path, max_pixels: u64) -> Result<image::DynamicImage> {
    use image::ImageDecoder;
    let cannot =
        |e: &dyn std::fmt::Display| Error::bad_data(path, format!("cannot read as an image: {e}"));
    let pixels_only = png_pixel_chunks(bytes).map_err(|e| cannot(&e))?;
    let mut reader =
        image::ImageReader::with_format(std::io::Cursor::new(pixels_only), image::ImageFormat::Png);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_IMAGE_ALLOC);
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(|e| cannot(&e))?;
    let (w, h) = decoder.dimensions();
    check_dimensions(w, h, path, max_pixels)?;
    image::DynamicImage::from_decoder(decoder).map_err(|e| cannot(&e))
}

/// The PNG `bytes` with only the chunks that make its pixels: the critical ones (type starting
/// with an upper-case letter: IHDR, PLTE, IDAT, IEND) and tRNS. Checks the file's structure on
/// the way: every chunk whole, the last one IEND (bytes after it are ignored).
fn png_pixel_chunks(bytes: &[u8]) -> std::result::Result<Vec<u8>, String> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    let cut = "the PNG is cut off (an incomplete download or upload?)";
    if !bytes.starts_with(SIGNATURE) {
        return Err("not a PNG (no PNG signature)".into());
    }
    let mut out = SIGNATURE.to_vec();
    let mut at = SIGNATURE.len();
    loop {
        let Some(head) = bytes.get(at..at + 8) else {
            return Err(format!(
                "{cut}: it ends at byte {} without an IEND chunk",
                bytes.len()
            ));
        };
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let kind = &head[4..8];
        if len > i32::MAX as u32 || !kind.iter().all(u8::is_ascii_alphabetic) {
            return Err(format!(
                "the PNG is corrupt: no valid chunk header at byte {at}"
            ));
        }
        let name = String::from_utf8_lossy(kind).into_owned();
        let end = at + 12 + len as usize;
        if end > bytes.len() {
            return Err(format!(
                "{cut}: its {name} chunk at byte {at} has {len} bytes of data but the file ends \
                 {} bytes into it",
                bytes.len() - at
            ));
        }
        if kind[0].is_ascii_uppercase() || kind == b"tRNS" {
            out.extend_from_slice(&bytes[at..end]);
        }
        at = end;
        if kind == b"IEND" {
            return Ok(out);
        }
    }
}

fn decode_jpeg(bytes: &[u8], path: &Path, max_pixels: u64) -> Result<image::DynamicImage> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    let cannot =
        |e: &dyn std::fmt::Display| Error::bad_data(path, format!("cannot read as an image: {e}"));
    let options = DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX));
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder
        .decode_headers()
        .map_err(|e| cannot(&format!("the JPEG is corrupt: {e}")))?;
    let (w, h) = decoder.dimensions().unwrap_or((0, 0));
    let (w, h) = (w as u32, h as u32);
    check_dimensions(w, h, path, max_pixels)?;
    // as the image crate reads JPEGs: gray stays gray, every other colour space becomes RGB
    let colour = match decoder.input_colorspace() {
        Some(c @ (ColorSpace::Luma | ColorSpace::LumaA | ColorSpace::RGB | ColorSpace::RGBA)) => c,
        _ => ColorSpace::RGB,
    };
    decoder.set_options(decoder.options().jpeg_set_out_colorspace(colour));
    // the structure first (no pixels, no allocation): a cut or resized file is named as such
    jpeg_scan_ends(bytes).map_err(|e| cannot(&e))?;
    let px = decoder.decode().map_err(|e| {
        cannot(&format!(
            "the JPEG is corrupt (its scan data does not decode to the {w}x{h} frame): {e}"
        ))
    })?;
    let img = match colour {
        ColorSpace::Luma => image::GrayImage::from_raw(w, h, px).map(Into::into),
        ColorSpace::LumaA => image::GrayAlphaImage::from_raw(w, h, px).map(Into::into),
        ColorSpace::RGBA => image::RgbaImage::from_raw(w, h, px).map(Into::into),
        _ => image::RgbImage::from_raw(w, h, px).map(Into::into),
    };
    img.ok_or_else(|| cannot(&"the JPEG decoder returned fewer pixels than its frame has"))
}

/// Checks that the JPEG `bytes` are whole: walks the segments by their lengths and, for a
/// baseline (sequential) frame, Huffman-decodes every scan's blocks without computing pixels,
/// counting them: each scan must hold exactly the frame's `⌈W/8H⌉ × ⌈H/8V⌉` MCUs (or the
/// component's own block count for a single-component scan), no fewer (a cut file, or a frame
/// size made larger: the decoder would fill the rest with gray) and no more than padding
/// after them (a frame size made smaller). Then an end-of-image marker must follow. A
/// progressive frame is only checked for the end-of-image marker.
fn jpeg_scan_ends(bytes: &[u8]) -> std::result::Result<(), String> {
    let cut = "the JPEG is cut off (an incomplete download or upload?)";
    let mut frame: Option<JpegFrame> = None;
    let mut tables: [Option<Huffman>; 8] = Default::default(); // DC 0–3, AC 0–3
    let mut restart = 0usize;
    let mut at = 2; // after SOI
    loop {
        let marker = match bytes.get(at..at + 2) {
            Some([0xff, 0xff]) => {
                at += 1; // fill byte
                continue;
            }
            Some([0xff, m]) => *m,
            Some(_) => return Err(format!("the JPEG is corrupt: no marker at byte {at}")),
            None => {
                return Err(format!(
                    "{cut}: it ends at byte {} without an end-of-image marker",
                    bytes.len()
                ))
            }
        };
        if marker == 0xd9 {
            return Ok(());
        }
        if (0xd0..=0xd7).contains(&marker) || marker == 0x01 {
            at += 2; // stray restart or TEM: no length
            continue;
        }
        let len = match bytes.get(at + 2..at + 4) {
            Some(l) => usize::from(u16::from_be_bytes([l[0], l[1]])),
            None => return Err(format!("{cut}: it ends inside a segment header")),
        };
        let Some(seg) = bytes.get(at + 4..at + 2 + len.max(2)) else {
            return Err(format!(
                "{cut}: its segment FF{marker:02X} at byte {at} is not whole"
            ));
        };
        at += 2 + len;
        let corrupt = || format!("the JPEG is corrupt: segment FF{marker:02X} is malformed");
        match marker {
            0xc0..=0xc2 => frame = Some(JpegFrame::parse(seg, marker == 0xc2).ok_or_else(corrupt)?),
            0xc4 => {
                let mut s = seg;
                while !s.is_empty() {
                    let (class, id) = (usize::from(s[0] >> 4), usize::from(s[0] & 15));
                    let counts = s.get(1..17).ok_or_else(corrupt)?;
                    let n: usize = counts.iter().map(|&c| usize::from(c)).sum();
                    let symbols = s.get(17..17 + n).ok_or_else(corrupt)?;
                    if class > 1 || id > 3 {
                        return Err(corrupt());
                    }
                    tables[class * 4 + id] = Some(Huffman::new(counts, symbols));
                    s = &s[17 + n..];
                }
            }
            0xdd => {
                restart = usize::from(u16::from_be_bytes([
                    seg.first().copied().ok_or_else(corrupt)?,
                    seg.get(1).copied().ok_or_else(corrupt)?,
                ]))
            }
            0xda => {
                let Some(f) = frame.as_ref() else {
                    return Err("the JPEG is corrupt: a scan before its frame header".into());
                };
                let data_end = if f.progressive {
                    bytes[at..]
                        .windows(2)
                        .position(|w| w[0] == 0xff && w[1] != 0 && !(0xd0..=0xd7).contains(&w[1]))
                        .map_or(bytes.len(), |p| at + p)
                } else {
                    at + count_scan(&bytes[at..], seg, f, &tables, restart)?
                };
                at = data_end;
            }
            _ => {}
        }
    }
}

/// A JPEG frame header: size and each component's `(id, h, v)` sampling factors.
struct JpegFrame {
    width: usize,
    height: usize,
    components: Vec<(u8, usize, usize)>,
    progressive: bool,
}

impl JpegFrame {
    fn parse(seg: &[u8], progressive: bool) -> Option<Self> {
        let height = usize::from(u16::from_be_bytes([*seg.get(1)?, *seg.get(2)?]));
        let width = usize::from(u16::from_be_bytes([*seg.get(3)?, *seg.get(4)?]));
        let n = usize::from(*seg.get(5)?);
        let components = (0..n)
            .map(|i| {
                let c = seg.get(6 + 3 * i..9 + 3 * i)?;
                let (h, v) = (usize::from(c[1] >> 4), usize::from(c[1] & 15));
                (1..=4).contains(&h).then_some(())?;
                (1..=4).contains(&v).then_some(())?;
                Some((c[0], h, v))
            })
            .collect::<Option<Vec<_>>>()?;
        (!components.is_empty()).then_some(Self {
            width,
            height,
            components,
            progressive,
        })
    }
}

/// A canonical Huffman table (JPEG F.2.2.3): the largest code of each length and where its
/// symbols start.
#[derive(Clone)]
struct Huffman {
    max_code: [i32; 17],
    first: [i32; 17],
    offset: [usize; 17],
    symbols: Vec<u8>,
}

impl Huffman {
    fn new(counts: &[u8], symbols: &[u8]) -> Self {
        let (mut max_code, mut first, mut offset) = ([-1i32; 17], [0i32; 17], [0usize; 17]);
        let (mut code, mut k) = (0i32, 0usize);
        for l in 1..=16 {
            let n = usize::from(counts[l - 1]);
            first[l] = code;
            offset[l] = k;
            if n > 0 {
                code += n as i32;
                k += n;
                max_code[l] = code - 1;
            }
            code <<= 1;
        }
        Self {
            max_code,
            first,
            offset,
            symbols: symbols.to_vec(),
        }
    }

    fn decode(&self, bits: &mut ScanBits) -> Option<u8> {
        let mut code = 0i32;
        for l in 1..=16 {
            code = (code << 1) | bits.bit()? as i32;
            if code <= self.max_code[l] {
                // a malformed (over-subscribed) table can put `code` below its length's first
                let i = usize::try_from(code - self.first[l]).ok()?;
                return self.symbols.get(self.offset[l] + i).copied();
            }
        }
        None
    }
}

/// The bits of a scan's entropy-coded data (FF 00 is a data FF); stops at any marker.
struct ScanBits<'a> {
    data: &'a [u8],
    at: usize,
    byte: u8,
    left: u8,
}

impl ScanBits<'_> {
    fn bit(&mut self) -> Option<u8> {
        if self.left == 0 {
            let b = *self.data.get(self.at)?;
            if b == 0xff {
                if *self.data.get(self.at + 1)? != 0 {
                    return None; // a marker: the data ends here
                }
                self.at += 1;
            }
            self.at += 1;
            self.byte = b;
            self.left = 8;
        }
        self.left -= 1;
        Some((self.byte >> self.left) & 1)
    }

    fn skip(&mut self, n: u8) -> Option<()> {
        (0..n).try_for_each(|_| self.bit().map(|_| ()))
    }
}

/// Decodes the blocks of one baseline scan (header `sos`) from `data` (what follows it),
/// checking their count against frame `f`; returns where the scan data ends (its next marker).
fn count_scan(
    data: &[u8],
    sos: &[u8],
    f: &JpegFrame,
    tables: &[Option<Huffman>; 8],
    restart: usize,
) -> std::result::Result<usize, String> {
    let corrupt = |what: &str| format!("the JPEG is corrupt: {what}");
    let n = usize::from(*sos.first().ok_or_else(|| corrupt("empty scan header"))?);
    let (h_max, v_max) = f
        .components
        .iter()
        .fold((1, 1), |(h, v), c| (h.max(c.1), v.max(c.2)));
    // each scan component: blocks per MCU, DC table, AC table
    let mut parts = Vec::new();
    let mut blocks_alone = 0;
    for i in 0..n {
        let c = sos
            .get(1 + 2 * i..3 + 2 * i)
            .ok_or_else(|| corrupt("short scan header"))?;
        let (_, h, v) = *f
            .components
            .iter()
            .find(|x| x.0 == c[0])
            .ok_or_else(|| corrupt("a scan of a component the frame does not have"))?;
        let (dc, ac) = (usize::from(c[1] >> 4), usize::from(c[1] & 15));
        let table = |i: usize| {
            tables
                .get(i)
                .and_then(Option::as_ref)
                .ok_or_else(|| corrupt("a scan without its Huffman table"))
        };
        let (dc, ac) = (table(dc.min(3))?, table(4 + ac.min(3))?);
        // a single-component scan has no padding MCUs: the component's own blocks
        let (cw, ch) = (
            (f.width * h).div_ceil(h_max),
            (f.height * v).div_ceil(v_max),
        );
        blocks_alone = cw.div_ceil(8) * ch.div_ceil(8);
        parts.push((if n == 1 { 1 } else { h * v }, dc, ac));
    }
    let mcus = if n == 1 {
        blocks_alone
    } else {
        f.width.div_ceil(8 * h_max) * f.height.div_ceil(8 * v_max)
    };
    let mut bits = ScanBits {
        data,
        at: 0,
        byte: 0,
        left: 0,
    };
    let ran_out = |m: usize| {
        format!(
            "the JPEG is cut off or its frame size is wrong: its scan data ends after {m} of the \
             {mcus} blocks a {}x{} frame needs",
            f.width, f.height
        )
    };
    for m in 0..mcus {
        if restart > 0 && m > 0 && m % restart == 0 {
            // byte-aligned restart marker FF D0–D7
            bits.left = 0;
            match data.get(bits.at..bits.at + 2) {
                Some([0xff, r]) if (0xd0..=0xd7).contains(r) => bits.at += 2,
                _ => return Err(ran_out(m)),
            }
        }
        for &(count, dc, ac) in &parts {
            for _ in 0..count {
                let s = dc.decode(&mut bits).ok_or_else(|| ran_out(m))?;
                bits.skip(s & 15).ok_or_else(|| ran_out(m))?;
                let mut k = 1;
                while k < 64 {
                    let rs = ac.decode(&mut bits).ok_or_else(|| ran_out(m))?;
                    let (r, s) = (rs >> 4, rs & 15);
                    if s == 0 && r != 15 {
                        break; // end of block
                    }
                    k += usize::from(r) + 1;
                    bits.skip(s).ok_or_else(|| ran_out(m))?;
                }
            }
        }
    }
    // after the last block: at most the bits that pad its byte, then a marker
    match data.get(bits.at..bits.at + 2) {
        Some([0xff, m]) if *m != 0 => Ok(bits.at),
        None => Err(
            "the JPEG is cut off (an incomplete download or upload?): it ends right after its \
             scan data, without an end-of-image marker"
                .into(),
        ),
        _ => Err(format!(
            "the JPEG's frame size is wrong or its data corrupt: its scan data goes on after \
             the {mcus} blocks a {}x{} frame holds",
            f.width, f.height
        )),
    }
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

/// `(N, h, w)`-shaped values of a tensor `(N, …, h, w)` on the host, as f32 panels.
fn panels(t: &Tensor, title: impl Fn(usize) -> String) -> Result<Vec<ImagePanel>> {
    let dims = t.dims().to_vec();
    let (h, w) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    let n = t.elem_count() / (h * w);
    let v: Vec<f32> = t
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    Ok((0..n)
        .map(|i| ImagePanel::new(title(i), h, w, v[i * h * w..(i + 1) * h * w].to_vec()))
        .collect())
}

/// Draws the first layer's filters (`conv1.weight (C_out, 1, kh, kw)`): red = positive weight,
/// blue = negative, each filter scaled on its own.
pub fn plot_filters(model: &CnnModel, path: &Path, title: &str) -> Result<()> {
    let w = model.conv1().weight();
    let (co, ci, kh, kw) = w.dims4()?;
    let w = if ci == 1 {
        w.clone()
    } else {
        w.mean_keepdim(1)?
    }; // colour inputs: channel mean
    let p = panels(&w.reshape((co, kh, kw))?, |i| format!("{i}"))?;
    let px = (96 / kh.max(kw)).max(4) as u32;
    plot_image_grid(path, title, &p, 8, px, Scale::Diverging)
}

/// Draws `x (1, C, H, W)` (normalised, as the model sees it) and the first `per_stage` maps of
/// every convolutional stage ([`CnnModel::feature_maps`]), one row per stage.
pub fn plot_feature_maps(
    model: &CnnModel,
    x: &Tensor,
    per_stage: usize,
    path: &Path,
    title: &str,
) -> Result<()> {
    let device = model.conv1().weight().device().clone();
    let x = x.to_device(&device)?;
    let stages = model.feature_maps(&x)?;
    let cols = per_stage.max(1);
    let mut all = panels(&x.get(0)?.mean_keepdim(0)?, |_| "input".to_string())?;
    all.resize_with(cols, || ImagePanel::new("", 0, 0, vec![]));
    for (name, maps) in &stages {
        let c = maps.dim(1)?;
        let shown = maps.get(0)?.narrow(0, 0, c.min(cols))?;
        let mut row = panels(&shown, |i| format!("{name} #{i}"))?;
        row.resize_with(cols, || ImagePanel::new("", 0, 0, vec![]));
        all.extend(row);
    }
    let size = all.iter().map(|p| p.h.max(p.w)).max().unwrap_or(1);
    let px = (112 / size).max(2) as u32;
    plot_image_grid(path, title, &all, cols, px, Scale::Gray)
}

/// What `mnist_cnn inspect` draws for the image `x` (described by `what`): conv1's filters in
/// `out/conv1_filters.png` and `maps_per_layer` feature maps of every stage in
/// `out/feature_maps.png`, titled with the model's prediction. Returns that title.
pub fn draw(
    loaded: &crate::pipeline::LoadedModel,
    x: &Tensor,
    what: &str,
    maps_per_layer: usize,
    out: &Path,
) -> Result<String> {
    let (class, p) = loaded.top_class(x)?;
    let title = format!("{what}: predicted {class} ({:.1} %)", 100.0 * p);
    let (co, _, kh, kw) = loaded.model.conv1().weight().dims4()?;
    let filters = format!(
        "{}: conv1's {co} learned {kh}x{kw} filters (red +, blue −)",
        loaded.info.model
    );
    plot_filters(&loaded.model, &out.join("conv1_filters.png"), &filters)?;
    let maps = out.join("feature_maps.png");
    plot_feature_maps(&loaded.model, x, maps_per_layer, &maps, &title)?;
    Ok(title)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn filters_and_feature_maps_of_both_models_are_drawn() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        for name in crate::MODEL_NAMES {
            let vm = candle_nn::VarMap::new();
            let vb = neka_common::init::seeded_var_builder(&vm, DType::F32, &Device::Cpu);
            let (model, _) = CnnModel::from_name(name, 1, 28, 10, vb)?;
            let x = Tensor::randn(0f32, 1.0, (1, 1, 28, 28), &Device::Cpu)?;
            let stages = model.feature_maps(&x)?;
            assert!(stages.len() >= 3, "{name}");
            let f = dir.path().join(format!("{name}-filters.png"));
            plot_filters(&model, &f, "filters")?;
            let m = dir.path().join(format!("{name}-maps.png"));
            plot_feature_maps(&model, &x, 6, &m, "maps")?;
            for p in [f, m] {
                assert!(
                    std::fs::metadata(&p).unwrap().len() > 1000,
                    "{}",
                    p.display()
                );
            }
        }
        Ok(())
    }

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

    /// CRC-32 (IEEE) of PNG chunks.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in bytes {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
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

/// Bad images built in the test: each is refused by name (cut off, corrupt) or decoded within
/// bounded memory, never read as a guess.
#[cfg(test)]
mod bad_images {
    use super::*;
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    /// The system allocator, counting this thread's live bytes and their peak (decoding runs
    /// on the calling thread, so other tests running meanwhile do not count).
    struct PeakPerThread;

    thread_local! {
        static LIVE: Cell<usize> = const { Cell::new(0) };
        static PEAK: Cell<usize> = const { Cell::new(0) };
    }

    fn grow(by: usize) {
        let _ = LIVE.try_with(|l| {
            let now = l.get().saturating_add(by);
            l.set(now);
            let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
        });
    }

    fn shrink(by: usize) {
        let _ = LIVE.try_with(|l| l.set(l.get().saturating_sub(by)));
    }

    // SAFETY: forwards every call to `System` unchanged; the counters are plain thread-locals
    // with const initialisers (no allocation, no destructor).
    unsafe impl GlobalAlloc for PeakPerThread {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            grow(layout.size());
            System.alloc(layout)
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            grow(layout.size());
            System.alloc_zeroed(layout)
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            shrink(layout.size());
            System.dealloc(ptr, layout)
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            grow(new_size);
            shrink(layout.size());
            System.realloc(ptr, layout, new_size)
        }
    }

    #[global_allocator]
    static ALLOC: PeakPerThread = PeakPerThread;

    /// The most bytes this thread had allocated at once while running `f`, above what it had
    /// before.
    fn peak_bytes<T>(f: impl FnOnce() -> T) -> (T, usize) {
        let base = LIVE.with(Cell::get);
        PEAK.with(|p| p.set(base));
        let out = f();
        (out, PEAK.with(Cell::get) - base)
    }

    /// CRC-32 (IEEE) of PNG chunks.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in bytes {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }

    fn chunk(kind: &[u8], data: &[u8]) -> Vec<u8> {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        let body = [kind, data].concat();
        c.extend_from_slice(&body);
        c.extend_from_slice(&crc32(&body).to_be_bytes());
        c
    }

    /// A zlib stream that inflates to `n` zero bytes (n ≥ 1): one fixed-Huffman block of a
    /// literal 0 then `<length 258, distance 1>` copies, 13 bits per 258 bytes (≈ 1:160).
    fn zlib_zeros(n: usize) -> Vec<u8> {
        let mut out = vec![0x78, 0x01];
        let (mut acc, mut bits) = (0u64, 0u32);
        let mut put = |out: &mut Vec<u8>, v: u64, n: u32| {
            acc |= v << bits;
            bits += n;
            while bits >= 8 {
                out.push(acc as u8);
                acc >>= 8;
                bits -= 8;
            }
        };
        // Huffman codes go most significant bit first: reverse them into the LSB-first stream
        let code = |out: &mut Vec<u8>, put: &mut dyn FnMut(&mut Vec<u8>, u64, u32), c: u32, n| {
            put(out, u64::from(c.reverse_bits() >> (32 - n)), n)
        };
        put(&mut out, 0b011, 3); // final block, fixed Huffman
        code(&mut out, &mut put, 0b0011_0000, 8); // literal 0
        let mut left = n - 1;
        while left >= 258 {
            code(&mut out, &mut put, 0b1100_0101, 8); // length code 285: 258 bytes
            code(&mut out, &mut put, 0, 5); // distance code 0: 1 back
            left -= 258;
        }
        for _ in 0..left {
            code(&mut out, &mut put, 0b0011_0000, 8);
        }
        code(&mut out, &mut put, 0, 7); // end of block (256)
        put(&mut out, 0, 7); // pushes the last bits, padded to a byte
                             // Adler-32 of n zero bytes: a stays 1, b adds a (1) per byte
        let adler = ((n as u64 % 65521) << 16 | 1) as u32;
        out.extend_from_slice(&adler.to_be_bytes());
        out
    }

    /// A 28×28 digit-like gray picture with texture (so its JPEG has real scan data).
    fn digit() -> image::GrayImage {
        image::GrayImage::from_fn(28, 28, |x, y| {
            let ink = (9..19).contains(&x) && (4..24).contains(&y);
            image::Luma([if ink {
                200 + ((x * 7 + y * 3) % 50) as u8
            } else {
                ((x ^ y) * 3) as u8
            }])
        })
    }

    fn png_of(img: &image::GrayImage) -> Vec<u8> {
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        png
    }

    fn jpeg_of(img: &image::GrayImage) -> Vec<u8> {
        let mut jpg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpg, 90)
            .encode_image(img)
            .unwrap();
        jpg
    }

    fn refused(bytes: &[u8]) -> String {
        match decode_image_bytes(bytes, "upload", 1 << 20) {
            Ok(img) => panic!(
                "decoded as a {}x{} image instead of refused",
                img.width(),
                img.height()
            ),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_zlib_bomb_builder_inflates_to_what_it_says() {
        let z = zlib_zeros(1000);
        // one row of 1000 bytes: filter byte 0 then 999 zero pixels, as an IDAT of a 999x1 PNG
        let ihdr = [
            &999u32.to_be_bytes()[..],
            &1u32.to_be_bytes(),
            &[8, 0, 0, 0, 0],
        ]
        .concat();
        let png = [
            &b"\x89PNG\r\n\x1a\n"[..],
            &chunk(b"IHDR", &ihdr),
            &chunk(b"IDAT", &z),
            &chunk(b"IEND", &[]),
        ]
        .concat();
        let img = decode_image_bytes(&png, "upload", 1 << 20).unwrap();
        assert_eq!((img.width(), img.height()), (999, 1));
        assert!(img.to_luma8().pixels().all(|p| p.0[0] == 0));
    }

    #[test]
    fn a_png_with_a_huge_compressed_icc_profile_decodes_in_bounded_memory() {
        // the file: a 28x28 PNG whose iCCP chunk (≈ 6 MB here) inflates to 1000 MiB
        let png = png_of(&digit());
        let iccp = [&b"bomb\0\0"[..], &zlib_zeros(1000 << 20)].concat();
        let bomb = [&png[..33], &chunk(b"iCCP", &iccp), &png[33..]].concat();
        let (img, peak) = peak_bytes(|| decode_image_bytes(&bomb, "upload", 1 << 20));
        let img = img.unwrap();
        assert_eq!(img.to_luma8(), digit(), "the pixels are read whole");
        // the file itself is already in memory; the decoder adds a copy of the kept chunks
        // and the pixels, never the profile
        assert!(
            peak < 2 * bomb.len() + (1 << 20),
            "decoding a {} byte PNG allocated {peak} bytes at its peak",
            bomb.len()
        );
    }

    #[test]
    fn a_cut_png_is_refused_naming_the_cut() {
        let png = png_of(&digit());
        for cut in [png.len() / 2, png.len() - 12, png.len() - 1] {
            let e = refused(&png[..cut]);
            assert!(e.contains("upload") && e.contains("cut off"), "{cut}: {e}");
        }
        // a corrupt chunk (one flipped bit in the pixels) fails its CRC
        let mut bad = png.clone();
        bad[45] ^= 1;
        let e = refused(&bad);
        assert!(e.contains("cannot read as an image"), "{e}");
    }

    #[test]
    fn a_jpeg_decodes_as_the_image_crate_reads_it() {
        let jpg = jpeg_of(&digit());
        let ours = decode_image_bytes(&jpg, "upload", 1 << 20).unwrap();
        let theirs = image::load_from_memory(&jpg).unwrap();
        assert_eq!(ours, theirs);
        let mut rgb = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut rgb, 90)
            .encode_image(&image::DynamicImage::from(digit()).to_rgb8())
            .unwrap();
        let ours = decode_image_bytes(&rgb, "upload", 1 << 20).unwrap();
        assert_eq!(ours, image::load_from_memory(&rgb).unwrap());
    }

    #[test]
    fn a_cut_jpeg_is_refused_naming_the_cut() {
        let jpg = jpeg_of(&digit());
        for cut in [jpg.len() / 2, jpg.len() - 2] {
            let e = refused(&jpg[..cut]);
            assert!(e.contains("upload") && e.contains("cut off"), "{cut}: {e}");
        }
    }

    #[test]
    fn a_jpeg_whose_size_field_was_changed_is_refused() {
        let jpg = jpeg_of(&digit());
        let sof = jpg
            .windows(2)
            .position(|w| w == [0xff, 0xc0])
            .expect("a baseline frame");
        // SOF0: FF C0, length (2), precision (1), height (2), width (2)
        for (at, side) in [(sof + 5, 112u16), (sof + 7, 112), (sof + 5, 14)] {
            let mut bad = jpg.clone();
            bad[at..at + 2].copy_from_slice(&side.to_be_bytes());
            let e = refused(&bad);
            assert!(e.contains("frame size is wrong"), "{side}: {e}");
        }
    }

    #[test]
    fn corrupted_images_are_errors_naming_the_source_never_panics() {
        let (png, jpg) = (png_of(&digit()), jpeg_of(&digit()));
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut refused = 0;
        for round in 0..20_000 {
            let mut bytes = if round % 2 == 0 {
                png.clone()
            } else {
                jpg.clone()
            };
            for _ in 0..1 + next(4) {
                let at = next(bytes.len());
                bytes[at] = next(256) as u8;
            }
            if next(4) == 0 {
                bytes.truncate(next(bytes.len()));
            }
            match decode_image_bytes(&bytes, "upload", 1 << 20) {
                Ok(img) => assert!(img.width() * img.height() <= 1 << 20),
                Err(e) => {
                    refused += 1;
                    assert!(e.to_string().starts_with("upload: "), "{e}");
                }
            }
        }
        assert!(
            refused > 1000,
            "only {refused} of 3000 corrupted images refused"
        );
    }
}
