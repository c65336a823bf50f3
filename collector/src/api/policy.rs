//! Baselines, drift and alerts over HTTP.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::contract::{
    BadRequest, Busy, Conflict, Forbidden, Internal, NotFound, PayloadTooLarge, Unauthorized, UnsupportedMediaType,
};
use super::query::require_host;
use super::{blocking, blocking_json, error, ApiError, AppState, JsonBody};
use crate::store::AckOutcome;
use portwatch_model::baseline::{self, ApplyAnswer, BaselineView};
use portwatch_model::{AlertEvent, AlertRow, AlertState, BaselineAction, BaselineLogRow};
use portwatch_model::{Finding, Kind, ALL_KINDS};

/// Body of `POST /api/v1/baselines`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyBody {
    /// The baseline file, as written.
    source: String,
    /// Why it changes (kept in the log).
    comment: Option<String>,
}

/// `POST /api/v1/baselines`: validates and stores a baseline file (admin).
#[utoipa::path(
    post,
    path = "/api/v1/baselines",
    operation_id = "apply_baseline",
    tag = "baselines",
    description = "Validates and stores a baseline file (TOML), replacing the one of its name; every host is \
evaluated against the baselines again soon. Role: admin.",
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    request_body(content = ApplyBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Applied (or unchanged: the same source again)", body = ApplyAnswer),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 500, response = Internal),
        (status = 503, response = Busy),
    )
)]
pub async fn apply(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<ApplyBody>, JsonRejection>,
) -> Result<Json<ApplyAnswer>, ApiError> {
    caller.require_admin()?;
    let body = error::json(body, r#"{"source": "<the TOML file>", "comment": "why"}"#)?;
    let parsed = baseline::parse(&body.source).map_err(|e| ApiError::BadRequest(format!("baseline: {e}")))?;
    let (store, actor) = (state.store.clone(), caller.name().to_owned());
    let name = parsed.name.clone();
    let action =
        blocking(move || store.put_baseline(&name, &body.source, &actor, body.comment.as_deref(), Timestamp::now()))
            .await?;
    if action != BaselineAction::Unchanged {
        tracing::info!(baseline = %parsed.name, action = action.as_str(), by = caller.name(), "baseline applied");
        state.reevaluate_all();
    }
    Ok(Json(ApplyAnswer {
        name: parsed.name,
        action,
        listeners: parsed.listeners.len(),
    }))
}

/// `GET /api/v1/baselines`
#[utoipa::path(
    get,
    path = "/api/v1/baselines",
    operation_id = "list_baselines",
    tag = "baselines",
    description = "Every baseline, as stored (source, when, by whom) and parsed. Roles: read, admin.",
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "Every baseline", body = Vec<BaselineView>),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
        (status = 503, response = Busy),
    )
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<BaselineView>>, ApiError> {
    caller.require_reader()?;
    let store = state.store.clone();
    let stored = blocking(move || store.baselines()).await?;
    Ok(Json(
        stored
            .into_iter()
            .map(|s| BaselineView {
                baseline: baseline::parse(&s.source).ok(),
                stored: s,
            })
            .collect(),
    ))
}

/// `?comment=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CommentParams {
    /// Why it is removed (kept in the baseline log).
    #[param(value_type = Option<String>, example = "web tier retired")]
    comment: Option<String>,
}

/// The answer of removing a baseline.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RemoveAnswer {
    /// The baseline removed.
    pub name: String,
    /// `remove`.
    pub action: BaselineAction,
}

/// `DELETE /api/v1/baselines/{name}?comment=` (admin)
#[utoipa::path(
    delete,
    path = "/api/v1/baselines/{name}",
    operation_id = "remove_baseline",
    tag = "baselines",
    description = "Removes a baseline (logged with who and why). Role: admin.",
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    params(("name" = String, Path, description = "The baseline's name", example = "web"), CommentParams),
    responses(
        (status = 200, description = "Removed", body = RemoveAnswer),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
        (status = 503, response = Busy),
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    name: Result<Path<String>, PathRejection>,
    params: Result<Query<CommentParams>, QueryRejection>,
) -> Result<Json<RemoveAnswer>, ApiError> {
    caller.require_admin()?;
    let name = error::path(name, "/api/v1/baselines/web")?;
    let params = error::query(params, "?comment=why")?;
    let (store, actor, n) = (state.store.clone(), caller.name().to_owned(), name.clone());
    let removed =
        blocking(move || store.remove_baseline(&n, &actor, params.comment.as_deref(), Timestamp::now())).await?;
    if !removed {
        return Err(ApiError::NotFound(format!(
            "no baseline {name:?}; `portwatch baseline list` shows them"
        )));
    }
    tracing::info!(baseline = %name, by = caller.name(), "baseline removed");
    state.reevaluate_all();
    Ok(Json(RemoveAnswer {
        name,
        action: BaselineAction::Remove,
    }))
}

