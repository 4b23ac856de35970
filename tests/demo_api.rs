//! The demo's JSON API, in-process against its router (tower's `oneshot`), on the shipped
//! models: every answer equals what the libraries (`LoadedModel`, `LoadedTagger`,
//! `Translator`) say for the same input, and every bad input is a 4xx with `{"error": …}`.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use neka::demo::{self, ModelDirs, Models};
use neka_cnn::images;
use neka_common::data::idx::{read_idx, IMAGES_MAGIC};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use tower::ServiceExt;

mod common;

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// The shipped models, loaded once for the whole test binary.
fn models() -> Arc<Models> {
    static MODELS: OnceLock<Arc<Models>> = OnceLock::new();
    MODELS
        .get_or_init(|| {
            let m = Models::load(ModelDirs::under(&models_dir()), &candle_core::Device::Cpu);
            for line in m.report() {
                assert!(!line.contains("NOT loaded"), "{line}");
            }
            Arc::new(m)
        })
        .clone()
}

/// Sends one request to a fresh router over `models`; the status and the JSON answer.
async fn send(
    models: Arc<Models>,
    method: Method,
    uri: &str,
    kind: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, kind)
        .body(Body::from(body))
        .unwrap();
    let res = demo::router(models).oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{uri}: the answer is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, v)
}

async fn post_json(uri: &str, body: Value) -> (StatusCode, Value) {
    send(
        models(),
        Method::POST,
        uri,
        "application/json",
        body.to_string().into_bytes(),
    )
    .await
}

