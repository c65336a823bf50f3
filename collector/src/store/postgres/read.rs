//! Reading history back from PostgreSQL: hosts, the listeners of a moment,
//! intervals over a window, decoded as every backend decodes them
//! ([`crate::store::stored`]).
//!
//! "Open at `at`" is asked as two ranges, `closed_at IS NULL` (the default
//! partition) and `closed_at > at` (the months from `at` on), so questions
//! about recent times read little however long the history. The programs
//! and host names of an answer are read once for the whole answer (one
//! query each, by id), not per row.

use std::sync::Arc;

use jiff::Timestamp;
use portwatch_common::wire::Batch;
use portwatch_common::{Listener, Process, Proto};
use portwatch_model::{HistoryCursor, HistoryWindow, HostRow, ListenerRow};
use rustc_hash::{FxHashMap, FxHashSet};

use super::heartbeat::Heartbeats;
use super::{pg, Inner, PostgresStore};
use crate::store::stored::{
    addr_from, corrupt, exposure_from, family_from, from_bits, owner_pairs, proto_code, proto_from, sort_rows,
    timestamp, FirewallDecoder, HostNames, Order, RawHost, StoredProgram, HOST_COLUMNS,
};
use crate::store::{HeartbeatStats, HistoryReads, HistoryWrites, IngestDone, StoreError};

/// The columns every interval query selects, in the order [`decode`] reads
/// them (`i` is `intervals`); the interval's id last.
const INTERVAL_COLUMNS: &str = r#"i.host_id, i.netns, i.proto, i.family, i.addr, i.port, i.inode, i.uid,
     i."user", i.exposure, i.dual_stack, i.owners, i.opened_at, i.closed_at, i.id, i.firewall"#;

/// Intervals an export reads at a time (see [`HistoryReads::export`]).
const EXPORT_CHUNK_ROWS: i64 = 1_000;

/// An interval row decoded but for its owners' programs and its host's name.
struct Decoded {
    row: ListenerRow,
    host_id: i64,
    owners: Vec<(u32, i64)>,
    id: i64,
}

/// Decodes one row selected as [`INTERVAL_COLUMNS`].
fn decode(r: &tokio_postgres::Row, unnamed: &Arc<str>, firewalls: &mut FirewallDecoder) -> Result<Decoded, StoreError> {
    let host_id: i64 = r.get(0);
    let owners = owner_pairs(r.get(11), host_id)?;
    let port: i32 = r.get(5);
    let uid: i64 = r.get(7);
    let listener = Listener {
        netns: from_bits(r.get(1)),
        proto: proto_from(i64::from(r.get::<_, i16>(2)))?,
        family: family_from(i64::from(r.get::<_, i16>(3)))?,
        local_addr: addr_from(r.get(4))?,
        local_port: u16::try_from(port).map_err(|_| corrupt(format_args!("port {port}")))?,
        inode: from_bits(r.get(6)),
        uid: u32::try_from(uid).map_err(|_| corrupt(format_args!("uid {uid}")))?,
        user: r.get::<_, Option<&str>>(8).map(Arc::from),
        exposure: exposure_from(i64::from(r.get::<_, i16>(9)))?,
        dual_stack: r.get(10),
        processes: Vec::new(),
        firewall: firewalls.decode(r.get(15))?,
    };
    Ok(Decoded {
        row: ListenerRow {
            host: Arc::clone(unnamed),
            listener,
            opened_at: timestamp(r.get(12))?,
            closed_at: r.get::<_, Option<i64>>(13).map(timestamp).transpose()?,
        },
        host_id,
        owners,
        id: r.get(14),
    })
}

