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

pub mod postgres;
pub mod sqlite;
pub(crate) mod stored;

use jiff::Timestamp;
use portwatch_common::peers::PeerSample;
use portwatch_common::wire::{Ack, Batch, ReportBody};
use portwatch_common::Proto;
use serde::{Deserialize, Serialize};

use portwatch_model::baseline::{BaselineAction, BaselineLogRow, StoredBaseline};
use portwatch_model::{
    AlertEvent, AlertRow, AlertState, Finding, HistoryCursor, HistoryWindow, HostRow, Kind, ListenerRow, ProbeVerdict,
    Role,
};
use portwatch_model::{PeerPoint, PeersCursor};

/// A stored token: only the SHA-256 of its secret is kept.
///
/// A name may have several tokens: at most one current (`revoked_at` unset),
/// and those it replaced, which are revoked or end at a time still to come
/// (the overlap of a rotation, [`Tokens::rotate_token`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRow {
    /// Its name (`agent:web-3` for agent tokens, chosen by the operator otherwise),
    /// shared by the tokens that replaced one another.
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
    /// When it stops authenticating: in the past for a revoked (or expired)
    /// token, which authenticates nothing; in the future for a token a
    /// rotation replaced, which works until then; `None` while it is current.
    pub revoked_at: Option<Timestamp>,
}

impl TokenRow {
    /// Whether it authenticates at `now` (not revoked, or revoked only later).
    pub fn valid_at(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none_or(|end| end > now)
    }

    /// Its state at `now`.
    pub fn state(&self, now: Timestamp) -> TokenState {
        match self.revoked_at {
            None => TokenState::Active,
            Some(end) if end > now => TokenState::Expires(end),
            Some(end) => TokenState::Revoked(end),
        }
    }
}

/// Where a token is in its life, as of a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    /// The current token of its name; it authenticates until revoked or rotated.
    Active,
    /// Replaced by a rotation: it still authenticates, until then.
    Expires(Timestamp),
    /// It authenticates nothing since then (revoked, or its overlap ended).
    Revoked(Timestamp),
}

impl TokenState {
    /// `active`, `expiring` or `revoked`.
    pub fn name(self) -> &'static str {
        match self {
            TokenState::Active => "active",
            TokenState::Expires(_) => "expiring",
            TokenState::Revoked(_) => "revoked",
        }
    }
}

impl std::fmt::Display for TokenState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenState::Active => f.write_str("active"),
            TokenState::Expires(at) => write!(f, "expires {at}"),
            TokenState::Revoked(at) => write!(f, "revoked {at}"),
        }
    }
}

/// What [`Tokens::rotate_token`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    /// The new current token.
    pub new: TokenRow,
    /// The tokens it replaced, as they are now: each ends at the rotation's
    /// `until` (or before, where it was to end sooner already).
    pub replaced: Vec<TokenRow>,
}

impl Rotated {
    /// What rotating the tokens `valid` (those of `name` that authenticate
    /// at `at`, oldest first) to a new one whose secret hashes to `hash`
    /// makes: the new current token, of the role and host of the current one
    /// (failing one, of the latest in an overlap), and the replaced ones
    /// ending at `until` (or sooner, where they were to end sooner); `None`
    /// when there is none to rotate.
    pub fn of(valid: Vec<TokenRow>, name: &str, hash: &str, at: Timestamp, until: Timestamp) -> Option<Rotated> {
        let model = valid.iter().find(|t| t.revoked_at.is_none()).or(valid.last())?;
        let new = TokenRow {
            name: name.to_owned(),
            role: model.role,
            host: model.host.clone(),
            hash: hash.to_owned(),
            created_at: at,
            revoked_at: None,
        };
        let replaced = valid
            .into_iter()
            .map(|mut t| {
                t.revoked_at = Some(t.revoked_at.map_or(until, |end| end.min(until)));
                t
            })
            .collect();
        Some(Rotated { new, replaced })
    }
}

/// One row of the alert outbox: its id, and the event, or why this build cannot read it.
pub type OutboxEvent = (i64, Result<AlertEvent, String>);

pub use crate::lifecycle::SinkProgress;