/// `?name=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogParams {
    /// Only this baseline's changes (default: every baseline's).
    #[param(value_type = Option<String>, example = "web")]
    name: Option<String>,
}

/// `GET /api/v1/baseline-log?name=`
#[utoipa::path(
    get,
    path = "/api/v1/baseline-log",
    operation_id = "baseline_log",
    tag = "baselines",
    description = "Every change to the baselines: who, when, why, and the source it left. Roles: read, admin.",
    security(("bearer" = []), ("session" = [])),
    params(LogParams),
    responses(
        (status = 200, description = "The changes, in order", body = Vec<BaselineLogRow>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
        (status = 503, response = Busy),
    )
)]
pub async fn log(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<LogParams>, QueryRejection>,
) -> Result<Json<Vec<BaselineLogRow>>, ApiError> {
    caller.require_reader()?;
    let params = error::query(params, "?name=web (optional)")?;
    let store = state.store.clone();
    Ok(Json(
        blocking(move || store.baseline_log(params.name.as_deref())).await?,
    ))
}

/// `?hosts=&name=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LearnParams {
    /// The hosts to learn from: a host name or a glob (`web-*`); required.
    #[param(required = true, value_type = String, example = "web-*")]
    hosts: Option<String>,
    /// The proposed baseline's name: letters, digits, `-`, `_` and `.` (default: from the glob).
    #[param(value_type = Option<String>, example = "web")]
    name: Option<String>,
}

/// `GET /api/v1/baseline-proposal?hosts=GLOB&name=N`: a baseline file
/// proposed from what listens now on the hosts matching GLOB, as TOML text.
#[utoipa::path(
    get,
    path = "/api/v1/baseline-proposal",
    operation_id = "baseline_proposal",
    tag = "baselines",
    description = "A baseline file proposed from what listens now on the hosts matching a glob, to review and \
apply. Roles: read, admin.",
    security(("bearer" = []), ("session" = [])),
    params(LearnParams),
    responses(
        (status = 200, description = "The proposed baseline file (TOML)", body = String,
            content_type = "text/plain; charset=utf-8"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
        (status = 503, response = Busy),
    )
)]
pub async fn learn(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<LearnParams>, QueryRejection>,
) -> Result<String, ApiError> {
    caller.require_reader()?;
    let params = error::query(params, "?hosts=web-*&name=web (name optional)")?;
    let glob = params
        .hosts
        .filter(|h| !h.trim().is_empty())
        .ok_or_else(|| ApiError::BadRequest("`hosts` is required: a host name or glob such as web-*".to_owned()))?;
    let name = params.name.unwrap_or_else(|| {
        let n: String = glob
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        match n.trim_matches('-') {
            "" => "all-hosts".to_owned(),
            n => n.to_owned(),
        }
    });
    if !baseline::valid_name(&name) {
        return Err(ApiError::BadRequest(format!(
            "name {name:?}: use letters, digits, '-', '_' and '.' (`portwatch baseline learn --name`, or name= in the API)"
        )));
    }
    let store = state.store.clone();
    let now = Timestamp::now();
    let matcher = wildmatch::WildMatch::new(&glob);
    let g = glob.clone();
    // Read and learned off the async runtime: a glob may match the fleet.
    let learned = blocking(move || {
        let mut rows = Vec::new();
        for host in store.hosts(now)?.into_iter().filter(|h| matcher.matches(&h.host)) {
            rows.extend(store.listeners_at(&host.host, now)?);
        }
        Ok((!rows.is_empty()).then(|| crate::learn::learn(&name, &glob, &rows, now)))
    })
    .await?;
    learned.ok_or_else(|| {
        ApiError::NotFound(format!(
            "no host matching {g:?} has a listener now; `portwatch hosts` lists the hosts"
        ))
    })
}

