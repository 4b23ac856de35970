//! The Hugging Face Hub download paths, for real, against a Hub on 127.0.0.1
//! ([`server::LocalHub`]): the example binaries run as a user runs them, with no data flag,
//! `NEKA_DATA_DIR` and `HF_HUB_OFFLINE` unset, `HF_ENDPOINT` at the local Hub and a fresh
//! `HF_HOME`. The Hub serves the data folder's real files in each repository's layout (MNIST
//! and Fashion-MNIST as the parquet files candle-datasets reads, made from the IDX files; EWT's
//! CoNLL-U files; Multi30k's JSON lines) and the shipped `models/*` as model repositories.
//!
//! Then the failures: a wrong id (404), a server error (500), a refused connection, a body cut
//! off, bytes that do not match their ETag, `HF_HUB_OFFLINE=1` with an empty cache. Each must
//! exit non-zero with a message naming the repository, the file and the fix, and leave nothing
//! in the cache that a later run would trust. No network beyond 127.0.0.1.

mod server;

#[path = "../common/mod.rs"]
mod common;

use common::{assert_clean_failure, example, last_json, text};
use server::{Fault, HubContent, LocalHub};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// Images of each MNIST-like split served (the first ones of the real files): enough for a few
/// batches, a validation split and a test score, small enough to encode in a second or two.
const TRAIN_IMAGES: usize = 3000;
const TEST_IMAGES: usize = 1000;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The data folder (`NEKA_DATA_DIR`, else `../shared/data`) when it holds the real data, else
/// `None` (then the fixtures are served).
fn data_folder() -> Option<PathBuf> {
    let dir = std::env::var_os("NEKA_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/data"));
    dir.join("mnist/train-images-idx3-ubyte.gz")
        .is_file()
        .then_some(dir)
}

/// One MNIST-like split as the Hub's parquet conversion holds it: `image` a struct of
/// `bytes` (PNG) and `path`, `label` int64; what candle-datasets reads.
fn parquet_of(images: &neka_common::data::idx::IdxImages, labels: &[u8], n: usize) -> Vec<u8> {
    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    let n = n.min(images.count);
    let px = images.rows * images.cols;
    let pngs: Vec<ByteArray> = (0..n)
        .map(|i| {
            let img = image::GrayImage::from_raw(
                images.cols as u32,
                images.rows as u32,
                images.pixels[i * px..(i + 1) * px].to_vec(),
            )
            .unwrap();
            let mut png = std::io::Cursor::new(Vec::new());
            img.write_to(&mut png, image::ImageFormat::Png).unwrap();
            ByteArray::from(png.into_inner())
        })
        .collect();
    let labels: Vec<i64> = labels[..n].iter().map(|&l| l as i64).collect();
    let schema = parse_message_type(
        "message schema { optional group image { optional binary bytes; optional binary path (STRING); } optional int64 label; }",
    )
    .unwrap();
    let mut buf = Vec::new();
    let props = Arc::new(WriterProperties::builder().build());
    let mut w = SerializedFileWriter::new(&mut buf, Arc::new(schema), props).unwrap();
    let mut rg = w.next_row_group().unwrap();
    let mut col = rg.next_column().unwrap().unwrap(); // image.bytes: present (level 2)
    col.typed::<ByteArrayType>()
        .write_batch(&pngs, Some(&vec![2; n]), None)
        .unwrap();
    col.close().unwrap();
    let mut col = rg.next_column().unwrap().unwrap(); // image.path: null (level 1)
    col.typed::<ByteArrayType>()
        .write_batch(&[], Some(&vec![1; n]), None)
        .unwrap();
    col.close().unwrap();
    let mut col = rg.next_column().unwrap().unwrap(); // label
    col.typed::<Int64Type>()
        .write_batch(&labels, Some(&vec![1; n]), None)
        .unwrap();
    col.close().unwrap();
    rg.close().unwrap();
    w.close().unwrap();
    buf
}

