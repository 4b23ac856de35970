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
//! Inference runs on tokio's blocking pool, at most [`PER_MODEL_JOBS`] at a time per model,
//! so a slow beam search queues only behind other translations. Bad input is a 4xx with
//! `{"error": "…"}` (see [`error::ApiError`]); bodies are capped at [`MAX_BODY_BYTES`] and a
//! request must finish within [`REQUEST_TIMEOUT`].

pub mod cnn;
pub mod error;
pub mod load;
pub mod tag;
pub mod translate;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use error::ApiError;
use neka_cnn::pipeline::LoadedModel;
use neka_lstm::tagger::LoadedTagger;
use neka_seq2seq::Translator;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// The largest request body accepted (1 MiB); a larger one is a 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long a request may take, body upload included, before it is answered with a 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Requests one model works on at once (the rest wait their turn).
pub const PER_MODEL_JOBS: usize = 2;

/// A model the server tried to load: the model, or why it is missing.
pub struct Slot<T> {
    /// Where it came from (a directory or a Hub id).
    pub source: String,
    pub model: Result<T, String>,
    jobs: Semaphore,
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
            jobs: Semaphore::new(PER_MODEL_JOBS),
        }
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

/// Runs `f` on the model of `slot` on the blocking pool, after waiting for one of the
/// model's [`PER_MODEL_JOBS`] turns; 503 if the model is not loaded.
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
    let _turn = s
        .jobs
        .acquire()
        .await
        .expect("the semaphore is never closed");
    let state = Arc::clone(state);
    let job = tokio::task::spawn_blocking(move || match &slot(&state).model {
        Ok(m) => f(m),
        Err(e) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.clone())),
    });
    job.await.map_err(|e| {
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
        .with_state(models)
}

/// Serves `router` on `listener` until Ctrl-C or SIGTERM.
pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown())
        .await
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
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
