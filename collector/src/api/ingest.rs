//! `POST /api/v1/ingest`: an agent's batch of reports.
//!
//! # What a batch may cost, and when
//!
//! Nothing of the body is read before the token is known: a request without
//! a valid agent token is refused (401, 403) from its headers alone, and the
//! connection is closed rather than its body drained. Then, before reading:
//!
//! - **One batch per host.** A host with a batch in flight (being read,
//!   parsed, queued or committed) gets 503 with `Retry-After` for a second
//!   one. An agent sends one batch at a time, so only a duplicated or
//!   misbehaving agent meets this; it keeps one host from filling the
//!   store's queue.
//! - **Bytes in flight.** Every batch's decompressed bytes are taken from one
//!   budget (`[ingest] max_bytes_in_flight`) as they are read, and given back
//!   once the batch is committed (or refused): the most the collector holds
//!   for ingest at once, bodies being read and batches waiting for the
//!   store's committer alike. A body that finds the budget spent gets 503
//!   with `Retry-After` (an agent takes it as back-pressure and sends later),
//!   so the store's queue holds at most this many bytes, and at most one
//!   batch per host. (A parsed batch takes about as much memory again as its
//!   JSON while it is parsed.)
//!
//! A body that stops arriving for `[http] body_timeout` gets 408 (the
//! router's [`tower_http::timeout::RequestBodyTimeoutLayer`]). These
//! refusals are counted in `/metrics` (`portwatch_ingest_requests_total`,
//! `outcome` busy and timeout) and logged at warn at most every
//! [`LOG_EVERY`](crate::edge::LOG_EVERY) per kind (the rest at debug).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::Json;
use futures_util::StreamExt;
use jiff::Timestamp;
use portwatch_common::wire::{Ack, Batch, Limits};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::auth::Caller;
use super::contract::{
    BadRequest, Busy, Forbidden, Internal, PayloadTooLarge, RequestTimeout, Unauthorized, UnsupportedMediaType,
};
use super::{ApiError, AppState, INGEST_LIMITS, MAX_DECOMPRESSED_BYTES};
use crate::edge::{LogEvery, LOG_EVERY};
use crate::metrics::{Metrics, Outcome};
use portwatch_model::Role;

/// Default `[ingest] max_bytes_in_flight`: 256 MiB, eight batches of the
/// largest size at once.
pub const DEFAULT_MAX_BYTES_IN_FLIGHT: usize = 256 * 1024 * 1024;

/// The `Retry-After` of a busy refusal: the time an agent's batch usually
/// takes to be read and committed, many times over.
pub const BUSY_RETRY_AFTER: Duration = Duration::from_secs(5);

/// What ingest may hold at once (`[ingest]`, and `[http] body_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestLimits {
    /// Most decompressed bytes of batches being read, parsed or committed.
    pub max_bytes_in_flight: usize,
    /// Most decompressed bytes of one batch (stated to agents in every
    /// acknowledgement; 32 MiB, version 1's limit, at most).
    pub max_batch_bytes: usize,
    /// A request body that sends nothing for this long is refused.
    pub body_timeout: Duration,
}

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits {
            max_bytes_in_flight: DEFAULT_MAX_BYTES_IN_FLIGHT,
            max_batch_bytes: MAX_DECOMPRESSED_BYTES,
            body_timeout: crate::edge::DEFAULT_BODY_TIMEOUT,
        }
    }
}

/// Ingest's admission: the bytes budget and the hosts with a batch in flight.
#[derive(Debug)]
pub(super) struct Admission {
    bytes: Arc<Semaphore>,
    hosts: Mutex<HashSet<String>>,
    busy_log: LogEvery,
    timeout_log: LogEvery,
}

impl Admission {
    pub(super) fn new(max_bytes_in_flight: usize) -> Admission {
        Admission {
            bytes: Arc::new(Semaphore::new(max_bytes_in_flight.min(Semaphore::MAX_PERMITS))),
            hosts: Mutex::new(HashSet::new()),
            busy_log: LogEvery::new(LOG_EVERY),
            timeout_log: LogEvery::new(LOG_EVERY),
        }
    }

    /// The host's slot, or `None` if it has a batch in flight.
    fn host_slot(self: &Arc<Self>, host: &str) -> Option<HostSlot> {
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        hosts.insert(host.to_owned()).then(|| HostSlot {
            admission: self.clone(),
            host: host.to_owned(),
        })
    }
}

/// A host's one batch in flight; the host may send another once it is dropped.
struct HostSlot {
    admission: Arc<Admission>,
    host: String,
}

impl Drop for HostSlot {
    fn drop(&mut self) {
        let mut hosts = self.admission.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        hosts.remove(&self.host);
    }
}

/// Bytes taken from the budget, given back (and counted out of `/metrics`) on drop.
struct Held {
    permit: Option<OwnedSemaphorePermit>,
    metrics: Arc<Metrics>,
}

