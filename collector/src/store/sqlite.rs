//! The SQLite store: one database file, written by one connection, read by a
//! small pool of others.
//!
//! # Concurrency
//!
//! A rusqlite [`Connection`] is `Send` but not `Sync`. Every write (ingest,
//! token changes) goes through the single writer connection behind a
//! [`Mutex`]: SQLite allows one writer at a time anyway, and one connection
//! keeps its prepared statements warm. Reads take a connection of their own
//! from a pool (opened on demand, at most [`MAX_IDLE_READERS`] kept idle):
//! in WAL mode readers neither wait for the writer nor block it, and each
//! sees the last committed state. Methods block; async callers run them in
//! `spawn_blocking`.
//!
//! **Group commit.** [`HistoryWrites::ingest_queued`] (and [`HistoryWrites::ingest`], which
//! waits for it) puts a batch in a queue; one committer thread takes the
//! writer and commits every queued batch (at most [`MAX_GROUP`]) in one
//! transaction, each in a savepoint of its own (a batch that fails rolls
//! back alone and gets its error), and answers each batch only once that
//! transaction has committed. One commit (one fsync) serves every agent that
//! sent meanwhile, and no request thread waits on the writer's lock: a
//! fleet's reports and heartbeats cost one transaction per group, not one
//! per request. The result is that of committing the batches one after
//! another in queue order, except that small batches (heartbeats, deltas,
//! small snapshots: at most [`SMALL_BATCH_LISTENERS`] listeners) may be
//! committed before large ones that queued earlier, never before an earlier
//! batch of their own host. Groups alternate: one of the small batches
//! waiting (in queue order), then one in queue order (a large batch, or
//! batches up to [`GROUP_LISTENERS`] listeners). So a heartbeat (of a host
//! with no large batch queued) waits for at most one group in queue order,
//! the one being committed when it arrives or the next, besides the small
//! batches queued before it: one large batch's transaction, not every large
//! batch queued before it.
//!
//! # Durability
//!
//! The file is in WAL mode. A transaction that stores any report commits
//! with `synchronous = FULL`: the WAL is fsynced before [`HistoryWrites::ingest`]
//! returns, so a report acknowledged to an agent (which then forgets it)
//! survives a power loss. A transaction of heartbeats only (no report, only
//! `last_seen` and the dropped count) commits with `synchronous = NORMAL`,
//! without an fsync of its own: losing the last seconds of `last_seen` to a
//! power cut loses no history, and heartbeats are most of a steady fleet's
//! traffic. (The next FULL commit syncs the WAL frames before it too.)
//! Token changes commit with FULL.
//!
//! **A full disk** fails the write with [`StoreError::DiskFull`] (naming the
//! file), whether SQLite says `SQLITE_FULL` or an I/O error while the file
//! system has no space left. The transaction is rolled back whole, also when
//! SQLite already rolled it back itself (the next batches of the group are
//! then not applied outside it), so the writer is left with no transaction
//! open and the next write succeeds once space is freed.
//!
//! # Schema
//!
//! Versioned by `PRAGMA user_version`: migration `n` (an embedded file in
//! `migrations/`, applied in one transaction at [`SqliteStore::open`])
//! takes the schema from version `n - 1` to `n`. `migrations/0001_init.sql`
//! documents the tables and their encodings. In short: `hosts` holds each
//! host's session state, facts and clock (`migrations/0005_clock.sql`: the
//! bound the [`crate::clock`] rules date its next reports by, its measured
//! skew); `programs` holds each distinct process identity (name, exe,
//! cmdline, uid, user, container, unit) once;
//! `intervals` holds one small row per listener interval whose owners are an
//! inline list of (pid, program id) varints; `tokens` holds API tokens
//! (several per name since `migrations/0006_tokens.sql`: a rotation keeps
//! the replaced ones, ending at a time of their own).
//! Two indexes serve every query: `intervals_by_host (host_id, closed_at,
//! opened_at)` (a host's open intervals, `listeners_at`, `history`) and the
//! covering `intervals_by_port (port, closed_at, opened_at, ...)` (`who`).
//! "Open at `at`" is asked as two index ranges, `closed_at IS NULL` and
//! `closed_at > at`, so questions about recent times read little.
//! A third, `intervals_by_opened (opened_at)` (migration 13), serves the reads
//! that go through the whole history in opening order a chunk at a time
//! (export, fleet-wide trends): without it each chunk sorted the whole table
//! (1,000 hosts, 170,000 intervals: 6.1 s to read them all in chunks of
//! 1,000 before, 0.43 s after, for 8 more bytes per change: 86 to 94).
//!
//! Reading intervals back (`read.rs`) does little per row: host names come
//! from a cache shared by all reads, program strings are shared, and an
//! answer is sorted by a permutation applied in place.
//!
//! Measured (`a_month_of_a_large_fleet_is_reported`, 10,000 hosts, 30 days,
//! 3.2 million listener changes): about 100 bytes of file per change,
//! indexes included; `who` of a port open on every host (10,000 rows) read in
//! 12-17 ms, of a port no host uses under 0.1 ms; `listeners_at` and `history` of
//! a host under 1 ms.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use portwatch_common::wire::{Ack, Batch, ReportBody};
use portwatch_common::{Listener, Proto};
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, TransactionBehavior};

use portwatch_model::baseline::{BaselineAction, BaselineLogRow, StoredBaseline};
use portwatch_model::{AlertEvent, AlertRow, AlertState, Finding, HistoryCursor, HistoryWindow, HostRow, ListenerRow};

use super::stored::{
    corrupt, from_bits, proto_code, proto_from, read_varint, timestamp, to_bits, IntervalKey, Order, ProgramRef,
    RawHost, RawToken, StoredProgram, HOST_COLUMNS, INTERVAL_KEY_COLUMNS, PROGRAM_PROBE, TOKEN_COLUMNS,
};
use super::{
    AckOutcome, Alerts, Baselines, HistoryReads, HistoryWrites, IngestDone, Leases, Maintenance, Outbox, Rotated,
    StoreError, TokenRow, Tokens,
};
use crate::clock::{self, HostClock};
use crate::history::{self, SessionState, Step};

mod peers;
mod policy;
mod probe;
mod prune;
mod read;

use super::listeners_in;
use super::stored::HostCache;
use read::{IntervalReader, INTERVAL_COLUMNS};

/// The migrations, in order: entry `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_baselines_alerts.sql"),
    include_str!("migrations/0003_ports_first_seen.sql"),
    include_str!("migrations/0004_snapshot_parts.sql"),
    include_str!("migrations/0005_clock.sql"),
    include_str!("migrations/0006_sink_done.sql"),
    include_str!("migrations/0007_tokens.sql"),
    include_str!("migrations/0008_program_identity.sql"),
    include_str!("migrations/0009_detection.sql"),
    include_str!("migrations/0010_retention.sql"),
    include_str!("migrations/0011_program_slots.sql"),
    include_str!("migrations/0012_leases.sql"),
    include_str!("migrations/0013_intervals_by_opened.sql"),
    include_str!("migrations/0014_firewall.sql"),
    include_str!("migrations/0015_probe.sql"),
    include_str!("migrations/0016_peers.sql"),
];

/// How long a statement waits for a lock held by another connection before
/// failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Most idle read connections kept open; more are opened under load and
/// closed when returned.
const MAX_IDLE_READERS: usize = 8;

/// Most batches committed in one transaction; more wait for the next.
const MAX_GROUP: usize = 256;

/// A batch with at most this many listeners (in its snapshots and deltas)
/// is small: it may be committed before large batches queued earlier.
const SMALL_BATCH_LISTENERS: usize = 1_000;

/// Most listeners in the batches of one group (a group has one batch at
/// least, however large).
const GROUP_LISTENERS: usize = 10_000;

/// The history store in one SQLite file.
pub struct SqliteStore {
    /// The file, for opening read connections.
    path: PathBuf,
    /// The one connection that writes.
    writer: Arc<Mutex<Writer>>,
    /// Idle read connections.
    readers: Mutex<Vec<Connection>>,
    /// Batches waiting for the committer thread (see the module docs).
    queue: Arc<IngestQueue>,
    /// The committer thread, joined on drop.
    committer: Option<std::thread::JoinHandle<()>>,
    /// Host names by id, for reading intervals.
    hosts: HostCache,
    /// How far agents' clocks are trusted (ingest, and `hosts`' skew).
    clock: clock::Limits,
}

/// Batches waiting to be committed, and the committer's wake-up call.
#[derive(Default)]
struct IngestQueue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

#[derive(Default)]
struct QueueState {
    batches: VecDeque<Queued>,
    /// The store is being dropped: commit what is queued, then stop.
    closing: bool,
}

impl IngestQueue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A batch waiting in the queue, and where its answer goes.
struct Queued {
    batch: Batch,
    received_at: Timestamp,
    done: IngestDone,
}

/// The write connection and the `synchronous` setting it has now.
struct Writer {
    conn: Connection,
    synchronous: Synchronous,
    /// The database file, named in errors.
    path: PathBuf,
}

/// `PRAGMA synchronous` values the store uses (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Synchronous {
    /// No fsync at commit in WAL mode: a commit may be lost to a power cut,
    /// never to a crash of the collector.
    Normal,
    /// The WAL is fsynced at every commit.
    Full,
}

impl Writer {
    fn set_synchronous(&mut self, mode: Synchronous) -> Result<(), StoreError> {
        if self.synchronous != mode {
            let sql = match mode {
                Synchronous::Normal => "PRAGMA synchronous = NORMAL",
                Synchronous::Full => "PRAGMA synchronous = FULL",
            };
            self.conn.execute_batch(sql).map_err(db)?;
            self.synchronous = mode;
        }
        Ok(())
    }
}

impl SqliteStore {
    /// Opens (creating it if needed) the database at `path`, switches it to
    /// WAL mode and brings its schema to this build's version.
    ///
    /// Fails with [`StoreError::Open`] when the file cannot be created, is
    /// not a SQLite database, or has a schema newer than this build knows.
    /// Agents' clocks are judged by the default [`clock::Limits`].
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with_clock(path, clock::Limits::default())
    }

    /// [`SqliteStore::open`], judging agents' clocks by `clock` (see [`crate::clock`]).
    pub fn open_with_clock(path: &Path, clock: clock::Limits) -> Result<SqliteStore, StoreError> {
        let open_error = |message: String| StoreError::Open {
            path: path.display().to_string(),
            message,
        };
        // Where this cannot create the file, SQLite cannot either, and says why.
        let _ = create_private(path);
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags).map_err(|e| open_error(describe(&e)))?;
        // Before WAL mode is set, which writes the file's first page. (A file
        // that is not a database fails here quietly and in `configure_writer` with a message.)
        let _ = prune::prepare_new(&conn);
        configure_writer(&conn).map_err(open_error)?;
        migrate(&mut conn).map_err(open_error)?;
        let reader = open_reader(path).map_err(|e| open_error(describe(&e)))?;
        let writer = Arc::new(Mutex::new(Writer {
            conn,
            synchronous: Synchronous::Full,
            path: path.to_owned(),
        }));
        let queue = Arc::new(IngestQueue::default());
        let committer = std::thread::Builder::new()
            .name("sqlite-commit".to_owned())
            .spawn({
                let (writer, queue) = (writer.clone(), queue.clone());
                move || commit_loop(&writer, &queue, &clock)
            })
            .map_err(|e| open_error(format!("cannot start the committer thread: {e}")))?;
        Ok(SqliteStore {
            path: path.to_owned(),
            writer,
            readers: Mutex::new(vec![reader]),
            queue,
            committer: Some(committer),
            hosts: HostCache::default(),
            clock,
        })
    }

    /// Stores many new tokens in one transaction (provisioning a fleet: one
    /// fsync, not one per token). All or nothing: a name or secret already
    /// taken stores none of them.
    pub fn create_tokens(&self, tokens: &[TokenRow]) -> Result<(), StoreError> {
        self.transact(Synchronous::Full, |tx| {
            tokens.iter().try_for_each(|token| insert_token(tx, token))
        })
    }

    /// Runs `write` in one immediate transaction of the writer, committed
    /// at `sync` (`Full`: the WAL is fsynced at commit), and rolled back when
    /// `write` fails; a full disk's error names the file. Every write but
    /// ingest's batches (which the committer groups) goes through here.
    fn transact<T>(
        &self,
        sync: Synchronous,
        write: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut writer = self.writer();
        let written = (|| {
            writer.set_synchronous(sync)?;
            let tx = writer
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            let value = write(&tx)?;
            tx.commit().map_err(db)?;
            Ok(value)
        })();
        written.map_err(|e| on_file(&self.path, e))
    }

    /// The writer, also after a panic of another thread while it held it
    /// (the panic dropped its transaction, which rolled back).
    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `read` on a read connection from the pool.
    fn read<T>(&self, read: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let idle = self.readers.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => open_reader(&self.path).map_err(db)?,
        };
        let result = read(&conn);
        let mut readers = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        if readers.len() < MAX_IDLE_READERS {
            readers.push(conn);
        }
        result.map_err(|e| on_file(&self.path, e))
    }

    /// Runs the interval query `sql` (selecting [`INTERVAL_COLUMNS`]) and
    /// returns its rows as [`ListenerRow`]s in `order`.
    fn query_intervals(
        &self,
        sql: &str,
        params: &[&dyn rusqlite::ToSql],
        order: Order,
    ) -> Result<Vec<ListenerRow>, StoreError> {
        self.read(|conn| {
            let mut reader = IntervalReader::new(conn, &self.hosts);
            let mut stmt = conn.prepare_cached(sql).map_err(db)?;
            let mut cursor = stmt.query(params).map_err(db)?;
            reader.read_all(&mut cursor, order)
        })
    }

    /// Every host, or the one named `name`, with its status as of `now`.
    fn hosts_named(&self, name: Option<&str>, now: Timestamp) -> Result<Vec<HostRow>, StoreError> {
        let raws = self.read(|conn| {
            let mut stmt = match name {
                None => conn.prepare_cached(&format!("SELECT {HOST_COLUMNS} FROM hosts h ORDER BY h.name")),
                Some(_) => conn.prepare_cached(&format!("SELECT {HOST_COLUMNS} FROM hosts h WHERE h.name = ?1")),
            }
            .map_err(db)?;
            let params: &[&dyn rusqlite::ToSql] = match &name {
                None => &[],
                Some(n) => &[n],
            };
            let rows = stmt
                .query_map(params, |r| {
                    Ok(RawHost {
                        name: r.get(0)?,
                        first_seen: r.get(1)?,
                        last_seen: r.get(2)?,
                        agent_version: r.get(3)?,
                        interval_ms: r.get(4)?,
                        os: r.get(5)?,
                        kernel: r.get(6)?,
                        boot_time: r.get(7)?,
                        tags: r.get(8)?,
                        dropped: r.get(9)?,
                        listeners: r.get(10)?,
                        clock_skew_ms: r.get(11)?,
                        clock_skew_at: r.get(12)?,
                        detection: r.get(13)?,
                        host_netns: r.get(14)?,
                        addresses: r.get(15)?,
                    })
                })
                .map_err(db)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db)
        })?;
        raws.into_iter().map(|raw| raw.into_row(now, &self.clock, 0)).collect()
    }

    /// The id of host `name`, if it ever reported.
    fn host_id(&self, name: &str) -> Result<Option<i64>, StoreError> {
        self.read(|conn| {
            conn.prepare_cached("SELECT id FROM hosts WHERE name = ?1")
                .and_then(|mut stmt| stmt.query_row([name], |r| r.get(0)).optional())
                .map_err(db)
        })
    }
}

