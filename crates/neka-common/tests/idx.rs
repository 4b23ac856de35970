//! The IDX reader and the MNIST loader on good, corrupt and misnamed files.

use neka_common::data::idx::{self, encode_idx, IMAGES_MAGIC, LABELS_MAGIC};
use neka_common::data::vision::{self, VisionDatasetKind};
use std::io::Write;
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mnist-sample")
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn images(n: usize) -> Vec<u8> {
    encode_idx(
        IMAGES_MAGIC,
        &[n, 2, 3],
        &(0..n * 6).map(|i| i as u8).collect::<Vec<_>>(),
    )
}

#[test]
fn reads_the_real_fixture() {
    let imgs = idx::read_images(&fixture().join("t10k-images-idx3-ubyte.gz")).unwrap();
    assert_eq!((imgs.count, imgs.rows, imgs.cols), (200, 28, 28));
    let labels = idx::read_labels(&fixture().join("t10k-labels-idx1-ubyte.gz")).unwrap();
    // the first MNIST test digits are 7, 2, 1, 0, 4
    assert_eq!(&labels[..5], &[7, 2, 1, 0, 4]);
    let data = vision::load_from_dir(VisionDatasetKind::Mnist, &fixture()).unwrap();
    assert_eq!((data.train.len(), data.test.len()), (400, 200));
}

#[test]
fn raw_and_gzip_are_detected_by_content_not_name() {
    let d = tempfile::tempdir().unwrap();
    let raw = images(4);
    let a = idx::read_images(&write(d.path(), "plain", &raw)).unwrap();
    // a gzip file without .gz, and a raw file called .gz
    let b = idx::read_images(&write(d.path(), "zipped-no-ext", &gz(&raw))).unwrap();
    let c = idx::read_images(&write(d.path(), "not-really.gz", &raw)).unwrap();
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert_eq!(a.count, 4);
    assert_eq!(a.pixels[6], 6);
}

#[test]
fn truncated_and_oversized_files_are_rejected_with_the_file_name() {
    let d = tempfile::tempdir().unwrap();
    let raw = images(4);
    for (name, bytes) in [
        ("trunc", raw[..raw.len() - 1].to_vec()),
        ("trunc.gz", gz(&raw[..raw.len() - 1])),
        ("long", [raw.clone(), vec![0]].concat()),
        ("long.gz", gz(&[raw.clone(), vec![0]].concat())),
    ] {
        let err = idx::read_images(&write(d.path(), name, &bytes))
            .unwrap_err()
            .to_string();
        assert!(err.contains(name), "{err}");
        assert!(
            err.contains("truncated") || err.contains("trailing"),
            "{err}"
        );
    }
    let err = idx::read_images(&write(d.path(), "short", &[0, 0, 8]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("short") && err.contains("magic"), "{err}");
    let err = idx::read_images(&write(d.path(), "hdr", &IMAGES_MAGIC.to_be_bytes()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("truncated header"), "{err}");
}

#[test]
fn a_header_bigger_than_the_file_allocates_nothing_and_errors() {
    let d = tempfile::tempdir().unwrap();
    // claims 4 billion 65535x65535 images: must fail on the size check, not try to allocate
    let huge = encode_idx(IMAGES_MAGIC, &[u32::MAX as usize, 65535, 65535], &[1, 2, 3]);
    for (name, bytes) in [("huge", huge.clone()), ("huge.gz", gz(&huge))] {
        let err = idx::read_images(&write(d.path(), name, &bytes))
            .unwrap_err()
            .to_string();
        assert!(err.contains("truncated") && err.contains(name), "{err}");
    }
}

#[test]
fn a_gzip_header_promising_more_than_deflate_can_hold_fails_before_decompressing() {
    // 16 MiB of zeros compress to well under 1 MB: a header claiming 2^31 images of 28x28 (1.7 TB)
    // cannot be true of any such gzip file (DEFLATE expands at most 1032:1), so it must fail
    // at once, not after decompressing (the first version read 3.1 GB of such a file).
    let d = tempfile::tempdir().unwrap();
    let bomb = gz(&encode_idx(
        IMAGES_MAGIC,
        &[1 << 31, 28, 28],
        &vec![0u8; 16 << 20],
    ));
    assert!(bomb.len() < 1_000_000, "{}", bomb.len()); // 1 MB can expand to ~1 GB at most
    let err = idx::read_images(&write(d.path(), "bomb.gz", &bomb))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bomb.gz")
            && err.contains("2147483648 images of 28x28")
            && err.contains("decompresses to at most"),
        "{err}"
    );
}

/// A reader that counts the bytes taken from it.
struct Counting<'a>(&'a [u8], std::rc::Rc<std::cell::Cell<usize>>);

impl std::io::Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        self.1.set(self.1.get() + n);
        Ok(n)
    }
}

