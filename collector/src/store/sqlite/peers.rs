//! Peers time series in SQLite: one row per listener place per minute.

use jiff::Timestamp;
use rusqlite::params;

use super::{db, SqliteStore, Synchronous};
use crate::store::stored::{to_bits, PeerRow, PEER_COLUMNS};
use crate::store::{Peers, PeersQuery, StoreError};
use portwatch_common::peers::PeerSample;
use portwatch_model::PeerPoint;

/// A row of [`PEER_COLUMNS`].
fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PeerRow> {
    Ok(PeerRow {
        netns: r.get(0)?,
        proto: r.get(1)?,
        addr: r.get(2)?,
        port: r.get(3)?,
        at: r.get(4)?,
        minute: 0,
        connections: r.get(5)?,
        distinct_remotes: r.get(6)?,
        loopback: r.get(7)?,
        private: r.get(8)?,
        public: r.get(9)?,
        top: r.get(10)?,
    })
}

impl Peers for SqliteStore {
    fn record_peers(&self, host: &str, samples: &[PeerSample], now: Timestamp) -> Result<(), StoreError> {
        if samples.is_empty() {
            return Ok(());
        }
        self.transact(Synchronous::Normal, |tx| {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO peer_points (host, netns, proto, addr, port, minute, at, connections,
                                              distinct_remotes, loopback, private, public, top)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                     ON CONFLICT (host, netns, proto, addr, port, minute) DO UPDATE
                     SET at = excluded.at, connections = excluded.connections,
                         distinct_remotes = excluded.distinct_remotes, loopback = excluded.loopback,
                         private = excluded.private, public = excluded.public, top = excluded.top
                     WHERE excluded.at >= peer_points.at",
                )
                .map_err(db)?;
            for sample in samples {
                let r = PeerRow::of(sample, now);
                insert
                    .execute(params![
                        host,
                        r.netns,
                        r.proto,
                        r.addr,
                        r.port,
                        r.minute,
                        r.at,
                        r.connections,
                        r.distinct_remotes,
                        r.loopback,
                        r.private,
                        r.public,
                        r.top
                    ])
                    .map_err(db)?;
            }
            Ok(())
        })
    }

    fn peers_at(&self, host: &str, port: Option<u16>, at: Timestamp) -> Result<Vec<PeerPoint>, StoreError> {
        let rows = self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {PEER_COLUMNS} FROM peer_points p
                     WHERE host = ?1 AND (?2 IS NULL OR port = ?2)
                       AND at = (SELECT max(q.at) FROM peer_points q
                                 WHERE q.host = p.host AND q.netns = p.netns AND q.proto = p.proto
                                   AND q.addr = p.addr AND q.port = p.port AND q.at <= ?3)
                     ORDER BY netns, port, addr"
                ))
                .map_err(db)?;
            let rows = stmt
                .query_map(params![host, port, at.as_millisecond()], row)
                .map_err(db)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db)
        })?;
        let mut points = rows
            .into_iter()
            .map(PeerRow::into_point)
            .collect::<Result<Vec<_>, _>>()?;
        points.sort_by_key(|p| p.place);
        Ok(points)
    }

    fn peers_between(&self, host: &str, query: &PeersQuery) -> Result<Vec<PeerPoint>, StoreError> {
        let since = query.since.map_or(i64::MIN, |t| t.as_millisecond());
        let until = query.until.map_or(i64::MAX, |t| t.as_millisecond());
        let (a_at, a_netns, a_port, a_addr) = match &query.after {
            Some(c) => (Some(c.at_ms), to_bits(c.netns), i64::from(c.port), c.addr.clone()),
            None => (None, 0, 0, String::new()),
        };
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let rows = self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {PEER_COLUMNS} FROM peer_points
                     WHERE host = ?1 AND (?2 IS NULL OR port = ?2) AND at >= ?3 AND at <= ?4
                       AND (?5 IS NULL OR at > ?5 OR (at = ?5 AND (netns > ?6 OR (netns = ?6 AND
                            (port > ?7 OR (port = ?7 AND addr > ?8))))))
                     ORDER BY at, netns, port, addr LIMIT ?9"
                ))
                .map_err(db)?;
            let rows = stmt
                .query_map(
                    params![host, query.port, since, until, a_at, a_netns, a_port, a_addr, limit],
                    row,
                )
                .map_err(db)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db)
        })?;
        rows.into_iter().map(PeerRow::into_point).collect()
    }
}
