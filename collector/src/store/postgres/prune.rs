//! Retention in PostgreSQL: carrying out a [`PrunePlan`] in small batches,
//! whole months at once where it can, and forgetting a host.
//!
//! What is expired is decided by [`crate::retention`]; this module only
//! finds those rows and deletes them, each call of
//! [`Maintenance::prune`] one short transaction.
//!
//! **Whole months.** Closed intervals are partitioned by the month they
//! closed in (see [`super`]): a month whose partition ends at or before the
//! cutoff holds nothing but expired rows, so it is counted and dropped
//! (`DROP TABLE`), one month a call, rather than deleted row by row. The
//! count is taken under a `SHARE` lock of the partition (ingest closing an
//! interval into that month, which a late report may do, waits), the drop
//! needs a moment's `ACCESS EXCLUSIVE` lock of `intervals` and waits for it
//! [`DROP_LOCK_TIMEOUT`] at most, so that reads and ingest queued behind it
//! stall no longer; failing that, the call deletes rows instead and the next
//! one tries again. A close into a month dropped goes to the default
//! partition, as into any month without one. What is left (the default
//! partition's closed rows, the month the cutoff falls in) is deleted host
//! by host through `intervals_by_host`, at most `batch_rows` a call.
//!
//! **Programs** are named by intervals inside the varint owner lists (not
//! by a foreign key), so the unnamed ones are found by one scan of every
//! owner list, and ingest may name one of them again meanwhile (a listener
//! of the same process identity finds it by content). Every ingest
//! transaction holds [`PROGRAMS_LOCK`] shared to commit; the pass takes it
//! exclusively (a) for an instant before the scan, to read the interval
//! sequence when no ingest is in flight, so every interval with an id up
//! to that mark is committed and seen by the scan, every later one has a
//! greater id; and (b) around each delete, after reading the intervals with
//! ids above the mark (`intervals_by_id`, a block-range index) and keeping
//! every candidate they name. (The mark is the sequence's, not the greatest
//! id seen: with several writers, ids become visible out of order.)
//!
//! **Ids are not given twice**: ids come from sequences, which never hand a
//! value out again, so deleting the newest interval or alert is safe here
//! (unlike SQLite, see its store) and forgetting a host needs no count.
//!
//! **Space.** PostgreSQL has no incremental vacuum: rows deleted are dead
//! tuples that autovacuum marks reusable, and new rows fill them before a
//! table grows; a month dropped gives its files back at once. Giving the
//! rest back to the file system would take `VACUUM FULL`, which rewrites a
//! table under an exclusive lock, so [`Maintenance::reclaim`] does nothing
//! and answers no freed page kept.

use std::time::Duration;

use deadpool_postgres::Transaction;
use futures_util::TryStreamExt;
use rustc_hash::FxHashSet;
use tokio_postgres::types::ToSql;

use super::{pg, Inner, Month, PostgresStore, PROGRAMS_LOCK};
use crate::store::stored::{from_bits, owner_pairs};
use crate::store::{Forgotten, Maintenance, PruneCursor, PrunePlan, PruneStage, Pruned, StoreError};

/// Hosts whose closed intervals one look goes through at most.
const HOSTS_PER_LOOK: i64 = 512;

/// How long dropping a month waits for its lock of `intervals` (every
/// read and write of intervals queued behind it waits as long).
const DROP_LOCK_TIMEOUT: Duration = Duration::from_millis(500);

/// The interval sequence's last value given, 0 before any.
const SEQUENCE_MARK_SQL: &str = "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM intervals_id_seq";

/// Whether an event of alert `a.id` is still to be delivered by a sink with
/// a place in the outbox: after its cursor and not among its done events.
const HELD_SQL: &str = "EXISTS (SELECT 1 FROM alert_events e JOIN sink_cursors c ON e.id > c.last_event_id
        WHERE e.alert_id = a.id
          AND NOT EXISTS (SELECT 1 FROM sink_done d WHERE d.sink = c.sink AND d.event_id = e.id))";

