//! The PostgreSQL store: the history in a PostgreSQL database that any number
//! of collectors share.
//!
//! # Connections
//!
//! An async client (tokio-postgres) with a pool of connections (deadpool),
//! driven by a small runtime of the store's own: the store's methods are
//! synchronous like every backend's (callers run them on blocking threads),
//! and each blocks on its future there. TLS to the database goes through
//! rustls, as `sslmode` in the URL asks (`disable`, `prefer`, `require`),
//! with the certificates of [`PostgresOptions::ca_file`].
//!
//! # Several writers
//!
//! What the SQLite store gets from its single writer is made to hold here
//! by the database itself:
//! - a host's batches are applied in order, by one ingest worker of this
//!   store (hosts are spread over the workers by name) and, between
//!   collectors, under the lock of the host's row, which the first statement
//!   of every batch takes;
//! - a program is interned under the unique constraint on its slot
//!   (`ON CONFLICT DO NOTHING`, then read back), so two writers storing the
//!   same new program store it once;
//! - outbox ids are given under a transaction-level advisory lock held to
//!   commit ([`OUTBOX_LOCK`]), so they become visible in id order;
//! - two collectors syncing the alerts of a host lock its unresolved alerts
//!   in id order and open through the unique index of unresolved keys, so
//!   an alert is opened and resolved once (see [`policy`]);
//! - every ingest transaction holds [`PROGRAMS_LOCK`] shared, and retention
//!   deletes unnamed programs holding it exclusively, after looking again
//!   at what was written since it found them (see [`prune`]);
//! - host names are cached by id and a missing id is read by id, so a host
//!   whose row commits after one with a greater id is still named.
//!
//! A transaction that loses a deadlock or a serialization conflict to
//! another is rolled back whole and run again (at most [`TRANSACTION_TRIES`]
//! times) before [`StoreError::Busy`] is answered.
//!
//! # Heartbeats
//!
//! A heartbeat writes nothing as it comes: its host's `last_seen` and skew
//! are kept in memory and written for every host heard from in one
//! statement each flush window, the newest value winning whichever
//! collector writes last (see [`heartbeat`]).
//!
//! # Schema
//!
//! Versioned by the table `portwatch_schema`: migration `n`
//! (`migrations/000n_*.sql`) takes it from version `n - 1` to `n`, each in
//! a transaction, under a session advisory lock ([`MIGRATION_LOCK`]) so that
//! collectors starting at once migrate once. A database of a newer version
//! is refused. Intervals are partitioned by the month they closed in (open
//! ones in the default partition); months are made ahead of time
//! ([`PARTITIONS_AHEAD`]).

mod heartbeat;
mod lease;
mod peers;
mod policy;
mod probe;
mod prune;
mod read;
mod write;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use jiff::Timestamp;
use tokio::runtime::Runtime;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use super::stored::HostCache;
use super::StoreError;
use crate::clock;

/// The migrations, in order: entry `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_firewall.sql"),
    include_str!("migrations/0003_probe.sql"),
    include_str!("migrations/0004_peers.sql"),
];

/// The advisory lock (session level) under which a collector migrates.
const MIGRATION_LOCK: i64 = 0x7077_0001;

/// The advisory lock (transaction level) under which outbox events get their ids.
pub(super) const OUTBOX_LOCK: i64 = 0x7077_0002;

/// The advisory lock (transaction level) under which partitions are made.
const PARTITION_LOCK: i64 = 0x7077_0003;

/// The advisory lock (transaction level) every ingest transaction holds
/// shared, and the deletion of unnamed programs exclusively (see [`prune`]):
/// a program is never deleted between an ingest finding it and committing
/// the interval that names it.
pub(super) const PROGRAMS_LOCK: i64 = 0x7077_0004;

/// The advisory lock (transaction level) under which baselines change, so
/// that their log says what each change was.
pub(super) const BASELINES_LOCK: i64 = 0x7077_0005;

/// How many times a transaction that lost a deadlock or a serialization
/// conflict is run before the call answers [`StoreError::Busy`].
const TRANSACTION_TRIES: u32 = 4;

