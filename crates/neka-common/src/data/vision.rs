//! MNIST and Fashion-MNIST: locating the files, loading them, splitting and normalising.
//!
//! Where the data comes from, in order:
//! 1. a data directory: `--data-dir DIR` or the `NEKA_DATA_DIR` environment variable, holding
//!    `mnist/` and `fashion-mnist/` folders, or the four IDX files directly;
//! 2. with the `hub` feature, a Hugging Face Hub download (`ylecun/mnist`,
//!    `zalando-datasets/fashion_mnist`) through candle-datasets and hf-hub's cache;
//! 3. otherwise an error that explains both ways.

use super::dataset::{Dataset, LabeledDataset};
use super::idx::{self, IdxImages};
use crate::checkpoint::Normalize;
use crate::{Error, Result};
#[cfg(feature = "hub")]
use candle_core::DType;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The environment variable naming neka's data root.
pub const DATA_DIR_ENV: &str = "NEKA_DATA_DIR";

/// Which IDX image-classification dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VisionDatasetKind {
    /// MNIST handwritten digits (`mnist`): 28×28 grey images, 10 classes.
    Mnist,
    /// Fashion-MNIST clothing images (`fashion-mnist`): 28×28 grey images, 10 classes.
    FashionMnist,
}

impl VisionDatasetKind {
    /// The dataset's name as used on the command line and in checkpoints.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mnist => "mnist",
            Self::FashionMnist => "fashion-mnist",
        }
    }

    /// Folder names tried under the data root.
    fn folders(self) -> &'static [&'static str] {
        match self {
            Self::Mnist => &["mnist", "MNIST"],
            Self::FashionMnist => &["fashion-mnist", "fashion_mnist", "FashionMNIST"],
        }
    }

    /// Human-readable class names.
    pub fn class_names(self) -> Vec<String> {
        match self {
            Self::Mnist => (0..10).map(|d| d.to_string()).collect(),
            Self::FashionMnist => [
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        }
    }

    /// The canonical normalisation constants, where a canonical one exists (MNIST's
    /// 0.1307 / 0.3081 from the PyTorch example); `None` means "compute from the train set".
    pub fn canonical_normalize(self) -> Option<Normalize> {
        match self {
            Self::Mnist => Some(Normalize {
                mean: vec![0.1307],
                std: vec![0.3081],
            }),
            Self::FashionMnist => None,
        }
    }
}

impl std::str::FromStr for VisionDatasetKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "mnist" => Ok(Self::Mnist),
            "fashion-mnist" | "fashionmnist" => Ok(Self::FashionMnist),
            other => Err(Error::config(
                "dataset",
                format!("`{other}`: expected mnist or fashion-mnist"),
            )),
        }
    }
}

impl std::fmt::Display for VisionDatasetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One split of an image dataset, as bytes.
#[derive(Debug, Clone)]
pub struct ImageSet {
    /// The images, as bytes.
    pub images: IdxImages,
    /// Class id of each image.
    pub labels: Vec<u8>,
}

impl ImageSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the set holds no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The subset at `indices` (in that order).
    pub fn select(&self, indices: &[usize]) -> ImageSet {
        let px = self.images.rows * self.images.cols;
        let mut pixels = Vec::with_capacity(indices.len() * px);
        for &i in indices {
            pixels.extend_from_slice(&self.images.pixels[i * px..(i + 1) * px]);
        }
        ImageSet {
            images: IdxImages {
                count: indices.len(),
                rows: self.images.rows,
                cols: self.images.cols,
                pixels,
            },
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
        }
    }

    /// Moves the set to `device` as a normalised `(N, 1, rows, cols)` f32 dataset.
    pub fn to_dataset(&self, norm: &Normalize, device: &Device) -> Result<LabeledDataset> {
        let (n, h, w) = (self.len(), self.images.rows, self.images.cols);
        let x = Tensor::from_vec(norm.apply(&self.images.pixels), (n, 1, h, w), &Device::Cpu)?
            .to_device(device)?;
        let y = Tensor::from_vec(
            self.labels.iter().map(|&l| l as u32).collect::<Vec<_>>(),
            n,
            &Device::Cpu,
        )?
        .to_device(device)?;
        Ok(LabeledDataset { x, y })
    }
}

