//! Text files, plain or gzip-compressed (detected from the first bytes, not the name).

use crate::{Error, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The whole file as UTF-8 text.
pub fn read_to_string(path: &Path) -> Result<String> {
    let (mut r, _) = super::idx::open(path)?;
    let mut bytes = Vec::new();
    r.read_to_end(&mut bytes)
        .map_err(|e| Error::bad_data(path, format!("cannot read: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        Error::bad_data(
            path,
            format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// The file's lines, without line endings (`\n` or `\r\n`).
pub fn read_lines(path: &Path) -> Result<Vec<String>> {
    Ok(read_to_string(path)?
        .lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
        .collect())
}

/// Finds `name` or `name.gz` in `dir`.
pub fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    [name.to_string(), format!("{name}.gz")]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn plain_and_gzip_read_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("a.txt");
        std::fs::write(&plain, "eins\r\nzwei\n").unwrap();
        let gz = dir.path().join("b"); // no .gz suffix: detected from the bytes
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(b"eins\nzwei\n").unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        assert_eq!(read_lines(&plain).unwrap(), ["eins", "zwei"]);
        assert_eq!(read_lines(&gz).unwrap(), ["eins", "zwei"]);
        std::fs::write(&plain, [0x66, 0xff, 0x66]).unwrap();
        let e = read_lines(&plain).unwrap_err().to_string();
        assert!(e.contains("a.txt") && e.contains("not UTF-8"), "{e}");
        assert!(find_file(dir.path(), "b").is_some());
        assert!(find_file(dir.path(), "c").is_none());
    }
}