/// What acknowledging an alert did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckOutcome {
    /// It is acknowledged now.
    Acknowledged(AlertRow),
    /// It was not open (acknowledged already, or resolved).
    NotOpen(AlertRow),
    /// No alert has that number.
    NotFound,
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
    /// The database's file system is full. The write was rolled back whole
    /// (nothing of it is stored) and the store stays usable: the same write
    /// succeeds once there is room.
    #[error("{}", disk_full_message(path.as_deref()))]
    DiskFull {
        /// The database file, where known.
        path: Option<String>,
    },
    /// The database could not take the call now: locked by another writer
    /// for longer than the store waits, or (on a server) a transaction that
    /// conflicted with a concurrent one and was rolled back whole. The same
    /// call may succeed when made again.
    #[error("database busy: {0}")]
    Busy(String),
    /// The database cannot be reached (a server down, a connection lost).
    /// Nothing of the call was stored; it may succeed once it is back.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database failed (corruption, I/O error, ...).
    #[error("database error: {0}")]
    Database(String),
}

impl StoreError {
    /// The same error again (the answer of each batch of a group that failed whole).
    pub fn again(&self) -> StoreError {
        match self {
            StoreError::Open { path, message } => StoreError::Open {
                path: path.clone(),
                message: message.clone(),
            },
            StoreError::Exists(what) => StoreError::Exists(what.clone()),
            StoreError::DiskFull { path } => StoreError::DiskFull { path: path.clone() },
            StoreError::Busy(message) => StoreError::Busy(message.clone()),
            StoreError::Unavailable(message) => StoreError::Unavailable(message.clone()),
            StoreError::Database(message) => StoreError::Database(message.clone()),
        }
    }

    /// Whether the same call may succeed later without a change to the call:
    /// after a full disk, once space is freed; when a busy or unreachable
    /// database takes it again. Other failures ([`StoreError::Database`],
    /// corruption among them) are taken as lasting.
    pub fn retry_helps(&self) -> bool {
        matches!(
            self,
            StoreError::DiskFull { .. } | StoreError::Busy(_) | StoreError::Unavailable(_)
        )
    }
}

/// The message of [`StoreError::DiskFull`].
fn disk_full_message(path: Option<&str>) -> String {
    let file = path.map_or_else(|| "the database".to_owned(), |p| format!("the database {p}"));
    format!(
        "disk full: cannot write {file}: free space on its file system (nothing of this write was stored; \
         it succeeds once there is room)"
    )
}

/// Listeners a batch carries, in its snapshots (and snapshot parts) and deltas:
/// what its commit costs.
pub(crate) fn listeners_in(batch: &Batch) -> usize {
    batch
        .reports
        .iter()
        .map(|report| match &report.body {
            ReportBody::Snapshot { listeners, .. } | ReportBody::SnapshotPart { listeners, .. } => listeners.len(),
            ReportBody::Delta { opened, closed } => opened.len() + closed.len(),
        })
        .fold(0, usize::saturating_add)
}

/// Where [`HistoryWrites::ingest_queued`] sends a batch's answer.
pub type IngestDone = Box<dyn FnOnce(Result<Ack, StoreError>) + Send>;

/// Writes a host's history: batches of its agent's reports, applied by the
/// history rules ([`crate::history`]) and acknowledged once committed.
pub trait HistoryWrites: Send + Sync {
    /// Applies a validated batch (see [`Batch::validate`]) of the host it
    /// names, in one transaction, and acknowledges what is committed.
    ///
    /// - A report already stored (same session, `seq` at or below the last
    ///   stored) is skipped: sending a batch twice stores it once.
    /// - Every report is dated by the [`crate::clock`] rules: its
    ///   `observed_at`, unless that is beyond the tolerance in the future,
    ///   before the backlog window, or before the host's last stored report.
    /// - A snapshot is always accepted: it closes the host's open listeners it
    ///   does not contain and opens those it contains that were not open, at
    ///   its time, and keeps the rest untouched (an agent restart
    ///   makes no false event); it starts the session it carries.
    /// - A delta of the current session with the next `seq` is applied; any
    ///   other delta (a gap, an unknown session) stops the batch there and the
    ///   answer asks for a resync.
    /// - The host's `last_seen` becomes `received_at` (heartbeats included),
    ///   its facts those of its latest snapshot, and `dropped` is added to
    ///   its dropped count; the clock skew the batch measures, if any, is
    ///   kept (heartbeats included).
    ///
    /// Blocks until the batch is committed (see [`HistoryWrites::ingest_queued`]).
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

    /// [`HistoryWrites::ingest`] without waiting, for async callers: queues the batch
    /// and returns at once; `done` gets the answer `ingest` gives, on
    /// another thread, once the batch is committed (or has failed). A store
    /// may commit queued batches together (the SQLite store does).
    fn ingest_queued(&self, batch: Batch, received_at: Timestamp, done: IngestDone);

