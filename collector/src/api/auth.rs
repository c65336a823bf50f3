//! Who is calling: the bearer token, looked up by its hash, through a short-lived cache.
//!
//! Every agent authenticates once per interval, so the lookups are as many as
//! the requests. [`TokenCache`] keeps the valid tokens recently found and
//! answers most requests without the database; a revoked token is refused
//! at most [`TOKEN_TRUST`] after its revocation is committed, also when the
//! revocation is made by another process (`portwatch-collector token revoke`).
//!
//! A token that a rotation replaced (`token rotate`) ends at a time stored on
//! it, checked at every authentication, cached or not: once a read has seen
//! the rotation (at most [`TOKEN_TRUST`] after it is committed), the old
//! token is refused from that time on exactly; no timer is involved. So an
//! overlap shorter than [`TOKEN_TRUST`] may be up to [`TOKEN_TRUST`] long.
//!
//! The scheme is matched case-insensitively (`Bearer`, `bearer`, `BEARER`:
//! RFC 7235 auth schemes are case-insensitive).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jiff::Timestamp;

use super::{blocking, ApiError, AppState};
use crate::store::{Store, TokenRow};
use crate::token;
use portwatch_model::Role;

/// How long a database read vouches for a token: a revoked token may be
/// accepted for at most this long after its revocation is committed.
pub const TOKEN_TRUST: Duration = Duration::from_secs(2);

/// How often the cache re-reads which tokens are still valid (while it is used).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// An authenticated caller (a known token, valid now).
pub struct Caller(pub TokenRow);

impl Caller {
    /// Refuses agent tokens: reading is for read and admin tokens.
    pub fn require_reader(&self) -> Result<(), ApiError> {
        match self.0.role {
            Role::Read | Role::Admin => Ok(()),
            Role::Agent => Err(ApiError::Forbidden(
                "agent tokens cannot read; use a read token (portwatch-collector token create --role read --name NAME)"
                    .to_owned(),
            )),
        }
    }
}

impl Caller {
    /// Refuses all but admin tokens: changing baselines and alerts is for admins.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.0.role {
            Role::Admin => Ok(()),
            role => Err(ApiError::Forbidden(format!(
                "a {} token cannot change baselines or alerts; use an admin token \
                 (portwatch-collector token create --role admin --name NAME)",
                role.as_str()
            ))),
        }
    }

    /// The token's name, recorded as who made a change.
    pub fn name(&self) -> &str {
        &self.0.name
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // Without an Authorization header, a dashboard session cookie (and
        // for a change its CSRF token) may stand for the token: see [`super::session`].
        let Some(header) = parts.headers.get(AUTHORIZATION) else {
            return super::session::caller(parts, state).await.map(Caller);
        };
        let secret =
            header.to_str().ok().and_then(bearer).ok_or_else(|| {
                ApiError::Unauthorized("malformed Authorization header: use `Bearer <token>`".to_owned())
            })?;
        valid_token(state, token::hash(secret)).await.map(Caller)
    }
}

/// The token whose secret hashes to `hash`, if it is valid now: from the
/// cache, else from the store. Bearer requests and dashboard sessions alike.
pub(super) async fn valid_token(state: &AppState, hash: String) -> Result<TokenRow, ApiError> {
    let now = Instant::now();
    let wall = Timestamp::now();
    if state.tokens.sweep_due(now) {
        tokio::spawn(sweep(state.tokens.clone(), state.store.clone()));
    }
    match state.tokens.get(&hash, now) {
        Some(row) if row.valid_at(wall) => return Ok(row),
        Some(row) => return Err(refused(&row, wall)),
        None => {}
    }
    let store = state.store.clone();
    let found = blocking(move || store.token_by_hash(&hash)).await?;
    match found {
        Some(row) if row.valid_at(wall) => {
            state.tokens.insert(row.clone(), now);
            Ok(row)
        }
        Some(row) => Err(refused(&row, wall)),
        None => Err(ApiError::Unauthorized("unknown token".to_owned())),
    }
}

/// The secret of an `Authorization` value `Bearer <secret>`, the scheme in any case.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, secret) = value.trim_start().split_once(' ')?;
    let secret = secret.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !secret.is_empty()).then_some(secret)
}