/// A train/test image-classification dataset read from IDX files (or the Hub).
#[derive(Debug, Clone)]
pub struct VisionData {
    /// Which dataset.
    pub kind: VisionDatasetKind,
    /// The training images (validation is split off later).
    pub train: ImageSet,
    /// The test images.
    pub test: ImageSet,
    /// Where it was loaded from, for messages.
    pub source: String,
}

impl VisionData {
    /// Splits `val_size` images off the training set with a permutation seeded by `seed`
    /// (independent of the model and shuffling RNGs). Returns `(train, val)`; the test set
    /// is never touched.
    pub fn split_validation(&self, val_size: usize, seed: u64) -> Result<(ImageSet, ImageSet)> {
        let n = self.train.len();
        if val_size >= n {
            return Err(Error::config(
                "val_size",
                format!("{val_size} is not smaller than the {n} training images"),
            ));
        }
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        r.set_stream(2);
        let mut perm: Vec<usize> = (0..n).collect();
        perm.shuffle(&mut r);
        let (val, train) = perm.split_at(val_size);
        let mut train = train.to_vec();
        train.sort_unstable();
        let mut val = val.to_vec();
        val.sort_unstable();
        Ok((self.train.select(&train), self.train.select(&val)))
    }

    /// The normalisation to use: the canonical one for MNIST, else computed from `train`.
    pub fn normalize_for(&self, train: &ImageSet) -> Normalize {
        self.kind
            .canonical_normalize()
            .unwrap_or_else(|| Normalize::compute(&train.images.pixels))
    }
}

/// How many images [`VisionData::splits`] keeps per split in a smoke run (`--dry-run`):
/// train, validation, test.
pub const SMOKE_SIZES: (usize, usize, usize) = (640, 500, 1000);

/// The three splits of a vision dataset on a device, normalised with the training split's
/// statistics ([`VisionData::normalize_for`]): what an image classifier trains on.
#[derive(Debug, Clone)]
pub struct VisionSplits {
    /// Which dataset.
    pub kind: VisionDatasetKind,
    /// Where the data came from, for messages.
    pub source: String,
    /// The training split, normalised: `x (N, 1, rows, cols)`, `y (N)`.
    pub train: LabeledDataset,
    /// The validation split, held out of the training images.
    pub val: LabeledDataset,
    /// The test split.
    pub test: LabeledDataset,
    /// The normalisation applied to all three splits (saved with the model).
    pub normalize: Normalize,
    /// Image height, in pixels.
    pub rows: usize,
    /// Image width, in pixels.
    pub cols: usize,
}

impl VisionSplits {
    /// `mnist: 55000 train / 5000 validation / 10000 test images`.
    pub fn counts(&self) -> String {
        let (kind, train, val, test) =
            (self.kind, self.train.len(), self.val.len(), self.test.len());
        format!("{kind}: {train} train / {val} validation / {test} test images")
    }

    /// [`Self::counts`], then ` from …; normalize mean […] std […]`.
    pub fn describe(&self) -> String {
        let n = &self.normalize;
        format!(
            "{} from {}; normalize mean {:?} std {:?}",
            self.counts(),
            self.source,
            n.mean,
            n.std
        )
    }

    /// The record of a classifier `model` (with its `config`) trained on these splits: the
    /// dataset, its normalisation and class names, and the validation size that selected them.
    pub fn record(
        &self,
        model: &str,
        config: &impl Serialize,
        val_size: usize,
    ) -> Result<crate::checkpoint::CheckpointInfo> {
        let mut info = crate::checkpoint::CheckpointInfo::new(model, config, self.kind.name())?;
        info.normalize = Some(self.normalize.clone());
        info.classes = self.kind.class_names();
        info.data.insert("val_size".into(), val_size.into());
        Ok(info)
    }
}