/// Test image `i` of the MNIST fixture: 784 values 0–255.
fn mnist_digit(i: usize) -> Vec<u8> {
    let idx = read_idx(
        &common::fixture("mnist-sample/t10k-images-idx3-ubyte.gz"),
        IMAGES_MAGIC,
    )
    .unwrap();
    idx.data[i * 784..(i + 1) * 784].to_vec()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn png_bytes(img: &image::GrayImage) -> Vec<u8> {
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    png
}

/// Asserts the API's answer for a digit equals `LoadedModel::read` on the same input tensor.
fn assert_reads_as_library(r: &Value, x: &candle_core::Tensor) {
    let m = models();
    let m = m.cnn.model.as_ref().unwrap();
    let want = m.read(x).unwrap();
    assert_eq!(r["class"], want.class);
    assert_eq!(floats(&r["probabilities"]), want.probabilities);
    assert_eq!(
        floats(&r["input"]),
        x.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
    let convs: Vec<_> = want
        .feature_maps
        .iter()
        .filter(|f| !f.name.starts_with("pool"))
        .collect();
    let maps = r["feature_maps"].as_array().unwrap();
    assert_eq!(maps.len(), convs.len());
    assert!(maps.len() >= 2, "conv1 and conv2 at least");
    for (got, f) in maps.iter().zip(convs) {
        assert_eq!(got["name"], f.name);
        let bytes: Vec<Vec<u8>> = f.to_bytes().into_iter().map(|b| b.1).collect();
        assert_eq!(got["maps"], json!(bytes), "{}", f.name);
        assert_eq!(
            (got["height"].as_u64(), got["width"].as_u64()),
            (Some(f.height as u64), Some(f.width as u64))
        );
    }
}

#[tokio::test]
async fn classify_pixels_equals_the_loaded_model() {
    let m = models();
    let cnn = m.cnn.model.as_ref().unwrap();
    let norm = cnn.normalize().unwrap();
    for (i, centre) in [(0, false), (1, true)] {
        let px = mnist_digit(i);
        let (status, r) = post_json("/api/classify", json!({"pixels": px, "centre": centre})).await;
        assert_eq!(status, StatusCode::OK, "{r}");
        let values: Vec<f64> = px.iter().map(|&p| f64::from(p)).collect();
        let img = images::gray_from_values(&values, 28, 28).unwrap();
        let x = images::image_to_input(&img.into(), 28, &norm, centre).unwrap();
        assert_reads_as_library(&r, &x);
        assert_eq!(r["centred"], centre);
    }
}

#[tokio::test]
async fn classify_png_is_read_as_mnist_cnn_predict_reads_the_file() {
    let img = image::GrayImage::from_raw(28, 28, mnist_digit(2)).unwrap();
    let png = png_bytes(&img);
    let (status, r) = send(
        models(),
        Method::POST,
        "/api/classify",
        "image/png",
        png.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("digit.png");
    std::fs::write(&path, &png).unwrap();
    let m = models();
    let cnn = m.cnn.model.as_ref().unwrap();
    let x = images::load_image(&path, 28, &cnn.normalize().unwrap()).unwrap();
    assert_reads_as_library(&r, &x);
    // a big white-background drawing, centred on request, comes out a confident answer
    let (status, r) = send(
        models(),
        Method::POST,
        "/api/classify?centre=true",
        "image/png",
        png,
    )
    .await;
    assert_eq!((status, &r["centred"]), (StatusCode::OK, &json!(true)));
}

#[tokio::test]
async fn tag_equals_the_loaded_tagger() {
    let m = models();
    let tagger = m.tagger.model.as_ref().unwrap();
    let sentence = "The quick brown fox didn't jump over the lazy dog.";
    let (status, r) = post_json("/api/tag", json!({ "sentence": sentence })).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let tokens = neka_common::data::text::tokenize_ewt(sentence);
    assert_eq!(r["tokens"], json!(tokens));
    let tags = tagger.tag(std::slice::from_ref(&tokens)).unwrap().remove(0);
    assert_eq!(r["tags"], json!(tags));
    let probs = tagger.tag_with_probabilities(&tokens, 3).unwrap();
    assert_eq!(
        floats(&r["probabilities"]),
        probs.iter().map(|t| t.probability).collect::<Vec<_>>()
    );
    let top: Vec<Vec<(String, f32)>> = r["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            t.as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p[0].as_str().unwrap().to_string(),
                        p[1].as_f64().unwrap() as f32,
                    )
                })
                .collect()
        })
        .collect();
    assert_eq!(top, probs.iter().map(|t| t.top.clone()).collect::<Vec<_>>());
    // the gates: tokens × units, in (0, 1), the busiest units of the library's trace
    let trace = tagger.gate_trace(&tokens).unwrap();
    let units = trace.busiest_units(demo::tag::GATE_UNITS);
    assert_eq!(r["gates"]["units"], json!(units));
    for gate in ["forget", "input", "output"] {
        let rows = r["gates"][gate].as_array().unwrap();
        assert_eq!(rows.len(), tokens.len(), "{gate}");
        for row in rows {
            let row = floats(row);
            assert_eq!(row.len(), units.len());
            assert!(
                row.iter().all(|&g| (0.0..=1.0).contains(&g)),
                "{gate}: {row:?}"
            );
        }
        assert_eq!(
            r["gates"]["mean"][gate].as_array().unwrap().len(),
            tokens.len()
        );
    }
    assert_eq!(
        floats(&r["gates"]["forget"][0])[0],
        trace.forget[0][units[0]]
    );
}

#[tokio::test]
async fn translate_equals_the_translator_greedy_and_beam() {
    let m = models();
    let tr = m.translator.model.as_ref().unwrap();
    let text = "Eine Gruppe von Menschen steht vor einem Iglu.";
    for beam in [1, 5] {
        let (status, r) = post_json("/api/translate", json!({"text": text, "beam": beam})).await;
        assert_eq!(status, StatusCode::OK, "{r}");
        let cfg = neka_seq2seq::DecodeConfig {
            beam,
            ..Default::default()
        };
        let (srcs, hyps) = tr.translate(&[text.to_string()], &cfg).unwrap();
        assert_eq!(r["source"], json!(srcs[0]));
        assert_eq!(r["translation"], tr.tokens(&hyps[0]).join(" "));
        assert_eq!(r["rows"], json!(tr.attention_rows(&hyps[0])));
        let att: Vec<Vec<f32>> = r["attention"]
            .as_array()
            .unwrap()
            .iter()
            .map(floats)
            .collect();
        assert_eq!(att, hyps[0].attention, "beam {beam}");
        assert_eq!(att.len(), r["rows"].as_array().unwrap().len());
        assert!(att.iter().all(|row| row.len() == srcs[0].len()));
    }
    // beam defaults to 5
    let (_, r) = post_json("/api/translate", json!({ "text": text })).await;
    assert_eq!(r["beam"], 5);
}

