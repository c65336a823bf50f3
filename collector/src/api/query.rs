//! The read side: hosts, what listened where and when, who held a port.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use jiff::Timestamp;
use portwatch_common::Proto;
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::Caller;
use super::contract::{BadRequest, Busy, Forbidden, Gone, Internal, NotFound, Unauthorized};
use super::retention::{require_kept, window_before_kept, KEPT_SINCE_HEADER};
use super::{blocking, blocking_json, error, ApiError, AppState, JsonBody};
use crate::store::PeersQuery;
use portwatch_model::diff::Diff;
use portwatch_model::trend::Trends;
use portwatch_model::{
    host_page, HistoryCursor, HistoryWindow, HostFilter, HostRow, HostStatus, ListenerRow, PeerPoint, PeersCursor,
    ProbeVerdict,
};

/// `?name=&tag=&status=&limit=&after=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HostsParams {
    /// Only hosts whose name matches this glob (`*` any run of characters, `?` one).
    #[param(example = "web-*")]
    name: Option<String>,
    /// Only hosts whose agent reports this tag: `KEY=VALUE`, or `KEY` for any value.
    #[param(example = "env=prod")]
    tag: Option<String>,
    /// Only hosts `up`, or only `silent` ones.
    #[param(value_type = Option<HostStatus>)]
    status: Option<String>,
    /// Hosts in a page: 1 to 100000 (default: every host kept).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100_000, example = 500)]
    limit: Option<usize>,
    /// Where the page starts: after this host name (the previous page's `Link` header gives it).
    #[param(example = "web-042")]
    after: Option<String>,
}

/// Most hosts one page of `GET /api/v1/hosts` may hold.
pub const MAX_HOSTS_LIMIT: usize = 100_000;

/// `GET /api/v1/hosts?name=&tag=&status=&limit=&after=`: the hosts kept by
/// the filters, by name, all of them or a page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/hosts",
    operation_id = "hosts",
    tag = "hosts",
    description = "The hosts the collector has heard from, by name: status, last seen, open listeners, clock skew; \
filtered by name glob, tag and status, and paged with `limit` and `after` when asked. Roles: read, admin.",
    security(("bearer" = []), ("session" = [])),
    params(HostsParams),
    responses(
        (status = 200, description = "The hosts kept, by name", body = Vec<HostRow>, headers(
            ("X-Total-Count" = u64, description = "How many hosts the filters keep in all"),
            ("Link" = String, description = "When there are more: `<PATH?...&after=NAME>; rel=\"next\"`, the \
next page's address (the same query with `after`)"),
        )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
        (status = 503, response = Busy),
    )
)]
pub async fn hosts(
    State(state): State<AppState>,
    caller: Caller,
    uri: axum::http::Uri,
    params: Result<Query<HostsParams>, QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    caller.require_reader()?;
    let params = error::query(
        params,
        "?name=web-*&tag=env=prod&status=up&limit=500&after=web-042 (each optional)",
    )?;
    let filter = host_filter(&params)?;
    let limit = params.limit;
    if limit.is_some_and(|l| !(1..=MAX_HOSTS_LIMIT).contains(&l)) {
        return Err(ApiError::BadRequest(format!(
            "limit={}: ask for 1 to {MAX_HOSTS_LIMIT} hosts a page, and for the next page with the `after` of the \
             Link header",
            limit.unwrap_or_default()
        )));
    }
    let after = params.after;
    let store = state.store.clone();
    let page = blocking(move || {
        let hosts = store.hosts(Timestamp::now())?;
        Ok(host_page(hosts, &filter, after.as_deref(), limit))
    })
    .await?;
    let (total, next) = (page.total, page.next);
    let body = blocking_json(move || Ok(page.hosts)).await?;
    let mut response = axum::response::IntoResponse::into_response(body);
    response
        .headers_mut()
        .insert(super::port::TOTAL_HEADER, axum::http::HeaderValue::from(total));
    if let Some(next) = next {
        link_next(&mut response, &uri, next);
    }
    Ok(response)
}

