//! What the router tests share: a fresh SQLite store in a temp directory,
//! and tokens made in it as `portwatch-collector token create` makes them.
// Test helpers panic on failure like the tests do.
#![allow(clippy::unwrap_used, dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use jiff::Timestamp;
use portwatch_collector::store::sqlite::SqliteStore;
use portwatch_collector::store::{TokenRow, Tokens};
use portwatch_collector::token;
use portwatch_model::Role;

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