/// How far ahead of now months of closed intervals have their partition.
const PARTITIONS_AHEAD: jiff::SignedDuration = jiff::SignedDuration::from_hours(24 * 62);

pub use heartbeat::DEFAULT_FLUSH_EVERY;

/// The shortest flush window of heartbeats accepted ([`PostgresOptions::heartbeat_flush`]).
pub const MIN_FLUSH_EVERY: Duration = Duration::from_millis(100);

/// The longest flush window of heartbeats accepted: a host's `last_seen`
/// may lag by this much through another collector.
pub const MAX_FLUSH_EVERY: Duration = Duration::from_secs(60);

/// Connections the pool keeps at most, by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16;

/// How long a call waits for a connection of the pool, or for one to be made.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the database is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// `postgres://` or `postgresql://` URL, or libpq key=value pairs, as
    /// tokio-postgres reads them (`host=/run/postgresql` for a socket,
    /// `sslmode=disable|prefer|require`).
    pub url: String,
    /// A file holding the password (its first line), rather than the URL.
    pub password_file: Option<PathBuf>,
    /// PEM certificates that a TLS connection to the database is verified
    /// against; Debian's bundle (`/etc/ssl/certs/ca-certificates.crt`) if unset.
    pub ca_file: Option<PathBuf>,
    /// Connections kept at most.
    pub max_connections: usize,
    /// How often the heartbeats kept in memory are written (see
    /// [`heartbeat`]): a crash loses at most this much of `last_seen`, and
    /// other collectors read it up to this much behind.
    pub heartbeat_flush: Duration,
}

impl PostgresOptions {
    /// The options of `url`, the rest at their defaults.
    pub fn new(url: impl Into<String>) -> PostgresOptions {
        PostgresOptions {
            url: url.into(),
            password_file: None,
            ca_file: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            heartbeat_flush: DEFAULT_FLUSH_EVERY,
        }
    }

    /// Whether `db` (a `db` setting or `--db`) names a PostgreSQL database
    /// rather than a SQLite file.
    pub fn is_url(db: &str) -> bool {
        db.starts_with("postgres://") || db.starts_with("postgresql://")
    }
}

/// The history store in a PostgreSQL database.
pub struct PostgresStore {
    inner: Arc<Inner>,
    /// The ingest workers' queues (see [`write`]); emptied on drop.
    workers: Vec<tokio::sync::mpsc::UnboundedSender<write::Queued>>,
    /// The ingest workers, awaited on drop.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Tells the heartbeat flusher to write once more and stop.
    stop_flusher: tokio::sync::watch::Sender<bool>,
    /// The heartbeat flusher, awaited on drop (after the workers).
    flusher: Option<tokio::task::JoinHandle<()>>,
    /// Drives the connections and the workers; `None` once dropped.
    runtime: Option<Runtime>,
}

/// What the store's calls and its workers share.
pub(super) struct Inner {
    pub(super) pool: Pool,
    /// How far agents' clocks are trusted (ingest, and `hosts`' skew).
    pub(super) clock: clock::Limits,
    /// Host names by id, for reading intervals.
    pub(super) hosts: HostCache,
    /// The database as named in messages (no password).
    pub(super) target: String,
    /// The start (ms) of the first month without a partition.
    partitions_until: AtomicI64,
    /// Heartbeats kept in memory until the next flush.
    heartbeats: heartbeat::Heartbeats,
}