impl Maintenance for PostgresStore {
    /// The size of this schema's tables (each partition, with its indexes
    /// and TOAST), not of the whole database, which may hold others.
    fn size_bytes(&self) -> Result<u64, StoreError> {
        self.block(async |inner| {
            let row = inner
                .client()
                .await?
                .query_one(
                    "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm')",
                    &[],
                )
                .await
                .map_err(pg)?;
            Ok(from_bits(row.get(0)))
        })
    }

    fn prune_count(&self, plan: &PrunePlan) -> Result<Pruned, StoreError> {
        self.block(async |inner| {
            let mut client = inner.client().await?;
            // One snapshot for every count.
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(pg)?;
            let mut pruned = Pruned::default();
            if let Some(cutoff) = plan.intervals_closed_before.map(|t| t.as_millisecond()) {
                pruned.intervals =
                    count(&tx, "SELECT count(*) FROM intervals WHERE closed_at < $1", &[&cutoff]).await?;
                let named = programs_named(
                    &tx,
                    "SELECT host_id, owners FROM intervals WHERE closed_at IS NULL OR closed_at >= $1",
                    &[&cutoff],
                )
                .await?;
                let ids = tx.query("SELECT id FROM programs", &[]).await.map_err(pg)?;
                pruned.programs = ids.iter().filter(|r| !named.contains(&r.get::<_, i64>(0))).count() as u64;
            }
            if let Some(cutoff) = plan.alerts_resolved_before.map(|t| t.as_millisecond()) {
                let row = tx
                    .query_one(
                        &format!(
                            "SELECT count(*) FILTER (WHERE NOT held),
                                    coalesce(sum(events) FILTER (WHERE NOT held), 0)::bigint,
                                    count(*) FILTER (WHERE held)
                             FROM (SELECT {HELD_SQL} AS held,
                                          (SELECT count(*) FROM alert_events e WHERE e.alert_id = a.id) AS events
                                   FROM alerts a WHERE a.state = 'resolved' AND a.resolved_at < $1) expired"
                        ),
                        &[&cutoff],
                    )
                    .await
                    .map_err(pg)?;
                (pruned.alerts, pruned.alert_events, pruned.alerts_held) =
                    (from_bits(row.get(0)), from_bits(row.get(1)), from_bits(row.get(2)));
            }
            if let Some(cutoff) = plan.peer_points_before.map(|t| t.as_millisecond()) {
                pruned.peer_points = count(&tx, "SELECT count(*) FROM peer_points WHERE at < $1", &[&cutoff]).await?;
            }
            if let Some(cutoff) = plan.baseline_log_before.map(|t| t.as_millisecond()) {
                pruned.baseline_log = count(
                    &tx,
                    "SELECT count(*) FROM baseline_log
                     WHERE at < $1 AND id NOT IN (SELECT max(id) FROM baseline_log GROUP BY name)",
                    &[&cutoff],
                )
                .await?;
            }
            tx.commit().await.map_err(pg)?;
            Ok(pruned)
        })
    }

    fn prune(&self, plan: &PrunePlan, cursor: &mut PruneCursor, batch_rows: usize) -> Result<Pruned, StoreError> {
        let limit = i64::try_from(batch_rows.max(1)).unwrap_or(i64::MAX);
        self.block(async |inner| {
            loop {
                let pruned = match cursor.stage {
                    PruneStage::Intervals => match plan.intervals_closed_before {
                        None => None,
                        Some(cutoff) => inner.prune_intervals(cutoff.as_millisecond(), cursor, limit).await?,
                    },
                    PruneStage::Alerts => match plan.alerts_resolved_before {
                        None => None,
                        Some(cutoff) => inner.prune_alerts(cutoff.as_millisecond(), cursor, limit).await?,
                    },
                    PruneStage::BaselineLog => match plan.baseline_log_before {
                        None => None,
                        Some(cutoff) => inner.prune_baseline_log(cutoff.as_millisecond(), limit).await?,
                    },
                    PruneStage::Peers => match plan.peer_points_before {
                        None => None,
                        Some(cutoff) => inner.prune_peer_points(cutoff.as_millisecond(), limit).await?,
                    },
                    PruneStage::Programs => match plan.intervals_closed_before {
                        None => None,
                        Some(_) => inner.prune_programs(cursor, limit).await?,
                    },
                    PruneStage::Done => return Ok(Pruned::default()),
                };
                match pruned {
                    Some(pruned) => return Ok(pruned),
                    // This step is over: the next one, from its start.
                    None => {
                        cursor.stage = match cursor.stage {
                            PruneStage::Intervals => PruneStage::Alerts,
                            PruneStage::Alerts => PruneStage::BaselineLog,
                            PruneStage::BaselineLog => PruneStage::Peers,
                            PruneStage::Peers => PruneStage::Programs,
                            PruneStage::Programs | PruneStage::Done => PruneStage::Done,
                        };
                        cursor.after = 0;
                        cursor.programs.clear();
                    }
                }
            }
        })
    }