impl Inner {
    /// The id of host `name`, if it ever reported.
    async fn host_id(&self, client: &tokio_postgres::Client, name: &str) -> Result<Option<i64>, StoreError> {
        let row = client
            .query_opt("SELECT id FROM hosts WHERE name = $1", &[&name])
            .await
            .map_err(pg)?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Host names by id, knowing every host of `ids` (read by id where the
    /// cache misses one: ids of hosts registered by other writers become
    /// visible in any order).
    async fn host_names(&self, client: &tokio_postgres::Client, ids: &[i64]) -> Result<Arc<HostNames>, StoreError> {
        let names = self.hosts.current();
        let missing: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|id| names.rank(*id).is_none())
            .collect::<FxHashSet<_>>()
            .into_iter()
            .collect();
        if missing.is_empty() {
            return Ok(names);
        }
        let rows = client
            .query(
                "SELECT id, name FROM hosts WHERE id = ANY($1) OR id > $2",
                &[&missing, &names.max_id()],
            )
            .await
            .map_err(pg)?;
        let added: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let names = self.hosts.merge(added)?;
        match missing.iter().find(|id| names.rank(**id).is_none()) {
            Some(id) => Err(corrupt(format_args!("host {id} is referenced but missing"))),
            None => Ok(names),
        }
    }

    /// The rows of `decoded` with their owners and hosts filled in, each
    /// with its id, in the order given.
    async fn complete(
        &self,
        client: &tokio_postgres::Client,
        decoded: Vec<Decoded>,
    ) -> Result<(Vec<ListenerRow>, Vec<u32>, Arc<HostNames>, Vec<i64>), StoreError> {
        let wanted: Vec<i64> = decoded
            .iter()
            .flat_map(|d| d.owners.iter().map(|&(_, program)| program))
            .collect::<FxHashSet<_>>()
            .into_iter()
            .collect();
        let mut programs: FxHashMap<i64, Process> = FxHashMap::default();
        if !wanted.is_empty() {
            let rows = client
                .query(
                    r#"SELECT id, name, exe, cmdline, uid, "user", container, unit FROM programs WHERE id = ANY($1)"#,
                    &[&wanted],
                )
                .await
                .map_err(pg)?;
            for r in rows {
                let stored = StoredProgram {
                    name: r.get(1),
                    exe: r.get(2),
                    cmdline: r.get(3),
                    uid: r.get(4),
                    user: r.get(5),
                    container: r.get(6),
                    unit: r.get(7),
                };
                programs.insert(r.get(0), stored.into_process()?);
            }
        }
        let host_ids: Vec<i64> = decoded.iter().map(|d| d.host_id).collect();
        let names = self.host_names(client, &host_ids).await?;
        let mut rows = Vec::with_capacity(decoded.len());
        let mut ranks = Vec::with_capacity(decoded.len());
        let mut ids = Vec::with_capacity(decoded.len());
        for mut d in decoded {
            for &(pid, program) in &d.owners {
                let mut process = programs
                    .get(&program)
                    .cloned()
                    .ok_or_else(|| corrupt(format_args!("program {program} is referenced but missing")))?;
                process.pid = pid;
                d.row.listener.processes.push(process);
            }
            let rank = names
                .rank(d.host_id)
                .ok_or_else(|| corrupt(format_args!("host {} is referenced but missing", d.host_id)))?;
            d.row.host = Arc::clone(names.name(rank));
            ranks.push(rank);
            ids.push(d.id);
            rows.push(d.row);
        }
        Ok((rows, ranks, names, ids))
    }

    /// The intervals `sql` selects (as [`INTERVAL_COLUMNS`]), in `order`.
    async fn intervals(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        order: Order,
    ) -> Result<Vec<ListenerRow>, StoreError> {
        let client = self.client().await?;
        let rows = client.query(sql, params).await.map_err(pg)?;
        let unnamed: Arc<str> = Arc::from("");
        let mut firewalls = FirewallDecoder::default();
        let decoded = rows
            .iter()
            .map(|r| decode(r, &unnamed, &mut firewalls))
            .collect::<Result<Vec<_>, _>>()?;
        let (mut rows, ranks, names, _) = self.complete(&client, decoded).await?;
        sort_rows(&mut rows, &ranks, order, |rank| Arc::clone(names.name(rank)));
        Ok(rows)
    }

    /// Every host, or the one named `name`, with its status as of `now`.
    /// Heartbeats this store keeps in memory are laid over the rows read
    /// (see [`super::heartbeat`]).
    async fn hosts_named(&self, name: Option<&str>, now: Timestamp) -> Result<Vec<HostRow>, StoreError> {
        let kept = self.heartbeats.overlay(name);
        let lag_ms = self.heartbeats.lag_ms();
        let client = self.client().await?;
        // Byte order, as every backend orders names.
        let rows = match name {
            None => {
                client
                    .query(
                        &format!(r#"SELECT {HOST_COLUMNS} FROM hosts h ORDER BY h.name COLLATE "C""#),
                        &[],
                    )
                    .await
            }
            Some(name) => {
                client
                    .query(
                        &format!("SELECT {HOST_COLUMNS} FROM hosts h WHERE h.name = $1"),
                        &[&name],
                    )
                    .await
            }
        }
        .map_err(pg)?;
        rows.iter()
            .map(|r| {
                let mut raw = RawHost {
                    name: r.get(0),
                    first_seen: r.get(1),
                    last_seen: r.get(2),
                    agent_version: r.get(3),
                    interval_ms: r.get(4),
                    os: r.get(5),
                    kernel: r.get(6),
                    boot_time: r.get(7),
                    tags: r.get(8),
                    dropped: r.get(9),
                    listeners: r.get(10),
                    clock_skew_ms: r.get(11),
                    clock_skew_at: r.get(12),
                    detection: r.get(13),
                    host_netns: r.get(14),
                    addresses: r.get(15),
                };
                Heartbeats::lay_over(&kept, &mut raw);
                raw.into_row(now, &self.clock, lag_ms)
            })
            .collect()
    }
}

/// `listeners_at`: still open, and closed after `$2`.
fn listeners_at_sql() -> String {
    format!(
        "SELECT {INTERVAL_COLUMNS} FROM intervals i
         WHERE i.host_id = $1 AND i.closed_at IS NULL AND i.opened_at <= $2
         UNION ALL
         SELECT {INTERVAL_COLUMNS} FROM intervals i
         WHERE i.host_id = $1 AND i.closed_at > $2 AND i.opened_at <= $2"
    )
}

/// `who`: the port's still open intervals and those closed after `$2`.
fn who_sql() -> String {
    format!(
        "SELECT {INTERVAL_COLUMNS} FROM intervals i
         WHERE i.port = $1 AND i.closed_at IS NULL AND i.opened_at <= $2 AND ($3::smallint IS NULL OR i.proto = $3)
         UNION ALL
         SELECT {INTERVAL_COLUMNS} FROM intervals i
         WHERE i.port = $1 AND i.closed_at > $2 AND i.opened_at <= $2 AND ($3::smallint IS NULL OR i.proto = $3)"
    )
}

/// `history`: still open, and closed at or after `since`, opened at or before `until`.
fn history_sql() -> String {
    format!(
        "SELECT {INTERVAL_COLUMNS} FROM intervals i
         WHERE i.host_id = $1 AND i.closed_at IS NULL
           AND ($2::integer IS NULL OR i.port = $2) AND ($4::bigint IS NULL OR i.opened_at <= $4)
         UNION ALL
         SELECT {INTERVAL_COLUMNS} FROM intervals i
         WHERE i.host_id = $1 AND i.closed_at >= coalesce($3::bigint, -9223372036854775808)
           AND ($2::integer IS NULL OR i.port = $2) AND ($4::bigint IS NULL OR i.opened_at <= $4)"
    )
}

/// `history_page`: the two ranges of [`history_sql`], after the cursor
/// `($5, $6)` in (opening time, id) order, at most `$7` rows.
fn history_page_sql() -> String {
    format!(
        "SELECT * FROM (
           SELECT {INTERVAL_COLUMNS} FROM intervals i
           WHERE i.host_id = $1 AND i.closed_at IS NULL
             AND ($2::integer IS NULL OR i.port = $2) AND ($4::bigint IS NULL OR i.opened_at <= $4)
             AND (i.opened_at, i.id) > ($5, $6)
           UNION ALL
           SELECT {INTERVAL_COLUMNS} FROM intervals i
           WHERE i.host_id = $1 AND i.closed_at >= coalesce($3::bigint, -9223372036854775808)
             AND ($2::integer IS NULL OR i.port = $2) AND ($4::bigint IS NULL OR i.opened_at <= $4)
             AND (i.opened_at, i.id) > ($5, $6)
         ) page ORDER BY opened_at, id LIMIT $7"
    )
}

impl HistoryWrites for PostgresStore {
    fn ingest_queued(&self, batch: Batch, received_at: Timestamp, done: IngestDone) {
        self.queue(batch, received_at, done);
    }

