-- portwatch collector schema: each host's clock (see collector/src/clock.rs).
--
-- clock_at:      the effective time of the host's last stored report, of any
--                session: no later report of the host is dated before it.
-- clock_skew_ms: the host's clock minus the collector's, in milliseconds, as
--                last measured (a batch's alive_at minus when it was received).
-- clock_skew_at: when the collector measured it (its receive time).
-- All NULL until known.
ALTER TABLE hosts ADD COLUMN clock_at INTEGER;
ALTER TABLE hosts ADD COLUMN clock_skew_ms INTEGER;
ALTER TABLE hosts ADD COLUMN clock_skew_at INTEGER;

-- Existing hosts start from their latest stored change, but no later than
-- when they were last heard from: history already dated in the future (by a
-- clock ahead) must not hold the host's next reports there.
UPDATE hosts SET clock_at = min(
    last_seen,
    (SELECT max(max(opened_at), coalesce(max(closed_at), 0)) FROM intervals i WHERE i.host_id = hosts.id)
);
