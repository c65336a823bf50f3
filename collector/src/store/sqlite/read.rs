//! Reading listener intervals back: rows of `intervals` decoded into
//! [`ListenerRow`]s, each host name and each program read once.
//!
//! A fleet-wide answer (`who` of a port every host has open) is 10,000 rows
//! or more, so the per-row work is kept to decoding: host names come from a
//! cache shared by all reads instead of a join per row, blobs are decoded
//! where SQLite holds them, and a program's strings are shared by every row
//! that names it.

use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};

use jiff::Timestamp;
use portwatch_common::{Listener, Process, Proto};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension};
use rustc_hash::FxHashMap;

use super::{addr_from, corrupt, db, exposure_from, family_from, from_bits, proto_from, read_varint, timestamp};
use crate::store::{ListenerRow, StoreError};

/// The columns every interval query selects, in the order
/// [`IntervalReader::decode`] reads them (`i` is `intervals`).
pub(super) const INTERVAL_COLUMNS: &str = "i.host_id, i.netns, i.proto, i.family, i.addr, i.port, i.inode, i.uid, \
     i.user, i.exposure, i.dual_stack, i.owners, i.opened_at, i.closed_at";

/// Every host's name by id, and its place in name order.
///
/// Hosts are never renamed or deleted and ids only grow, so an entry never
/// goes stale: a host registered after the snapshot was taken is read on
/// first sight (with every other new one) into a new snapshot.
#[derive(Default)]
pub(super) struct HostNames {
    by_id: FxHashMap<i64, HostName>,
    /// The greatest id read.
    max_id: i64,
}

struct HostName {
    name: Arc<str>,
    /// Position in name order among the hosts of the snapshot.
    rank: u32,
}

impl HostNames {
    /// This snapshot plus the hosts registered since, read on `conn`.
    fn extended(&self, conn: &Connection) -> Result<HostNames, StoreError> {
        let mut stmt = conn
            .prepare_cached("SELECT id, name FROM hosts WHERE id > ?1 ORDER BY id")
            .map_err(db)?;
        let added = stmt
            .query_map([self.max_id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
            .map_err(db)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        let mut names: Vec<(i64, Arc<str>)> = self
            .by_id
            .iter()
            .map(|(&id, host)| (id, Arc::clone(&host.name)))
            .chain(added.into_iter().map(|(id, name)| (id, Arc::from(name))))
            .collect();
        names.sort_unstable_by(|a, b| a.1.cmp(&b.1));
        let max_id = names.iter().map(|(id, _)| *id).max().unwrap_or(self.max_id);
        let by_id = names
            .into_iter()
            .enumerate()
            .map(|(rank, (id, name))| {
                let rank = u32::try_from(rank).unwrap_or(u32::MAX);
                (id, HostName { name, rank })
            })
            .collect();
        Ok(HostNames { by_id, max_id })
    }
}

/// The shared cache of [`HostNames`]: readers take the current snapshot and
/// replace it when they meet a host it does not know.
#[derive(Default)]
pub(super) struct HostCache(RwLock<Arc<HostNames>>);

impl HostCache {
    fn current(&self) -> Arc<HostNames> {
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// A snapshot that knows host `id` (read on `conn`, which sees it), or
    /// an error if the database has no such host.
    fn knowing(&self, id: i64, conn: &Connection) -> Result<Arc<HostNames>, StoreError> {
        let mut shared = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if !shared.by_id.contains_key(&id) {
            *shared = Arc::new(shared.extended(conn)?);
        }
        if !shared.by_id.contains_key(&id) {
            return Err(corrupt(format_args!("host {id} is referenced but missing")));
        }
        Ok(Arc::clone(&shared))
    }
}

/// Decodes interval rows (selected as [`INTERVAL_COLUMNS`]) on one read
/// connection.
pub(super) struct IntervalReader<'c> {
    conn: &'c Connection,
    cache: &'c HostCache,
    hosts: Arc<HostNames>,
    /// Each program read so far, as a process with pid 0.
    programs: FxHashMap<i64, Process>,
}

impl<'c> IntervalReader<'c> {
    pub(super) fn new(conn: &'c Connection, cache: &'c HostCache) -> IntervalReader<'c> {
        IntervalReader {
            conn,
            cache,
            hosts: cache.current(),
            programs: FxHashMap::default(),
        }
    }

    /// Decodes one row; also returns its host id, for [`Self::host_rank`].
    pub(super) fn decode(&mut self, r: &rusqlite::Row<'_>) -> Result<(ListenerRow, i64), StoreError> {
        let host_id: i64 = r.get(0).map_err(db)?;
        let host = self.host_name(host_id)?;
        let processes = self.owners(blob(r, 11)?, &host)?;
        let listener = Listener {
            netns: from_bits(r.get(1).map_err(db)?),
            proto: proto_from(r.get(2).map_err(db)?)?,
            family: family_from(r.get(3).map_err(db)?)?,
            local_addr: addr_from(blob(r, 4)?)?,
            local_port: r.get(5).map_err(db)?,
            inode: from_bits(r.get(6).map_err(db)?),
            uid: r.get(7).map_err(db)?,
            user: r.get(8).map_err(db)?,
            exposure: exposure_from(r.get(9).map_err(db)?)?,
            dual_stack: r.get(10).map_err(db)?,
            processes,
        };
        let row = ListenerRow {
            host,
            listener,
            opened_at: timestamp(r.get(12).map_err(db)?)?,
            closed_at: r.get::<_, Option<i64>>(13).map_err(db)?.map(timestamp).transpose()?,
        };
        Ok((row, host_id))
    }

    /// The place of host `id` in name order (of the latest snapshot this
    /// reader took: compare only ranks taken after every row was decoded).
    pub(super) fn host_rank(&self, id: i64) -> u32 {
        self.hosts.by_id.get(&id).map_or(u32::MAX, |host| host.rank)
    }

    fn host_name(&mut self, id: i64) -> Result<Arc<str>, StoreError> {
        if let Some(host) = self.hosts.by_id.get(&id) {
            return Ok(Arc::clone(&host.name));
        }
        self.hosts = self.cache.knowing(id, self.conn)?;
        match self.hosts.by_id.get(&id) {
            Some(host) => Ok(Arc::clone(&host.name)),
            None => Err(corrupt(format_args!("host {id} is referenced but missing"))),
        }
    }

    /// The owner list: (pid, program id) varint pairs.
    fn owners(&mut self, bytes: &[u8], host: &str) -> Result<Vec<Process>, StoreError> {
        let mut processes = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let pid = read_varint(bytes, &mut pos).and_then(|pid| u32::try_from(pid).ok());
            let program = read_varint(bytes, &mut pos).map(super::to_bits);
            let (Some(pid), Some(program)) = (pid, program) else {
                return Err(corrupt(format_args!("owner list of a listener of host {host}")));
            };
            let mut process = self.program(program)?;
            process.pid = pid;
            processes.push(process);
        }
        Ok(processes)
    }

