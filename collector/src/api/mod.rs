//! The collector's HTTP API, versioned under `/api/v1`, JSON in and out.
//!
//! | method, path | who | what |
//! |---|---|---|
//! | `POST /api/v1/ingest` | agent token of the batch's host | store a batch of reports (gzip accepted); the answer states the size limits; 503 with `Retry-After` when busy (see [`ingest`]) |
//! | `GET /api/v1/hosts` | read, admin | every host and its status |
//! | `DELETE /api/v1/hosts/{host}` | admin | forget a decommissioned host: its history, alerts and tokens |
//! | `GET /api/v1/hosts/{host}/listeners?at=T` | read, admin | what listened on a host at T (default now) |
//! | `GET /api/v1/hosts/{host}/history?port=&since=&until=&limit=&after=` | read, admin | a host's listener intervals, a page at a time (`Link` to the next) |
//! | `GET /api/v1/hosts/{host}/peers?port=&at=T` or `?port=&since=&until=&limit=&after=` | read, admin | inbound peers per TCP listener: each listener's latest summary at T (default now), or every point of a window, a page at a time |
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
//! | `GET /metrics` | read, admin (anyone with `[metrics] public`) | the collector's health, Prometheus text 0.0.4 or OpenMetrics as `Accept` asks |
//! | `POST /api/v1/session`, `GET`, `DELETE` | a read or admin token (sign-in), then its session | dashboard sign-in, the session, sign-out (see [`session`]) |
//! | `GET /api/v1/ports/{port}/history?proto=&since=&until=&limit=` | read, admin | the port's intervals on every host (see [`port`]) |
//! | `GET /api/v1/openapi.json` | anyone | this table as an OpenAPI 3.1 document, generated from the handlers (see [`contract`]) |
//!
//! A host named in the path or in `host=` that the collector has never heard
//! from is a 404, not an empty answer. A moment (`at`, `from`, `to`) before
//! the kept history (`[retention] history`) is a 410 saying from when it is
//! kept; a history window reaching before it carries the header
//! `Portwatch-History-Kept-Since`. Every error body is JSON `{"error": ...}`.
//!
//! Times are RFC 3339 (`2026-11-25T03:00:00Z`). Credentials are
//! `Authorization: Bearer <token>`, or the dashboard's session cookie (with
//! its CSRF token for a change); an agent token writes only its own
//! host's reports and reads nothing.

mod auth;
pub mod contract;
mod dashboard;
mod error;
mod export;
mod ingest;
mod policy;
mod port;
mod query;
mod retention;
pub mod session;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::TOKEN_TRUST;
pub use error::{ApiError, BusyBody, ErrorBody};
pub use ingest::{IngestLimits, BUSY_RETRY_AFTER, DEFAULT_MAX_BYTES_IN_FLIGHT};
pub use retention::KEPT_SINCE_HEADER;
pub use session::{
    DashboardSettings, SessionView, CSRF_HEADER, DEFAULT_DASHBOARD_ENABLED, DEFAULT_REFRESH, DEFAULT_SESSION_TTL,
    MAX_SESSION_TTL, REFRESH_RANGE,
};

use tokio::sync::{mpsc, Notify};

use crate::alert::drift::Policy;
use crate::alert::evaluate::{self, Evaluator, Notifier};
use crate::metrics::Metrics;
use crate::store::Store;

/// Largest request body accepted as sent (compressed or not).
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Largest request body accepted after decompression (a gzip bomb stops here).
pub const MAX_DECOMPRESSED_BYTES: usize = 32 * 1024 * 1024;

