//! Retention in SQLite: carrying out a [`PrunePlan`] in small batches, the
//! space it frees, and forgetting a host (schema: `migrations/0008_retention.sql`).
//!
//! What is expired is decided by [`crate::retention`]; this module only
//! finds those rows and deletes them.
//!
//! **Batches.** Each call of [`SqliteStore::prune_impl`] finds at most
//! `batch_rows` expired rows, then deletes them in one transaction of the
//! writer: the same connection and lock as ingest's group commits, so ingest
//! waits for one batch at most (a few milliseconds), and the caller pauses
//! between batches. Finding is done on a read connection where it can be
//! (closed intervals host by host through `intervals_by_host`, which holds
//! `closed_at` after `host_id`; programs no interval names, from one scan of
//! the owner lists), and every delete checks again that the row is expired,
//! so nothing written meanwhile is removed.
//!
//! **Programs** are named by intervals inside the varint owner lists (not by
//! a foreign key), so the unnamed ones are found by one scan of every
//! interval's owners on a read connection. Ingest may meanwhile name one of
//! them again (a listener opened by the same process identity finds it by
//! content); so before each delete the intervals written since the scan are
//! read, under the writer, and any program they name is kept.
//!
//! **Ids are not given twice.** SQLite gives a new row the greatest id plus
//! one, so deleting the row with the greatest id would give its id again.
//! Pruning never deletes the interval or the alert with the greatest id (it
//! goes at a later pass, once a newer row exists); outbox events have
//! `AUTOINCREMENT` ids (migration 8), so a sink's place stays right whatever
//! is deleted. Forgetting a host may delete the greatest interval ids: it
//! counts itself in `retention_state`, and a pass that found unnamed programs
//! looks again when that count has changed.
//!
//! **Space.** A database this build creates has `auto_vacuum = INCREMENTAL`
//! ([`prepare_new`]): pages pruning freed are given back to the file system
//! by [`SqliteStore::reclaim_impl`] (`PRAGMA incremental_vacuum(N)`), a few
//! MiB at a time. An older database has `auto_vacuum = NONE`, and switching
//! needs a `VACUUM` that rewrites the whole file (minutes and twice the
//! space for a large history): it is not done by a migration. Such a
//! database keeps its freed pages in its free list and fills them with new
//! rows before it grows, so it stops growing instead of shrinking.

use rusqlite::{params, Connection, OptionalExtension};
use rustc_hash::FxHashSet;

use super::{db, from_bits, read_varint, SqliteStore, Synchronous};
use crate::store::{Forgotten, PruneCursor, PrunePlan, PruneStage, Pruned, StoreError};

/// Hosts whose closed intervals one look on the read connection goes through at most.
const HOSTS_PER_LOOK: i64 = 512;

/// Sets a new, empty database file up for retention before its first table
/// exists: `auto_vacuum = INCREMENTAL` (it cannot be switched later without
/// a `VACUUM`). Does nothing on a database that has tables.
pub(super) fn prepare_new(conn: &Connection) -> rusqlite::Result<()> {
    let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
    if tables == 0 {
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")?;
    }
    Ok(())
}

/// The program ids in an owner list (pairs of varints: pid, program id).
fn owner_programs(owners: &[u8], into: &mut FxHashSet<i64>) -> Result<(), StoreError> {
    let mut pos = 0;
    while pos < owners.len() {
        let program = read_varint(owners, &mut pos)
            .and_then(|_pid| read_varint(owners, &mut pos))
            .ok_or_else(|| super::corrupt("an owner list that ends early"))?;
        into.insert(program as i64);
    }
    Ok(())
}

/// Adds to `into` every program named by an interval of `sql`'s rows (one
/// column, the owner list).
fn programs_named(
    conn: &Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
    into: &mut FxHashSet<i64>,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare(sql).map_err(db)?;
    let mut rows = stmt.query(params).map_err(db)?;
    while let Some(row) = rows.next().map_err(db)? {
        let owners = row.get_ref(0).map_err(db)?.as_blob().map_err(super::corrupt)?;
        owner_programs(owners, into)?;
    }
    Ok(())
}

fn count(conn: &Connection, sql: &str, params: &[&dyn rusqlite::ToSql]) -> Result<u64, StoreError> {
    conn.query_row(sql, params, |r| r.get::<_, i64>(0))
        .map(from_bits)
        .map_err(db)
}