    /// Nothing to do: see the module docs (autovacuum makes the space of
    /// deleted rows reusable; dropped months are given back when dropped).
    fn reclaim(&self, _pages: u32) -> Result<u64, StoreError> {
        Ok(0)
    }

    fn forget_host(&self, name: &str) -> Result<Option<Forgotten>, StoreError> {
        let forgotten = self.block(async |inner| inner.transact(async |tx| forget_host(tx, name).await).await)?;
        if forgotten.is_some() {
            // Names are read again (ids are never given again here, but
            // nothing of a forgotten host is to be named from the cache).
            self.inner.hosts.clear();
        }
        Ok(forgotten)
    }
}

impl Inner {
    /// One month dropped, or one batch of closed intervals host by host
    /// from `cursor.after`; `None` once every host is done.
    async fn prune_intervals(
        &self,
        cutoff: i64,
        cursor: &mut PruneCursor,
        limit: i64,
    ) -> Result<Option<Pruned>, StoreError> {
        if let Some(dropped) = self.drop_expired_month(cutoff).await? {
            return Ok(Some(Pruned {
                intervals: dropped,
                ..Pruned::default()
            }));
        }
        let start = cursor.after;
        let (removed, after, finished) = self
            .transact(async |tx| {
                let mut removed = 0u64;
                let mut room = limit;
                let mut after = start;
                loop {
                    let hosts = tx
                        .query(
                            "SELECT id FROM hosts WHERE id > $1 ORDER BY id LIMIT $2",
                            &[&after, &HOSTS_PER_LOOK],
                        )
                        .await
                        .map_err(pg)?;
                    if hosts.is_empty() {
                        return Ok((removed, after, true));
                    }
                    for host in hosts {
                        let host: i64 = host.get(0);
                        let expired = tx
                            .query(
                                "SELECT id, closed_at FROM intervals WHERE host_id = $1 AND closed_at < $2
                                 ORDER BY closed_at LIMIT $3",
                                &[&host, &cutoff, &room],
                            )
                            .await
                            .map_err(pg)?;
                        if let Some(last) = expired.last() {
                            let latest: i64 = last.get(1);
                            let ids: Vec<i64> = expired.iter().map(|r| r.get(0)).collect();
                            removed += tx
                                .execute(
                                    "DELETE FROM intervals
                                     WHERE host_id = $1 AND closed_at <= $2 AND closed_at < $3 AND id = ANY($4)",
                                    &[&host, &latest, &cutoff, &ids],
                                )
                                .await
                                .map_err(pg)?;
                        }
                        if expired.len() as i64 == room {
                            // This host may have more: the next batch starts with it again.
                            return Ok((removed, after, false));
                        }
                        room -= expired.len() as i64;
                        after = host;
                    }
                }
            })
            .await?;
        cursor.after = after;
        if removed == 0 && finished {
            return Ok(None);
        }
        Ok(Some(Pruned {
            intervals: removed,
            ..Pruned::default()
        }))
    }