/// The filter `params` ask for, or what is wrong with it.
fn host_filter(params: &HostsParams) -> Result<HostFilter, ApiError> {
    let tag = params
        .tag
        .as_deref()
        .map(|tag| {
            let (key, value) = match tag.split_once('=') {
                Some((key, value)) => (key, Some(value.to_owned())),
                None => (tag, None),
            };
            match key.is_empty() {
                false => Ok((key.to_owned(), value)),
                true => Err(ApiError::BadRequest(format!(
                    "tag={tag:?}: write the tag as KEY=VALUE (e.g. tag=env=prod), or KEY for any value"
                ))),
            }
        })
        .transpose()?;
    let status = params
        .status
        .as_deref()
        .map(|status| match status {
            "up" => Ok(HostStatus::Up),
            "silent" => Ok(HostStatus::Silent),
            other => Err(ApiError::BadRequest(format!("status={other:?}: write up or silent"))),
        })
        .transpose()?;
    Ok(HostFilter {
        name: params.name.clone(),
        tag,
        status,
    })
}

/// Refuses a host the collector has never heard from: a mistyped name must
/// not read as a host with nothing open, nothing changed or no drift.
pub(super) async fn require_host(state: &AppState, host: &str) -> Result<(), ApiError> {
    let (store, name) = (state.store.clone(), host.to_owned());
    match blocking(move || store.host(&name, Timestamp::now())).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::NotFound(format!(
            "no host {host:?}; `portwatch hosts` lists them"
        ))),
    }
}

/// `?at=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AtParams {
    /// The moment asked about (RFC 3339); now if absent. Before the kept history: 410.
    #[param(value_type = Option<String>, format = DateTime, example = "2026-11-25T03:00:00Z")]
    at: Option<String>,
}

/// The host of a path, as the agent names it.
pub(super) const HOST_PARAM: &str = "A host name, as its agent reports it (`portwatch hosts` lists them); one the \
collector never heard from is a 404";

/// `GET /api/v1/hosts/{host}/listeners?at=T`
#[utoipa::path(
    get,
    path = "/api/v1/hosts/{host}/listeners",
    operation_id = "listeners",
    tag = "hosts",
    description = "What listened on a host at a moment (default now), with its owners. Roles: read, admin.",
    security(("bearer" = []), ("session" = [])),
    params(("host" = String, Path, description = HOST_PARAM), AtParams),
    responses(
        (status = 200, description = "The listeners open at that moment", body = Vec<ListenerRow>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 410, response = Gone),
        (status = 500, response = Internal),
        (status = 503, response = Busy),
    )
)]
pub async fn listeners(
    State(state): State<AppState>,
    caller: Caller,
    host: Result<Path<String>, PathRejection>,
    params: Result<Query<AtParams>, QueryRejection>,
) -> Result<JsonBody, ApiError> {
    caller.require_reader()?;
    let host = error::path(host, "/api/v1/hosts/web-3/listeners")?;
    let params = error::query(params, "?at=2026-11-25T03:00:00Z")?;
    let at = time_param("at", params.at.as_deref())?.unwrap_or_else(Timestamp::now);
    require_host(&state, &host).await?;
    require_kept(&state, "at", at)?;
    let store = state.store.clone();
    blocking_json(move || store.listeners_at(&host, at)).await
}

/// `GET /api/v1/hosts/{host}/probe`
#[utoipa::path(
    get,
    path = "/api/v1/hosts/{host}/probe",
    operation_id = "probe_verdicts",
    tag = "hosts",
    description = "The view from outside: the latest verdict of a probe from the collector (`[probe]`, `portwatch-collector \
probe`) for each listener place of a host beyond loopback: reachable, unreachable or not-probed (with why), when, and what \
each connect answered. Empty where the host was never probed. Roles: read, admin.",
    security(("bearer" = []), ("session" = [])),
    params(("host" = String, Path, description = HOST_PARAM)),
    responses(
        (status = 200, description = "The verdicts, by place", body = Vec<ProbeVerdict>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
        (status = 503, response = Busy),
    )
)]
pub async fn probe_verdicts(
    State(state): State<AppState>,
    caller: Caller,
    host: Result<Path<String>, PathRejection>,
) -> Result<JsonBody, ApiError> {
    caller.require_reader()?;
    let host = error::path(host, "/api/v1/hosts/web-3/probe")?;
    require_host(&state, &host).await?;
    let store = state.store.clone();
    blocking_json(move || store.probe_verdicts(&host)).await
}

