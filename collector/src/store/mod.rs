//! The history store: what the collector keeps, behind one trait so that a
//! PostgreSQL backend adds a module, not a rewrite.
//!
//! History is one row per **listener interval**: a listener (socket and its
//! owners, see [`portwatch_common::Listener`]) of a host, from when it was
//! first observed open to when it was observed gone (`closed_at` null while
//! open). Heartbeats write no row; storage grows with changes only.
//!
//! Every method is synchronous and may block on I/O: async callers run them
//! on a blocking thread (`tokio::task::spawn_blocking`).

pub mod sqlite;

use std::collections::BTreeMap;

use jiff::Timestamp;
use portwatch_common::wire::{Ack, Batch};
use portwatch_common::{Listener, Proto};
use serde::{Deserialize, Serialize};

/// One listener interval, as every query returns it. In JSON the listener's
/// fields (`proto`, `local_addr`, `processes`, ... as the scanner names them)
/// stand beside `host`, `opened_at` and `closed_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerRow {
    /// Host name.
    pub host: String,
    /// The listener: socket and owners.
    #[serde(flatten)]
    pub listener: Listener,
    /// When the agent first observed it open.
    pub opened_at: Timestamp,
    /// When the agent observed it gone; `None` while open.
    pub closed_at: Option<Timestamp>,
}

/// Whether a host's agent is reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostStatus {
    /// Heard from within the last three intervals.
    Up,
    /// Not heard from for three intervals or more.
    Silent,
}

/// A host as `hosts` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRow {
    /// Host name.
    pub host: String,
    /// Up or silent, as of the query's `now`.
    pub status: HostStatus,
    /// When the collector first heard from it.
    pub first_seen: Timestamp,
    /// When the collector last heard from it.
    pub last_seen: Timestamp,
    /// The agent's version.
    pub agent_version: Option<String>,
    /// The agent's scan interval, in milliseconds.
    pub interval_ms: u64,
    /// Operating system.
    pub os: Option<String>,
    /// Kernel release.
    pub kernel: Option<String>,
    /// Boot time.
    pub boot_time: Option<Timestamp>,
    /// Tags from the agent's config.
    pub tags: BTreeMap<String, String>,
    /// Listeners open now.
    pub listeners: u64,
    /// Reports the agent dropped from a full spool, in all.
    pub dropped_reports: u64,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Writes its own host's reports; reads nothing.
    Agent,
    /// Reads history.
    Read,
    /// Reads history and manages tokens.
    Admin,
}

impl Role {
    /// The lowercase name (`agent`, `read`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }
}

/// A stored token: only the SHA-256 of its secret is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRow {
    /// Unique name (`agent:web-3` for agent tokens, chosen by the operator otherwise).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The host an agent token writes for; `None` for other roles.
    pub host: Option<String>,
    /// Hex SHA-256 of the secret (never the secret itself).
    #[serde(skip_serializing)]
    pub hash: String,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it was revoked; a revoked token authenticates nothing.
    pub revoked_at: Option<Timestamp>,
}

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or migrated.
    #[error("cannot open the database {path}: {message}")]
    Open {
        /// The file.
        path: String,
        /// Why, and what to do.
        message: String,
    },
    /// A name that must be unique is taken (token name).
    #[error("{0} already exists")]
    Exists(String),
    /// The database failed (full disk, corruption, ...).
    #[error("database error: {0}")]
    Database(String),
}

/// Where [`Store::ingest_queued`] sends a batch's answer.
pub type IngestDone = Box<dyn FnOnce(Result<Ack, StoreError>) + Send>;

/// The history store.
pub trait Store: Send + Sync + 'static {
    /// Applies a validated batch (see [`Batch::validate`]) of the host it
    /// names, in one transaction, and acknowledges what is committed.
    ///
    /// - A report already stored (same session, `seq` at or below the last
    ///   stored) is skipped: sending a batch twice stores it once.
    /// - A snapshot is always accepted: it closes the host's open listeners it
    ///   does not contain and opens those it contains that were not open, at
    ///   its `observed_at`, and keeps the rest untouched (an agent restart
    ///   makes no false event); it starts the session it carries.
    /// - A delta of the current session with the next `seq` is applied; any
    ///   other delta (a gap, an unknown session) stops the batch there and the
    ///   answer asks for a resync.
    /// - The host's `last_seen` becomes `received_at` (heartbeats included),
    ///   its facts those of its latest snapshot, and `dropped` is added to
    ///   its dropped count.
    ///
    /// Blocks until the batch is committed (see [`Store::ingest_queued`]).
    fn ingest(&self, batch: &Batch, received_at: Timestamp) -> Result<Ack, StoreError> {
        let (sender, answer) = std::sync::mpsc::channel();
        self.ingest_queued(
            batch.clone(),
            received_at,
            Box::new(move |result| {
                let _ = sender.send(result);
            }),
        );
        answer.recv().unwrap_or_else(|_| {
            Err(StoreError::Database(
                "the batch was dropped before it was stored".to_owned(),
            ))
        })
    }

    /// [`Store::ingest`] without waiting, for async callers: queues the batch
    /// and returns at once; `done` gets the answer `ingest` gives, on
    /// another thread, once the batch is committed (or has failed). A store
    /// may commit queued batches together (the SQLite store does).
    fn ingest_queued(&self, batch: Batch, received_at: Timestamp, done: IngestDone);

    /// Every host, by name, with its status as of `now`.
    fn hosts(&self, now: Timestamp) -> Result<Vec<HostRow>, StoreError>;

    /// The listeners open on `host` at `at` (opened at or before, not closed
    /// at or before), by port.
    fn listeners_at(&self, host: &str, at: Timestamp) -> Result<Vec<ListenerRow>, StoreError>;

    /// Fleet-wide, the listeners on `port` (of `proto` if given) open at `at`, by host.
    fn who(&self, port: u16, proto: Option<Proto>, at: Timestamp) -> Result<Vec<ListenerRow>, StoreError>;

    /// The intervals of `host` (on `port` if given) that were open at any
    /// time in `[since, until]`, by opening time.
    fn history(
        &self,
        host: &str,
        port: Option<u16>,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
    ) -> Result<Vec<ListenerRow>, StoreError>;

    /// Every interval of every host that was open at any time in
    /// `[since, until]`, by opening time, handed to `each` one at a time
    /// without holding them all; stops early when `each` returns `false`.
    fn export(
        &self,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
        each: &mut dyn FnMut(ListenerRow) -> bool,
    ) -> Result<(), StoreError>;

    /// Stores a new token.
    fn create_token(&self, token: &TokenRow) -> Result<(), StoreError>;

    /// The token whose secret hashes to `hash`, revoked or not.
    fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>, StoreError>;

    /// Every token, by name.
    fn tokens(&self) -> Result<Vec<TokenRow>, StoreError>;

    /// Revokes the token `name` at `at`; `false` when there is none (or it was revoked already).
    fn revoke_token(&self, name: &str, at: Timestamp) -> Result<bool, StoreError>;
}