/// What the local Hub serves, built once per test binary.
/// MNIST and Fashion-MNIST as the Hub's parquet conversion (`refs/convert/parquet`) holds them,
/// the first `train` / `test` images of each split, as candle-datasets asks for them.
fn add_mnist_like(c: &mut HubContent, data: Option<&Path>, train: usize, test: usize) {
    for (folder, repo, dir) in [
        ("mnist", "datasets/ylecun/mnist", "mnist"),
        (
            "fashion-mnist",
            "datasets/zalando-datasets/fashion_mnist",
            "fashion_mnist",
        ),
    ] {
        let src = match data {
            Some(d) => d.join(folder),
            None => common::fixture("mnist-sample"),
        };
        for (split, idx, n) in [("train", "train", train), ("test", "t10k", test)] {
            use neka_common::data::idx;
            let images =
                idx::read_images(&src.join(format!("{idx}-images-idx3-ubyte.gz"))).unwrap();
            let labels =
                idx::read_labels(&src.join(format!("{idx}-labels-idx1-ubyte.gz"))).unwrap();
            c.add(
                repo,
                "refs/convert/parquet",
                &format!("{dir}/{split}/0000.parquet"),
                parquet_of(&images, &labels, n),
            );
        }
    }
}

fn content() -> Arc<HubContent> {
    static CONTENT: OnceLock<Arc<HubContent>> = OnceLock::new();
    CONTENT
        .get_or_init(|| {
            let t0 = Instant::now();
            let data = data_folder();
            let mut c = HubContent::default();
            // MNIST, Fashion-MNIST: refs/convert/parquet, as candle-datasets asks for it
            add_mnist_like(&mut c, data.as_deref(), TRAIN_IMAGES, TEST_IMAGES);
            // UD English EWT, in the IWPT 2020 repository's folder
            for split in ["train", "dev", "test"] {
                let src = match &data {
                    Some(d) => d.join(format!("ud-english-ewt/en_ewt-ud-{split}.conllu")),
                    None => common::fixture("ud/en_ewt-sample.conllu"),
                };
                c.add(
                    "datasets/FrancophonIA/IWPT_2020",
                    "main",
                    &format!("UD_English-EWT/en_ewt-ud-{split}.conllu"),
                    std::fs::read(&src).unwrap(),
                );
            }
            // Multi30k as bentrevett/multi30k holds it: {"en": …, "de": …} per line
            for (split, file) in [
                ("train", "train"),
                ("val", "val"),
                ("test_2016_flickr", "test"),
            ] {
                let dir = match &data {
                    Some(d) => d.join("multi30k"),
                    None => common::fixture("multi30k"),
                };
                let lines = |lang: &str| {
                    let p = neka_common::data::text::find_file(&dir, &format!("{split}.{lang}"))
                        .unwrap();
                    neka_common::data::text::read_lines(&p).unwrap()
                };
                let (en, de) = (lines("en"), lines("de"));
                let jsonl: String = en
                    .iter()
                    .zip(&de)
                    .map(|(e, d)| serde_json::json!({"en": e, "de": d}).to_string() + "\n")
                    .collect();
                c.add(
                    "datasets/bentrevett/multi30k",
                    "main",
                    &format!("{file}.jsonl"),
                    jsonl.into_bytes(),
                );
            }
            // the shipped models, as model repositories neka/<folder>
            for m in std::fs::read_dir(root().join("models")).unwrap() {
                let m = m.unwrap().path();
                let name = m.file_name().unwrap().to_string_lossy().into_owned();
                for f in std::fs::read_dir(&m).unwrap() {
                    let f = f.unwrap().path();
                    let file = f.file_name().unwrap().to_string_lossy().into_owned();
                    c.add(
                        &format!("neka/{name}"),
                        "main",
                        &file,
                        std::fs::read(&f).unwrap(),
                    );
                }
            }
            eprintln!(
                "local Hub content from {} built in {:.1} s",
                data.map(|d| d.display().to_string())
                    .unwrap_or("the fixtures".into()),
                t0.elapsed().as_secs_f64()
            );
            Arc::new(c)
        })
        .clone()
}