impl Drop for SqliteStore {
    /// Commits what is queued, then stops the committer thread.
    fn drop(&mut self) {
        self.queue.lock().closing = true;
        self.queue.ready.notify_all();
        if let Some(committer) = self.committer.take() {
            let _ = committer.join();
        }
    }
}

/// Mode of a database file the store creates: the history and the token
/// hashes are the collector's (and its group's, for backups), nobody else's.
/// SQLite gives the `-wal` and `-shm` files it creates the database file's
/// mode, so they are private too.
pub const DB_FILE_MODE: u32 = 0o640;

/// Creates `path`, empty, with [`DB_FILE_MODE`] (less the umask) if it does
/// not exist: SQLite itself would create it world-readable (0644).
fn create_private(path: &Path) -> std::io::Result<()> {
    if path.as_os_str().is_empty() || path.as_os_str() == ":memory:" {
        return Ok(());
    }
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(DB_FILE_MODE)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Sets the writer's connection up: WAL, foreign keys, busy timeout.
fn configure_writer(conn: &Connection) -> Result<(), String> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| describe(&e))?;
    // The first statement reads the file's header: a file that is not a
    // database fails here.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| describe(&e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!(
            "cannot switch it to WAL journal mode (it stays in {mode:?} mode): put it on a local file system"
        ));
    }
    // A WAL that grew while a long read kept it from being reset (a slow
    // client, a big query) is cut back to this size when it is.
    conn.execute_batch(&format!(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT};"
    ))
    .map_err(|e| describe(&e))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// Opens a read connection (`query_only`: it cannot write by mistake).
fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute_batch("PRAGMA query_only = ON; PRAGMA foreign_keys = ON;")?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// Brings the schema to the latest version, in one transaction.
fn migrate(conn: &mut Connection) -> Result<(), String> {
    let described = |e: rusqlite::Error| describe(&e);
    let known = MIGRATIONS.len();
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(described)?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(described)?;
    let version = usize::try_from(version).map_err(|_| format!("its schema version {version} is invalid"))?;
    if version > known {
        return Err(format!(
            "its schema version {version} is newer than this collector knows ({known}): upgrade the collector"
        ));
    }
    if version == 0 {
        let tables: i64 = tx
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(described)?;
        if tables > 0 {
            return Err(
                "it is a SQLite database of another program (it has tables but no portwatch schema): \
                 check the path"
                    .to_owned(),
            );
        }
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.execute_batch(sql)
            .map_err(|e| format!("migration {} failed: {}", index + 1, describe(&e)))?;
    }
    if version < known {
        tx.execute_batch(&format!("PRAGMA user_version = {known}"))
            .map_err(described)?;
    }
    tx.commit().map_err(described)
}

/// A rusqlite error as a message that says what to do where we know it.
fn describe(error: &rusqlite::Error) -> String {
    match error.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => "disk full: free space on the database's file system".to_owned(),
        Some(ErrorCode::NotADatabase) => {
            "the file is not a SQLite database: check the path (or move the file away to start a new history)"
                .to_owned()
        }
        Some(ErrorCode::ReadOnly) => {
            "the database is read-only: make the file and its directory writable by the collector".to_owned()
        }
        Some(ErrorCode::CannotOpen) => {
            "cannot open or create the file: check that its directory exists and is writable".to_owned()
        }
        Some(ErrorCode::PermissionDenied) => {
            format!("permission denied ({error}): make the file and its directory accessible to the collector")
        }
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            format!("the database stayed locked for {BUSY_TIMEOUT:?}: is another program writing to it?")
        }
        Some(ErrorCode::DatabaseCorrupt) => {
            format!("the database file is corrupt ({error}): restore it from a backup")
        }
        Some(ErrorCode::SystemIoFailure) => format!("{IO_ERROR} ({error}): check the disk"),
        _ => error.to_string(),
    }
}

/// How [`describe`] begins the message of an I/O error: [`on_file`] looks
/// at the file system of such a failure.
const IO_ERROR: &str = "I/O error";

/// A rusqlite error as a [`StoreError`]: [`StoreError::DiskFull`] for
/// `SQLITE_FULL`, else [`StoreError::Database`] (see [`on_file`] for the file
/// name and for I/O errors of a full disk).
fn db(error: rusqlite::Error) -> StoreError {
    match error.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => StoreError::DiskFull { path: None },
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy(describe(&error)),
        _ => StoreError::Database(describe(&error)),
    }
}

/// `error`, of a write to the database `path`, with the file named where
/// it is a full disk; an I/O error while `path`'s file system has no space
/// left for unprivileged writers is taken as a full disk too (SQLite
/// reports some `ENOSPC`s, growing the WAL index say, as `SQLITE_IOERR`).
fn on_file(path: &Path, error: StoreError) -> StoreError {
    match error {
        StoreError::DiskFull { path: None } => StoreError::DiskFull {
            path: Some(path.display().to_string()),
        },
        StoreError::Database(message) if message.starts_with(IO_ERROR) && no_space_left(path) => StoreError::DiskFull {
            path: Some(path.display().to_string()),
        },
        other => other,
    }
}

/// Whether the file system of `path` has no free block left.
fn no_space_left(path: &Path) -> bool {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    rustix::fs::statvfs(dir).is_ok_and(|fs| fs.f_bavail == 0)
}

impl HistoryWrites for SqliteStore {
    fn ingest_queued(&self, batch: Batch, received_at: Timestamp, done: IngestDone) {
        let mut state = self.queue.lock();
        if state.closing {
            drop(state);
            done(Err(StoreError::Database("the store is closing".to_owned())));
            return;
        }
        state.batches.push_back(Queued {
            batch,
            received_at,
            done,
        });
        drop(state);
        self.queue.ready.notify_one();
    }
}

impl HistoryReads for SqliteStore {
    fn hosts(&self, now: Timestamp) -> Result<Vec<HostRow>, StoreError> {
        self.hosts_named(None, now)
    }

    fn host(&self, name: &str, now: Timestamp) -> Result<Option<HostRow>, StoreError> {
        Ok(self.hosts_named(Some(name), now)?.pop())
    }

    fn listeners_at(&self, host: &str, at: Timestamp) -> Result<Vec<ListenerRow>, StoreError> {
        let Some(host_id) = self.host_id(host)? else {
            return Ok(Vec::new());
        };
        // Two ranges of `intervals_by_host`: still open, and closed after `at`.
        let sql = listeners_at_sql();
        self.query_intervals(&sql, &[&host_id, &at.as_millisecond()], Order::Listener)
    }

    fn who(&self, port: u16, proto: Option<Proto>, at: Timestamp) -> Result<Vec<ListenerRow>, StoreError> {
        // Two ranges of `intervals_by_port`, filtered on the index's
        // opened_at before any table row is read.
        let sql = who_sql();
        let proto = proto.map(proto_code);
        self.query_intervals(&sql, &[&port, &at.as_millisecond(), &proto], Order::Host)
    }

    fn history(
        &self,
        host: &str,
        port: Option<u16>,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
    ) -> Result<Vec<ListenerRow>, StoreError> {
        let Some(host_id) = self.host_id(host)? else {
            return Ok(Vec::new());
        };
        // An interval belongs to the window when it opened at or before its
        // end and closed at or after its start (so one that closed exactly at
        // `since` is listed: its closing is an event of the window).
        let sql = history_sql();
        let since = since.map(Timestamp::as_millisecond);
        let until = until.map(Timestamp::as_millisecond);
        self.query_intervals(&sql, &[&host_id, &port, &since, &until], Order::Opened)
    }

    fn history_page(
        &self,
        host: &str,
        window: HistoryWindow,
        after: Option<HistoryCursor>,
        limit: usize,
    ) -> Result<(Vec<ListenerRow>, Option<HistoryCursor>), StoreError> {
        let Some(host_id) = self.host_id(host)? else {
            return Ok((Vec::new(), None));
        };
        let sql = history_page_sql();
        let since = window.since.map(Timestamp::as_millisecond);
        let until = window.until.map(Timestamp::as_millisecond);
        let (after_ms, after_id) = after.map_or((i64::MIN, i64::MIN), |c| (c.opened_ms, c.id));
        // One more than asked: whether there is a next page.
        let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&sql).map_err(db)?;
            let mut cursor = stmt
                .query(rusqlite::params![
                    host_id,
                    window.port,
                    since,
                    until,
                    after_ms,
                    after_id,
                    fetch
                ])
                .map_err(db)?;
            let mut reader = IntervalReader::new(conn, &self.hosts);
            let mut rows = Vec::with_capacity(limit.min(4096));
            let mut last = None;
            while let Some(r) = cursor.next().map_err(db)? {
                if rows.len() == limit {
                    return Ok((rows, last));
                }
                rows.push(reader.decode(r)?);
                last = Some(HistoryCursor {
                    opened_ms: r.get(12).map_err(db)?,
                    id: r.get(15).map_err(db)?,
                });
            }
            Ok((rows, None))
        })
    }

    fn export(
        &self,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
        each: &mut dyn FnMut(ListenerRow) -> bool,
    ) -> Result<(), StoreError> {
        // Read in chunks, each its own short read: a slow client holds no
        // read transaction open (which would keep the WAL from being
        // checkpointed), and the rows in memory are one chunk's.
        let sql = export_sql();
        let since = since.map(Timestamp::as_millisecond);
        let until = until.map(Timestamp::as_millisecond);
        let mut after = (i64::MIN, i64::MIN);
        loop {
            let chunk = self.read(|conn| {
                let mut stmt = conn.prepare_cached(&sql).map_err(db)?;
                let mut rows = stmt
                    .query(rusqlite::params![since, until, after.0, after.1, EXPORT_CHUNK_ROWS])
                    .map_err(db)?;
                let mut reader = IntervalReader::new(conn, &self.hosts);
                let mut chunk = Vec::new();
                while let Some(row) = rows.next().map_err(db)? {
                    chunk.push((
                        reader.decode(row)?,
                        row.get::<_, i64>(12).map_err(db)?,
                        row.get::<_, i64>(15).map_err(db)?,
                    ));
                }
                Ok(chunk)
            })?;
            let full = chunk.len() == EXPORT_CHUNK_ROWS as usize;
            for (row, opened_ms, id) in chunk {
                after = (opened_ms, id);
                if !each(row) {
                    return Ok(());
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    fn first_seen_ports(
        &self,
        since: Timestamp,
        host: Option<&str>,
    ) -> Result<Vec<portwatch_model::trend::FirstSeen>, StoreError> {
        let host_id = match host {
            Some(name) => match self.host_id(name)? {
                Some(id) => Some(id),
                None => return Ok(Vec::new()),
            },
            None => None,
        };
        // Fleet-wide from `ports_first_seen`; for one host from its own
        // range of `intervals_by_host` (SQLite takes the bare column h.name
        // from the row that has the min()).
        let raws: Vec<(i64, i64, i64, String)> = self.read(|conn| {
            let mut stmt = match host_id {
                None => conn.prepare_cached(
                    "SELECT f.proto, f.port, f.first_seen, h.name FROM ports_first_seen f
                     JOIN hosts h ON h.id = f.host_id WHERE f.first_seen >= ?1 AND ?2 IS NULL",
                ),
                Some(_) => conn.prepare_cached(
                    "SELECT i.proto, i.port, min(i.opened_at) AS first, h.name
                     FROM intervals i INDEXED BY intervals_by_host JOIN hosts h ON h.id = i.host_id
                     WHERE i.host_id = ?2 GROUP BY i.proto, i.port HAVING first >= ?1",
                ),
            }
            .map_err(db)?;
            let rows = stmt
                .query_map(params![since.as_millisecond(), host_id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .map_err(db)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db)
        })?;
        raws.into_iter()
            .map(|(proto, port, first, host)| {
                Ok(portwatch_model::trend::FirstSeen {
                    proto: proto_from(proto)?,
                    port: u16::try_from(port).map_err(|_| corrupt(format!("port {port}")))?,
                    first_seen: timestamp(first)?,
                    host,
                })
            })
            .collect()
    }
}

impl Tokens for SqliteStore {
    fn create_token(&self, token: &TokenRow) -> Result<(), StoreError> {
        self.transact(Synchronous::Full, |tx| insert_token(tx, token))
    }

    fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>, StoreError> {
        let raw = self.read(|conn| {
            conn.prepare_cached(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?1"))
                .and_then(|mut stmt| stmt.query_row([hash], raw_token).optional())
                .map_err(db)
        })?;
        raw.map(RawToken::into_row).transpose()
    }

    fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        let raws = self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY name, created_at, id"
                ))
                .map_err(db)?;
            let rows = stmt.query_map([], raw_token).map_err(db)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db)
        })?;
        raws.into_iter().map(RawToken::into_row).collect()
    }

    fn revoke_token(&self, name: &str, at: Timestamp) -> Result<bool, StoreError> {
        let changed = self.transact(Synchronous::Full, |tx| {
            tx.prepare_cached(
                "UPDATE tokens SET revoked_at = ?2 WHERE name = ?1 AND (revoked_at IS NULL OR revoked_at > ?2)",
            )
            .and_then(|mut stmt| stmt.execute(params![name, at.as_millisecond()]))
            .map_err(db)
        })?;
        Ok(changed > 0)
    }

    fn rotate_token(
        &self,
        name: &str,
        hash: &str,
        at: Timestamp,
        until: Timestamp,
    ) -> Result<Option<Rotated>, StoreError> {
        self.transact(Synchronous::Full, |tx| {
            let valid = valid_tokens(tx, name, at)?;
            let Some(rotated) = Rotated::of(valid, name, hash, at, until) else {
                return Ok(None);
            };
            tx.prepare_cached(
                "UPDATE tokens SET revoked_at = min(coalesce(revoked_at, ?3), ?3)
                 WHERE name = ?1 AND (revoked_at IS NULL OR revoked_at > ?2)",
            )
            .and_then(|mut stmt| stmt.execute(params![name, at.as_millisecond(), until.as_millisecond()]))
            .map_err(db)?;
            insert_token_row(tx, &rotated.new)?;
            Ok(Some(rotated))
        })
    }
}

impl Baselines for SqliteStore {
    fn put_baseline(
        &self,
        name: &str,
        source: &str,
        actor: &str,
        comment: Option<&str>,
        at: Timestamp,
    ) -> Result<BaselineAction, StoreError> {
        self.put_baseline_impl(name, source, actor, comment, at)
            .map_err(|e| on_file(&self.path, e))
    }

