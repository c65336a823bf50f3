-- portwatch collector schema, version 4: snapshots sent in parts (protocol version 2).
--
-- The parts of a host's snapshot received so far, kept (and acknowledged)
-- as each arrives; when the last part arrives the host's listeners are
-- reconciled with the union of the parts and these rows are deleted. At most
-- one snapshot per host is in progress: its first part, or a whole snapshot,
-- deletes what an earlier one left (an agent that restarted mid-snapshot).
-- `listeners` is the part's listeners as JSON, as the agent sent them.
CREATE TABLE snapshot_parts (
    host_id   INTEGER NOT NULL REFERENCES hosts (id),
    part      INTEGER NOT NULL,
    session   TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    listeners BLOB    NOT NULL,
    PRIMARY KEY (host_id, part)
) STRICT, WITHOUT ROWID;
