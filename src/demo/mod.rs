//! The `demo` example's web server: the zoo's three model families in the browser.
//!
//! One page (plain HTML, CSS and JavaScript under `src/demo/static/`, embedded in the
//! binary) and a JSON API over the shipped models:
//!
//! | route | body | answer |
//! |---|---|---|
//! | `POST /api/classify` | `{"pixels": [784 numbers 0–255], "centre": false}` or a PNG/JPEG body (`?centre=true`) | `{"class", "probabilities", "input", "feature_maps", …}` |
//! | `POST /api/tag` | `{"sentence": "…"}` | `{"tokens", "tags", "probabilities", "top", "gates"}` |
//! | `POST /api/translate` | `{"text": "…", "beam": 5}` | `{"translation", "tokens", "source", "rows", "attention"}` |
//! | `GET /api/health` | | which models are loaded, and why not |
//!
//! Models load once ([`Models::load`]) and are shared by every request; one that fails to
//! load is reported (health, its panel, a 503 on its route) and the others still serve.
//! Inference runs on tokio's blocking pool, at most [`PER_MODEL_JOBS`] jobs *running* at a time
//! per model, so a slow beam search queues only behind other translations. A job holds its
//! model's turn until it returns, whether or not its client is still there: a request whose
//! client went away is dropped if its job has not started, and its result discarded if it has
//! (see `run_model`); so work is bounded by what runs, never by what is connected. Bad input
//! is a 4xx with `{"error": "…"}` (see [`error::ApiError`]); bodies are capped at
//! [`MAX_BODY_BYTES`] (a declared `Content-Length` over it is a 413 before the body is read) and
//! a request must finish within [`REQUEST_TIMEOUT`]. The connection-level limits (header and
//! idle timeouts, the connection cap, the shutdown deadline) are [`server`]'s.

pub mod cnn;
pub mod error;
pub mod load;
pub mod server;
pub mod tag;
pub mod translate;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use error::ApiError;
use neka_cnn::loaded_model::LoadedModel;
use neka_lstm::tagger::LoadedTagger;
use neka_seq2seq::Translator;
use serde_json::{json, Value};
pub use server::{runtime, serve, serve_with, ServeConfig};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// The largest request body accepted (1 MiB); a larger one is a 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long a request may take, body upload included, before it is answered with a 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Jobs one model runs at once (the rest wait their turn). A job keeps its turn until it
/// returns, even when its client has gone.
pub const PER_MODEL_JOBS: usize = 2;

/// A model's jobs so far: `running ≤ PER_MODEL_JOBS`, and `started = running + completed +
/// discarded` (`skipped` ones never started).
#[derive(Default)]
pub struct JobCounts {
    running: AtomicUsize,
    started: AtomicU64,
    completed: AtomicU64,
    /// ran to the end after their client had gone: the result was thrown away
    discarded: AtomicU64,
    /// their client was gone before they started: never run
    skipped: AtomicU64,
}

impl JobCounts {
    /// `{"limit", "running", "started", "completed", "discarded", "skipped"}`.
    pub fn to_json(&self) -> Value {
        let n = |c: &AtomicU64| c.load(Ordering::SeqCst);
        json!({
            "limit": PER_MODEL_JOBS,
            "running": self.running.load(Ordering::SeqCst),
            "started": n(&self.started),
            "completed": n(&self.completed),
            "discarded": n(&self.discarded),
            "skipped": n(&self.skipped),
        })
    }
}

/// A model the server tried to load: the model, or why it is missing.
pub struct Slot<T> {
    /// Where it came from (a directory or a Hub id).
    pub source: String,
    pub model: Result<T, String>,
    jobs: Arc<Semaphore>,
    counts: Arc<JobCounts>,
}

impl<T> Slot<T> {
    /// Loads a model from `dir` (or keeps the error that kept it from having a directory).
    pub fn load(
        source: String,
        dir: Result<PathBuf, String>,
        load: impl FnOnce(&Path) -> neka_common::Result<T>,
    ) -> Self {
        let model = dir.and_then(|d| load(&d).map_err(|e| e.to_string()));
        Self::new(source, model)
    }

    pub fn new(source: String, model: Result<T, String>) -> Self {
        Self {
            source,
            model,
            jobs: Arc::new(Semaphore::new(PER_MODEL_JOBS)),
            counts: Arc::default(),
        }
    }

    /// The model's jobs so far (also in `/api/health` under `jobs`).
    pub fn jobs(&self) -> &JobCounts {
        &self.counts
    }

    /// Turns free now: `PER_MODEL_JOBS` less the jobs holding one (running or about to).
    pub fn free_turns(&self) -> usize {
        self.jobs.available_permits()
    }

    fn health(&self, describe: impl Fn(&T) -> Value) -> Value {
        match &self.model {
            Ok(m) => json!({"loaded": true, "source": self.source, "model": describe(m)}),
            Err(e) => json!({"loaded": false, "source": self.source, "error": e}),
        }
    }
}

