//! The API's one error shape: a status and `{"error": "…"}` saying what was wrong.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An API error: `status` with the JSON body `{"error": message}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 400: the request was understood but its content is wrong.
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 422 for an input the model cannot take (too long, out of range); the message says
    /// which limit.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({ "error": self.message }));
        (self.status, body).into_response()
    }
}

/// An error of the model libraries on a request's input: a 422 naming it (the libraries
/// check what they are given and say what is wrong).
impl From<neka_common::Error> for ApiError {
    fn from(e: neka_common::Error) -> Self {
        use neka_common::Error as E;
        match &e {
            E::Config { .. } | E::BadData { .. } => Self::unprocessable(e.to_string()),
            _ => Self::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

/// A body the server could not read (too large, cut off): its status (413 for one over the
/// limit) and what went wrong.
impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(r: axum::extract::rejection::BytesRejection) -> Self {
        let status = r.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!(
                "the request body is larger than the {} bytes the demo accepts",
                super::MAX_BODY_BYTES
            )
        } else {
            format!("cannot read the request body: {}", r.body_text())
        };
        Self::new(status, message)
    }
}
