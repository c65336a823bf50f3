//! Baselines and alerts in SQLite (schema: `migrations/0002_baselines_alerts.sql`).

use std::collections::HashSet;

use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension};

use super::{corrupt, db, timestamp, SqliteStore, Synchronous};
use crate::lifecycle::{self, cap};
use crate::store::{AckOutcome, SinkProgress, StoreError};
use portwatch_model::{AlertEvent, AlertRow, AlertState, BaselineAction, BaselineLogRow, StoredBaseline};
use portwatch_model::{Finding, Kind, Severity};

const ALERT_COLUMNS: &str = "id, key, kind, severity, host, message, state, opened_at, acked_at, acked_by, \
     ack_comment, resolved_at, finding";

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
        type Raw = (i64, String, String, i64, String, Option<String>, Option<String>);
        let raws: Vec<Raw> = self.read(|conn| {
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
        raws.into_iter()
            .map(|(id, name, action, at, actor, comment, source)| {
                let action = BaselineAction::parse(&action)
                    .filter(|a| *a != BaselineAction::Unchanged)
                    .ok_or_else(|| corrupt(format!("baseline action {action:?}")))?;
                Ok(BaselineLogRow {
                    id,
                    name,
                    action,
                    at: timestamp(at)?,
                    actor,
                    comment,
                    source,
                })
            })
            .collect()
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
                for raw in stmt.query_map([], RawAlert::from_row).map_err(db)? {
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
                    for raw in stmt.query_map([host], RawAlert::from_row).map_err(db)? {
                        keep(raw)?;
                    }
                }
            }
            let plan = cap::plan(findings, &active, max_open);
            let mut events = Vec::new();
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
            for &id in &plan.resolve {
                let alert = lifecycle::resolve(alert_by_id(tx, id)?, now);
                write_state(tx, &alert)?;
                let event = AlertEvent::Resolved(alert);
                record(tx, &event, now)?;
                events.push(event);
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
                .query_map(params![state.map(AlertState::as_str), host, limit], RawAlert::from_row)
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

/// An outbox row as the sinks get it. A row this build cannot read (written
/// by another version) is handed on as such: the sink logs it and moves
/// past it, rather than stopping at it.
fn outbox_event((id, event, alert): (i64, String, String)) -> crate::store::OutboxEvent {
    let parsed = serde_json::from_str::<AlertRow>(&alert)
        .map_err(|e| format!("alert event {id} cannot be read by this collector: {e}"))
        .and_then(|alert| {
            AlertEvent::from_name(&event, alert)
                .ok_or_else(|| format!("alert event {id} has an unknown kind {event:?}"))
        });
    (id, parsed)
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
        .and_then(|mut stmt| stmt.query_row([id], RawAlert::from_row).optional())
        .map_err(db)?
        .map(RawAlert::into_row)
        .transpose()
}

/// An `alerts` row as stored.
struct RawAlert {
    id: i64,
    key: String,
    kind: String,
    severity: String,
    host: String,
    message: String,
    state: String,
    opened_at: i64,
    acked_at: Option<i64>,
    acked_by: Option<String>,
    ack_comment: Option<String>,
    resolved_at: Option<i64>,
    finding: String,
}

impl RawAlert {
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawAlert> {
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

    fn into_row(self) -> Result<AlertRow, StoreError> {
        let kind = Kind::parse(&self.kind).ok_or_else(|| corrupt(format!("alert kind {:?}", self.kind)))?;
        let severity =
            Severity::parse(&self.severity).ok_or_else(|| corrupt(format!("alert severity {:?}", self.severity)))?;
        let state = AlertState::parse(&self.state).ok_or_else(|| corrupt(format!("alert state {:?}", self.state)))?;
        let finding: Finding =
            serde_json::from_str(&self.finding).map_err(|e| corrupt(format!("alert {} finding: {e}", self.id)))?;
        Ok(AlertRow {
            id: self.id,
            key: self.key,
            kind,
            severity,
            host: self.host,
            message: self.message,
            state,
            opened_at: timestamp(self.opened_at)?,
            acked_at: self.acked_at.map(timestamp).transpose()?,
            acked_by: self.acked_by,
            ack_comment: self.ack_comment,
            resolved_at: self.resolved_at.map(timestamp).transpose()?,
            finding,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Alerts, Baselines, Outbox};
    use portwatch_model::Kind;

    struct Db(std::path::PathBuf);

    impl Db {
        fn new(tag: &str) -> (Db, SqliteStore) {
            let dir = std::env::temp_dir().join(format!("pw-policy-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let store = SqliteStore::open(&dir.join("c.db")).unwrap();
            (Db(dir), store)
        }
    }

    impl Drop for Db {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn finding(kind: Kind, host: &str, port: u16) -> Finding {
        Finding {
            message: format!("{host}: tcp/{port}"),
            proto: Some(portwatch_common::Proto::Tcp),
            local_port: Some(port),
            ..Finding::new(kind, host, format!("{}:{host}:tcp/{port}", kind.as_str()))
        }
    }

    fn hosts(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn baseline_changes_are_logged_with_who_when_and_why_and_a_same_source_is_no_change() {
        let (_db, store) = Db::new("log");
        assert_eq!(
            store.put_baseline("web", "a", "ops-ann", Some("first"), t(0)).unwrap(),
            BaselineAction::Create
        );
        assert_eq!(
            store.put_baseline("web", "a", "ops-bob", None, t(1)).unwrap(),
            BaselineAction::Unchanged
        );
        assert_eq!(
            store
                .put_baseline("web", "b", "ops-bob", Some("add 443"), t(2))
                .unwrap(),
            BaselineAction::Update
        );
        assert!(store
            .remove_baseline("web", "ops-cid", Some("host retired"), t(3))
            .unwrap());
        assert!(!store.remove_baseline("web", "ops-cid", None, t(4)).unwrap());
        assert!(store.baselines().unwrap().is_empty());
        let log = store.baseline_log(Some("web")).unwrap();
        let summary: Vec<_> = log
            .iter()
            .map(|r| {
                (
                    r.action,
                    r.actor.as_str(),
                    r.comment.as_deref(),
                    r.source.as_deref(),
                    r.at,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (BaselineAction::Create, "ops-ann", Some("first"), Some("a"), t(0)),
                (BaselineAction::Update, "ops-bob", Some("add 443"), Some("b"), t(2)),
                (BaselineAction::Remove, "ops-cid", Some("host retired"), None, t(3)),
            ]
        );
        assert!(store.baseline_log(Some("db")).unwrap().is_empty());
    }

    #[test]
    fn an_alert_opens_once_while_its_condition_holds_and_resolves_when_it_clears() {
        let (_db, store) = Db::new("alerts");
        let unexpected = finding(Kind::UnexpectedListener, "web-1", 8080);
        let unbaselined = finding(Kind::Unbaselined, "web-2", 22);
        let events = store
            .sync_alerts(
                &hosts(&["web-1", "web-2"]),
                &[unexpected.clone(), unbaselined],
                cap::DEFAULT_MAX_OPEN,
                t(0),
            )
            .unwrap();
        assert_eq!(events.len(), 1, "unbaselined listeners raise no alert: {events:?}");
        let AlertEvent::Opened(opened) = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!(
            (opened.state, opened.opened_at, &opened.finding),
            (AlertState::Open, t(0), &unexpected)
        );

        // Seen again (twice in one call, too): no second alert.
        let again = store
            .sync_alerts(
                &hosts(&["web-1"]),
                &[unexpected.clone(), unexpected.clone()],
                cap::DEFAULT_MAX_OPEN,
                t(10),
            )
            .unwrap();
        assert!(again.is_empty(), "{again:?}");

        // Acknowledged, still holding: still one alert, acknowledged.
        let AckOutcome::Acknowledged(acked) = store.ack_alert(opened.id, "ops-ann", "on it", t(20)).unwrap() else {
            panic!("not acknowledged")
        };
        assert_eq!(
            (acked.acked_by.as_deref(), acked.ack_comment.as_deref()),
            (Some("ops-ann"), Some("on it"))
        );
        assert!(matches!(
            store.ack_alert(opened.id, "ops-bob", "me too", t(21)).unwrap(),
            AckOutcome::NotOpen(_)
        ));
        assert_eq!(
            store.ack_alert(999, "ops-bob", "?", t(21)).unwrap(),
            AckOutcome::NotFound
        );
        assert!(store
            .sync_alerts(
                &hosts(&["web-1"]),
                std::slice::from_ref(&unexpected),
                cap::DEFAULT_MAX_OPEN,
                t(30)
            )
            .unwrap()
            .is_empty());

        assert_eq!(
            store.active_alert_keys().unwrap(),
            vec![("web-1".to_owned(), unexpected.key.clone())],
            "an acknowledged alert is still active"
        );
        // Evaluating another host leaves this one's alert alone.
        assert!(store
            .sync_alerts(&hosts(&["web-2"]), &[], cap::DEFAULT_MAX_OPEN, t(35))
            .unwrap()
            .is_empty());

        // The condition clears: resolved (evaluated in a sweep of many hosts).
        let many: Vec<String> = (1..=20).map(|i| format!("web-{i}")).collect();
        let cleared = store.sync_alerts(&many, &[], cap::DEFAULT_MAX_OPEN, t(40)).unwrap();
        let [AlertEvent::Resolved(resolved)] = &cleared[..] else {
            panic!("{cleared:?}")
        };
        assert_eq!(
            (resolved.id, resolved.resolved_at, resolved.state),
            (opened.id, Some(t(40)), AlertState::Resolved)
        );
        assert!(matches!(
            store.ack_alert(opened.id, "ops-bob", "late", t(41)).unwrap(),
            AckOutcome::NotOpen(_)
        ));

        // It comes back: a new alert.
        let back = store
            .sync_alerts(&hosts(&["web-1"]), &[unexpected], cap::DEFAULT_MAX_OPEN, t(50))
            .unwrap();
        let [AlertEvent::Opened(second)] = &back[..] else {
            panic!("{back:?}")
        };
        assert_ne!(second.id, opened.id);
        let all = store.alerts(None, Some("web-1"), 10).unwrap();
        assert_eq!(
            all.iter().map(|a| (a.id, a.state)).collect::<Vec<_>>(),
            vec![(second.id, AlertState::Open), (opened.id, AlertState::Resolved)]
        );
        assert_eq!(store.alerts(Some(AlertState::Resolved), None, 10).unwrap().len(), 1);
        assert_eq!(store.alerts(None, None, 1).unwrap().len(), 1);
    }

    #[test]
    fn an_outbox_row_this_build_cannot_read_is_handed_on_as_such_not_an_error_for_all() {
        let (db, store) = Db::new("outbox");
        store
            .sync_alerts(
                &hosts(&["web-1"]),
                &[finding(Kind::UnexpectedListener, "web-1", 8080)],
                cap::DEFAULT_MAX_OPEN,
                t(0),
            )
            .unwrap();
        let conn = Connection::open(db.0.join("c.db")).unwrap();
        conn.execute(
            "INSERT INTO alert_events (alert_id, event, at, alert) VALUES (1, 'opened', 0, '{\"from\": \"v9\"}')",
            [],
        )
        .unwrap();
        store
            .sync_alerts(&hosts(&["web-1"]), &[], cap::DEFAULT_MAX_OPEN, t(10))
            .unwrap();
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

    #[test]
    fn a_flood_opens_the_cap_and_one_summary_whose_count_changes_in_place_without_an_event() {
        let (_db, store) = Db::new("cap");
        let flood: Vec<Finding> = (0..1000)
            .map(|p| finding(Kind::UnexpectedListener, "web-1", 10_000 + p))
            .collect();
        let events = store.sync_alerts(&hosts(&["web-1"]), &flood, 10, t(0)).unwrap();
        assert_eq!(events.len(), 11, "10 alerts and the summary");
        let AlertEvent::Opened(summary) = &events[10] else {
            panic!("{events:?}")
        };
        assert_eq!(summary.key, "unexpected-listener:web-1:overflow");
        assert_eq!(summary.finding.more, Some(990));
        assert!(summary
            .message
            .starts_with("… and 990 more unexpected-listener findings on web-1"));

        // Half the flood clears: the count changes in place, and no event says so.
        let events = store.sync_alerts(&hosts(&["web-1"]), &flood[..500], 10, t(10)).unwrap();
        assert_eq!(events, vec![]);
        let now = store.alerts(None, Some("web-1"), 100).unwrap();
        assert_eq!(now.len(), 11);
        let current = now.iter().find(|a| a.id == summary.id).unwrap();
        assert_eq!((current.state, current.finding.more), (AlertState::Open, Some(490)));
        assert!(current.message.starts_with("… and 490 more "), "{}", current.message);
        assert_eq!(store.alert_events_after(0, 100).unwrap().len(), 11);

        // It all clears: every alert resolves, the summary with its last count.
        let events = store.sync_alerts(&hosts(&["web-1"]), &[], 10, t(20)).unwrap();
        assert_eq!(events.len(), 11);
        let AlertEvent::Resolved(last) = &events[10] else {
            panic!("{events:?}")
        };
        assert_eq!((last.id, last.finding.more), (summary.id, Some(490)));
    }

    #[test]
    fn a_sink_s_progress_is_its_cursor_and_the_events_done_after_it() {
        let (_db, store) = Db::new("progress");
        store
            .sync_alerts(
                &hosts(&["web-1"]),
                &[finding(Kind::UnexpectedListener, "web-1", 8080)],
                cap::DEFAULT_MAX_OPEN,
                t(0),
            )
            .unwrap();
        // A new sink starts at the newest event.
        assert_eq!(
            store.sink_progress("webhook:ops").unwrap(),
            SinkProgress {
                cursor: 1,
                done: vec![]
            }
        );
        let many: Vec<Finding> = (0..5).map(|p| finding(Kind::UnexpectedListener, "web-2", p)).collect();
        store
            .sync_alerts(&hosts(&["web-2"]), &many, cap::DEFAULT_MAX_OPEN, t(1))
            .unwrap();
        assert_eq!(
            store.alert_event_hosts_after(1, 3).unwrap(),
            vec![
                (2, "web-2".to_owned()),
                (3, "web-2".to_owned()),
                (4, "web-2".to_owned())
            ]
        );
        let AlertEvent::Opened(a) = store.alert_event(3).unwrap().unwrap().1.unwrap() else {
            panic!("not an opening")
        };
        assert_eq!(a.finding.local_port, Some(1));
        assert!(store.alert_event(99).unwrap().is_none());

        store.set_sink_progress("webhook:ops", 2, &[4, 5, 1]).unwrap();
        assert_eq!(
            store.sink_progress("webhook:ops").unwrap(),
            SinkProgress {
                cursor: 2,
                done: vec![4, 5]
            }
        );
        // The cursor moves on: what it passes is forgotten; it never moves back.
        store.set_sink_progress("webhook:ops", 4, &[6]).unwrap();
        assert_eq!(
            store.sink_progress("webhook:ops").unwrap(),
            SinkProgress {
                cursor: 4,
                done: vec![5, 6]
            }
        );
        store.set_sink_progress("webhook:ops", 3, &[]).unwrap();
        assert_eq!(store.sink_progress("webhook:ops").unwrap().cursor, 4);
        // Each sink has its own.
        assert_eq!(
            store.sink_progress("syslog").unwrap(),
            SinkProgress {
                cursor: 6,
                done: vec![]
            }
        );
    }
}