/// The longest any one command may take before the test kills it and fails (the slowest, a
/// full evaluation on 2 shared cores, takes about 35 s).
const LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Runs `c` to the end like `Command::output`, but kills it and fails the test after `limit`:
/// a download that hangs must not hang CI.
fn output_within(mut c: Command, limit: std::time::Duration) -> Output {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{c:?} still ran after {limit:?}: killed");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// A user's machine: a Hub endpoint and an empty `HF_HOME`.
struct Machine {
    endpoint: String,
    home: tempfile::TempDir,
    offline: bool,
}

impl Machine {
    fn new(endpoint: &str) -> Self {
        Self {
            endpoint: endpoint.to_string(),
            home: tempfile::tempdir().unwrap(),
            offline: false,
        }
    }

    /// `name args…` with no data flag, no `NEKA_DATA_DIR`, `HF_HUB_OFFLINE` unset (or `1`
    /// when `offline`), `HF_ENDPOINT` and `HF_HOME` set, proxies off.
    fn run(&self, name: &str, args: &[&str]) -> Output {
        let mut c = self.command(example(name));
        c.args(args);
        let t0 = Instant::now();
        let o = output_within(c, LIMIT);
        eprintln!(
            "[{:5.1} s] {name} {} -> {}{}",
            t0.elapsed().as_secs_f64(),
            args.join(" "),
            o.status,
            if self.offline {
                " (HF_HUB_OFFLINE=1)"
            } else {
                ""
            }
        );
        o
    }

    /// `program` in this machine's temp dir with the environment [`Machine::run`] describes.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.current_dir(self.home.path());
        for v in [
            "NEKA_DATA_DIR",
            "HF_HUB_OFFLINE",
            "HF_HUB_CACHE",
            "HUGGINGFACE_HUB_CACHE",
            "XDG_CACHE_HOME",
            "HF_TOKEN",
            "HF_TOKEN_PATH",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
            "RUST_BACKTRACE",
            "RUST_LIB_BACKTRACE",
        ] {
            c.env_remove(v);
        }
        c.env("HF_ENDPOINT", &self.endpoint)
            .env("HF_HOME", self.home.path())
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost");
        if self.offline {
            c.env("HF_HUB_OFFLINE", "1");
        }
        c
    }

    #[track_caller]
    fn run_ok(&self, name: &str, args: &[&str]) -> Output {
        let o = self.run(name, args);
        assert!(o.status.success(), "{name} {args:?}: {}", text(&o));
        o
    }

    /// A path in this machine's temp dir.
    fn path(&self, rel: &str) -> String {
        self.home.path().join(rel).to_string_lossy().into_owned()
    }

    /// Every file under the Hub cache, relative to it.
    fn cache_files(&self) -> Vec<String> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            let Ok(rd) = std::fs::read_dir(dir) else {
                return;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() && !p.is_symlink() {
                    walk(&p, base, out);
                } else {
                    out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        let hub = self.home.path().join("hub");
        let mut out = vec![];
        walk(&hub, &hub, &mut out);
        out.sort();
        out
    }

    /// After a failed download: no snapshot entry and no complete blob, so a later run
    /// downloads afresh (an `.incomplete` partial file, which hf-hub never uses, a lock or a
    /// `.no_exist` marker of a 404 may stay).
    #[track_caller]
    fn assert_nothing_trusted(&self) {
        let files = self.cache_files();
        let trusted: Vec<&String> = files
            .iter()
            .filter(|f| {
                (f.contains("/snapshots/") || f.contains("/blobs/")) && !f.ends_with(".incomplete")
            })
            .collect();
        assert!(
            trusted.is_empty(),
            "the cache keeps {trusted:?} (all: {files:?})"
        );
    }
}

fn model(name: &str) -> String {
    root()
        .join("models")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// The number after `name: NAME\n type: …\n value:` in a model card.
fn card_value(model_dir: &str, name: &str) -> f64 {
    let card = std::fs::read_to_string(Path::new(model_dir).join("README.md")).unwrap();
    let at = card.find(&format!("name: {name}")).unwrap();
    let v = card[at..].split("value:").nth(1).unwrap();
    v.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn mnist_and_fashion_mnist_download_train_evaluate_then_come_from_the_cache() {
    let hub = LocalHub::start(content());
    let mut m = Machine::new(&hub.url());
    let o = m.run_ok(
        "mnist_cnn",
        &[
            "--model",
            "lenet5",
            "--epochs",
            "1",
            "--max-batches",
            "3",
            "--val-size",
            "500",
            "--device",
            "cpu",
            "--out",
            &m.path("lenet5"),
        ],
    );
    assert!(
        text(&o).contains("Hugging Face Hub dataset ylecun/mnist"),
        "{}",
        text(&o)
    );
    let requests = hub.requests();
    for r in [
        "HEAD /datasets/ylecun/mnist/resolve/refs%2Fconvert%2Fparquet/mnist/train/0000.parquet",
        "GET /datasets/ylecun/mnist/resolve/refs%2Fconvert%2Fparquet/mnist/test/0000.parquet",
    ] {
        assert!(requests.iter().any(|q| q == r), "no `{r}` in {requests:?}");
    }
    assert!(
        requests.iter().any(|q| q.starts_with("GET /cdn/")),
        "LFS redirect not followed: {requests:?}"
    );

    let eval = ["eval", "--model-id", "neka/mnist-cnn", "--device", "cpu"];
    let acc = last_json(&m.run_ok("mnist_cnn", &eval))["accuracy"]
        .as_f64()
        .unwrap();
    // the shipped model on the first test images: the pixels arrived intact through PNG/parquet
    assert!(acc >= 0.95, "accuracy {acc}");
    m.run_ok(
        "mnist_cnn",
        &[
            "--dataset",
            "fashion-mnist",
            "--model",
            "lenet5",
            "--epochs",
            "1",
            "--max-batches",
            "2",
            "--val-size",
            "500",
            "--device",
            "cpu",
            "--out",
            &m.path("fashion"),
        ],
    );
    let served = hub.requests().len();

    // the server gone: the cache answers, online and offline
    drop(hub);
    let again = last_json(&m.run_ok("mnist_cnn", &eval))["accuracy"]
        .as_f64()
        .unwrap();
    assert_eq!(acc, again);
    m.offline = true;
    let offline = last_json(&m.run_ok("mnist_cnn", &eval))["accuracy"]
        .as_f64()
        .unwrap();
    assert_eq!(acc, offline);
    eprintln!("MNIST: {served} requests served; shipped mnist-cnn {acc:.4} on the served test images, the same from the cache");
}

#[test]
fn ewt_downloads_for_training_and_eval_split_then_comes_from_the_cache() {
    let hub = LocalHub::start(content());
    let mut m = Machine::new(&hub.url());
    let o = m.run_ok(
        "pos_tagger",
        &[
            "train",
            "--train-sentences",
            "300",
            "--epochs",
            "1",
            "--max-batches",
            "3",
            "--device",
            "cpu",
            "--out",
            &m.path("pos"),
        ],
    );
    assert!(text(&o).contains("FrancophonIA/IWPT_2020"), "{}", text(&o));
    let png = m.path("confusion.png");
    let eval = [
        "eval",
        "--model-id",
        "neka/pos-bilstm-ewt",
        "--split",
        "test",
        "--confusion-png",
        &png,
        "--device",
        "cpu",
    ];
    let o = m.run_ok("pos_tagger", &eval);
    assert!(text(&o).contains("UD English EWT test"), "{}", text(&o));
    let acc = last_json(&o)["upos_accuracy"].as_f64().unwrap();
    if data_folder().is_some() {
        // the served file is the data folder's test file: the model card's score, exactly
        let card = card_value(&model("pos-bilstm-ewt"), "test UPOS accuracy");
        assert!(
            (acc - card).abs() <= 0.001,
            "accuracy {acc}, model card {card}"
        );
    }
    assert!(acc > 0.8, "accuracy {acc}");

    drop(hub);
    let again = last_json(&m.run_ok("pos_tagger", &eval))["upos_accuracy"]
        .as_f64()
        .unwrap();
    assert_eq!(acc, again);
    m.offline = true;
    let dev = [
        "eval",
        "--model-id",
        "neka/pos-bilstm-ewt",
        "--split",
        "dev",
        "--confusion-png",
        &png,
        "--device",
        "cpu",
    ];
    let o = m.run_ok("pos_tagger", &dev);
    eprintln!("EWT: shipped tagger test UPOS {acc:.4} (model card: the same), dev {:.4} from the cache offline",
              last_json(&o)["upos_accuracy"].as_f64().unwrap());
}

#[test]
fn multi30k_downloads_for_translate_and_char_rnn_then_comes_from_the_cache() {
    let hub = LocalHub::start(content());
    let mut m = Machine::new(&hub.url());
    let o = m.run_ok(
        "translate",
        &[
            "train",
            "--train-pairs",
            "300",
            "--epochs",
            "1",
            "--max-batches",
            "3",
            "--embed",
            "16",
            "--enc-hidden",
            "16",
            "--dec-hidden",
            "32",
            "--beam",
            "1",
            "--device",
            "cpu",
            "--out",
            &m.path("tr"),
        ],
    );
    let requests = hub.requests();
    for f in ["train", "val", "test"] {
        let r = format!("GET /datasets/bentrevett/multi30k/resolve/main/{f}.jsonl");
        assert!(
            requests.contains(&r),
            "no `{r}` in {requests:?}: {}",
            text(&o)
        );
    }
    let eval = [
        "eval",
        "--model-id",
        "neka/seq2seq-multi30k-de-en",
        "--split",
        "test",
        "--beam",
        "1",
        "--device",
        "cpu",
    ];
    let o = m.run_ok("translate", &eval);
    assert!(
        text(&o).contains("Multi30k test_2016_flickr (de → en): 1000 pairs")
            || data_folder().is_none(),
        "{}",
        text(&o)
    );
    let bleu = last_json(&o)["bleu"].as_f64().unwrap();
    assert!(bleu > 20.0 || data_folder().is_none(), "BLEU {bleu}");
    let o = m.run_ok(
        "char_rnn",
        &[
            "--max-batches",
            "2",
            "--epochs",
            "1",
            "--hidden",
            "32",
            "--length",
            "20",
            "--device",
            "cpu",
            "--out",
            &m.path("char"),
        ],
    );
    assert!(text(&o).contains("train.jsonl"), "{}", text(&o));

    drop(hub);
    m.offline = true;
    let again = last_json(&m.run_ok("translate", &eval))["bleu"]
        .as_f64()
        .unwrap();
    assert_eq!(bleu, again);
    m.run_ok(
        "char_rnn",
        &[
            "--max-batches",
            "1",
            "--epochs",
            "1",
            "--hidden",
            "32",
            "--length",
            "20",
            "--device",
            "cpu",
            "--out",
            &m.path("char2"),
        ],
    );
    eprintln!("Multi30k: shipped translator greedy BLEU {bleu:.2} on the served test split, the same from the cache");
}

#[test]
fn a_wrong_model_id_is_a_404_naming_the_repository_and_the_fix() {
    let hub = LocalHub::start(content());
    let m = Machine::new(&hub.url());
    let o = m.run(
        "pos_tagger",
        &[
            "tag",
            "--model-id",
            "neka/no-such-model",
            "--device",
            "cpu",
            "A test .",
        ],
    );
    assert_clean_failure(
        &o,
        &[
            "neka/no-such-model",
            "config.json",
            "404",
            "check the model id (--model-id",
        ],
    );
    m.assert_nothing_trusted();
    eprintln!("{}", text(&o));
}

#[test]
fn a_server_error_names_the_dataset_file_and_the_fix() {
    let hub = LocalHub::start(content());
    hub.set_fault(Fault::Status(500));
    let m = Machine::new(&hub.url());
    let o = m.run(
        "pos_tagger",
        &[
            "eval",
            "--model",
            &model("pos-bilstm-ewt"),
            "--split",
            "test",
            "--device",
            "cpu",
        ],
    );
    assert_clean_failure(
        &o,
        &[
            "FrancophonIA/IWPT_2020",
            "UD_English-EWT/en_ewt-ud-test.conllu",
            "500",
            "try again later",
            "--data-dir",
        ],
    );
    m.assert_nothing_trusted();
    eprintln!("{}", text(&o));
}

#[test]
fn a_refused_connection_names_the_hub_and_the_fix() {
    // a port that was just free: nothing listens there
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let m = Machine::new(&format!("http://127.0.0.1:{port}"));
    let o = m.run(
        "translate",
        &[
            "eval",
            "--model",
            &model("seq2seq-multi30k-de-en"),
            "--split",
            "test",
            "--beam",
            "1",
            "--device",
            "cpu",
        ],
    );
    assert_clean_failure(
        &o,
        &[
            "bentrevett/multi30k",
            "test.jsonl",
            "cannot connect",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ],
    );
    m.assert_nothing_trusted();
    eprintln!("{}", text(&o));
}

#[test]
fn a_body_cut_off_mid_file_is_not_kept() {
    let hub = LocalHub::start(content());
    hub.set_fault(Fault::Truncate);
    let m = Machine::new(&hub.url());
    let o = m.run(
        "mnist_cnn",
        &[
            "--epochs",
            "1",
            "--max-batches",
            "1",
            "--val-size",
            "500",
            "--device",
            "cpu",
            "--out",
            &m.path("x"),
        ],
    );
    assert_clean_failure(
        &o,
        &[
            "ylecun/mnist",
            "mnist/test/0000.parquet",
            "broke off",
            "run the command again",
        ],
    );
    m.assert_nothing_trusted();
    eprintln!("{}", text(&o));

    // the Hub well again: the same command downloads afresh and works
    hub.set_fault(Fault::None);
    m.run_ok(
        "mnist_cnn",
        &[
            "--epochs",
            "1",
            "--max-batches",
            "1",
            "--val-size",
            "500",
            "--device",
            "cpu",
            "--out",
            &m.path("x"),
        ],
    );
}

#[test]
fn bytes_that_do_not_match_their_etag_are_deleted_not_used() {
    let hub = LocalHub::start(content());
    hub.set_fault(Fault::Corrupt);
    let m = Machine::new(&hub.url());
    // a small (git) file: checked against its git blob SHA-1
    let o = m.run(
        "pos_tagger",
        &[
            "tag",
            "--model-id",
            "neka/pos-bilstm-ewt",
            "--device",
            "cpu",
            "A test .",
        ],
    );
    assert_clean_failure(
        &o,
        &[
            "neka/pos-bilstm-ewt",
            "config.json",
            "git SHA-1",
            "corrupt",
            "Run the command again",
        ],
    );
    m.assert_nothing_trusted();
    eprintln!("{}", text(&o));
    // an LFS file (through the redirect): checked against its SHA-256
    let o = m.run(
        "mnist_cnn",
        &[
            "--dataset",
            "fashion-mnist",
            "--epochs",
            "1",
            "--max-batches",
            "1",
            "--val-size",
            "500",
            "--device",
            "cpu",
            "--out",
            &m.path("x"),
        ],
    );
    assert_clean_failure(
        &o,
        &[
            "zalando-datasets/fashion_mnist",
            "fashion_mnist/test/0000.parquet",
            "SHA-256",
            "corrupt",
        ],
    );
    m.assert_nothing_trusted();
    eprintln!("{}", text(&o));

    hub.set_fault(Fault::None);
    let o = m.run_ok(
        "pos_tagger",
        &[
            "tag",
            "--model-id",
            "neka/pos-bilstm-ewt",
            "--device",
            "cpu",
            "A test .",
        ],
    );
    assert!(common::stdout(&o).contains("A/DET"), "{}", text(&o));
}

#[test]
fn offline_with_an_empty_cache_says_what_is_missing_and_asks_nothing() {
    let hub = LocalHub::start(content());
    let mut m = Machine::new(&hub.url());
    m.offline = true;
    let o = m.run(
        "pos_tagger",
        &[
            "tag",
            "--model-id",
            "neka/pos-bilstm-ewt",
            "--device",
            "cpu",
            "A test .",
        ],
    );
    assert_clean_failure(
        &o,
        &[
            "neka/pos-bilstm-ewt",
            "config.json",
            "HF_HUB_OFFLINE",
            "unset HF_HUB_OFFLINE",
        ],
    );
    let o2 = m.run(
        "mnist_cnn",
        &["eval", "--model", &model("mnist-cnn"), "--device", "cpu"],
    );
    assert_clean_failure(
        &o2,
        &[
            "ylecun/mnist",
            "mnist/test/0000.parquet",
            "HF_HUB_OFFLINE",
            "--data-dir",
        ],
    );
    let o3 = m.run(
        "char_rnn",
        &[
            "--max-batches",
            "1",
            "--device",
            "cpu",
            "--out",
            &m.path("c"),
        ],
    );
    assert_clean_failure(
        &o3,
        &[
            "bentrevett/multi30k",
            "train.jsonl",
            "HF_HUB_OFFLINE",
            "no text file (--text)",
        ],
    );
    assert_eq!(
        hub.requests(),
        Vec::<String>::new(),
        "offline, yet the Hub was asked"
    );
    m.assert_nothing_trusted();
    eprintln!("{}\n{}\n{}", text(&o), text(&o2), text(&o3));
}

/// The README's first command exactly as written, `cargo run --example mnist_cnn`, on a fresh
/// machine: no data folder, an empty `HF_HOME`, all of MNIST (60,000 + 10,000 images) from the
/// Hub. Minutes of training, so not in the default run:
/// `cargo test --test local_hub -- --ignored --nocapture`; set `NEKA_FRESH_CLONE` to a clean
/// clone to run it there (default: this checkout).
#[test]
#[ignore = "trains the main job in full (minutes)"]
fn the_readme_first_command_as_written_on_a_fresh_machine() {
    let data = data_folder().expect("the full MNIST files (NEKA_DATA_DIR) to serve");
    let mut c = HubContent::default();
    add_mnist_like(&mut c, Some(&data), 60_000, 10_000);
    let hub = LocalHub::start(Arc::new(c));
    let m = Machine::new(&hub.url());
    let clone = std::env::var_os("NEKA_FRESH_CLONE")
        .map(PathBuf::from)
        .unwrap_or_else(root);
    let mut cmd = m.command(env!("CARGO"));
    cmd.args(["run", "--example", "mnist_cnn"])
        .current_dir(&clone);
    let t0 = Instant::now();
    let o = output_within(cmd, std::time::Duration::from_secs(3600));
    let out = text(&o);
    eprintln!("{out}");
    assert!(o.status.success(), "cargo run --example mnist_cnn: {out}");
    assert!(
        out.contains("Hugging Face Hub dataset ylecun/mnist"),
        "{out}"
    );
    let acc = last_json(&o)["accuracy"].as_f64().unwrap();
    eprintln!(
        "cargo run --example mnist_cnn in {}: {:.0} s, test accuracy {acc:.4}, {} requests",
        clone.display(),
        t0.elapsed().as_secs_f64(),
        hub.requests().len()
    );
    assert!(acc >= 0.98, "test accuracy {acc}");
}
