//! What the router tests share: a fresh SQLite store in a temp directory,
//! tokens made in it as `portwatch-collector token create` makes them, the
//! router on it with an agent's, a reader's and an admin's token, and a call
//! of the router (no socket) that reads its answer.
// Test helpers panic on failure like the tests do.
#![allow(clippy::unwrap_used, dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use jiff::Timestamp;
use portwatch_collector::api::{router, AppState};
use portwatch_collector::store::sqlite::SqliteStore;
use portwatch_collector::store::{TokenRow, Tokens};
use portwatch_collector::token;
use portwatch_model::Role;
use tower::ServiceExt;

/// A new, empty store in `pw-{prefix}-{tag}-{pid}` under the temp dir
/// (emptied first); the directory, for the caller to remove.
pub fn temp_store(prefix: &str, tag: &str) -> (PathBuf, Arc<SqliteStore>) {
    let dir = std::env::temp_dir().join(format!("pw-{prefix}-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = Arc::new(SqliteStore::open(&dir.join("collector.db")).unwrap());
    (dir, store)
}

/// A new token `name` of `role` (an agent's for `host`) in `store`: its secret.
pub fn make_token(store: &SqliteStore, name: &str, role: Role, host: Option<&str>) -> String {
    let secret = token::generate().unwrap();
    store
        .create_token(&TokenRow {
            name: name.into(),
            role,
            host: host.map(str::to_owned),
            hash: token::hash(&secret),
            created_at: Timestamp::now(),
            revoked_at: None,
        })
        .unwrap();
    secret
}

/// The router on a fresh store (see [`temp_store`]), and the secrets of
/// three tokens made in it; the directory goes when the fixture is dropped.
pub struct Fixture {
    pub app: Router,
    pub store: Arc<SqliteStore>,
    pub dir: PathBuf,
    /// `agent:web-3`, web-3's agent.
    pub agent: String,
    /// `ops`, a read token.
    pub reader: String,
    /// `root`, an admin token.
    pub admin: String,
}

impl Fixture {
    /// The router with the default state.
    pub fn new(prefix: &str, tag: &str) -> Fixture {
        Fixture::with(prefix, tag, |state| state)
    }

    /// The router with the state `configure` makes of the default one.
    pub fn with(prefix: &str, tag: &str, configure: impl FnOnce(AppState) -> AppState) -> Fixture {
        let (dir, store) = temp_store(prefix, tag);
        let agent = make_token(&store, "agent:web-3", Role::Agent, Some("web-3"));
        let reader = make_token(&store, "ops", Role::Read, None);
        let admin = make_token(&store, "root", Role::Admin, None);
        let app = router(configure(AppState::new(store.clone())));
        Fixture {
            app,
            store,
            dir,
            agent,
            reader,
            admin,
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The answer of `app` to `request`: status and body as JSON (or as a JSON string of its text).
pub async fn call(app: &Router, request: Request<Body>) -> (StatusCode, serde_json::Value) {
    let (status, _, json) = answer(app, request).await;
    (status, json)
}

/// The answer of `app` to `request`: status, headers, and body as JSON (or as a JSON string of its text).
pub async fn answer(app: &Router, request: Request<Body>) -> (StatusCode, HeaderMap, serde_json::Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, headers, json)
}