    fn flush_heartbeats(&self) -> Result<(), StoreError> {
        self.block(async |inner| inner.heartbeats.flush(inner).await.map(drop))
    }

    fn heartbeat_stats(&self) -> Option<HeartbeatStats> {
        Some(self.inner.heartbeats.stats())
    }
}

impl HistoryReads for PostgresStore {
    fn hosts(&self, now: Timestamp) -> Result<Vec<HostRow>, StoreError> {
        self.block(async |inner| inner.hosts_named(None, now).await)
    }

    fn host(&self, name: &str, now: Timestamp) -> Result<Option<HostRow>, StoreError> {
        self.block(async |inner| Ok(inner.hosts_named(Some(name), now).await?.pop()))
    }

    fn listeners_at(&self, host: &str, at: Timestamp) -> Result<Vec<ListenerRow>, StoreError> {
        self.block(async |inner| {
            let Some(host_id) = inner.host_id(&*inner.client().await?, host).await? else {
                return Ok(Vec::new());
            };
            inner
                .intervals(&listeners_at_sql(), &[&host_id, &at.as_millisecond()], Order::Listener)
                .await
        })
    }

    fn who(&self, port: u16, proto: Option<Proto>, at: Timestamp) -> Result<Vec<ListenerRow>, StoreError> {
        let proto = proto.map(|p| proto_code(p) as i16);
        self.block(async |inner| {
            inner
                .intervals(
                    &who_sql(),
                    &[&i32::from(port), &at.as_millisecond(), &proto],
                    Order::Host,
                )
                .await
        })
    }

