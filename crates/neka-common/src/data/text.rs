//! Text files, plain or gzip-compressed (detected from the first bytes, not the name).

use crate::{Error, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The UTF-8 byte order mark some editors (Notepad) write at the start of a file.
pub const UTF8_BOM: &str = "\u{feff}";

/// The whole file as UTF-8 text, without a leading UTF-8 byte order mark (accepted and
/// dropped: it is an encoding marker, not text). Plain or gzip (detected from the bytes).
pub fn read_to_string(path: &Path) -> Result<String> {
    let (r, _) = super::idx::open(path)?;
    read_to_string_from(r, path)
}

/// [`read_to_string`] on any reader (plain or gzip, detected from the first bytes); `path`
/// names the source in errors.
pub fn read_to_string_from(reader: impl Read, path: &Path) -> Result<String> {
    let (mut r, _) = super::idx::sniff(reader, None).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    r.read_to_end(&mut bytes)
        .map_err(|e| Error::bad_data(path, format!("cannot read: {e}")))?;
    let mut text = String::from_utf8(bytes).map_err(|e| {
        Error::bad_data(
            path,
            format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    if text.starts_with(UTF8_BOM) {
        text.drain(..UTF8_BOM.len());
    }
    Ok(text)
}

/// The file's lines, without line endings (`\n` or `\r\n`); a carriage return anywhere else
/// is an error naming `file:line` ([`split_lines`]).
pub fn read_lines(path: &Path) -> Result<Vec<String>> {
    Ok(split_lines(&read_to_string(path)?, path)?
        .into_iter()
        .map(str::to_string)
        .collect())
}

/// [`read_lines`] on any reader (plain or gzip); `path` names the source in errors.
pub fn read_lines_from(reader: impl Read, path: &Path) -> Result<Vec<String>> {
    Ok(split_lines(&read_to_string_from(reader, path)?, path)?
        .into_iter()
        .map(str::to_string)
        .collect())
}

/// Splits text into lines at `\n`, dropping a `\r` before it (`\r\n` endings). A carriage
/// return that does not end a `\r\n` pair is an [`Error::BadLine`]: such files use old Mac
/// (CR-only) line endings, or mix endings, and reading them as one long line would silently
/// misalign everything after it. `path` names the source in errors.
pub fn split_lines<'a>(text: &'a str, path: &Path) -> Result<Vec<&'a str>> {
    text.lines()
        .enumerate()
        .map(|(i, raw)| {
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.contains('\r') {
                Err(Error::bad_line(
                    path,
                    i + 1,
                    "carriage return (CR) without a line feed: the file has old Mac (CR-only) \
                     or mixed line endings; convert it to LF (or CRLF) line endings, e.g. with \
                     `tr '\\r' '\\n'`",
                ))
            } else {
                Ok(line)
            }
        })
        .collect()
}

/// Finds `name` or `name.gz` in `dir`.
pub fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    [name.to_string(), format!("{name}.gz")]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// `text` in Unicode normalisation form C (NFC): `a` + U+0308 COMBINING DIAERESIS (what
/// macOS keyboards and file names produce) becomes `ä`, as in the training data. Every place
/// where text enters a model goes through it ([`tokenize`], the tagger's and translator's
/// vocabulary lookups, the character model's prompt), so composed and decomposed input give
/// the same answer. Borrows when the text is already NFC (all ASCII text is).
///
/// ```
/// use neka_common::data::text::nfc;
/// assert_eq!(nfc("fa\u{308}hrt"), "fährt");
/// assert_eq!(nfc("fährt"), "fährt");
/// ```
pub fn nfc(text: &str) -> std::borrow::Cow<'_, str> {
    use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};
    if text.is_ascii() || is_nfc_quick(text.chars()) == IsNormalized::Yes {
        std::borrow::Cow::Borrowed(text)
    } else {
        std::borrow::Cow::Owned(text.nfc().collect())
    }
}

/// Whether `c` is a combining mark (Unicode categories Mn, Mc, Me): it belongs to the
/// character before it, so [`tokenize`] never splits it from its word.
pub fn is_combining_mark(c: char) -> bool {
    unicode_normalization::char::is_combining_mark(c)
}

/// The simple tokenizer shared by the text models: normalises the text to NFC ([`nfc`]),
/// splits on whitespace, and splits every punctuation or symbol character off as a token of
/// its own, except an apostrophe or hyphen between letters (`don't`, `well-known`) and a `.`
/// or `,` between digits (`3.5`). A combining mark that has no precomposed form with its base
/// (`q̈`) stays with the character before it.
///
/// ```
/// use neka_common::data::text::tokenize;
/// assert_eq!(tokenize("Hello, world! It's 3.5 km."), ["Hello", ",", "world", "!", "It's", "3.5", "km", "."]);
/// // decomposed input (e + U+0301) gives the composed token
/// assert_eq!(tokenize("cafe\u{301} !"), ["café", "!"]);
/// ```
pub fn tokenize(text: &str) -> Vec<String> {
    let text = nfc(text);
    let mut out: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        let chars: Vec<char> = word.chars().collect();
        let mut cur = String::new();
        for (i, &c) in chars.iter().enumerate() {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1).copied();
            let inner =
                |f: fn(&char) -> bool| prev.as_ref().is_some_and(f) && next.as_ref().is_some_and(f);
            let joins = match c {
                '\'' | '’' | '-' => inner(|c| c.is_alphabetic() || is_combining_mark(*c)),
                '.' | ',' => inner(|c| c.is_ascii_digit()),
                _ => false,
            };
            if is_combining_mark(c) && i > 0 {
                // a mark belongs to the character before it, word or punctuation
                match out.last_mut() {
                    Some(last) if cur.is_empty() => last.push(c),
                    _ => cur.push(c),
                }
            } else if c.is_alphanumeric() || joins || is_combining_mark(c) {
                cur.push(c);
            } else {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                out.push(c.to_string());
            }
        }
        if !cur.is_empty() {
            out.push(cur);
        }
    }
    out
}