/// The ingest limits, as stated to agents in every acknowledgement.
pub const INGEST_LIMITS: portwatch_common::wire::Limits = portwatch_common::wire::Limits {
    max_body_bytes: MAX_BODY_BYTES as u64,
    max_decompressed_bytes: MAX_DECOMPRESSED_BYTES as u64,
    max_reports: portwatch_common::wire::MAX_REPORTS_PER_BATCH as u64,
    max_version: portwatch_common::wire::PROTOCOL_VERSION,
};

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
    /// Heavy reads (history, trends) and exports running at once.
    heavy: Arc<HeavyReads>,
    /// Ingest's bytes in flight and hosts with a batch in flight.
    ingest: Arc<ingest::Admission>,
    /// A request body that sends nothing for this long is refused.
    body_timeout: std::time::Duration,
    /// The largest batch taken, decompressed (`[ingest] max_batch_bytes`).
    max_batch_bytes: usize,
    /// The dashboard's settings and its signed-in sessions.
    sessions: Arc<session::Sessions>,
    /// How long history is kept: questions before it are answered 410.
    retention: crate::retention::Retention,
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
            heavy: Arc::default(),
            ingest: Arc::new(ingest::Admission::new(IngestLimits::default().max_bytes_in_flight)),
            body_timeout: IngestLimits::default().body_timeout,
            max_batch_bytes: MAX_DECOMPRESSED_BYTES,
            sessions: Arc::new(session::Sessions::new(DashboardSettings::default())),
            retention: crate::retention::Retention::default(),
        }
    }

    /// State for a router with the alert task: the task to run beside the
    /// server (it ends when every copy of the state is dropped). The
    /// periodic sweep runs while `sweep` is held ([`crate::lease`]); peers'
    /// remotes are looked up in `threats` (`suspicious-peer`).
    pub fn with_alerts(
        store: Arc<dyn Store>,
        policy: Policy,
        sweep_every: std::time::Duration,
        notifier: Notifier,
        sweep: crate::lease::Lease,
        threats: Arc<crate::threat::Lists>,
    ) -> (AppState, impl std::future::Future<Output = ()> + Send + 'static) {
        let evaluator = Arc::new(Evaluator::new(store.clone(), policy, sweep_every).with_threats(threats));
        let (tx, rx) = mpsc::channel(evaluate::CHANGED_QUEUE);
        let sweep_now = Arc::new(Notify::new());
        let task = evaluate::run(evaluator.clone(), rx, sweep_now.clone(), notifier.clone(), sweep);
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
            heavy: Arc::default(),
            ingest: Arc::new(ingest::Admission::new(IngestLimits::default().max_bytes_in_flight)),
            body_timeout: IngestLimits::default().body_timeout,
            max_batch_bytes: MAX_DECOMPRESSED_BYTES,
            sessions: Arc::new(session::Sessions::new(DashboardSettings::default())),
            retention: crate::retention::Retention::default(),
        };
        (state, task)
    }

    /// Counts into `metrics` (shared with the alert sinks) instead of metrics of its own.
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> AppState {
        self.metrics = metrics;
        self
    }

    /// Serves `/metrics` without a token when `public`.
    pub fn metrics_public(mut self, public: bool) -> AppState {
        self.metrics_public = public;
        self
    }

    /// Bounds ingest by `limits` (instead of [`IngestLimits::default`]).
    pub fn ingest_limits(mut self, limits: IngestLimits) -> AppState {
        self.ingest = Arc::new(ingest::Admission::new(limits.max_bytes_in_flight));
        self.body_timeout = limits.body_timeout;
        self.max_batch_bytes = limits.max_batch_bytes;
        self
    }

    /// Serves the dashboard (or not) as `settings` say, with no session yet
    /// (instead of [`DashboardSettings::default`]).
    pub fn dashboard(mut self, settings: DashboardSettings) -> AppState {
        self.sessions = Arc::new(session::Sessions::new(settings));
        self
    }

    /// Answers by `retention` (instead of [`crate::retention::Retention::default`]).
    pub fn retention(mut self, retention: crate::retention::Retention) -> AppState {
        self.retention = retention;
        self
    }

    /// Has every host evaluated again soon (a baseline changed).
    pub fn reevaluate_all(&self) {
        self.sweep_now.notify_one();
    }
}