/// The three models the demo serves.
pub struct Models {
    pub cnn: Slot<LoadedModel>,
    pub tagger: Slot<LoadedTagger>,
    pub translator: Slot<Translator>,
}

/// Where each model comes from: a directory, or why there is none (a failed download).
pub struct ModelDirs {
    pub cnn: (String, Result<PathBuf, String>),
    pub tagger: (String, Result<PathBuf, String>),
    pub translator: (String, Result<PathBuf, String>),
}

/// One of the page's three panels (and its model).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Panel {
    Cnn,
    Tagger,
    Translator,
}

impl std::str::FromStr for Panel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cnn" => Ok(Self::Cnn),
            "tagger" => Ok(Self::Tagger),
            "translator" => Ok(Self::Translator),
            _ => Err(format!("`{s}`: the panels are cnn, tagger and translator")),
        }
    }
}

impl ModelDirs {
    /// Takes `panel`'s model from the Hugging Face Hub repository `repo_id` (downloaded once
    /// into the Hub cache, with the model's vocabularies) instead of its folder; a failed
    /// download becomes the panel's error, reported like a missing folder.
    pub fn from_hub(&mut self, panel: Panel, repo_id: &str) {
        let companions: &[&str] = match panel {
            Panel::Cnn => &[],
            Panel::Tagger => &LoadedTagger::FILES,
            Panel::Translator => &Translator::FILES,
        };
        #[cfg(feature = "hub")]
        let dir =
            neka_common::hub::model_dir_with(repo_id, None, companions).map_err(|e| e.to_string());
        #[cfg(not(feature = "hub"))]
        let dir = {
            let _ = companions;
            Err("Hub models need the `hub` feature (on by default)".to_string())
        };
        let slot = match panel {
            Panel::Cnn => &mut self.cnn,
            Panel::Tagger => &mut self.tagger,
            Panel::Translator => &mut self.translator,
        };
        *slot = (format!("hf.co/{repo_id}"), dir);
    }

    /// The shipped models' folders under `root` (`models/`).
    pub fn under(root: &Path) -> Self {
        let at = |name: &str| {
            let d = root.join(name);
            (d.display().to_string(), Ok(d))
        };
        Self {
            cnn: at("mnist-cnn"),
            tagger: at("pos-bilstm-ewt"),
            translator: at("seq2seq-multi30k-de-en"),
        }
    }
}

impl Models {
    /// Loads the three models on `device`; one that fails is kept as its error.
    pub fn load(dirs: ModelDirs, device: &candle_core::Device) -> Self {
        let (c, t, s) = (dirs.cnn, dirs.tagger, dirs.translator);
        Self {
            cnn: Slot::load(c.0, c.1, |d| LoadedModel::load(d, device)),
            tagger: Slot::load(t.0, t.1, |d| LoadedTagger::load(d, device)),
            translator: Slot::load(s.0, s.1, |d| Translator::load(d, device)),
        }
    }

    /// One line per model for the server's log: where it came from and whether it loaded.
    pub fn report(&self) -> Vec<String> {
        fn line<T>(name: &str, s: &Slot<T>) -> String {
            match &s.model {
                Ok(_) => format!("{name}: loaded from {}", s.source),
                Err(e) => format!(
                    "{name}: NOT loaded from {} ({e}); its panel says so",
                    s.source
                ),
            }
        }
        vec![
            line("CNN", &self.cnn),
            line("POS tagger", &self.tagger),
            line("translator", &self.translator),
        ]
    }

    /// What `GET /api/health` answers.
    pub fn health(&self) -> Value {
        json!({
            "status": "ok",
            "limits": {
                "max_body_bytes": MAX_BODY_BYTES,
                "tag_max_words": tag::MAX_WORDS,
                "tag_max_chars": tag::MAX_CHARS,
                "translate_max_tokens": translate::MAX_TOKENS,
                "translate_max_chars": translate::MAX_CHARS,
                "max_beam": translate::MAX_BEAM,
                "per_model_jobs": PER_MODEL_JOBS,
                "header_read_timeout_s": server::HEADER_READ_TIMEOUT.as_secs(),
                "max_connections": server::MAX_CONNECTIONS,
                "request_timeout_s": REQUEST_TIMEOUT.as_secs(),
            },
            "jobs": {
                "cnn": self.cnn.counts.to_json(),
                "tagger": self.tagger.counts.to_json(),
                "translator": self.translator.counts.to_json(),
            },
            "models": {
                "cnn": self.cnn.health(|m| json!({"name": m.info.model, "dataset": m.info.dataset,
                    "image_size": m.image_size(), "classes": m.class_names()})),
                "tagger": self.tagger.health(|m| json!({"name": m.info.model, "dataset": m.info.dataset,
                    "cell": m.tagger.config().cell.to_string(), "tags": m.vocabs.tags.tokens()})),
                "translator": self.translator.health(|m| json!({"name": m.info.model, "dataset": m.info.dataset,
                    "attention": m.model.config().attention.to_string()})),
            }
        })
    }
}

