//! What every backend stores, the same way: the encodings of a listener's
//! fields in columns, the owner list, a program's slot, and the decoding of
//! rows read back (tokens, alerts, outbox events, hosts) into the store's
//! answers, and the order of interval answers. A backend moves these values
//! in and out of its database; it encodes and decodes nothing of its own, so
//! a history written by one reads back the same from another.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, PoisonError, RwLock};

use jiff::Timestamp;
use portwatch_common::{Exposure, Family, Firewall, IdentityFields, Listener, Process, Proto};
use portwatch_model::baseline::{BaselineAction, BaselineLogRow};
use portwatch_model::{AlertEvent, AlertRow, AlertState, Finding, HostRow, Kind, ListenerRow, Role, Severity};
use rustc_hash::FxHashMap;

use super::{OutboxEvent, StoreError, TokenRow};
use crate::clock;
use crate::history;

/// A value read back from the database that this build cannot understand.
pub(crate) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Database(format!("unexpected value in the database: {what}"))
}

/// A u64 as the i64 with the same bits (database integers are signed).
pub(crate) fn to_bits(value: u64) -> i64 {
    value as i64
}

/// The u64 stored by [`to_bits`].
pub(crate) fn from_bits(value: i64) -> u64 {
    value as u64
}

/// A time stored as milliseconds since the epoch.
pub(crate) fn timestamp(ms: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_millisecond(ms).map_err(|e| corrupt(format_args!("time {ms}: {e}")))
}

pub(crate) fn proto_code(proto: Proto) -> i64 {
    match proto {
        Proto::Tcp => 6,
        Proto::Udp => 17,
    }
}

pub(crate) fn proto_from(code: i64) -> Result<Proto, StoreError> {
    match code {
        6 => Ok(Proto::Tcp),
        17 => Ok(Proto::Udp),
        _ => Err(corrupt(format_args!("protocol {code}"))),
    }
}

pub(crate) fn family_code(family: Family) -> i64 {
    match family {
        Family::Ipv4 => 4,
        Family::Ipv6 => 6,
    }
}

pub(crate) fn family_from(code: i64) -> Result<Family, StoreError> {
    match code {
        4 => Ok(Family::Ipv4),
        6 => Ok(Family::Ipv6),
        _ => Err(corrupt(format_args!("address family {code}"))),
    }
}

pub(crate) fn exposure_code(exposure: Exposure) -> i64 {
    match exposure {
        Exposure::Loopback => 0,
        Exposure::Wildcard => 1,
        Exposure::Specific => 2,
    }
}

pub(crate) fn exposure_from(code: i64) -> Result<Exposure, StoreError> {
    match code {
        0 => Ok(Exposure::Loopback),
        1 => Ok(Exposure::Wildcard),
        2 => Ok(Exposure::Specific),
        _ => Err(corrupt(format_args!("exposure {code}"))),
    }
}

/// An address as 4 or 16 bytes, network order.
pub(crate) fn addr_bytes(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

pub(crate) fn addr_from(bytes: &[u8]) -> Result<IpAddr, StoreError> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        Ok(IpAddr::V4(Ipv4Addr::from(v4)))
    } else if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        Ok(IpAddr::V6(Ipv6Addr::from(v6)))
    } else {
        Err(corrupt(format_args!("address of {} bytes", bytes.len())))
    }
}

/// Appends `value` as an unsigned LEB128 varint.
pub(crate) fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Reads an unsigned LEB128 varint at `pos`, advancing it; `None` when the
/// bytes end early or it is longer than a u64.
pub(crate) fn read_varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The (pid, program id) pairs of an encoded owner list; an error naming
/// `host_id` when the list ends early.
pub(crate) fn owner_pairs(bytes: &[u8], host_id: i64) -> Result<Vec<(u32, i64)>, StoreError> {
    let mut pairs = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let pid = read_varint(bytes, &mut pos).and_then(|pid| u32::try_from(pid).ok());
        let program = read_varint(bytes, &mut pos).map(to_bits);
        let (Some(pid), Some(program)) = (pid, program) else {
            return Err(corrupt(format_args!("owner list of a listener of host {host_id}")));
        };
        pairs.push((pid, program));
    }
    Ok(pairs)
}

/// How many slots from its hash a program may be in (see [`ProgramRef::hash`]).
pub(crate) const PROGRAM_PROBE: i64 = 8;

