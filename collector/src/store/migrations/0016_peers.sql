-- Inbound peers per listener: each host's TCP listeners' peer summaries as a time series, one
-- point per listener place (netns, proto, address, port, as probe_verdicts names a place) per
-- minute (`minute` = at / 60000; a later summary of the same minute replaces an earlier one), so
-- a place has at most 1,440 points a day whatever its agent sends. `top` is the busiest remotes
-- as JSON ([{"addr": "10.0.0.7", "connections": 3}, ...]). Pruned by `at` with the history.
CREATE TABLE peer_points (
    host             TEXT    NOT NULL,
    netns            INTEGER NOT NULL,
    proto            INTEGER NOT NULL,
    addr             TEXT    NOT NULL,
    port             INTEGER NOT NULL,
    minute           INTEGER NOT NULL,
    at               INTEGER NOT NULL,
    connections      INTEGER NOT NULL,
    distinct_remotes INTEGER NOT NULL,
    loopback         INTEGER NOT NULL,
    private          INTEGER NOT NULL,
    public           INTEGER NOT NULL,
    top              TEXT    NOT NULL,
    PRIMARY KEY (host, netns, proto, addr, port, minute)
) STRICT;
CREATE INDEX peer_points_by_time ON peer_points (host, at);
CREATE INDEX peer_points_by_age ON peer_points (at);
