//! Dashboard sign-in: a read or admin token, pasted once, is exchanged for a
//! session cookie; the API then takes that cookie as it takes the token.
//!
//! | method, path | who | what |
//! |---|---|---|
//! | `POST /api/v1/session` | a read or admin token, in the body | sign in: `{"token": "pw_..."}`; answers the session (name, role, end, CSRF token, refresh period) and sets the cookie |
//! | `GET /api/v1/session` | a session | the session, for a page that was reloaded |
//! | `DELETE /api/v1/session` | a session (with its CSRF token) | sign out: the session ends on the server |
//!
//! What keeps it safe:
//! - The cookie is `HttpOnly` (no script reads it), `SameSite=Strict` (no
//!   other site's page sends it), `Path=/`, `Secure` and named with the
//!   `__Host-` prefix under TLS, and expires with the session. Its value is
//!   256 random bits; the collector keeps only their SHA-256, in memory, so
//!   a session ends when it expires, at sign-out, when its token is revoked
//!   or replaced (every request checks the token as a bearer request does) and
//!   when the collector restarts.
//! - A request authenticated by the cookie that changes something (any
//!   method but GET and HEAD) must carry the session's CSRF token in
//!   [`CSRF_HEADER`] and an `Origin` of the collector itself. Sign-in refuses
//!   a foreign `Origin` too (no signing a user in to someone else's session).
//! - The token is read from the body, never from the URL, and is never
//!   logged; agent tokens cannot sign in.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, COOKIE, HOST, ORIGIN, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::Json;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::contract::{BadRequest, Busy, Forbidden, Internal, PayloadTooLarge, Unauthorized, UnsupportedMediaType};
use super::{auth, error, ApiError, AppState};
use crate::store::TokenRow;
use crate::token;
use portwatch_model::Role;

/// Whether the dashboard is served unless the config says otherwise.
pub const DEFAULT_DASHBOARD_ENABLED: bool = true;
/// How long a sign-in lasts unless the config says otherwise.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// The longest `[dashboard] session_ttl` taken.
pub const MAX_SESSION_TTL: Duration = Duration::from_secs(7 * 86_400);
/// How often the dashboard's live views refresh unless the config says otherwise.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(30);
/// The shortest and longest `[dashboard] refresh` taken.
pub const REFRESH_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3600));
/// Most sessions at once; a sign-in beyond them (after the expired ones are
/// dropped) is refused with 503.
pub const MAX_SESSIONS: usize = 10_000;
/// The request header that carries a session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The session cookie's name over plain HTTP.
pub const COOKIE_NAME: &str = "portwatch_session";
/// The session cookie's name over HTTPS: browsers keep a `__Host-` cookie
/// only if it is `Secure`, has `Path=/` and no `Domain`.
pub const SECURE_COOKIE_NAME: &str = "__Host-portwatch_session";

/// How the dashboard is served (`[dashboard]`, and whether the server has TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DashboardSettings {
    /// Serve `/` and accept session cookies.
    pub enabled: bool,
    /// How long a session lasts from its sign-in.
    pub session_ttl: Duration,
    /// How often the page's live views refresh (told to the page with the session).
    pub refresh: Duration,
    /// The server speaks HTTPS: cookies are `Secure`, origins `https://`.
    pub secure_cookies: bool,
}

impl Default for DashboardSettings {
    fn default() -> Self {
        DashboardSettings {
            enabled: DEFAULT_DASHBOARD_ENABLED,
            session_ttl: DEFAULT_SESSION_TTL,
            refresh: DEFAULT_REFRESH,
            secure_cookies: false,
        }
    }
}

impl DashboardSettings {
    fn cookie_name(&self) -> &'static str {
        if self.secure_cookies {
            SECURE_COOKIE_NAME
        } else {
            COOKIE_NAME
        }
    }
}

/// One signed-in browser.
#[derive(Debug, Clone)]
struct Session {
    /// The hash of the token it signed in with, checked at every request.
    token_hash: String,
    /// The hash of its CSRF token.
    csrf_hash: String,
    /// The CSRF token itself, handed back to a reloaded page (same origin only).
    csrf: String,
    name: String,
    role: Role,
    ends: Instant,
    ends_at: Timestamp,
}