/// A process's identity without its pid, borrowed from a batch: what the
/// `programs` table stores once per content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ProgramRef<'b> {
    pub name: &'b str,
    pub exe: Option<&'b str>,
    pub cmdline: Option<&'b str>,
    pub uid: Option<u32>,
    pub user: Option<&'b str>,
    pub container: Option<&'b str>,
    pub unit: Option<&'b str>,
}

impl<'b> ProgramRef<'b> {
    pub(crate) fn of(process: &'b Process) -> ProgramRef<'b> {
        ProgramRef {
            name: &process.name,
            exe: process.exe.as_deref(),
            cmdline: process.cmdline.as_deref(),
            uid: process.uid,
            user: process.user.as_deref(),
            container: process.container.as_deref(),
            unit: process.unit.as_deref(),
        }
    }

    /// FNV-1a 64 over a length-prefixed encoding of every field: the
    /// program's first slot in `programs.hash` (the SQLite store's
    /// `0011_program_slots.sql`); the program of a content is in one of the
    /// [`PROGRAM_PROBE`] slots from it. Changing it needs a migration that
    /// rehashes, in every backend.
    pub(crate) fn hash(&self) -> u64 {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut hash = OFFSET;
        let mut feed = |bytes: &[u8]| {
            for &byte in bytes {
                hash = (hash ^ u64::from(byte)).wrapping_mul(PRIME);
            }
        };
        let mut text = |value: Option<&str>| match value {
            None => feed(&[0]),
            Some(s) => {
                feed(&[1]);
                feed(&(s.len() as u64).to_le_bytes());
                feed(s.as_bytes());
            }
        };
        text(Some(self.name));
        text(self.exe);
        text(self.cmdline);
        text(self.uid.map(|uid| uid.to_string()).as_deref());
        text(self.user);
        text(self.container);
        text(self.unit);
        hash
    }

    /// Whether a stored program (name, exe, cmdline, uid, user, container, unit) is this one.
    pub(crate) fn is(&self, stored: &StoredProgram) -> bool {
        self.name == stored.name
            && self.exe == stored.exe.as_deref()
            && self.cmdline == stored.cmdline.as_deref()
            && self.uid.map(i64::from) == stored.uid
            && self.user == stored.user.as_deref()
            && self.container == stored.container.as_deref()
            && self.unit == stored.unit.as_deref()
    }
}

/// A `programs` row as read back.
#[derive(Debug, Clone)]
pub(crate) struct StoredProgram {
    pub name: String,
    pub exe: Option<String>,
    pub cmdline: Option<String>,
    pub uid: Option<i64>,
    pub user: Option<String>,
    pub container: Option<String>,
    pub unit: Option<String>,
}

impl StoredProgram {
    /// As a process with pid 0.
    pub(crate) fn into_process(self) -> Result<Process, StoreError> {
        Ok(Process {
            pid: 0,
            uid: self
                .uid
                .map(|uid| u32::try_from(uid).map_err(|_| corrupt(format_args!("uid {uid}"))))
                .transpose()?,
            name: Arc::from(self.name),
            exe: self.exe.map(Arc::from),
            cmdline: self.cmdline.map(Arc::from),
            user: self.user.map(Arc::from),
            container: self.container.map(Arc::from),
            unit: self.unit.map(Arc::from),
        })
    }
}

/// The columns of an interval's key ([`IntervalKey`], in its order): a
/// listener's identity as stored, every field of it
/// ([`Listener::identity_fields`]) with the owners encoded. The queries that
/// find, reconcile and insert intervals are built from this one list.
pub(crate) const INTERVAL_KEY_COLUMNS: &str =
    r#"netns, proto, family, addr, port, inode, uid, "user", exposure, dual_stack, owners, firewall"#;

/// A listener as stored: every field of [`Listener`], with its processes as
/// the encoded owner list. Two listeners are equal exactly when their keys
/// are (programs are stored once per content).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct IntervalKey {
    pub netns: i64,
    pub proto: i64,
    pub family: i64,
    pub addr: Vec<u8>,
    pub port: u16,
    pub inode: i64,
    pub uid: u32,
    pub user: Option<Arc<str>>,
    pub exposure: i64,
    pub dual_stack: bool,
    pub owners: Vec<u8>,
    /// The firewall's answer as [`firewall_text`] encodes it.
    pub firewall: Option<String>,
}