impl PostgresStore {
    /// Connects to the database of `options`, brings its schema to this
    /// build's version and starts the ingest workers. Agents' clocks are
    /// judged by `clock`.
    ///
    /// Fails with [`StoreError::Open`] when the options are wrong, the
    /// server cannot be reached or refuses the login, or the schema is
    /// newer than this build knows.
    pub fn open(options: &PostgresOptions, clock: clock::Limits) -> Result<PostgresStore, StoreError> {
        let target = shown(&options.url);
        let open_error = |message: String| StoreError::Open {
            path: target.clone(),
            message,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("postgres")
            .enable_all()
            .build()
            .map_err(|e| open_error(format!("cannot start the database client's runtime: {e}")))?;
        let pool = pool(options).map_err(open_error)?;
        let inner = Arc::new(Inner {
            pool,
            clock,
            hosts: HostCache::default(),
            target: target.clone(),
            partitions_until: AtomicI64::new(i64::MIN),
            heartbeats: heartbeat::Heartbeats::new(options.heartbeat_flush.clamp(MIN_FLUSH_EVERY, MAX_FLUSH_EVERY)),
        });
        runtime
            .block_on(async {
                let mut client = inner.pool.get().await.map_err(|e| describe_pool(&e))?;
                migrate(&mut client).await?;
                inner
                    .ensure_partitions(Timestamp::now())
                    .await
                    .map_err(|e| e.to_string())
            })
            .map_err(open_error)?;
        let (workers, tasks) = write::start(&runtime, &inner, options.max_connections);
        let (stop_flusher, stop) = tokio::sync::watch::channel(false);
        let flusher = runtime.spawn(heartbeat::flush_every(Arc::clone(&inner), stop));
        Ok(PostgresStore {
            inner,
            workers,
            tasks,
            stop_flusher,
            flusher: Some(flusher),
            runtime: Some(runtime),
        })
    }

    /// Runs `call` on the store's runtime and waits for it. Called on a
    /// worker of a multi-threaded async runtime (which should have used
    /// `spawn_blocking`), it tells that runtime it blocks, rather than
    /// failing: a store call is synchronous, wherever it is made.
    fn block<T>(&self, call: impl AsyncFnOnce(&Inner) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let Some(runtime) = &self.runtime else {
            return Err(StoreError::Database("the store is closing".to_owned()));
        };
        let run = || runtime.block_on(call(&self.inner));
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Err(_) => run(),
            Ok(tokio::runtime::RuntimeFlavor::CurrentThread) => Err(StoreError::Database(
                "the PostgreSQL store was called on a single-threaded async runtime, which it cannot block: \
                 call it from spawn_blocking"
                    .to_owned(),
            )),
            Ok(_) => tokio::task::block_in_place(run),
        }
    }
}

impl Drop for PostgresStore {
    /// Applies what is queued, writes the heartbeats kept, then stops the
    /// workers and the runtime. On a thread of its own: the store may be
    /// dropped inside another runtime, where this one may be neither
    /// blocked on nor dropped.
    fn drop(&mut self) {
        self.workers.clear();
        let tasks = std::mem::take(&mut self.tasks);
        let flusher = self.flusher.take();
        let stop_flusher = self.stop_flusher.clone();
        if let Some(runtime) = self.runtime.take() {
            let stopped = std::thread::Builder::new()
                .name("postgres-stop".to_owned())
                .spawn(move || {
                    runtime.block_on(async {
                        for task in tasks {
                            let _ = task.await;
                        }
                        // The workers answered their last heartbeats: write them.
                        let _ = stop_flusher.send(true);
                        if let Some(flusher) = flusher {
                            let _ = flusher.await;
                        }
                    });
                    runtime.shutdown_timeout(Duration::from_secs(5));
                });
            if let Ok(thread) = stopped {
                let _ = thread.join();
            }
        }
    }
}

