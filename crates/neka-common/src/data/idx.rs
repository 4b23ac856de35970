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
//! header is checked against the bytes actually present.

use crate::{Error, Result};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

/// Magic number of an IDX file of unsigned-byte labels (1 dimension).
pub const LABELS_MAGIC: u32 = 2049;
/// Magic number of an IDX file of unsigned-byte images (3 dimensions).
pub const IMAGES_MAGIC: u32 = 2051;

const HEADER_LIMIT: usize = 4 + 4 * 8;

/// An IDX file's dimensions and its raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxData {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Images read from an IDX file: `count` images of `rows × cols` bytes, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

/// Opens a file for reading, decompressing it when its first two bytes are the gzip magic;
/// also returns the file size for uncompressed files.
pub(crate) fn open(path: &Path) -> Result<(Box<dyn Read>, Option<u64>)> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut magic = [0u8; 2];
    let n = read_fully(&mut file, &mut magic).map_err(|e| Error::io(path, e))?;
    let head = std::io::Cursor::new(magic[..n].to_vec());
    let chained = head.chain(file);
    if n == 2 && magic == [0x1f, 0x8b] {
        let gz = flate2::read::MultiGzDecoder::new(BufReader::new(chained));
        Ok((Box::new(gz), None))
    } else {
        Ok((Box::new(BufReader::new(chained)), Some(len)))
    }
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
    let (mut r, raw_len) = open(path)?;
    let io = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::InvalidInput
            || e.kind() == std::io::ErrorKind::InvalidData
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
    let ndims = (magic & 0xff) as usize;
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
    debug_assert!(4 + 4 * ndims <= HEADER_LIMIT);
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
    // Raw file: compare against the real size before reading anything more.
    if let Some(len) = raw_len {
        let have = len.saturating_sub(header_len);
        if have != expected {
            return Err(size_error(have, "the file holds"));
        }
    }
    // Read at most one byte more than promised; the buffer grows with the bytes actually
    // present, never with what the header claims.
    let mut data = Vec::new();
    r.by_ref()
        .take(expected.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(io)?;
    if data.len() as u64 != expected {
        let holds = if data.len() as u64 > expected {
            "the decompressed file holds at least"
        } else {
            "the decompressed file holds"
        };
        return Err(size_error(data.len() as u64, holds));
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
