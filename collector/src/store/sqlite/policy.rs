//! Baselines and alerts in SQLite (schema: `migrations/0002_baselines_alerts.sql`).

use std::collections::HashSet;

use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension};

use super::{db, SqliteStore, Synchronous};
use crate::lifecycle::{self, cap};
use crate::store::stored::{
    baseline_log_row, corrupt, outbox_event, timestamp, RawAlert, RawBaselineLog, ALERT_COLUMNS,
};
use crate::store::{AckOutcome, SinkProgress, StoreError};
use portwatch_model::{AlertEvent, AlertRow, AlertState, BaselineAction, BaselineLogRow, StoredBaseline};
use portwatch_model::{Finding, Kind};

impl SqliteStore {
    pub(super) fn put_baseline_impl(
        &self,
        name: &str,
        source: &str,
        actor: &str,
        comment: Option<&str>,
        at: Timestamp,
    ) -> Result<BaselineAction, StoreError> {
        self.transact(Synchronous::Full, |tx| {
            let old: Option<String> = tx
                .query_row("SELECT source FROM baselines WHERE name = ?1", [name], |r| r.get(0))
                .optional()
                .map_err(db)?;
            let action = BaselineAction::of_applying(old.as_deref(), source);
            if action == BaselineAction::Unchanged {
                return Ok(action);
            }
            tx.execute(
                "INSERT INTO baselines (name, source, applied_at, applied_by) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO UPDATE SET source = excluded.source, applied_at = excluded.applied_at,
                 applied_by = excluded.applied_by",
                params![name, source, at.as_millisecond(), actor],
            )
            .map_err(db)?;
            log_change(tx, name, action, at, actor, comment, Some(source))?;
            Ok(action)
        })
    }

    pub(super) fn remove_baseline_impl(
        &self,
        name: &str,
        actor: &str,
        comment: Option<&str>,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.transact(Synchronous::Full, |tx| {
            let removed = tx
                .execute("DELETE FROM baselines WHERE name = ?1", [name])
                .map_err(db)?
                > 0;
            if removed {
                log_change(tx, name, BaselineAction::Remove, at, actor, comment, None)?;
            }
            Ok(removed)
        })
    }