impl IntervalKey {
    /// The key of `listener`, each program's id given by `program_id`;
    /// `None` as soon as it gives none (a program not stored).
    pub(crate) fn of<'b>(
        listener: &'b Listener,
        mut program_id: impl FnMut(ProgramRef<'b>) -> Result<Option<i64>, StoreError>,
    ) -> Result<Option<IntervalKey>, StoreError> {
        // Every field, by name (no `..`): a field added to `Listener` stops
        // the build here until it is stored (see `Listener::identity_fields`).
        let IdentityFields {
            netns,
            proto,
            family,
            local_addr,
            local_port,
            inode,
            uid,
            user,
            exposure,
            dual_stack,
            processes,
            firewall,
        } = listener.identity_fields();
        let mut owners = Vec::with_capacity(processes.len() * 6);
        for process in processes {
            let Some(program) = program_id(ProgramRef::of(process))? else {
                return Ok(None);
            };
            push_varint(&mut owners, u64::from(process.pid));
            push_varint(&mut owners, from_bits(program));
        }
        Ok(Some(IntervalKey {
            netns: to_bits(netns),
            proto: proto_code(proto),
            family: family_code(family),
            addr: addr_bytes(local_addr),
            port: local_port,
            inode: to_bits(inode),
            uid,
            user: user.cloned(),
            exposure: exposure_code(exposure),
            dual_stack,
            owners,
            firewall: firewall.map(firewall_text),
        }))
    }
}

/// A firewall answer as stored: its JSON (`{"reach":"open","rule":...}`),
/// one text column of the interval's key, compared as a whole.
pub(crate) fn firewall_text(firewall: &Firewall) -> String {
    // A struct of strings and an enum: serializing cannot fail.
    serde_json::to_string(firewall).unwrap_or_default()
}

/// Decodes a stored firewall answer (see [`firewall_text`]), once per
/// distinct text a read meets.
#[derive(Default)]
pub(crate) struct FirewallDecoder(rustc_hash::FxHashMap<Box<str>, Firewall>);

impl FirewallDecoder {
    pub(crate) fn decode(&mut self, text: Option<&str>) -> Result<Option<Firewall>, StoreError> {
        let Some(text) = text else {
            return Ok(None);
        };
        if let Some(known) = self.0.get(text) {
            return Ok(Some(known.clone()));
        }
        let firewall: Firewall =
            serde_json::from_str(text).map_err(|e| corrupt(format_args!("firewall {text:?}: {e}")))?;
        self.0.insert(text.into(), firewall.clone());
        Ok(Some(firewall))
    }
}

/// The columns a [`RawToken`] is read from.
pub(crate) const TOKEN_COLUMNS: &str = "name, role, host, hash, created_at, revoked_at";

