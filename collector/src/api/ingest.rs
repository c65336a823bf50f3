//! `POST /api/v1/ingest`: an agent's batch of reports.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use jiff::Timestamp;
use portwatch_common::wire::{Ack, Batch};

use super::auth::Caller;
use super::{ApiError, AppState, INGEST_LIMITS, MAX_DECOMPRESSED_BYTES};
use crate::metrics::Outcome;
use crate::store::Role;

/// Checks who may write, parses and validates the batch, stores it in one
/// transaction, and acknowledges what is committed. A refused batch stores nothing.
pub async fn ingest(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Ack>, ApiError> {
    let metrics = state.metrics.clone();
    let result = store_batch(state, caller, body).await;
    match &result {
        Ok((_, reports)) => metrics.ingested(Outcome::Stored, *reports),
        Err(ApiError::Internal(_)) => metrics.ingested(Outcome::Failed, 0),
        Err(_) => metrics.ingested(Outcome::Refused, 0),
    }
    result.map(|(ack, _)| ack)
}

/// [`ingest`]: the answer, and how many reports the batch carried.
async fn store_batch(
    state: AppState,
    caller: Result<Caller, ApiError>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Json<Ack>, usize), ApiError> {
    let token = caller?.0;
    if token.role != Role::Agent {
        return Err(ApiError::Forbidden(format!(
            "a {} token cannot send reports; agents use their host's token (portwatch-collector token create --host NAME)",
            token.role.as_str()
        )));
    }
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(format!(
            "a batch may be {} MiB once decompressed; send fewer reports per batch \
             (the limits are in every acknowledgement)",
            MAX_DECOMPRESSED_BYTES / (1024 * 1024)
        )),
        _ => ApiError::BadRequest(format!(
            "cannot read the request body ({e}); gzip bodies need Content-Encoding: gzip"
        )),
    })?;
    let batch: Batch = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not a valid report batch: {e}")))?;
    batch.validate().map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if token.host.as_deref() != Some(batch.host.as_str()) {
        return Err(ApiError::Forbidden(format!(
            "this token writes for host {:?}, not {:?}",
            token.host.as_deref().unwrap_or("(none)"),
            batch.host
        )));
    }
    let batch = state.metrics.sanitized(batch);
    let changed = (!batch.reports.is_empty()).then(|| batch.host.clone());
    let reports = batch.reports.len();
    // Queued for the store's committer: no request thread waits on the
    // database, and the answer comes once the batch is committed.
    let (sender, answer) = tokio::sync::oneshot::channel();
    state.store.ingest_queued(
        batch,
        Timestamp::now(),
        Box::new(move |result| {
            let _ = sender.send(result);
        }),
    );
    let mut ack = answer
        .await
        .map_err(|_| ApiError::Internal("the store dropped the batch before storing it".to_owned()))??;
    ack.limits = Some(INGEST_LIMITS);
    // Committed: have the host evaluated against its baselines. A full queue
    // is caught up by the next sweep.
    if let (Some(host), Some(tx)) = (changed, &state.changed) {
        if tx.try_send(host).is_err() {
            // The queue is full: have every host evaluated instead.
            state.reevaluate_all();
        }
    }
    Ok((Json(ack), reports))
}