    pub(super) fn baselines_impl(&self) -> Result<Vec<StoredBaseline>, StoreError> {
        let raws: Vec<(String, String, i64, String)> = self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT name, source, applied_at, applied_by FROM baselines ORDER BY name")
                .map_err(db)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .map_err(db)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db)
        })?;
        raws.into_iter()
            .map(|(name, source, at, applied_by)| {
                Ok(StoredBaseline {
                    name,
                    source,
                    applied_at: timestamp(at)?,
                    applied_by,
                })
            })
            .collect()
    }

    pub(super) fn baseline_log_impl(&self, name: Option<&str>) -> Result<Vec<BaselineLogRow>, StoreError> {
        let raws: Vec<RawBaselineLog> = self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, name, action, at, actor, comment, source FROM baseline_log
                     WHERE ?1 IS NULL OR name = ?1 ORDER BY id",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map([name], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                })
                .map_err(db)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db)
        })?;
        raws.into_iter().map(baseline_log_row).collect()
    }

    pub(super) fn sync_alerts_impl(
        &self,
        hosts: &[String],
        findings: &[Finding],
        max_open: usize,
        now: Timestamp,
    ) -> Result<Vec<AlertEvent>, StoreError> {
        let mut events = self.transact(Synchronous::Full, |tx| {
            // The unresolved alerts of these hosts: one pass over the partial
            // index when many hosts are evaluated (a sweep), a lookup per host
            // when few are.
            let mut active: Vec<AlertRow> = Vec::new();
            let wanted_hosts: HashSet<&str> = hosts.iter().map(String::as_str).collect();
            let mut keep = |raw: rusqlite::Result<RawAlert>| -> Result<(), StoreError> {
                let alert = raw.map_err(db)?.into_row()?;
                if wanted_hosts.contains(alert.host.as_str()) {
                    active.push(alert);
                }
                Ok(())
            };
            if hosts.len() > 16 {
                let mut stmt = tx
                    .prepare_cached(&format!(
                        "SELECT {ALERT_COLUMNS} FROM alerts INDEXED BY alerts_active_by_host WHERE state != 'resolved'"
                    ))
                    .map_err(db)?;
                for raw in stmt.query_map([], raw_alert).map_err(db)? {
                    keep(raw)?;
                }
            } else {
                let mut stmt = tx
                    .prepare_cached(&format!(
                        "SELECT {ALERT_COLUMNS} FROM alerts INDEXED BY alerts_active_by_host
                         WHERE host = ?1 AND state != 'resolved'"
                    ))
                    .map_err(db)?;
                for host in hosts {
                    for raw in stmt.query_map([host], raw_alert).map_err(db)? {
                        keep(raw)?;
                    }
                }
            }
            let plan = cap::plan(findings, &active, max_open);
            let mut events = Vec::new();
            // Resolved first: an alert resolved to open again at a higher severity
            // leaves its key free for the new one.
            for &id in &plan.resolve {
                let alert = lifecycle::resolve(alert_by_id(tx, id)?, now);
                write_state(tx, &alert)?;
                let event = AlertEvent::Resolved(alert);
                record(tx, &event, now)?;
                events.push(event);
            }
            for f in &plan.open {
                let finding = serde_json::to_string(f).map_err(|e| corrupt(format!("finding: {e}")))?;
                // Another collector may have opened it meanwhile: the unique index
                // keeps one, and this one then opens nothing.
                let inserted: Option<i64> = tx
                    .prepare_cached(
                        "INSERT INTO alerts (key, kind, severity, host, message, finding, state, opened_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'open', ?7)
                     ON CONFLICT (key) WHERE state != 'resolved' DO NOTHING
                     RETURNING id",
                    )
                    .and_then(|mut stmt| {
                        stmt.query_row(
                            params![
                                f.key,
                                f.kind.as_str(),
                                f.severity.as_str(),
                                f.host,
                                f.message,
                                finding,
                                now.as_millisecond()
                            ],
                            |r| r.get(0),
                        )
                        .optional()
                    })
                    .map_err(db)?;
                if let Some(id) = inserted {
                    let event = AlertEvent::Opened(alert_by_id(tx, id)?);
                    record(tx, &event, now)?;
                    events.push(event);
                }
            }
            for (id, f) in &plan.update {
                let finding = serde_json::to_string(f).map_err(|e| corrupt(format!("finding: {e}")))?;
                tx.prepare_cached(
                    "UPDATE alerts SET message = ?2, severity = ?3, finding = ?4 WHERE id = ?1 AND state != 'resolved'",
                )
                .and_then(|mut stmt| stmt.execute(params![id, f.message, f.severity.as_str(), finding]))
                .map_err(db)?;
            }
            Ok(events)
        })?;
        events.sort_by_key(|e| e.alert().id);
        Ok(events)
    }

    pub(super) fn alerts_impl(
        &self,
        state: Option<AlertState>,
        host: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AlertRow>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let raws = self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {ALERT_COLUMNS} FROM alerts
                     WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR host = ?2)
                     ORDER BY id DESC LIMIT ?3"
                ))
                .map_err(db)?;
            let rows = stmt
                .query_map(params![state.map(AlertState::as_str), host, limit], raw_alert)
                .map_err(db)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db)
        })?;
        raws.into_iter().map(RawAlert::into_row).collect()
    }

    pub(super) fn ack_alert_impl(
        &self,
        id: i64,
        actor: &str,
        comment: &str,
        at: Timestamp,
    ) -> Result<AckOutcome, StoreError> {
        // The writer's transaction holds the alert from the read to the write.
        self.transact(Synchronous::Full, |tx| {
            let Some(alert) = find_alert(tx, id)? else {
                return Ok(AckOutcome::NotFound);
            };
            match lifecycle::acknowledge(&alert, actor, comment, at) {
                None => Ok(AckOutcome::NotOpen(alert)),
                Some(alert) => {
                    write_state(tx, &alert)?;
                    record(tx, &AlertEvent::Acknowledged(alert.clone()), at)?;
                    Ok(AckOutcome::Acknowledged(alert))
                }
            }
        })
    }

    pub(super) fn active_alert_keys_impl(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT host, key FROM alerts INDEXED BY alerts_active_by_host WHERE state != 'resolved'",
                )
                .map_err(db)?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(db)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db)
        })
    }

    pub(super) fn active_alert_counts_impl(&self) -> Result<Vec<(Kind, AlertState, u64)>, StoreError> {
        let raws: Vec<(String, String, i64)> = self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT kind, state, count(*) FROM alerts INDEXED BY alerts_active_by_host
                     WHERE state != 'resolved' GROUP BY kind, state",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(db)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db)
        })?;
        raws.into_iter()
            .map(|(kind, state, n)| {
                Ok((
                    Kind::parse(&kind).ok_or_else(|| corrupt(format!("alert kind {kind:?}")))?,
                    AlertState::parse(&state).ok_or_else(|| corrupt(format!("alert state {state:?}")))?,
                    u64::try_from(n).unwrap_or(0),
                ))
            })
            .collect()
    }

    pub(super) fn alert_events_after_impl(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<crate::store::OutboxEvent>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let raws: Vec<(i64, String, String)> = self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT id, event, alert FROM alert_events WHERE id > ?1 ORDER BY id LIMIT ?2")
                .map_err(db)?;
            let rows = stmt
                .query_map(params![after, limit], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(db)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db)
        })?;
        Ok(raws.into_iter().map(outbox_event).collect())
    }

    pub(super) fn alert_event_hosts_after_impl(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|conn| {
            // An event whose alert is gone (never, but a damaged file) has
            // the host "": it is still handed on, to be read and skipped.
            let mut stmt = conn
                .prepare_cached(
                    "SELECT e.id, coalesce(a.host, '') FROM alert_events e LEFT JOIN alerts a ON a.id = e.alert_id
                     WHERE e.id > ?1 ORDER BY e.id LIMIT ?2",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map(params![after, limit], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(db)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db)
        })
    }

    pub(super) fn alert_event_impl(&self, id: i64) -> Result<Option<crate::store::OutboxEvent>, StoreError> {
        let raw: Option<(i64, String, String)> = self.read(|conn| {
            conn.prepare_cached("SELECT id, event, alert FROM alert_events WHERE id = ?1")
                .and_then(|mut stmt| {
                    stmt.query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                        .optional()
                })
                .map_err(db)
        })?;
        Ok(raw.map(outbox_event))
    }

    pub(super) fn sink_progress_impl(&self, sink: &str) -> Result<SinkProgress, StoreError> {
        self.transact(Synchronous::Full, |tx| {
            if let Some(progress) = stored_progress(tx, sink)? {
                return Ok(progress);
            }
            let newest: Option<i64> = tx
                .query_row("SELECT max(id) FROM alert_events", [], |r| r.get(0))
                .map_err(db)?;
            let progress = lifecycle::first_place(newest);
            write_progress(tx, sink, &progress)?;
            Ok(progress)
        })
    }

    pub(super) fn set_sink_progress_impl(&self, sink: &str, cursor: i64, done: &[i64]) -> Result<(), StoreError> {
        self.transact(Synchronous::Full, |tx| {
            let stored = stored_progress(tx, sink)?.unwrap_or_default();
            write_progress(tx, sink, &lifecycle::advance(&stored, cursor, done))
        })
    }
}