    /// Program `id` as a process with pid 0.
    fn program(&mut self, id: i64) -> Result<Process, StoreError> {
        if let Some(process) = self.programs.get(&id) {
            return Ok(process.clone());
        }
        let process = self
            .conn
            .prepare_cached("SELECT name, exe, cmdline, uid, user, container, unit FROM programs WHERE id = ?1")
            .and_then(|mut stmt| {
                stmt.query_row([id], |r| {
                    Ok(Process {
                        pid: 0,
                        name: r.get(0)?,
                        exe: r.get(1)?,
                        cmdline: r.get(2)?,
                        uid: r.get(3)?,
                        user: r.get(4)?,
                        container: r.get(5)?,
                        unit: r.get(6)?,
                    })
                })
                .optional()
            })
            .map_err(db)?
            .ok_or_else(|| corrupt(format_args!("program {id} is referenced but missing")))?;
        self.programs.insert(id, process.clone());
        Ok(process)
    }
}

/// Column `i` as a blob, borrowed from SQLite.
fn blob<'r>(r: &'r rusqlite::Row<'_>, i: usize) -> Result<&'r [u8], StoreError> {
    match r.get_ref(i).map_err(db)? {
        ValueRef::Blob(bytes) => Ok(bytes),
        other => Err(corrupt(format_args!(
            "column {i} of an interval is {:?}",
            other.data_type()
        ))),
    }
}

/// The order of listeners on one host: port, proto, address, then the rest
/// of what tells two apart, then when it opened.
pub(super) type ListenerKey = (u16, Proto, IpAddr, u64, u64, Timestamp);

pub(super) fn listener_key(row: &ListenerRow) -> ListenerKey {
    let l = &row.listener;
    (l.local_port, l.proto, l.local_addr, l.netns, l.inode, row.opened_at)
}

/// `rows` put in the order of their keys (ties keep their order), each row
/// moved once: a fleet-wide answer has thousands of rows of a few hundred
/// bytes, which a merge sort would move about log2(n) times each.
pub(super) fn sorted_by_key<K: Ord>(
    rows: Vec<ListenerRow>,
    key: impl Fn(usize, &ListenerRow) -> K,
) -> Vec<ListenerRow> {
    // The index makes every key distinct, so an unstable sort keeps ties in order.
    let mut order: Vec<(K, usize)> = rows.iter().enumerate().map(|(i, row)| (key(i, row), i)).collect();
    order.sort_unstable();
    let mut slots: Vec<Option<ListenerRow>> = rows.into_iter().map(Some).collect();
    order.into_iter().filter_map(|(_, i)| slots[i].take()).collect()
}