/// Heavy reads running at most at once: a host's history, trends
/// (fleet-wide trends read every interval of their window). More are
/// refused with 503 and `Retry-After`, so that a read token cannot take the
/// collector's memory and cores from ingest and the other readers.
pub const MAX_HEAVY_READS: usize = 4;

/// Exports streaming at most at once (an export lasts as long as its client
/// reads; each holds one of these while it does).
pub const MAX_EXPORTS: usize = 2;

/// How long a refused heavy read is told to wait.
const HEAVY_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// The gates of [`MAX_HEAVY_READS`] and [`MAX_EXPORTS`].
pub(crate) struct HeavyReads {
    reads: Arc<tokio::sync::Semaphore>,
    exports: Arc<tokio::sync::Semaphore>,
}

impl Default for HeavyReads {
    fn default() -> Self {
        HeavyReads {
            reads: Arc::new(tokio::sync::Semaphore::new(MAX_HEAVY_READS)),
            exports: Arc::new(tokio::sync::Semaphore::new(MAX_EXPORTS)),
        }
    }
}

/// The request's end of a heavy read: held by the request's handler, so it
/// is dropped when the handler is, which is also when its client hangs up
/// (the server drops the handler of a closed connection).
pub(crate) struct Asker(#[allow(dead_code)] Arc<()>);

/// The work's end of a heavy read: its turn among [`MAX_HEAVY_READS`],
/// moved into the work (a blocking task) and held until the work ends, so
/// that the bound counts reads running, not requests waiting for one. A
/// client that hangs up frees its turn only when its read has stopped: the
/// work asks [`Turn::wanted`] between rows and stops once the request is
/// gone, counted in `portwatch_heavy_reads_abandoned_total`.
pub(crate) struct Turn {
    _permit: tokio::sync::OwnedSemaphorePermit,
    asker: std::sync::Weak<()>,
    metrics: Arc<Metrics>,
    abandoned: std::cell::Cell<bool>,
}

impl Turn {
    /// Whether the request still waits for this read; the first `false` is counted.
    pub(crate) fn wanted(&self) -> bool {
        if self.asker.strong_count() > 0 {
            return true;
        }
        if !self.abandoned.replace(true) {
            self.metrics.heavy_read_abandoned();
        }
        false
    }
}

impl HeavyReads {
    /// A turn for one heavy read, or a 503 saying to come back.
    pub(crate) fn read(&self, what: &str, metrics: &Arc<Metrics>) -> Result<(Asker, Turn), ApiError> {
        let permit = self.reads.clone().try_acquire_owned().map_err(|_| ApiError::Busy {
            message: format!(
                "{MAX_HEAVY_READS} heavy reads (history, trends) are running; this {what} must wait its turn"
            ),
            retry_after: HEAVY_RETRY,
        })?;
        let asker = Arc::new(());
        let turn = Turn {
            _permit: permit,
            asker: Arc::downgrade(&asker),
            metrics: metrics.clone(),
            abandoned: std::cell::Cell::new(false),
        };
        Ok((Asker(asker), turn))
    }

    /// Heavy reads running now.
    #[cfg(test)]
    pub(crate) fn running(&self) -> usize {
        MAX_HEAVY_READS - self.reads.available_permits()
    }

    /// A turn for one export, or a 503 saying to come back.
    pub(crate) fn export(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        self.exports.clone().try_acquire_owned().map_err(|_| ApiError::Busy {
            message: format!("{MAX_EXPORTS} exports are streaming; this one must wait its turn"),
            retry_after: HEAVY_RETRY,
        })
    }
}

/// Every `/api/v1` endpoint, and its entry in the API's document: each
/// route's method and path are its handler's `#[utoipa::path]`, which
/// registers it here and documents it ([`contract`]), so the two cannot
/// differ. Register `/api/v1` routes only through `routes!` (a test checks).
/// The dashboard's sign-in is served only where the dashboard is enabled
/// (`session`); the document always lists it.
pub(crate) fn api_routes(session: bool) -> OpenApiRouter<AppState> {
    let routes = OpenApiRouter::with_openapi(contract::ApiDoc::openapi())
        .routes(routes!(ingest::ingest))
        .routes(routes!(query::hosts))
        .routes(routes!(retention::forget))
        .routes(routes!(query::listeners))
        .routes(routes!(query::probe_verdicts))
        .routes(routes!(query::peers))
        .routes(routes!(query::history))
        .routes(routes!(query::diff))
        .routes(routes!(query::who))
        .routes(routes!(export::export))
        .routes(routes!(policy::apply, policy::list))
        .routes(routes!(policy::remove))
        .routes(routes!(policy::log))
        .routes(routes!(policy::learn))
        .routes(routes!(policy::drift))
        .routes(routes!(policy::alerts))
        .routes(routes!(policy::ack))
        .routes(routes!(query::trends))
        .routes(routes!(port::history))
        .routes(routes!(contract::serve));
    match session {
        true => routes.routes(routes!(session::sign_in, session::current, session::sign_out)),
        false => routes,
    }
}

/// The API's router.
pub fn router(state: AppState) -> Router {
    let body_timeout = state.body_timeout;
    // The dashboard's page and its sign-in exist only where it is enabled.
    let enabled = state.sessions.settings.enabled;
    let dashboard = match enabled {
        true => dashboard::routes(),
        false => Router::new(),
    };
    let (api, _) = api_routes(enabled).split_for_parts();
    Router::new()
        .merge(api)
        .route("/metrics", get(query::metrics))
        .merge(dashboard)
        .fallback(|| async { ApiError::NotFound("no such endpoint; see the API table in README".to_owned()) })
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            ApiError::MethodNotAllowed(format!("{method} is not allowed here; see the API table in README"))
        })
        .layer(DefaultBodyLimit::max(MAX_DECOMPRESSED_BYTES))
        .layer(RequestDecompressionLayer::new())
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        // Outermost of the body layers: it times the body as it arrives.
        .layer(RequestBodyTimeoutLayer::new(body_timeout))
        .layer(axum::middleware::map_response(error::layer_refusals))
        .layer(axum::middleware::map_response(dashboard::security_headers))
        .with_state(state)
}

