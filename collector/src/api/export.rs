//! `GET /api/v1/export?format=csv|ndjson&since=&until=&host=&port=`: every
//! listener interval in a window (of one host, of one port), streamed as it
//! is read from the store.

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::Response;
use serde::Deserialize;

use super::auth::Caller;
use super::contract::{BadRequest, Busy, Forbidden, Internal, NotFound, Unauthorized};
use super::{query::time_param, ApiError, AppState};
use crate::export::{self, Format};

/// `?format=&since=&until=&host=&port=`
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportParams {
    /// `ndjson` (default: one JSON interval a line, as the query API answers them) or `csv` (a header, then a
    /// row per interval and process; a cell that would run as a formula gets a leading `'`).
    #[param(inline)]
    format: Option<Format>,
    /// The window's start (RFC 3339; default: from the beginning).
    #[param(value_type = Option<String>, format = DateTime, example = "2026-11-24T00:00:00Z")]
    since: Option<String>,
    /// The window's end (RFC 3339; default: now).
    #[param(value_type = Option<String>, format = DateTime, example = "2026-11-25T00:00:00Z")]
    until: Option<String>,
    /// Only this host's intervals (default: every host); a host never heard from is a 404.
    #[param(example = "web-3")]
    host: Option<String>,
    /// Only intervals on this port (default: every port).
    #[param(value_type = Option<u16>, maximum = 65535, example = 8080)]
    port: Option<u16>,
}

/// Intervals one read of a host's export takes from the store.
const HOST_EXPORT_PAGE: usize = 1_000;

/// Streams the export; a store failure midway aborts the response, so a
/// client never takes a truncated export for a complete one.
#[utoipa::path(
    get,
    path = "/api/v1/export",
    operation_id = "export",
    tag = "hosts",
    description = "Every listener interval that overlaps a window, on every host (or one, `host`; one port, \
`port`), streamed as it is read (1,000 \
intervals at a time, each its own short read; an interval that closes during a long export may show open). A \
failure midway aborts the response, so a truncated export never looks complete. Two exports stream at once at \
most; another is a 503. Roles: read, admin.",
    security(("bearer" = []), ("session" = [])),
    params(ExportParams),
    responses(
        (status = 200, description = "The intervals, oldest first", content(
            (String = "application/x-ndjson"),
            (String = "text/csv"),
        )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
        (status = 503, response = Busy),
    )
)]
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<ExportParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require_reader()?;
    let params = super::error::query(
        params,
        "?format=ndjson&since=2026-11-24T00:00:00Z&until=2026-11-25T00:00:00Z&host=web-3&port=8080 (each optional; \
         format is csv or ndjson)",
    )?;
    let format = params.format.unwrap_or(Format::Ndjson);
    let since = time_param("since", params.since.as_deref())?;
    let until = time_param("until", params.until.as_deref())?;
    let (host, port) = (params.host, params.port);
    if let Some(host) = &host {
        super::query::require_host(&state, host).await?;
    }
    let turn = state.heavy.export()?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || {
        // Held while the export streams: until its client has it all, or is gone.
        let _turn = turn;
        if tx.blocking_send(Ok(Bytes::from(export::preamble(format)))).is_err() {
            return;
        }
        let mut each = |row: portwatch_model::ListenerRow| {
            port.is_some_and(|p| row.listener.local_port != p)
                || tx.blocking_send(Ok(Bytes::from(export::row(format, &row)))).is_ok()
        };
        let done = match &host {
            // One host: its history, a page at a time, each page its own short read.
            Some(host) => {
                let window = portwatch_model::HistoryWindow { port, since, until };
                let mut after = None;
                loop {
                    match store.history_page(host, window, after, HOST_EXPORT_PAGE) {
                        Err(e) => break Err(e),
                        Ok((rows, next)) => {
                            if !rows.into_iter().all(&mut each) {
                                break Ok(());
                            }
                            match next {
                                Some(next) => after = Some(next),
                                None => break Ok(()),
                            }
                        }
                    }
                }
            }
            None => store.export(since, until, &mut each),
        };
        if let Err(e) = done {
            tracing::error!(error = %e, "export failed midway");
            let _ = tx.blocking_send(Err(std::io::Error::other("export failed; see the collector's log")));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    Response::builder()
        .header(CONTENT_TYPE, format.content_type())
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::Internal(e.to_string()))
}
