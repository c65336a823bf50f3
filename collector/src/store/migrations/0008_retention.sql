-- portwatch collector schema: retention (collector/src/retention.rs, store/sqlite/prune.rs).
--
-- Pruning deletes resolved alerts with their events, and forgetting a host
-- deletes its alerts' events: both find a given alert's events, and SQLite
-- checks alert_events' foreign key on every deleted alert. Without this
-- index each of those reads the whole outbox. (IF NOT EXISTS: a test that
-- takes a database back to an earlier version keeps its indexes.)
CREATE INDEX IF NOT EXISTS alert_events_by_alert ON alert_events (alert_id);