/// The sessions, by the SHA-256 of their cookie's value.
#[derive(Debug)]
pub(crate) struct Sessions {
    pub(crate) settings: DashboardSettings,
    by_hash: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    pub(crate) fn new(settings: DashboardSettings) -> Sessions {
        Sessions {
            settings,
            by_hash: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.by_hash.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new session for `row`: its cookie value and the session.
    fn create(&self, row: &TokenRow, now: Instant) -> Result<(String, Session), ApiError> {
        let id = random_hex()?;
        let csrf = random_hex()?;
        let ttl = self.settings.session_ttl;
        let session = Session {
            token_hash: row.hash.clone(),
            csrf_hash: token::hash(&csrf),
            csrf,
            name: row.name.clone(),
            role: row.role,
            ends: now + ttl,
            ends_at: Timestamp::now()
                .checked_add(jiff::SignedDuration::try_from(ttl).unwrap_or(jiff::SignedDuration::ZERO))
                .unwrap_or(Timestamp::MAX),
        };
        let mut sessions = self.lock();
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, s| s.ends > now);
        }
        if sessions.len() >= MAX_SESSIONS {
            return Err(ApiError::Busy {
                message: format!("{MAX_SESSIONS} dashboard sessions are open; sign in later, or sign out elsewhere"),
                retry_after: Duration::from_secs(60),
            });
        }
        sessions.insert(token::hash(&id), session.clone());
        Ok((id, session))
    }

    /// The live session whose cookie value is `id` (an expired one is dropped).
    fn get(&self, id: &str, now: Instant) -> Option<Session> {
        let hash = token::hash(id);
        let mut sessions = self.lock();
        match sessions.get(&hash) {
            Some(s) if s.ends > now => Some(s.clone()),
            Some(_) => {
                sessions.remove(&hash);
                None
            }
            None => None,
        }
    }

    /// Ends the session whose cookie value is `id`.
    fn remove(&self, id: &str) {
        self.lock().remove(&token::hash(id));
    }
}

/// 256 bits from the OS's random source, as hex.
fn random_hex() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::Internal(format!("cannot read the system's random source: {e}")))?;
    Ok(hex::encode(bytes))
}

/// The session cookie's value in `headers`, if one was sent.
fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

/// Refuses a request whose `Origin` is not the collector itself (`required`:
/// also when it has none).
fn check_origin(headers: &HeaderMap, settings: &DashboardSettings, required: bool) -> Result<(), ApiError> {
    let Some(origin) = headers.get(ORIGIN) else {
        return match required {
            true => Err(ApiError::Forbidden(
                "no Origin header: a change made with a dashboard session must come from the dashboard's page"
                    .to_owned(),
            )),
            false => Ok(()),
        };
    };
    let scheme = if settings.secure_cookies { "https" } else { "http" };
    let own = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(|host| format!("{scheme}://{host}"));
    match (origin.to_str().ok(), own) {
        (Some(origin), Some(own)) if origin.eq_ignore_ascii_case(&own) => Ok(()),
        (origin, _) => Err(ApiError::Forbidden(format!(
            "Origin {:?} is not this collector: the dashboard's requests come from its own page",
            origin.unwrap_or("(not text)")
        ))),
    }
}

/// The caller of a request that carries no `Authorization` header: its
/// session cookie, checked (and, for a change, its CSRF token and origin),
/// then the session's token, checked as a bearer token is.
pub(super) async fn caller(parts: &Parts, state: &AppState) -> Result<TokenRow, ApiError> {
    let sessions = &state.sessions;
    if !sessions.settings.enabled {
        return Err(ApiError::Unauthorized(
            "no credentials: send `Authorization: Bearer <token>`".to_owned(),
        ));
    }
    let no_credentials = || {
        ApiError::Unauthorized(
            "no credentials: send `Authorization: Bearer <token>`, or sign in to the dashboard".to_owned(),
        )
    };
    let id = cookie_value(&parts.headers, sessions.settings.cookie_name()).ok_or_else(no_credentials)?;
    let session = sessions.get(&id, Instant::now()).ok_or_else(|| {
        ApiError::Unauthorized(
            "your dashboard session has ended (signed out, expired, or the collector restarted): sign in again"
                .to_owned(),
        )
    })?;
    if !matches!(parts.method, Method::GET | Method::HEAD) {
        check_origin(&parts.headers, &sessions.settings, true)?;
        let sent = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        if sent.is_none_or(|csrf| token::hash(csrf) != session.csrf_hash) {
            return Err(ApiError::Forbidden(format!(
                "missing or wrong {CSRF_HEADER} header: a change made with a dashboard session carries the \
                 session's CSRF token (reload the dashboard)"
            )));
        }
    }
    match auth::valid_token(state, session.token_hash.clone()).await {
        Ok(row) => Ok(row),
        Err(e) => {
            if matches!(e, ApiError::Unauthorized(_)) {
                sessions.remove(&id);
            }
            Err(e)
        }
    }
}