    fn remove_baseline(
        &self,
        name: &str,
        actor: &str,
        comment: Option<&str>,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.remove_baseline_impl(name, actor, comment, at)
            .map_err(|e| on_file(&self.path, e))
    }

    fn baselines(&self) -> Result<Vec<StoredBaseline>, StoreError> {
        self.baselines_impl()
    }

    fn baseline_log(&self, name: Option<&str>) -> Result<Vec<BaselineLogRow>, StoreError> {
        self.baseline_log_impl(name)
    }
}

impl Alerts for SqliteStore {
    fn sync_alerts(
        &self,
        hosts: &[String],
        findings: &[Finding],
        max_open: usize,
        now: Timestamp,
    ) -> Result<Vec<AlertEvent>, StoreError> {
        self.sync_alerts_impl(hosts, findings, max_open, now)
            .map_err(|e| on_file(&self.path, e))
    }

    fn alerts(&self, state: Option<AlertState>, host: Option<&str>, limit: usize) -> Result<Vec<AlertRow>, StoreError> {
        self.alerts_impl(state, host, limit)
    }

    fn ack_alert(&self, id: i64, actor: &str, comment: &str, at: Timestamp) -> Result<AckOutcome, StoreError> {
        self.ack_alert_impl(id, actor, comment, at)
            .map_err(|e| on_file(&self.path, e))
    }

    fn active_alert_keys(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.active_alert_keys_impl()
    }

    fn active_alert_counts(&self) -> Result<Vec<(portwatch_model::Kind, AlertState, u64)>, StoreError> {
        self.active_alert_counts_impl()
    }
}

impl Outbox for SqliteStore {
    fn alert_events_after(&self, after: i64, limit: usize) -> Result<Vec<super::OutboxEvent>, StoreError> {
        self.alert_events_after_impl(after, limit)
    }

    fn alert_event_hosts_after(&self, after: i64, limit: usize) -> Result<Vec<(i64, String)>, StoreError> {
        self.alert_event_hosts_after_impl(after, limit)
    }

    fn alert_event(&self, id: i64) -> Result<Option<super::OutboxEvent>, StoreError> {
        self.alert_event_impl(id)
    }

    fn sink_progress(&self, sink: &str) -> Result<super::SinkProgress, StoreError> {
        self.sink_progress_impl(sink)
    }

    fn set_sink_progress(&self, sink: &str, cursor: i64, done: &[i64]) -> Result<(), StoreError> {
        self.set_sink_progress_impl(sink, cursor, done)
            .map_err(|e| on_file(&self.path, e))
    }
}

impl Leases for SqliteStore {
    fn hold_lease(&self, name: &str, holder: &str, now: Timestamp, until: Timestamp) -> Result<bool, StoreError> {
        self.transact(Synchronous::Normal, |tx| {
            tx.prepare_cached(LEASE_SQL)
                .and_then(|mut stmt| {
                    stmt.query_row(
                        params![name, holder, until.as_millisecond(), now.as_millisecond()],
                        |r| r.get::<_, String>(0),
                    )
                    .optional()
                })
                .map(|got| got.is_some())
                .map_err(db)
        })
    }

    fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.transact(Synchronous::Normal, |tx| {
            tx.execute(
                "DELETE FROM leases WHERE name = ?1 AND holder = ?2",
                params![name, holder],
            )
            .map(drop)
            .map_err(db)
        })
    }

    fn live_holders(&self, now: Timestamp) -> Result<Vec<String>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT DISTINCT holder FROM leases WHERE expires_at > ?1 ORDER BY holder")
                .map_err(db)?;
            let rows = stmt.query_map([now.as_millisecond()], |r| r.get(0)).map_err(db)?;
            rows.collect::<Result<Vec<String>, _>>().map_err(db)
        })
    }
}

/// Takes or renews a lease (`?1` name, `?2` holder, `?3` until, `?4` now):
/// a row only when it is the holder's now.
const LEASE_SQL: &str = "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3)
     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
     WHERE leases.holder = excluded.holder OR leases.expires_at <= ?4
     RETURNING holder";

impl Maintenance for SqliteStore {
    fn size_bytes(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        for suffix in ["", "-wal"] {
            let mut name = self.path.clone().into_os_string();
            name.push(suffix);
            match std::fs::metadata(&name) {
                Ok(m) => total += m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(StoreError::Database(format!(
                        "cannot stat {}: {e}",
                        self.path.display()
                    )))
                }
            }
        }
        Ok(total)
    }

    fn prune_count(&self, plan: &super::PrunePlan) -> Result<super::Pruned, StoreError> {
        self.prune_count_impl(plan)
    }

    fn prune(
        &self,
        plan: &super::PrunePlan,
        cursor: &mut super::PruneCursor,
        batch_rows: usize,
    ) -> Result<super::Pruned, StoreError> {
        self.prune_impl(plan, cursor, batch_rows)
    }

    fn reclaim(&self, pages: u32) -> Result<u64, StoreError> {
        self.reclaim_impl(pages)
    }

    fn forget_host(&self, name: &str) -> Result<Option<super::Forgotten>, StoreError> {
        self.forget_host_impl(name)
    }
}

/// The tokens named `name` that authenticate at `at`, oldest first.
fn valid_tokens(conn: &Connection, name: &str, at: Timestamp) -> Result<Vec<TokenRow>, StoreError> {
    let raws = conn
        .prepare_cached(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE name = ?1 AND (revoked_at IS NULL OR revoked_at > ?2)
             ORDER BY created_at, id"
        ))
        .and_then(|mut stmt| {
            stmt.query_map(params![name, at.as_millisecond()], raw_token)?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(db)?;
    raws.into_iter().map(RawToken::into_row).collect()
}

/// Inserts `token` in the caller's transaction; [`StoreError::Exists`] when
/// its secret is taken or its name has a token that authenticates at its
/// `created_at` (one current, or in a rotation's overlap).
fn insert_token(conn: &Connection, token: &TokenRow) -> Result<(), StoreError> {
    if token.valid_at(token.created_at) && !valid_tokens(conn, &token.name, token.created_at)?.is_empty() {
        return Err(StoreError::Exists(format!("token {}", token.name)));
    }
    insert_token_row(conn, token)
}

/// Inserts `token` as it is; [`StoreError::Exists`] when its secret is taken
/// or it would be a second current token of its name.
fn insert_token_row(conn: &Connection, token: &TokenRow) -> Result<(), StoreError> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO tokens (name, role, host, hash, created_at, revoked_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                token.name,
                token.role.as_str(),
                token.host,
                token.hash,
                token.created_at.as_millisecond(),
                token.revoked_at.map(Timestamp::as_millisecond),
            ])
        });
    match inserted {
        Ok(_) => Ok(()),
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
            // The secret's hash, or (a current token of that name) the partial unique index.
            let name_taken = conn
                .query_row(
                    "SELECT 1 FROM tokens WHERE name = ?1 AND revoked_at IS NULL",
                    [&token.name],
                    |_| Ok(()),
                )
                .optional()
                .map_err(db)?
                .is_some();
            Err(StoreError::Exists(if name_taken {
                format!("token {}", token.name)
            } else {
                "a token with the same secret".to_owned()
            }))
        }
        Err(e) => Err(db(e)),
    }
}

/// `listeners_at`: two ranges of `intervals_by_host`, still open and closed after `at`.
fn listeners_at_sql() -> String {
    format!(
        "SELECT {INTERVAL_COLUMNS} FROM intervals i INDEXED BY intervals_by_host
         WHERE i.host_id = ?1 AND i.closed_at IS NULL AND i.opened_at <= ?2
         UNION ALL
         SELECT {INTERVAL_COLUMNS} FROM intervals i INDEXED BY intervals_by_host
         WHERE i.host_id = ?1 AND i.closed_at > ?2 AND i.opened_at <= ?2"
    )
}

/// `who`: two ranges of `intervals_by_port`, filtered on the index's `opened_at` before any table
/// row is read.
fn who_sql() -> String {
    format!(
        "SELECT {INTERVAL_COLUMNS} FROM intervals i INDEXED BY intervals_by_port
         WHERE i.port = ?1 AND i.closed_at IS NULL AND i.opened_at <= ?2 AND (?3 IS NULL OR i.proto = ?3)
         UNION ALL
         SELECT {INTERVAL_COLUMNS} FROM intervals i INDEXED BY intervals_by_port
         WHERE i.port = ?1 AND i.closed_at > ?2 AND i.opened_at <= ?2 AND (?3 IS NULL OR i.proto = ?3)"
    )
}

/// `history`: two ranges of `intervals_by_host`, still open and closed at or after `since`, so
/// a recent window (the drift sweep's) reads little however long the host's history is.
fn history_sql() -> String {
    format!(
        "SELECT {INTERVAL_COLUMNS} FROM intervals i INDEXED BY intervals_by_host
         WHERE i.host_id = ?1 AND i.closed_at IS NULL
           AND (?2 IS NULL OR i.port = ?2) AND (?4 IS NULL OR i.opened_at <= ?4)
         UNION ALL
         SELECT {INTERVAL_COLUMNS} FROM intervals i INDEXED BY intervals_by_host
         WHERE i.host_id = ?1 AND i.closed_at >= coalesce(?3, -9223372036854775808)
           AND (?2 IS NULL OR i.port = ?2) AND (?4 IS NULL OR i.opened_at <= ?4)"
    )
}

/// `export`: a chunk of the intervals open at any time in `[?1, ?2]`, after
/// `(?3, ?4)` in (opening time, id) order, at most `?5`: one range of
/// `intervals_by_opened` from the cursor on, however far the export has come.
fn export_sql() -> String {
    format!(
        "SELECT {INTERVAL_COLUMNS}, i.id FROM intervals i INDEXED BY intervals_by_opened
         WHERE (?2 IS NULL OR i.opened_at <= ?2) AND (?1 IS NULL OR i.closed_at IS NULL OR i.closed_at >= ?1)
           AND (i.opened_at, i.id) > (?3, ?4)
         ORDER BY i.opened_at, i.id LIMIT ?5"
    )
}

/// Intervals an export reads at a time (see [`HistoryReads::export`]).
const EXPORT_CHUNK_ROWS: i64 = 1_000;

/// `history_page`: the two ranges of [`history_sql`], after the cursor
/// `(?5, ?6)` in (opening time, id) order, at most `?7` rows. The interval id
/// is the last column.
fn history_page_sql() -> String {
    format!(
        "SELECT {INTERVAL_COLUMNS}, i.id FROM intervals i INDEXED BY intervals_by_host
         WHERE i.host_id = ?1 AND i.closed_at IS NULL
           AND (?2 IS NULL OR i.port = ?2) AND (?4 IS NULL OR i.opened_at <= ?4)
           AND (i.opened_at, i.id) > (?5, ?6)
         UNION ALL
         SELECT {INTERVAL_COLUMNS}, i.id FROM intervals i INDEXED BY intervals_by_host
         WHERE i.host_id = ?1 AND i.closed_at >= coalesce(?3, -9223372036854775808)
           AND (?2 IS NULL OR i.port = ?2) AND (?4 IS NULL OR i.opened_at <= ?4)
           AND (i.opened_at, i.id) > (?5, ?6)
         ORDER BY 13, 15 LIMIT ?7"
    )
}

/// The size the WAL is cut back to when it is reset (`journal_size_limit`).
const JOURNAL_SIZE_LIMIT: u64 = 64 << 20;

/// How long ingest is quiet before the committer checkpoints the WAL.
const IDLE_CHECKPOINT: Duration = Duration::from_secs(10);

/// Copies the WAL into the database and truncates it, while ingest is
/// quiet: what a read kept from being checkpointed meanwhile is done now,
/// and the WAL's file shrinks. It never waits: with a read still running it
/// copies what it can (busy timeout 0 for the call), and the next idle
/// spell tries again.
fn checkpoint_idle(writer: &Mutex<Writer>) {
    let writer = writer.lock().unwrap_or_else(PoisonError::into_inner);
    let checkpoint = writer.conn.busy_timeout(Duration::ZERO).and_then(|()| {
        writer.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        })
    });
    if let Err(e) = writer.conn.busy_timeout(BUSY_TIMEOUT) {
        tracing::warn!(error = %describe(&e), "cannot restore the database's busy timeout");
    }
    match checkpoint {
        Ok((0, _, _)) => tracing::debug!("WAL checkpointed and truncated while idle"),
        Ok((_, log, done)) => tracing::debug!(log, done, "idle WAL checkpoint partly done: a read is still running"),
        Err(e) => tracing::warn!(error = %describe(&e), "idle WAL checkpoint failed"),
    }
}

/// The program of the given content (`?1` its hash, then every column, null-safe).
/// The programs of the slots `?1..=?2` (see `0011_program_slots.sql`): the
/// program of a content is in one of the [`PROGRAM_PROBE`] slots from its hash.
const FIND_PROGRAM_SQL: &str = "SELECT id, hash, name, exe, cmdline, uid, user, container, unit FROM programs
     WHERE hash BETWEEN ?1 AND ?2 ORDER BY hash";

/// The open interval of a host with a given key. Pinned to `intervals_by_host`: without statistics
/// the planner may take `intervals_by_port`, whose open range spans the fleet.
/// The open interval of a host with a given key (`?1` the host, `?2`... the
/// key's columns, compared null-safe with `IS`).
static FIND_OPEN_SQL: LazyLock<String> = LazyLock::new(|| {
    let key: Vec<String> = INTERVAL_KEY_COLUMNS
        .split(", ")
        .enumerate()
        .map(|(i, column)| format!("{column} IS ?{}", i + 2))
        .collect();
    format!(
        "SELECT id, opened_at FROM intervals INDEXED BY intervals_by_host
         WHERE host_id = ?1 AND closed_at IS NULL AND {} LIMIT 1",
        key.join(" AND ")
    )
});

/// A new interval: `?1` the host, then the key's columns, then its opening time.
static INSERT_INTERVAL_SQL: LazyLock<String> = LazyLock::new(|| {
    let n = INTERVAL_KEY_COLUMNS.split(", ").count();
    let values: Vec<String> = (1..=n + 2).map(|i| format!("?{i}")).collect();
    format!(
        "INSERT INTO intervals (host_id, {INTERVAL_KEY_COLUMNS}, opened_at) VALUES ({})",
        values.join(", ")
    )
});

