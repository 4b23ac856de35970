//! The IDX file format of MNIST and Fashion-MNIST, raw or gzip-compressed.
//!
//! ```text
//! offset  type    value
//! 0       u32 BE  magic: 0x0000_08NN, 08 = unsigned byte, NN = number of dimensions
//! 4       u32 BE  size of dimension 0 (number of items)
//! 8 ...   u32 BE  sizes of the other dimensions (rows, cols for images)
//! then    u8      the data, row-major
//! ```
//! Labels have magic 2049 (1 dimension), images 2051 (3 dimensions).
//!
//! The reader trusts nothing: gzip is detected from the first two bytes (not the name),
//! the magic and dimensions are validated, the data length must equal what the header
//! promises — no more, no less — and no buffer is ever sized from the header before the
//! header is checked against the bytes actually present: a raw file's size must match it, a
//! gzip file's size bounds it (DEFLATE expands at most [`MAX_DEFLATE_RATIO`]:1), and the
//! data is read in bounded chunks, so memory follows the real data, never the claim.

use crate::{Error, Result};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

/// Magic number of an IDX file of unsigned-byte labels (1 dimension).
pub const LABELS_MAGIC: u32 = 2049;
/// Magic number of an IDX file of unsigned-byte images (3 dimensions).
pub const IMAGES_MAGIC: u32 = 2051;

/// The longest header read: the magic and at most 8 dimensions.
const HEADER_LIMIT: usize = 4 + 4 * 8;

/// An IDX file's dimensions and its raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxData {
    /// The dimensions from the header, items first (`[count]` for labels, `[count, rows, cols]`
    /// for images).
    pub dims: Vec<usize>,
    /// The data, row-major: exactly the product of `dims` bytes.
    pub data: Vec<u8>,
}

/// Images read from an IDX file: `count` images of `rows × cols` bytes, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Image height, in pixels.
    pub rows: usize,
    /// Image width, in pixels.
    pub cols: usize,
    /// `count · rows · cols` grey values 0–255, image after image.
    pub pixels: Vec<u8>,
}

/// What [`sniff`] found at the start of a byte source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// Not gzip: the bytes are the data; the total length when known.
    Raw(Option<u64>),
    /// A gzip stream; its compressed length when known.
    Gzip(Option<u64>),
}

/// The most a DEFLATE stream can expand: one 258-byte match coded in 2 bits is 1032:1
/// (zlib's documented maximum). A gzip file of `n` bytes never decompresses to more than
/// `1032 · n` bytes, so a header that promises more is rejected before anything is read.
pub const MAX_DEFLATE_RATIO: u64 = 1032;

/// Bytes read (and the buffer grown) at a time: the data buffer never runs ahead of the
/// bytes actually present by more than this, whatever the header claims.
const CHUNK: usize = 1 << 20;

/// Wraps a byte source, decompressing it when its first two bytes are the gzip magic
/// (detected from the content, never from a file name). `len` is the source's total length
/// in bytes when known.
pub(crate) fn sniff<'a, R: Read + 'a>(
    mut r: R,
    len: Option<u64>,
) -> std::io::Result<(Box<dyn Read + 'a>, Source)> {
    let mut magic = [0u8; 2];
    let n = read_fully(&mut r, &mut magic)?;
    let head = std::io::Cursor::new(magic[..n].to_vec());
    let chained = head.chain(r);
    if n == 2 && magic == [0x1f, 0x8b] {
        let gz = flate2::read::MultiGzDecoder::new(BufReader::new(chained));
        Ok((Box::new(gz), Source::Gzip(len)))
    } else {
        Ok((Box::new(BufReader::new(chained)), Source::Raw(len)))
    }
}

/// Opens a file for reading, decompressing it when its first two bytes are the gzip magic.
pub(crate) fn open(path: &Path) -> Result<(Box<dyn Read>, Source)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    sniff(file, Some(len)).map_err(|e| Error::io(path, e))
}

/// Reads until `buf` is full or EOF; returns the number of bytes read.
fn read_fully(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn describe_magic(m: u32) -> &'static str {
    match m {
        LABELS_MAGIC => " (that is an IDX label file)",
        IMAGES_MAGIC => " (that is an IDX image file)",
        _ => "",
    }
}

/// Reads an IDX file of unsigned bytes whose magic must be `expected_magic`.
pub fn read_idx(path: &Path, expected_magic: u32) -> Result<IdxData> {
    let (r, source) = open(path)?;
    read_idx_stream(r, source, path, expected_magic)
}

/// Reads IDX data (raw or gzip, detected from the first bytes) from any reader; `len` is the
/// number of bytes `reader` holds when known (a file's size), and `path` names the source in
/// errors. [`read_idx`] is this on a file.
///
/// Memory stays proportional to the bytes actually present, whatever the header claims:
/// * a raw source whose `len` differs from the header's promise fails before any data is read;
/// * a gzip source of `len` bytes that promises more than [`MAX_DEFLATE_RATIO`]` · len` bytes
///   fails before any data is read (no DEFLATE stream expands that much);
/// * the data is read in bounded chunks, the buffer growing with the bytes that arrived and
///   never past the header's promise; one byte more than promised fails at once (trailing
///   bytes), and a stream that ends early fails when it ends (truncated).
pub fn read_idx_from(
    reader: impl Read,
    len: Option<u64>,
    path: &Path,
    expected_magic: u32,
) -> Result<IdxData> {
    let (r, source) = sniff(reader, len).map_err(|e| Error::io(path, e))?;
    read_idx_stream(r, source, path, expected_magic)
}

