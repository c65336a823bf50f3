//! Tokens, baselines, alerts and the outbox in PostgreSQL, by the same rules
//! as every backend ([`crate::lifecycle`], [`BaselineAction::of_applying`])
//! and decoded as every backend decodes them ([`crate::store::stored`]).
//!
//! What several collectors writing at once need (see the module docs of
//! [`super`]):
//! - **Outbox order.** Every transaction that adds to `alert_events` takes
//!   [`OUTBOX_LOCK`] first and holds it to commit, so ids are given and made
//!   visible one transaction at a time, in id order: a sink reading past id
//!   `n` never meets an `n - 1` committed later. A sink's first place is the
//!   greatest id under the same lock. The lock is taken after the reads
//!   (and row locks) a transaction needs and before its first write, so a
//!   transaction waiting for it holds nothing another holder waits for.
//! - **One alert per condition.** `sync_alerts` locks the unresolved alerts
//!   it reads (`FOR UPDATE`, in id order): a second collector syncing the
//!   same host waits, then reads them as the first left them (resolved ones
//!   drop out), so an alert is resolved once. Opening goes through the
//!   partial unique index on unresolved keys (`ON CONFLICT ... DO
//!   NOTHING`): of two collectors opening the same key, the second waits for
//!   the first to commit, opens nothing and records no event.
//! - **Tokens** are unique by secret and by current name (the indexes of
//!   `tokens`), and the rows a rotation replaces are locked while it runs.
//! - **Baselines** change under [`BASELINES_LOCK`], so their log says what
//!   each change was (two creates at once log one create and one update).

use deadpool_postgres::Transaction;
use jiff::Timestamp;
use portwatch_model::baseline::{BaselineAction, BaselineLogRow, StoredBaseline};
use portwatch_model::{AlertEvent, AlertRow, AlertState, Finding, Kind};
use tokio_postgres::error::SqlState;

use super::{pg, PostgresStore, BASELINES_LOCK, OUTBOX_LOCK};
use crate::lifecycle::{self, cap};
use crate::store::stored::{
    baseline_log_row, corrupt, outbox_event, timestamp, RawAlert, RawBaselineLog, RawToken, ALERT_COLUMNS,
    TOKEN_COLUMNS,
};
use crate::store::{
    AckOutcome, Alerts, Baselines, Outbox, OutboxEvent, Rotated, SinkProgress, StoreError, TokenRow, Tokens,
};

/// The unique index that allows one current token per name (migration 1).
const CURRENT_TOKEN_INDEX: &str = "tokens_current_by_name";

impl Tokens for PostgresStore {
    fn create_token(&self, token: &TokenRow) -> Result<(), StoreError> {
        self.block(async |inner| inner.transact(async |tx| insert_token(tx, token).await).await)
    }

    fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>, StoreError> {
        let raw = self.block(async |inner| {
            let row = inner
                .client()
                .await?
                .query_opt(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1"), &[&hash])
                .await
                .map_err(pg)?;
            Ok(row.as_ref().map(raw_token))
        })?;
        raw.map(RawToken::into_row).transpose()
    }

    fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        let raws = self.block(async |inner| {
            // Byte order, as every backend orders names.
            let rows = inner
                .client()
                .await?
                .query(
                    &format!(r#"SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY name COLLATE "C", created_at, id"#),
                    &[],
                )
                .await
                .map_err(pg)?;
            Ok(rows.iter().map(raw_token).collect::<Vec<_>>())
        })?;
        raws.into_iter().map(RawToken::into_row).collect()
    }

    fn revoke_token(&self, name: &str, at: Timestamp) -> Result<bool, StoreError> {
        let at = at.as_millisecond();
        let changed = self.block(async |inner| {
            inner
                .transact(async |tx| {
                    tx.execute(
                        "UPDATE tokens SET revoked_at = $2 WHERE name = $1 AND (revoked_at IS NULL OR revoked_at > $2)",
                        &[&name, &at],
                    )
                    .await
                    .map_err(pg)
                })
                .await
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
        self.block(async |inner| {
            inner
                .transact(async |tx| {
                    // Locked to commit: a second rotation of the name waits, then finds the new current token.
                    let valid = valid_tokens(tx, name, at).await?;
                    let Some(rotated) = Rotated::of(valid, name, hash, at, until) else {
                        return Ok(None);
                    };
                    tx.execute(
                        "UPDATE tokens SET revoked_at = least(coalesce(revoked_at, $3), $3)
                         WHERE name = $1 AND (revoked_at IS NULL OR revoked_at > $2)",
                        &[&name, &at.as_millisecond(), &until.as_millisecond()],
                    )
                    .await
                    .map_err(pg)?;
                    insert_token_row(tx, &rotated.new).await?;
                    Ok(Some(rotated))
                })
                .await
        })
    }
}

/// The tokens named `name` that authenticate at `at`, oldest first, locked to commit.
async fn valid_tokens(tx: &Transaction<'_>, name: &str, at: Timestamp) -> Result<Vec<TokenRow>, StoreError> {
    let rows = tx
        .query(
            &format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens WHERE name = $1 AND (revoked_at IS NULL OR revoked_at > $2)
                 ORDER BY created_at, id FOR UPDATE"
            ),
            &[&name, &at.as_millisecond()],
        )
        .await
        .map_err(pg)?;
    rows.iter().map(|r| raw_token(r).into_row()).collect()
}

/// Inserts `token` in the caller's transaction; [`StoreError::Exists`] when
/// its secret is taken or its name has a token that authenticates at its
/// `created_at` (one current, or in a rotation's overlap).
async fn insert_token(tx: &Transaction<'_>, token: &TokenRow) -> Result<(), StoreError> {
    if token.valid_at(token.created_at) && !valid_tokens(tx, &token.name, token.created_at).await?.is_empty() {
        return Err(StoreError::Exists(format!("token {}", token.name)));
    }
    insert_token_row(tx, token).await
}

/// Inserts `token` as it is; [`StoreError::Exists`] when its secret is taken
/// or it would be a second current token of its name (also when another
/// collector has just stored one: the unique indexes decide).
async fn insert_token_row(tx: &Transaction<'_>, token: &TokenRow) -> Result<(), StoreError> {
    let inserted = tx
        .execute(
            "INSERT INTO tokens (name, role, host, hash, created_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &token.name,
                &token.role.as_str(),
                &token.host,
                &token.hash,
                &token.created_at.as_millisecond(),
                &token.revoked_at.map(Timestamp::as_millisecond),
            ],
        )
        .await;
    match inserted {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            // Which index says which name is taken (the transaction is
            // aborted: nothing more can be asked in it).
            let name_taken = e
                .as_db_error()
                .and_then(|db| db.constraint())
                .is_some_and(|index| index == CURRENT_TOKEN_INDEX);
            Err(StoreError::Exists(if name_taken {
                format!("token {}", token.name)
            } else {
                "a token with the same secret".to_owned()
            }))
        }
        Err(e) => Err(pg(e)),
    }
}

/// A `tokens` row selected as [`TOKEN_COLUMNS`].
fn raw_token(r: &tokio_postgres::Row) -> RawToken {
    RawToken {
        name: r.get(0),
        role: r.get(1),
        host: r.get(2),
        hash: r.get(3),
        created_at: r.get(4),
        revoked_at: r.get(5),
    }
}