/// The committer thread: waits for batches, takes the writer, commits what
/// is queued (at most [`MAX_GROUP`]) as one group; stops once the store is
/// closing and the queue is empty.
fn commit_loop(writer: &Mutex<Writer>, queue: &IngestQueue, clock: &clock::Limits) {
    // Whether anything was committed since the last idle checkpoint.
    let mut written = false;
    let mut small_first = true;
    loop {
        {
            let mut state = queue.lock();
            while state.batches.is_empty() && !state.closing {
                let (next, idle) = queue
                    .ready
                    .wait_timeout(state, IDLE_CHECKPOINT)
                    .unwrap_or_else(PoisonError::into_inner);
                state = next;
                if idle.timed_out() && written && state.batches.is_empty() {
                    drop(state);
                    checkpoint_idle(writer);
                    written = false;
                    state = queue.lock();
                }
            }
            if state.batches.is_empty() {
                return;
            }
        }
        written = true;
        // The writer first, then the batches: what queued while a token
        // change held the writer joins this group.
        let mut writer = writer.lock().unwrap_or_else(PoisonError::into_inner);
        let group: Vec<Queued> = {
            let mut state = queue.lock();
            let sizes: Vec<(&str, usize)> = state
                .batches
                .iter()
                .map(|q| (q.batch.host.as_str(), listeners_in(&q.batch)))
                .collect();
            let picked = pick_group(&sizes, small_first);
            small_first = !small_first;
            take_picked(&mut state.batches, &picked)
        };
        // A panic rolls the group's transaction back and drops its answers
        // (their callers get an error); the thread goes on with the next.
        let committed =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| commit_group(&mut writer, group, clock)));
        if committed.is_err() {
            tracing::error!("a group of batches panicked while being stored; it was rolled back");
        }
    }
}

/// The positions, ascending, of the queued batches (host, listeners) to
/// commit next as one group. With `small_first`, the small batches (see
/// [`SMALL_BATCH_LISTENERS`]) of hosts with no large batch queued before
/// them, if there are any; otherwise, or without `small_first`, batches from
/// the front of the queue. Either way at most [`MAX_GROUP`] batches and
/// [`GROUP_LISTENERS`] listeners, but at least one batch.
fn pick_group(queued: &[(&str, usize)], small_first: bool) -> Vec<usize> {
    let mut picked = Vec::new();
    let mut listeners = 0usize;
    let mut fits = |picked: &Vec<usize>, n: usize| {
        let ok = picked.is_empty() || (picked.len() < MAX_GROUP && listeners.saturating_add(n) <= GROUP_LISTENERS);
        if ok {
            listeners = listeners.saturating_add(n);
        }
        ok
    };
    if small_first {
        let mut blocked: Vec<&str> = Vec::new();
        for (i, &(host, n)) in queued.iter().enumerate() {
            if n > SMALL_BATCH_LISTENERS {
                blocked.push(host);
            } else if !blocked.contains(&host) {
                if !fits(&picked, n) {
                    break;
                }
                picked.push(i);
            }
        }
        if !picked.is_empty() {
            return picked;
        }
    }
    for (i, &(_, n)) in queued.iter().enumerate() {
        if !fits(&picked, n) {
            break;
        }
        picked.push(i);
    }
    picked
}

/// Removes the batches at `picked` (ascending positions) from `queue`, in order.
fn take_picked(queue: &mut VecDeque<Queued>, picked: &[usize]) -> Vec<Queued> {
    if picked.iter().enumerate().all(|(n, &i)| n == i) {
        return queue.drain(..picked.len()).collect();
    }
    let mut group = Vec::with_capacity(picked.len());
    let mut rest = VecDeque::with_capacity(queue.len() - picked.len().min(queue.len()));
    let mut next = picked.iter().peekable();
    for (i, queued) in queue.drain(..).enumerate() {
        if next.next_if(|&&p| p == i).is_some() {
            group.push(queued);
        } else {
            rest.push_back(queued);
        }
    }
    *queue = rest;
    group
}

/// Commits `group` in one transaction, each batch in a savepoint of its own
/// (a batch that fails rolls back alone and gets its error; the others are
/// stored), and answers every batch once the transaction has committed.
/// With any report in the group the commit is durable (`synchronous =
/// FULL`); a group of heartbeats only is not (see the module docs).
fn commit_group(writer: &mut Writer, group: Vec<Queued>, clock: &clock::Limits) {
    let durable = group.iter().any(|q| !q.batch.reports.is_empty());
    let applied = (|| {
        writer.set_synchronous(if durable {
            Synchronous::Full
        } else {
            Synchronous::Normal
        })?;
        let mut tx = writer
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let mut results = Vec::with_capacity(group.len());
        for queued in &group {
            // On any error the savepoint is dropped, which rolls this batch back.
            let result = tx.savepoint().map_err(db).and_then(|savepoint| {
                let ack = apply_batch(&savepoint, &queued.batch, queued.received_at, clock)?;
                savepoint.commit().map_err(db)?;
                Ok(ack)
            });
            match result {
                // SQLite rolled the whole transaction back (it may, on a full
                // disk or an I/O error): what the group applied is gone, and
                // the next savepoints would each commit on their own.
                Err(error) if tx.is_autocommit() => return Err(error),
                result => results.push(result),
            }
        }
        // A failed commit drops `tx`, which rolls back what is still open.
        tx.commit().map_err(db)?;
        Ok(results)
    })();
    let path = writer.path.as_path();
    match applied {
        Ok(results) => {
            for (queued, result) in group.into_iter().zip(results) {
                (queued.done)(result.map_err(|e| on_file(path, e)));
            }
        }
        Err(error) => {
            // Logged by whoever gets the answers (the ingest handler logs a failed request).
            let error = on_file(path, error);
            for queued in group {
                (queued.done)(Err(error.again()));
            }
        }
    }
}

/// Applies `batch` inside the open transaction `tx` (see [`HistoryWrites::ingest`]),
/// dating its reports by the [`clock`] rules.
fn apply_batch(
    tx: &Connection,
    batch: &Batch,
    received_at: Timestamp,
    limits: &clock::Limits,
) -> Result<Ack, StoreError> {
    let (host_id, stored_session, last_seq, dropped, clock_at): (i64, Option<String>, i64, i64, Option<i64>) = tx
        .prepare_cached(
            "INSERT INTO hosts (name, first_seen, last_seen) VALUES (?1, ?2, ?2)
             ON CONFLICT (name) DO UPDATE SET last_seen = excluded.last_seen
             RETURNING id, session, last_seq, dropped_reports, clock_at",
        )
        .and_then(|mut stmt| {
            stmt.query_row(params![batch.host, received_at.as_millisecond()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
        })
        .map_err(db)?;
    let state = SessionState {
        session: stored_session,
        last_seq: from_bits(last_seq),
        dropped: from_bits(dropped),
    };
    // Every report's effective time, decided up front (see `clock`).
    let host_clock = HostClock {
        session: state.session.as_deref(),
        last_seq: state.last_seq,
        last_at: clock_at.map(timestamp).transpose()?,
    };
    let times = clock::effective_times(received_at, &host_clock, limits, batch);
    // The parts kept matter only to a batch that continues a snapshot in parts.
    let continues_parts = batch
        .reports
        .iter()
        .any(|r| matches!(r.body, ReportBody::SnapshotPart { part, .. } if part > 0));
    let staged = if continues_parts {
        parts::staged(tx, host_id)?
    } else {
        None
    };
    let plan = history::plan_batch(&state, staged, batch, &times.reports);
    let mut writer = HostWriter::new(tx, host_id);
    for step in &plan.steps {
        match *step {
            Step::ClearParts => parts::clear(tx, host_id)?,
            Step::Reconcile { listeners, at } => writer.reconcile(listeners, at)?,
            Step::StagePart {
                session,
                seq,
                part,
                listeners,
            } => parts::stage(tx, host_id, session, seq, part, listeners)?,
            Step::ReconcileStaged { listeners, at } => {
                let mut whole = parts::take(tx, host_id)?;
                whole.extend(listeners.iter().cloned());
                HostWriter::new(tx, host_id).reconcile(&whole, at)?;
            }
            Step::Close { listener, at } => writer.close(listener, at)?,
            Step::Open { listener, at } => writer.open(listener, at)?,
        }
    }
    let SessionState {
        session,
        last_seq,
        dropped,
    } = plan.state;
    let (facts, last_at) = (plan.facts, plan.last_at);
    tx.prepare_cached("UPDATE hosts SET session = ?2, last_seq = ?3, dropped_reports = ?4 WHERE id = ?1")
        .and_then(|mut stmt| stmt.execute(params![host_id, session, to_bits(last_seq), to_bits(dropped)]))
        .map_err(db)?;
    if let Some(facts) = facts {
        let tags = serde_json::to_string(&facts.tags).map_err(|e| StoreError::Database(e.to_string()))?;
        let addresses = serde_json::to_string(&facts.addresses).map_err(|e| StoreError::Database(e.to_string()))?;
        tx.prepare_cached(
            "UPDATE hosts SET agent_version = ?2, interval_ms = ?3, os = ?4, kernel = ?5, boot_time = ?6, tags = ?7,
                              detection = ?8, host_netns = ?9, addresses = ?10
             WHERE id = ?1",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                host_id,
                facts.agent_version,
                to_bits(facts.interval_ms),
                facts.os,
                facts.kernel,
                facts.boot_time.map(Timestamp::as_millisecond),
                tags,
                facts.detection,
                facts.host_netns.map(to_bits),
                addresses,
            ])
        })
        .map_err(db)?;
    }
    // The host's clock: the bound for its next reports (the time of the
    // last one stored), and the skew this batch measured, if any.
    tx.prepare_cached(
        "UPDATE hosts SET clock_at = coalesce(?2, clock_at), clock_skew_ms = coalesce(?3, clock_skew_ms),
                          clock_skew_at = CASE WHEN ?3 IS NULL THEN clock_skew_at ELSE ?4 END
         WHERE id = ?1",
    )
    .and_then(|mut stmt| stmt.execute(params![host_id, last_at, times.skew_ms, received_at.as_millisecond()]))
    .map_err(db)?;
    Ok(plan.ack)
}

/// The parts of a snapshot in progress (table `snapshot_parts`, see
/// migration 4 and [`ReportBody::SnapshotPart`]).
mod parts {
    use portwatch_common::Listener;
    use rusqlite::{params, Connection};

    use super::{db, from_bits, to_bits, StoreError};
    use crate::history::Staged;

    /// Forgets the parts of any snapshot in progress.
    pub(super) fn clear(tx: &Connection, host_id: i64) -> Result<(), StoreError> {
        tx.prepare_cached("DELETE FROM snapshot_parts WHERE host_id = ?1")
            .and_then(|mut stmt| stmt.execute([host_id]))
            .map(drop)
            .map_err(db)
    }

    /// What is kept of a snapshot in progress (see [`Staged::from_rows`]).
    pub(super) fn staged(tx: &Connection, host_id: i64) -> Result<Option<Staged>, StoreError> {
        let mut stmt = tx
            .prepare_cached("SELECT session, part, seq FROM snapshot_parts WHERE host_id = ?1 ORDER BY part")
            .map_err(db)?;
        let rows = stmt
            .query_map([host_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?, r.get::<_, i64>(2)?))
            })
            .map_err(db)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        Ok(Staged::from_rows(rows.iter().map(|(session, part, seq)| {
            (session.as_str(), *part, from_bits(*seq))
        })))
    }

    /// Keeps one part until the last arrives.
    pub(super) fn stage(
        tx: &Connection,
        host_id: i64,
        session: &str,
        seq: u64,
        part: u32,
        listeners: &[Listener],
    ) -> Result<(), StoreError> {
        let json = serde_json::to_vec(listeners).map_err(|e| StoreError::Database(e.to_string()))?;
        tx.prepare_cached(
            "INSERT OR REPLACE INTO snapshot_parts (host_id, part, session, seq, listeners) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut stmt| stmt.execute(params![host_id, part, session, to_bits(seq), json]))
        .map(drop)
        .map_err(db)
    }

    /// The listeners of every part kept, in part order; forgets the parts.
    pub(super) fn take(tx: &Connection, host_id: i64) -> Result<Vec<Listener>, StoreError> {
        let mut listeners = Vec::new();
        {
            let mut stmt = tx
                .prepare_cached("SELECT listeners FROM snapshot_parts WHERE host_id = ?1 ORDER BY part")
                .map_err(db)?;
            let mut rows = stmt.query([host_id]).map_err(db)?;
            while let Some(row) = rows.next().map_err(db)? {
                let json = row.get_ref(0).map_err(db)?;
                let part: Vec<Listener> = json
                    .as_bytes()
                    .map_err(|e| e.to_string())
                    .and_then(|bytes| serde_json::from_slice(bytes).map_err(|e| e.to_string()))
                    .map_err(|e| StoreError::Database(format!("a kept snapshot part cannot be read: {e}")))?;
                listeners.extend(part);
            }
        }
        clear(tx, host_id)?;
        Ok(listeners)
    }
}

/// Writes one host's intervals within a batch's transaction.
struct HostWriter<'c, 'b> {
    tx: &'c Connection,
    host_id: i64,
    /// Program ids known in this transaction (only this one: ids of a
    /// rolled-back transaction are gone).
    programs: HashMap<ProgramRef<'b>, i64>,
}

impl<'c, 'b> HostWriter<'c, 'b> {
    fn new(tx: &'c Connection, host_id: i64) -> HostWriter<'c, 'b> {
        HostWriter {
            tx,
            host_id,
            programs: HashMap::new(),
        }
    }