fn read_idx_stream(
    mut r: impl Read,
    source: Source,
    path: &Path,
    expected_magic: u32,
) -> Result<IdxData> {
    let ndims = (expected_magic & 0xff) as usize;
    if expected_magic >> 8 != 0x08 || !(1..=(HEADER_LIMIT - 4) / 4).contains(&ndims) {
        return Err(Error::config(
            "IDX magic",
            format!(
                "{expected_magic:#010x}: neka reads unsigned-byte IDX files (0x000008NN) of 1 to {} dimensions",
                (HEADER_LIMIT - 4) / 4
            ),
        ));
    }
    let io = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::InvalidInput
            || e.kind() == std::io::ErrorKind::InvalidData
            || e.kind() == std::io::ErrorKind::UnexpectedEof
        {
            Error::bad_data(path, format!("corrupt gzip stream: {e}"))
        } else {
            Error::io(path, e)
        }
    };
    let mut magic = [0u8; 4];
    if read_fully(&mut r, &mut magic).map_err(io)? < 4 {
        return Err(Error::bad_data(
            path,
            "file is shorter than the 4-byte IDX magic number",
        ));
    }
    let magic = u32::from_be_bytes(magic);
    if magic != expected_magic {
        return Err(Error::bad_data(
            path,
            format!(
                "wrong IDX magic number {magic}{}: expected {expected_magic}{}; is this the right file?",
                describe_magic(magic),
                describe_magic(expected_magic)
            ),
        ));
    }
    let mut dims = Vec::with_capacity(ndims);
    for d in 0..ndims {
        let mut b = [0u8; 4];
        if read_fully(&mut r, &mut b).map_err(io)? < 4 {
            return Err(Error::bad_data(
                path,
                format!("truncated header: file ends inside dimension {d} of {ndims}"),
            ));
        }
        dims.push(u32::from_be_bytes(b) as usize);
    }
    let header_len = 4 + 4 * ndims as u64;
    let expected = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| Error::bad_data(path, format!("header dimensions {dims:?} overflow")))?;
    if dims.iter().skip(1).any(|&d| d == 0) {
        return Err(Error::bad_data(
            path,
            format!("header has a zero dimension: {dims:?}"),
        ));
    }
    let what = if ndims == 3 {
        format!("{} images of {}x{}", dims[0], dims[1], dims[2])
    } else {
        format!("{} items of shape {:?}", dims[0], &dims[1..])
    };
    let size_error = |have: u64, holds: &str| {
        let problem = if have < expected {
            "truncated"
        } else {
            "has trailing bytes"
        };
        Error::bad_data(
            path,
            format!("{problem}: the header promises {what} ({expected} bytes of data) but {holds} {have}"),
        )
    };
    match source {
        // Raw file: compare against the real size before reading anything more.
        Source::Raw(Some(len)) => {
            let have = len.saturating_sub(header_len);
            if have != expected {
                return Err(size_error(have, "the file holds"));
            }
        }
        // Gzip: the compressed size bounds the decompressed size.
        Source::Gzip(Some(len)) => {
            let most = len.saturating_mul(MAX_DEFLATE_RATIO);
            if expected.saturating_add(header_len) > most {
                return Err(Error::bad_data(
                    path,
                    format!(
                        "truncated: the header promises {what} ({expected} bytes of data) but a                          {len}-byte gzip file decompresses to at most {most} bytes (DEFLATE                          expands at most {MAX_DEFLATE_RATIO}:1); the header or the file is corrupt"
                    ),
                ));
            }
        }
        Source::Raw(None) | Source::Gzip(None) => {}
    }
    // Read in bounded chunks, at most one byte more than promised. The buffer grows with the
    // bytes actually present (doubling, capped at the promise), never with what the header
    // claims.
    let mut data: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; CHUNK.min(expected.saturating_add(1) as usize)];
    loop {
        let n = match r.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        };
        let have = data.len() as u64 + n as u64;
        if have > expected {
            return Err(size_error(have, "the decompressed file holds at least"));
        }
        if data.capacity() < have as usize {
            let want = (data.capacity().saturating_mul(2))
                .max(have as usize)
                .min(expected as usize);
            data.reserve_exact(want - data.len());
        }
        data.extend_from_slice(&chunk[..n]);
    }
    if data.len() as u64 != expected {
        return Err(size_error(data.len() as u64, "the decompressed file holds"));
    }
    Ok(IdxData { dims, data })
}

/// Reads an IDX image file (magic 2051).
pub fn read_images(path: &Path) -> Result<IdxImages> {
    let IdxData { dims, data } = read_idx(path, IMAGES_MAGIC)?;
    Ok(IdxImages {
        count: dims[0],
        rows: dims[1],
        cols: dims[2],
        pixels: data,
    })
}

/// Reads an IDX label file (magic 2049).
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    Ok(read_idx(path, LABELS_MAGIC)?.data)
}

/// Encodes bytes as an IDX file (raw, uncompressed): used to write test fixtures.
pub fn encode_idx(magic: u32, dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 4 * dims.len() + data.len());
    out.extend_from_slice(&magic.to_be_bytes());
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}
