//! The one mapping from failures to HTTP answers: every error body is JSON
//! `{"error": "..."}` that says what is wrong and what to do; a 5xx body is
//! generic and the detail goes to the log.

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// The body of every error answer.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What is wrong, and what to do about it (a 500 says only to read the collector's log).
    pub error: String,
}

/// The body of a 503: the error, and how long to wait (as `Retry-After` says).
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct BusyBody {
    /// What is busy, and when to send the request again.
    pub error: String,
    /// Seconds to wait before sending the same request again (at least 1; the `Retry-After` header).
    pub retry_after_seconds: u64,
}

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
    /// What was asked about is no longer kept (a moment before the retained history).
    #[error("{0}")]
    Gone(String),
    /// At a limit for now (ingest bytes in flight, a host's batch already in
    /// flight): 503 with `Retry-After`; the same request may succeed then.
    #[error("{message}")]
    Busy {
        /// What is busy, and what to do.
        message: String,
        /// How long to wait before sending again (whole seconds, at least 1).
        retry_after: Duration,
    },
    /// The request body stopped arriving: 408.
    #[error("{0}")]
    Timeout(String),
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
            ApiError::Gone(m) => (StatusCode::GONE, m),
            ApiError::Timeout(m) => (StatusCode::REQUEST_TIMEOUT, m),
            ApiError::Busy { message, retry_after } => {
                let seconds = retry_after.as_secs().max(1);
                let body = Json(BusyBody {
                    error: format!("{message}; send it again in {seconds} s (Retry-After)"),
                    retry_after_seconds: seconds,
                });
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(axum::http::header::RETRY_AFTER, seconds.to_string())],
                    body,
                )
                    .into_response();
            }
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; the collector's log has the details".to_owned(),
                )
            }
        };
        (status, Json(ErrorBody { error: message })).into_response()
    }
}

/// How long a client is asked to wait when the store could not take a call
/// that may succeed later ([`crate::store::StoreError::retry_helps`]).
pub const STORE_RETRY_AFTER: Duration = Duration::from_secs(5);

impl From<crate::store::StoreError> for ApiError {
    /// A failure a retry may cure (busy or unreachable database, full disk)
    /// is a 503 with `Retry-After`, so that agents and scripts wait and send
    /// again; any other is a 500. Either way the detail goes to the log only.
    fn from(e: crate::store::StoreError) -> Self {
        if e.retry_helps() {
            tracing::warn!(error = %e, "the history store cannot take a request now");
            ApiError::Busy {
                message: "the history store cannot take this now (the collector's log says why)".to_owned(),
                retry_after: STORE_RETRY_AFTER,
            }
        } else {
            ApiError::Internal(e.to_string())
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(e: ApiError) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let response = e.into_response();
        let (status, headers) = (response.status(), response.headers().clone());
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, headers, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn busy_is_a_503_with_retry_after_in_whole_seconds_and_says_when_to_send_again() {
        let (status, headers, body) = answer(ApiError::Busy {
            message: "host web-3 has a batch in flight".to_owned(),
            retry_after: Duration::from_millis(4_500),
        })
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[axum::http::header::RETRY_AFTER], "4");
        assert_eq!(body["retry_after_seconds"], 4);
        let message = body["error"].as_str().unwrap();
        assert!(
            message.contains("web-3") && message.contains("again in 4 s"),
            "{message}"
        );
        let (_, headers, _) = answer(ApiError::Busy {
            message: "busy".to_owned(),
            retry_after: Duration::ZERO,
        })
        .await;
        assert_eq!(
            headers[axum::http::header::RETRY_AFTER],
            "1",
            "never 0: that would be a busy loop"
        );
    }

    #[tokio::test]
    async fn a_store_failure_a_retry_may_cure_is_a_503_and_any_other_a_generic_500() {
        use crate::store::StoreError;
        for e in [
            StoreError::Busy("the database stayed locked for 5s".to_owned()),
            StoreError::Unavailable("connection refused".to_owned()),
            StoreError::DiskFull { path: None },
        ] {
            let (status, headers, body) = answer(ApiError::from(e)).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(headers[axum::http::header::RETRY_AFTER], "5");
            let message = body["error"].as_str().unwrap();
            assert!(
                !message.contains("locked") && !message.contains("refused"),
                "details stay in the log: {message}"
            );
        }
        let (status, headers, body) = answer(ApiError::from(StoreError::Database("corrupt page 7".to_owned()))).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(headers.get(axum::http::header::RETRY_AFTER).is_none());
        assert!(!body["error"].as_str().unwrap().contains("page 7"));
    }

    #[tokio::test]
    async fn a_stalled_body_is_a_408() {
        let (status, _, body) = answer(ApiError::Timeout("the body stopped arriving".to_owned())).await;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(body["error"], "the body stopped arriving");
    }
}
