//! Decoding image bytes within bounds: PNG through its critical chunks only, JPEG checked
//! whole (`images::jpeg`) before any pixel is decoded, dimensions and memory capped.

use super::jpeg::jpeg_scan_ends;
use crate::{Error, Result};
use std::path::Path;

/// The largest image [`super::load_image`] decodes, in pixels (64 megapixels): larger dimensions
/// are refused from the header, before any pixel is decoded.
pub const MAX_IMAGE_PIXELS: u64 = 64 * 1024 * 1024;

/// The most memory the image decoder may allocate (512 MiB), so that a decompression bomb is
/// a clear error rather than an out-of-memory kill.
pub const MAX_IMAGE_ALLOC: u64 = 512 * 1024 * 1024;

/// The largest image file [`super::load_image`] reads (256 MiB); a larger one is refused from its
/// size, before it is read.
pub const MAX_IMAGE_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// Reads `path` (at most [`MAX_IMAGE_FILE_BYTES`]) and decodes it as [`decode_image_bytes`].
pub(super) fn decode_image(path: &Path) -> Result<image::DynamicImage> {
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

/// Decodes image bytes (PNG or JPEG, detected from the content) as [`super::load_image`] decodes a
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