/// `?port=&at=&since=&until=&limit=&after=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PeersParams {
    /// Only listeners on this port (default: every TCP listener).
    #[param(value_type = Option<u16>, maximum = 65535, example = 5432)]
    port: Option<u16>,
    /// The moment asked about (RFC 3339): each listener's latest point at or before it. The default, unless
    /// `since` or `until` is given: now. Not with `since` or `until`. Before the kept history: 410.
    #[param(value_type = Option<String>, format = DateTime, example = "2026-11-25T03:00:00Z")]
    at: Option<String>,
    /// A window instead of a moment: every point dated since then (RFC 3339, inclusive; default: from the
    /// beginning), by time.
    #[param(value_type = Option<String>, format = DateTime, example = "2026-11-25T02:00:00Z")]
    since: Option<String>,
    /// The window's end (RFC 3339, inclusive; default: now).
    #[param(value_type = Option<String>, format = DateTime, example = "2026-11-25T04:00:00Z")]
    until: Option<String>,
    /// With a window, points in a page: 1 to 10000 (default 1000).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10_000, example = 1000)]
    limit: Option<usize>,
    /// With a window, where the page starts: the cursor of the previous page's `Link` header.
    #[param(value_type = Option<String>)]
    after: Option<String>,
}

/// Points a window of peers holds unless `limit` says otherwise.
pub const DEFAULT_PEERS_LIMIT: usize = 1000;

/// Most points one answer of peers may hold.
pub const MAX_PEERS_LIMIT: usize = 10_000;

/// `GET /api/v1/hosts/{host}/peers?port=&at=&since=&until=&limit=&after=`
#[utoipa::path(
    get,
    path = "/api/v1/hosts/{host}/peers",
    operation_id = "host_peers",
    tag = "hosts",
    description = "Inbound peers per TCP listener of a host, as its agent summarized them (`peers = true`): \
connections, distinct remote addresses, the busiest remotes and loopback/private/public classes, kept as a time \
series of at most one point per listener per minute (a point when the summary changed). At a moment (`at`, default \
now): each listener's latest point at or before it, by listener; over a window (`since`, `until`): every point in \
it, by time, a page at a time. Empty where the agent sends none. Roles: read, admin.",
    security(("bearer" = []), ("session" = [])),
    params(("host" = String, Path, description = HOST_PARAM), PeersParams),
    responses(
        (status = 200, description = "The points: by listener at a moment, by time over a window", body = Vec<PeerPoint>, headers(
            ("Link" = String, description = "Over a window, when there are more: `<PATH?...&after=CURSOR>; \
rel=\"next\"`, the next page's address (the same query with `after`)"),
        )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 410, response = Gone),
        (status = 500, response = Internal),
        (status = 503, response = Busy),
    )
)]
pub async fn peers(
    State(state): State<AppState>,
    caller: Caller,
    uri: axum::http::Uri,
    host: Result<Path<String>, PathRejection>,
    params: Result<Query<PeersParams>, QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    caller.require_reader()?;
    let host = error::path(host, "/api/v1/hosts/db-2/peers")?;
    let params = error::query(
        params,
        "?port=5432&at=2026-11-25T03:00:00Z, or ?port=5432&since=2026-11-25T02:00:00Z&until=2026-11-25T04:00:00Z \
         &limit=1000 (each optional)",
    )?;
    let at = time_param("at", params.at.as_deref())?;
    let since = time_param("since", params.since.as_deref())?;
    let until = time_param("until", params.until.as_deref())?;
    if at.is_some() && (since.is_some() || until.is_some()) {
        return Err(ApiError::BadRequest(
            "ask for a moment (at) or a window (since, until), not both".to_owned(),
        ));
    }
    let window = since.is_some() || until.is_some();
    if !window && (params.limit.is_some() || params.after.is_some()) {
        return Err(ApiError::BadRequest(
            "limit and after page a window: give since or until with them".to_owned(),
        ));
    }
    require_host(&state, &host).await?;
    let store = state.store.clone();
    let port = params.port;
    if !window {
        let at = at.unwrap_or_else(Timestamp::now);
        require_kept(&state, "at", at)?;
        let body = blocking_json(move || store.peers_at(&host, port, at)).await?;
        return Ok(axum::response::IntoResponse::into_response(body));
    }
    let limit = params.limit.unwrap_or(DEFAULT_PEERS_LIMIT);
    if !(1..=MAX_PEERS_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit={limit}: ask for 1 to {MAX_PEERS_LIMIT} points a page, and for the next page with the `after` of \
             the Link header"
        )));
    }
    let after = params
        .after
        .as_deref()
        .map(str::parse::<PeersCursor>)
        .transpose()
        .map_err(|e| ApiError::BadRequest(format!("after: {e}")))?;
    let query = PeersQuery {
        port,
        since,
        until: Some(until.unwrap_or_else(Timestamp::now)),
        after,
        limit,
    };
    let points = blocking(move || store.peers_between(&host, &query)).await?;
    let next = (points.len() == limit)
        .then(|| points.last().map(PeersCursor::after))
        .flatten();
    let body = blocking_json(move || Ok(points)).await?;
    let mut response = axum::response::IntoResponse::into_response(body);
    if let Some(next) = next {
        link_next(&mut response, &uri, next);
    }
    Ok(response)
}