/// Body of `POST /api/v1/session`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// A read or admin token's secret.
    token: String,
}

/// A session, as the dashboard sees it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionView {
    /// The token's name (who the changes are made by).
    pub name: String,
    /// `read` or `admin`.
    pub role: String,
    /// When the session ends.
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    /// What to send in [`CSRF_HEADER`] with every change.
    pub csrf_token: String,
    /// How often, in seconds, the dashboard's live views refresh (`[dashboard] refresh`).
    pub refresh_seconds: u64,
}

impl SessionView {
    fn of(s: &Session, settings: &DashboardSettings) -> SessionView {
        SessionView {
            name: s.name.clone(),
            role: s.role.as_str().to_owned(),
            expires_at: s.ends_at,
            csrf_token: s.csrf.clone(),
            refresh_seconds: settings.refresh.as_secs().max(1),
        }
    }
}

/// An answer that no cache keeps.
fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The answer of signing out.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignedOut {
    /// Always true: the session has ended on the collector.
    pub signed_out: bool,
}

/// `POST /api/v1/session`: signs in with a read or admin token.
#[utoipa::path(
    post,
    path = "/api/v1/session",
    operation_id = "sign_in",
    tag = "session",
    description = "Dashboard sign-in: exchanges a read or admin token, sent in the body (never in the URL), for a \
session cookie (`HttpOnly`, `SameSite=Strict`, `Path=/`; `Secure` and `__Host-` under TLS) that lasts \
`[dashboard] session_ttl`. A foreign `Origin` is refused. Served only where the dashboard is enabled.",
    security(()),
    request_body(content = SignIn, content_type = "application/json"),
    responses(
        (status = 200, description = "Signed in: the session", body = SessionView, headers(
            ("Set-Cookie" = String, description = "The session cookie (`portwatch_session`, or \
`__Host-portwatch_session` over HTTPS)"),
            ("Cache-Control" = String, description = "`no-store`"),
        )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 500, response = Internal),
        (status = 503, response = Busy),
    )
)]
pub async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<SignIn>, JsonRejection>,
) -> Result<Response, ApiError> {
    let settings = state.sessions.settings;
    check_origin(&headers, &settings, false)?;
    let body = error::json(body, r#"{"token": "pw_..."}"#)?;
    let secret = body.token.trim();
    if secret.is_empty() {
        return Err(ApiError::BadRequest(
            "the token is empty: paste a read or admin token".to_owned(),
        ));
    }
    let row = auth::valid_token(&state, token::hash(secret)).await?;
    if row.role == Role::Agent {
        return Err(ApiError::Forbidden(
            "agent tokens cannot sign in to the dashboard; use a read or admin token \
             (portwatch-collector token create --role read --name NAME)"
                .to_owned(),
        ));
    }
    let (id, session) = state.sessions.create(&row, Instant::now())?;
    tracing::info!(name = %row.name, role = row.role.as_str(), "dashboard sign-in");
    let cookie = cookie::Cookie::build((settings.cookie_name(), id))
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .secure(settings.secure_cookies)
        .path("/")
        .max_age(cookie::time::Duration::seconds(
            i64::try_from(settings.session_ttl.as_secs()).unwrap_or(i64::MAX),
        ))
        .build();
    let value = HeaderValue::from_str(&cookie.to_string())
        .map_err(|e| ApiError::Internal(format!("cannot write the session cookie: {e}")))?;
    let mut response = Json(SessionView::of(&session, &settings)).into_response();
    response.headers_mut().insert(SET_COOKIE, value);
    Ok(no_store(response))
}

/// The live session of a request's cookie, or a 401.
fn session_of(state: &AppState, headers: &HeaderMap) -> Result<(String, Session), ApiError> {
    let settings = state.sessions.settings;
    let id = cookie_value(headers, settings.cookie_name())
        .ok_or_else(|| ApiError::Unauthorized("not signed in".to_owned()))?;
    let session = state
        .sessions
        .get(&id, Instant::now())
        .ok_or_else(|| ApiError::Unauthorized("your dashboard session has ended: sign in again".to_owned()))?;
    Ok((id, session))
}

/// `GET /api/v1/session`: the session of this browser.
#[utoipa::path(
    get,
    path = "/api/v1/session",
    operation_id = "session",
    tag = "session",
    description = "The session of this browser's cookie (a reloaded page gets its CSRF token back). Served only \
where the dashboard is enabled.",
    security(("session" = [])),
    responses(
        (status = 200, description = "The session", body = SessionView,
            headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
        (status = 503, response = Busy),
    )
)]
pub async fn current(
    State(state): State<AppState>,
    caller: auth::Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require_reader()?;
    let (_, session) = session_of(&state, &headers)?;
    Ok(no_store(
        Json(SessionView::of(&session, &state.sessions.settings)).into_response(),
    ))
}

