-- portwatch collector schema: the events each sink is done with beyond its cursor.
--
-- A sink takes the outbox (alert_events) host by host, in turns
-- (collector/src/alert/outbox.rs), so that one host's flood does not hold
-- up another host's alert: it does not finish the events strictly in order.
-- Its progress is its cursor (sink_cursors.last_event_id: it is done with
-- every event up to it) and the events after the cursor it is done with too,
-- here. Rows at or before the cursor are deleted as it moves.
CREATE TABLE sink_done (
    sink     TEXT    NOT NULL,
    event_id INTEGER NOT NULL,
    PRIMARY KEY (sink, event_id)
) STRICT, WITHOUT ROWID;
