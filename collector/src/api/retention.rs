//! Retention over HTTP: forgetting a decommissioned host, and telling a
//! question about a moment before the kept history from one inside it.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use jiff::Timestamp;

use super::auth::Caller;
use super::contract::{BadRequest, Busy, Forbidden, Internal, NotFound, Unauthorized};
use super::query::HOST_PARAM;
use super::{blocking, error, ApiError, AppState};
use crate::retention;
use crate::store::Forgotten;

/// The header of a history answer whose window reaches before the kept
/// history: the start of what is kept (RFC 3339).
pub const KEPT_SINCE_HEADER: &str = "portwatch-history-kept-since";

/// The answer of forgetting a host.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ForgetAnswer {
    /// The host forgotten.
    pub host: String,
    /// What was removed.
    pub forgotten: Forgotten,
}

/// `DELETE /api/v1/hosts/{host}` (admin): removes the host, its history,
/// alerts and tokens (see [`crate::store::Maintenance::forget_host`]); 404
/// when there is no such host.
#[utoipa::path(
    delete,
    path = "/api/v1/hosts/{host}",
    operation_id = "forget_host",
    tag = "hosts",
    description = "Forgets a decommissioned host: its history, alerts and tokens. Its agent, if it still runs, is \
refused from then on (its token is gone). Role: admin.",
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    params(("host" = String, Path, description = HOST_PARAM)),
    responses(
        (status = 200, description = "Forgotten: what was removed", body = ForgetAnswer),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
        (status = 503, response = Busy),
    )
)]
pub async fn forget(
    State(state): State<AppState>,
    caller: Caller,
    host: Result<Path<String>, PathRejection>,
) -> Result<Json<ForgetAnswer>, ApiError> {
    caller.require_admin()?;
    let host = error::path(host, "/api/v1/hosts/web-3")?;
    let (store, name) = (state.store.clone(), host.clone());
    let Some(forgotten) = blocking(move || store.forget_host(&name)).await? else {
        return Err(ApiError::NotFound(format!(
            "no host {host:?}; `portwatch hosts` lists them"
        )));
    };
    tracing::warn!(
        host = %host,
        by = caller.name(),
        intervals = forgotten.intervals,
        alerts = forgotten.alerts,
        tokens = forgotten.tokens,
        "host forgotten"
    );
    state.reevaluate_all();
    Ok(Json(ForgetAnswer { host, forgotten }))
}

/// A 410 when the moment `at` (the query parameter `name`) lies before the
/// kept history: the listeners of that moment that have closed since may be
/// gone, and an answer without them would read as "nothing listened".
pub(super) fn require_kept(state: &AppState, name: &str, at: Timestamp) -> Result<(), ApiError> {
    match retention::before_retention(at, Timestamp::now(), &state.retention) {
        None => Ok(()),
        Some(start) => Err(ApiError::Gone(format!(
            "{name}={at} is before the kept history: listener intervals that closed before {start} are deleted \
             ([retention] history = {}), so what listened then is no longer known; ask about {start} or later",
            state
                .retention
                .history
                .map_or_else(|| "forever".to_owned(), |d| humantime::format_duration(d).to_string())
        ))),
    }
}

/// The start of the kept history if a window from `since` (`None`: from the
/// beginning) reaches before it.
pub(super) fn window_before_kept(state: &AppState, since: Option<Timestamp>) -> Option<Timestamp> {
    let start = retention::history_kept_since(Timestamp::now(), &state.retention)?;
    since.is_none_or(|since| since < start).then_some(start)
}