impl Baselines for PostgresStore {
    fn put_baseline(
        &self,
        name: &str,
        source: &str,
        actor: &str,
        comment: Option<&str>,
        at: Timestamp,
    ) -> Result<BaselineAction, StoreError> {
        let at = at.as_millisecond();
        self.block(async |inner| {
            inner
                .transact(async |tx| {
                    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&BASELINES_LOCK])
                        .await
                        .map_err(pg)?;
                    let old: Option<String> = tx
                        .query_opt("SELECT source FROM baselines WHERE name = $1", &[&name])
                        .await
                        .map_err(pg)?
                        .map(|r| r.get(0));
                    let action = BaselineAction::of_applying(old.as_deref(), source);
                    if action == BaselineAction::Unchanged {
                        return Ok(action);
                    }
                    tx.execute(
                        "INSERT INTO baselines (name, source, applied_at, applied_by) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (name) DO UPDATE SET source = excluded.source, applied_at = excluded.applied_at,
                             applied_by = excluded.applied_by",
                        &[&name, &source, &at, &actor],
                    )
                    .await
                    .map_err(pg)?;
                    log_change(tx, name, action, at, actor, comment, Some(source)).await?;
                    Ok(action)
                })
                .await
        })
    }

    fn remove_baseline(
        &self,
        name: &str,
        actor: &str,
        comment: Option<&str>,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let at = at.as_millisecond();
        self.block(async |inner| {
            inner
                .transact(async |tx| {
                    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&BASELINES_LOCK])
                        .await
                        .map_err(pg)?;
                    let removed = tx
                        .execute("DELETE FROM baselines WHERE name = $1", &[&name])
                        .await
                        .map_err(pg)?
                        > 0;
                    if removed {
                        log_change(tx, name, BaselineAction::Remove, at, actor, comment, None).await?;
                    }
                    Ok(removed)
                })
                .await
        })
    }

    fn baselines(&self) -> Result<Vec<StoredBaseline>, StoreError> {
        let raws: Vec<(String, String, i64, String)> = self.block(async |inner| {
            let rows = inner
                .client()
                .await?
                .query(
                    r#"SELECT name, source, applied_at, applied_by FROM baselines ORDER BY name COLLATE "C""#,
                    &[],
                )
                .await
                .map_err(pg)?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect())
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

    fn baseline_log(&self, name: Option<&str>) -> Result<Vec<BaselineLogRow>, StoreError> {
        let raws: Vec<RawBaselineLog> = self.block(async |inner| {
            let rows = inner
                .client()
                .await?
                .query(
                    "SELECT id, name, action, at, actor, comment, source FROM baseline_log
                     WHERE $1::text IS NULL OR name = $1 ORDER BY id",
                    &[&name],
                )
                .await
                .map_err(pg)?;
            Ok(rows
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6)))
                .collect())
        })?;
        raws.into_iter().map(baseline_log_row).collect()
    }
}

async fn log_change(
    tx: &Transaction<'_>,
    name: &str,
    action: BaselineAction,
    at: i64,
    actor: &str,
    comment: Option<&str>,
    source: Option<&str>,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO baseline_log (name, action, at, actor, comment, source) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&name, &action.as_str(), &at, &actor, &comment, &source],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

impl Alerts for PostgresStore {
    fn sync_alerts(
        &self,
        hosts: &[String],
        findings: &[Finding],
        max_open: usize,
        now: Timestamp,
    ) -> Result<Vec<AlertEvent>, StoreError> {
        let mut events = self.block(async |inner| {
            inner
                .transact(async |tx| sync_alerts(tx, hosts, findings, max_open, now).await)
                .await
        })?;
        events.sort_by_key(|e| e.alert().id);
        Ok(events)
    }