    /// Writes what the store keeps in memory of heartbeats (the PostgreSQL
    /// store keeps them for a flush window, see `postgres::heartbeat`);
    /// nothing for a store that writes every heartbeat with its group
    /// (SQLite). A collector calls it once it has stopped taking batches.
    fn flush_heartbeats(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// What the store did with heartbeats so far; `None` for a store that
    /// writes every heartbeat with its group (SQLite).
    fn heartbeat_stats(&self) -> Option<HeartbeatStats> {
        None
    }
}

/// What a store that keeps heartbeats in memory did with them
/// ([`HistoryWrites::heartbeat_stats`]), since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeartbeatStats {
    /// Heartbeats answered and kept in memory, not written.
    pub kept: u64,
    /// Flushes that wrote (one statement each).
    pub flushes: u64,
    /// Host rows the flushes changed.
    pub rows: u64,
    /// Flushes that failed (what they held was kept for the next).
    pub failures: u64,
}

/// Reads history: hosts, the listeners of a moment, intervals over a window.
/// Answers are ordered as each method says, whatever the backend.
pub trait HistoryReads: Send + Sync {
    /// Every host, by name, with its status as of `now`.
    fn hosts(&self, now: Timestamp) -> Result<Vec<HostRow>, StoreError>;

    /// The host `name`, with its status as of `now`; `None` if it never reported.
    fn host(&self, name: &str, now: Timestamp) -> Result<Option<HostRow>, StoreError> {
        Ok(self.hosts(now)?.into_iter().find(|h| h.host == name))
    }

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

    /// One page of [`HistoryReads::history`]: at most `limit` intervals, by opening
    /// time then id, after `after` (the cursor of the previous page); and
    /// the cursor of the next page when there are more. A page is one
    /// bounded read, however long the host's history.
    fn history_page(
        &self,
        host: &str,
        window: HistoryWindow,
        after: Option<HistoryCursor>,
        limit: usize,
    ) -> Result<(Vec<ListenerRow>, Option<HistoryCursor>), StoreError>;

    /// Every interval of every host that was open at any time in
    /// `[since, until]`, by opening time, handed to `each` one at a time
    /// without holding them all; stops early when `each` returns `false`.
    /// Read in chunks, each its own short read, so a slow `each` (a slow
    /// client) holds no read open: an interval that closes meanwhile may be
    /// handed over open.
    fn export(
        &self,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
        each: &mut dyn FnMut(ListenerRow) -> bool,
    ) -> Result<(), StoreError>;

    /// Ports (by protocol) whose first interval ever, fleet-wide (on
    /// `host` if given), opened at or after `since`: when, and where.
    fn first_seen_ports(
        &self,
        since: Timestamp,
        host: Option<&str>,
    ) -> Result<Vec<portwatch_model::trend::FirstSeen>, StoreError>;
}

/// The tokens that authenticate agents, readers and admins (only hashes are kept).
pub trait Tokens: Send + Sync {
    /// Stores a new token; [`StoreError::Exists`] when its secret is taken,
    /// or when its name has a token that still authenticates at its
    /// `created_at` (replace that one with [`Tokens::rotate_token`]). A name
    /// whose tokens are all revoked or expired may be used again.
    fn create_token(&self, token: &TokenRow) -> Result<(), StoreError>;

    /// The token whose secret hashes to `hash`, revoked or not.
    fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>, StoreError>;

    /// Every token, by name, then by creation (oldest first).
    fn tokens(&self) -> Result<Vec<TokenRow>, StoreError>;

    /// Revokes at `at` every token named `name` that still authenticates then
    /// (the current one and those in a rotation's overlap); `false` when there
    /// is none.
    fn revoke_token(&self, name: &str, at: Timestamp) -> Result<bool, StoreError>;

    /// Replaces the tokens named `name` that authenticate at `at` by a new
    /// current one, of the same role and host, whose secret hashes to `hash`,
    /// in one transaction: the replaced ones go on authenticating until
    /// `until` (the overlap; those due to end sooner keep their end), then
    /// not. `None`, and nothing changed, when no token of that name
    /// authenticates at `at` (create one instead).
    fn rotate_token(
        &self,
        name: &str,
        hash: &str,
        at: Timestamp,
        until: Timestamp,
    ) -> Result<Option<Rotated>, StoreError>;
}

