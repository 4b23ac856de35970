//! The demo's JSON API, in-process against its router (tower's `oneshot`), on the shipped
//! models: every answer equals what the libraries (`LoadedModel`, `LoadedTagger`,
//! `Translator`) say for the same input, and every bad input is a 4xx with `{"error": …}`.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use neka::demo::{self, ModelDirs, Models};
use neka_cnn::inspect;
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
        let img = inspect::gray_from_values(&values, 28, 28).unwrap();
        let x = inspect::image_to_input(&img.into(), 28, &norm, centre).unwrap();
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
    let x = inspect::load_image(&path, 28, &cnn.normalize().unwrap()).unwrap();
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
