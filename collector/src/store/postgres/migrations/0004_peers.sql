-- Inbound peers per listener: one point per listener place per minute (see the SQLite store's
-- 0016_peers.sql).
CREATE TABLE IF NOT EXISTS peer_points (
    host             text     NOT NULL,
    netns            bigint   NOT NULL,
    proto            smallint NOT NULL,
    addr             text     NOT NULL,
    port             integer  NOT NULL,
    minute           bigint   NOT NULL,
    at               bigint   NOT NULL,
    connections      bigint   NOT NULL,
    distinct_remotes bigint   NOT NULL,
    loopback         bigint   NOT NULL,
    private          bigint   NOT NULL,
    public           bigint   NOT NULL,
    top              text     NOT NULL,
    PRIMARY KEY (host, netns, proto, addr, port, minute)
);
CREATE INDEX IF NOT EXISTS peer_points_by_time ON peer_points (host, at);
CREATE INDEX IF NOT EXISTS peer_points_by_age ON peer_points (at);
