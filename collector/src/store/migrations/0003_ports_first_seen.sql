-- portwatch collector schema, version 3: when each port was first seen, fleet-wide.
--
-- One row per (proto, port) ever seen open: the earliest opened_at of any
-- interval on it, and the host of that interval. Kept up to date at ingest
-- (an earlier time replayed late from an agent's spool wins), so `trends`
-- need not scan every interval. A few hundred rows in a typical fleet.
CREATE TABLE ports_first_seen (
    proto      INTEGER NOT NULL,
    port       INTEGER NOT NULL,
    first_seen INTEGER NOT NULL,
    host_id    INTEGER NOT NULL REFERENCES hosts (id),
    PRIMARY KEY (proto, port)
) STRICT, WITHOUT ROWID;

-- SQLite takes the bare column host_id from the row holding the min().
INSERT INTO ports_first_seen (proto, port, first_seen, host_id)
SELECT proto, port, min(opened_at), host_id FROM intervals GROUP BY proto, port;
