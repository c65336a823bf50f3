//! The collector's HTTP API, versioned under `/api/v1`, JSON in and out.
//!
//! | method, path | who | what |
//! |---|---|---|
//! | `POST /api/v1/ingest` | agent token of the batch's host | store a batch of reports (gzip accepted) |
//! | `GET /api/v1/hosts` | read, admin | every host and its status |
//! | `GET /api/v1/hosts/{host}/listeners?at=T` | read, admin | what listened on a host at T (default now) |
//! | `GET /api/v1/hosts/{host}/history?port=&since=&until=` | read, admin | a host's listener intervals |
//! | `GET /api/v1/hosts/{host}/diff?from=T1&to=T2` | read, admin | opened, closed, changed owner between two moments |
//! | `GET /api/v1/hosts/{host}/diff?vs_host=B&at=T` | read, admin | the same, between two hosts |
//! | `GET /api/v1/who?port=P&proto=&at=T` | read, admin | fleet-wide, who held port P at T |
//! | `GET /api/v1/export?format=csv\|ndjson&since=&until=` | read, admin | every interval in a window, streamed |
//! | `POST /api/v1/baselines` | admin | apply a baseline file (`{"source": TOML, "comment": why}`) |
//! | `GET /api/v1/baselines` | read, admin | every baseline, as stored and parsed |
//! | `DELETE /api/v1/baselines/{name}?comment=` | admin | remove a baseline |
//! | `GET /api/v1/baseline-log?name=` | read, admin | every change to the baselines: who, when, why |
//! | `GET /api/v1/baseline-proposal?hosts=GLOB&name=` | read, admin | a baseline file proposed from what listens now |
//! | `GET /api/v1/drift?host=&kind=&limit=` | read, admin | findings now, most serious first |
//! | `GET /api/v1/alerts?state=&host=&limit=` | read, admin | alerts, newest first (default: open and acknowledged; at most `limit`, 1000 unless asked, up to 10000) |
//! | `POST /api/v1/alerts/{id}/ack` | admin | acknowledge an open alert (`{"comment": ...}`) |
//! | `GET /api/v1/trends?host=&since=&until=&bucket=hour\|day` | read, admin | listeners over time, new, short-lived, recurring, top ports |
//! | `GET /metrics` | read, admin (anyone with `[metrics] public`) | the collector's health, OpenMetrics text |
//!
//! A host named in the path or in `host=` that the collector has never heard
//! from is a 404, not an empty answer. Every error body is JSON `{"error": ...}`.
//!
//! Times are RFC 3339 (`2026-11-25T03:00:00Z`). Credentials are
//! `Authorization: Bearer <token>`; an agent token writes only its own
//! host's reports and reads nothing.

mod auth;
mod error;
mod export;
mod ingest;
mod policy;
mod query;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;

pub use auth::TOKEN_TRUST;
pub use error::ApiError;
pub use policy::{Applied, BaselineView};

use tokio::sync::{mpsc, Notify};

use crate::alert::drift::Policy;
use crate::alert::evaluate::{self, Evaluator, Notifier};
use crate::metrics::Metrics;
use crate::store::Store;

/// Largest request body accepted as sent (compressed or not).
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Largest request body accepted after decompression (a gzip bomb stops here).
pub const MAX_DECOMPRESSED_BYTES: usize = 32 * 1024 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The history store.
    pub store: Arc<dyn Store>,
    /// Drift evaluation (baselines, policy).
    pub evaluator: Arc<Evaluator>,
    /// Hosts whose history changed, for the alert task (none: no alert task).
    pub changed: Option<mpsc::Sender<String>>,
    /// Asks the alert task for an evaluation of every host (after a baseline change).
    pub sweep_now: Arc<Notify>,
    /// Where alert changes made by requests (acknowledgements) go.
    pub notifier: Notifier,
    /// The collector's own metrics.
    pub metrics: Arc<Metrics>,
    /// Whether `/metrics` answers without a token.
    pub metrics_public: bool,
    /// Valid tokens recently looked up (see [`auth::TokenCache`]).
    tokens: Arc<auth::TokenCache>,
    /// One on-demand drift computation at a time.
    drift_gate: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// State for a router without the alert task: drift is answered on
    /// request, alerts are not raised.
    pub fn new(store: Arc<dyn Store>) -> AppState {
        let evaluator = Arc::new(Evaluator::new(
            store.clone(),
            Policy::default(),
            evaluate::DEFAULT_SWEEP_EVERY,
        ));
        AppState {
            store,
            evaluator,
            changed: None,
            sweep_now: Arc::new(Notify::new()),
            notifier: Notifier::default(),
            metrics: Arc::new(Metrics::new()),
            metrics_public: false,
            tokens: Arc::default(),
            drift_gate: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    /// State for a router with the alert task: the task to run beside the
    /// server (it ends when every copy of the state is dropped).
    pub fn with_alerts(
        store: Arc<dyn Store>,
        policy: Policy,
        sweep_every: std::time::Duration,
        notifier: Notifier,
    ) -> (AppState, impl std::future::Future<Output = ()> + Send + 'static) {
        let evaluator = Arc::new(Evaluator::new(store.clone(), policy, sweep_every));
        let (tx, rx) = mpsc::channel(evaluate::CHANGED_QUEUE);
        let sweep_now = Arc::new(Notify::new());
        let task = evaluate::run(evaluator.clone(), rx, sweep_now.clone(), notifier.clone());
        let state = AppState {
            store,
            evaluator,
            changed: Some(tx),
            sweep_now,
            notifier,
            metrics: Arc::new(Metrics::new()),
            metrics_public: false,
            tokens: Arc::default(),
            drift_gate: Arc::new(tokio::sync::Semaphore::new(1)),
        };
        (state, task)
    }

    /// Serves `/metrics` without a token when `public`.
    pub fn metrics_public(mut self, public: bool) -> AppState {
        self.metrics_public = public;
        self
    }

    /// Has every host evaluated again soon (a baseline changed).
    pub fn reevaluate_all(&self) {
        self.sweep_now.notify_one();
    }
}

/// The API's router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/ingest", post(ingest::ingest))
        .route("/api/v1/hosts", get(query::hosts))
        .route("/api/v1/hosts/{host}/listeners", get(query::listeners))
        .route("/api/v1/hosts/{host}/history", get(query::history))
        .route("/api/v1/hosts/{host}/diff", get(query::diff))
        .route("/api/v1/who", get(query::who))
        .route("/api/v1/export", get(export::export))
        .route("/api/v1/baselines", post(policy::apply).get(policy::list))
        .route("/api/v1/baselines/{name}", delete(policy::remove))
        .route("/api/v1/baseline-log", get(policy::log))
        .route("/api/v1/baseline-proposal", get(policy::learn))
        .route("/api/v1/drift", get(policy::drift))
        .route("/api/v1/alerts", get(policy::alerts))
        .route("/api/v1/alerts/{id}/ack", post(policy::ack))
        .route("/api/v1/trends", get(query::trends))
        .route("/metrics", get(query::metrics))
        .fallback(|| async { ApiError::NotFound("no such endpoint; see the API table in README".to_owned()) })
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            ApiError::MethodNotAllowed(format!("{method} is not allowed here; see the API table in README"))
        })
        .layer(DefaultBodyLimit::max(MAX_DECOMPRESSED_BYTES))
        .layer(RequestDecompressionLayer::new())
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(error::layer_refusals))
        .with_state(state)
}

