-- portwatch collector schema, version 2: baselines and alerts.

-- Each baseline as last applied. `source` is the TOML file as written (what
-- ops keep in git); the collector parses it again where it needs it.
CREATE TABLE baselines (
    name       TEXT    PRIMARY KEY,
    source     TEXT    NOT NULL,
    applied_at INTEGER NOT NULL,
    applied_by TEXT    NOT NULL     -- the token name
) STRICT;

-- Every change to a baseline: what, who (token name), when, why, and the
-- source it left (NULL for a removal). Never updated or deleted.
CREATE TABLE baseline_log (
    id      INTEGER PRIMARY KEY,
    name    TEXT    NOT NULL,
    action  TEXT    NOT NULL CHECK (action IN ('create', 'update', 'remove')),
    at      INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    comment TEXT,
    source  TEXT
) STRICT;
CREATE INDEX baseline_log_by_name ON baseline_log (name, id);

-- One row per alert: a finding's condition (`key`) from when it was first
-- seen to when it cleared. At most one alert per key is not resolved (the
-- partial unique index), so a condition seen again while its alert is open
-- or acknowledged opens no second one, whichever collector evaluates it.
CREATE TABLE alerts (
    id          INTEGER PRIMARY KEY,
    key         TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    severity    TEXT    NOT NULL,
    host        TEXT    NOT NULL,
    message     TEXT    NOT NULL,
    finding     TEXT    NOT NULL,   -- JSON of the finding that opened it
    state       TEXT    NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),
    opened_at   INTEGER NOT NULL,
    acked_at    INTEGER,
    acked_by    TEXT,
    ack_comment TEXT,
    resolved_at INTEGER
) STRICT;
CREATE UNIQUE INDEX alerts_active_by_key ON alerts (key) WHERE state != 'resolved';
CREATE INDEX alerts_active_by_host ON alerts (host) WHERE state != 'resolved';
CREATE INDEX alerts_by_opened ON alerts (opened_at);

-- Every change of an alert's state, in order, with the alert as it was
-- then: the outbox the sinks deliver from. Written in the transaction that
-- changes the alert, so no change is lost to a crash; never updated.
CREATE TABLE alert_events (
    id       INTEGER PRIMARY KEY,
    alert_id INTEGER NOT NULL REFERENCES alerts (id),
    event    TEXT    NOT NULL CHECK (event IN ('opened', 'acknowledged', 'resolved')),
    at       INTEGER NOT NULL,
    alert    TEXT    NOT NULL   -- JSON of the alert after the change
) STRICT;

-- How far each sink (a webhook, by name) has delivered alert_events.
CREATE TABLE sink_cursors (
    sink          TEXT    PRIMARY KEY,
    last_event_id INTEGER NOT NULL
) STRICT;