    fn history(
        &self,
        host: &str,
        port: Option<u16>,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
    ) -> Result<Vec<ListenerRow>, StoreError> {
        let port = port.map(i32::from);
        let since = since.map(Timestamp::as_millisecond);
        let until = until.map(Timestamp::as_millisecond);
        self.block(async |inner| {
            let Some(host_id) = inner.host_id(&*inner.client().await?, host).await? else {
                return Ok(Vec::new());
            };
            inner
                .intervals(&history_sql(), &[&host_id, &port, &since, &until], Order::Opened)
                .await
        })
    }

    fn history_page(
        &self,
        host: &str,
        window: HistoryWindow,
        after: Option<HistoryCursor>,
        limit: usize,
    ) -> Result<(Vec<ListenerRow>, Option<HistoryCursor>), StoreError> {
        let port = window.port.map(i32::from);
        let since = window.since.map(Timestamp::as_millisecond);
        let until = window.until.map(Timestamp::as_millisecond);
        let (after_ms, after_id) = after.map_or((i64::MIN, i64::MIN), |c| (c.opened_ms, c.id));
        // One more than asked: whether there is a next page.
        let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        self.block(async |inner| {
            let client = inner.client().await?;
            let Some(host_id) = inner.host_id(&client, host).await? else {
                return Ok((Vec::new(), None));
            };
            let rows = client
                .query(
                    &history_page_sql(),
                    &[&host_id, &port, &since, &until, &after_ms, &after_id, &fetch],
                )
                .await
                .map_err(pg)?;
            let more = rows.len() > limit;
            let unnamed: Arc<str> = Arc::from("");
            let mut firewalls = FirewallDecoder::default();
            let decoded = rows
                .iter()
                .take(limit)
                .map(|r| decode(r, &unnamed, &mut firewalls))
                .collect::<Result<Vec<_>, _>>()?;
            let (rows, _, _, ids) = inner.complete(&client, decoded).await?;
            let next = match (more, rows.last(), ids.last()) {
                (true, Some(last), Some(&id)) => Some(HistoryCursor {
                    opened_ms: last.opened_at.as_millisecond(),
                    id,
                }),
                _ => None,
            };
            Ok((rows, next))
        })
    }