#[tokio::test]
async fn health_and_page() {
    let (status, h) = send(
        models(),
        Method::GET,
        "/api/health",
        "application/json",
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for m in ["cnn", "tagger", "translator"] {
        assert_eq!(h["models"][m]["loaded"], true, "{h}");
    }
    assert_eq!(h["models"]["tagger"]["model"]["cell"], "lstm");
    assert_eq!(h["limits"]["tag_max_words"], demo::tag::MAX_WORDS);
    for (uri, kind, needle) in [
        ("/", "text/html", "id=\"pad\""),
        ("/static/app.js", "text/javascript", "/api/classify"),
        ("/static/style.css", "text/css", "#pad"),
    ] {
        let req = Request::get(uri).body(Body::empty()).unwrap();
        let res = demo::router(models()).oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{uri}");
        let ct = res.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        assert!(ct.starts_with(kind), "{uri}: {ct}");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).contains(needle), "{uri}");
    }
}

/// A PNG of `w × h` gray pixels with empty image data: enough for a decoder to read the header.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        let body = [kind, data].concat();
        c.extend_from_slice(&body);
        c.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
        c
    };
    let ihdr = [&w.to_be_bytes()[..], &h.to_be_bytes(), &[8, 0, 0, 0, 0]].concat();
    // zlib: header, one empty final stored block, adler32 of nothing
    let idat = [0x78, 0x01, 0x01, 0x00, 0x00, 0xff, 0xff, 0, 0, 0, 1];
    [
        &b"\x89PNG\r\n\x1a\n"[..],
        &chunk(b"IHDR", &ihdr),
        &chunk(b"IDAT", &idat),
        &chunk(b"IEND", &[]),
    ]
    .concat()
}

/// What is wrong, method, route, Content-Type, body, the status wanted, what the error must say.
type BadCase = (
    &'static str,
    Method,
    &'static str,
    &'static str,
    Vec<u8>,
    StatusCode,
    &'static str,
);