/// A token row as read, before decoding.
pub(crate) struct RawToken {
    pub name: String,
    pub role: String,
    pub host: Option<String>,
    pub hash: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

impl RawToken {
    pub(crate) fn into_row(self) -> Result<TokenRow, StoreError> {
        let role = Role::parse(&self.role)
            .ok_or_else(|| corrupt(format_args!("role {:?} of token {}", self.role, self.name)))?;
        Ok(TokenRow {
            name: self.name,
            role,
            host: self.host,
            hash: self.hash,
            created_at: timestamp(self.created_at)?,
            revoked_at: self.revoked_at.map(timestamp).transpose()?,
        })
    }
}

/// A `baseline_log` row (id, name, action, at, actor, comment, source) as read back.
pub(crate) type RawBaselineLog = (i64, String, String, i64, String, Option<String>, Option<String>);

/// The change a `baseline_log` row records.
pub(crate) fn baseline_log_row(
    (id, name, action, at, actor, comment, source): RawBaselineLog,
) -> Result<BaselineLogRow, StoreError> {
    let action = BaselineAction::parse(&action)
        .filter(|a| *a != BaselineAction::Unchanged)
        .ok_or_else(|| corrupt(format!("baseline action {action:?}")))?;
    Ok(BaselineLogRow {
        id,
        name,
        action,
        at: timestamp(at)?,
        actor,
        comment,
        source,
    })
}

/// The columns a [`RawAlert`] is read from, in its order.
pub(crate) const ALERT_COLUMNS: &str = "id, key, kind, severity, host, message, state, opened_at, acked_at, acked_by, \
     ack_comment, resolved_at, finding";

/// An `alerts` row as stored.
pub(crate) struct RawAlert {
    pub id: i64,
    pub key: String,
    pub kind: String,
    pub severity: String,
    pub host: String,
    pub message: String,
    pub state: String,
    pub opened_at: i64,
    pub acked_at: Option<i64>,
    pub acked_by: Option<String>,
    pub ack_comment: Option<String>,
    pub resolved_at: Option<i64>,
    pub finding: String,
}

impl RawAlert {
    pub(crate) fn into_row(self) -> Result<AlertRow, StoreError> {
        let kind = Kind::parse(&self.kind).ok_or_else(|| corrupt(format!("alert kind {:?}", self.kind)))?;
        let severity =
            Severity::parse(&self.severity).ok_or_else(|| corrupt(format!("alert severity {:?}", self.severity)))?;
        let state = AlertState::parse(&self.state).ok_or_else(|| corrupt(format!("alert state {:?}", self.state)))?;
        let finding: Finding =
            serde_json::from_str(&self.finding).map_err(|e| corrupt(format!("alert {} finding: {e}", self.id)))?;
        Ok(AlertRow {
            id: self.id,
            key: self.key,
            kind,
            severity,
            host: self.host,
            message: self.message,
            state,
            opened_at: timestamp(self.opened_at)?,
            acked_at: self.acked_at.map(timestamp).transpose()?,
            acked_by: self.acked_by,
            ack_comment: self.ack_comment,
            resolved_at: self.resolved_at.map(timestamp).transpose()?,
            finding,
        })
    }
}

/// An outbox row (id, event name, alert JSON) as the sinks get it. A row
/// this build cannot read (written by another version) is handed on as
/// such: the sink logs it and moves past it, rather than stopping at it.
pub(crate) fn outbox_event((id, event, alert): (i64, String, String)) -> OutboxEvent {
    let parsed = serde_json::from_str::<AlertRow>(&alert)
        .map_err(|e| format!("alert event {id} cannot be read by this collector: {e}"))
        .and_then(|alert| {
            AlertEvent::from_name(&event, alert)
                .ok_or_else(|| format!("alert event {id} has an unknown kind {event:?}"))
        });
    (id, parsed)
}

/// The columns a [`RawHost`] is read from (`h` is `hosts`, with its count of open intervals).
pub(crate) const HOST_COLUMNS: &str = "h.name, h.first_seen, h.last_seen, h.agent_version, h.interval_ms, h.os, \
     h.kernel, h.boot_time, h.tags, h.dropped_reports, \
     (SELECT count(*) FROM intervals i WHERE i.host_id = h.id AND i.closed_at IS NULL), \
     h.clock_skew_ms, h.clock_skew_at, h.detection, h.host_netns, h.addresses";

/// A `hosts` row as read, with its count of open intervals.
pub(crate) struct RawHost {
    pub name: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub agent_version: Option<String>,
    pub interval_ms: i64,
    pub os: Option<String>,
    pub kernel: Option<String>,
    pub boot_time: Option<i64>,
    pub tags: String,
    pub dropped: i64,
    pub listeners: i64,
    pub clock_skew_ms: Option<i64>,
    pub clock_skew_at: Option<i64>,
    pub detection: Option<String>,
    pub host_netns: Option<i64>,
    /// JSON array of addresses; NULL before the first snapshot that said.
    pub addresses: Option<String>,
}

impl RawHost {
    /// The host as of `now`, its clock judged by `limits`, its `last_seen`
    /// up to `lag_ms` behind the heartbeats received (see [`history::status`]).
    pub(crate) fn into_row(self, now: Timestamp, limits: &clock::Limits, lag_ms: u64) -> Result<HostRow, StoreError> {
        let interval_ms = from_bits(self.interval_ms);
        let status = history::status(now.as_millisecond(), self.last_seen, interval_ms, lag_ms);
        let tags: BTreeMap<String, String> =
            serde_json::from_str(&self.tags).map_err(|e| corrupt(format_args!("tags of host {}: {e}", self.name)))?;
        Ok(HostRow {
            status,
            first_seen: timestamp(self.first_seen)?,
            last_seen: timestamp(self.last_seen)?,
            agent_version: self.agent_version,
            interval_ms,
            os: self.os,
            kernel: self.kernel,
            boot_time: self.boot_time.map(timestamp).transpose()?,
            tags,
            listeners: from_bits(self.listeners),
            dropped_reports: from_bits(self.dropped),
            clock_skew_ms: self.clock_skew_ms,
            clock_skew_at: self.clock_skew_at.map(timestamp).transpose()?,
            clock_skewed: self
                .clock_skew_ms
                .is_some_and(|skew| clock::beyond_tolerance(skew, limits.tolerance)),
            detection: self.detection,
            host_netns: self.host_netns.map(from_bits),
            addresses: match &self.addresses {
                Some(json) => serde_json::from_str(json)
                    .map_err(|e| corrupt(format_args!("addresses of host {}: {e}", self.name)))?,
                None => Vec::new(),
            },
            host: self.name,
        })
    }
}

/// Every host's name by id, and its place in name order: how interval
/// answers name their hosts without a join per row.
///
/// Hosts are never renamed, so an entry goes stale only when its host is
/// forgotten (`forget_host`), which clears the cache once it has committed
/// (the forgotten id may be given to the next new host); a host registered
/// after the snapshot was taken is read on first sight (with every other
/// new one) into a new snapshot. Where ids may become visible out of order
/// (several writers), a backend reads the ids it misses by id, not only
/// those above [`HostNames::max_id`].
#[derive(Default)]
pub(crate) struct HostNames {
    /// Host id to its rank: its place in name order.
    ranks: FxHashMap<i64, u32>,
    /// The names in name order (allocated in that order too, so naming a
    /// sorted answer reads them in sequence).
    names: Vec<Arc<str>>,
    /// The greatest id read.
    max_id: i64,
}

impl HostNames {
    /// This snapshot plus the hosts `added` (id, name); those it knows already are skipped.
    fn with(&self, added: Vec<(i64, String)>) -> Result<HostNames, StoreError> {
        let added: Vec<(i64, String)> = added
            .into_iter()
            .filter(|(id, _)| !self.ranks.contains_key(id))
            .collect();
        let mut all: Vec<(i64, &str)> = self
            .ranks
            .iter()
            .map(|(&id, &rank)| (id, &*self.names[rank as usize]))
            .chain(added.iter().map(|(id, name)| (*id, name.as_str())))
            .collect();
        all.sort_unstable_by(|a, b| a.1.cmp(b.1));
        let mut ranks = FxHashMap::default();
        ranks.reserve(all.len());
        let mut names = Vec::with_capacity(all.len());
        for (rank, (id, name)) in all.iter().enumerate() {
            let rank = u32::try_from(rank).map_err(|_| corrupt("more than 4 billion hosts"))?;
            ranks.insert(*id, rank);
            names.push(Arc::from(*name));
        }
        let max_id = added.iter().map(|(id, _)| *id).fold(self.max_id, i64::max);
        Ok(HostNames { ranks, names, max_id })
    }