/// Where `sink` stands in the outbox, if it has a place yet.
fn stored_progress(tx: &Connection, sink: &str) -> Result<Option<SinkProgress>, StoreError> {
    let cursor: Option<i64> = tx
        .query_row("SELECT last_event_id FROM sink_cursors WHERE sink = ?1", [sink], |r| {
            r.get(0)
        })
        .optional()
        .map_err(db)?;
    let Some(cursor) = cursor else {
        return Ok(None);
    };
    let mut stmt = tx
        .prepare_cached("SELECT event_id FROM sink_done WHERE sink = ?1 AND event_id > ?2 ORDER BY event_id")
        .map_err(db)?;
    let done = stmt
        .query_map(params![sink, cursor], |r| r.get(0))
        .map_err(db)?
        .collect::<Result<Vec<i64>, _>>()
        .map_err(db)?;
    Ok(Some(SinkProgress { cursor, done }))
}

/// Stores `progress` as the place of `sink`.
fn write_progress(tx: &Connection, sink: &str, progress: &SinkProgress) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO sink_cursors (sink, last_event_id) VALUES (?1, ?2)
         ON CONFLICT (sink) DO UPDATE SET last_event_id = excluded.last_event_id",
    )
    .and_then(|mut stmt| stmt.execute(params![sink, progress.cursor]))
    .map_err(db)?;
    tx.prepare_cached("DELETE FROM sink_done WHERE sink = ?1 AND event_id <= ?2")
        .and_then(|mut stmt| stmt.execute(params![sink, progress.cursor]))
        .map_err(db)?;
    let mut insert = tx
        .prepare_cached("INSERT INTO sink_done (sink, event_id) VALUES (?1, ?2) ON CONFLICT DO NOTHING")
        .map_err(db)?;
    for &id in &progress.done {
        insert.execute(params![sink, id]).map_err(db)?;
    }
    Ok(())
}