#[tokio::test]
async fn every_bad_input_is_a_4xx_saying_what_is_wrong() {
    let words = |n: usize| vec!["word"; n].join(" ");
    let json_body = |v: Value| v.to_string().into_bytes();
    let too_bright = [vec![0; 783], vec![300]].concat();
    let cases: Vec<BadCase> = vec![
        (
            "oversized body",
            Method::POST,
            "/api/tag",
            "application/json",
            vec![b' '; demo::MAX_BODY_BYTES + 1],
            StatusCode::PAYLOAD_TOO_LARGE,
            "larger than",
        ),
        (
            "malformed JSON",
            Method::POST,
            "/api/tag",
            "application/json",
            b"{\"sentence\": ".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed JSON",
        ),
        (
            "empty body",
            Method::POST,
            "/api/translate",
            "application/json",
            vec![],
            StatusCode::BAD_REQUEST,
            "empty",
        ),
        (
            "wrong field",
            Method::POST,
            "/api/tag",
            "application/json",
            json_body(json!({"text": "hi"})),
            StatusCode::BAD_REQUEST,
            "unknown field `text`",
        ),
        (
            "not a PNG",
            Method::POST,
            "/api/classify",
            "image/png",
            b"GIF89a....".to_vec(),
            StatusCode::BAD_REQUEST,
            "not a PNG or JPEG",
        ),
        (
            "empty PNG body",
            Method::POST,
            "/api/classify",
            "image/png",
            vec![],
            StatusCode::BAD_REQUEST,
            "empty",
        ),
        (
            "0x0 image",
            Method::POST,
            "/api/classify",
            "image/png",
            png_header_only(0, 0),
            StatusCode::BAD_REQUEST,
            "dimensions",
        ),
        (
            "huge image",
            Method::POST,
            "/api/classify",
            "image/png",
            png_header_only(30000, 30000),
            StatusCode::BAD_REQUEST,
            "30000x30000",
        ),
        (
            "783 pixels",
            Method::POST,
            "/api/classify",
            "application/json",
            json_body(json!({"pixels": vec![0; 783]})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "783",
        ),
        (
            "pixel of 300",
            Method::POST,
            "/api/classify",
            "application/json",
            json_body(json!({ "pixels": too_bright })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "300",
        ),
        (
            "text/plain",
            Method::POST,
            "/api/classify",
            "text/plain",
            b"7".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type `text/plain`",
        ),
        (
            "bad query",
            Method::POST,
            "/api/classify?size=3",
            "image/png",
            png_bytes(&image::GrayImage::new(28, 28)),
            StatusCode::BAD_REQUEST,
            "centre=true|false",
        ),
        (
            "empty sentence",
            Method::POST,
            "/api/tag",
            "application/json",
            json_body(json!({"sentence": "  \t "})),
            StatusCode::BAD_REQUEST,
            "empty",
        ),
        (
            "10,000-word sentence",
            Method::POST,
            "/api/tag",
            "application/json",
            json_body(json!({"sentence": words(10_000)})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "at most 2000",
        ),
        (
            "101-token sentence",
            Method::POST,
            "/api/tag",
            "application/json",
            json_body(json!({"sentence": words(101)})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "101 tokens",
        ),
        (
            "empty text",
            Method::POST,
            "/api/translate",
            "application/json",
            json_body(json!({"text": ""})),
            StatusCode::BAD_REQUEST,
            "empty",
        ),
        (
            "61-token text",
            Method::POST,
            "/api/translate",
            "application/json",
            json_body(json!({"text": words(61)})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "61 tokens",
        ),
        (
            "beam 0",
            Method::POST,
            "/api/translate",
            "application/json",
            json_body(json!({"text": "ein hund", "beam": 0})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "beam 0",
        ),
        (
            "beam 11",
            Method::POST,
            "/api/translate",
            "application/json",
            json_body(json!({"text": "ein hund", "beam": 11})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "beam 11",
        ),
        (
            "negative beam",
            Method::POST,
            "/api/translate",
            "application/json",
            json_body(json!({"text": "ein hund", "beam": -1})),
            StatusCode::BAD_REQUEST,
            "beam",
        ),
        (
            "unknown route",
            Method::GET,
            "/api/nothing",
            "application/json",
            vec![],
            StatusCode::NOT_FOUND,
            "no such route: /api/nothing",
        ),
        (
            "GET a POST route",
            Method::GET,
            "/api/tag",
            "application/json",
            vec![],
            StatusCode::METHOD_NOT_ALLOWED,
            "/api/tag takes POST",
        ),
    ];
    for (what, method, uri, kind, body, want, says) in cases {
        let (status, r) = send(models(), method, uri, kind, body).await;
        assert_eq!(status, want, "{what}: {r}");
        let msg = r["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no error message: {r}"));
        assert!(msg.contains(says), "{what}: `{msg}` does not say `{says}`");
    }
}

#[tokio::test]
async fn a_missing_model_is_reported_and_the_others_still_serve() {
    let mut dirs = ModelDirs::under(&models_dir());
    dirs.cnn = (
        "nowhere/mnist-cnn".into(),
        Ok(PathBuf::from("nowhere/mnist-cnn")),
    );
    dirs.translator = ("hf.co/x/y".into(), Err("the download failed".into()));
    let m = Arc::new(Models::load(dirs, &candle_core::Device::Cpu));
    let (_, h) = send(
        m.clone(),
        Method::GET,
        "/api/health",
        "application/json",
        vec![],
    )
    .await;
    assert_eq!(h["models"]["cnn"]["loaded"], false);
    assert!(
        h["models"]["cnn"]["error"]
            .as_str()
            .unwrap()
            .contains("nowhere"),
        "{h}"
    );
    assert_eq!(h["models"]["translator"]["error"], "the download failed");
    assert_eq!(h["models"]["tagger"]["loaded"], true);
    let body = json!({"pixels": vec![0; 784]}).to_string().into_bytes();
    let (status, r) = send(
        m.clone(),
        Method::POST,
        "/api/classify",
        "application/json",
        body,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("the CNN is not loaded"),
        "{r}"
    );
    let body = json!({"sentence": "Dogs bark."}).to_string().into_bytes();
    let (status, r) = send(
        m.clone(),
        Method::POST,
        "/api/tag",
        "application/json",
        body,
    )
    .await;
    let tagger = m.tagger.model.as_ref().unwrap();
    let want = tagger.tag(&[vec!["Dogs", "bark", "."]]).unwrap().remove(0);
    assert_eq!((status, &r["tags"]), (StatusCode::OK, &json!(want)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_answer_as_sequential_ones() {
    let requests: Vec<(&str, Value)> = (0..24)
        .map(|i| match i % 3 {
            0 => ("/api/classify", json!({"pixels": mnist_digit(i % 5)})),
            1 => (
                "/api/tag",
                json!({"sentence": format!("I saw {} dogs in the park.", i)}),
            ),
            _ => (
                "/api/translate",
                json!({"text": "Ein Hund rennt im Schnee.", "beam": 1 + i % 4}),
            ),
        })
        .collect();
    let mut sequential = Vec::new();
    for (uri, body) in &requests {
        sequential.push(post_json(uri, body.clone()).await);
    }
    let tasks: Vec<_> = requests
        .iter()
        .map(|(uri, body)| tokio::spawn(post_json(uri, body.clone())))
        .collect();
    for (task, want) in tasks.into_iter().zip(&sequential) {
        let got = task.await.unwrap();
        assert_eq!(got.0, StatusCode::OK, "{}", got.1);
        assert_eq!(&got, want);
    }
}

/// A request whose declared `Content-Length` is over the cap is a 413 at once: the body
/// (here one that never comes) is not waited for.
#[tokio::test]
async fn an_over_cap_content_length_is_a_413_at_once() {
    let req = Request::post("/api/translate")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, demo::MAX_BODY_BYTES + 1)
        .body(Body::new(Never))
        .unwrap();
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        demo::router(models()).oneshot(req),
    )
    .await
    .expect("answered at once, not after the request timeout")
    .unwrap();
    assert_eq!(answer.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body = answer.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("1048577 bytes (Content-Length)"), "{e}");
}

/// A request body that never comes.
struct Never;

impl axum::body::HttpBody for Never {
    type Data = axum::body::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Pending
    }
}

/// A fresh copy of the shipped models (its job counts are this test's alone).
fn own_models() -> Arc<Models> {
    Arc::new(Models::load(
        ModelDirs::under(&models_dir()),
        &candle_core::Device::Cpu,
    ))
}

fn long_translation() -> Vec<u8> {
    json!({"text": demo::load::long_sentence(), "beam": 10})
        .to_string()
        .into_bytes()
}

/// Clients that go away: a running job keeps its model's turn until it ends and its result is
/// discarded; requests still waiting for a turn never run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_request_keeps_its_turn_until_its_job_ends() {
    let m = own_models();
    let jobs = |m: &Models| m.translator.jobs().to_json();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let m = m.clone();
            tokio::spawn(async move {
                send(
                    m,
                    Method::POST,
                    "/api/translate",
                    "application/json",
                    long_translation(),
                )
                .await
            })
        })
        .collect();
    let t = std::time::Instant::now();
    while jobs(&m)["running"] != demo::PER_MODEL_JOBS {
        assert!(t.elapsed().as_secs() < 30, "{}", jobs(&m));
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    for task in &tasks {
        task.abort(); // the clients go away
    }
    for task in tasks {
        assert!(task.await.unwrap_err().is_cancelled()); // their handlers are dropped
    }
    // the jobs still running hold their turns (the old code freed them with the handlers)
    let free = m.translator.free_turns();
    let running = jobs(&m)["running"].as_u64().unwrap() as usize;
    assert!(running >= 1, "the jobs ended before the test could look");
    assert!(
        free + running <= demo::PER_MODEL_JOBS,
        "{free} free turns, {running} running"
    );
    let t = std::time::Instant::now();
    while jobs(&m)["running"] != 0 {
        assert!(t.elapsed().as_secs() < 60, "{}", jobs(&m));
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // two jobs ran for the dropped clients (results thrown away), the two waiting never ran
    let j = jobs(&m);
    assert_eq!(
        (j["started"].as_u64(), j["skipped"].as_u64()),
        (Some(2), Some(0)),
        "{j}"
    );
    let ended = j["completed"].as_u64().unwrap() + j["discarded"].as_u64().unwrap();
    assert_eq!(ended, 2, "{j}");
    assert!(j["discarded"].as_u64().unwrap() >= 1, "{j}");
    assert_eq!(m.translator.free_turns(), demo::PER_MODEL_JOBS);
    let short = json!({"text": "Ein Hund.", "beam": 1})
        .to_string()
        .into_bytes();
    let (status, _) = send(
        m.clone(),
        Method::POST,
        "/api/translate",
        "application/json",
        short,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(jobs(&m)["started"], 3);
}

/// A job whose client went away while it waited for a blocking thread never runs.
#[test]
fn a_job_whose_client_went_away_before_it_started_never_runs() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let m = own_models();
    rt.block_on(async {
        // two long translations take the one blocking thread in turn
        let busy: Vec<_> = (0..2)
            .map(|_| {
                let m = m.clone();
                tokio::spawn(async move {
                    send(
                        m,
                        Method::POST,
                        "/api/translate",
                        "application/json",
                        long_translation(),
                    )
                    .await
                })
            })
            .collect();
        while m.translator.jobs().to_json()["running"] == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        // a classification gets the CNN's turn, then queues for the thread; its client leaves
        let body = json!({"pixels": mnist_digit(0)}).to_string().into_bytes();
        let m2 = m.clone();
        let queued = tokio::spawn(async move {
            send(m2, Method::POST, "/api/classify", "application/json", body).await
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        queued.abort();
        for b in busy {
            assert_eq!(b.await.unwrap().0, StatusCode::OK);
        }
        let t = std::time::Instant::now();
        while m.cnn.jobs().to_json()["skipped"] == 0 && t.elapsed().as_secs() < 10 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let j = m.cnn.jobs().to_json();
        assert_eq!(
            (j["skipped"].as_u64(), j["started"].as_u64()),
            (Some(1), Some(0)),
            "{j}"
        );
    });
}

/// The demo served on a free 127.0.0.1 port with short limits; `stop` ends it.
async fn serve_short(
    cfg: demo::ServeConfig,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(demo::serve_with(
        listener,
        demo::router(models()),
        cfg,
        async {
            let _ = stopped.await;
        },
    ));
    (addr, stop, server)
}

/// Reads until the server closes the connection; `None` if it is still open after `within`.
fn closed_within(c: &mut std::net::TcpStream, within: std::time::Duration) -> Option<Vec<u8>> {
    use std::io::Read;
    c.set_read_timeout(Some(within)).unwrap();
    let mut got = Vec::new();
    match c.read_to_end(&mut got) {
        Ok(_) => Some(got),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Some(got),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_are_closed_and_capped() {
    use std::io::Write;
    use std::time::Duration;
    let cfg = demo::ServeConfig {
        header_read_timeout: Duration::from_millis(500),
        max_connections: 3,
        shutdown_deadline: Duration::from_secs(5),
    };
    let (addr, stop, server) = serve_short(cfg).await;
    let checks = tokio::task::spawn_blocking(move || {
        let connect = || std::net::TcpStream::connect(addr).unwrap();
        // silent, half-sent, and kept alive after an answer: all closed by the header timeout
        let mut silent = connect();
        let mut half = connect();
        half.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\nAcc")
            .unwrap();
        let mut kept = connect();
        kept.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        for c in [&mut silent, &mut half] {
            assert!(
                closed_within(c, Duration::from_secs(3)).is_some(),
                "still open"
            );
        }
        let answer = closed_within(&mut kept, Duration::from_secs(3)).expect("closed when idle");
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
        // the cap: three silent connections, then health on a fourth still answers (the
        // oldest silent one is closed to make room)
        let mut held: Vec<_> = (0..3).map(|_| connect()).collect();
        let (status, _, took) =
            demo::load::raw_request(addr, "GET", "/api/health", "", Duration::from_secs(2))
                .unwrap();
        assert_eq!(status, 200);
        assert!(took < Duration::from_millis(400), "{took:?}");
        assert!(closed_within(&mut held[0], Duration::from_millis(100)).is_some());
        // hyper's own answer to a request line it cannot parse: 400, no body (no hook)
        let mut bad = connect();
        bad.write_all(b"NOT HTTP\r\n\r\n").unwrap();
        let answer = closed_within(&mut bad, Duration::from_secs(2)).unwrap();
        let answer = String::from_utf8_lossy(&answer).to_lowercase();
        assert!(
            answer.starts_with("http/1.1 400") && answer.contains("content-length: 0"),
            "{answer}"
        );
        held
    });
    let mut held = checks.await.unwrap();
    // stopping with a half-sent header open does not wait for the deadline
    held[1].write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
    let t = std::time::Instant::now();
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}