impl Inner {
    /// A connection of the pool.
    pub(super) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(format!("{}: {}", self.target, describe_pool(&e))))
    }

    /// Runs `write` in a transaction and commits it; runs it again when it
    /// lost a deadlock or a serialization conflict (see the module docs).
    pub(super) async fn transact<T>(
        &self,
        write: impl AsyncFn(&deadpool_postgres::Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut client = self.client().await?;
        let mut tries = 0;
        loop {
            tries += 1;
            let tx = client.transaction().await.map_err(pg)?;
            let result = match write(&tx).await {
                Ok(value) => tx.commit().await.map_err(pg).map(|()| value),
                Err(error) => {
                    let _ = tx.rollback().await;
                    Err(error)
                }
            };
            match result {
                Err(StoreError::Busy(_)) if tries < TRANSACTION_TRIES => continue,
                other => return other,
            }
        }
    }

    /// Makes the partitions of the months of closed intervals from the
    /// backlog window before `now` to [`PARTITIONS_AHEAD`] after, where
    /// missing. Cheap when they exist: it looks at the database only when
    /// `now` comes near the last month made.
    pub(super) async fn ensure_partitions(&self, now: Timestamp) -> Result<(), StoreError> {
        let until = now.saturating_add(PARTITIONS_AHEAD).unwrap_or(now);
        if until.as_millisecond() < self.partitions_until.load(Ordering::Relaxed) {
            return Ok(());
        }
        let from = now.saturating_sub(self.clock.max_backlog).unwrap_or(now);
        let months = months_between(from, until);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK])
            .await
            .map_err(pg)?;
        for month in &months {
            let exists = tx
                .query_opt("SELECT 1 WHERE to_regclass($1) IS NOT NULL", &[&month.table])
                .await
                .map_err(pg)?
                .is_some();
            if exists {
                continue;
            }
            let sql = format!(
                "CREATE TABLE {} PARTITION OF intervals FOR VALUES FROM ({}) TO ({})",
                month.table, month.start_ms, month.end_ms
            );
            // Fails where the default partition holds rows closed in that
            // month (a month made too late): they stay there, served and
            // pruned the same, and the month goes without a partition.
            tx.execute("SAVEPOINT partition", &[]).await.map_err(pg)?;
            match tx.batch_execute(&sql).await {
                Ok(()) => tx.execute("RELEASE SAVEPOINT partition", &[]).await.map(drop),
                Err(e) => {
                    tracing::warn!(partition = %month.table, error = %describe(&e), "cannot make a partition of intervals");
                    tx.execute("ROLLBACK TO SAVEPOINT partition", &[]).await.map(drop)
                }
            }
            .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)?;
        if let Some(last) = months.last() {
            self.partitions_until.fetch_max(last.end_ms, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// A month of closed intervals: its partition's name and bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Month {
    table: String,
    start_ms: i64,
    end_ms: i64,
}

impl Month {
    /// The month whose partition is `table` (`intervals_YYYYMM`, as
    /// [`months_between`] names them); `None` for any other table.
    fn of_table(table: &str) -> Option<Month> {
        let digits = table.strip_prefix("intervals_")?;
        if digits.len() != 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let date = jiff::civil::Date::new(digits[..4].parse().ok()?, digits[4..].parse().ok()?, 1).ok()?;
        let start = jiff::tz::Offset::UTC
            .to_timestamp(date.to_datetime(jiff::civil::Time::midnight()))
            .ok()?;
        months_between(start, start).pop().filter(|month| month.table == table)
    }
}

/// The months (UTC) from the one of `from` to the one of `until`, both included.
fn months_between(from: Timestamp, until: Timestamp) -> Vec<Month> {
    let utc = jiff::tz::Offset::UTC;
    let first = utc.to_datetime(from).date().first_of_month();
    let last = utc.to_datetime(until).date().first_of_month();
    let ms = |date: jiff::civil::Date| {
        utc.to_timestamp(date.to_datetime(jiff::civil::Time::midnight()))
            .map_or(i64::MAX, Timestamp::as_millisecond)
    };
    let mut months = Vec::new();
    let mut month = first;
    while month <= last {
        let Ok(next) = month.checked_add(jiff::Span::new().months(1)) else {
            break;
        };
        months.push(Month {
            table: format!("intervals_{:04}{:02}", month.year(), month.month()),
            start_ms: ms(month),
            end_ms: ms(next),
        });
        month = next;
    }
    months
}

/// The pool of `options`: its connection settings parsed, the password read
/// from its file, TLS set up as `sslmode` asks. Connects nothing yet.
fn pool(options: &PostgresOptions) -> Result<Pool, String> {
    let mut config: tokio_postgres::Config = options.url.parse().map_err(|e| {
        format!(
            "{e}: give a URL such as postgres://portwatch@db.example/portwatch (or postgresql://, or libpq \
             key=value pairs such as \"host=/run/postgresql dbname=portwatch\")"
        )
    })?;
    if config.get_user().is_none() {
        // As libpq does: the login of the user running the collector.
        if let Ok(user) = std::env::var("USER") {
            config.user(user);
        }
    }
    if let Some(file) = &options.password_file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read the password file {}: {e}", file.display()))?;
        let password = text.lines().next().unwrap_or_default();
        if password.is_empty() {
            return Err(format!("the password file {} is empty", file.display()));
        }
        config.password(password);
    }
    config.connect_timeout(CONNECT_TIMEOUT);
    config.application_name("portwatch-collector");
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match config.get_ssl_mode() {
        tokio_postgres::config::SslMode::Disable => Manager::from_config(config, NoTls, manager_config),
        _ => Manager::from_config(config, tls(options.ca_file.as_deref())?, manager_config),
    };
    Pool::builder(manager)
        .max_size(options.max_connections.max(2))
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| format!("cannot set up the connection pool: {e}"))
}