/// `?port=&proto=&at=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WhoParams {
    /// The port (0 to 65535); required (a 400 without it).
    #[param(required = true, value_type = u16, maximum = 65535, example = 22)]
    port: Option<u16>,
    /// Only this protocol: `tcp` or `udp` (default: both).
    #[param(value_type = Option<String>, pattern = "^(tcp|udp)$", example = "tcp")]
    proto: Option<String>,
    /// The moment asked about (RFC 3339); now if absent. Before the kept history: 410.
    #[param(value_type = Option<String>, format = DateTime, example = "2026-11-25T03:00:00Z")]
    at: Option<String>,
}

/// `GET /api/v1/who?port=P&proto=tcp&at=T`
#[utoipa::path(
    get,
    path = "/api/v1/who",
    operation_id = "who",
    tag = "ports",
    description = "Fleet-wide, who held a port at a moment (default now): every host's listeners on it. \
Roles: read, admin.",
    security(("bearer" = []), ("session" = [])),
    params(WhoParams),
    responses(
        (status = 200, description = "The listeners on the port, by host", body = Vec<ListenerRow>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 410, response = Gone),
        (status = 500, response = Internal),
        (status = 503, response = Busy),
    )
)]
pub async fn who(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<WhoParams>, QueryRejection>,
) -> Result<JsonBody, ApiError> {
    caller.require_reader()?;
    let params = error::query(params, "?port=22&proto=tcp&at=2026-11-25T03:00:00Z")?;
    let port = params
        .port
        .ok_or_else(|| ApiError::BadRequest("`port` is required, e.g. /api/v1/who?port=22".to_owned()))?;
    let proto = match params.proto.as_deref() {
        None => None,
        Some("tcp") => Some(Proto::Tcp),
        Some("udp") => Some(Proto::Udp),
        Some(other) => return Err(ApiError::BadRequest(format!("proto {other:?}: use tcp or udp"))),
    };
    let at = time_param("at", params.at.as_deref())?.unwrap_or_else(Timestamp::now);
    require_kept(&state, "at", at)?;
    let store = state.store.clone();
    blocking_json(move || store.who(port, proto, at)).await
}

/// `?port=&since=&until=&limit=&after=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// Only intervals on this port (default: every port).
    #[param(value_type = Option<u16>, maximum = 65535, example = 8080)]
    port: Option<u16>,
    /// The window's start (RFC 3339): intervals open at any time since then (default: from the beginning).
    #[param(value_type = Option<String>, format = DateTime, example = "2026-11-24T00:00:00Z")]
    since: Option<String>,
    /// The window's end (RFC 3339; default: now).
    #[param(value_type = Option<String>, format = DateTime, example = "2026-11-25T00:00:00Z")]
    until: Option<String>,
    /// Intervals in a page: 1 to 100000 (default 10000).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100_000, example = 1000)]
    limit: Option<usize>,
    /// Where the page starts: the cursor of the previous page's `Link` header (opaque).
    #[param(value_type = Option<String>)]
    after: Option<String>,
}