    /// Drops the oldest partition of a month that ends at or before
    /// `cutoff`, if there is one and its lock comes in time: how many rows
    /// it held. `None` when there is none, or it must wait.
    async fn drop_expired_month(&self, cutoff: i64) -> Result<Option<u64>, StoreError> {
        let mut client = self.client().await?;
        let partitions = client
            .query(
                "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = 'intervals'::regclass",
                &[],
            )
            .await
            .map_err(pg)?;
        let Some(month) = partitions
            .iter()
            .filter_map(|r| Month::of_table(r.get(0)))
            .filter(|month| month.end_ms <= cutoff)
            .min_by_key(|month| month.start_ms)
        else {
            return Ok(None);
        };
        let tx = client.transaction().await.map_err(pg)?;
        let dropped = async {
            tx.batch_execute(&format!(
                "SET LOCAL lock_timeout = {}; LOCK TABLE {} IN SHARE MODE",
                DROP_LOCK_TIMEOUT.as_millis(),
                month.table
            ))
            .await?;
            let rows: i64 = tx
                .query_one(&format!("SELECT count(*) FROM {}", month.table), &[])
                .await?
                .get(0);
            tx.batch_execute(&format!("DROP TABLE {}", month.table)).await?;
            Ok::<_, tokio_postgres::Error>(rows)
        }
        .await;
        match dropped {
            Ok(rows) => {
                tx.commit().await.map_err(pg)?;
                tracing::info!(partition = %month.table, intervals = rows, "dropped a month of expired intervals");
                Ok(Some(from_bits(rows)))
            }
            Err(e) => {
                let _ = tx.rollback().await;
                match pg(e) {
                    StoreError::Busy(why) => {
                        tracing::warn!(partition = %month.table, error = %why,
                            "cannot drop a month of expired intervals now; deleting rows instead");
                        Ok(None)
                    }
                    other => Err(other),
                }
            }
        }
    }

    /// One batch of expired alerts (by id, from `cursor.after`) with their
    /// events; those with an event a sink has not delivered are kept and
    /// counted. `None` once past the last.
    async fn prune_alerts(
        &self,
        cutoff: i64,
        cursor: &mut PruneCursor,
        limit: i64,
    ) -> Result<Option<Pruned>, StoreError> {
        let alerts_per_batch = (limit / 4).max(1);
        let after = cursor.after;
        let pruned = self
            .transact(async |tx| {
                let candidates = tx
                    .query(
                        &format!(
                            "SELECT a.id, {HELD_SQL} FROM alerts a
                             WHERE a.id > $1 AND a.state = 'resolved' AND a.resolved_at < $2
                             ORDER BY a.id LIMIT $3"
                        ),
                        &[&after, &cutoff, &alerts_per_batch],
                    )
                    .await
                    .map_err(pg)?;
                let Some(last) = candidates.last().map(|r| r.get::<_, i64>(0)) else {
                    return Ok(None);
                };
                let mut pruned = Pruned::default();
                for candidate in &candidates {
                    let (id, held): (i64, bool) = (candidate.get(0), candidate.get(1));
                    if held {
                        pruned.alerts_held += 1;
                        continue;
                    }
                    pruned.alert_events += tx
                        .execute("DELETE FROM alert_events WHERE alert_id = $1", &[&id])
                        .await
                        .map_err(pg)?;
                    pruned.alerts += tx
                        .execute(
                            "DELETE FROM alerts WHERE id = $1 AND state = 'resolved' AND resolved_at < $2",
                            &[&id, &cutoff],
                        )
                        .await
                        .map_err(pg)?;
                }
                Ok(Some((pruned, last)))
            })
            .await?;
        Ok(pruned.map(|(pruned, last)| {
            cursor.after = last;
            pruned
        }))
    }