/// A JSON answer: rendered whole, or a long one streamed in chunks as it is
/// rendered.
pub(crate) enum JsonBody {
    Whole(Vec<u8>),
    Streamed(Chunks),
}

/// The chunks of a streamed answer; an `Err` aborts the response, so that a
/// client never takes a truncated answer for a whole one.
type Chunks = tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>;

impl axum::response::IntoResponse for JsonBody {
    fn into_response(self) -> axum::response::Response {
        let body = match self {
            JsonBody::Whole(bytes) => Body::from(bytes),
            JsonBody::Streamed(rx) => Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|chunk| (chunk, rx))
            })),
        };
        ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

/// Answers of fewer rows are rendered whole; longer ones (a fleet-wide
/// `who` is 10,000 rows, 4.5 MB) are streamed: the client receives the first
/// rows while the last are being rendered, and no answer-sized buffer is
/// allocated.
const STREAM_ROWS: usize = 1_000;

/// Bytes of JSON in a streamed chunk (at least; a chunk ends with a row).
const CHUNK_BYTES: usize = 64 * 1024;

/// Streamed chunks rendered ahead of the connection at most.
const CHUNKS_AHEAD: usize = 16;

/// Runs a blocking store call off the async runtime and renders its rows as
/// a JSON array there too: a fleet-wide answer is megabytes of JSON, tens of
/// milliseconds a runtime thread would otherwise not serve other requests.
/// A long answer is streamed, rendered in two halves on two threads (the
/// machine a collector runs on has cores to spare); its rows are freed once
/// the last chunk is on its way.
async fn blocking_json<T: serde::Serialize + Send + Sync + 'static>(
    f: impl FnOnce() -> Result<Vec<T>, crate::store::StoreError> + Send + 'static,
) -> Result<JsonBody, ApiError> {
    let (answer, answered) = tokio::sync::oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let rows = match f() {
            Ok(rows) => rows,
            Err(e) => {
                let _ = answer.send(Err(ApiError::from(e)));
                return;
            }
        };
        if rows.len() < STREAM_ROWS {
            let whole = serde_json::to_vec(&rows)
                .map(JsonBody::Whole)
                .map_err(|e| ApiError::Internal(format!("cannot render the answer: {e}")));
            let _ = answer.send(whole);
            return;
        }
        let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_AHEAD);
        if answer.send(Ok(JsonBody::Streamed(rx))).is_ok() {
            stream_rows(&rows, &tx);
        }
    });
    // The task dropped its sender without a word only if it panicked.
    answered
        .await
        .unwrap_or_else(|_| Err(ApiError::Internal("store task failed".to_owned())))
}