impl VisionData {
    /// Splits `val_size` training images off for validation ([`Self::split_validation`],
    /// seeded), normalises and moves all three splits to `device`. `smoke` keeps only the
    /// first [`SMOKE_SIZES`] images of each split (a run end to end in seconds).
    pub fn splits(
        &self,
        val_size: usize,
        seed: u64,
        smoke: bool,
        device: &Device,
    ) -> Result<VisionSplits> {
        let (mut train, mut val) = self.split_validation(val_size, seed)?;
        let mut test = self.test.clone();
        if smoke {
            let first =
                |set: &ImageSet, n: usize| set.select(&(0..n.min(set.len())).collect::<Vec<_>>());
            let (a, b, c) = SMOKE_SIZES;
            (train, val, test) = (first(&train, a), first(&val, b), first(&test, c));
        }
        let normalize = self.normalize_for(&train);
        Ok(VisionSplits {
            kind: self.kind,
            source: self.source.clone(),
            train: train.to_dataset(&normalize, device)?,
            val: val.to_dataset(&normalize, device)?,
            test: test.to_dataset(&normalize, device)?,
            normalize,
            rows: self.train.images.rows,
            cols: self.train.images.cols,
        })
    }
}

/// The data root from a flag, else from `NEKA_DATA_DIR`.
pub fn data_root(flag: Option<&Path>) -> Option<PathBuf> {
    flag.map(Path::to_path_buf).or_else(|| {
        std::env::var_os(DATA_DIR_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

const FILES: [(&str, &str); 4] = [
    ("train", "images"),
    ("train", "labels"),
    ("t10k", "images"),
    ("t10k", "labels"),
];

/// Finds one IDX file in `dir`, accepting `train-images-idx3-ubyte[.gz]` and
/// `train-images.idx3-ubyte[.gz]` spellings.
fn find_file(dir: &Path, split: &str, what: &str) -> Option<PathBuf> {
    let n = if what == "images" { 3 } else { 1 };
    let stems = [
        format!("{split}-{what}-idx{n}-ubyte"),
        format!("{split}-{what}.idx{n}-ubyte"),
    ];
    for stem in &stems {
        for ext in ["", ".gz"] {
            let p = dir.join(format!("{stem}{ext}"));
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Loads a dataset from a data root (see the module docs for the layouts accepted).
pub fn load_from_dir(kind: VisionDatasetKind, root: &Path) -> Result<VisionData> {
    if !root.is_dir() {
        return Err(Error::DataNotFound(format!(
            "data directory {} does not exist (from `data_dir` or {DATA_DIR_ENV}); point it at a \
             folder holding {}/ with the four IDX files",
            root.display(),
            kind.folders()[0]
        )));
    }
    let mut candidates: Vec<PathBuf> = kind.folders().iter().map(|f| root.join(f)).collect();
    candidates.push(root.to_path_buf());
    for dir in &candidates {
        let found: Vec<Option<PathBuf>> = FILES.iter().map(|(s, w)| find_file(dir, s, w)).collect();
        if found.iter().all(Option::is_none) {
            continue;
        }
        if let Some(i) = found.iter().position(Option::is_none) {
            let (s, w) = FILES[i];
            return Err(Error::DataNotFound(format!(
                "{}: incomplete {} folder: {s}-{w}-idx{}-ubyte[.gz] is missing",
                dir.display(),
                kind.name(),
                if w == "images" { 3 } else { 1 }
            )));
        }
        let p: Vec<PathBuf> = found.into_iter().flatten().collect();
        let train = read_set(&p[0], &p[1])?;
        let test = read_set(&p[2], &p[3])?;
        if (train.images.rows, train.images.cols) != (test.images.rows, test.images.cols) {
            return Err(Error::bad_data(
                &p[2],
                format!(
                    "test images are {}x{} but train images are {}x{}",
                    test.images.rows, test.images.cols, train.images.rows, train.images.cols
                ),
            ));
        }
        return Ok(VisionData {
            kind,
            train,
            test,
            source: dir.display().to_string(),
        });
    }
    Err(Error::DataNotFound(format!(
        "no {} IDX files under {} (looked in {}); expected train-images-idx3-ubyte[.gz], \
         train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]",
        kind.name(),
        root.display(),
        candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// Reads a matching image and label file pair.
pub fn read_set(images: &Path, labels: &Path) -> Result<ImageSet> {
    let imgs = idx::read_images(images)?;
    let lbls = idx::read_labels(labels)?;
    if imgs.count != lbls.len() {
        return Err(Error::bad_data(
            labels,
            format!(
                "holds {} labels but {} holds {} images",
                lbls.len(),
                images.display(),
                imgs.count
            ),
        ));
    }
    if let Some((i, l)) = lbls.iter().enumerate().find(|(_, &l)| l > 9) {
        return Err(Error::bad_data(
            labels,
            format!("label {l} at item {i} is not a class 0-9"),
        ));
    }
    Ok(ImageSet {
        images: imgs,
        labels: lbls,
    })
}

/// Loads a dataset: from `data_dir` (flag) or `NEKA_DATA_DIR` when given, else from the
/// Hugging Face Hub (feature `hub`), else fails saying how to provide it.
pub fn load(kind: VisionDatasetKind, data_dir: Option<&Path>) -> Result<VisionData> {
    if let Some(root) = data_root(data_dir) {
        return load_from_dir(kind, &root);
    }
    load_from_hub(kind)
}

/// The Hub dataset repositories candle-datasets reads MNIST and Fashion-MNIST from, the
/// revision (the Hub's parquet conversion) and the two parquet files (test, train).
pub const VISION_HUB_FILES: [(&str, &str, [&str; 2]); 2] = [
    (
        "ylecun/mnist",
        "refs/convert/parquet",
        ["mnist/test/0000.parquet", "mnist/train/0000.parquet"],
    ),
    (
        "zalando-datasets/fashion_mnist",
        "refs/convert/parquet",
        [
            "fashion_mnist/test/0000.parquet",
            "fashion_mnist/train/0000.parquet",
        ],
    ),
];

#[cfg(feature = "hub")]
fn load_from_hub(kind: VisionDatasetKind) -> Result<VisionData> {
    let (repo, revision, files) = VISION_HUB_FILES[match kind {
        VisionDatasetKind::Mnist => 0,
        VisionDatasetKind::FashionMnist => 1,
    }];
    let how = format!(
        "give a data directory DIR (`data_dir`, or set {DATA_DIR_ENV}=DIR) with DIR/{}/ holding the four IDX files",
        kind.folders()[0]
    );
    // Fetch (and check) the two parquet files through neka's Hub layer first: candle-datasets
    // then finds them in the cache and does not touch the network (nor HF_HUB_OFFLINE).
    for file in files {
        crate::hub::dataset_file_at(repo, revision, file).map_err(|e| {
            Error::DataNotFound(format!(
                "no data directory given for {} and the Hub has not given it: {e}. Or {how}",
                kind.name()
            ))
        })?;
    }
    let loaded = match kind {
        VisionDatasetKind::Mnist => candle_datasets::vision::mnist::load(),
        VisionDatasetKind::FashionMnist => candle_datasets::vision::fashion_mnist::load(),
    };
    let ds = loaded.map_err(|e| {
        Error::DataNotFound(format!(
            "{} from the Hugging Face Hub ({repo}, {revision}): candle-datasets cannot read the \
             cached parquet files ({e}). Delete {} and run again, or {how}",
            kind.name(),
            crate::hub::cache_dir().display()
        ))
    })?;
    let to_set = |images: &Tensor, labels: &Tensor| -> Result<ImageSet> {
        // candle-datasets gives f32 pixels in [0, 1] that were u8/255: recover the bytes.
        let (n, px) = images.dims2()?;
        let pixels: Vec<u8> = (images * 255.0)?
            .round()?
            .to_dtype(DType::U8)?
            .flatten_all()?
            .to_vec1()?;
        let labels: Vec<u8> = labels.to_dtype(DType::U8)?.to_vec1()?;
        let side = (px as f64).sqrt() as usize;
        Ok(ImageSet {
            images: IdxImages {
                count: n,
                rows: side,
                cols: px / side,
                pixels,
            },
            labels,
        })
    };
    Ok(VisionData {
        kind,
        train: to_set(&ds.train_images, &ds.train_labels)?,
        test: to_set(&ds.test_images, &ds.test_labels)?,
        source: format!("Hugging Face Hub dataset {repo} ({revision})"),
    })
}

#[cfg(not(feature = "hub"))]
fn load_from_hub(kind: VisionDatasetKind) -> Result<VisionData> {
    Err(Error::DataNotFound(format!(
        "no data directory given for {}: give a data directory DIR (`data_dir`, or set {DATA_DIR_ENV}=DIR) with \
         DIR/{}/ holding the four IDX files, or build with the `hub` feature to download it \
         from the Hugging Face Hub",
        kind.name(),
        kind.folders()[0]
    )))
}