/// Debian's bundle of the system's trusted certificates.
const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// TLS to the database, verified against the certificates in `ca_file`
/// (the system's bundle if `None`).
fn tls(ca_file: Option<&Path>) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let file = ca_file.unwrap_or(Path::new(SYSTEM_CA_FILE));
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(file).map_err(|e| {
        format!(
            "cannot read the certificates in {}: {e} (set [postgres] ca_file)",
            file.display()
        )
    })?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("a certificate in {} cannot be read: {e}", file.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("a certificate in {} is refused: {e}", file.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Brings the schema to this build's version, under [`MIGRATION_LOCK`].
async fn migrate(client: &mut deadpool_postgres::Object) -> Result<(), String> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| describe(&e))?;
    let migrated = migrate_locked(client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| describe(&e));
    migrated.and(unlocked.map(drop))
}

async fn migrate_locked(client: &mut deadpool_postgres::Object) -> Result<(), String> {
    let described = |e: tokio_postgres::Error| describe(&e);
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS portwatch_schema (version integer NOT NULL)")
        .await
        .map_err(described)?;
    let version: i32 = match client
        .query_opt("SELECT version FROM portwatch_schema", &[])
        .await
        .map_err(described)?
    {
        Some(row) => row.get(0),
        None => {
            let foreign = client
                .query_opt(
                    "SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'intervals'",
                    &[],
                )
                .await
                .map_err(described)?;
            if foreign.is_some() {
                return Err(
                    "the database has a table `intervals` but no portwatch schema version: is it \
                            another program's? Give portwatch a database of its own"
                        .to_owned(),
                );
            }
            client
                .execute("INSERT INTO portwatch_schema (version) VALUES (0)", &[])
                .await
                .map_err(described)?;
            0
        }
    };
    let known = MIGRATIONS.len() as i32;
    if version > known {
        return Err(format!(
            "its schema is version {version}, newer than this collector knows ({known}): run a newer collector"
        ));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = client.transaction().await.map_err(described)?;
        tx.batch_execute(sql)
            .await
            .map_err(|e| format!("migration {} failed: {}", index + 1, describe(&e)))?;
        tx.execute("UPDATE portwatch_schema SET version = $1", &[&(index as i32 + 1)])
            .await
            .map_err(described)?;
        tx.commit().await.map_err(described)?;
    }
    Ok(())
}

/// `url` with any password in it masked, for messages and logs.
pub fn shown(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((credentials, host)) = rest.split_once('@') {
            if let Some((user, _password)) = credentials.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
        return url.to_owned();
    }
    // key=value pairs: mask the value of `password`.
    url.split_whitespace()
        .map(|pair| match pair.split_once('=') {
            Some(("password", _)) => "password=***".to_owned(),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A PostgreSQL error as a message that says what to do where we know it.
pub(super) fn describe(error: &tokio_postgres::Error) -> String {
    let Some(db) = error.as_db_error() else {
        let mut message = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            message = format!("{message}: {cause}");
            source = cause.source();
        }
        return message;
    };
    let code = db.code();
    let hint = if *code == SqlState::INVALID_PASSWORD || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
        " (check the user in the URL and the password file)"
    } else if *code == SqlState::INVALID_CATALOG_NAME {
        " (create the database first: createdb -O portwatch portwatch)"
    } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
        " (the collector's user must own the database: ALTER DATABASE ... OWNER TO ...)"
    } else if *code == SqlState::DISK_FULL {
        " (free space on the database server's disk)"
    } else {
        ""
    };
    format!("{} ({}){hint}", db.message(), code.code())
}

