//! `POST /api/tag`: a sentence through the POS tagger, with its LSTM's gates.

use super::error::ApiError;
use super::{parse_json, run_model, Models};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use neka_lstm::tagger::LoadedTagger;
use serde_json::{json, Value};
use std::sync::Arc;

/// The longest sentence tagged, in tokens (EWT's longest has 159; the page shows one row of
/// tokens); a longer one is refused with a 422 saying so.
pub const MAX_WORDS: usize = 100;

/// The longest sentence accepted, in characters (the character LSTM reads every one).
pub const MAX_CHARS: usize = 2000;

/// Units whose gates are sent (those whose forget gate varies most over the sentence).
pub const GATE_UNITS: usize = 16;

/// Tag probabilities sent per token (the most likely first).
pub const TOP_TAGS: usize = 3;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TagRequest {
    sentence: String,
}

fn columns(rows: &[Vec<f32>], units: &[usize]) -> Vec<Vec<f32>> {
    rows.iter()
        .map(|r| units.iter().map(|&u| r[u]).collect())
        .collect()
}

fn mean(rows: &[Vec<f32>]) -> Vec<f32> {
    rows.iter()
        .map(|r| r.iter().sum::<f32>() / r.len().max(1) as f32)
        .collect()
}

/// Tokenises `sentence` as EWT is, tags it ([`LoadedTagger::tag_with_probabilities`]) and
/// traces the sentence LSTM's gates over it ([`LoadedTagger::gate_trace`]): per gate,
/// `tokens × units` for the [`GATE_UNITS`] busiest units and the mean over all units.
pub fn tag_sentence(m: &LoadedTagger, sentence: &str) -> Result<Value, ApiError> {
    let chars = sentence.chars().count();
    if chars > MAX_CHARS {
        return Err(ApiError::unprocessable(format!(
            "the sentence has {chars} characters; the demo tags at most {MAX_CHARS}: shorten or split it"
        )));
    }
    let tokens = neka_common::data::text::tokenize_ewt(sentence);
    if tokens.is_empty() {
        return Err(ApiError::bad(
            "the sentence is empty: send some words to tag",
        ));
    }
    if tokens.len() > MAX_WORDS {
        return Err(ApiError::unprocessable(format!(
            "the sentence has {} tokens; the demo tags at most {MAX_WORDS}: split it into sentences",
            tokens.len()
        )));
    }
    let tagged = m.tag_with_probabilities(&tokens, TOP_TAGS)?;
    let gates = match m.gate_trace(&tokens) {
        Ok(t) => {
            let units = t.busiest_units(GATE_UNITS);
            json!({
                "layer": "sentence LSTM, layer 1, left to right",
                "units": units,
                "hidden_size": t.forget.first().map_or(0, Vec::len),
                "forget": columns(&t.forget, &units),
                "input": columns(&t.input, &units),
                "output": columns(&t.output, &units),
                "mean": {"forget": mean(&t.forget), "input": mean(&t.input), "output": mean(&t.output)},
            })
        }
        Err(e) => json!({"error": e.to_string()}),
    };
    Ok(json!({
        "tokens": tokens,
        "tags": tagged.iter().map(|t| &t.tag).collect::<Vec<_>>(),
        "probabilities": tagged.iter().map(|t| t.probability).collect::<Vec<_>>(),
        "top": tagged.iter().map(|t| &t.top).collect::<Vec<_>>(),
        "tagset": m.vocabs.tags.tokens(),
        "gates": gates,
    }))
}

/// `POST /api/tag` with `{"sentence": "…"}`.
pub async fn tag(
    State(state): State<Arc<Models>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let r: TagRequest = parse_json(&body?)?;
    let v = run_model(
        &state,
        |m| &m.tagger,
        "tagger",
        move |m| tag_sentence(m, &r.sentence),
    )
    .await?;
    Ok(Json(v))
}
