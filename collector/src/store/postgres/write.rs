//! Ingest into PostgreSQL: batches queued to a few workers, each applying
//! what its queue holds in one transaction (a savepoint per batch), by the
//! same history rules as every backend ([`crate::history`], [`crate::clock`]).
//!
//! Hosts are spread over the workers by name, so a host's batches are
//! applied in the order they were queued; between collectors the host's
//! row, locked by the first statement of its batch, orders them. A group
//! that loses a deadlock or a serialization conflict (two collectors
//! interning the same new programs, say) is rolled back whole and applied
//! again; a batch that fails otherwise rolls back alone and gets its error.
//! A group with reports holds [`PROGRAMS_LOCK`] shared to commit, so
//! retention deletes no program it is naming (see [`super::prune`]).
//! A heartbeat of a known host with nothing dropped is not written: it is
//! answered from its host's row (one read for the heartbeats of a group,
//! after the group's writes, so it sees its host's batches queued before
//! it) and kept in memory until the next flush ([`super::heartbeat`]).
//! A group of heartbeats of new hosts only commits without waiting for the
//! WAL flush (`synchronous_commit = off`): losing the last seconds of
//! `last_seen` to a crash of the server loses no history.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use deadpool_postgres::Transaction;
use jiff::Timestamp;
use portwatch_common::wire::{Ack, Batch, ReportBody};
use portwatch_common::Listener;
use tokio::sync::mpsc;

use super::heartbeat::Beat;
use super::{pg, Inner, PROGRAMS_LOCK};
use crate::clock::{self, HostClock};
use crate::history::{self, SessionState, Staged, Step};
use crate::store::stored::{
    corrupt, from_bits, timestamp, to_bits, IntervalKey, ProgramRef, StoredProgram, INTERVAL_KEY_COLUMNS, PROGRAM_PROBE,
};
use crate::store::{listeners_in, IngestDone, StoreError};

/// Most batches applied in one transaction; more wait for the next.
const MAX_GROUP: usize = 64;

/// Most listeners in the batches of one group (a group has one batch at least).
const GROUP_LISTENERS: usize = 10_000;

/// How many times a group that lost a deadlock or a serialization conflict is applied.
const GROUP_TRIES: u32 = 4;

/// A batch waiting for its worker, and where its answer goes.
pub(super) struct Queued {
    pub(super) batch: Batch,
    pub(super) received_at: Timestamp,
    pub(super) done: IngestDone,
}

/// Starts the ingest workers: a quarter of the pool's connections, at
/// least one, so that reads always find a connection.
pub(super) fn start(
    runtime: &tokio::runtime::Runtime,
    inner: &Arc<Inner>,
    max_connections: usize,
) -> (Vec<mpsc::UnboundedSender<Queued>>, Vec<tokio::task::JoinHandle<()>>) {
    let n = (max_connections / 4).max(1);
    let mut senders = Vec::with_capacity(n);
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (sender, receiver) = mpsc::unbounded_channel();
        senders.push(sender);
        tasks.push(runtime.spawn(work(Arc::clone(inner), receiver)));
    }
    (senders, tasks)
}

/// The worker of `host` among `n`.
pub(super) fn worker_of(host: &str, n: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    host.hash(&mut hasher);
    (hasher.finish() % n.max(1) as u64) as usize
}

impl super::PostgresStore {
    pub(super) fn queue(&self, batch: Batch, received_at: Timestamp, done: IngestDone) {
        let worker = worker_of(&batch.host, self.workers.len());
        let queued = Queued {
            batch,
            received_at,
            done,
        };
        if let Err(mpsc::error::SendError(queued)) = self.workers[worker].send(queued) {
            (queued.done)(Err(StoreError::Database("the store is closing".to_owned())));
        }
    }
}

