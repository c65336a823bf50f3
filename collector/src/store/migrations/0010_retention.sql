-- portwatch collector schema: retention (collector/src/retention.rs, store/sqlite/prune.rs).
--
-- Written so that it can run again on a database that has it (a test that
-- takes a database back to an earlier version keeps later objects).

-- Outbox ids are never given twice. Sinks keep their place as "done with
-- every event up to id N, and these after it": with deletes (pruning,
-- forgetting a host), SQLite would give a deleted greatest id to the next
-- event, which a sink would then take for one it is done with. AUTOINCREMENT
-- never reuses an id; the outbox is copied once (it is small: changes of
-- alerts, not of listeners). No table refers to alert_events.
DROP TABLE IF EXISTS alert_events_new;
CREATE TABLE alert_events_new (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id INTEGER NOT NULL REFERENCES alerts (id),
    event    TEXT    NOT NULL CHECK (event IN ('opened', 'acknowledged', 'resolved')),
    at       INTEGER NOT NULL,
    alert    TEXT    NOT NULL   -- JSON of the alert after the change
) STRICT;
INSERT INTO alert_events_new (id, alert_id, event, at, alert) SELECT id, alert_id, event, at, alert FROM alert_events;
DROP TABLE alert_events;
ALTER TABLE alert_events_new RENAME TO alert_events;

-- Pruning deletes resolved alerts with their events, and forgetting a host
-- deletes its alerts' events: both find a given alert's events, and SQLite
-- checks alert_events' foreign key on every deleted alert. Without this
-- index each of those reads the whole outbox.
CREATE INDEX IF NOT EXISTS alert_events_by_alert ON alert_events (alert_id);

-- Counters of what changed under a pruning pass. `hosts_forgotten` grows by
-- one with every host forgotten: a pass that found programs no interval
-- names looks again when it has changed (a forgotten host's greatest
-- interval ids may be given to new intervals, which its check of the
-- intervals written since would miss).
CREATE TABLE IF NOT EXISTS retention_state (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
INSERT OR IGNORE INTO retention_state (name, value) VALUES ('hosts_forgotten', 0);
