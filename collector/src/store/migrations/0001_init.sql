-- portwatch collector schema, version 1.
--
-- Times are integer milliseconds since the Unix epoch. Unsigned 64-bit
-- values (netns, inode, seq, counters) are stored as the i64 with the same
-- bit pattern. Small enums are integers:
--   proto:    6 tcp, 17 udp (IANA protocol numbers)
--   family:   4 ipv4, 6 ipv6
--   exposure: 0 loopback, 1 wildcard, 2 specific

-- One row per host that ever reported.
CREATE TABLE hosts (
    id              INTEGER PRIMARY KEY,
    name            TEXT    NOT NULL UNIQUE,
    first_seen      INTEGER NOT NULL,
    last_seen       INTEGER NOT NULL,
    -- The agent session whose reports are stored, and the last stored seq of it.
    session         TEXT,
    last_seq        INTEGER NOT NULL DEFAULT 0,
    -- Facts of the latest snapshot (NULL / 0 before the first one).
    agent_version   TEXT,
    interval_ms     INTEGER NOT NULL DEFAULT 0,
    os              TEXT,
    kernel          TEXT,
    boot_time       INTEGER,
    tags            TEXT    NOT NULL DEFAULT '{}',   -- JSON object
    dropped_reports INTEGER NOT NULL DEFAULT 0
) STRICT;

-- A process identity without its pid, stored once however many listeners
-- (on however many hosts) it held: long command lines are not repeated per
-- interval. `hash` is the FNV-1a 64 of the content (see `program_hash` in
-- sqlite.rs; changing that function needs a migration); it is a lookup key
-- only, the content decides equality.
CREATE TABLE programs (
    id        INTEGER PRIMARY KEY,
    hash      INTEGER NOT NULL,
    name      TEXT    NOT NULL,
    exe       TEXT,
    cmdline   TEXT,
    uid       INTEGER,
    user      TEXT,
    container TEXT,
    unit      TEXT
) STRICT;
CREATE INDEX programs_by_hash ON programs (hash);

-- One row per listener interval: a listener of a host from when it was
-- observed open to when it was observed gone (closed_at NULL while open).
-- `owners` is the listener's process list in order, each process as two
-- LEB128 varints: pid, programs.id (empty when no owner is known).
CREATE TABLE intervals (
    id         INTEGER PRIMARY KEY,
    host_id    INTEGER NOT NULL REFERENCES hosts (id),
    netns      INTEGER NOT NULL,
    proto      INTEGER NOT NULL,
    family     INTEGER NOT NULL,
    addr       BLOB    NOT NULL,    -- 4 or 16 bytes, network order
    port       INTEGER NOT NULL,
    inode      INTEGER NOT NULL,
    uid        INTEGER NOT NULL,
    user       TEXT,
    exposure   INTEGER NOT NULL,
    dual_stack INTEGER NOT NULL,    -- 0 or 1
    owners     BLOB    NOT NULL,
    opened_at  INTEGER NOT NULL,
    closed_at  INTEGER,
    CHECK (closed_at IS NULL OR closed_at >= opened_at)
) STRICT;
-- A host's open intervals (closed_at IS NULL sorts first), its intervals
-- open at an instant (closed_at > at) and its history; also the index of
-- the host_id foreign key.
CREATE INDEX intervals_by_host ON intervals (host_id, closed_at, opened_at);
-- Fleet-wide `who --port`: the same ranges by port. Covering (every column
-- but id): a well-known port is open on every host, and its rows, scattered
-- over the table in ingest order, would cost one page read each; from the
-- index they are read in sequence. Costs about 20 bytes per change.
CREATE INDEX intervals_by_port ON intervals (
    port, closed_at, opened_at, host_id, proto, netns, family, addr, inode, uid, user, exposure, dual_stack,
    owners
);

-- API tokens: only the hex SHA-256 of the secret is kept.
CREATE TABLE tokens (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    role       TEXT    NOT NULL CHECK (role IN ('agent', 'read', 'admin')),
    host       TEXT,
    hash       TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;