/// Writes the state of `alert` (its acknowledgement and resolution) as the rules left it.
fn write_state(tx: &Connection, alert: &AlertRow) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE alerts SET state = ?2, acked_at = ?3, acked_by = ?4, ack_comment = ?5, resolved_at = ?6 WHERE id = ?1",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            alert.id,
            alert.state.as_str(),
            alert.acked_at.map(Timestamp::as_millisecond),
            alert.acked_by,
            alert.ack_comment,
            alert.resolved_at.map(Timestamp::as_millisecond),
        ])
    })
    .map_err(db)?;
    Ok(())
}

/// Adds `event` to the outbox, in the transaction that made it.
fn record(tx: &Connection, event: &AlertEvent, at: Timestamp) -> Result<(), StoreError> {
    let alert = event.alert();
    let json = serde_json::to_string(alert).map_err(|e| corrupt(format!("alert {}: {e}", alert.id)))?;
    tx.prepare_cached("INSERT INTO alert_events (alert_id, event, at, alert) VALUES (?1, ?2, ?3, ?4)")
        .and_then(|mut stmt| stmt.execute(params![alert.id, event.name(), at.as_millisecond(), json]))
        .map_err(db)?;
    Ok(())
}

fn log_change(
    tx: &Connection,
    name: &str,
    action: BaselineAction,
    at: Timestamp,
    actor: &str,
    comment: Option<&str>,
    source: Option<&str>,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO baseline_log (name, action, at, actor, comment, source) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![name, action.as_str(), at.as_millisecond(), actor, comment, source],
    )
    .map_err(db)?;
    Ok(())
}

fn alert_by_id(conn: &Connection, id: i64) -> Result<AlertRow, StoreError> {
    find_alert(conn, id)?.ok_or_else(|| corrupt(format!("alert {id} is gone in the middle of its transaction")))
}

fn find_alert(conn: &Connection, id: i64) -> Result<Option<AlertRow>, StoreError> {
    conn.prepare_cached(&format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?1"))
        .and_then(|mut stmt| stmt.query_row([id], raw_alert).optional())
        .map_err(db)?
        .map(RawAlert::into_row)
        .transpose()
}

/// An `alerts` row selected as [`ALERT_COLUMNS`].
fn raw_alert(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawAlert> {
    Ok(RawAlert {
        id: r.get(0)?,
        key: r.get(1)?,
        kind: r.get(2)?,
        severity: r.get(3)?,
        host: r.get(4)?,
        message: r.get(5)?,
        state: r.get(6)?,
        opened_at: r.get(7)?,
        acked_at: r.get(8)?,
        acked_by: r.get(9)?,
        ack_comment: r.get(10)?,
        resolved_at: r.get(11)?,
        finding: r.get(12)?,
    })
}

#[cfg(test)]
mod tests {
    //! The behaviour of baselines, alerts, the outbox and sinks is the store
    //! contract's, tested on every backend by the conformance suite
    //! (`collector/tests/conformance/alerts.rs`); here, what only a SQLite
    //! file can be made to hold.
    use portwatch_fixtures::unexpected;

    use super::*;
    use crate::store::{Alerts, Outbox};

    /// A directory of its own, removed when the test ends.
    struct Dir(std::path::PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn an_outbox_row_this_build_cannot_read_is_handed_on_as_such_not_an_error_for_all() {
        let dir = Dir(std::env::temp_dir().join(format!("pw-policy-outbox-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(&dir.0);
        std::fs::create_dir_all(&dir.0).unwrap();
        let store = SqliteStore::open(&dir.0.join("c.db")).unwrap();
        let t = |s: i64| Timestamp::from_second(1_800_000_000 + s).unwrap();
        let web = ["web-1".to_owned()];
        store
            .sync_alerts(&web, &[unexpected("web-1", 8080)], cap::DEFAULT_MAX_OPEN, t(0))
            .unwrap();
        let conn = Connection::open(dir.0.join("c.db")).unwrap();
        conn.execute(
            "INSERT INTO alert_events (alert_id, event, at, alert) VALUES (1, 'opened', 0, '{\"from\": \"v9\"}')",
            [],
        )
        .unwrap();
        store.sync_alerts(&web, &[], cap::DEFAULT_MAX_OPEN, t(10)).unwrap();
        let events = store.alert_events_after(0, 10).unwrap();
        let kinds: Vec<Result<&str, bool>> = events
            .iter()
            .map(|(_, e)| {
                e.as_ref()
                    .map(AlertEvent::name)
                    .map_err(|e| e.contains("cannot be read"))
            })
            .collect();
        assert_eq!(kinds, vec![Ok("opened"), Err(true), Ok("resolved")]);
    }
}
