//! `POST /api/classify`: a digit (784 pixel values, or a PNG/JPEG) through the CNN.

use super::error::ApiError;
use super::{parse_json, run_model, Models};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use neka_cnn::images;
use neka_cnn::loaded_model::LoadedModel;
use serde_json::{json, Value};
use std::sync::Arc;

/// The largest image body decoded, in pixels (4096 × 4096): more is refused from the header.
pub const MAX_IMAGE_PIXELS: u64 = 4096 * 4096;

/// `{"pixels": [...], "centre": false}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PixelsRequest {
    pixels: Vec<f64>,
    #[serde(default)]
    centre: bool,
}

/// What the client sent, decoded.
pub enum Input {
    /// `image_size²` values 0–255, row-major, white on black.
    Pixels(Vec<f64>),
    /// A PNG or JPEG file's bytes.
    Image(Vec<u8>),
}

/// The answer for one input: the model's [`LoadedModel::read`] as JSON, with the input as the
/// network saw it (normalised, `image_size²` values) and the convolutional stages' maps
/// (pooling stages left out), each scaled to 0–255 on its own with its largest value.
pub fn classify_input(m: &LoadedModel, input: Input, centre: bool) -> Result<Value, ApiError> {
    let size = m.image_size();
    let norm = m.normalize()?;
    let img = match input {
        Input::Pixels(v) => image::DynamicImage::from(images::gray_from_values(&v, size, size)?),
        Input::Image(bytes) => images::decode_image_bytes(&bytes, "request body", MAX_IMAGE_PIXELS)
            .map_err(|e| ApiError::bad(e.to_string()))?,
    };
    let x = images::image_to_input(&img, size, &norm, centre)?;
    let r = m.read(&x)?;
    let seen: Vec<f32> = x
        .flatten_all()
        .map_err(neka_common::Error::from)?
        .to_vec1()
        .map_err(neka_common::Error::from)?;
    let maps: Vec<Value> = r
        .feature_maps
        .iter()
        .filter(|f| !f.name.starts_with("pool"))
        .map(|f| {
            let (max, maps): (Vec<f32>, Vec<Vec<u8>>) = f.to_bytes().into_iter().unzip();
            json!({"name": f.name, "channels": f.channels, "height": f.height, "width": f.width,
                   "max": max, "maps": maps})
        })
        .collect();
    Ok(json!({
        "class": r.class,
        "probabilities": r.probabilities,
        "classes": m.class_names(),
        "input": seen,
        "input_size": size,
        "centred": centre,
        "feature_maps": maps,
    }))
}

fn wants_centre(query: Option<&str>) -> Result<bool, ApiError> {
    let mut centre = false;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        centre = match pair.split_once('=').unwrap_or((pair, "true")) {
            ("centre" | "center", "true" | "1") => true,
            ("centre" | "center", "false" | "0") => false,
            (k, v) => {
                return Err(ApiError::bad(format!(
                    "query `{k}={v}`: the only parameter is centre=true|false"
                )))
            }
        };
    }
    Ok(centre)
}

/// `POST /api/classify`: JSON `{"pixels": […]}` or an `image/png` / `image/jpeg` body.
pub async fn classify(
    State(state): State<Arc<Models>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body?;
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let (input, centre) = match kind.as_str() {
        "application/json" => {
            let r: PixelsRequest = parse_json(&body)?;
            (Input::Pixels(r.pixels), r.centre || wants_centre(query.as_deref())?)
        }
        "image/png" | "image/jpeg" => {
            if body.is_empty() {
                return Err(ApiError::bad("the request body is empty: send a PNG or JPEG"));
            }
            (Input::Image(body.to_vec()), wants_centre(query.as_deref())?)
        }
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Type `{other}`: send application/json ({{\"pixels\": [...]}}), image/png or image/jpeg"),
            ))
        }
    };
    let v = run_model(
        &state,
        |m| &m.cnn,
        "CNN",
        move |m| classify_input(m, input, centre),
    )
    .await?;
    Ok(Json(v))
}