    /// Makes the host's open intervals those of `listeners`, at `at`, as
    /// [`history::reconcile`] decides.
    fn reconcile(&mut self, listeners: &'b [Listener], at: i64) -> Result<(), StoreError> {
        let open = {
            let mut stmt = self
                .tx
                .prepare_cached(&format!(
                    "SELECT id, opened_at, {INTERVAL_KEY_COLUMNS}
                     FROM intervals INDEXED BY intervals_by_host WHERE host_id = ?1 AND closed_at IS NULL"
                ))
                .map_err(db)?;
            let rows = stmt
                .query_map([self.host_id], |r| {
                    let key = IntervalKey {
                        netns: r.get(2)?,
                        proto: r.get(3)?,
                        family: r.get(4)?,
                        addr: r.get(5)?,
                        port: r.get(6)?,
                        inode: r.get(7)?,
                        uid: r.get(8)?,
                        user: r.get(9)?,
                        exposure: r.get(10)?,
                        dual_stack: r.get(11)?,
                        owners: r.get(12)?,
                        firewall: r.get(13)?,
                    };
                    let (id, opened_at): (i64, i64) = (r.get(0)?, r.get(1)?);
                    Ok((key, (id, opened_at), opened_at))
                })
                .map_err(db)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db)?
        };
        let mut keys = Vec::with_capacity(listeners.len());
        for listener in listeners {
            keys.push(self.stored_key(listener)?);
        }
        let plan = history::reconcile(open, keys);
        for key in &plan.open {
            self.insert(key, at)?;
        }
        for (id, opened_at) in plan.close {
            self.set_closed(id, opened_at, at)?;
        }
        Ok(())
    }

    /// Opens an interval for `listener` at `at`, unless it is open already.
    fn open(&mut self, listener: &'b Listener, at: i64) -> Result<(), StoreError> {
        let key = self.stored_key(listener)?;
        if self.find_open(&key)?.is_none() {
            self.insert(&key, at)?;
        }
        Ok(())
    }

    /// Closes the open interval of `listener` at `at`, if there is one.
    fn close(&mut self, listener: &'b Listener, at: i64) -> Result<(), StoreError> {
        let Some(key) = self.key(listener, false)? else {
            return Ok(()); // an unknown program: it was never open
        };
        if let Some((id, opened_at)) = self.find_open(&key)? {
            self.set_closed(id, opened_at, at)?;
        }
        Ok(())
    }

    /// The key of `listener`, storing its programs if new.
    fn stored_key(&mut self, listener: &'b Listener) -> Result<IntervalKey, StoreError> {
        self.key(listener, true)?
            .ok_or_else(|| StoreError::Database("a program was not stored".to_owned()))
    }

    /// The key of `listener`; `None` when a program of it is not stored and
    /// `store` is false.
    fn key(&mut self, listener: &'b Listener, store: bool) -> Result<Option<IntervalKey>, StoreError> {
        IntervalKey::of(listener, |program| self.program_id(program, store))
    }

    /// The id of `program`, stored first if new and `store` is true.
    fn program_id(&mut self, program: ProgramRef<'b>, store: bool) -> Result<Option<i64>, StoreError> {
        if let Some(&id) = self.programs.get(&program) {
            return Ok(Some(id));
        }
        let natural = to_bits(program.hash());
        let last = natural.saturating_add(PROGRAM_PROBE - 1);
        // A few rounds: each loses only to a writer that took a free slot of
        // these since this one read them.
        for _ in 0..PROGRAM_PROBE {
            let mut taken = Vec::new();
            {
                let mut stmt = self.tx.prepare_cached(FIND_PROGRAM_SQL).map_err(db)?;
                let mut rows = stmt.query(params![natural, last]).map_err(db)?;
                while let Some(row) = rows.next().map_err(db)? {
                    let (id, slot): (i64, i64) = (row.get(0).map_err(db)?, row.get(1).map_err(db)?);
                    let stored = StoredProgram {
                        name: row.get(2).map_err(db)?,
                        exe: row.get(3).map_err(db)?,
                        cmdline: row.get(4).map_err(db)?,
                        uid: row.get(5).map_err(db)?,
                        user: row.get(6).map_err(db)?,
                        container: row.get(7).map_err(db)?,
                        unit: row.get(8).map_err(db)?,
                    };
                    if program.is(&stored) {
                        self.programs.insert(program, id);
                        return Ok(Some(id));
                    }
                    taken.push(slot);
                }
            }
            if !store {
                return Ok(None);
            }
            let Some(free) = (natural..=last).find(|slot| !taken.contains(slot)) else {
                return Err(corrupt(format!(
                    "the {PROGRAM_PROBE} program slots from {natural} are all taken by other programs"
                )));
            };
            // Where another writer took the slot meanwhile, nothing is
            // inserted and the slots are read again.
            let inserted: Option<i64> = self
                .tx
                .prepare_cached(
                    "INSERT INTO programs (hash, name, exe, cmdline, uid, user, container, unit)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (hash) DO NOTHING RETURNING id",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(
                        params![
                            free,
                            program.name,
                            program.exe,
                            program.cmdline,
                            program.uid,
                            program.user,
                            program.container,
                            program.unit
                        ],
                        |r| r.get(0),
                    )
                    .optional()
                })
                .map_err(db)?;
            if let Some(id) = inserted {
                self.programs.insert(program, id);
                return Ok(Some(id));
            }
        }
        Err(StoreError::Busy(format!(
            "program slots from {natural} kept being taken by other writers; send again"
        )))
    }

    /// The open interval of the host with this key: its id and opening time.
    fn find_open(&self, key: &IntervalKey) -> Result<Option<(i64, i64)>, StoreError> {
        self.tx
            .prepare_cached(&FIND_OPEN_SQL)
            .and_then(|mut stmt| {
                stmt.query_row(
                    params![
                        self.host_id,
                        key.netns,
                        key.proto,
                        key.family,
                        key.addr,
                        key.port,
                        key.inode,
                        key.uid,
                        key.user,
                        key.exposure,
                        key.dual_stack,
                        key.owners,
                        key.firewall
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
            })
            .map_err(db)
    }

    fn insert(&self, key: &IntervalKey, at: i64) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(&INSERT_INTERVAL_SQL)
            .and_then(|mut stmt| {
                stmt.execute(params![
                    self.host_id,
                    key.netns,
                    key.proto,
                    key.family,
                    key.addr,
                    key.port,
                    key.inode,
                    key.uid,
                    key.user,
                    key.exposure,
                    key.dual_stack,
                    key.owners,
                    key.firewall,
                    at
                ])
            })
            .map_err(db)?;
        self.tx
            .prepare_cached(
                "INSERT INTO ports_first_seen (proto, port, first_seen, host_id) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (proto, port) DO UPDATE SET first_seen = excluded.first_seen, host_id = excluded.host_id
                 WHERE excluded.first_seen < first_seen",
            )
            .and_then(|mut stmt| stmt.execute(params![key.proto, key.port, at, self.host_id]))
            .map_err(db)?;
        Ok(())
    }

    /// Closes interval `id` at `at`, never before it opened (an agent's
    /// clock may step back).
    fn set_closed(&self, id: i64, opened_at: i64, at: i64) -> Result<(), StoreError> {
        self.tx
            .prepare_cached("UPDATE intervals SET closed_at = ?2 WHERE id = ?1")
            .and_then(|mut stmt| stmt.execute(params![id, history::close_time(opened_at, at)]))
            .map_err(db)?;
        Ok(())
    }
}