    /// One batch of peers points; `None` when nothing is left.
    async fn prune_peer_points(&self, cutoff: i64, limit: i64) -> Result<Option<Pruned>, StoreError> {
        let removed = self
            .transact(async |tx| {
                tx.execute(
                    "DELETE FROM peer_points WHERE ctid IN (
                         SELECT ctid FROM peer_points WHERE at < $1 LIMIT $2)",
                    &[&cutoff, &limit],
                )
                .await
                .map_err(pg)
            })
            .await?;
        Ok((removed > 0).then(|| Pruned {
            peer_points: removed,
            ..Pruned::default()
        }))
    }

    /// One batch of the baseline log; `None` when nothing is left.
    async fn prune_baseline_log(&self, cutoff: i64, limit: i64) -> Result<Option<Pruned>, StoreError> {
        let removed = self
            .transact(async |tx| {
                tx.execute(
                    "DELETE FROM baseline_log WHERE id IN (
                         SELECT id FROM baseline_log
                         WHERE at < $1 AND id NOT IN (SELECT max(id) FROM baseline_log GROUP BY name) LIMIT $2)",
                    &[&cutoff, &limit],
                )
                .await
                .map_err(pg)
            })
            .await?;
        Ok((removed > 0).then(|| Pruned {
            baseline_log: removed,
            ..Pruned::default()
        }))
    }

    /// One batch of programs no interval names; the first call of the step
    /// finds them (one scan of every owner list). `None` once they are all
    /// removed. See the module docs for what keeps one ingest names again.
    async fn prune_programs(&self, cursor: &mut PruneCursor, limit: i64) -> Result<Option<Pruned>, StoreError> {
        if cursor.after == 0 {
            // (a) The mark, read while no ingest transaction is in flight.
            let mark: i64 = self
                .transact(async |tx| {
                    lock_programs(tx).await?;
                    Ok(tx.query_one(SEQUENCE_MARK_SQL, &[]).await.map_err(pg)?.get(0))
                })
                .await?;
            let mut client = self.client().await?;
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(pg)?;
            let named = programs_named(&tx, "SELECT host_id, owners FROM intervals", &[]).await?;
            let ids = tx.query("SELECT id FROM programs ORDER BY id", &[]).await.map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            // Removed from the back: the batch is the tail.
            cursor.programs = ids
                .iter()
                .map(|r| r.get::<_, i64>(0))
                .filter(|id| !named.contains(id))
                .rev()
                .collect();
            cursor.intervals_seen = mark;
            // Scanned (0: not yet).
            cursor.after = 1;
        }
        if cursor.programs.is_empty() {
            return Ok(None);
        }
        let take = cursor.programs.len().min(usize::try_from(limit).unwrap_or(usize::MAX));
        let batch: Vec<i64> = cursor.programs.split_off(cursor.programs.len() - take);
        let since = cursor.intervals_seen;
        // (b) What was written since the mark keeps what it names.
        let (removed, named, mark) = self
            .transact(async |tx| {
                lock_programs(tx).await?;
                let named =
                    programs_named(tx, "SELECT host_id, owners FROM intervals WHERE id > $1", &[&since]).await?;
                let mark: i64 = tx.query_one(SEQUENCE_MARK_SQL, &[]).await.map_err(pg)?.get(0);
                let unnamed: Vec<i64> = batch.iter().copied().filter(|id| !named.contains(id)).collect();
                let removed = if unnamed.is_empty() {
                    0
                } else {
                    tx.execute("DELETE FROM programs WHERE id = ANY($1)", &[&unnamed])
                        .await
                        .map_err(pg)?
                };
                Ok((removed, named, mark))
            })
            .await?;
        // The candidates still to go that those intervals name stay too:
        // the next batch looks only past the new mark.
        cursor.programs.retain(|id| !named.contains(id));
        cursor.intervals_seen = mark;
        Ok(Some(Pruned {
            programs: removed,
            ..Pruned::default()
        }))
    }
}

/// Takes [`PROGRAMS_LOCK`] exclusively to commit: no ingest transaction is
/// in flight, and none starts, until this one ends.
async fn lock_programs(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PROGRAMS_LOCK])
        .await
        .map_err(pg)?;
    Ok(())
}

