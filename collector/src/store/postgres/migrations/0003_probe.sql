-- The view from outside: the host's own network namespace and its interfaces' addresses, and
-- the latest probe verdict of each listener place (see the SQLite store's 0015_probe.sql).
ALTER TABLE hosts ADD COLUMN IF NOT EXISTS host_netns bigint;
ALTER TABLE hosts ADD COLUMN IF NOT EXISTS addresses text;

CREATE TABLE IF NOT EXISTS probe_verdicts (
    host   text     NOT NULL,
    netns  bigint   NOT NULL,
    proto  smallint NOT NULL,
    addr   text     NOT NULL,
    port   integer  NOT NULL,
    state  text     NOT NULL,
    at     bigint   NOT NULL,
    detail text     NOT NULL,
    PRIMARY KEY (host, netns, proto, addr, port)
);