    fn alerts(&self, state: Option<AlertState>, host: Option<&str>, limit: usize) -> Result<Vec<AlertRow>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let state = state.map(AlertState::as_str);
        let raws = self.block(async |inner| {
            let rows = inner
                .client()
                .await?
                .query(
                    &format!(
                        "SELECT {ALERT_COLUMNS} FROM alerts
                         WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR host = $2)
                         ORDER BY id DESC LIMIT $3"
                    ),
                    &[&state, &host, &limit],
                )
                .await
                .map_err(pg)?;
            Ok(rows.iter().map(raw_alert).collect::<Vec<_>>())
        })?;
        raws.into_iter().map(RawAlert::into_row).collect()
    }

    fn ack_alert(&self, id: i64, actor: &str, comment: &str, at: Timestamp) -> Result<AckOutcome, StoreError> {
        self.block(async |inner| {
            inner
                .transact(async |tx| {
                    // Locked from the read to the write: a second acknowledgement waits and finds it acknowledged.
                    let row = tx
                        .query_opt(
                            &format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1 FOR UPDATE"),
                            &[&id],
                        )
                        .await
                        .map_err(pg)?;
                    let Some(alert) = row.as_ref().map(raw_alert).map(RawAlert::into_row).transpose()? else {
                        return Ok(AckOutcome::NotFound);
                    };
                    match lifecycle::acknowledge(&alert, actor, comment, at) {
                        None => Ok(AckOutcome::NotOpen(alert)),
                        Some(alert) => {
                            lock_outbox(tx).await?;
                            write_state(tx, &alert).await?;
                            record(tx, &AlertEvent::Acknowledged(alert.clone()), at).await?;
                            Ok(AckOutcome::Acknowledged(alert))
                        }
                    }
                })
                .await
        })
    }

    fn active_alert_keys(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.block(async |inner| {
            let rows = inner
                .client()
                .await?
                .query("SELECT host, key FROM alerts WHERE state <> 'resolved'", &[])
                .await
                .map_err(pg)?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    fn active_alert_counts(&self) -> Result<Vec<(Kind, AlertState, u64)>, StoreError> {
        let raws: Vec<(String, String, i64)> = self.block(async |inner| {
            let rows = inner
                .client()
                .await?
                .query(
                    "SELECT kind, state, count(*) FROM alerts WHERE state <> 'resolved' GROUP BY kind, state",
                    &[],
                )
                .await
                .map_err(pg)?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
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
}

/// [`Alerts::sync_alerts`] in the open transaction `tx`; the events unsorted.
async fn sync_alerts(
    tx: &Transaction<'_>,
    hosts: &[String],
    findings: &[Finding],
    max_open: usize,
    now: Timestamp,
) -> Result<Vec<AlertEvent>, StoreError> {
    // The unresolved alerts of these hosts, locked in id order (two
    // collectors syncing overlapping hosts lock in the same order).
    let rows = tx
        .query(
            &format!(
                "SELECT {ALERT_COLUMNS} FROM alerts WHERE host = ANY($1) AND state <> 'resolved' ORDER BY id FOR UPDATE"
            ),
            &[&hosts],
        )
        .await
        .map_err(pg)?;
    let active = rows
        .iter()
        .map(|r| raw_alert(r).into_row())
        .collect::<Result<Vec<_>, _>>()?;
    let plan = cap::plan(findings, &active, max_open);
    if !plan.open.is_empty() || !plan.resolve.is_empty() {
        lock_outbox(tx).await?;
    }
    let mut events = Vec::new();
    // Resolved first: an alert resolved to open again at a higher severity
    // leaves its key free for the new one.
    for &id in &plan.resolve {
        let alert = active
            .iter()
            .find(|a| a.id == id)
            .cloned()
            .ok_or_else(|| corrupt(format!("alert {id} to resolve is not among those read")))?;
        let alert = lifecycle::resolve(alert, now);
        write_state(tx, &alert).await?;
        let event = AlertEvent::Resolved(alert);
        record(tx, &event, now).await?;
        events.push(event);
    }
    for f in &plan.open {
        let finding = serde_json::to_string(f).map_err(|e| corrupt(format!("finding: {e}")))?;
        // Another collector may have opened it meanwhile: the unique index
        // keeps one, and this one then opens nothing.
        let inserted = tx
            .query_opt(
                &format!(
                    "INSERT INTO alerts (key, kind, severity, host, message, finding, state, opened_at)
                     VALUES ($1, $2, $3, $4, $5, $6, 'open', $7)
                     ON CONFLICT (key) WHERE state <> 'resolved' DO NOTHING
                     RETURNING {ALERT_COLUMNS}"
                ),
                &[
                    &f.key,
                    &f.kind.as_str(),
                    &f.severity.as_str(),
                    &f.host,
                    &f.message,
                    &finding,
                    &now.as_millisecond(),
                ],
            )
            .await
            .map_err(pg)?;
        if let Some(row) = inserted {
            let event = AlertEvent::Opened(raw_alert(&row).into_row()?);
            record(tx, &event, now).await?;
            events.push(event);
        }
    }
    for (id, f) in &plan.update {
        let finding = serde_json::to_string(f).map_err(|e| corrupt(format!("finding: {e}")))?;
        tx.execute(
            "UPDATE alerts SET message = $2, severity = $3, finding = $4 WHERE id = $1 AND state <> 'resolved'",
            &[id, &f.message, &f.severity.as_str(), &finding],
        )
        .await
        .map_err(pg)?;
    }
    Ok(events)
}

/// Takes [`OUTBOX_LOCK`] to commit: from here on this transaction's outbox
/// ids are given and become visible before any other's.
async fn lock_outbox(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&OUTBOX_LOCK])
        .await
        .map_err(pg)?;
    Ok(())
}

/// Writes the state of `alert` (its acknowledgement and resolution) as the rules left it.
async fn write_state(tx: &Transaction<'_>, alert: &AlertRow) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE alerts SET state = $2, acked_at = $3, acked_by = $4, ack_comment = $5, resolved_at = $6 WHERE id = $1",
        &[
            &alert.id,
            &alert.state.as_str(),
            &alert.acked_at.map(Timestamp::as_millisecond),
            &alert.acked_by,
            &alert.ack_comment,
            &alert.resolved_at.map(Timestamp::as_millisecond),
        ],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

/// Adds `event` to the outbox, in the transaction that made it (which holds [`OUTBOX_LOCK`]).
async fn record(tx: &Transaction<'_>, event: &AlertEvent, at: Timestamp) -> Result<(), StoreError> {
    let alert = event.alert();
    let json = serde_json::to_string(alert).map_err(|e| corrupt(format!("alert {}: {e}", alert.id)))?;
    tx.execute(
        "INSERT INTO alert_events (alert_id, event, at, alert) VALUES ($1, $2, $3, $4)",
        &[&alert.id, &event.name(), &at.as_millisecond(), &json],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

/// An `alerts` row selected as [`ALERT_COLUMNS`].
fn raw_alert(r: &tokio_postgres::Row) -> RawAlert {
    RawAlert {
        id: r.get(0),
        key: r.get(1),
        kind: r.get(2),
        severity: r.get(3),
        host: r.get(4),
        message: r.get(5),
        state: r.get(6),
        opened_at: r.get(7),
        acked_at: r.get(8),
        acked_by: r.get(9),
        ack_comment: r.get(10),
        resolved_at: r.get(11),
        finding: r.get(12),
    }
}

impl Outbox for PostgresStore {
    fn alert_events_after(&self, after: i64, limit: usize) -> Result<Vec<OutboxEvent>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let raws: Vec<(i64, String, String)> = self.block(async |inner| {
            let rows = inner
                .client()
                .await?
                .query(
                    "SELECT id, event, alert FROM alert_events WHERE id > $1 ORDER BY id LIMIT $2",
                    &[&after, &limit],
                )
                .await
                .map_err(pg)?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
        })?;
        Ok(raws.into_iter().map(outbox_event).collect())
    }

    fn alert_event_hosts_after(&self, after: i64, limit: usize) -> Result<Vec<(i64, String)>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.block(async |inner| {
            // An event whose alert is gone (never: the foreign key) would
            // have the host "": it is still handed on, to be read and skipped.
            let rows = inner
                .client()
                .await?
                .query(
                    "SELECT e.id, coalesce(a.host, '') FROM alert_events e LEFT JOIN alerts a ON a.id = e.alert_id
                     WHERE e.id > $1 ORDER BY e.id LIMIT $2",
                    &[&after, &limit],
                )
                .await
                .map_err(pg)?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    fn alert_event(&self, id: i64) -> Result<Option<OutboxEvent>, StoreError> {
        let raw: Option<(i64, String, String)> = self.block(async |inner| {
            let row = inner
                .client()
                .await?
                .query_opt("SELECT id, event, alert FROM alert_events WHERE id = $1", &[&id])
                .await
                .map_err(pg)?;
            Ok(row.map(|r| (r.get(0), r.get(1), r.get(2))))
        })?;
        Ok(raw.map(outbox_event))
    }

    fn sink_progress(&self, sink: &str) -> Result<SinkProgress, StoreError> {
        self.block(async |inner| {
            inner
                .transact(async |tx| {
                    if let Some(progress) = stored_progress(tx, sink, false).await? {
                        return Ok(progress);
                    }
                    // Under the outbox lock no event is being added: every id up
                    // to the greatest is committed, every later one is to come.
                    lock_outbox(tx).await?;
                    let newest: Option<i64> = tx
                        .query_one("SELECT max(id) FROM alert_events", &[])
                        .await
                        .map_err(pg)?
                        .get(0);
                    let progress = lifecycle::first_place(newest);
                    let placed = tx
                        .execute(
                            "INSERT INTO sink_cursors (sink, last_event_id) VALUES ($1, $2) ON CONFLICT (sink) DO NOTHING",
                            &[&sink, &progress.cursor],
                        )
                        .await
                        .map_err(pg)?;
                    if placed == 0 {
                        // Another collector placed it first: its place holds.
                        return stored_progress(tx, sink, false)
                            .await?
                            .ok_or_else(|| corrupt(format!("the place of sink {sink} is gone")));
                    }
                    write_progress(tx, sink, &progress).await?;
                    Ok(progress)
                })
                .await
        })
    }

    fn set_sink_progress(&self, sink: &str, cursor: i64, done: &[i64]) -> Result<(), StoreError> {
        self.block(async |inner| {
            inner
                .transact(async |tx| {
                    let stored = stored_progress(tx, sink, true).await?.unwrap_or_default();
                    write_progress(tx, sink, &lifecycle::advance(&stored, cursor, done)).await
                })
                .await
        })
    }
}

/// Where `sink` stands in the outbox, if it has a place yet; its row locked
/// to commit when `lock` (a read-modify-write of the place).
async fn stored_progress(tx: &Transaction<'_>, sink: &str, lock: bool) -> Result<Option<SinkProgress>, StoreError> {
    let sql = if lock {
        "SELECT last_event_id FROM sink_cursors WHERE sink = $1 FOR UPDATE"
    } else {
        "SELECT last_event_id FROM sink_cursors WHERE sink = $1"
    };
    let Some(row) = tx.query_opt(sql, &[&sink]).await.map_err(pg)? else {
        return Ok(None);
    };
    let cursor: i64 = row.get(0);
    let done = tx
        .query(
            "SELECT event_id FROM sink_done WHERE sink = $1 AND event_id > $2 ORDER BY event_id",
            &[&sink, &cursor],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(Some(SinkProgress { cursor, done }))
}

/// Stores `progress` as the place of `sink`.
async fn write_progress(tx: &Transaction<'_>, sink: &str, progress: &SinkProgress) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO sink_cursors (sink, last_event_id) VALUES ($1, $2)
         ON CONFLICT (sink) DO UPDATE SET last_event_id = excluded.last_event_id",
        &[&sink, &progress.cursor],
    )
    .await
    .map_err(pg)?;
    tx.execute(
        "DELETE FROM sink_done WHERE sink = $1 AND event_id <= $2",
        &[&sink, &progress.cursor],
    )
    .await
    .map_err(pg)?;
    if !progress.done.is_empty() {
        tx.execute(
            "INSERT INTO sink_done (sink, event_id) SELECT $1, unnest($2::bigint[]) ON CONFLICT DO NOTHING",
            &[&sink, &progress.done],
        )
        .await
        .map_err(pg)?;
    }
    Ok(())
}
