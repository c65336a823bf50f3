-- The view from outside. The host's own network namespace (its agent's, an inode as the i64 of
-- the same bits) and its interfaces' addresses (a JSON array of strings) as its latest snapshot
-- said: where a collector that probes connects to a wildcard listener. NULL from older agents.
ALTER TABLE hosts ADD COLUMN host_netns INTEGER;
ALTER TABLE hosts ADD COLUMN addresses TEXT;

-- The latest probe verdict of each listener place of a host (netns, proto, address, port: the
-- place, whatever socket holds it). A probe of a host replaces all of that host's rows, so only
-- its current listeners' places are kept. `state` is reachable, unreachable or not-probed;
-- `detail` says what was tried and what each try answered.
CREATE TABLE probe_verdicts (
    host   TEXT    NOT NULL,
    netns  INTEGER NOT NULL,
    proto  INTEGER NOT NULL,
    addr   TEXT    NOT NULL,
    port   INTEGER NOT NULL,
    state  TEXT    NOT NULL,
    at     INTEGER NOT NULL,
    detail TEXT    NOT NULL,
    PRIMARY KEY (host, netns, proto, addr, port)
) STRICT, WITHOUT ROWID;