/// Intervals a history answer holds unless `limit` says otherwise.
pub const DEFAULT_HISTORY_LIMIT: usize = 10_000;

/// Most intervals one history answer may hold.
pub const MAX_HISTORY_LIMIT: usize = 100_000;

/// `GET /api/v1/hosts/{host}/history?port=&since=&until=&limit=&after=`: one
/// page, by opening time; when there are more, a `Link: <...>; rel="next"`
/// header gives the next page's address (the same query with `after=`).
#[utoipa::path(
    get,
    path = "/api/v1/hosts/{host}/history",
    operation_id = "host_history",
    tag = "hosts",
    description = "A host's listener intervals, oldest first, a page at a time. Roles: read, admin.",
    security(("bearer" = []), ("session" = [])),
    params(("host" = String, Path, description = HOST_PARAM), HistoryParams),
    responses(
        (status = 200, description = "One page of intervals, by opening time", body = Vec<ListenerRow>, headers(
            ("Link" = String, description = "When there are more: `<PATH?...&after=CURSOR>; rel=\"next\"`, the \
next page's address (the same query with `after`)"),
            ("Portwatch-History-Kept-Since" = String, description = "When the window reaches before the kept \
history: the start of what is kept (RFC 3339); intervals that closed before it are deleted"),
        )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
        (status = 503, response = Busy),
    )
)]
pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
    uri: axum::http::Uri,
    host: Result<Path<String>, PathRejection>,
    params: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    caller.require_reader()?;
    let host = error::path(host, "/api/v1/hosts/web-3/history")?;
    let params = error::query(
        params,
        "?port=8080&since=2026-11-24T00:00:00Z&until=2026-11-25T00:00:00Z&limit=1000 (each optional)",
    )?;
    let window = HistoryWindow {
        port: params.port,
        since: time_param("since", params.since.as_deref())?,
        until: time_param("until", params.until.as_deref())?,
    };
    let limit = params.limit.unwrap_or(DEFAULT_HISTORY_LIMIT);
    if !(1..=MAX_HISTORY_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit={limit}: ask for 1 to {MAX_HISTORY_LIMIT} intervals a page, and for the next page with the \
             `after` of the Link header"
        )));
    }
    let after = params
        .after
        .as_deref()
        .map(str::parse::<HistoryCursor>)
        .transpose()
        .map_err(|e| ApiError::BadRequest(format!("after: {e}")))?;
    require_host(&state, &host).await?;
    let kept_since = window_before_kept(&state, window.since);
    let (_asker, turn) = state.heavy.read("history", &state.metrics)?;
    let store = state.store.clone();
    let (rows, next, turn) = blocking(move || {
        let (rows, next) = store.history_page(&host, window, after, limit)?;
        Ok((rows, next, turn))
    })
    .await?;
    let body = blocking_json(move || {
        let _turn = turn;
        Ok(rows)
    })
    .await?;
    let mut response = axum::response::IntoResponse::into_response(body);
    if let Some(start) = kept_since {
        if let Ok(value) = axum::http::HeaderValue::from_str(&start.to_string()) {
            response.headers_mut().insert(KEPT_SINCE_HEADER, value);
        }
    }
    if let Some(next) = next {
        link_next(&mut response, &uri, next);
    }
    Ok(response)
}

/// Adds `Link: <uri with after=next>; rel="next"` to `response`: where the next page is.
fn link_next(response: &mut axum::response::Response, uri: &axum::http::Uri, next: impl std::fmt::Display) {
    let link = format!("<{}>; rel=\"next\"", next_page(uri, next));
    if let Ok(value) = axum::http::HeaderValue::from_str(&link) {
        response.headers_mut().insert(axum::http::header::LINK, value);
    }
}

/// The address of the page after `next`: `uri` with its `after` replaced.
fn next_page(uri: &axum::http::Uri, next: impl std::fmt::Display) -> String {
    let mut query: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("after="))
        .collect();
    let after = format!("after={next}");
    query.push(&after);
    format!("{}?{}", uri.path(), query.join("&"))
}