/// A JSON answer rendered already.
pub(crate) struct JsonBody(Vec<u8>);

impl axum::response::IntoResponse for JsonBody {
    fn into_response(self) -> axum::response::Response {
        ([(axum::http::header::CONTENT_TYPE, "application/json")], self.0).into_response()
    }
}

/// Bytes reserved per row of a JSON answer before rendering it (a listener
/// row with two owners is about 500): a fleet-wide answer is rendered into
/// one buffer instead of one grown and copied a dozen times.
const JSON_BYTES_PER_ROW: usize = 512;

/// Runs a blocking store call off the async runtime and renders its rows as
/// JSON there too: a fleet-wide answer is megabytes of JSON, tens of
/// milliseconds a runtime thread would otherwise not serve other requests.
/// The rows are freed after the answer is on its way (freeing 10,000 rows
/// takes several milliseconds).
async fn blocking_json<T: serde::Serialize + Send + Sync + 'static>(
    f: impl FnOnce() -> Result<Vec<T>, crate::store::StoreError> + Send + 'static,
) -> Result<JsonBody, ApiError> {
    let (rendered, rows) = blocking(move || {
        let rows = f()?;
        let out = render_rows(&rows)
            .map_err(|e| crate::store::StoreError::Database(format!("cannot render the answer: {e}")))?;
        Ok((out, rows))
    })
    .await?;
    if rows.len() > 100 {
        tokio::task::spawn_blocking(move || drop(rows));
    }
    Ok(JsonBody(rendered))
}

/// Rows rendered in one go are this many at least before the work is split
/// in two halves, one on a second thread (a fleet-wide `who` renders
/// 10,000 rows; the machine a collector runs on has cores to spare).
const SPLIT_RENDER_ROWS: usize = 2_000;

/// `rows` as one JSON array.
fn render_rows<T: serde::Serialize + Sync>(rows: &[T]) -> serde_json::Result<Vec<u8>> {
    let render = |part: &[T]| -> serde_json::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(part.len().saturating_mul(JSON_BYTES_PER_ROW).saturating_add(2));
        serde_json::to_writer(&mut out, part)?;
        Ok(out)
    };
    if rows.len() < SPLIT_RENDER_ROWS {
        return render(rows);
    }
    let (front, back) = rows.split_at(rows.len() / 2);
    let (front, back) = std::thread::scope(|scope| {
        let back = scope.spawn(|| render(back));
        let front = render(front);
        // A panic in the other half is re-raised here, as it would be had one thread done both.
        (
            front,
            back.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
        )
    });
    // "[a,b]" + "[c,d]" -> "[a,b,c,d]": both halves are non-empty arrays.
    let (mut out, back) = (front?, back?);
    out.pop();
    out.push(b',');
    out.extend_from_slice(&back[1..]);
    Ok(out)
}

/// Runs a blocking store call off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => Err(ApiError::Internal(format!("store task failed: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_rendered_in_two_halves_make_the_same_json_array() {
        for n in [
            0,
            1,
            5,
            SPLIT_RENDER_ROWS - 1,
            SPLIT_RENDER_ROWS,
            SPLIT_RENDER_ROWS * 2 + 1,
        ] {
            let rows: Vec<(u32, String)> = (0..n as u32).map(|i| (i, format!("row \"{i}\""))).collect();
            let split = render_rows(&rows).unwrap();
            assert_eq!(split, serde_json::to_vec(&rows).unwrap(), "{n} rows");
        }
    }
}