/// `?host=&kind=&limit=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DriftParams {
    /// One host's findings (default: fleet-wide); an unknown host is a 404.
    #[param(value_type = Option<String>, example = "web-3")]
    host: Option<String>,
    /// Only these kinds, comma-separated: unexpected-listener, missing-listener, owner-mismatch,
    /// exposure-widened, risky-port-exposed, host-silent, clock-skew, flapping, unbaselined, firewall-opened,
    /// outside-view-disagrees, suspicious-peer.
    #[param(value_type = Option<String>, example = "risky-port-exposed,owner-mismatch")]
    kind: Option<String>,
    /// Most findings: 1 to 100000 (default 10000).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100_000, example = 100)]
    limit: Option<usize>,
}

/// Most findings one answer carries unless asked for fewer.
const DEFAULT_DRIFT_LIMIT: usize = 10_000;
/// Most findings one answer may carry.
const MAX_DRIFT_LIMIT: usize = 100_000;

/// `GET /api/v1/drift?host=H&kind=K1,K2&limit=N`: the findings now,
/// computed on the spot, most serious first. One computation runs at a
/// time (a fleet-wide one reads every host); others wait for it.
#[utoipa::path(
    get,
    path = "/api/v1/drift",
    operation_id = "drift",
    tag = "alerts",
    description = "The findings now, computed on the spot, most serious first (one computation at a time; others \
wait for it). Roles: read, admin.",
    security(("bearer" = []), ("session" = [])),
    params(DriftParams),
    responses(
        (status = 200, description = "The findings, most serious first", body = Vec<Finding>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
        (status = 503, response = Busy),
    )
)]
pub async fn drift(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<DriftParams>, QueryRejection>,
) -> Result<JsonBody, ApiError> {
    caller.require_reader()?;
    let params = error::query(
        params,
        "?host=web-3&kind=risky-port-exposed,owner-mismatch&limit=100 (each optional)",
    )?;
    let kinds: Option<Vec<Kind>> = match params.kind.as_deref() {
        None => None,
        Some(list) => Some(
            list.split(',')
                .map(|k| {
                    Kind::parse(k.trim()).ok_or_else(|| {
                        let known: Vec<&str> = ALL_KINDS.iter().map(|k| k.as_str()).collect();
                        ApiError::BadRequest(format!("kind {k:?}: use one or more of {}", known.join(", ")))
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    let limit = params.limit.unwrap_or(DEFAULT_DRIFT_LIMIT);
    if !(1..=MAX_DRIFT_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit = {limit}: ask for 1 to {MAX_DRIFT_LIMIT} findings (narrow with host= or kind=)"
        )));
    }
    if let Some(host) = &params.host {
        require_host(&state, host).await?;
    }
    let _turn = state
        .drift_gate
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| ApiError::Internal(format!("drift gate closed: {e}")))?;
    let evaluator = state.evaluator.clone();
    let with_info = kinds.as_ref().is_none_or(|k| k.contains(&Kind::Unbaselined));
    // Evaluated, sorted and rendered off the async runtime: a fleet's
    // findings are many thousands.
    blocking_json(move || {
        let mut findings = evaluator.drift(params.host.as_deref(), with_info, Timestamp::now())?;
        if let Some(kinds) = &kinds {
            findings.retain(|f| kinds.contains(&f.kind));
        }
        findings.sort_by(|a, b| (b.severity, &a.host, a.kind, &a.key).cmp(&(a.severity, &b.host, b.kind, &b.key)));
        findings.truncate(limit);
        Ok(findings)
    })
    .await
}

/// Most alerts one listing returns unless asked for fewer.
const DEFAULT_ALERT_LIMIT: usize = 1000;
/// Most alerts one listing may ask for.
const MAX_ALERT_LIMIT: usize = 10_000;

/// `?state=&host=&limit=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertParams {
    /// `open`, `acknowledged`, `resolved`, `active` (open and acknowledged, the default) or `all`.
    #[param(value_type = Option<String>, pattern = "^(open|acknowledged|resolved|active|all)$", example = "open")]
    state: Option<String>,
    /// One host's alerts (default: every host's); an unknown host is a 404.
    #[param(value_type = Option<String>, example = "web-3")]
    host: Option<String>,
    /// Most alerts: 1 to 10000 (default 1000).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10_000, example = 100)]
    limit: Option<usize>,
}

/// `GET /api/v1/alerts?state=open|acknowledged|resolved|active|all&host=&limit=`
#[utoipa::path(
    get,
    path = "/api/v1/alerts",
    operation_id = "alerts",
    tag = "alerts",
    description = "Alerts, newest first. Roles: read, admin.",
    security(("bearer" = []), ("session" = [])),
    params(AlertParams),
    responses(
        (status = 200, description = "The alerts, newest first", body = Vec<AlertRow>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
        (status = 503, response = Busy),
    )
)]
pub async fn alerts(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<AlertParams>, QueryRejection>,
) -> Result<Json<Vec<AlertRow>>, ApiError> {
    caller.require_reader()?;
    let params = error::query(params, "?state=open&host=web-3&limit=100 (each optional)")?;
    // `active` (the default): open and acknowledged.
    let (wanted, active_only) = match params.state.as_deref().unwrap_or("active") {
        "active" => (None, true),
        "all" => (None, false),
        s => match AlertState::parse(s) {
            Some(st) => (Some(st), false),
            None => {
                return Err(ApiError::BadRequest(format!(
                    "state {s:?}: use open, acknowledged, resolved, active (open and acknowledged) or all"
                )))
            }
        },
    };
    let limit = params.limit.unwrap_or(DEFAULT_ALERT_LIMIT);
    if !(1..=MAX_ALERT_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit={limit}: ask for 1 to {MAX_ALERT_LIMIT} alerts (narrow with state= or host= for older ones)"
        )));
    }
    if let Some(host) = &params.host {
        require_host(&state, host).await?;
    }
    let store = state.store.clone();
    let rows = blocking(move || {
        if active_only {
            let mut rows = store.alerts(Some(AlertState::Open), params.host.as_deref(), limit)?;
            rows.extend(store.alerts(Some(AlertState::Acknowledged), params.host.as_deref(), limit)?);
            rows.sort_by_key(|a| std::cmp::Reverse(a.id));
            rows.truncate(limit);
            Ok(rows)
        } else {
            store.alerts(wanted, params.host.as_deref(), limit)
        }
    })
    .await?;
    Ok(Json(rows))
}