/// A worker: waits for batches, applies what is queued as one group, until
/// its queue is closed and empty.
async fn work(inner: Arc<Inner>, mut queue: mpsc::UnboundedReceiver<Queued>) {
    while let Some(first) = queue.recv().await {
        let mut listeners = listeners_in(&first.batch);
        let mut group = vec![first];
        while group.len() < MAX_GROUP && listeners < GROUP_LISTENERS {
            match queue.try_recv() {
                Ok(next) => {
                    listeners = listeners.saturating_add(listeners_in(&next.batch));
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        apply_group(&inner, group).await;
    }
}

/// Applies `group`: the batches to write in one transaction, then the
/// heartbeats kept in memory, each answered once done.
async fn apply_group(inner: &Inner, group: Vec<Queued>) {
    let (beats, writes): (Vec<Queued>, Vec<Queued>) = group.into_iter().partition(|q| kept_in_memory(&q.batch));
    if !writes.is_empty() {
        write_group(inner, writes).await;
    }
    if !beats.is_empty() {
        answer_heartbeats(inner, beats).await;
    }
}

/// Whether `batch` is a heartbeat that only moves its host's `last_seen`
/// and skew (no report, nothing dropped): kept in memory if its host is stored.
fn kept_in_memory(batch: &Batch) -> bool {
    batch.reports.is_empty() && batch.dropped == 0 && batch.alive_at.is_some()
}

/// Answers heartbeats from their hosts' rows, read at once, and keeps them
/// in memory; those of hosts not stored yet are written as any batch.
async fn answer_heartbeats(inner: &Inner, beats: Vec<Queued>) {
    let mut names: Vec<&str> = beats.iter().map(|q| q.batch.host.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let read = async {
        let client = inner.client().await?;
        client
            .query(
                "SELECT name, session, last_seq FROM hosts WHERE name = ANY($1)",
                &[&names],
            )
            .await
            .map_err(pg)
    };
    let states: HashMap<String, SessionState> = match read.await {
        Ok(rows) => rows
            .iter()
            .map(|r| {
                let state = SessionState {
                    session: r.get(1),
                    last_seq: from_bits(r.get(2)),
                    dropped: 0,
                };
                (r.get(0), state)
            })
            .collect(),
        Err(error) => {
            for queued in beats {
                (queued.done)(Err(error.again()));
            }
            return;
        }
    };
    let mut unknown = Vec::new();
    for queued in beats {
        let Some(state) = states.get(&queued.batch.host) else {
            unknown.push(queued);
            continue;
        };
        let host_clock = HostClock {
            session: state.session.as_deref(),
            last_seq: state.last_seq,
            last_at: None,
        };
        let times = clock::effective_times(queued.received_at, &host_clock, &inner.clock, &queued.batch);
        let plan = history::plan_batch(state, None, &queued.batch, &times.reports);
        let at = queued.received_at.as_millisecond();
        inner.heartbeats.keep(
            &queued.batch.host,
            Beat {
                last_seen: at,
                skew: times.skew_ms.map(|skew| (skew, at)),
            },
        );
        (queued.done)(Ok(plan.ack));
    }
    if !unknown.is_empty() {
        write_group(inner, unknown).await;
    }
}

/// Applies `group` in one transaction, a savepoint per batch, and answers
/// every batch once it has committed.
async fn write_group(inner: &Inner, group: Vec<Queued>) {
    let (batches, dones): (Vec<(Batch, Timestamp)>, Vec<IngestDone>) =
        group.into_iter().map(|q| ((q.batch, q.received_at), q.done)).unzip();
    if let Some(latest) = batches.iter().map(|(_, at)| *at).max() {
        if let Err(e) = inner.ensure_partitions(latest).await {
            tracing::warn!(error = %e, "cannot make the partitions of intervals ahead of time");
        }
    }
    let mut tries = 0;
    let outcome = loop {
        tries += 1;
        match try_group(inner, &batches).await {
            Err(StoreError::Busy(_)) if tries < GROUP_TRIES => continue,
            outcome => break outcome,
        }
    };
    match outcome {
        Ok(results) => {
            for (done, result) in dones.into_iter().zip(results) {
                done(result);
            }
        }
        Err(error) => {
            for done in dones {
                done(Err(error.again()));
            }
        }
    }
}

/// One try at `group`: the answer of each batch, or why the whole group failed.
async fn try_group(inner: &Inner, group: &[(Batch, Timestamp)]) -> Result<Vec<Result<Ack, StoreError>>, StoreError> {
    let mut client = inner.client().await?;
    let mut tx = client.transaction().await.map_err(pg)?;
    if group.iter().all(|(batch, _)| batch.reports.is_empty()) {
        tx.batch_execute("SET LOCAL synchronous_commit = off")
            .await
            .map_err(pg)?;
    } else {
        // Held to commit: retention deletes no program between this
        // group finding one and committing the intervals that name it.
        tx.execute("SELECT pg_advisory_xact_lock_shared($1)", &[&PROGRAMS_LOCK])
            .await
            .map_err(pg)?;
    }
    let mut results = Vec::with_capacity(group.len());
    for (batch, received_at) in group {
        let savepoint = tx.savepoint("batch").await.map_err(pg)?;
        match apply_batch(&savepoint, batch, *received_at, &inner.clock).await {
            Ok(ack) => {
                savepoint.commit().await.map_err(pg)?;
                results.push(Ok(ack));
            }
            // A lost deadlock or conflict, or a lost connection: the whole group goes again, or fails.
            Err(error @ (StoreError::Busy(_) | StoreError::Unavailable(_) | StoreError::DiskFull { .. })) => {
                return Err(error);
            }
            Err(error) => {
                savepoint.rollback().await.map_err(pg)?;
                results.push(Err(error));
            }
        }
    }
    tx.commit().await.map_err(pg)?;
    Ok(results)
}

/// Applies `batch` inside the open transaction `tx` (see
/// [`crate::store::HistoryWrites::ingest`]), dating its reports by the [`clock`] rules.
async fn apply_batch(
    tx: &Transaction<'_>,
    batch: &Batch,
    received_at: Timestamp,
    limits: &clock::Limits,
) -> Result<Ack, StoreError> {
    // Locks the host's row to commit: another collector's batch of this host waits.
    let row = tx
        .query_one(
            "INSERT INTO hosts (name, first_seen, last_seen) VALUES ($1, $2, $2)
             ON CONFLICT (name) DO UPDATE SET last_seen = greatest(hosts.last_seen, excluded.last_seen)
             RETURNING id, session, last_seq, dropped_reports, clock_at",
            &[&batch.host, &received_at.as_millisecond()],
        )
        .await
        .map_err(pg)?;
    let host_id: i64 = row.get(0);
    let state = SessionState {
        session: row.get(1),
        last_seq: from_bits(row.get(2)),
        dropped: from_bits(row.get(3)),
    };
    let clock_at: Option<i64> = row.get(4);
    let host_clock = HostClock {
        session: state.session.as_deref(),
        last_seq: state.last_seq,
        last_at: clock_at.map(timestamp).transpose()?,
    };
    let times = clock::effective_times(received_at, &host_clock, limits, batch);
    let continues_parts = batch
        .reports
        .iter()
        .any(|r| matches!(r.body, ReportBody::SnapshotPart { part, .. } if part > 0));
    let staged = if continues_parts {
        parts::staged(tx, host_id).await?
    } else {
        None
    };
    let plan = history::plan_batch(&state, staged, batch, &times.reports);
    let mut writer = HostWriter::new(tx, host_id);
    for step in &plan.steps {
        match *step {
            Step::ClearParts => parts::clear(tx, host_id).await?,
            Step::Reconcile { listeners, at } => writer.reconcile(listeners, at).await?,
            Step::StagePart {
                session,
                seq,
                part,
                listeners,
            } => parts::stage(tx, host_id, session, seq, part, listeners).await?,
            Step::ReconcileStaged { listeners, at } => {
                let mut whole = parts::take(tx, host_id).await?;
                whole.extend(listeners.iter().cloned());
                HostWriter::new(tx, host_id).reconcile(&whole, at).await?;
            }
            Step::Close { listener, at } => writer.close(listener, at).await?,
            Step::Open { listener, at } => writer.open(listener, at).await?,
        }
    }
    let SessionState {
        session,
        last_seq,
        dropped,
    } = plan.state;
    tx.execute(
        "UPDATE hosts SET session = $2, last_seq = $3, dropped_reports = $4 WHERE id = $1",
        &[&host_id, &session, &to_bits(last_seq), &to_bits(dropped)],
    )
    .await
    .map_err(pg)?;
    if let Some(facts) = plan.facts {
        let tags = serde_json::to_string(&facts.tags).map_err(|e| StoreError::Database(e.to_string()))?;
        let addresses = serde_json::to_string(&facts.addresses).map_err(|e| StoreError::Database(e.to_string()))?;
        tx.execute(
            "UPDATE hosts SET agent_version = $2, interval_ms = $3, os = $4, kernel = $5, boot_time = $6, tags = $7,
                              detection = $8, host_netns = $9, addresses = $10
             WHERE id = $1",
            &[
                &host_id,
                &facts.agent_version,
                &to_bits(facts.interval_ms),
                &facts.os,
                &facts.kernel,
                &facts.boot_time.map(Timestamp::as_millisecond),
                &tags,
                &facts.detection,
                &facts.host_netns.map(to_bits),
                &addresses,
            ],
        )
        .await
        .map_err(pg)?;
    }
    tx.execute(
        "UPDATE hosts SET clock_at = coalesce($2, clock_at), clock_skew_ms = coalesce($3, clock_skew_ms),
                          clock_skew_at = CASE WHEN $3::bigint IS NULL THEN clock_skew_at ELSE $4 END
         WHERE id = $1",
        &[&host_id, &plan.last_at, &times.skew_ms, &received_at.as_millisecond()],
    )
    .await
    .map_err(pg)?;
    Ok(plan.ack)
}

/// The parts of a snapshot in progress (table `snapshot_parts`).
mod parts {
    use deadpool_postgres::Transaction;
    use portwatch_common::Listener;

    use super::{pg, Staged, StoreError};
    use crate::store::stored::{from_bits, to_bits};

    /// Forgets the parts of any snapshot in progress.
    pub(super) async fn clear(tx: &Transaction<'_>, host_id: i64) -> Result<(), StoreError> {
        tx.execute("DELETE FROM snapshot_parts WHERE host_id = $1", &[&host_id])
            .await
            .map(drop)
            .map_err(pg)
    }

    /// What is kept of a snapshot in progress (see [`Staged::from_rows`]).
    pub(super) async fn staged(tx: &Transaction<'_>, host_id: i64) -> Result<Option<Staged>, StoreError> {
        let rows = tx
            .query(
                "SELECT session, part, seq FROM snapshot_parts WHERE host_id = $1 ORDER BY part",
                &[&host_id],
            )
            .await
            .map_err(pg)?;
        let rows: Vec<(String, i64, i64)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
        Ok(Staged::from_rows(rows.iter().filter_map(|(session, part, seq)| {
            Some((session.as_str(), u32::try_from(*part).ok()?, from_bits(*seq)))
        })))
    }

    /// Keeps one part until the last arrives.
    pub(super) async fn stage(
        tx: &Transaction<'_>,
        host_id: i64,
        session: &str,
        seq: u64,
        part: u32,
        listeners: &[Listener],
    ) -> Result<(), StoreError> {
        let json = serde_json::to_vec(listeners).map_err(|e| StoreError::Database(e.to_string()))?;
        tx.execute(
            "INSERT INTO snapshot_parts (host_id, part, session, seq, listeners) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (host_id, part) DO UPDATE SET session = excluded.session, seq = excluded.seq,
                 listeners = excluded.listeners",
            &[&host_id, &i64::from(part), &session, &to_bits(seq), &json],
        )
        .await
        .map(drop)
        .map_err(pg)
    }

    /// The listeners of every part kept, in part order; forgets the parts.
    pub(super) async fn take(tx: &Transaction<'_>, host_id: i64) -> Result<Vec<Listener>, StoreError> {
        let rows = tx
            .query(
                "SELECT listeners FROM snapshot_parts WHERE host_id = $1 ORDER BY part",
                &[&host_id],
            )
            .await
            .map_err(pg)?;
        let mut listeners = Vec::new();
        for row in rows {
            let json: &[u8] = row.get(0);
            let part: Vec<Listener> = serde_json::from_slice(json)
                .map_err(|e| StoreError::Database(format!("a kept snapshot part cannot be read: {e}")))?;
            listeners.extend(part);
        }
        clear(tx, host_id).await?;
        Ok(listeners)
    }
}

/// The programs of the slots `$1..=$2`: the program of a content is in one
/// of the [`PROGRAM_PROBE`] slots from its hash.
const FIND_PROGRAM_SQL: &str = r#"SELECT id, hash, name, exe, cmdline, uid, "user", container, unit FROM programs
     WHERE hash BETWEEN $1 AND $2 ORDER BY hash"#;

/// The open interval of a host with a given key (`$1` the host, `$2`... the
/// key's columns, compared null-safe).
const FIND_OPEN_SQL: &str = r#"SELECT id, opened_at FROM intervals
     WHERE host_id = $1 AND closed_at IS NULL AND netns = $2 AND proto = $3 AND family = $4 AND addr = $5
       AND port = $6 AND inode = $7 AND uid = $8 AND "user" IS NOT DISTINCT FROM $9 AND exposure = $10
       AND dual_stack = $11 AND owners = $12 AND firewall IS NOT DISTINCT FROM $13
     LIMIT 1"#;

/// Writes one host's intervals within a batch's transaction.
struct HostWriter<'t, 'c, 'b> {
    tx: &'t Transaction<'c>,
    host_id: i64,
    /// Program ids known in this transaction (only this one: ids of a
    /// rolled-back transaction are gone).
    programs: HashMap<ProgramRef<'b>, i64>,
}

impl<'t, 'c, 'b> HostWriter<'t, 'c, 'b> {
    fn new(tx: &'t Transaction<'c>, host_id: i64) -> HostWriter<'t, 'c, 'b> {
        HostWriter {
            tx,
            host_id,
            programs: HashMap::new(),
        }
    }

    /// Makes the host's open intervals those of `listeners`, at `at`, as
    /// [`history::reconcile`] decides.
    async fn reconcile(&mut self, listeners: &'b [Listener], at: i64) -> Result<(), StoreError> {
        let rows = self
            .tx
            .query(
                &format!("SELECT id, opened_at, {INTERVAL_KEY_COLUMNS} FROM intervals WHERE host_id = $1 AND closed_at IS NULL"),
                &[&self.host_id],
            )
            .await
            .map_err(pg)?;
        let mut open = Vec::with_capacity(rows.len());
        for r in &rows {
            let (id, opened_at): (i64, i64) = (r.get(0), r.get(1));
            open.push((stored_key(r, 2)?, (id, opened_at), opened_at));
        }
        let mut keys = Vec::with_capacity(listeners.len());
        for listener in listeners {
            keys.push(self.stored_key(listener).await?);
        }
        let plan = history::reconcile(open, keys);
        self.insert_all(&plan.open, at).await?;
        let ids: Vec<i64> = plan.close.iter().map(|(id, _)| *id).collect();
        if !ids.is_empty() {
            // One statement for every close (never before its open: history::close_time).
            self.tx
                .execute(
                    "UPDATE intervals SET closed_at = greatest(opened_at, $3)
                     WHERE host_id = $1 AND closed_at IS NULL AND id = ANY($2)",
                    &[&self.host_id, &ids, &at],
                )
                .await
                .map_err(pg)?;
        }
        Ok(())
    }

    /// Opens an interval for each of `keys` at `at`, in one statement, and
    /// records the ports' first sightings (see [`Self::first_seen`]).
    async fn insert_all(&self, keys: &[IntervalKey], at: i64) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let netns: Vec<i64> = keys.iter().map(|k| k.netns).collect();
        let proto: Vec<i16> = keys.iter().map(|k| k.proto as i16).collect();
        let family: Vec<i16> = keys.iter().map(|k| k.family as i16).collect();
        let addr: Vec<&[u8]> = keys.iter().map(|k| k.addr.as_slice()).collect();
        let port: Vec<i32> = keys.iter().map(|k| i32::from(k.port)).collect();
        let inode: Vec<i64> = keys.iter().map(|k| k.inode).collect();
        let uid: Vec<i64> = keys.iter().map(|k| i64::from(k.uid)).collect();
        let user: Vec<Option<&str>> = keys.iter().map(|k| k.user.as_deref()).collect();
        let exposure: Vec<i16> = keys.iter().map(|k| k.exposure as i16).collect();
        let dual_stack: Vec<bool> = keys.iter().map(|k| k.dual_stack).collect();
        let owners: Vec<&[u8]> = keys.iter().map(|k| k.owners.as_slice()).collect();
        let firewall: Vec<Option<&str>> = keys.iter().map(|k| k.firewall.as_deref()).collect();
        self.tx
            .execute(
                &format!(
                    "INSERT INTO intervals (host_id, {INTERVAL_KEY_COLUMNS}, opened_at)
                     SELECT $1, k.*, $14 FROM UNNEST($2::bigint[], $3::smallint[], $4::smallint[], $5::bytea[],
                         $6::integer[], $7::bigint[], $8::bigint[], $9::text[], $10::smallint[], $11::boolean[],
                         $12::bytea[], $13::text[]) AS k"
                ),
                &[
                    &self.host_id,
                    &netns,
                    &proto,
                    &family,
                    &addr,
                    &port,
                    &inode,
                    &uid,
                    &user,
                    &exposure,
                    &dual_stack,
                    &owners,
                    &firewall,
                    &at,
                ],
            )
            .await
            .map_err(pg)?;
        let mut ports: Vec<(i16, i32)> = proto.into_iter().zip(port).collect();
        ports.sort_unstable();
        ports.dedup();
        self.first_seen(&ports, at).await
    }

    /// Opens an interval for `listener` at `at`, unless it is open already.
    async fn open(&mut self, listener: &'b Listener, at: i64) -> Result<(), StoreError> {
        let key = self.stored_key(listener).await?;
        if self.find_open(&key).await?.is_none() {
            self.insert(&key, at).await?;
        }
        Ok(())
    }

    /// Closes the open interval of `listener` at `at`, if there is one.
    async fn close(&mut self, listener: &'b Listener, at: i64) -> Result<(), StoreError> {
        let Some(key) = self.key(listener, false).await? else {
            return Ok(()); // an unknown program: it was never open
        };
        if let Some((id, opened_at)) = self.find_open(&key).await? {
            self.set_closed(id, opened_at, at).await?;
        }
        Ok(())
    }

    /// The key of `listener`, storing its programs if new.
    async fn stored_key(&mut self, listener: &'b Listener) -> Result<IntervalKey, StoreError> {
        self.key(listener, true)
            .await?
            .ok_or_else(|| StoreError::Database("a program was not stored".to_owned()))
    }

    /// The key of `listener`; `None` when a program of it is not stored and
    /// `store` is false. (Programs are found first, then the key is built
    /// from their ids: the key's builder takes no async lookup.)
    async fn key(&mut self, listener: &'b Listener, store: bool) -> Result<Option<IntervalKey>, StoreError> {
        let mut ids = HashMap::with_capacity(listener.processes.len());
        for process in &listener.processes {
            let program = ProgramRef::of(process);
            match self.program_id(program, store).await? {
                Some(id) => ids.insert(program, id),
                None => return Ok(None),
            };
        }
        IntervalKey::of(listener, |program| Ok(ids.get(&program).copied()))
    }

    /// The id of `program`, stored first if new and `store` is true. Two
    /// writers storing the same new program meet at the unique slot: the
    /// second waits for the first to commit, inserts nothing, and reads it.
    async fn program_id(&mut self, program: ProgramRef<'b>, store: bool) -> Result<Option<i64>, StoreError> {
        if let Some(&id) = self.programs.get(&program) {
            return Ok(Some(id));
        }
        let natural = to_bits(program.hash());
        let last = natural.saturating_add(PROGRAM_PROBE - 1);
        for _ in 0..PROGRAM_PROBE {
            let rows = self.tx.query(FIND_PROGRAM_SQL, &[&natural, &last]).await.map_err(pg)?;
            let mut taken = Vec::with_capacity(rows.len());
            for row in &rows {
                let (id, slot): (i64, i64) = (row.get(0), row.get(1));
                let stored = StoredProgram {
                    name: row.get(2),
                    exe: row.get(3),
                    cmdline: row.get(4),
                    uid: row.get(5),
                    user: row.get(6),
                    container: row.get(7),
                    unit: row.get(8),
                };
                if program.is(&stored) {
                    self.programs.insert(program, id);
                    return Ok(Some(id));
                }
                taken.push(slot);
            }
            if !store {
                return Ok(None);
            }
            let Some(free) = (natural..=last).find(|slot| !taken.contains(slot)) else {
                return Err(corrupt(format!(
                    "the {PROGRAM_PROBE} program slots from {natural} are all taken by other programs"
                )));
            };
            let inserted = self
                .tx
                .query_opt(
                    r#"INSERT INTO programs (hash, name, exe, cmdline, uid, "user", container, unit)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (hash) DO NOTHING RETURNING id"#,
                    &[
                        &free,
                        &program.name,
                        &program.exe,
                        &program.cmdline,
                        &program.uid.map(i64::from),
                        &program.user,
                        &program.container,
                        &program.unit,
                    ],
                )
                .await
                .map_err(pg)?;
            if let Some(row) = inserted {
                let id: i64 = row.get(0);
                self.programs.insert(program, id);
                return Ok(Some(id));
            }
        }
        Err(StoreError::Busy(format!(
            "program slots from {natural} kept being taken by other writers; send again"
        )))
    }

    /// The open interval of the host with this key: its id and opening time.
    async fn find_open(&self, key: &IntervalKey) -> Result<Option<(i64, i64)>, StoreError> {
        let user = key.user.as_deref();
        let row = self
            .tx
            .query_opt(
                FIND_OPEN_SQL,
                &[
                    &self.host_id,
                    &key.netns,
                    &(key.proto as i16),
                    &(key.family as i16),
                    &key.addr,
                    &i32::from(key.port),
                    &key.inode,
                    &i64::from(key.uid),
                    &user,
                    &(key.exposure as i16),
                    &key.dual_stack,
                    &key.owners,
                    &key.firewall,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    async fn insert(&self, key: &IntervalKey, at: i64) -> Result<(), StoreError> {
        self.insert_all(std::slice::from_ref(key), at).await
    }

    /// Records that `ports` (protocol, port; sorted, so that two writers
    /// lock rows in one order) were seen open at `at`, where that is earlier
    /// than the sighting kept. Read first: the upsert locks a port's row to
    /// commit, and every host opening port 22 would wait on the others; only
    /// a sighting earlier than the one kept (a port new to the fleet, a late
    /// replay) writes.
    async fn first_seen(&self, ports: &[(i16, i32)], at: i64) -> Result<(), StoreError> {
        let (protos, numbers): (Vec<i16>, Vec<i32>) = ports.iter().copied().unzip();
        let kept: HashMap<(i16, i32), i64> = self
            .tx
            .query(
                "SELECT f.proto, f.port, f.first_seen FROM ports_first_seen f
                 JOIN UNNEST($1::smallint[], $2::integer[]) AS p(proto, port) USING (proto, port)",
                &[&protos, &numbers],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| ((r.get(0), r.get(1)), r.get(2)))
            .collect();
        let (protos, numbers): (Vec<i16>, Vec<i32>) = ports
            .iter()
            .copied()
            .filter(|p| kept.get(p).is_none_or(|&first| at < first))
            .unzip();
        if protos.is_empty() {
            return Ok(());
        }
        self.tx
            .execute(
                "INSERT INTO ports_first_seen (proto, port, first_seen, host_id)
                 SELECT p.proto, p.port, $3, $4 FROM UNNEST($1::smallint[], $2::integer[]) AS p(proto, port)
                 ON CONFLICT (proto, port) DO UPDATE SET first_seen = excluded.first_seen, host_id = excluded.host_id
                 WHERE excluded.first_seen < ports_first_seen.first_seen",
                &[&protos, &numbers, &at, &self.host_id],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    /// Closes interval `id` at `at`, never before it opened (an agent's
    /// clock may step back). Found through the host's open intervals; the
    /// row moves to the partition of the month it closed in.
    async fn set_closed(&self, id: i64, opened_at: i64, at: i64) -> Result<(), StoreError> {
        self.tx
            .execute(
                "UPDATE intervals SET closed_at = $3 WHERE host_id = $1 AND closed_at IS NULL AND id = $2",
                &[&self.host_id, &id, &history::close_time(opened_at, at)],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }
}

/// The key of an interval row whose key columns ([`INTERVAL_KEY_COLUMNS`]) start at `at`.
pub(super) fn stored_key(r: &tokio_postgres::Row, at: usize) -> Result<IntervalKey, StoreError> {
    let port: i32 = r.get(at + 4);
    let uid: i64 = r.get(at + 6);
    Ok(IntervalKey {
        netns: r.get(at),
        proto: i64::from(r.get::<_, i16>(at + 1)),
        family: i64::from(r.get::<_, i16>(at + 2)),
        addr: r.get(at + 3),
        port: u16::try_from(port).map_err(|_| corrupt(format_args!("port {port}")))?,
        inode: r.get(at + 5),
        uid: u32::try_from(uid).map_err(|_| corrupt(format_args!("uid {uid}")))?,
        user: r.get::<_, Option<&str>>(at + 7).map(Arc::from),
        exposure: i64::from(r.get::<_, i16>(at + 8)),
        dual_stack: r.get(at + 9),
        owners: r.get(at + 10),
        firewall: r.get(at + 11),
    })
}

#[cfg(test)]
mod tests {
    use super::worker_of;

    #[test]
    fn a_host_always_goes_to_the_same_worker_and_hosts_spread_over_all() {
        let n = 4;
        let workers: Vec<usize> = (0..400).map(|i| worker_of(&format!("web-{i}"), n)).collect();
        assert!(workers.iter().all(|&w| w < n));
        for w in 0..n {
            assert!(workers.contains(&w), "worker {w} gets no host");
        }
        assert_eq!(worker_of("web-7", n), worker_of("web-7", n));
    }
}