/// Baselines as applied, and the log of their changes (who, when, why).
pub trait Baselines: Send + Sync {
    /// Stores baseline `name` with `source` (already validated), applied by
    /// `actor` at `at` for the reason `comment`, and logs the change; the
    /// same source again changes and logs nothing.
    fn put_baseline(
        &self,
        name: &str,
        source: &str,
        actor: &str,
        comment: Option<&str>,
        at: Timestamp,
    ) -> Result<BaselineAction, StoreError>;

    /// Removes baseline `name` and logs it; `false` when there is none.
    fn remove_baseline(
        &self,
        name: &str,
        actor: &str,
        comment: Option<&str>,
        at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Every baseline, by name.
    fn baselines(&self) -> Result<Vec<StoredBaseline>, StoreError>;

    /// The changes to baseline `name` (to every baseline if `None`), oldest first.
    fn baseline_log(&self, name: Option<&str>) -> Result<Vec<BaselineLogRow>, StoreError>;
}

/// Alerts: each finding's condition from when it was first seen to when it cleared.
pub trait Alerts: Send + Sync {
    /// Brings the alerts of `hosts` in line with their `findings` as of
    /// `now`, in one transaction: reads the unresolved alerts of `hosts` and
    /// carries out what [`crate::lifecycle::cap::plan`] makes of them, the
    /// findings and `max_open`. A finding to alert on opens an alert unless
    /// one of its key is unresolved already (another collector's), an alert
    /// to resolve is resolved, each with its event in the outbox; a summary
    /// whose count changed is rewritten in place, with no event. Returns the
    /// events, by alert id.
    fn sync_alerts(
        &self,
        hosts: &[String],
        findings: &[Finding],
        max_open: usize,
        now: Timestamp,
    ) -> Result<Vec<AlertEvent>, StoreError>;

    /// Alerts in `state` (every state if `None`) of `host` (every host if
    /// `None`), newest first, at most `limit`.
    fn alerts(&self, state: Option<AlertState>, host: Option<&str>, limit: usize) -> Result<Vec<AlertRow>, StoreError>;

    /// Acknowledges open alert `id` for `actor`, with `comment`.
    fn ack_alert(&self, id: i64, actor: &str, comment: &str, at: Timestamp) -> Result<AckOutcome, StoreError>;

    /// The (host, key) of every unresolved alert.
    fn active_alert_keys(&self) -> Result<Vec<(String, String)>, StoreError>;

    /// The number of unresolved alerts by kind and state.
    fn active_alert_counts(&self) -> Result<Vec<(Kind, AlertState, u64)>, StoreError>;
}

/// The alert outbox: every change of an alert, in an order each sink follows
/// with a cursor, and how far each sink has come.
pub trait Outbox: Send + Sync {
    /// Alert changes after event `after`, oldest first, at most `limit`,
    /// each with its event id (the sinks' outbox).
    /// An event this build cannot read (another version wrote it) comes as `Err` with why.
    fn alert_events_after(&self, after: i64, limit: usize) -> Result<Vec<OutboxEvent>, StoreError>;

    /// The ids of the alert changes after event `after`, oldest first, at
    /// most `limit`, each with its alert's host: what a sink takes in turns
    /// ([`crate::alert::outbox`]).
    fn alert_event_hosts_after(&self, after: i64, limit: usize) -> Result<Vec<(i64, String)>, StoreError>;

    /// The alert change `id` of the outbox; `None` if there is none.
    fn alert_event(&self, id: i64) -> Result<Option<OutboxEvent>, StoreError>;

    /// How far `sink` has come in the outbox; a sink not seen before starts
    /// at the newest event (it is not flooded with history).
    fn sink_progress(&self, sink: &str) -> Result<SinkProgress, StoreError>;

    /// Records that `sink` is done with every event up to `cursor` (which
    /// only moves forward) and with the events `done` after it; what was
    /// recorded done at or before the cursor is forgotten.
    fn set_sink_progress(&self, sink: &str, cursor: i64, done: &[i64]) -> Result<(), StoreError>;
}

/// The store's own upkeep.
pub trait Maintenance: Send + Sync {
    /// The store's size on disk, in bytes.
    fn size_bytes(&self) -> Result<u64, StoreError>;