/// `DELETE /api/v1/session`: signs out (the caller extractor has checked the
/// CSRF token and origin).
#[utoipa::path(
    delete,
    path = "/api/v1/session",
    operation_id = "sign_out",
    tag = "session",
    description = "Signs out: the session ends on the collector and the cookie is cleared. Served only where the \
dashboard is enabled.",
    security(("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "Signed out", body = SignedOut, headers(
            ("Set-Cookie" = String, description = "The session cookie, emptied and expired"),
            ("Cache-Control" = String, description = "`no-store`"),
        )),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
        (status = 503, response = Busy),
    )
)]
pub async fn sign_out(
    State(state): State<AppState>,
    caller: auth::Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require_reader()?;
    let settings = state.sessions.settings;
    let (id, session) = session_of(&state, &headers)?;
    state.sessions.remove(&id);
    tracing::info!(name = %session.name, "dashboard sign-out");
    let gone = cookie::Cookie::build((settings.cookie_name(), ""))
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .secure(settings.secure_cookies)
        .path("/")
        .max_age(cookie::time::Duration::ZERO)
        .build();
    let mut response = Json(SignedOut { signed_out: true }).into_response();
    if let Ok(value) = HeaderValue::from_str(&gone.to_string()) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
    Ok(no_store(response))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(role: Role) -> TokenRow {
        TokenRow {
            name: "ops".to_owned(),
            role,
            host: None,
            hash: "h".to_owned(),
            created_at: Timestamp::UNIX_EPOCH,
            revoked_at: None,
        }
    }

    #[test]
    fn a_session_lives_until_its_end_or_its_removal_and_is_found_only_by_its_own_id() {
        let sessions = Sessions::new(DashboardSettings {
            session_ttl: Duration::from_secs(60),
            ..DashboardSettings::default()
        });
        let t0 = Instant::now();
        let (id, s) = sessions.create(&row(Role::Read), t0).unwrap();
        assert_eq!(id.len(), 64);
        assert_ne!(id, s.csrf);
        assert!(sessions.get(&id, t0 + Duration::from_secs(59)).is_some());
        assert!(sessions.get(&s.csrf, t0).is_none(), "the CSRF token is no session id");
        assert!(sessions.get(&id, t0 + Duration::from_secs(60)).is_none(), "expired");
        assert!(sessions.get(&id, t0).is_none(), "an expired session is gone for good");
        let (id, _) = sessions.create(&row(Role::Admin), t0).unwrap();
        sessions.remove(&id);
        assert!(sessions.get(&id, t0).is_none(), "signed out");
    }

    #[test]
    fn the_cookie_is_found_among_others_by_its_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_static("a=1; portwatch_session_x=2"));
        headers.append(COOKIE, HeaderValue::from_static("portwatch_session=abc; b=3"));
        assert_eq!(cookie_value(&headers, COOKIE_NAME).as_deref(), Some("abc"));
        assert_eq!(cookie_value(&headers, SECURE_COOKIE_NAME), None);
    }

    #[test]
    fn only_the_collectors_own_origin_passes() {
        let settings = DashboardSettings::default();
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static("127.0.0.1:7878"));
        assert!(check_origin(&headers, &settings, false).is_ok());
        assert!(check_origin(&headers, &settings, true).is_err(), "required");
        headers.insert(ORIGIN, HeaderValue::from_static("http://127.0.0.1:7878"));
        assert!(check_origin(&headers, &settings, true).is_ok());
        let tls = DashboardSettings {
            secure_cookies: true,
            ..settings
        };
        assert!(
            check_origin(&headers, &tls, true).is_err(),
            "http origin of an https server"
        );
        headers.insert(ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert!(check_origin(&headers, &settings, false).is_err());
        headers.insert(ORIGIN, HeaderValue::from_static("null"));
        assert!(check_origin(&headers, &settings, false).is_err());
    }
}