pub(super) fn time_param(name: &str, value: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    value
        .map(|v| {
            v.parse::<Timestamp>().map_err(|e| {
                ApiError::BadRequest(format!(
                    "{name}={v:?} is not an RFC 3339 time like 2026-11-25T03:00:00Z ({e})"
                ))
            })
        })
        .transpose()
}

/// `?from=&to=` or `?vs_host=&at=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DiffParams {
    /// Compare the host over time: the earlier moment (RFC 3339). Give `from` or `vs_host`, not both.
    #[param(value_type = Option<String>, format = DateTime, example = "2026-11-24T00:00:00Z")]
    from: Option<String>,
    /// With `from`: the later moment (RFC 3339; default now).
    #[param(value_type = Option<String>, format = DateTime, example = "2026-11-25T00:00:00Z")]
    to: Option<String>,
    /// Compare with another host (by protocol, port, exposure and program names): its name.
    #[param(value_type = Option<String>, example = "web-4")]
    vs_host: Option<String>,
    /// With `vs_host`: the moment (RFC 3339; default now).
    #[param(value_type = Option<String>, format = DateTime)]
    at: Option<String>,
}

/// `GET /api/v1/hosts/{host}/diff?from=T1&to=T2` (one host at two moments) or
/// `?vs_host=B&at=T` (two hosts at one moment).
#[utoipa::path(
    get,
    path = "/api/v1/hosts/{host}/diff",
    operation_id = "diff",
    tag = "hosts",
    description = "What opened, closed and changed owner on a host between two moments (`from`, `to`), or how \
two hosts differ at one moment (`vs_host`, `at`: `opened` are on the other host only, `closed` on this one only). \
Roles: read, admin.",
    security(("bearer" = []), ("session" = [])),
    params(("host" = String, Path, description = HOST_PARAM), DiffParams),
    responses(
        (status = 200, description = "The difference", body = Diff),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 410, response = Gone),
        (status = 500, response = Internal),
        (status = 503, response = Busy),
    )
)]
pub async fn diff(
    State(state): State<AppState>,
    caller: Caller,
    host: Result<Path<String>, PathRejection>,
    params: Result<Query<DiffParams>, QueryRejection>,
) -> Result<Json<portwatch_model::diff::Diff>, ApiError> {
    caller.require_reader()?;
    let host = error::path(host, "/api/v1/hosts/web-3/diff")?;
    let params = error::query(
        params,
        "?from=2026-11-24T00:00:00Z&to=2026-11-25T00:00:00Z or ?vs_host=web-4",
    )?;
    let store = state.store.clone();
    match (params.vs_host, params.from) {
        (Some(other), None) => {
            let at = time_param("at", params.at.as_deref())?.unwrap_or_else(Timestamp::now);
            require_host(&state, &host).await?;
            require_host(&state, &other).await?;
            require_kept(&state, "at", at)?;
            let (a, b) =
                blocking(move || Ok((store.listeners_at(&host, at)?, store.listeners_at(&other, at)?))).await?;
            Ok(Json(portwatch_model::diff::between_hosts(&a, &b)))
        }
        (None, Some(from)) => {
            let from = time_param("from", Some(&from))?.unwrap_or_else(Timestamp::now);
            let to = time_param("to", params.to.as_deref())?.unwrap_or_else(Timestamp::now);
            require_host(&state, &host).await?;
            require_kept(&state, "from", from)?;
            require_kept(&state, "to", to)?;
            let (a, b) =
                blocking(move || Ok((store.listeners_at(&host, from)?, store.listeners_at(&host, to)?))).await?;
            Ok(Json(portwatch_model::diff::between_moments(&a, &b)))
        }
        _ => Err(ApiError::BadRequest(
            "give `from` (and optionally `to`) to compare a host over time, or `vs_host` to compare two hosts"
                .to_owned(),
        )),
    }
}

