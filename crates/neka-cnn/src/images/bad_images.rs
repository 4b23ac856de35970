//! Bad images built in the test: each is refused by name (cut off, corrupt) or decoded within
//! bounded memory, never read as a guess.

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

/// CRC-32 (IEEE) of PNG chunks (also for the tests in `images/mod.rs`).
pub(super) fn crc32(bytes: &[u8]) -> u32 {
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
