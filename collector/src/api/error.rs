//! The one mapping from failures to HTTP answers: every error body is JSON
//! `{"error": "..."}` that says what is wrong and what to do; a 5xx body is
//! generic and the detail goes to the log.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No credentials, or unknown or revoked ones.
    #[error("{0}")]
    Unauthorized(String),
    /// Valid credentials that may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// A request that cannot be understood (bad JSON, bad parameter).
    #[error("{0}")]
    BadRequest(String),
    /// A body over the size limit.
    #[error("request body too large: {0}")]
    TooLarge(String),
    /// Nothing there.
    #[error("{0}")]
    NotFound(String),
    /// A body in an encoding the collector does not read.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The path exists, not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The thing is not in a state that allows this (an alert already acknowledged).
    #[error("{0}")]
    Conflict(String),
    /// Our fault: logged, not shown.
    #[error("internal error")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, format!("request body too large: {m}")),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::MethodNotAllowed(m) => (StatusCode::METHOD_NOT_ALLOWED, m),
            ApiError::UnsupportedMediaType(m) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, m),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m),
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; the collector's log has the details".to_owned(),
                )
            }
        };
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

// Extractor rejections: handlers take `Result<Path<T>, PathRejection>` (and
// the like) and pass it here, so that a bad path, query or body gets the
// JSON answer above, saying what to write, rather than axum's plain text.

/// The path's parameters, or a 400 naming the bad one; `example` is a good path.
pub(super) fn path<T>(path: Result<Path<T>, PathRejection>, example: &str) -> Result<T, ApiError> {
    path.map(|Path(p)| p)
        .map_err(|e| ApiError::BadRequest(format!("bad path: {}; write it as {example}", e.body_text())))
}

/// The query's parameters, or a 400 naming the bad one; `example` is a good query.
pub(super) fn query<T>(query: Result<Query<T>, QueryRejection>, example: &str) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::BadRequest(format!("bad query: {}; write it as {example}", e.body_text())))
}

/// The JSON body, or a 400 saying what is wrong; `example` is a good body.
pub(super) fn json<T>(body: Result<Json<T>, JsonRejection>, example: &str) -> Result<T, ApiError> {
    body.map(|Json(b)| b)
        .map_err(|e| ApiError::BadRequest(format!("{}; send JSON such as {example}", e.body_text())))
}

/// The refusals of the body layers (size limit, decompression), which answer
/// before any handler runs and in plain text, made JSON like every other.
pub(super) async fn layer_refusals(response: Response) -> Response {
    let json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    match response.status() {
        _ if json => response,
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(format!(
            "a request may be {} MiB as sent; send less per request",
            super::MAX_BODY_BYTES / (1024 * 1024)
        ))
        .into_response(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::UnsupportedMediaType("send the body as is, or gzip it with Content-Encoding: gzip".to_owned())
                .into_response()
        }
        _ => response,
    }
}