#[test]
fn gzip_data_is_streamed_and_stops_at_the_first_byte_too_many() {
    // header: 10 images of 28x28 (7840 bytes); stream: 64 MiB. Without a length the deflate
    // bound cannot apply; the reader must stop soon after byte 7841, not inflate it all.
    let bytes = gz(&encode_idx(
        IMAGES_MAGIC,
        &[10, 28, 28],
        &vec![7u8; 64 << 20],
    ));
    let taken = std::rc::Rc::new(std::cell::Cell::new(0));
    let err = idx::read_idx_from(
        Counting(&bytes, taken.clone()),
        None,
        Path::new("stream"),
        IMAGES_MAGIC,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("stream") && err.contains("trailing"), "{err}");
    assert!(
        taken.get() < bytes.len() / 4,
        "{} of {}",
        taken.get(),
        bytes.len()
    );
    // the same bytes from memory with their length: a good file reads the same as from disk
    let good = gz(&images(3));
    let a = idx::read_idx_from(
        &good[..],
        Some(good.len() as u64),
        Path::new("m"),
        IMAGES_MAGIC,
    )
    .unwrap();
    assert_eq!((a.dims, a.data.len()), (vec![3, 2, 3], 18));
}

#[test]
fn wrong_magic_says_what_the_file_is() {
    let d = tempfile::tempdir().unwrap();
    let labels = encode_idx(LABELS_MAGIC, &[3], &[1, 2, 3]);
    let err = idx::read_images(&write(d.path(), "labels-as-images", &labels))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("2049") && err.contains("label file") && err.contains("labels-as-images"),
        "{err}"
    );
    let err = idx::read_labels(&write(d.path(), "junk", b"hello world"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("magic"), "{err}");
    let err = idx::read_labels(&write(d.path(), "badgz", &[0x1f, 0x8b, 1, 2, 3, 4, 5]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("badgz"), "{err}");
}

#[test]
fn image_label_count_mismatch_and_bad_labels() {
    let d = tempfile::tempdir().unwrap();
    let i = write(d.path(), "i", &images(4));
    let l = write(d.path(), "l", &encode_idx(LABELS_MAGIC, &[3], &[1, 2, 3]));
    let err = vision::read_set(&i, &l).unwrap_err().to_string();
    assert!(
        err.contains("3 labels") && err.contains("4 images"),
        "{err}"
    );
    let l = write(
        d.path(),
        "l2",
        &encode_idx(LABELS_MAGIC, &[4], &[1, 2, 3, 12]),
    );
    let err = vision::read_set(&i, &l).unwrap_err().to_string();
    assert!(err.contains("label 12"), "{err}");
}

#[test]
fn accepts_both_spellings_and_reports_missing_files() {
    let d = tempfile::tempdir().unwrap();
    let m = d.path().join("mnist");
    std::fs::create_dir(&m).unwrap();
    let imgs = images(2);
    let lbls = encode_idx(LABELS_MAGIC, &[2], &[3, 4]);
    write(&m, "train-images.idx3-ubyte", &imgs);
    write(&m, "train-labels.idx1-ubyte", &lbls);
    write(&m, "t10k-images-idx3-ubyte.gz", &gz(&imgs));
    let err = vision::load_from_dir(VisionDatasetKind::Mnist, d.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("t10k-labels") && err.contains("missing"),
        "{err}"
    );
    write(&m, "t10k-labels-idx1-ubyte", &lbls);
    let data = vision::load_from_dir(VisionDatasetKind::Mnist, d.path()).unwrap();
    assert_eq!(data.test.labels, vec![3, 4]);
    let err = vision::load_from_dir(VisionDatasetKind::FashionMnist, d.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("fashion-mnist"), "{err}");
    let err = vision::load_from_dir(VisionDatasetKind::Mnist, &d.path().join("nope"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not exist") && err.contains("NEKA_DATA_DIR"),
        "{err}"
    );
}

#[test]
fn split_is_seeded_disjoint_and_leaves_test_alone() {
    let data = vision::load_from_dir(VisionDatasetKind::Mnist, &fixture()).unwrap();
    let (t1, v1) = data.split_validation(100, 7).unwrap();
    let (t2, v2) = data.split_validation(100, 7).unwrap();
    let (_, v3) = data.split_validation(100, 8).unwrap();
    assert_eq!((t1.len(), v1.len()), (300, 100));
    assert_eq!(v1.labels, v2.labels);
    assert_eq!(t1.images.pixels, t2.images.pixels);
    assert_ne!(v1.images.pixels, v3.images.pixels);
    assert_eq!(data.test.len(), 200);
    assert!(data.split_validation(400, 1).is_err());
    // normalisation: canonical for MNIST, computed otherwise
    assert_eq!(data.normalize_for(&t1).mean, vec![0.1307]);
    let n = neka_common::data::Normalize::compute(&t1.images.pixels);
    assert!(
        (n.mean[0] - 0.13).abs() < 0.02 && (n.std[0] - 0.31).abs() < 0.03,
        "{n:?}"
    );
}