/// English clitics that UD English EWT writes as tokens of their own.
pub const EWT_CLITICS: [&str; 7] = ["n't", "'s", "'re", "'ve", "'ll", "'d", "'m"];

/// [`tokenize`], then EWT's split of English clitics ([`EWT_CLITICS`]): `don't` → `do n't`,
/// `it's` → `it 's`, `we’re` → `we ’re` (a curly apostrophe counts, and is kept) — how the
/// treebank the tagger learned from tokenises, so raw text meets the tagger as its training
/// data did.
///
/// ```
/// use neka_common::data::text::tokenize_ewt;
/// assert_eq!(tokenize_ewt("Don't stop, it's late."), ["Do", "n't", "stop", ",", "it", "'s", "late", "."]);
/// ```
pub fn tokenize_ewt(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for tok in tokenize(text) {
        let lower = tok.to_lowercase().replace('’', "'");
        let clitic = EWT_CLITICS
            .into_iter()
            .find(|c| lower.ends_with(c) && lower.len() > c.len());
        match clitic {
            Some(c) => {
                let cut = tok
                    .char_indices()
                    .rev()
                    .nth(c.chars().count() - 1)
                    .map_or(0, |(i, _)| i);
                out.push(tok[..cut].to_string());
                out.push(tok[cut..].to_string());
            }
            None => out.push(tok),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn ewt_tokenizer_splits_clitics_only_after_a_word() {
        assert_eq!(
            tokenize_ewt("I'm sure they’ll go"),
            ["I", "'m", "sure", "they", "’ll", "go"]
        );
        assert_eq!(tokenize_ewt("WON'T"), ["WO", "N'T"]);
        // a word that only ends like a clitic is left whole
        assert_eq!(tokenize_ewt("bus"), ["bus"]);
        assert_eq!(tokenize_ewt("Mavis"), ["Mavis"]);
        assert_eq!(tokenize_ewt("ünïcödé's"), ["ünïcödé", "'s"]);
    }

    #[test]
    fn decomposed_text_tokenizes_as_composed_and_marks_stay_in_their_word() {
        // the README's German example typed on macOS: a + U+0308
        let decomposed = "ein mann fa\u{308}hrt fahrrad .";
        assert_ne!(decomposed, "ein mann fährt fahrrad .");
        assert_eq!(tokenize(decomposed), tokenize("ein mann fährt fahrrad ."));
        assert_eq!(tokenize(decomposed)[2], "fährt");
        assert_eq!(tokenize_ewt("Cafe\u{301}'s"), ["Café", "'s"]);
        // q + U+0308 has no precomposed form: the mark stays inside the word
        assert_eq!(tokenize("Iraq\u{308}i, no"), ["Iraq\u{308}i", ",", "no"]);
        assert_eq!(tokenize("q\u{308}'s"), ["q\u{308}'s"]);
        // a mark after punctuation stays with it; a lone mark is a token
        assert_eq!(tokenize("a!\u{301} b"), ["a", "!\u{301}", "b"]);
        assert_eq!(tokenize("\u{301}"), ["\u{301}"]);
        assert!(matches!(nfc("plain"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn tokenizer_splits_punctuation() {
        assert_eq!(
            tokenize("  (see:  http://x.org) "),
            ["(", "see", ":", "http", ":", "/", "/", "x", ".", "org", ")"]
        );
        assert_eq!(
            tokenize("well-known U.S. 1,000"),
            ["well-known", "U", ".", "S", ".", "1,000"]
        );
        assert!(tokenize(" \t\n").is_empty());
    }

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

    #[test]
    fn a_bom_is_dropped_and_cr_only_endings_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bom.txt");
        std::fs::write(&p, "\u{feff}eins\nzwei\n").unwrap();
        assert_eq!(read_lines(&p).unwrap(), ["eins", "zwei"]);
        assert_eq!(read_to_string(&p).unwrap(), "eins\nzwei\n");
        let mac = dir.path().join("mac.txt");
        std::fs::write(&mac, "eins\rzwei\r").unwrap();
        let e = read_lines(&mac).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}:1:", mac.display())) && e.contains("CR-only"),
            "{e}"
        );
        std::fs::write(&mac, "eins\r\nzw\rei\r\n").unwrap();
        let e = read_lines(&mac).unwrap_err().to_string();
        assert!(
            e.contains("mac.txt:2:") && e.contains("carriage return"),
            "{e}"
        );
    }
}
