//! Reading listener intervals back: rows of `intervals` decoded into
//! [`ListenerRow`]s, each host name and each program read once.
//!
//! A fleet-wide answer (`who` of a port every host has open) is 10,000 rows
//! or more, so the per-row work is kept to decoding: host names come from a
//! cache shared by all reads instead of a join per row, blobs are decoded
//! where SQLite holds them, and a program's strings are shared by every row
//! that names it.

use std::sync::Arc;

use portwatch_common::{Listener, Process};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::store::stored::{HostCache, HostNames};

use super::db;
use crate::store::stored::{
    addr_from, corrupt, exposure_from, family_from, from_bits, owner_pairs, proto_from, sort_rows, timestamp,
    FirewallDecoder, Order, StoredProgram,
};
use crate::store::StoreError;
use portwatch_model::ListenerRow;

/// The columns every interval query selects, in the order
/// [`IntervalReader::decode`] reads them (`i` is `intervals`); a query that
/// selects more selects them after these (the first at index 15).
pub(super) const INTERVAL_COLUMNS: &str = "i.host_id, i.netns, i.proto, i.family, i.addr, i.port, i.inode, i.uid, \
     i.user, i.exposure, i.dual_stack, i.owners, i.opened_at, i.closed_at, i.firewall";

/// Decodes interval rows (selected as [`INTERVAL_COLUMNS`]) on one read
/// connection.
pub(super) struct IntervalReader<'c> {
    conn: &'c Connection,
    cache: &'c HostCache,
    hosts: Arc<HostNames>,
    /// Each program read so far, as a process with pid 0.
    programs: FxHashMap<i64, Process>,
    /// Each user name read so far.
    users: FxHashSet<Arc<str>>,
    /// The host of a row decoded by [`Self::decode_unnamed`], until named.
    unnamed: Arc<str>,
    /// Each firewall answer read so far.
    firewalls: FirewallDecoder,
}

impl<'c> IntervalReader<'c> {
    pub(super) fn new(conn: &'c Connection, cache: &'c HostCache) -> IntervalReader<'c> {
        IntervalReader {
            conn,
            cache,
            hosts: cache.current(),
            programs: FxHashMap::default(),
            users: FxHashSet::default(),
            unnamed: Arc::from(""),
            firewalls: FirewallDecoder::default(),
        }
    }

    /// Decodes one row.
    pub(super) fn decode(&mut self, r: &rusqlite::Row<'_>) -> Result<ListenerRow, StoreError> {
        let (mut row, host_id) = self.decode_unnamed(r)?;
        let rank = self.rank(host_id)?;
        row.host = Arc::clone(self.hosts.name(rank));
        Ok(row)
    }

    /// Decodes one row but for its host's name, which the caller sets;
    /// also returns the host's id.
    fn decode_unnamed(&mut self, r: &rusqlite::Row<'_>) -> Result<(ListenerRow, i64), StoreError> {
        let host_id: i64 = r.get(0).map_err(db)?;
        let processes = self.owners(blob(r, 11)?, host_id)?;
        let user = match r.get_ref(8).map_err(db)? {
            ValueRef::Null => None,
            ValueRef::Text(text) => Some(self.user(text)?),
            other => return Err(corrupt(format_args!("user of type {:?}", other.data_type()))),
        };
        let listener = Listener {
            netns: from_bits(r.get(1).map_err(db)?),
            proto: proto_from(r.get(2).map_err(db)?)?,
            family: family_from(r.get(3).map_err(db)?)?,
            local_addr: addr_from(blob(r, 4)?)?,
            local_port: r.get(5).map_err(db)?,
            inode: from_bits(r.get(6).map_err(db)?),
            uid: r.get(7).map_err(db)?,
            user,
            exposure: exposure_from(r.get(9).map_err(db)?)?,
            dual_stack: r.get(10).map_err(db)?,
            processes,
            firewall: self.firewalls.decode(
                r.get_ref(14)
                    .map_err(db)?
                    .as_str_or_null()
                    .map_err(|e| corrupt(format_args!("firewall: {e}")))?,
            )?,
        };
        let row = ListenerRow {
            host: Arc::clone(&self.unnamed),
            listener,
            opened_at: timestamp(r.get(12).map_err(db)?)?,
            closed_at: r.get::<_, Option<i64>>(13).map_err(db)?.map(timestamp).transpose()?,
        };
        Ok((row, host_id))
    }

    /// Every row of `cursor`, named and in `order`.
    pub(super) fn read_all(
        &mut self,
        cursor: &mut rusqlite::Rows<'_>,
        order: Order,
    ) -> Result<Vec<ListenerRow>, StoreError> {
        let (mut rows, mut ids) = (Vec::new(), Vec::new());
        while let Some(r) = cursor.next().map_err(db)? {
            let (row, host_id) = self.decode_unnamed(r)?;
            rows.push(row);
            ids.push(host_id);
        }
        // Ranks are taken once every host of the answer is known (a new one changes them).
        let ranks = ids
            .into_iter()
            .map(|id| self.rank(id))
            .collect::<Result<Vec<u32>, _>>()?;
        let hosts = &self.hosts;
        sort_rows(&mut rows, &ranks, order, |rank| Arc::clone(hosts.name(rank)));
        Ok(rows)
    }

    /// The rank of host `id`, reading hosts registered since the snapshot if
    /// need be; an error if the database has no such host.
    fn rank(&mut self, id: i64) -> Result<u32, StoreError> {
        if let Some(rank) = self.hosts.rank(id) {
            return Ok(rank);
        }
        let conn = self.conn;
        self.hosts = self.cache.knowing(id, |max_id| {
            let mut stmt = conn
                .prepare_cached("SELECT id, name FROM hosts WHERE id > ?1 ORDER BY id")
                .map_err(db)?;
            let added = stmt
                .query_map([max_id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
                .map_err(db)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db);
            added
        })?;
        self.hosts
            .rank(id)
            .ok_or_else(|| corrupt(format_args!("host {id} is referenced but missing")))
    }

    /// User name `text`, shared with every row that names it.
    fn user(&mut self, text: &[u8]) -> Result<Arc<str>, StoreError> {
        let text = std::str::from_utf8(text).map_err(|e| corrupt(format_args!("user name: {e}")))?;
        if let Some(user) = self.users.get(text) {
            return Ok(Arc::clone(user));
        }
        let user: Arc<str> = Arc::from(text);
        self.users.insert(Arc::clone(&user));
        Ok(user)
    }

    /// The owner list: (pid, program id) varint pairs.
    fn owners(&mut self, bytes: &[u8], host_id: i64) -> Result<Vec<Process>, StoreError> {
        owner_pairs(bytes, host_id)?
            .into_iter()
            .map(|(pid, program)| {
                let mut process = self.program(program)?;
                process.pid = pid;
                Ok(process)
            })
            .collect()
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
                    Ok(StoredProgram {
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
            .ok_or_else(|| corrupt(format_args!("program {id} is referenced but missing")))?
            .into_process()?;
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