/// How many hosts were ever forgotten (see `retention_state` in migration 8).
fn hosts_forgotten(conn: &Connection) -> Result<i64, StoreError> {
    conn.query_row(
        "SELECT value FROM retention_state WHERE name = 'hosts_forgotten'",
        [],
        |r| r.get(0),
    )
    .map_err(db)
}

/// Whether an event of alert `a.id` is still to be delivered by a sink with
/// a place in the outbox: after its cursor and not among its done events.
const HELD_SQL: &str = "EXISTS (SELECT 1 FROM alert_events e JOIN sink_cursors c ON e.id > c.last_event_id
        WHERE e.alert_id = a.id
          AND NOT EXISTS (SELECT 1 FROM sink_done d WHERE d.sink = c.sink AND d.event_id = e.id))";

impl SqliteStore {
    pub(super) fn prune_count_impl(&self, plan: &PrunePlan) -> Result<Pruned, StoreError> {
        self.read(|conn| {
            conn.execute_batch("BEGIN").map_err(db)?;
            let counted = (|| {
                let mut pruned = Pruned::default();
                if let Some(cutoff) = plan.intervals_closed_before.map(|t| t.as_millisecond()) {
                    pruned.intervals = count(
                        conn,
                        "SELECT coalesce(sum((SELECT count(*) FROM intervals i INDEXED BY intervals_by_host
                                              WHERE i.host_id = h.id AND i.closed_at < ?1
                                                AND i.id < (SELECT max(id) FROM intervals))), 0) FROM hosts h",
                        &[&cutoff],
                    )?;
                    let mut named = FxHashSet::default();
                    programs_named(
                        conn,
                        "SELECT owners FROM intervals WHERE closed_at IS NULL OR closed_at >= ?1",
                        &[&cutoff],
                        &mut named,
                    )?;
                    let mut stmt = conn.prepare("SELECT id FROM programs").map_err(db)?;
                    let ids = stmt.query_map([], |r| r.get::<_, i64>(0)).map_err(db)?;
                    for id in ids {
                        if !named.contains(&id.map_err(db)?) {
                            pruned.programs += 1;
                        }
                    }
                }
                if let Some(cutoff) = plan.alerts_resolved_before.map(|t| t.as_millisecond()) {
                    let (alerts, events, held) = conn
                        .query_row(
                            &format!(
                                "SELECT coalesce(sum(NOT held), 0), coalesce(sum(CASE WHEN held THEN 0 ELSE events END), 0),
                                        coalesce(sum(held), 0)
                                 FROM (SELECT {HELD_SQL} AS held,
                                              (SELECT count(*) FROM alert_events e WHERE e.alert_id = a.id) AS events
                                       FROM alerts a WHERE a.state = 'resolved' AND a.resolved_at < ?1
                                         AND a.id < (SELECT max(id) FROM alerts))"
                            ),
                            [cutoff],
                            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)),
                        )
                        .map_err(db)?;
                    (pruned.alerts, pruned.alert_events, pruned.alerts_held) =
                        (from_bits(alerts), from_bits(events), from_bits(held));
                }
                if let Some(cutoff) = plan.peer_points_before.map(|t| t.as_millisecond()) {
                    pruned.peer_points = count(conn, "SELECT count(*) FROM peer_points WHERE at < ?1", &[&cutoff])?;
                }
                if let Some(cutoff) = plan.baseline_log_before.map(|t| t.as_millisecond()) {
                    pruned.baseline_log = count(
                        conn,
                        "SELECT count(*) FROM baseline_log
                         WHERE at < ?1 AND id NOT IN (SELECT max(id) FROM baseline_log GROUP BY name)",
                        &[&cutoff],
                    )?;
                }
                Ok(pruned)
            })();
            let _ = conn.execute_batch("COMMIT");
            counted
        })
    }

    pub(super) fn prune_impl(
        &self,
        plan: &PrunePlan,
        cursor: &mut PruneCursor,
        batch_rows: usize,
    ) -> Result<Pruned, StoreError> {
        let limit = i64::try_from(batch_rows.max(1)).unwrap_or(i64::MAX);
        loop {
            let pruned = match cursor.stage {
                PruneStage::Intervals => match plan.intervals_closed_before {
                    None => None,
                    Some(cutoff) => self.prune_intervals(cutoff.as_millisecond(), cursor, limit)?,
                },
                PruneStage::Alerts => match plan.alerts_resolved_before {
                    None => None,
                    Some(cutoff) => self.prune_alerts(cutoff.as_millisecond(), cursor, limit)?,
                },
                PruneStage::BaselineLog => match plan.baseline_log_before {
                    None => None,
                    Some(cutoff) => self.prune_baseline_log(cutoff.as_millisecond(), limit)?,
                },
                PruneStage::Peers => match plan.peer_points_before {
                    None => None,
                    Some(cutoff) => self.prune_peer_points(cutoff.as_millisecond(), limit)?,
                },
                PruneStage::Programs => match plan.intervals_closed_before {
                    None => None,
                    Some(_) => self.prune_programs(cursor, limit)?,
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
    }

    /// One batch of closed intervals, host by host from `cursor.after`;
    /// `None` once every host is done.
    fn prune_intervals(&self, cutoff: i64, cursor: &mut PruneCursor, limit: i64) -> Result<Option<Pruned>, StoreError> {
        // Found on a read connection, host by host, without the writer.
        let (ids, next_after, finished) = self.read(|conn| {
            let mut hosts = conn
                .prepare_cached("SELECT id FROM hosts WHERE id > ?1 ORDER BY id LIMIT ?2")
                .map_err(db)?;
            let mut expired = conn
                .prepare_cached(
                    "SELECT id FROM intervals INDEXED BY intervals_by_host
                     WHERE host_id = ?1 AND closed_at < ?2 LIMIT ?3",
                )
                .map_err(db)?;
            let mut ids: Vec<i64> = Vec::new();
            let mut after = cursor.after;
            loop {
                let batch: Vec<i64> = hosts
                    .query_map(params![after, HOSTS_PER_LOOK], |r| r.get(0))
                    .map_err(db)?
                    .collect::<Result<_, _>>()
                    .map_err(db)?;
                if batch.is_empty() {
                    return Ok((ids, after, true));
                }
                for host in batch {
                    let room = limit - ids.len() as i64;
                    let found: Vec<i64> = expired
                        .query_map(params![host, cutoff, room], |r| r.get(0))
                        .map_err(db)?
                        .collect::<Result<_, _>>()
                        .map_err(db)?;
                    let full = found.len() as i64 == room;
                    ids.extend(found);
                    if full {
                        // This host may have more: the next batch starts with it again.
                        return Ok((ids, after, false));
                    }
                    after = host;
                }
            }
        })?;
        cursor.after = next_after;
        if ids.is_empty() && finished {
            return Ok(None);
        }
        let removed = self.transact(Synchronous::Normal, |tx| {
            let mut delete = tx
                .prepare_cached(
                    "DELETE FROM intervals WHERE id = ?1 AND closed_at < ?2 AND id < (SELECT max(id) FROM intervals)",
                )
                .map_err(db)?;
            let mut removed = 0u64;
            for id in &ids {
                removed += delete.execute(params![id, cutoff]).map_err(db)? as u64;
            }
            Ok(removed)
        })?;
        Ok(Some(Pruned {
            intervals: removed,
            ..Pruned::default()
        }))
    }

    /// One batch of expired alerts (by id, from `cursor.after`) with their
    /// events; those with an event a sink has not delivered are kept and
    /// counted. `None` once past the last.
    fn prune_alerts(&self, cutoff: i64, cursor: &mut PruneCursor, limit: i64) -> Result<Option<Pruned>, StoreError> {
        let alerts_per_batch = (limit / 4).max(1);
        let pruned = self.transact(Synchronous::Normal, |tx| {
            let candidates: Vec<(i64, bool)> = tx
                .prepare_cached(&format!(
                    "SELECT a.id, {HELD_SQL} FROM alerts a
                     WHERE a.id > ?1 AND a.state = 'resolved' AND a.resolved_at < ?2
                       AND a.id < (SELECT max(id) FROM alerts)
                     ORDER BY a.id LIMIT ?3"
                ))
                .and_then(|mut stmt| {
                    stmt.query_map(params![cursor.after, cutoff, alerts_per_batch], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })?
                    .collect::<Result<_, _>>()
                })
                .map_err(db)?;
            let Some(&(last, _)) = candidates.last() else {
                return Ok(None);
            };
            let mut pruned = Pruned::default();
            let mut events = tx
                .prepare_cached("DELETE FROM alert_events WHERE alert_id = ?1")
                .map_err(db)?;
            let mut alerts = tx
                .prepare_cached("DELETE FROM alerts WHERE id = ?1 AND state = 'resolved' AND resolved_at < ?2")
                .map_err(db)?;
            for (id, held) in candidates {
                if held {
                    pruned.alerts_held += 1;
                    continue;
                }
                pruned.alert_events += events.execute([id]).map_err(db)? as u64;
                pruned.alerts += alerts.execute(params![id, cutoff]).map_err(db)? as u64;
            }
            Ok(Some((pruned, last)))
        })?;
        Ok(pruned.map(|(pruned, last)| {
            cursor.after = last;
            pruned
        }))
    }

    /// One batch of peers points; `None` when nothing is left.
    fn prune_peer_points(&self, cutoff: i64, limit: i64) -> Result<Option<Pruned>, StoreError> {
        let removed = self.transact(Synchronous::Normal, |tx| {
            tx.prepare_cached(
                "DELETE FROM peer_points WHERE rowid IN (
                     SELECT rowid FROM peer_points INDEXED BY peer_points_by_age WHERE at < ?1 LIMIT ?2)",
            )
            .and_then(|mut stmt| stmt.execute(params![cutoff, limit]))
            .map_err(db)
        })? as u64;
        Ok((removed > 0).then(|| Pruned {
            peer_points: removed,
            ..Pruned::default()
        }))
    }

    /// One batch of the baseline log; `None` when nothing is left.
    fn prune_baseline_log(&self, cutoff: i64, limit: i64) -> Result<Option<Pruned>, StoreError> {
        let removed = self.transact(Synchronous::Normal, |tx| {
            tx.prepare_cached(
                "DELETE FROM baseline_log WHERE id IN (
                     SELECT id FROM baseline_log
                     WHERE at < ?1 AND id NOT IN (SELECT max(id) FROM baseline_log GROUP BY name) LIMIT ?2)",
            )
            .and_then(|mut stmt| stmt.execute(params![cutoff, limit]))
            .map_err(db)
        })? as u64;
        Ok((removed > 0).then(|| Pruned {
            baseline_log: removed,
            ..Pruned::default()
        }))
    }

    /// One batch of programs no interval names; the first call of the step
    /// finds them (one scan of every owner list, on a read connection).
    /// `None` once they are all removed.
    fn prune_programs(&self, cursor: &mut PruneCursor, limit: i64) -> Result<Option<Pruned>, StoreError> {
        if cursor.after == 0 {
            let (candidates, seen, forgotten) = self.read(|conn| {
                conn.execute_batch("BEGIN").map_err(db)?;
                let found = (|| {
                    let forgotten = hosts_forgotten(conn)?;
                    let seen: i64 = conn
                        .query_row("SELECT coalesce(max(id), 0) FROM intervals", [], |r| r.get(0))
                        .map_err(db)?;
                    let mut named = FxHashSet::default();
                    programs_named(conn, "SELECT owners FROM intervals", &[], &mut named)?;
                    let mut stmt = conn.prepare("SELECT id FROM programs ORDER BY id").map_err(db)?;
                    let ids = stmt.query_map([], |r| r.get::<_, i64>(0)).map_err(db)?;
                    let mut unnamed = Vec::new();
                    for id in ids {
                        let id = id.map_err(db)?;
                        if !named.contains(&id) {
                            unnamed.push(id);
                        }
                    }
                    Ok((unnamed, seen, forgotten))
                })();
                let _ = conn.execute_batch("COMMIT");
                found
            })?;
            // Removed from the back: the batch is the tail.
            cursor.programs = candidates.into_iter().rev().collect();
            cursor.intervals_seen = seen;
            // `after` holds the count of forgotten hosts at the scan, plus one (0: not scanned).
            cursor.after = forgotten + 1;
            // The first deletes come at the next call, after what ingest wrote meanwhile.
            return Ok(Some(Pruned::default()));
        }
        if cursor.programs.is_empty() {
            return Ok(None);
        }
        let take = cursor.programs.len().min(limit as usize);
        let batch: Vec<i64> = cursor.programs.split_off(cursor.programs.len() - take);
        let scanned_at = cursor.after - 1;
        let checked = self.transact(Synchronous::Normal, |tx| {
            if hosts_forgotten(tx)? != scanned_at {
                // A host was forgotten since: new intervals may have its ids. Look again.
                return Ok(None);
            }
            // Intervals written since the scan may name a program again.
            let mut named = FxHashSet::default();
            programs_named(
                tx,
                "SELECT owners FROM intervals WHERE id > ?1",
                &[&cursor.intervals_seen],
                &mut named,
            )?;
            let seen: i64 = tx
                .query_row("SELECT coalesce(max(id), 0) FROM intervals", [], |r| r.get(0))
                .map_err(db)?;
            let mut delete = tx.prepare_cached("DELETE FROM programs WHERE id = ?1").map_err(db)?;
            let mut removed = 0u64;
            for id in batch.iter().filter(|id| !named.contains(id)) {
                removed += delete.execute([id]).map_err(db)? as u64;
            }
            Ok(Some((removed, seen.max(cursor.intervals_seen), named)))
        })?;
        let Some((removed, seen, named)) = checked else {
            cursor.after = 0;
            cursor.programs.clear();
            return Ok(Some(Pruned::default()));
        };
        // The intervals read are not read again: a later batch's program
        // they name is named, whichever batch it is in.
        cursor.programs.retain(|id| !named.contains(id));
        cursor.intervals_seen = seen;
        Ok(Some(Pruned {
            programs: removed,
            ..Pruned::default()
        }))
    }

    pub(super) fn reclaim_impl(&self, pages: u32) -> Result<u64, StoreError> {
        self.transact(Synchronous::Normal, |tx| {
            tx.execute_batch(&format!("PRAGMA incremental_vacuum({pages})"))
                .map_err(db)?;
            count(tx, "PRAGMA freelist_count", &[])
        })
    }

    pub(super) fn forget_host_impl(&self, name: &str) -> Result<Option<Forgotten>, StoreError> {
        let forgotten = self.transact(Synchronous::Full, |tx| {
            let Some(host_id): Option<i64> = tx
                .query_row("SELECT id FROM hosts WHERE name = ?1", [name], |r| r.get(0))
                .optional()
                .map_err(db)?
            else {
                return Ok(None);
            };
            let mut forgotten = Forgotten::default();
            let ports: Vec<(i64, i64)> = tx
                .prepare("SELECT proto, port FROM ports_first_seen WHERE host_id = ?1")
                .and_then(|mut stmt| {
                    stmt.query_map([host_id], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<Result<_, _>>()
                })
                .map_err(db)?;
            let execute = |sql: &str, params: &[&dyn rusqlite::ToSql]| -> Result<u64, StoreError> {
                tx.execute(sql, params).map(|n| n as u64).map_err(db)
            };
            execute("DELETE FROM ports_first_seen WHERE host_id = ?1", &[&host_id])?;
            forgotten.snapshot_parts = execute("DELETE FROM snapshot_parts WHERE host_id = ?1", &[&host_id])?;
            forgotten.intervals = execute(
                "DELETE FROM intervals WHERE id IN (SELECT id FROM intervals INDEXED BY intervals_by_host
                                                    WHERE host_id = ?1)",
                &[&host_id],
            )?;
            for (proto, port) in ports {
                // SQLite takes the bare host_id from the row holding the min().
                let moved = execute(
                    "INSERT INTO ports_first_seen (proto, port, first_seen, host_id)
                     SELECT proto, port, min(opened_at), host_id FROM intervals INDEXED BY intervals_by_port
                     WHERE port = ?2 AND proto = ?1 GROUP BY proto, port",
                    &[&proto, &port],
                )?;
                if moved > 0 {
                    forgotten.first_seen_moved += 1;
                } else {
                    forgotten.first_seen_dropped += 1;
                }
            }
            forgotten.alert_events = execute(
                "DELETE FROM alert_events WHERE alert_id IN (SELECT id FROM alerts WHERE host = ?1)",
                &[&name],
            )?;
            forgotten.alerts = execute("DELETE FROM alerts WHERE host = ?1", &[&name])?;
            forgotten.tokens = execute("DELETE FROM tokens WHERE host = ?1 OR name = 'agent:' || ?1", &[&name])?;
            execute("DELETE FROM probe_verdicts WHERE host = ?1", &[&name])?;
            forgotten.peer_points = execute("DELETE FROM peer_points WHERE host = ?1", &[&name])?;
            execute("DELETE FROM hosts WHERE id = ?1", &[&host_id])?;
            execute(
                "UPDATE retention_state SET value = value + 1 WHERE name = 'hosts_forgotten'",
                &[],
            )?;
            Ok(Some(forgotten))
        })?;
        if forgotten.is_some() {
            // Its id may be given to the next new host.
            self.hosts.clear();
        }
        Ok(forgotten)
    }
}