    /// What [`Maintenance::prune`] would remove under `plan` if it ran to
    /// the end now, removing nothing. `alerts_held` counts the expired
    /// alerts kept because a sink has not delivered an event of theirs.
    fn prune_count(&self, plan: &PrunePlan) -> Result<Pruned, StoreError>;

    /// Removes one batch of what `plan` says is expired (see
    /// [`crate::retention`]): at most `batch_rows` rows in one short
    /// transaction of the store's writer, the same writer ingest uses, so
    /// a batch of reports waits for one batch at most. `cursor` says where
    /// the pass stands; call again (pausing between calls, so that ingest
    /// gets the writer) until [`PruneCursor::done`]. Returns what this call
    /// removed. A record that stops being expired between two calls (an
    /// alert whose event a sink has not delivered) is left alone; nothing
    /// that is not expired under `plan` is ever removed.
    fn prune(&self, plan: &PrunePlan, cursor: &mut PruneCursor, batch_rows: usize) -> Result<Pruned, StoreError>;

    /// Gives back to the file system at most `pages` of the space pruning
    /// freed (SQLite: `PRAGMA incremental_vacuum`, when the database was
    /// made with `auto_vacuum = INCREMENTAL`; an older database keeps its
    /// freed pages and reuses them for new rows instead). Returns the freed
    /// pages still kept in the file.
    fn reclaim(&self, pages: u32) -> Result<u64, StoreError>;

    /// Removes host `name` for good: its intervals, staged snapshot parts,
    /// alerts and their outbox events (delivered or not), its agent tokens,
    /// and its fleet-wide first sightings of ports (each taken from the
    /// other hosts' kept intervals instead, or dropped when none has the
    /// port). One transaction of the writer: a batch of the host queued
    /// meanwhile is applied after it, as the first batch of a new host of
    /// that name (a delta asks its agent for a snapshot; its token is gone,
    /// so the next batch is refused). `None` when no host has that name.
    fn forget_host(&self, name: &str) -> Result<Option<Forgotten>, StoreError>;
}

/// Leases: what must run in one collector at a time (the drift sweep, each
/// alert sink, the pruner) runs where its lease is held. A lease is a row
/// (name, holder, expiry): taken when free or expired, kept by renewing it
/// before it expires, given up by letting it expire or releasing it.
pub trait Leases: Send + Sync {
    /// Takes lease `name` for `holder` until `until`, or renews it, if at
    /// `now` it is free, expired, or `holder`'s already; whether `holder`
    /// holds it after the call. Of holders racing for a free lease, one gets it.
    fn hold_lease(&self, name: &str, holder: &str, now: Timestamp, until: Timestamp) -> Result<bool, StoreError>;

    /// Gives lease `name` up if `holder` holds it (another takes it at once).
    fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;

    /// The holders of the leases that have not expired at `now`, by name,
    /// each once: the collectors serving the database now.
    fn live_holders(&self, now: Timestamp) -> Result<Vec<String>, StoreError>;
}

pub use crate::retention::PrunePlan;

/// What pruning removed (or, from [`Maintenance::prune_count`], would remove).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    /// Closed listener intervals.
    pub intervals: u64,
    /// Process identities no interval names any more.
    pub programs: u64,
    /// Resolved alerts.
    pub alerts: u64,
    /// Their events in the outbox.
    pub alert_events: u64,
    /// Baseline log entries.
    pub baseline_log: u64,
    /// Expired alerts kept because a sink has not delivered one of their events.
    pub alerts_held: u64,
    /// Points of listeners' peers time series.
    pub peer_points: u64,
}

impl Pruned {
    /// Rows removed, all kinds together.
    pub fn removed(&self) -> u64 {
        self.intervals + self.programs + self.alerts + self.alert_events + self.baseline_log + self.peer_points
    }
}

impl std::ops::AddAssign for Pruned {
    fn add_assign(&mut self, other: Pruned) {
        self.intervals += other.intervals;
        self.programs += other.programs;
        self.alerts += other.alerts;
        self.alert_events += other.alert_events;
        self.baseline_log += other.baseline_log;
        self.alerts_held += other.alerts_held;
        self.peer_points += other.peer_points;
    }
}

/// Where a pass of [`Maintenance::prune`] stands; a new pass starts from
/// [`PruneCursor::default`]. Its contents are the backend's.
#[derive(Debug, Clone, Default)]
pub struct PruneCursor {
    /// The step the pass is at.
    pub(crate) stage: PruneStage,
    /// Where the step stands (a host id, an alert id).
    pub(crate) after: i64,
    /// Programs found unnamed by any interval, still to check and remove.
    pub(crate) programs: Vec<i64>,
    /// The greatest interval id when those programs were found.
    pub(crate) intervals_seen: i64,
}