/// Sends `rows` (two or more) as one JSON array in chunks: the front half
/// rendered on this thread as it is sent, the back half on a second thread
/// meanwhile, sent after it. A failure (or a panic) midway sends an error,
/// which aborts the response.
fn stream_rows<T: serde::Serialize + Sync>(rows: &[T], tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>) {
    let (front, back) = rows.split_at(rows.len() / 2);
    let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        std::thread::scope(|scope| {
            let back = scope.spawn(|| {
                let mut chunks = Vec::new();
                render_chunks(back, b',', b"]", &mut |chunk| {
                    chunks.push(chunk);
                    true
                })
                .map(|_| chunks)
            });
            let front = render_chunks(front, b'[', b"", &mut |chunk| tx.blocking_send(Ok(chunk)).is_ok());
            let back = back.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            match (front?, back?) {
                (true, chunks) => {
                    Ok::<_, serde_json::Error>(chunks.into_iter().all(|chunk| tx.blocking_send(Ok(chunk)).is_ok()))
                }
                (false, _) => Ok(false),
            }
        })
    }));
    let failure = match sent {
        Ok(Ok(_)) => return,
        Ok(Err(e)) => format!("cannot render the answer: {e}"),
        Err(_) => "rendering the answer panicked".to_owned(),
    };
    tracing::error!(error = %failure, "answer aborted midway");
    let _ = tx.blocking_send(Err(std::io::Error::other(failure)));
}

/// Renders `rows` as `open` (`[` or `,`), the rows separated by commas,
/// then `close`, in chunks of about [`CHUNK_BYTES`] handed to `send`.
/// Returns whether `send` took every chunk (false: the client is gone).
fn render_chunks<T: serde::Serialize>(
    rows: &[T],
    open: u8,
    close: &[u8],
    send: &mut dyn FnMut(Bytes) -> bool,
) -> serde_json::Result<bool> {
    let mut chunk = Vec::with_capacity(CHUNK_BYTES + JSON_BYTES_PER_ROW);
    chunk.push(open);
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            chunk.push(b',');
        }
        serde_json::to_writer(&mut chunk, row)?;
        if chunk.len() >= CHUNK_BYTES {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_BYTES + JSON_BYTES_PER_ROW));
            if !send(Bytes::from(full)) {
                return Ok(false);
            }
        }
    }
    chunk.extend_from_slice(close);
    Ok(chunk.is_empty() || send(Bytes::from(chunk)))
}