/// Sets its flag when dropped while armed: the handler that owns it was dropped (hyper drops
/// a request's handler when its client closes the connection).
struct ClientGone(Arc<AtomicBool>, bool);

impl Drop for ClientGone {
    fn drop(&mut self) {
        if self.1 {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

/// Counts a job as running while it lives.
struct Running(Arc<JobCounts>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs `f` on the model of `slot` on the blocking pool, after waiting for one of the
/// model's [`PER_MODEL_JOBS`] turns; 503 if the model is not loaded.
///
/// The turn (an owned semaphore permit) moves into the blocking job and is released when the
/// job returns, not when the request's handler goes: so the limit counts *running* jobs. If
/// the client has gone (its handler dropped) before the job starts, the job returns at once
/// without running `f` (`skipped`); if it goes while `f` runs, `f` finishes (candle cannot be
/// interrupted) and its result is thrown away (`discarded`).
pub(crate) async fn run_model<T, F>(
    state: &Arc<Models>,
    slot: fn(&Models) -> &Slot<T>,
    what: &str,
    f: F,
) -> Result<Value, ApiError>
where
    T: Send + Sync + 'static,
    F: FnOnce(&T) -> Result<Value, ApiError> + Send + 'static,
{
    let s = slot(state);
    if let Err(e) = &s.model {
        let msg = format!("the {what} is not loaded ({}): {e}", s.source);
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, msg));
    }
    let turn = Arc::clone(&s.jobs)
        .acquire_owned()
        .await
        .expect("the semaphore is never closed");
    let gone = Arc::new(AtomicBool::new(false));
    let mut watch = ClientGone(Arc::clone(&gone), true);
    let counts = Arc::clone(&s.counts);
    let state = Arc::clone(state);
    let job = tokio::task::spawn_blocking(move || {
        let _turn = turn; // released last, after `Running`
        if gone.load(Ordering::SeqCst) {
            counts.skipped.fetch_add(1, Ordering::SeqCst);
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the client went away before the job started",
            ));
        }
        counts.started.fetch_add(1, Ordering::SeqCst);
        counts.running.fetch_add(1, Ordering::SeqCst);
        let running = Running(Arc::clone(&counts));
        let r = match &slot(&state).model {
            Ok(m) => f(m),
            Err(e) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.clone())),
        };
        drop(running);
        let tally = if gone.load(Ordering::SeqCst) {
            &counts.discarded
        } else {
            &counts.completed
        };
        tally.fetch_add(1, Ordering::SeqCst);
        r
    });
    let r = job.await;
    watch.1 = false;
    r.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the {what} failed on this input: {e}"),
        )
    })?
}

const INDEX_HTML: &str = include_str!("static/index.html");
const APP_JS: &str = include_str!("static/app.js");
const STYLE_CSS: &str = include_str!("static/style.css");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn health(State(state): State<Arc<Models>>) -> Json<Value> {
    Json(state.health())
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such route: {}", uri.path()),
    )
}

async fn wrong_method(uri: Uri) -> ApiError {
    let how = match uri.path() {
        "/api/health" => "GET",
        _ => "POST",
    };
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} takes {how}", uri.path()),
    )
}

/// Answers a request whose declared `Content-Length` is over [`MAX_BODY_BYTES`] with 413 at
/// once, before its body is read (a body without one is cut off at the cap by
/// [`DefaultBodyLimit`]).
async fn declared_size(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(n) if n > MAX_BODY_BYTES as u64 => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is {n} bytes (Content-Length), more than the {MAX_BODY_BYTES} bytes the demo accepts: send a smaller image or one sentence"
            ),
        )
        .into_response(),
        _ => next.run(req).await,
    }
}

/// Answers a request that takes longer than [`REQUEST_TIMEOUT`] (a stalled upload) with 408.
async fn time_limit(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request took longer than {} s",
                REQUEST_TIMEOUT.as_secs()
            ),
        )
        .into_response(),
    }
}

/// The demo's router: the page, its assets and the API, over `models`.
pub fn router(models: Arc<Models>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(INDEX_HTML) }))
        .route(
            "/static/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/static/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route("/api/health", get(health))
        .route("/api/classify", post(cnn::classify))
        .route("/api/tag", post(tag::tag))
        .route("/api/translate", post(translate::translate))
        .fallback(not_found)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(time_limit))
        .layer(axum::middleware::from_fn(declared_size))
        .with_state(models)
}

/// Parses a JSON request body into `T`, or a 400 saying what is wrong with it.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad(
            "the request body is empty: send a JSON object",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let v: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let at = e.path().to_string();
        let e = e.into_inner();
        match (e.classify(), at.as_str()) {
            (serde_json::error::Category::Data, ".") => {
                ApiError::bad(format!("the JSON request: {e}"))
            }
            (serde_json::error::Category::Data, _) => ApiError::bad(format!("field `{at}`: {e}")),
            _ => ApiError::bad(format!("malformed JSON: {e}")),
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad(format!("malformed JSON: {e}")))?;
    Ok(v)
}
