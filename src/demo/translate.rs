//! `POST /api/translate`: German to English with the attention weights.

use super::error::ApiError;
use super::{parse_json, run_model, Models};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use neka_seq2seq::{DecodeConfig, Translator};
use serde_json::{json, Value};
use std::sync::Arc;

/// The longest source accepted, in tokens (Multi30k's longest is under 50).
pub const MAX_TOKENS: usize = 60;

/// The longest source accepted, in characters.
pub const MAX_CHARS: usize = 1000;

/// The widest beam (1 = greedy search).
pub const MAX_BEAM: usize = 10;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TranslateRequest {
    text: String,
    #[serde(default = "default_beam")]
    beam: usize,
}

fn default_beam() -> usize {
    5
}

/// Lowercases and tokenises `text` as in training and translates it with a beam of `beam`
/// (1 = greedy), as [`Translator::translate`] does: the tokens, the rows of the attention
/// heatmap ([`Translator::attention_rows`]) and the attention, one row per output step over
/// the source tokens (empty for a model without attention).
pub fn translate_text(t: &Translator, text: &str, beam: usize) -> Result<Value, ApiError> {
    if !(1..=MAX_BEAM).contains(&beam) {
        return Err(ApiError::unprocessable(format!(
            "beam {beam}: must be from 1 (greedy) to {MAX_BEAM}"
        )));
    }
    let chars = text.chars().count();
    if chars > MAX_CHARS {
        return Err(ApiError::unprocessable(format!(
            "the text has {chars} characters; the demo translates at most {MAX_CHARS}: one sentence at a time"
        )));
    }
    let src = neka_common::data::parallel::prepare(text, true);
    if src.is_empty() {
        return Err(ApiError::bad("the text is empty: send a German sentence"));
    }
    if src.len() > MAX_TOKENS {
        return Err(ApiError::unprocessable(format!(
            "the text has {} tokens; the demo translates at most {MAX_TOKENS}: one sentence at a time",
            src.len()
        )));
    }
    let cfg = DecodeConfig {
        beam,
        ..DecodeConfig::default()
    };
    let (mut srcs, mut hyps) = t.translate(&[text.to_string()], &cfg)?;
    let (src, h) = (srcs.remove(0), hyps.remove(0));
    let tokens = t.tokens(&h);
    Ok(json!({
        "translation": tokens.join(" "),
        "tokens": tokens,
        "source": src,
        "rows": t.attention_rows(&h),
        "attention": h.attention,
        "beam": beam,
        "log_prob": h.log_prob,
    }))
}

/// `POST /api/translate` with `{"text": "…", "beam": 5}`.
pub async fn translate(
    State(state): State<Arc<Models>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let r: TranslateRequest = parse_json(&body?)?;
    let v = run_model(
        &state,
        |m| &m.translator,
        "translator",
        move |m| translate_text(m, &r.text, r.beam),
    )
    .await?;
    Ok(Json(v))
}