/// Body of `POST /api/v1/alerts/{id}/ack`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    /// What the person says (required: the next person reads it).
    comment: String,
}

/// `POST /api/v1/alerts/{id}/ack` (admin)
#[utoipa::path(
    post,
    path = "/api/v1/alerts/{id}/ack",
    operation_id = "ack_alert",
    tag = "alerts",
    description = "Acknowledges an open alert, with a comment for the next person; the alert sinks are told. \
Role: admin.",
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    params(("id" = i64, Path, description = "The alert's number (`id`, the ID column of `portwatch alerts`)", example = 12)),
    request_body(content = AckBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Acknowledged: the alert as it is now", body = AlertRow),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 500, response = Internal),
        (status = 503, response = Busy),
    )
)]
pub async fn ack(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<i64>, PathRejection>,
    body: Result<Json<AckBody>, JsonRejection>,
) -> Result<Json<AlertRow>, ApiError> {
    caller.require_admin()?;
    let id = error::path(id, "/api/v1/alerts/12/ack, with the alert's number (the ID column)")?;
    let body = error::json(body, r#"{"comment": "looking into it"}"#)?;
    if body.comment.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "the comment is empty: say what you are doing about it".to_owned(),
        ));
    }
    let (store, actor) = (state.store.clone(), caller.name().to_owned());
    let outcome = blocking(move || store.ack_alert(id, &actor, &body.comment, Timestamp::now())).await?;
    match outcome {
        AckOutcome::Acknowledged(alert) => {
            state.notifier.notify(vec![AlertEvent::Acknowledged(alert.clone())]);
            Ok(Json(alert))
        }
        AckOutcome::NotOpen(alert) => Err(ApiError::Conflict(format!(
            "alert {id} is {} already{}",
            alert.state.as_str(),
            match (&alert.acked_by, alert.state) {
                (Some(by), AlertState::Acknowledged) => format!(" (by {by})"),
                _ => String::new(),
            }
        ))),
        AckOutcome::NotFound => Err(ApiError::NotFound(format!(
            "no alert {id}; `portwatch alerts --state all` lists them"
        ))),
    }
}