/// A `tokens` row selected as [`TOKEN_COLUMNS`].
fn raw_token(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawToken> {
    Ok(RawToken {
        name: r.get(0)?,
        role: r.get(1)?,
        host: r.get(2)?,
        hash: r.get(3)?,
        created_at: r.get(4)?,
        revoked_at: r.get(5)?,
    })
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use portwatch_common::wire::Report;
    use portwatch_common::Process;
    use portwatch_fixtures::{
        ack, batch, delta, heartbeat, owned, part, ports, process, snapshot, spans, telnet, ts, YEAR,
    };
    use portwatch_model::Role;

    use super::*;

    /// A unique directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            let dir = std::env::temp_dir().join(format!(
                "portwatch-sqlite-{}-{}-{nanos}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn db(&self) -> PathBuf {
            self.0.join("collector.db")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn count(db: &Path, table: &str) -> i64 {
        let conn = Connection::open(db).unwrap();
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    fn open_error(result: Result<SqliteStore, StoreError>) -> String {
        match result {
            Err(e @ StoreError::Open { .. }) => e.to_string(),
            Err(e) => panic!("expected an open error, got {e}"),
            Ok(_) => panic!("expected an open error, the store opened"),
        }
    }

    #[test]
    fn migrations_run_on_a_fresh_file_and_reopening_is_a_no_op() {
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.db()).unwrap();
        store
            .ingest(
                &batch("web-3", "s1", vec![snapshot(1, ts(0), vec![owned(22, 1, &[10])])]),
                ts(1),
            )
            .unwrap();
        let schema = |db: &Path| -> (i64, String, Vec<Option<String>>) {
            let conn = Connection::open(db).unwrap();
            let version = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
            let mode = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
            let mut stmt = conn.prepare("SELECT sql FROM sqlite_schema ORDER BY name").unwrap();
            let sql = stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
            (version, mode, sql)
        };
        let before = schema(&dir.db());
        assert_eq!((before.0, before.1.as_str()), (MIGRATIONS.len() as i64, "wal"));
        drop(store);
        let store = SqliteStore::open(&dir.db()).unwrap();
        assert_eq!(schema(&dir.db()), before);
        assert_eq!(ports(&store.listeners_at("web-3", ts(5)).unwrap()), vec![22]);
    }

    #[test]
    fn a_database_of_a_newer_collector_is_refused() {
        let dir = TempDir::new();
        drop(SqliteStore::open(&dir.db()).unwrap());
        Connection::open(dir.db())
            .unwrap()
            .execute_batch("PRAGMA user_version = 99")
            .unwrap();
        let message = open_error(SqliteStore::open(&dir.db()));
        assert!(message.contains("schema version 99 is newer"), "{message}");
        assert!(message.contains("upgrade the collector"), "{message}");
    }

    #[test]
    fn a_file_that_is_not_sqlite_is_refused_clearly() {
        let dir = TempDir::new();
        std::fs::write(dir.db(), "collector = \"http://x\"\n".repeat(200)).unwrap();
        let message = open_error(SqliteStore::open(&dir.db()));
        assert!(message.contains("not a SQLite database"), "{message}");
        assert!(message.contains("collector.db"), "{message}");
    }

    #[test]
    fn a_sqlite_database_of_another_program_is_refused() {
        let dir = TempDir::new();
        Connection::open(dir.db())
            .unwrap()
            .execute_batch("CREATE TABLE hosts (x)")
            .unwrap();
        let message = open_error(SqliteStore::open(&dir.db()));
        assert!(message.contains("another program"), "{message}");
    }

    #[test]
    fn a_missing_directory_is_named_in_the_open_error() {
        let dir = TempDir::new();
        let message = open_error(SqliteStore::open(&dir.0.join("no/such/dir/collector.db")));
        assert!(message.contains("directory exists"), "{message}");
    }

    #[test]
    fn a_snapshot_in_parts_is_reconciled_once_its_last_part_arrives() {
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.db()).unwrap();
        let first = batch(
            "web-3",
            "s1",
            vec![snapshot(1, ts(0), vec![owned(22, 1, &[10]), owned(25, 5, &[14])])],
        );
        assert_eq!(store.ingest(&first, ts(1)).unwrap(), ack(1, false));
        // A restart: the new session's snapshot comes in three parts, over three batches.
        let parts = [
            vec![owned(22, 1, &[10])],
            vec![owned(80, 2, &[11]), owned(443, 3, &[12])],
            vec![owned(5432, 4, &[13])],
        ];
        for (i, listeners) in parts.iter().enumerate() {
            let seq = i as u64 + 1;
            let b = batch("web-3", "s2", vec![part(seq, ts(100), i as u32, 3, listeners.clone())]);
            assert_eq!(
                store.ingest(&b, ts(101 + i as i64)).unwrap(),
                ack(seq, false),
                "part {i}"
            );
            if i < 2 {
                // Kept, acknowledged, and not yet history: the old state still holds.
                assert_eq!(ports(&store.listeners_at("web-3", ts(200)).unwrap()), vec![22, 25]);
                assert_eq!(count(&dir.db(), "snapshot_parts"), seq as i64);
            }
        }
        assert_eq!(
            count(&dir.db(), "snapshot_parts"),
            0,
            "parts are forgotten once applied"
        );
        assert_eq!(
            spans(&store.listeners_at("web-3", ts(200)).unwrap()),
            vec![(22, 0, None), (80, 100, None), (443, 100, None), (5432, 100, None)],
            "22 stays open across the restart; 25 closed at the snapshot's time"
        );
        assert_eq!(
            spans(&store.history("web-3", Some(25), None, None).unwrap()),
            vec![(25, 0, Some(100))]
        );
        // The session goes on with deltas after the parts.
        let next = batch(
            "web-3",
            "s2",
            vec![delta(4, ts(300), vec![], vec![owned(80, 2, &[11])])],
        );
        assert_eq!(store.ingest(&next, ts(301)).unwrap(), ack(4, false));
        assert_eq!(
            ports(&store.listeners_at("web-3", ts(300)).unwrap()),
            vec![22, 443, 5432]
        );
    }

    #[test]
    fn snapshot_parts_resent_or_out_of_place_store_nothing_twice_and_ask_for_a_resync() {
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.db()).unwrap();
        let p0 = batch("web-3", "s1", vec![part(1, ts(0), 0, 3, vec![owned(22, 1, &[10])])]);
        assert_eq!(store.ingest(&p0, ts(1)).unwrap(), ack(1, false));
        // The same part again (its answer was lost) is stored once.
        assert_eq!(store.ingest(&p0, ts(2)).unwrap(), ack(1, false));
        assert_eq!(count(&dir.db(), "snapshot_parts"), 1);
        // Part 2 without part 1 is a gap.
        let p2 = batch("web-3", "s1", vec![part(3, ts(0), 2, 3, vec![owned(80, 2, &[11])])]);
        assert_eq!(store.ingest(&p2, ts(3)).unwrap(), ack(1, true));
        // A part of another session, not its first, is a gap too.
        let stranger = batch("web-3", "s9", vec![part(2, ts(0), 1, 3, vec![owned(80, 2, &[11])])]);
        assert_eq!(store.ingest(&stranger, ts(4)).unwrap(), ack(0, true));
        assert!(
            store.listeners_at("web-3", ts(10)).unwrap().is_empty(),
            "no part was applied"
        );
        // A whole snapshot supersedes the parts of one in progress.
        let whole = batch("web-3", "s1", vec![snapshot(2, ts(20), vec![owned(443, 3, &[12])])]);
        assert_eq!(store.ingest(&whole, ts(21)).unwrap(), ack(2, false));
        assert_eq!(count(&dir.db(), "snapshot_parts"), 0);
        // A part numbered after the whole snapshot, claiming to continue an old one, is a gap.
        let late = batch("web-3", "s1", vec![part(3, ts(30), 1, 3, vec![owned(80, 2, &[11])])]);
        assert_eq!(store.ingest(&late, ts(31)).unwrap(), ack(2, true));
        assert_eq!(ports(&store.listeners_at("web-3", ts(40)).unwrap()), vec![443]);
        // All parts in one batch work as well.
        let all = batch(
            "web-3",
            "s3",
            vec![
                part(1, ts(50), 0, 2, vec![owned(22, 1, &[10])]),
                part(2, ts(50), 1, 2, vec![owned(80, 2, &[11])]),
            ],
        );
        assert_eq!(store.ingest(&all, ts(51)).unwrap(), ack(2, false));
        assert_eq!(ports(&store.listeners_at("web-3", ts(60)).unwrap()), vec![22, 80]);
        let host = store.host("web-3", ts(60)).unwrap().unwrap();
        assert_eq!(
            host.agent_version.as_deref(),
            Some("0.1.0"),
            "the last part's facts are stored"
        );
    }

    #[test]
    fn opening_an_open_listener_and_closing_an_unknown_one_change_nothing() {
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.db()).unwrap();
        let ssh = owned(22, 1, &[10]);
        let mut stranger = owned(9999, 9, &[99]);
        stranger.processes[0].name = "never-seen".into();
        let reports = vec![
            snapshot(1, ts(0), vec![ssh.clone()]),
            delta(2, ts(10), vec![ssh.clone()], vec![stranger, owned(23, 8, &[10])]),
        ];
        assert_eq!(store.ingest(&batch("h", "s", reports), ts(11)).unwrap(), ack(2, false));
        assert_eq!(
            spans(&store.history("h", None, None, None).unwrap()),
            vec![(22, 0, None)]
        );
        // Closing an unknown listener stores no program either.
        assert_eq!(count(&dir.db(), "programs WHERE name = 'never-seen'"), 0);
    }

    #[test]
    fn hosts_show_the_clock_skew_heartbeats_measure() {
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.db()).unwrap();
        let skew = |store: &SqliteStore| {
            let h = store.host("h", ts(1000)).unwrap().unwrap();
            (h.clock_skew_ms, h.clock_skew_at, h.clock_skewed)
        };
        store
            .ingest(&batch("h", "s", vec![snapshot(1, ts(0), vec![])]), ts(0))
            .unwrap();
        assert_eq!(
            skew(&store),
            (None, None, false),
            "no heartbeat, nothing in the future: not measured"
        );
        store.ingest(&heartbeat("h", "s", ts(7210)), ts(10)).unwrap();
        assert_eq!(skew(&store), (Some(7_200_000), Some(ts(10)), true));
        // A week of backlog replayed by an agent whose clock is right is no skew.
        let mut replay = batch("h", "s", vec![delta(2, ts(-7 * 86_400), vec![], vec![])]);
        replay.alive_at = Some(ts(20));
        store.ingest(&replay, ts(20)).unwrap();
        assert_eq!(skew(&store), (Some(0), Some(ts(20)), false));
        // A batch without a heartbeat and nothing in the future keeps the measurement.
        store
            .ingest(&batch("h", "s", vec![delta(3, ts(25), vec![], vec![])]), ts(30))
            .unwrap();
        assert_eq!(skew(&store), (Some(0), Some(ts(20)), false));
        store.ingest(&heartbeat("h", "s", ts(-400)), ts(40)).unwrap();
        assert_eq!(skew(&store), (Some(-440_000), Some(ts(40)), true));
        // Under a wider tolerance (10 min) the same measurement is within it:
        // the store's limits decide.
        drop(store);
        let wide = clock::Limits {
            tolerance: Duration::from_secs(600),
            ..clock::Limits::default()
        };
        let store = SqliteStore::open_with_clock(&dir.db(), wide).unwrap();
        assert_eq!(skew(&store), (Some(-440_000), Some(ts(40)), false));
    }

    #[test]
    fn migrating_a_version_3_database_bounds_each_hosts_clock_by_its_history_and_last_contact() {
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.db()).unwrap();
        for (host, at) in [("a", 100), ("b", 100)] {
            store
                .ingest(&batch(host, "s", vec![snapshot(1, ts(at), vec![telnet()])]), ts(at))
                .unwrap();
        }
        store
            .ingest(&batch("c", "s", vec![snapshot(1, ts(100), vec![])]), ts(100))
            .unwrap();
        drop(store);
        let conn = Connection::open(dir.db()).unwrap();
        // b's history was dated a year ahead by a collector without the clock rules.
        conn.execute_batch(&format!(
            "ALTER TABLE hosts DROP COLUMN clock_at; ALTER TABLE hosts DROP COLUMN clock_skew_ms;
             ALTER TABLE hosts DROP COLUMN clock_skew_at; DROP TABLE snapshot_parts; DROP TABLE sink_done; DROP INDEX programs_by_slot; CREATE INDEX programs_by_hash ON programs (hash);
             ALTER TABLE hosts DROP COLUMN detection; ALTER TABLE intervals DROP COLUMN firewall;
             ALTER TABLE hosts DROP COLUMN host_netns; ALTER TABLE hosts DROP COLUMN addresses; DROP TABLE probe_verdicts; DROP TABLE peer_points;
             PRAGMA user_version = 3;
             UPDATE intervals SET opened_at = {} WHERE host_id = (SELECT id FROM hosts WHERE name = 'b');
             UPDATE intervals SET opened_at = {} WHERE host_id = (SELECT id FROM hosts WHERE name = 'a');",
            ts(YEAR).as_millisecond(),
            ts(40).as_millisecond()
        ))
        .unwrap();
        drop(conn);
        drop(SqliteStore::open(&dir.db()).unwrap());
        let conn = Connection::open(dir.db()).unwrap();
        let mut stmt = conn.prepare("SELECT name, clock_at FROM hosts ORDER BY name").unwrap();
        let clocks: Vec<(String, Option<i64>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let ms = |s: i64| Some(ts(s).as_millisecond());
        assert_eq!(
            clocks,
            vec![("a".into(), ms(40)), ("b".into(), ms(100)), ("c".into(), None)]
        );
    }

    /// `n` listeners opened one a second from `ts(0)` on host `h`, the even ones closed at `ts(10_000)`.
    fn many(store: &SqliteStore, n: u16) {
        let mut reports = vec![snapshot(1, ts(0), vec![])];
        for i in 0..n {
            reports.push(delta(
                u64::from(i) + 2,
                ts(i64::from(i)),
                vec![owned(1000 + i, u64::from(i) + 1, &[10])],
                vec![],
            ));
        }
        let closes = (0..n)
            .step_by(2)
            .map(|i| owned(1000 + i, u64::from(i) + 1, &[10]))
            .collect();
        reports.push(delta(u64::from(n) + 2, ts(10_000), vec![], closes));
        for chunk in reports.chunks(900) {
            store.ingest(&batch("h", "s", chunk.to_vec()), ts(10_001)).unwrap();
        }
    }

    #[test]
    fn an_export_read_slowly_keeps_no_read_open_between_chunks() {
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.db()).unwrap();
        many(&store, 2_500);
        let mut exported = Vec::new();
        let mut checkpoints = Vec::new();
        store
            .export(None, None, &mut |row| {
                if exported.len() % 1_000 == 1 {
                    // A slow client: meanwhile ingest goes on, and a checkpoint
                    // must be able to copy and truncate the whole WAL.
                    let more = batch(
                        "other",
                        "s",
                        vec![snapshot(1, ts(0), vec![owned(22, exported.len() as u64, &[10])])],
                    );
                    store.ingest(&more, ts(1)).unwrap();
                    let conn = Connection::open(dir.db()).unwrap();
                    let done: (i64, i64, i64) = conn
                        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                        })
                        .unwrap();
                    checkpoints.push(done);
                }
                exported.push(row);
                true
            })
            .unwrap();
        let opened: Vec<Timestamp> = exported
            .iter()
            .filter(|r| &*r.host == "h")
            .map(|r| r.opened_at)
            .collect();
        assert_eq!(opened.len(), 2_500, "every interval once");
        assert!(opened.windows(2).all(|w| w[0] <= w[1]), "by opening time");
        assert_eq!(checkpoints.len(), 3);
        assert!(
            checkpoints.iter().all(|&(busy, _, _)| busy == 0),
            "a reader blocked the checkpoint: {checkpoints:?}"
        );
    }

    #[test]
    fn a_quiet_store_checkpoints_and_truncates_its_wal() {
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.db()).unwrap();
        many(&store, 1_000);
        let wal = dir.db().with_extension("db-wal");
        let size = || std::fs::metadata(&wal).map_or(0, |m| m.len());
        assert!(size() > 0, "the WAL holds the ingest");
        // Polls for the idle checkpoint (a bound against hanging, not a timing assertion).
        let deadline = std::time::Instant::now() + IDLE_CHECKPOINT * 4;
        while size() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(size(), 0, "the WAL was truncated once ingest was quiet");
        assert_eq!(
            store.history("h", None, None, None).unwrap().len(),
            1_000,
            "and nothing was lost"
        );
    }

    fn agent_token(hash: &str, at: i64) -> TokenRow {
        TokenRow {
            name: "agent:web-3".into(),
            role: Role::Agent,
            host: Some("web-3".into()),
            hash: hash.into(),
            created_at: ts(at),
            revoked_at: None,
        }
    }

    #[test]
    fn migrating_a_version_6_database_keeps_every_token_and_frees_revoked_names() {
        let dir = TempDir::new();
        drop(SqliteStore::open(&dir.db()).unwrap());
        let conn = Connection::open(dir.db()).unwrap();
        conn.execute_batch(&format!(
            "DROP TABLE tokens;
             CREATE TABLE tokens (
                 id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
                 role TEXT NOT NULL CHECK (role IN ('agent', 'read', 'admin')), host TEXT,
                 hash TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL, revoked_at INTEGER) STRICT;
             INSERT INTO tokens (name, role, host, hash, created_at, revoked_at) VALUES
                 ('agent:web-3', 'agent', 'web-3', 'aa11', {t0}, {t1}),
                 ('ops', 'admin', NULL, 'bb22', {t0}, NULL);
             DROP INDEX programs_by_slot; CREATE INDEX programs_by_hash ON programs (hash);
             ALTER TABLE hosts DROP COLUMN detection; ALTER TABLE intervals DROP COLUMN firewall;
             ALTER TABLE hosts DROP COLUMN host_netns; ALTER TABLE hosts DROP COLUMN addresses; DROP TABLE probe_verdicts; DROP TABLE peer_points;
             PRAGMA user_version = 6;",
            t0 = ts(0).as_millisecond(),
            t1 = ts(5).as_millisecond(),
        ))
        .unwrap();
        drop(conn);
        let store = SqliteStore::open(&dir.db()).unwrap();
        assert_eq!(store.token_by_hash("aa11").unwrap().unwrap().revoked_at, Some(ts(5)));
        assert_eq!(store.token_by_hash("bb22").unwrap().unwrap().role, Role::Admin);
        store.create_token(&agent_token("cc33", 10)).unwrap();
        assert!(store.rotate_token("ops", "dd44", ts(10), ts(20)).unwrap().is_some());
        assert_eq!(store.tokens().unwrap().len(), 4);
    }

    #[test]
    fn a_new_database_and_its_wal_files_are_not_readable_by_others() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.db()).unwrap();
        store.create_token(&agent_token("aa11", 0)).unwrap();
        let wal = dir.0.join("collector.db-wal");
        let shm = dir.0.join("collector.db-shm");
        for file in [dir.db(), wal, shm] {
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & 0o007, 0, "{} has mode {mode:o}", file.display());
            assert_eq!(mode & !DB_FILE_MODE, 0, "{} has mode {mode:o}", file.display());
        }
    }

    /// A 1 MiB tmpfs in `dir`, unmounted on drop; `None` (after printing why
    /// the test is not run) when not root.
    fn tmpfs(dir: &TempDir, test: &str) -> Option<Mount> {
        if !rustix::process::geteuid().is_root() {
            println!("NOT RUN: {test}: mounting a tmpfs needs root");
            return None;
        }
        let mnt = dir.0.join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&mnt)
            .status();
        // As root, a tmpfs that cannot be mounted is a broken test machine, not a reason to skip.
        assert!(
            matches!(mounted, Ok(status) if status.success()),
            "{test}: cannot mount a tmpfs as root ({mounted:?})"
        );
        Some(Mount(mnt))
    }

    /// Unmounts on drop.
    struct Mount(PathBuf);

    impl Drop for Mount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }

    /// Writes `file` until its file system is full.
    fn fill(file: &Path) {
        use std::io::Write;
        let mut f = std::fs::File::create(file).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }

    #[test]
    fn a_full_disk_fails_a_batch_by_name_stores_none_of_it_and_the_same_batch_succeeds_once_freed() {
        let dir = TempDir::new();
        let test = "a_full_disk_fails_a_batch_by_name_stores_none_of_it_and_the_same_batch_succeeds_once_freed";
        let Some(mount) = tmpfs(&dir, test) else {
            return;
        };
        let db = mount.0.join("collector.db");
        let store = SqliteStore::open(&db).unwrap();
        store
            .ingest(
                &batch("web-3", "s1", vec![snapshot(1, ts(0), vec![owned(22, 1, &[10])])]),
                ts(1),
            )
            .unwrap();
        let filler = mount.0.join("filler");
        fill(&filler);
        // Far more than the WAL has room for already: 600 listeners, each of its own program.
        let opened: Vec<_> = (0..600u16)
            .map(|i| owned(1000 + i, 10_000 + u64::from(i), &[100 + u32::from(i)]))
            .collect();
        let big = batch("web-3", "s1", vec![delta(2, ts(10), opened, vec![])]);
        for attempt in 0..2 {
            if attempt == 1 {
                // A small page cache spills to the WAL before the commit: the disk fills up
                // mid-transaction, and SQLite rolls the transaction back itself.
                store.writer().conn.execute_batch("PRAGMA cache_size = 16").unwrap();
            }
            let error = store.ingest(&big, ts(11)).unwrap_err();
            assert!(
                matches!(error, StoreError::DiskFull { .. }),
                "attempt {attempt}: {error:?}"
            );
            assert!(error.retry_helps());
            let message = error.to_string();
            assert!(message.starts_with("disk full"), "{message}");
            assert!(message.contains(&db.display().to_string()), "{message}");
            assert!(message.contains("free space"), "{message}");
            assert_eq!(
                ports(&store.listeners_at("web-3", ts(20)).unwrap()),
                vec![22],
                "none of it stored"
            );
        }
        // A token change on the full disk fails the same way.
        let token = store.create_token(&agent_token("aa11", 0));
        assert!(matches!(token, Err(StoreError::DiskFull { .. })), "{token:?}");

        std::fs::remove_file(&filler).unwrap();
        let ack = store.ingest(&big, ts(12)).unwrap();
        assert_eq!((ack.acked, ack.resync), (2, false));
        assert_eq!(store.listeners_at("web-3", ts(20)).unwrap().len(), 601);
        store.create_token(&agent_token("aa11", 0)).unwrap();
        drop(store);
        let reopened = SqliteStore::open(&db).unwrap();
        assert_eq!(reopened.listeners_at("web-3", ts(20)).unwrap().len(), 601);
    }

    #[test]
    fn tokens_created_in_bulk_are_all_stored_or_none() {
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.db()).unwrap();
        let agent = |host: &str| TokenRow {
            name: format!("agent:{host}"),
            role: Role::Agent,
            host: Some(host.to_owned()),
            hash: format!("hash-of-{host}"),
            created_at: ts(0),
            revoked_at: None,
        };
        let fleet: Vec<TokenRow> = (0..100).map(|h| agent(&format!("web-{h}"))).collect();
        store.create_tokens(&fleet).unwrap();
        assert_eq!(store.tokens().unwrap().len(), 100);
        assert_eq!(store.token_by_hash("hash-of-web-42").unwrap(), Some(fleet[42].clone()));
        // One taken name refuses the whole lot.
        let clash = vec![agent("db-1"), agent("web-7")];
        let error = store.create_tokens(&clash).unwrap_err();
        assert!(
            matches!(&error, StoreError::Exists(what) if what.contains("agent:web-7")),
            "{error:?}"
        );
        assert_eq!(store.token_by_hash("hash-of-db-1").unwrap(), None);
        assert_eq!(store.tokens().unwrap().len(), 100);
    }

    #[test]
    fn a_batch_whose_transaction_fails_stores_nothing() {
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.db()).unwrap();
        store
            .ingest(
                &batch("web-3", "s1", vec![snapshot(1, ts(0), vec![owned(22, 1, &[10])])]),
                ts(1),
            )
            .unwrap();
        // Make any interval on port 666 fail to insert.
        Connection::open(dir.db())
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER fail BEFORE INSERT ON intervals WHEN NEW.port = 666
                 BEGIN SELECT RAISE(ABORT, 'simulated failure'); END;",
            )
            .unwrap();
        let tables = ["hosts", "programs", "intervals", "intervals WHERE closed_at IS NULL"];
        let counts: Vec<i64> = tables.iter().map(|t| count(&dir.db(), t)).collect();
        let mut failing = batch(
            "web-3",
            "s1",
            vec![
                delta(2, ts(10), vec![owned(80, 2, &[11])], vec![owned(22, 1, &[10])]),
                delta(3, ts(20), vec![owned(666, 3, &[12])], vec![]),
            ],
        );
        failing.dropped = 7;
        let error = store.ingest(&failing, ts(21)).unwrap_err();
        assert!(error.to_string().contains("simulated failure"), "{error}");
        assert_eq!(tables.iter().map(|t| count(&dir.db(), t)).collect::<Vec<_>>(), counts);
        let host = &store.hosts(ts(21)).unwrap()[0];
        assert_eq!((host.last_seen, host.dropped_reports), (ts(1), 0));
        // A new host in a failing batch is not created either.
        let new_host = batch("db-1", "s", vec![snapshot(1, ts(0), vec![owned(666, 3, &[12])])]);
        assert!(store.ingest(&new_host, ts(22)).is_err());
        assert_eq!(store.hosts(ts(22)).unwrap().len(), 1);
        // The store goes on working, from where it was.
        assert_eq!(
            store.ingest(&failing.clone(), ts(23)).unwrap_err().to_string(),
            error.to_string()
        );
        let fine = batch("web-3", "s1", vec![delta(2, ts(10), vec![owned(80, 2, &[11])], vec![])]);
        assert_eq!(store.ingest(&fine, ts(24)).unwrap(), ack(2, false));
    }

    #[test]
    fn batches_queued_together_commit_together_and_a_failing_one_fails_alone() {
        let dir = TempDir::new();
        let store = Arc::new(SqliteStore::open(&dir.db()).unwrap());
        Connection::open(dir.db())
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER fail BEFORE INSERT ON intervals WHEN NEW.port = 666
                 BEGIN SELECT RAISE(ABORT, 'simulated failure'); END;",
            )
            .unwrap();
        // Hold the writer until every batch below has queued: one thread then commits them all as one group.
        let writer = store.writer();
        let threads: Vec<_> = (0..8u64)
            .map(|h| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let host = format!("web-{h}");
                    match h {
                        5 => store.ingest(&heartbeat(&host, "s", ts(1)), ts(2)),
                        _ => {
                            let port = if h == 3 { 666 } else { 22 };
                            let reports = vec![snapshot(1, ts(1), vec![owned(port, h, &[10])])];
                            store.ingest(&batch(&host, "s", reports), ts(2))
                        }
                    }
                })
            })
            .collect();
        while store.queue.lock().batches.len() < 8 {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(writer);
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(store.queue.lock().batches.is_empty());
        for (h, result) in results.iter().enumerate() {
            match h {
                3 => assert!(
                    result.as_ref().unwrap_err().to_string().contains("simulated failure"),
                    "{result:?}"
                ),
                // A heartbeat of an unknown session: listed, asked for a snapshot.
                5 => assert_eq!(result.as_ref().unwrap(), &ack(0, true)),
                _ => assert_eq!(result.as_ref().unwrap(), &ack(1, false)),
            }
        }
        assert_eq!(count(&dir.db(), "intervals"), 6);
        let hosts: Vec<String> = store.hosts(ts(3)).unwrap().into_iter().map(|h| h.host).collect();
        assert_eq!(hosts, ["web-0", "web-1", "web-2", "web-4", "web-5", "web-6", "web-7"]);
        // The failed batch stored nothing and can be sent again once the cause is gone.
        Connection::open(dir.db())
            .unwrap()
            .execute_batch("DROP TRIGGER fail")
            .unwrap();
        let reports = vec![snapshot(1, ts(1), vec![owned(666, 3, &[10])])];
        assert_eq!(
            store.ingest(&batch("web-3", "s", reports), ts(4)).unwrap(),
            ack(1, false)
        );
    }

    #[test]
    fn small_batches_are_grouped_before_large_ones_queued_earlier_but_never_before_their_own_hosts() {
        let big = SMALL_BATCH_LISTENERS + 1;
        // a: large; b: heartbeat; a: heartbeat (after its own large batch); c: small delta.
        let queued = [("a", big), ("b", 0), ("a", 0), ("c", 3)];
        assert_eq!(pick_group(&queued, true), [1, 3]);
        // In queue order: the front, and what fits the group's listeners.
        assert_eq!(pick_group(&queued, false), [0, 1, 2, 3]);
        let huge = [("a", GROUP_LISTENERS * 3), ("b", 0), ("c", big)];
        assert_eq!(pick_group(&huge, false), [0], "a large batch is a group of its own");
        assert_eq!(pick_group(&huge, true), [1]);
        // Only large batches, or small ones behind their host's large one: queue order.
        assert_eq!(pick_group(&[("a", big), ("a", 0)], true), [0, 1]);
        let mediums = [("a", GROUP_LISTENERS / 2), ("b", GROUP_LISTENERS / 2), ("c", 1)];
        assert_eq!(pick_group(&mediums, false), [0, 1]);
        // At most MAX_GROUP batches.
        let many: Vec<(&str, usize)> = (0..MAX_GROUP + 5).map(|_| ("h", 0)).collect();
        assert_eq!(pick_group(&many, true).len(), MAX_GROUP);
        assert!(pick_group(&[], true).is_empty());
    }

    #[test]
    fn a_heartbeat_queued_behind_large_snapshots_is_committed_before_them() {
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.db()).unwrap();
        let large = |host: &str, base: u64| {
            let listeners = (0..3_000u64)
                .map(|i| owned(10_000 + i as u16, base + i, &[10]))
                .collect();
            batch(host, "s", vec![snapshot(1, ts(1), listeners)])
        };
        let (sender, answers) = std::sync::mpsc::channel();
        let queue = |batch: Batch| {
            let (sender, host) = (sender.clone(), batch.host.clone());
            store.ingest_queued(
                batch,
                ts(2),
                Box::new(move |result| {
                    let _ = sender.send((host, result.is_ok()));
                }),
            );
        };
        // Everything queues while the writer is held, as behind a long commit.
        let writer = store.writer();
        queue(large("big-1", 100_000));
        queue(large("big-2", 200_000));
        queue(large("big-3", 300_000));
        queue(heartbeat("quiet", "s", ts(1)));
        drop(writer);
        let order: Vec<(String, bool)> = (0..4).map(|_| answers.recv().unwrap()).collect();
        assert_eq!(order[0], ("quiet".to_owned(), true), "{order:?}");
        assert!(order.iter().all(|(_, ok)| *ok), "{order:?}");
        assert_eq!(count(&dir.db(), "intervals"), 9_000);
    }

    #[test]
    fn batches_queued_when_the_store_is_dropped_are_committed_and_answered_first() {
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.db()).unwrap();
        let (sender, answers) = std::sync::mpsc::channel();
        for h in 0..20u64 {
            let sender = sender.clone();
            let reports = vec![snapshot(1, ts(1), vec![owned(22, h, &[10])])];
            store.ingest_queued(
                batch(&format!("web-{h}"), "s", reports),
                ts(2),
                Box::new(move |result| sender.send(result).unwrap()),
            );
        }
        drop(store);
        drop(sender);
        let answers: Vec<_> = answers.iter().collect();
        assert_eq!(answers.len(), 20);
        assert!(answers.iter().all(|a| matches!(a, Ok(a) if *a == ack(1, false))));
        assert_eq!(count(&dir.db(), "intervals"), 20);
    }

    #[test]
    fn a_program_is_unique_by_its_slot_so_racing_writers_share_one_row_and_content_decides_equality() {
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.db()).unwrap();
        let mut sshd = owned(22, 1, &[10]);
        sshd.processes[0].exe = None;
        sshd.processes[0].container = None;
        store
            .ingest(&batch("h", "s", vec![snapshot(1, ts(0), vec![sshd.clone()])]), ts(0))
            .unwrap();
        drop(store);
        // Another writer that checked before the first inserted would now insert
        // the same content again, in the same slot: the index refuses it.
        let conn = Connection::open(dir.db()).unwrap();
        let duplicate = conn.execute(
            "INSERT INTO programs (hash, name, exe, cmdline, uid, user, container, unit)
             SELECT hash, name, exe, cmdline, uid, user, container, unit FROM programs",
            [],
        );
        let message = duplicate.unwrap_err().to_string();
        assert!(message.contains("UNIQUE"), "{message}");
        // A program differing only in a NULL against an empty string is another
        // program; had its hash been the same, it would be in the next slot.
        conn.execute(
            "INSERT INTO programs (hash, name, exe, cmdline, uid, user, container, unit)
             SELECT hash + 1, name, '', cmdline, uid, user, container, unit FROM programs",
            [],
        )
        .unwrap();
        drop(conn);
        // The store finds the program whose content it is, among the slots.
        let store = SqliteStore::open(&dir.db()).unwrap();
        let mut again = sshd.clone();
        again.inode = 2;
        store
            .ingest(&batch("h", "s2", vec![snapshot(1, ts(5), vec![again.clone()])]), ts(5))
            .unwrap();
        assert_eq!(store.listeners_at("h", ts(5)).unwrap()[0].listener, again);
        assert_eq!(count(&dir.db(), "programs"), 2);
    }

    #[test]
    fn a_program_whose_hash_another_holds_takes_the_next_slot_and_is_found_there_after_a_hole() {
        let dir = TempDir::new();
        let nginx = owned(80, 1, &[10]);
        let natural = to_bits(ProgramRef::of(&nginx.processes[0]).hash());
        // Another program (a collision) holds nginx's hash, and the slot after it too.
        let store = SqliteStore::open(&dir.db()).unwrap();
        drop(store);
        let conn = Connection::open(dir.db()).unwrap();
        for (slot, name) in [(natural, "impostor"), (natural + 1, "other")] {
            conn.execute(
                "INSERT INTO programs (hash, name, exe, cmdline, uid, user, container, unit)
                 VALUES (?1, ?2, NULL, NULL, NULL, NULL, NULL, NULL)",
                params![slot, name],
            )
            .unwrap();
        }
        drop(conn);
        let store = SqliteStore::open(&dir.db()).unwrap();
        store
            .ingest(&batch("h", "s", vec![snapshot(1, ts(0), vec![nginx.clone()])]), ts(0))
            .unwrap();
        assert_eq!(store.listeners_at("h", ts(0)).unwrap()[0].listener, nginx);
        drop(store);
        let slot: i64 = Connection::open(dir.db())
            .unwrap()
            .query_row(
                "SELECT hash FROM programs WHERE name = ?1",
                [&*nginx.processes[0].name],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(slot, natural + 2, "the first free slot");
        // The collision goes (pruned, say): nginx is still found in its slot, not stored again.
        Connection::open(dir.db())
            .unwrap()
            .execute("DELETE FROM programs WHERE name = 'impostor'", [])
            .unwrap();
        let store = SqliteStore::open(&dir.db()).unwrap();
        let mut again = nginx.clone();
        again.inode = 2;
        store
            .ingest(&batch("h", "s2", vec![snapshot(1, ts(5), vec![again.clone()])]), ts(5))
            .unwrap();
        assert_eq!(store.listeners_at("h", ts(5)).unwrap()[0].listener, again);
        assert_eq!(count(&dir.db(), "programs"), 2, "other and nginx");
    }

    #[test]
    fn programs_that_shared_a_hash_before_slots_are_given_the_next_ones_and_still_found() {
        let dir = TempDir::new();
        let nginx = owned(80, 1, &[10]);
        let natural = to_bits(ProgramRef::of(&nginx.processes[0]).hash());
        let store = SqliteStore::open(&dir.db()).unwrap();
        store
            .ingest(&batch("h", "s", vec![snapshot(1, ts(0), vec![nginx.clone()])]), ts(0))
            .unwrap();
        drop(store);
        // As migration 10 left it: unique by content only, where a collision
        // (another program, the same hash) can stand.
        let conn = Connection::open(dir.db()).unwrap();
        conn.execute_batch(&format!(
            "DROP INDEX programs_by_slot; CREATE INDEX programs_by_hash ON programs (hash);
             INSERT INTO programs (hash, name) VALUES ({natural}, 'impostor');
             ALTER TABLE intervals DROP COLUMN firewall;
             ALTER TABLE hosts DROP COLUMN host_netns; ALTER TABLE hosts DROP COLUMN addresses; DROP TABLE probe_verdicts; DROP TABLE peer_points;
             PRAGMA user_version = 10;"
        ))
        .unwrap();
        drop(conn);
        let store = SqliteStore::open(&dir.db()).unwrap();
        let slots: Vec<(String, i64)> = {
            let conn = Connection::open(dir.db()).unwrap();
            let mut stmt = conn.prepare("SELECT name, hash FROM programs ORDER BY id").unwrap();
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
            rows.collect::<Result<_, _>>().unwrap()
        };
        assert_eq!(
            slots,
            vec![
                (nginx.processes[0].name.to_string(), natural),
                ("impostor".to_owned(), natural + 1)
            ],
            "the later one moves to the next slot"
        );
        let mut again = nginx.clone();
        again.inode = 2;
        store
            .ingest(&batch("h", "s2", vec![snapshot(1, ts(5), vec![again.clone()])]), ts(5))
            .unwrap();
        assert_eq!(store.listeners_at("h", ts(5)).unwrap()[0].listener, again);
        assert_eq!(
            count(&dir.db(), "programs"),
            2,
            "found in its new slot, not stored again"
        );
    }

    #[test]
    fn a_long_cmdline_is_stored_once() {
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.db()).unwrap();
        let java = |pid| Process {
            pid,
            name: "java".into(),
            cmdline: Some(
                format!(
                    "/usr/bin/java -Xmx4g -cp {} org.example.Main",
                    "/opt/app/lib/x.jar:".repeat(200)
                )
                .into(),
            ),
            exe: Some("/usr/lib/jvm/bin/java".into()),
            uid: Some(1000),
            user: Some("app".into()),
            container: None,
            unit: Some("app.service".into()),
        };
        let mut http = owned(8080, 1, &[]);
        http.processes = vec![java(100)];
        let mut admin = owned(8081, 2, &[]);
        admin.processes = vec![java(100)];
        let mut restarted = owned(8080, 3, &[]);
        restarted.processes = vec![java(200)];
        let reports = vec![
            snapshot(1, ts(0), vec![http.clone(), admin]),
            delta(2, ts(10), vec![restarted], vec![http]),
        ];
        store.ingest(&batch("app-1", "s", reports), ts(10)).unwrap();
        // The same program on another host, in another transaction.
        let mut other = owned(8080, 1, &[]);
        other.processes = vec![java(300)];
        store
            .ingest(&batch("app-2", "s", vec![snapshot(1, ts(0), vec![other])]), ts(10))
            .unwrap();
        assert_eq!(count(&dir.db(), "intervals"), 4);
        assert_eq!(count(&dir.db(), "programs"), 1);
        let rows = store.listeners_at("app-1", ts(10)).unwrap();
        assert_eq!(rows[0].listener.processes, vec![java(200)]);
        // Another user is another program.
        let mut root = owned(9090, 4, &[]);
        root.processes = vec![Process {
            user: Some("root".into()),
            ..java(400)
        }];
        store
            .ingest(&batch("app-2", "s", vec![delta(2, ts(20), vec![root], vec![])]), ts(20))
            .unwrap();
        assert_eq!(count(&dir.db(), "programs"), 2);
    }

    #[test]
    fn the_queries_use_their_indexes() {
        let dir = TempDir::new();
        drop(SqliteStore::open(&dir.db()).unwrap());
        let conn = Connection::open(dir.db()).unwrap();
        let plan = |sql: &str| -> String {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let nulls = std::iter::repeat_n(rusqlite::types::Null, stmt.parameter_count());
            let rows = stmt
                .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
                .unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join("\n")
        };
        let who = plan(&who_sql());
        assert!(
            who.contains("intervals_by_port (port=? AND closed_at=? AND opened_at<?)"),
            "{who}"
        );
        assert!(who.contains("intervals_by_port (port=? AND closed_at>?)"), "{who}");
        let at = plan(&listeners_at_sql());
        assert!(
            at.contains("intervals_by_host (host_id=? AND closed_at=? AND opened_at<?)"),
            "{at}"
        );
        assert!(at.contains("intervals_by_host (host_id=? AND closed_at>?)"), "{at}");
        let open = plan(&FIND_OPEN_SQL);
        assert!(open.contains("intervals_by_host (host_id=? AND closed_at=?)"), "{open}");
        let history = plan(&history_sql());
        assert!(
            history.contains("intervals_by_host (host_id=? AND closed_at=?)"),
            "{history}"
        );
        assert!(
            history.contains("intervals_by_host (host_id=? AND closed_at>?)"),
            "{history}"
        );
        let export = plan(&export_sql());
        assert!(export.contains("intervals_by_opened (opened_at>?)"), "{export}");
        assert!(
            !export.contains("TEMP B-TREE"),
            "read in index order, not sorted: {export}"
        );
        assert!(!format!("{who}{at}{open}{history}{export}").contains("SCAN"));
    }

    #[test]
    fn database_errors_say_what_to_do() {
        let full = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL), None);
        let full = on_file(Path::new("/var/lib/portwatch/collector.db"), db(full));
        assert!(
            matches!(full, StoreError::DiskFull { .. }) && full.retry_helps(),
            "{full:?}"
        );
        assert_eq!(
            full.to_string(),
            "disk full: cannot write the database /var/lib/portwatch/collector.db: free space on its file system \
             (nothing of this write was stored; it succeeds once there is room)"
        );
        let read_only = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY), None);
        let read_only = db(read_only);
        assert!(read_only.to_string().contains("writable") && !read_only.retry_helps());
        for code in [rusqlite::ffi::SQLITE_BUSY, rusqlite::ffi::SQLITE_LOCKED] {
            let busy = db(rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None));
            assert!(matches!(busy, StoreError::Busy(_)) && busy.retry_helps(), "{busy:?}");
            assert!(busy.to_string().contains("another program"), "{busy}");
        }
        let corrupt = db(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            None,
        ));
        assert!(
            !corrupt.retry_helps() && corrupt.to_string().contains("backup"),
            "{corrupt}"
        );
    }

    /// Informational: bytes of database file per stored listener change.
    #[test]
    fn storage_per_listener_change_is_reported() {
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.db()).unwrap();
        let (hosts, listeners_per_host, steps) = (50u64, 40u64, 100u64);
        let mut changes = 0u64;
        let svc = |h: u64, i: u64, generation: u64| {
            let mut l = owned(
                1000 + i as u16,
                1_000_000 + h * 100_000 + i * 1000 + generation,
                &[(10_000 + i * 100 + generation) as u32],
            );
            if i % 2 == 1 {
                l.processes
                    .push(process((20_000 + i * 100 + generation) as u32, "worker"));
            }
            l
        };
        for h in 0..hosts {
            let host = format!("host-{h:05}.prod.example.com");
            let initial: Vec<_> = (0..listeners_per_host).map(|i| svc(h, i, 0)).collect();
            changes += listeners_per_host;
            let mut reports = vec![snapshot(1, ts(0), initial)];
            // Each step restarts one service: its listener closes, a new one opens.
            for step in 0..steps {
                let i = (step * 7 + h) % listeners_per_host;
                let generation = step + 1;
                let old = store_generation(&reports, i);
                reports.push(delta(
                    step + 2,
                    ts(60 * (step as i64 + 1)),
                    vec![svc(h, i, generation)],
                    vec![svc(h, i, old)],
                ));
                changes += 2;
            }
            let ack = store.ingest(&batch(&host, "s", reports), ts(100_000)).unwrap();
            assert_eq!(ack, super::tests::ack(steps + 1, false));
        }
        let conn = Connection::open(dir.db()).unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
        let bytes: i64 = conn
            .query_row(
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let intervals = count(&dir.db(), "intervals");
        eprintln!(
            "storage: {bytes} bytes for {changes} listener changes ({intervals} intervals, {} programs): \
             {:.0} bytes per change",
            count(&dir.db(), "programs"),
            bytes as f64 / changes as f64
        );
        assert_eq!(intervals as u64, hosts * (listeners_per_host + steps));
    }

    /// Informational, slow (`cargo test --release -p portwatch-collector -- --ignored --nocapture`):
    /// a month of a fleet (`PORTWATCH_BENCH_HOSTS`, 10,000 by default), each host with 20 listeners
    /// and 5 service restarts a day; prints the ingest rate, bytes per change and query latencies.
    /// With `PORTWATCH_BENCH_DB=FILE` the database is kept there, and a later run that finds it
    /// measures the queries again without loading it anew.
    #[test]
    #[ignore]
    fn a_month_of_a_large_fleet_is_reported() {
        use std::time::Instant;
        let hosts: u64 = std::env::var("PORTWATCH_BENCH_HOSTS").map_or(10_000, |v| v.parse().unwrap());
        let (listeners, days, restarts_per_day) = (20u64, 30i64, 5u64);
        let dir = TempDir::new();
        let kept = std::env::var_os("PORTWATCH_BENCH_DB").map(PathBuf::from);
        let path = kept.clone().unwrap_or_else(|| dir.db());
        let loaded = kept.as_ref().is_some_and(|p| p.exists());
        let store = SqliteStore::open(&path).unwrap();
        let day = 86_400i64;
        // Service i of host h in generation g: ports 22, 80, 443, ... ; workers share the socket.
        let svc = |h: u64, i: u64, g: u64| {
            let port = [22u16, 80, 443, 5432, 6379, 9100, 8080, 53][i as usize % 8] + (i / 8) as u16 * 1000;
            let base = (1000 + i * 50 + g * 7) as u32;
            let pids: Vec<u32> = if i == 1 || i == 2 {
                (base..base + 5).collect()
            } else {
                vec![base]
            };
            let mut l = owned(port, h * 1_000_000 + i * 10_000 + g, &pids);
            for p in &mut l.processes {
                p.cmdline =
                    Some(format!("/usr/bin/service{i} --config /etc/service{i}/main.conf --listen :{port}").into());
            }
            l
        };
        let started = Instant::now();
        let mut changes = 0u64;
        for h in (0..hosts).filter(|_| !loaded) {
            let mut generation = vec![0u64; listeners as usize];
            let mut reports = vec![snapshot(
                1,
                ts(-30 * day),
                (0..listeners).map(|i| svc(h, i, 0)).collect(),
            )];
            changes += listeners;
            for k in 0..(days as u64 * restarts_per_day) {
                let i = ((k * 7 + h) % listeners) as usize;
                let old = svc(h, i as u64, generation[i]);
                generation[i] += 1;
                let at = ts(-30 * day + (k as i64 + 1) * day / restarts_per_day as i64 - (h % 1000) as i64);
                reports.push(delta(k + 2, at, vec![svc(h, i as u64, generation[i])], vec![old]));
                changes += 2;
            }
            store
                .ingest(&batch(&format!("host-{h:05}"), "s", reports), ts(0))
                .unwrap();
        }
        let elapsed = started.elapsed();
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
        let bytes: i64 = conn
            .query_row(
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
                [],
                |r| r.get(0),
            )
            .unwrap();
        if loaded {
            eprintln!(
                "fleet: {hosts} hosts, as loaded before in {} ({bytes} bytes)",
                path.display()
            );
        } else {
            eprintln!(
                "fleet: {hosts} hosts, {changes} changes ingested in {elapsed:?} ({:.0} changes/s); {bytes} bytes, \
                 {:.0} bytes per change",
                changes as f64 / elapsed.as_secs_f64(),
                bytes as f64 / changes as f64
            );
        }
        // Each query's time until its rows are in hand (the API frees them after answering),
        // and the time to render them as JSON as the API does.
        let measure = |name: &str, query: &mut dyn FnMut(u64) -> Vec<ListenerRow>| {
            let mut times: Vec<_> = (0..200)
                .map(|n| {
                    let t = Instant::now();
                    let rows = query(n);
                    let read = t.elapsed();
                    let t = Instant::now();
                    let json = serde_json::to_vec(&rows).unwrap();
                    (read, t.elapsed(), rows.len(), json.len())
                })
                .collect();
            let rows = times[0].2;
            let mut renders: Vec<_> = times.iter().map(|t| t.1).collect();
            times.sort();
            renders.sort();
            eprintln!(
                "{name}: {rows} rows, read p50 {:?} p99 {:?}; JSON ({} bytes) p50 {:?} p99 {:?}",
                times[100].0, times[197].0, times[0].3, renders[100], renders[197]
            );
        };
        measure("who 22 now", &mut |_| store.who(22, None, ts(0)).unwrap());
        measure("who 22/tcp at a past instant", &mut |n| {
            store
                .who(22, Some(Proto::Tcp), ts(-(n as i64 % 30) * day - 3600))
                .unwrap()
        });
        measure("who 8080 at a past instant", &mut |n| {
            store.who(8080, None, ts(-(n as i64 % 30) * day - 3600)).unwrap()
        });
        measure("who 9999 (nobody) now", &mut |_| store.who(9999, None, ts(0)).unwrap());
        measure("listeners_at a past instant", &mut |n| {
            let host = format!("host-{:05}", n * 7919 % hosts);
            store.listeners_at(&host, ts(-(n as i64 % 30) * day)).unwrap()
        });
        measure("history of a host", &mut |n| {
            let host = format!("host-{:05}", n * 7919 % hosts);
            store.history(&host, None, None, None).unwrap()
        });
    }

    /// The generation of service `i` as of the end of `reports` (built by
    /// `storage_per_listener_change_is_reported`).
    fn store_generation(reports: &[Report], i: u64) -> u64 {
        reports
            .iter()
            .rev()
            .find_map(|r| match &r.body {
                ReportBody::Delta { opened, .. } if u64::from(opened[0].local_port) == 1000 + i => Some(r.seq - 1),
                _ => None,
            })
            .unwrap_or(0)
    }

    #[test]
    fn migrating_a_version_2_database_fills_first_seen_ports_from_its_history() {
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.db()).unwrap();
        store
            .ingest(
                &batch("web-1", "s1", vec![snapshot(1, ts(100), vec![owned(443, 1, &[10])])]),
                ts(100),
            )
            .unwrap();
        drop(store);
        let conn = Connection::open(dir.db()).unwrap();
        conn.execute_batch(
            "DROP TABLE ports_first_seen; ALTER TABLE hosts DROP COLUMN clock_at;
             ALTER TABLE hosts DROP COLUMN clock_skew_ms; ALTER TABLE hosts DROP COLUMN clock_skew_at;
             DROP TABLE snapshot_parts; DROP TABLE sink_done; DROP INDEX programs_by_slot; CREATE INDEX programs_by_hash ON programs (hash);
             ALTER TABLE hosts DROP COLUMN detection; ALTER TABLE intervals DROP COLUMN firewall;
             ALTER TABLE hosts DROP COLUMN host_netns; ALTER TABLE hosts DROP COLUMN addresses; DROP TABLE probe_verdicts; DROP TABLE peer_points;
             PRAGMA user_version = 2;",
        )
        .unwrap();
        drop(conn);
        let store = SqliteStore::open(&dir.db()).unwrap();
        let seen = store.first_seen_ports(ts(0), None).unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(
            (seen[0].port, seen[0].host.as_str(), seen[0].first_seen),
            (443, "web-1", ts(100))
        );
    }

    /// A finding of review: the intervals written since the scan were read
    /// for the batch being deleted only, then not again, so a program of a
    /// later batch that one of them named was deleted.
    #[test]
    fn a_program_named_after_the_scan_is_kept_whichever_batch_it_is_in() {
        use crate::store::{Maintenance, PruneCursor, PruneStage};
        use portwatch_fixtures::served_by;
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.db()).unwrap();
        let day = |d: i64| ts(d * 86_400);
        let send = |seq, at, reports| {
            store.ingest(&batch("web-1", "s", vec![reports]), at).unwrap();
            let _ = seq;
        };
        let first = vec![served_by(80, "nginx"), served_by(81, "varnish"), served_by(22, "sshd")];
        send(1, day(0), snapshot(1, day(0), first));
        send(
            2,
            day(1),
            delta(
                2,
                day(1),
                vec![],
                vec![served_by(80, "nginx"), served_by(81, "varnish")],
            ),
        );
        let month = Some(std::time::Duration::from_secs(30 * 86_400));
        let plan = crate::retention::plan(
            day(60),
            &crate::retention::Retention {
                history: month,
                alerts: month,
                baseline_log: month,
            },
        );
        let mut cursor = PruneCursor::default();
        // Up to the scan of programs: nginx and varnish found unnamed, none deleted yet.
        while cursor.stage != PruneStage::Programs || cursor.programs.is_empty() {
            assert_eq!(store.prune(&plan, &mut cursor, 1).unwrap().programs, 0);
            assert!(!cursor.done(), "the pass ended before its scan of programs");
        }
        assert_eq!(cursor.programs.len(), 2);
        // Both are named again before any delete.
        send(
            3,
            day(60),
            delta(
                3,
                day(60),
                vec![served_by(90, "nginx"), served_by(91, "varnish")],
                vec![],
            ),
        );
        while !cursor.done() {
            store.prune(&plan, &mut cursor, 1).unwrap();
        }
        let open = store.listeners_at("web-1", day(60)).unwrap();
        let names: Vec<(u16, &str)> = open
            .iter()
            .map(|r| (r.listener.local_port, &*r.listener.processes[0].name))
            .collect();
        assert_eq!(names, vec![(22, "sshd"), (90, "nginx"), (91, "varnish")]);
    }
}