    /// The place of host `id` in name order, if known.
    pub(crate) fn rank(&self, id: i64) -> Option<u32> {
        self.ranks.get(&id).copied()
    }

    /// The name of the host at `rank`.
    pub(crate) fn name(&self, rank: u32) -> &Arc<str> {
        &self.names[rank as usize]
    }

    /// The greatest id known.
    pub(crate) fn max_id(&self) -> i64 {
        self.max_id
    }
}

/// The shared cache of [`HostNames`]: readers take the current snapshot and
/// replace it when they meet a host it does not know.
#[derive(Default)]
pub(crate) struct HostCache(RwLock<Arc<HostNames>>);

impl HostCache {
    /// Forgets every name (a host was deleted): the next read reads them again.
    pub(crate) fn clear(&self) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::default();
    }

    /// The current snapshot.
    pub(crate) fn current(&self) -> Arc<HostNames> {
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The current snapshot, extended first unless it already knows host
    /// `id`: `fetch` is given the greatest id known and returns the hosts
    /// (id, name) above it, read where host `id` is visible.
    pub(crate) fn knowing(
        &self,
        id: i64,
        fetch: impl FnOnce(i64) -> Result<Vec<(i64, String)>, StoreError>,
    ) -> Result<Arc<HostNames>, StoreError> {
        let mut shared = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if shared.rank(id).is_none() {
            let added = fetch(shared.max_id)?;
            *shared = Arc::new(shared.with(added)?);
        }
        Ok(Arc::clone(&shared))
    }

    /// The current snapshot with the hosts `added` (id, name) in it.
    pub(crate) fn merge(&self, added: Vec<(i64, String)>) -> Result<Arc<HostNames>, StoreError> {
        let mut shared = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if added.iter().any(|(id, _)| shared.rank(*id).is_none()) {
            *shared = Arc::new(shared.with(added)?);
        }
        Ok(Arc::clone(&shared))
    }
}

/// The order of listeners on one host: port, proto, address, then the rest
/// of what tells two apart, then when it opened.
type ListenerKey = (u16, Proto, IpAddr, u64, u64, Timestamp);

fn listener_key(row: &ListenerRow) -> ListenerKey {
    let l = &row.listener;
    (l.local_port, l.proto, l.local_addr, l.netns, l.inode, row.opened_at)
}

/// How the rows of an interval answer are ordered.
#[derive(Clone, Copy)]
pub(crate) enum Order {
    /// A host's listeners: port, proto, address, then the rest.
    Listener,
    /// By the time they opened, then as [`Order::Listener`].
    Opened,
    /// By host name, then as [`Order::Listener`].
    Host,
}

/// Sorts `rows` in `order`, `ranks[i]` being the place of row `i`'s host in
/// name order, and names each row's host by `name` of its rank.
pub(crate) fn sort_rows(rows: &mut [ListenerRow], ranks: &[u32], order: Order, name: impl Fn(u32) -> Arc<str>) {
    let mut perm: Vec<usize> = (0..rows.len()).collect();
    // Every key ends with the row's index: an unstable sort keeps ties in order.
    match order {
        Order::Listener => perm.sort_unstable_by_key(|&i| (listener_key(&rows[i]), i)),
        Order::Opened => perm.sort_unstable_by_key(|&i| (rows[i].opened_at, listener_key(&rows[i]), i)),
        Order::Host => perm.sort_unstable_by_key(|&i| (ranks[i], listener_key(&rows[i]), i)),
    }
    let sorted_ranks: Vec<u32> = perm.iter().map(|&i| ranks[i]).collect();
    permute(rows, perm);
    for (row, rank) in rows.iter_mut().zip(sorted_ranks) {
        row.host = name(rank);
    }
}

/// Puts `rows[perm[i]]` at `i`, in place: each cycle of the permutation is
/// followed once, so a fleet-wide answer (thousands of rows of a few hundred
/// bytes) is neither copied whole nor moved log2(n) times by a sort.
fn permute<T>(rows: &mut [T], mut perm: Vec<usize>) {
    const DONE: usize = usize::MAX;
    for start in 0..rows.len() {
        let mut at = start;
        while perm[at] != DONE {
            let from = std::mem::replace(&mut perm[at], DONE);
            if from == start {
                break;
            }
            rows.swap(at, from);
            at = from;
        }
    }
}

/// A stored verdict, decoded (both backends store the same columns).
pub(crate) fn probe_verdict(
    netns: u64,
    proto: i64,
    addr: &str,
    port: u16,
    state: &str,
    at: i64,
    detail: String,
) -> Result<portwatch_model::ProbeVerdict, StoreError> {
    let corrupt = |what: String| corrupt(format_args!("probe verdict: {what}"));
    Ok(portwatch_model::ProbeVerdict {
        place: portwatch_model::Place {
            netns,
            proto: proto_from(proto)?,
            addr: addr.parse().map_err(|_| corrupt(format!("address {addr:?}")))?,
            port,
        },
        state: portwatch_model::Verified::parse(state).ok_or_else(|| corrupt(format!("state {state:?}")))?,
        at: timestamp(at)?,
        detail,
    })
}

/// The columns of a peers point (both backends store the same), in the
/// order of [`PEER_COLUMNS`].
pub(crate) struct PeerRow {
    pub netns: i64,
    /// Always TCP's code: only TCP listeners have peers.
    pub proto: i64,
    pub addr: String,
    pub port: u16,
    pub at: i64,
    /// The point's minute (`at` / 60,000): a place keeps one point per minute.
    pub minute: i64,
    pub connections: i64,
    pub distinct_remotes: i64,
    pub loopback: i64,
    pub private: i64,
    pub public: i64,
    /// The top remotes, as JSON.
    pub top: String,
}

/// The columns a peers point is read back from, in [`PeerRow`]'s order (no minute).
pub(crate) const PEER_COLUMNS: &str =
    "netns, proto, addr, port, at, connections, distinct_remotes, loopback, private, public, top";

/// Milliseconds in a minute: the time series keeps one point per listener place per minute.
const MINUTE_MS: i64 = 60_000;

impl PeerRow {
    /// `sample` as stored, dated the earlier of its time and `now`.
    pub(crate) fn of(sample: &portwatch_common::peers::PeerSample, now: Timestamp) -> PeerRow {
        let at = sample.observed_at.min(now).as_millisecond();
        let s = &sample.summary;
        PeerRow {
            netns: to_bits(sample.netns),
            proto: proto_code(Proto::Tcp),
            addr: sample.local_addr.to_string(),
            port: sample.local_port,
            at,
            minute: at.div_euclid(MINUTE_MS),
            connections: to_bits(s.connections),
            distinct_remotes: to_bits(s.distinct_remotes),
            loopback: to_bits(s.classes.loopback),
            private: to_bits(s.classes.private),
            public: to_bits(s.classes.public),
            // A list of addresses and numbers always serializes.
            top: serde_json::to_string(&s.top).unwrap_or_else(|_| "[]".to_owned()),
        }
    }