/// Why `row`, no longer valid at `now`, is refused.
fn refused(row: &TokenRow, now: Timestamp) -> ApiError {
    let since = row.revoked_at.map_or_else(String::new, |t| format!(" at {t}"));
    debug_assert!(!row.valid_at(now));
    ApiError::Unauthorized(format!(
        "this token was revoked{since} (or replaced by `token rotate` and its overlap is over): \
         use its replacement, or ask for a new one"
    ))
}

/// Re-reads the valid tokens and updates the cache with what it found.
async fn sweep(cache: Arc<TokenCache>, store: Arc<dyn Store>) {
    let started = Instant::now();
    let now = Timestamp::now();
    let valid = blocking(move || store.tokens()).await.map(|tokens| {
        tokens
            .into_iter()
            .filter(|t| t.valid_at(now))
            .map(|t| (t.hash.clone(), t))
            .collect::<HashMap<_, _>>()
    });
    match valid {
        Ok(valid) => cache.swept(started, &valid),
        // The entries are not renewed and expire: lookups go to the store again.
        Err(e) => {
            tracing::warn!(error = ?e, "cannot re-read the tokens; authenticating from the database meanwhile");
            cache.sweep_failed();
        }
    }
}

/// Valid tokens by hash, each with the time of the latest database read that
/// found it valid. An entry is used while that read is younger than
/// [`TOKEN_TRUST`]; a sweep (every [`SWEEP_EVERY`] while requests come) renews
/// the entries still valid, with the row it read (so an end set by a
/// rotation is learned), and drops the others. Reads are dated when they
/// start, so a revocation committed after a read was dated is seen by the
/// next read: no entry vouched for before a revocation outlives it by more
/// than [`TOKEN_TRUST`]. Unknown and revoked tokens are not cached; the
/// caller checks a cached row's own end ([`TokenRow::valid_at`]).
#[derive(Debug)]
pub struct TokenCache {
    state: Mutex<CacheState>,
}

#[derive(Debug)]
struct CacheState {
    entries: HashMap<String, (TokenRow, Instant)>,
    /// When the last sweep started, and whether one is running.
    last_sweep: Option<Instant>,
    sweeping: bool,
}

impl Default for TokenCache {
    fn default() -> TokenCache {
        TokenCache {
            state: Mutex::new(CacheState {
                entries: HashMap::new(),
                last_sweep: None,
                sweeping: false,
            }),
        }
    }
}