impl Held {
    /// Takes `n` more bytes from `budget`; false if it has not that many left.
    fn take(&mut self, budget: &Arc<Semaphore>, n: usize) -> bool {
        let Ok(n32) = u32::try_from(n) else {
            return false;
        };
        let Ok(more) = budget.clone().try_acquire_many_owned(n32) else {
            return false;
        };
        self.metrics.ingest_bytes_held(i64::from(n32));
        match &mut self.permit {
            Some(permit) => permit.merge(more),
            None => self.permit = Some(more),
        }
        true
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(permit) = &self.permit {
            self.metrics
                .ingest_bytes_held(-i64::try_from(permit.num_permits()).unwrap_or(i64::MAX));
        }
    }
}

/// Checks who may write, parses and validates the batch, stores it in one
/// transaction, and acknowledges what is committed. A refused batch stores nothing.
#[utoipa::path(
    post,
    path = "/api/v1/ingest",
    operation_id = "ingest",
    tag = "ingest",
    description = "An agent's batch of reports (protocol versions 1 to 3), stored in one transaction; the answer \
acknowledges what is committed and states the size limits. Peer summaries (version 3) are recorded once the reports \
are committed. The token is checked from the headers alone, before a \
byte of the body is read. A host has one batch in flight at a time, and the batches in flight are bounded in bytes \
(`[ingest] max_bytes_in_flight`): beyond either, 503 with `Retry-After`. Role: agent (of the batch's host).",
    security(("bearer" = [])),
    params(
        ("Content-Encoding" = Option<String>, Header, description = "`gzip` for a gzip-compressed body, the only \
encoding taken (another is a 415); absent for a body sent as is"),
    ),
    request_body(content = portwatch_common::wire::Batch, content_type = "application/json", description = "The \
batch, as JSON; at most 8 MiB as sent, and `[ingest] max_batch_bytes` (32 MiB at most) once decompressed. Strings \
over their limit are cut, what cannot be right is refused whole (see the wire protocol's limits table)."),
    responses(
        (status = 200, description = "Stored: every report of the session up to `acked` is committed", body = Ack),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 500, response = Internal),
        (status = 503, response = Busy),
    )
)]
pub async fn ingest(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    body: Body,
) -> Result<Json<Ack>, ApiError> {
    let metrics = state.metrics.clone();
    let admission = state.ingest.clone();
    let started = std::time::Instant::now();
    let result = store_batch(state, caller, body).await;
    match &result {
        Ok((_, reports)) => {
            metrics.ingested(Outcome::Stored, *reports);
            metrics.ingest_took(started.elapsed());
        }
        Err(ApiError::Internal(_)) => metrics.ingested(Outcome::Failed, 0),
        Err(e @ ApiError::Busy { .. }) => {
            metrics.ingested(Outcome::Busy, 0);
            match admission.busy_log.allow() {
                Some(suppressed) => tracing::warn!(outcome = "busy", suppressed, reason = %e, "ingest refused for now"),
                None => tracing::debug!(outcome = "busy", reason = %e, "ingest refused for now"),
            }
        }
        Err(e @ ApiError::Timeout(_)) => {
            metrics.ingested(Outcome::Timeout, 0);
            match admission.timeout_log.allow() {
                Some(suppressed) => {
                    tracing::warn!(outcome = "timeout", suppressed, reason = %e, "ingest body timed out")
                }
                None => tracing::debug!(outcome = "timeout", reason = %e, "ingest body timed out"),
            }
        }
        Err(_) => metrics.ingested(Outcome::Refused, 0),
    }
    result.map(|(ack, _)| ack)
}