/// A pool error as a message.
fn describe_pool(error: &deadpool_postgres::PoolError) -> String {
    match error {
        deadpool_postgres::PoolError::Backend(e) => describe(e),
        deadpool_postgres::PoolError::Timeout(_) => {
            format!("no connection to the database within {CONNECT_TIMEOUT:?}: is the server up and reachable?")
        }
        other => other.to_string(),
    }
}

/// A PostgreSQL error as a [`StoreError`] that says whether a retry can
/// help: a lost deadlock, a serialization conflict, a lock or statement
/// timeout are [`StoreError::Busy`]; a lost connection, a server shutting
/// down or out of connections [`StoreError::Unavailable`]; a full disk
/// [`StoreError::DiskFull`]; the rest [`StoreError::Database`].
pub(super) fn pg(error: tokio_postgres::Error) -> StoreError {
    let message = describe(&error);
    let Some(code) = error.code() else {
        return StoreError::Unavailable(message);
    };
    let class = &code.code()[..2];
    if *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::LOCK_NOT_AVAILABLE
        || *code == SqlState::QUERY_CANCELED
    {
        StoreError::Busy(message)
    } else if *code == SqlState::DISK_FULL {
        StoreError::DiskFull { path: None }
    } else if class == "08" || class == "57" || class == "53" {
        // Connection exceptions, operator intervention (shutdown), insufficient resources.
        StoreError::Unavailable(message)
    } else {
        StoreError::Database(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_url_is_never_shown() {
        assert_eq!(shown("postgres://pw:s3cret@db:5432/pw"), "postgres://pw:***@db:5432/pw");
        assert_eq!(shown("postgresql://pw@db/pw"), "postgresql://pw@db/pw");
        assert_eq!(
            shown("host=/run/postgresql password=s3cret dbname=pw"),
            "host=/run/postgresql password=*** dbname=pw"
        );
    }

    #[test]
    fn months_are_utc_calendar_months_with_bounds_end_to_end() {
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let months = months_between(at("2026-11-20T10:00:00Z"), at("2027-01-03T00:00:00Z"));
        let tables: Vec<&str> = months.iter().map(|m| m.table.as_str()).collect();
        assert_eq!(tables, ["intervals_202611", "intervals_202612", "intervals_202701"]);
        assert_eq!(months[0].start_ms, at("2026-11-01T00:00:00Z").as_millisecond());
        assert!(months.windows(2).all(|w| w[0].end_ms == w[1].start_ms));
        assert_eq!(months[2].end_ms, at("2027-02-01T00:00:00Z").as_millisecond());
    }

    #[test]
    fn a_partition_is_known_by_its_name_and_no_other_table_is_taken_for_one() {
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let month = Month::of_table("intervals_202612").unwrap();
        assert_eq!(month.start_ms, at("2026-12-01T00:00:00Z").as_millisecond());
        assert_eq!(month.end_ms, at("2027-01-01T00:00:00Z").as_millisecond());
        for other in [
            "intervals_open",
            "intervals_20261",
            "intervals_202613",
            "intervals_2026120",
            "hosts",
        ] {
            assert_eq!(Month::of_table(other), None, "{other}");
        }
    }

    #[test]
    fn a_url_that_cannot_be_parsed_says_what_a_good_one_looks_like() {
        let error = pool(&PostgresOptions::new("postgres://db/pw?frobnicate=1")).unwrap_err();
        assert!(error.contains("postgres://portwatch@db.example/portwatch"), "{error}");
    }

    #[test]
    fn only_postgres_urls_name_a_database_server() {
        assert!(PostgresOptions::is_url("postgres://db/pw"));
        assert!(PostgresOptions::is_url("postgresql://db/pw"));
        assert!(!PostgresOptions::is_url("/var/lib/portwatch/collector.db"));
        assert!(!PostgresOptions::is_url("postgres.db"));
    }
}