/// The steps of a pass, in order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum PruneStage {
    /// Closed intervals, host by host.
    #[default]
    Intervals,
    /// Resolved alerts and their events.
    Alerts,
    /// The baseline log.
    BaselineLog,
    /// Points of peers time series.
    Peers,
    /// Programs no interval names.
    Programs,
    /// Nothing left.
    Done,
}

impl PruneCursor {
    /// Whether the pass is over.
    pub fn done(&self) -> bool {
        self.stage == PruneStage::Done
    }
}

/// What [`Maintenance::forget_host`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Forgotten {
    /// Listener intervals, open and closed.
    pub intervals: u64,
    /// Alerts, whatever their state.
    pub alerts: u64,
    /// Their events in the outbox.
    pub alert_events: u64,
    /// Agent tokens (every token of `agent:NAME`, and any other of that host).
    pub tokens: u64,
    /// Parts of a snapshot in progress.
    pub snapshot_parts: u64,
    /// Ports whose first sighting was this host's, now another host's.
    pub first_seen_moved: u64,
    /// Ports whose first sighting was this host's and that no other host has.
    pub first_seen_dropped: u64,
    /// Points of its listeners' peers time series.
    #[serde(default)]
    pub peer_points: u64,
}

/// The view from outside: the latest probe verdict of each listener place of
/// each host (see `crate::probe`).
pub trait Probes: Send + Sync {
    /// Replaces every verdict of `host` by `verdicts` (the places its latest
    /// probe judged: a place no longer listening loses its verdict), in one
    /// transaction.
    fn replace_probe_verdicts(&self, host: &str, verdicts: &[ProbeVerdict]) -> Result<(), StoreError>;

    /// The verdicts of `host`, by place.
    fn probe_verdicts(&self, host: &str) -> Result<Vec<ProbeVerdict>, StoreError>;

    /// The hosts with a verdict made at or after `since`, by name.
    fn probed_hosts(&self, since: Timestamp) -> Result<Vec<String>, StoreError>;
}

/// Inbound peers per listener: each host's listeners' peer summaries as a
/// time series, at most one point per listener place per minute (a later
/// summary of the same minute replaces an earlier one), pruned with the
/// history (`[retention] history`) and removed with a forgotten host.
pub trait Peers: Send + Sync {
    /// Records `samples` of `host`, each dated the earlier of its own time
    /// and `now` (a clock ahead cannot date points in the future, beyond
    /// retention), in one transaction. A sample sent again changes nothing.
    fn record_peers(&self, host: &str, samples: &[PeerSample], now: Timestamp) -> Result<(), StoreError>;

    /// Each listener place's latest point at or before `at` (of `port` when
    /// given), by place.
    fn peers_at(&self, host: &str, port: Option<u16>, at: Timestamp) -> Result<Vec<PeerPoint>, StoreError>;

    /// The points of `host` dated in the query's window, of its port when
    /// given, by time then place (network namespace, port, address), from
    /// after its cursor, at most its limit.
    fn peers_between(&self, host: &str, query: &PeersQuery) -> Result<Vec<PeerPoint>, StoreError>;
}

/// What [`Peers::peers_between`] asks.
#[derive(Debug, Clone, Default)]
pub struct PeersQuery {
    /// Only this port.
    pub port: Option<u16>,
    /// The window's start (inclusive).
    pub since: Option<Timestamp>,
    /// The window's end (inclusive).
    pub until: Option<Timestamp>,
    /// Where the previous page ended.
    pub after: Option<PeersCursor>,
    /// Most points answered.
    pub limit: usize,
}

/// The history store: every concern of the collector's database. A backend
/// implements each concern's trait; this one is then implemented for it.
/// Callers that need one concern may take that trait alone (`Arc<dyn Store>`
/// coerces to `Arc<dyn Tokens>`, ...).
pub trait Store:
    HistoryWrites + HistoryReads + Tokens + Baselines + Alerts + Outbox + Maintenance + Leases + Probes + Peers + 'static
{
}

impl<T> Store for T where
    T: HistoryWrites
        + HistoryReads
        + Tokens
        + Baselines
        + Alerts
        + Outbox
        + Maintenance
        + Leases
        + Probes
        + Peers
        + 'static
{
}