/// [`ingest`]: the answer, and how many reports the batch carried.
async fn store_batch(
    state: AppState,
    caller: Result<Caller, ApiError>,
    body: Body,
) -> Result<(Json<Ack>, usize), ApiError> {
    // From the headers alone: not a byte of the body is read before these.
    let token = caller?.0;
    if token.role != Role::Agent {
        return Err(ApiError::Forbidden(format!(
            "a {} token cannot send reports; agents use their host's token (portwatch-collector token create --host NAME)",
            token.role.as_str()
        )));
    }
    let Some(host) = token.host.as_deref() else {
        return Err(ApiError::Forbidden("this agent token names no host".to_owned()));
    };
    let Some(slot) = state.ingest.host_slot(host) else {
        return Err(ApiError::Busy {
            message: format!(
                "host {host:?} has a batch in flight already; an agent sends one at a time (is a second agent \
                 running with this host's token?)"
            ),
            retry_after: BUSY_RETRY_AFTER,
        });
    };
    let mut held = Held {
        permit: None,
        metrics: state.metrics.clone(),
    };
    let body = read_body(body, state.max_batch_bytes, &state.ingest.bytes, &mut held).await?;
    // Parsed, validated and sanitized off the async runtime: a batch is up
    // to `max_batch_bytes` of JSON (32 MiB at most), seconds of CPU for a
    // debug build, and no request may wait behind it.
    let (metrics, token_host) = (state.metrics.clone(), host.to_owned());
    let batch = tokio::task::spawn_blocking(move || {
        let batch: Batch = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("the body is not a valid report batch: {e}")))?;
        drop(body);
        batch.validate().map_err(|e| ApiError::BadRequest(e.to_string()))?;
        if token_host != batch.host.as_str() {
            return Err(ApiError::Forbidden(format!(
                "this token writes for host {token_host:?}, not {:?}",
                batch.host
            )));
        }
        Ok(metrics.sanitized(batch))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("parsing the batch failed: {e}")))??;
    // New peer points are evaluated too (`suspicious-peer`); they come at
    // most once a minute per listener.
    let changed = (!batch.reports.is_empty() || !batch.peers.is_empty()).then(|| batch.host.clone());
    let reports = batch.reports.len();
    // Not history: recorded once the batch is committed (its host exists then), in one transaction
    // of their own. A failure is a 500, and the agent sends the batch again: its reports are stored
    // once, and the points again change nothing.
    let mut batch = batch;
    let peers = std::mem::take(&mut batch.peers);
    let peers_dropped = batch.peers_dropped;
    let peers_host = batch.host.clone();
    // Queued for the store's committer: no request thread waits on the
    // database, and the answer comes once the batch is committed. The
    // host's slot and the bytes are held until then, even if the client
    // goes away meanwhile: the queue is what they bound.
    let (sender, answer) = tokio::sync::oneshot::channel();
    let queued = state.metrics.clone();
    queued.batches_queued(1);
    state.store.ingest_queued(
        batch,
        Timestamp::now(),
        Box::new(move |result| {
            queued.batches_queued(-1);
            drop((slot, held));
            let _ = sender.send(result);
        }),
    );
    let mut ack = answer
        .await
        .map_err(|_| ApiError::Internal("the store dropped the batch before storing it".to_owned()))??;
    if !peers.is_empty() || peers_dropped > 0 {
        let (store, count) = (state.store.clone(), peers.len());
        super::blocking(move || store.record_peers(&peers_host, &peers, Timestamp::now())).await?;
        state.metrics.peers(count, peers_dropped);
    }
    ack.limits = Some(Limits {
        max_decompressed_bytes: state.max_batch_bytes as u64,
        ..INGEST_LIMITS
    });
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

/// Reads the (decompressed) body whole, taking its bytes from `budget` into
/// `held` as they arrive: at most `max` (`[ingest] max_batch_bytes`).
async fn read_body(body: Body, max: usize, budget: &Arc<Semaphore>, held: &mut Held) -> Result<Vec<u8>, ApiError> {
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(body_error)?;
        total = total.saturating_add(chunk.len());
        if total > max {
            return Err(too_large(max));
        }
        if !held.take(budget, chunk.len()) {
            return Err(ApiError::Busy {
                message: "the collector holds as many report bytes as it takes at once ([ingest] \
                          max_bytes_in_flight)"
                    .to_owned(),
                retry_after: BUSY_RETRY_AFTER,
            });
        }
        chunks.push(chunk);
    }
    let mut whole = Vec::with_capacity(total);
    for chunk in chunks {
        whole.extend_from_slice(&chunk);
    }
    Ok(whole)
}

fn too_large(max: usize) -> ApiError {
    ApiError::TooLarge(format!(
        "a batch may be {max} bytes once decompressed; send fewer reports per batch \
         (the limits are in every acknowledgement)"
    ))
}

/// What went wrong reading the body: it stopped arriving (408), it is over
/// the size limit as sent (413), or it cannot be read or decompressed (400).
fn body_error(e: axum::Error) -> ApiError {
    let e = e.into_inner();
    if caused_by::<tower_http::timeout::TimeoutError>(&*e) {
        ApiError::Timeout("the request body stopped arriving ([http] body_timeout); send it again whole".to_owned())
    } else if caused_by::<http_body_util::LengthLimitError>(&*e) {
        ApiError::TooLarge(format!(
            "a request may be {} MiB as sent; send less per request",
            super::MAX_BODY_BYTES / (1024 * 1024)
        ))
    } else {
        ApiError::BadRequest(format!(
            "cannot read the request body ({e}); gzip bodies need Content-Encoding: gzip"
        ))
    }
}

/// Whether `e`, or an error it wraps (an I/O error's inner one included), is an `E`.
fn caused_by<E: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(error) = next {
        if error.is::<E>() {
            return true;
        }
        if let Some(inner) = error.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            if caused_by::<E>(inner) {
                return true;
            }
        }
        next = error.source();
    }
    false
}