impl TokenCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The valid token with this hash, if a read younger than [`TOKEN_TRUST`] vouches for it.
    pub fn get(&self, hash: &str, now: Instant) -> Option<TokenRow> {
        let state = self.lock();
        let (row, vouched) = state.entries.get(hash)?;
        (now.saturating_duration_since(*vouched) < TOKEN_TRUST).then(|| row.clone())
    }

    /// Remembers `row`, found valid by a read that started at `read_at`
    /// (the row of the latest read is kept).
    pub fn insert(&self, row: TokenRow, read_at: Instant) {
        let mut state = self.lock();
        match state.entries.entry(row.hash.clone()) {
            std::collections::hash_map::Entry::Occupied(mut entry) => {
                let (kept, vouched) = entry.get_mut();
                if read_at >= *vouched {
                    *kept = row;
                    *vouched = read_at;
                }
            }
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert((row, read_at));
            }
        }
    }

    /// Whether a sweep should start now; if so, it counts as started.
    pub fn sweep_due(&self, now: Instant) -> bool {
        let mut state = self.lock();
        let due = !state.sweeping
            && !state.entries.is_empty()
            && state
                .last_sweep
                .is_none_or(|last| now.saturating_duration_since(last) >= SWEEP_EVERY);
        if due {
            state.sweeping = true;
            state.last_sweep = Some(now);
        }
        due
    }

    /// A sweep that started at `started` found exactly the tokens of `valid`
    /// (by hash) valid, as they are there.
    pub fn swept(&self, started: Instant, valid: &HashMap<String, TokenRow>) {
        let mut state = self.lock();
        state.sweeping = false;
        state.entries.retain(|hash, (row, vouched)| match valid.get(hash) {
            Some(fresh) => {
                if started >= *vouched {
                    *row = fresh.clone();
                }
                *vouched = (*vouched).max(started);
                true
            }
            None => false,
        });
    }

    /// A sweep could not read the tokens.
    pub fn sweep_failed(&self) {
        self.lock().sweeping = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(hash: &str) -> TokenRow {
        TokenRow {
            name: format!("agent:{hash}"),
            role: Role::Agent,
            host: Some(hash.to_owned()),
            hash: hash.to_owned(),
            created_at: Timestamp::UNIX_EPOCH,
            revoked_at: None,
        }
    }

    #[test]
    fn a_cached_token_is_trusted_only_as_long_as_a_recent_read_vouches_for_it() {
        let cache = TokenCache::default();
        let t0 = Instant::now();
        cache.insert(row("a"), t0);
        cache.insert(row("b"), t0);
        assert_eq!(cache.get("a", t0 + Duration::from_millis(1900)), Some(row("a")));
        assert_eq!(cache.get("a", t0 + TOKEN_TRUST), None, "the read is too old");
        assert_eq!(cache.get("c", t0), None);
        // A sweep that started at t0 + 1 s finds a still valid, b revoked.
        assert!(cache.sweep_due(t0 + Duration::from_secs(1)));
        assert!(!cache.sweep_due(t0 + Duration::from_secs(1)), "one sweep at a time");
        cache.swept(
            t0 + Duration::from_secs(1),
            &HashMap::from([("a".to_owned(), row("a"))]),
        );
        assert_eq!(cache.get("a", t0 + Duration::from_millis(2900)), Some(row("a")));
        assert_eq!(cache.get("b", t0 + Duration::from_millis(1001)), None, "revoked");
        assert_eq!(cache.get("a", t0 + Duration::from_secs(3)), None);
        // A failed sweep renews nothing; the next may start a second later.
        assert!(!cache.sweep_due(t0 + Duration::from_millis(1500)));
        assert!(cache.sweep_due(t0 + Duration::from_secs(2)));
        cache.sweep_failed();
        assert_eq!(cache.get("a", t0 + Duration::from_secs(3)), None);
    }

    #[test]
    fn a_sweep_does_not_age_an_entry_read_after_it_started() {
        let cache = TokenCache::default();
        let t0 = Instant::now();
        cache.insert(row("a"), t0 + Duration::from_secs(5));
        cache.swept(
            t0 + Duration::from_secs(4),
            &HashMap::from([("a".to_owned(), row("a"))]),
        );
        assert_eq!(cache.get("a", t0 + Duration::from_millis(6900)), Some(row("a")));
        // An older read of the same token does not age it either.
        cache.insert(row("a"), t0);
        assert_eq!(cache.get("a", t0 + Duration::from_millis(6900)), Some(row("a")));
    }

    #[test]
    fn the_bearer_scheme_is_matched_in_any_case() {
        for value in [
            "Bearer pw_1",
            "bearer pw_1",
            "BEARER pw_1",
            "BeArEr   pw_1 ",
            " Bearer pw_1",
        ] {
            assert_eq!(bearer(value), Some("pw_1"), "{value:?}");
        }
        for value in ["Bearer", "Bearer ", "Basic pw_1", "Bearerpw_1", "Token pw_1", ""] {
            assert_eq!(bearer(value), None, "{value:?}");
        }
    }

    #[test]
    fn a_sweep_teaches_the_cache_when_a_rotated_token_ends() {
        let cache = TokenCache::default();
        let t0 = Instant::now();
        let current = TokenRow {
            name: "agent:web-3".to_owned(),
            role: Role::Agent,
            host: Some("web-3".to_owned()),
            hash: "h".to_owned(),
            created_at: Timestamp::UNIX_EPOCH,
            revoked_at: None,
        };
        cache.insert(current.clone(), t0);
        let end = Timestamp::now() + jiff::SignedDuration::from_secs(60);
        let rotated = TokenRow {
            revoked_at: Some(end),
            ..current.clone()
        };
        cache.swept(
            t0 + Duration::from_secs(1),
            &HashMap::from([("h".to_owned(), rotated.clone())]),
        );
        let cached = cache.get("h", t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(cached, rotated);
        assert!(cached.valid_at(end - jiff::SignedDuration::from_millis(1)));
        assert!(
            !cached.valid_at(end),
            "refused from its end on, however fresh the cache entry"
        );
        // An older read does not bring back the row without an end.
        cache.insert(current, t0);
        assert_eq!(cache.get("h", t0 + Duration::from_secs(2)), Some(rotated));
    }
}