/// Bytes reserved beyond [`CHUNK_BYTES`] for the row that ends a chunk
/// (a listener row with two owners is about 500).
const JSON_BYTES_PER_ROW: usize = 1024;

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

    /// The body of a streamed answer, as a client would receive it.
    fn streamed(rows: &[(u32, String)]) -> Vec<u8> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(rows.len() + 2);
        stream_rows(rows, &tx);
        drop(tx);
        let mut body = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            body.extend_from_slice(&chunk.unwrap());
        }
        body
    }

    #[test]
    fn heavy_reads_and_exports_beyond_their_bound_are_told_to_come_back() {
        let (gate, metrics) = (HeavyReads::default(), Arc::new(Metrics::new()));
        let turns: Vec<_> = (0..MAX_HEAVY_READS)
            .map(|_| gate.read("history", &metrics).unwrap())
            .collect();
        let Err(refused) = gate.read("trends", &metrics) else {
            panic!("a fifth heavy read was given a turn");
        };
        assert!(
            matches!(&refused, ApiError::Busy { message, .. } if message.contains("this trends must wait")),
            "{refused:?}"
        );
        drop(turns);
        assert!(gate.read("trends", &metrics).is_ok(), "a turn ends with its read");
        let exports: Vec<_> = (0..MAX_EXPORTS).map(|_| gate.export().unwrap()).collect();
        assert!(matches!(gate.export(), Err(ApiError::Busy { .. })));
        assert!(
            gate.read("history", &metrics).is_ok(),
            "exports have a gate of their own"
        );
        drop(exports);
    }

    /// A client that hangs up drops its handler, and with it the asker; the
    /// read's turn stays taken until the read itself stops. (It once was the
    /// handler's: a client asking for fleet-wide trends and hanging up at
    /// once, again and again, ran any number of them beside each other.)
    #[test]
    fn a_heavy_reads_turn_is_its_works_until_the_work_stops_and_it_learns_when_its_request_is_gone() {
        let (gate, metrics) = (HeavyReads::default(), Arc::new(Metrics::new()));
        let (asker, turn) = gate.read("trends", &metrics).unwrap();
        assert!(turn.wanted(), "its request waits for it");
        assert_eq!(metrics.heavy_reads_abandoned(), 0);
        drop(asker);
        assert_eq!(gate.running(), 1, "the request is gone, the read still runs");
        assert!(!turn.wanted() && !turn.wanted(), "its request is gone");
        assert_eq!(metrics.heavy_reads_abandoned(), 1, "counted once");
        drop(turn);
        assert_eq!(gate.running(), 0, "the turn ends with the read");
    }

    #[test]
    fn a_streamed_answer_is_the_same_json_array_in_chunks() {
        for n in [2, 3, STREAM_ROWS, 5 * CHUNK_BYTES / 20 + 1] {
            let rows: Vec<(u32, String)> = (0..n as u32).map(|i| (i, format!("row \"{i}\""))).collect();
            assert_eq!(streamed(&rows), serde_json::to_vec(&rows).unwrap(), "{n} rows");
        }
    }

    #[test]
    fn a_streamed_answer_ends_in_an_error_when_rendering_fails() {
        // A map with non-string keys cannot be JSON: rendering fails in both halves.
        let bad: Vec<std::collections::BTreeMap<Vec<u8>, u32>> = (0..4)
            .map(|i| std::collections::BTreeMap::from([(vec![i], 1)]))
            .collect();
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        stream_rows(&bad, &tx);
        drop(tx);
        let mut last = None;
        while let Ok(chunk) = rx.try_recv() {
            last = Some(chunk);
        }
        let err = last.expect("a chunk").expect_err("the stream ends in an error");
        assert!(err.to_string().contains("cannot render the answer"), "{err}");
    }

    #[test]
    fn a_streamed_answer_stops_when_the_client_is_gone() {
        let rows: Vec<(u32, String)> = (0..5_000).map(|i| (i, "x".repeat(100))).collect();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        drop(rx);
        // Returns (rather than blocking on a full channel nobody reads).
        stream_rows(&rows, &tx);
    }
}