    /// The point a row read back says.
    pub(crate) fn into_point(self) -> Result<portwatch_model::PeerPoint, StoreError> {
        let corrupt = |what: String| corrupt(format_args!("peers point: {what}"));
        Ok(portwatch_model::PeerPoint {
            place: portwatch_model::Place {
                netns: from_bits(self.netns),
                proto: proto_from(self.proto)?,
                addr: self
                    .addr
                    .parse()
                    .map_err(|_| corrupt(format!("address {:?}", self.addr)))?,
                port: self.port,
            },
            at: timestamp(self.at)?,
            summary: portwatch_common::peers::PeerSummary {
                connections: from_bits(self.connections),
                distinct_remotes: from_bits(self.distinct_remotes),
                top: serde_json::from_str(&self.top).map_err(|e| corrupt(format!("top remotes: {e}")))?,
                classes: portwatch_common::peers::Classes {
                    loopback: from_bits(self.loopback),
                    private: from_bits(self.private),
                    public: from_bits(self.public),
                },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_puts_each_row_where_the_permutation_says() {
        // Every permutation of up to 6 elements, and some larger ones made by a fixed LCG.
        fn all(n: usize) -> Vec<Vec<usize>> {
            if n == 0 {
                return vec![vec![]];
            }
            let mut out = Vec::new();
            for p in all(n - 1) {
                for at in 0..n {
                    let mut q = p.clone();
                    q.insert(at, n - 1);
                    out.push(q);
                }
            }
            out
        }
        let mut cases: Vec<Vec<usize>> = (0..=6).flat_map(all).collect();
        let mut seed = 7u64;
        for n in [100, 1000] {
            let mut p: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                p.swap(i, (seed >> 33) as usize % (i + 1));
            }
            cases.push(p);
        }
        for perm in cases {
            let rows: Vec<String> = (0..perm.len()).map(|i| format!("row {i}")).collect();
            let want: Vec<String> = perm.iter().map(|&i| rows[i].clone()).collect();
            let mut got = rows.clone();
            permute(&mut got, perm.clone());
            assert_eq!(got, want, "{perm:?}");
        }
    }

    #[test]
    fn an_owner_list_round_trips_and_one_cut_short_is_corrupt() {
        let mut bytes = Vec::new();
        for (pid, program) in [(1u64, 7u64), (4_000_000, 1 << 40)] {
            push_varint(&mut bytes, pid);
            push_varint(&mut bytes, program);
        }
        assert_eq!(owner_pairs(&bytes, 1).unwrap(), vec![(1, 7), (4_000_000, 1 << 40)]);
        let cut = &bytes[..bytes.len() - 1];
        assert!(owner_pairs(cut, 1).unwrap_err().to_string().contains("owner list"));
    }

    #[test]
    fn varints_round_trip() {
        let mut buf = Vec::new();
        let values = [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX];
        for v in values {
            push_varint(&mut buf, v);
        }
        let mut pos = 0;
        for v in values {
            assert_eq!(read_varint(&buf, &mut pos), Some(v));
        }
        assert_eq!(read_varint(&buf, &mut pos), None);
        assert_eq!(read_varint(&[0x80], &mut 0), None);
    }
}
