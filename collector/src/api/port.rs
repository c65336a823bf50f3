//! One port across the fleet: `GET /api/v1/ports/{port}/history`, when it
//! opened and closed where (the dashboard's port view).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderValue;
use axum::response::IntoResponse;
use jiff::Timestamp;
use portwatch_common::Proto;
use serde::Deserialize;

use super::auth::Caller;
use super::contract::{BadRequest, Busy, Forbidden, Internal, Unauthorized};
use super::query::time_param;
use super::{blocking, blocking_json, error, ApiError, AppState};
use portwatch_model::ListenerRow;

/// `?proto=&since=&until=&limit=`
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PortHistoryParams {
    /// Only this protocol: `tcp` or `udp` (default: both).
    #[param(value_type = Option<String>, pattern = "^(tcp|udp)$", example = "tcp")]
    proto: Option<String>,
    /// The window's start (RFC 3339; default: 7 days before `until`).
    #[param(value_type = Option<String>, format = DateTime, example = "2026-11-24T00:00:00Z")]
    since: Option<String>,
    /// The window's end (RFC 3339; default: now).
    #[param(value_type = Option<String>, format = DateTime, example = "2026-11-25T00:00:00Z")]
    until: Option<String>,
    /// Most intervals in the answer: 1 to 100000 (default 10000); the latest ones when the window holds more.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100_000, example = 1000)]
    limit: Option<usize>,
}

/// Intervals one answer holds unless `limit` says otherwise.
pub const DEFAULT_PORT_HISTORY_LIMIT: usize = 10_000;
/// Most intervals one answer may hold.
pub const MAX_PORT_HISTORY_LIMIT: usize = 100_000;
/// The window when `since` is not given: this long before `until`.
const DEFAULT_SPAN: jiff::SignedDuration = jiff::SignedDuration::from_hours(7 * 24);

/// The header that says how many intervals the window holds in all (the
/// answer has the latest `limit` of them).
pub const TOTAL_HEADER: &str = "x-total-count";

/// `GET /api/v1/ports/{port}/history?proto=tcp&since=T1&until=T2&limit=N`:
/// every host's intervals of the port that overlap the window (default: the
/// 7 days before `until`, itself now by default), oldest first; the latest
/// `limit` of them when there are more, with [`TOTAL_HEADER`] saying how many.
#[utoipa::path(
    get,
    path = "/api/v1/ports/{port}/history",
    operation_id = "port_history",
    tag = "ports",
    description = "A port's intervals on every host that overlap a window, oldest first (the dashboard's port \
view). Roles: read, admin.",
    security(("bearer" = []), ("session" = [])),
    params(("port" = u16, Path, maximum = 65535, description = "The port, 0 to 65535", example = 22), PortHistoryParams),
    responses(
        (status = 200, description = "The latest `limit` intervals of the window, oldest first", body = Vec<ListenerRow>,
            headers(("X-Total-Count" = u64, description = "How many intervals the window holds in all"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
        (status = 503, response = Busy),
    )
)]
pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
    port: Result<Path<u16>, PathRejection>,
    params: Result<Query<PortHistoryParams>, QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    caller.require_reader()?;
    let port = error::path(port, "/api/v1/ports/22/history, with a port from 0 to 65535")?;
    let params = error::query(
        params,
        "?proto=tcp&since=2026-11-24T00:00:00Z&until=2026-11-25T00:00:00Z&limit=1000 (each optional)",
    )?;
    let proto = match params.proto.as_deref() {
        None => None,
        Some("tcp") => Some(Proto::Tcp),
        Some("udp") => Some(Proto::Udp),
        Some(other) => return Err(ApiError::BadRequest(format!("proto {other:?}: use tcp or udp"))),
    };
    let until = time_param("until", params.until.as_deref())?.unwrap_or_else(Timestamp::now);
    let since = match time_param("since", params.since.as_deref())? {
        Some(t) => t,
        None => until
            .checked_sub(DEFAULT_SPAN)
            .map_err(|_| ApiError::BadRequest(format!("until = {until} is too early; give a later one")))?,
    };
    if since > until {
        return Err(ApiError::BadRequest(format!(
            "since = {since} is after until = {until}: give the window's start first"
        )));
    }
    let limit = params.limit.unwrap_or(DEFAULT_PORT_HISTORY_LIMIT);
    if !(1..=MAX_PORT_HISTORY_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit={limit}: ask for 1 to {MAX_PORT_HISTORY_LIMIT} intervals (narrow the window with since= and until=)"
        )));
    }
    let (_asker, turn) = state.heavy.read("port history", &state.metrics)?;
    let store = state.store.clone();
    let (rows, total, turn) = blocking(move || {
        let mut rows = Vec::new();
        // Host by host: stopped once the request is gone.
        for host in store.hosts(Timestamp::now())? {
            if !turn.wanted() {
                break;
            }
            rows.extend(
                store
                    .history(&host.host, Some(port), Some(since), Some(until))?
                    .into_iter()
                    .filter(|r| proto.is_none_or(|p| r.listener.proto == p)),
            );
        }
        rows.sort_by(|a, b| (a.opened_at, &a.host).cmp(&(b.opened_at, &b.host)));
        let total = rows.len();
        let rows = rows.split_off(total.saturating_sub(limit));
        Ok((rows, total, turn))
    })
    .await?;
    let body = blocking_json(move || {
        let _turn = turn;
        Ok(rows)
    })
    .await?;
    let mut response = body.into_response();
    if let Ok(value) = HeaderValue::from_str(&total.to_string()) {
        response.headers_mut().insert(TOTAL_HEADER, value);
    }
    Ok(response)
}