/// `GET /metrics`: Prometheus text (0.0.4) or OpenMetrics, as `Accept`
/// asks ([`crate::metrics::Format::negotiate`]); a read token unless
/// `[metrics] public = true`.
pub async fn metrics(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    headers: axum::http::HeaderMap,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    if !state.metrics_public {
        caller?.require_reader()?;
    }
    let accept = headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let format = crate::metrics::Format::negotiate((!accept.is_empty()).then_some(accept.as_str()));
    let (store, metrics) = (state.store.clone(), state.metrics.clone());
    let text = blocking(move || metrics.render(store.as_ref(), Timestamp::now(), format)).await?;
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, format.content_type()),
            (axum::http::header::VARY, "Accept"),
        ],
        text,
    ))
}

/// `?host=&since=&until=&bucket=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TrendParams {
    /// One host's trends (default: fleet-wide); an unknown host is a 404.
    #[param(value_type = Option<String>, example = "web-3")]
    host: Option<String>,
    /// The window's start (RFC 3339; default: 24 hours before `until` with hour buckets, 7 days with day buckets).
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
    /// The window's end (RFC 3339; default now).
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<String>,
    /// The buckets' width: `hour` (default) or `day`; counted back from `until`.
    #[param(value_type = Option<String>, pattern = "^(hour|day)$", example = "hour")]
    bucket: Option<String>,
}

/// `GET /api/v1/trends?host=&since=&until=&bucket=hour|day`: open listeners
/// over time, new, short-lived and recurring listeners, top ports. The
/// window defaults to the last 24 hours (hour buckets) or 7 days (day buckets).
#[utoipa::path(
    get,
    path = "/api/v1/trends",
    operation_id = "trends",
    tag = "hosts",
    description = "Listeners over time (the count at each bucket's start), ports first seen in the last 24 hours and \
7 days, short-lived listeners, listeners recurring at the same hour, the ports open on the most hosts. \
Roles: read, admin.",
    security(("bearer" = []), ("session" = [])),
    params(TrendParams),
    responses(
        (status = 200, description = "The window's trends", body = Trends),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
        (status = 503, response = Busy),
    )
)]
pub async fn trends(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<TrendParams>, QueryRejection>,
) -> Result<Json<portwatch_model::trend::Trends>, ApiError> {
    use crate::trend::Builder;
    caller.require_reader()?;
    let params = error::query(
        params,
        "?host=web-3&bucket=hour&since=2026-11-24T00:00:00Z&until=2026-11-25T00:00:00Z (each optional)",
    )?;
    let (bucket, default_span) = match params.bucket.as_deref().unwrap_or("hour") {
        "hour" => (
            std::time::Duration::from_secs(3600),
            jiff::SignedDuration::from_hours(24),
        ),
        "day" => (
            std::time::Duration::from_secs(86_400),
            jiff::SignedDuration::from_hours(24 * 7),
        ),
        other => return Err(ApiError::BadRequest(format!("bucket {other:?}: use hour or day"))),
    };
    let until = time_param("until", params.until.as_deref())?.unwrap_or_else(Timestamp::now);
    let since = match time_param("since", params.since.as_deref())? {
        Some(t) => t,
        None => until
            .checked_sub(default_span)
            .map_err(|_| ApiError::BadRequest(format!("until = {until} is too early; give a later one")))?,
    };
    let mut builder = Builder::new(since, until, bucket).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if let Some(host) = &params.host {
        require_host(&state, host).await?;
    }
    let (_asker, turn) = state.heavy.read("trends", &state.metrics)?;
    let store = state.store.clone();
    let trends = blocking(move || {
        match params.host.as_deref() {
            Some(host) => {
                for row in store.history(host, None, Some(since), Some(until))? {
                    builder.add(&row);
                }
            }
            // Every interval of the window: stopped (its answer unfinished,
            // with no one to take it) once the request is gone.
            None => store.export(Some(since), Some(until), &mut |row| {
                builder.add(&row);
                turn.wanted()
            })?,
        }
        let week_ago = portwatch_model::time::before(until, std::time::Duration::from_secs(7 * 86_400));
        let first = store.first_seen_ports(week_ago, params.host.as_deref())?;
        let first: Vec<_> = first.into_iter().filter(|f| f.first_seen <= until).collect();
        Ok(builder.finish(params.host, first))
    })
    .await?;
    Ok(Json(trends))
}