/// The first column of `sql`'s one row, a count.
async fn count(
    tx: &tokio_postgres::Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, StoreError> {
    let row = tx.query_one(sql, params).await.map_err(pg)?;
    Ok(from_bits(row.get(0)))
}

/// Every program named by the intervals `sql` selects (host id, owner
/// list), read as they stream in, not all held at once.
async fn programs_named(
    tx: &tokio_postgres::Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<FxHashSet<i64>, StoreError> {
    let rows = tx
        .query_raw(sql, params.iter().map(|p| *p as &dyn ToSql))
        .await
        .map_err(pg)?;
    let mut rows = std::pin::pin!(rows);
    let mut named = FxHashSet::default();
    while let Some(row) = rows.try_next().await.map_err(pg)? {
        for (_pid, program) in owner_pairs(row.get(1), row.get(0))? {
            named.insert(program);
        }
    }
    Ok(named)
}

/// [`Maintenance::forget_host`] in the open transaction `tx`.
async fn forget_host(tx: &Transaction<'_>, name: &str) -> Result<Option<Forgotten>, StoreError> {
    // Locked to commit: a batch of the host in flight commits first; one
    // queued meanwhile waits, then finds no host and makes a new one.
    let Some(host_id): Option<i64> = tx
        .query_opt("SELECT id FROM hosts WHERE name = $1 FOR UPDATE", &[&name])
        .await
        .map_err(pg)?
        .map(|r| r.get(0))
    else {
        return Ok(None);
    };
    let execute = async |sql: &str, params: &[&(dyn ToSql + Sync)]| -> Result<u64, StoreError> {
        tx.execute(sql, params).await.map_err(pg)
    };
    let mut forgotten = Forgotten::default();
    let ports: Vec<(i16, i32)> = tx
        .query(
            "SELECT proto, port FROM ports_first_seen WHERE host_id = $1",
            &[&host_id],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    execute("DELETE FROM ports_first_seen WHERE host_id = $1", &[&host_id]).await?;
    forgotten.snapshot_parts = execute("DELETE FROM snapshot_parts WHERE host_id = $1", &[&host_id]).await?;
    forgotten.intervals = execute("DELETE FROM intervals WHERE host_id = $1", &[&host_id]).await?;
    for (proto, port) in ports {
        let first = tx
            .query_opt(
                "SELECT opened_at, host_id FROM intervals WHERE port = $2 AND proto = $1 ORDER BY opened_at LIMIT 1",
                &[&proto, &port],
            )
            .await
            .map_err(pg)?;
        match first {
            Some(row) => {
                let (first_seen, other): (i64, i64) = (row.get(0), row.get(1));
                // Another host's ingest may be writing the port's first sighting too: the earlier stays.
                execute(
                    "INSERT INTO ports_first_seen (proto, port, first_seen, host_id) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (proto, port) DO UPDATE SET first_seen = excluded.first_seen, host_id = excluded.host_id
                     WHERE excluded.first_seen < ports_first_seen.first_seen",
                    &[&proto, &port, &first_seen, &other],
                )
                .await?;
                forgotten.first_seen_moved += 1;
            }
            None => forgotten.first_seen_dropped += 1,
        }
    }
    forgotten.alert_events = execute(
        "DELETE FROM alert_events WHERE alert_id IN (SELECT id FROM alerts WHERE host = $1)",
        &[&name],
    )
    .await?;
    forgotten.alerts = execute("DELETE FROM alerts WHERE host = $1", &[&name]).await?;
    forgotten.tokens = execute("DELETE FROM tokens WHERE host = $1 OR name = 'agent:' || $1", &[&name]).await?;
    execute("DELETE FROM probe_verdicts WHERE host = $1", &[&name]).await?;
    forgotten.peer_points = execute("DELETE FROM peer_points WHERE host = $1", &[&name]).await?;
    execute("DELETE FROM hosts WHERE id = $1", &[&host_id]).await?;
    execute(
        "UPDATE retention_state SET value = value + 1 WHERE name = 'hosts_forgotten'",
        &[],
    )
    .await?;
    Ok(Some(forgotten))
}