    fn export(
        &self,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
        each: &mut dyn FnMut(ListenerRow) -> bool,
    ) -> Result<(), StoreError> {
        // In chunks, each its own short read: a slow client holds no
        // snapshot open (which would keep vacuum from cleaning up).
        let sql = format!(
            "SELECT {INTERVAL_COLUMNS} FROM intervals i
             WHERE ($2::bigint IS NULL OR i.opened_at <= $2)
               AND ($1::bigint IS NULL OR i.closed_at IS NULL OR i.closed_at >= $1)
               AND (i.opened_at, i.id) > ($3, $4)
             ORDER BY i.opened_at, i.id LIMIT $5"
        );
        let since = since.map(Timestamp::as_millisecond);
        let until = until.map(Timestamp::as_millisecond);
        let mut after = (i64::MIN, i64::MIN);
        loop {
            let chunk = self.block(async |inner| {
                let client = inner.client().await?;
                let rows = client
                    .query(&sql, &[&since, &until, &after.0, &after.1, &EXPORT_CHUNK_ROWS])
                    .await
                    .map_err(pg)?;
                let unnamed: Arc<str> = Arc::from("");
                let mut firewalls = FirewallDecoder::default();
                let decoded = rows
                    .iter()
                    .map(|r| decode(r, &unnamed, &mut firewalls))
                    .collect::<Result<Vec<_>, _>>()?;
                let (rows, _, _, ids) = inner.complete(&client, decoded).await?;
                Ok(rows.into_iter().zip(ids).collect::<Vec<_>>())
            })?;
            let full = chunk.len() == EXPORT_CHUNK_ROWS as usize;
            for (row, id) in chunk {
                after = (row.opened_at.as_millisecond(), id);
                if !each(row) {
                    return Ok(());
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    fn first_seen_ports(
        &self,
        since: Timestamp,
        host: Option<&str>,
    ) -> Result<Vec<portwatch_model::trend::FirstSeen>, StoreError> {
        let raws: Vec<(i16, i32, i64, String)> = self.block(async |inner| {
            let client = inner.client().await?;
            let rows = match host {
                None => {
                    client
                        .query(
                            "SELECT f.proto, f.port, f.first_seen, h.name FROM ports_first_seen f
                             JOIN hosts h ON h.id = f.host_id WHERE f.first_seen >= $1 ORDER BY f.proto, f.port",
                            &[&since.as_millisecond()],
                        )
                        .await
                }
                Some(name) => {
                    let Some(host_id) = inner.host_id(&client, name).await? else {
                        return Ok(Vec::new());
                    };
                    client
                        .query(
                            "SELECT i.proto, i.port, min(i.opened_at) AS first, h.name
                             FROM intervals i JOIN hosts h ON h.id = i.host_id
                             WHERE i.host_id = $2 GROUP BY i.proto, i.port, h.name HAVING min(i.opened_at) >= $1
                             ORDER BY i.proto, i.port",
                            &[&since.as_millisecond(), &host_id],
                        )
                        .await
                }
            }
            .map_err(pg)?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect())
        })?;
        raws.into_iter()
            .map(|(proto, port, first, host)| {
                Ok(portwatch_model::trend::FirstSeen {
                    proto: proto_from(i64::from(proto))?,
                    port: u16::try_from(port).map_err(|_| corrupt(format!("port {port}")))?,
                    first_seen: timestamp(first)?,
                    host,
                })
            })
            .collect()
    }
}
