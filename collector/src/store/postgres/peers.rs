//! Peers time series in PostgreSQL: the same rows as the SQLite store's.

use jiff::Timestamp;

use super::{pg, PostgresStore};
use crate::store::stored::{corrupt, to_bits, PeerRow, PEER_COLUMNS};
use crate::store::{Peers, PeersQuery, StoreError};
use portwatch_common::peers::PeerSample;
use portwatch_model::PeerPoint;

/// A row of [`PEER_COLUMNS`], as its point.
fn point(r: &tokio_postgres::Row) -> Result<PeerPoint, StoreError> {
    let port: i32 = r.get(3);
    PeerRow {
        netns: r.get(0),
        proto: i64::from(r.get::<_, i16>(1)),
        addr: r.get(2),
        port: u16::try_from(port).map_err(|_| corrupt(format_args!("peers point: port {port}")))?,
        at: r.get(4),
        minute: 0,
        connections: r.get(5),
        distinct_remotes: r.get(6),
        loopback: r.get(7),
        private: r.get(8),
        public: r.get(9),
        top: r.get(10),
    }
    .into_point()
}

impl Peers for PostgresStore {
    fn record_peers(&self, host: &str, samples: &[PeerSample], now: Timestamp) -> Result<(), StoreError> {
        if samples.is_empty() {
            return Ok(());
        }
        let rows: Vec<PeerRow> = samples.iter().map(|s| PeerRow::of(s, now)).collect();
        self.block(async |inner| {
            inner
                .transact(async |tx| {
                    let insert = tx
                        .prepare(
                            "INSERT INTO peer_points (host, netns, proto, addr, port, minute, at, connections,
                                                      distinct_remotes, loopback, private, public, top)
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                             ON CONFLICT (host, netns, proto, addr, port, minute) DO UPDATE
                             SET at = excluded.at, connections = excluded.connections,
                                 distinct_remotes = excluded.distinct_remotes, loopback = excluded.loopback,
                                 private = excluded.private, public = excluded.public, top = excluded.top
                             WHERE excluded.at >= peer_points.at",
                        )
                        .await
                        .map_err(pg)?;
                    for r in &rows {
                        tx.execute(
                            &insert,
                            &[
                                &host,
                                &r.netns,
                                &(r.proto as i16),
                                &r.addr,
                                &i32::from(r.port),
                                &r.minute,
                                &r.at,
                                &r.connections,
                                &r.distinct_remotes,
                                &r.loopback,
                                &r.private,
                                &r.public,
                                &r.top,
                            ],
                        )
                        .await
                        .map_err(pg)?;
                    }
                    Ok(())
                })
                .await
        })
    }

    fn peers_at(&self, host: &str, port: Option<u16>, at: Timestamp) -> Result<Vec<PeerPoint>, StoreError> {
        let port = port.map(i32::from);
        self.block(async |inner| {
            let client = inner.client().await?;
            let rows = client
                .query(
                    &format!(
                        "SELECT {PEER_COLUMNS} FROM peer_points p
                         WHERE host = $1 AND ($2::integer IS NULL OR port = $2)
                           AND at = (SELECT max(q.at) FROM peer_points q
                                     WHERE q.host = p.host AND q.netns = p.netns AND q.proto = p.proto
                                       AND q.addr = p.addr AND q.port = p.port AND q.at <= $3)"
                    ),
                    &[&host, &port, &at.as_millisecond()],
                )
                .await
                .map_err(pg)?;
            let mut points = rows.iter().map(point).collect::<Result<Vec<_>, _>>()?;
            points.sort_by_key(|p| p.place);
            Ok(points)
        })
    }

    fn peers_between(&self, host: &str, query: &PeersQuery) -> Result<Vec<PeerPoint>, StoreError> {
        let port = query.port.map(i32::from);
        let since = query.since.map_or(i64::MIN, |t| t.as_millisecond());
        let until = query.until.map_or(i64::MAX, |t| t.as_millisecond());
        let (a_at, a_netns, a_port, a_addr) = match &query.after {
            Some(c) => (Some(c.at_ms), to_bits(c.netns), i32::from(c.port), c.addr.clone()),
            None => (None, 0, 0, String::new()),
        };
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        self.block(async |inner| {
            let client = inner.client().await?;
            let rows = client
                .query(
                    &format!(
                        r#"SELECT {PEER_COLUMNS} FROM peer_points
                         WHERE host = $1 AND ($2::integer IS NULL OR port = $2) AND at >= $3 AND at <= $4
                           AND ($5::bigint IS NULL OR at > $5 OR (at = $5 AND (netns > $6 OR (netns = $6 AND
                                (port > $7 OR (port = $7 AND addr COLLATE "C" > $8))))))
                         ORDER BY at, netns, port, addr COLLATE "C" LIMIT $9"#
                    ),
                    &[&host, &port, &since, &until, &a_at, &a_netns, &a_port, &a_addr, &limit],
                )
                .await
                .map_err(pg)?;
            rows.iter().map(point).collect()
        })
    }
}
