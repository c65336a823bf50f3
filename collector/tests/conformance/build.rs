//! What the suite's tests build and read: listeners, reports and batches of
//! them, findings, times, and counts of what a store holds. One set for every
//! concern, and for a backend's own tests beside the suite.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use portwatch_collector::retention::{self, PrunePlan, Retention};
use portwatch_collector::store::{PruneCursor, Pruned, Store};
use portwatch_common::wire::{Ack, Batch, HostFacts, Report, ReportBody, PROTOCOL_VERSION};
use portwatch_common::{Exposure, Family, Listener, Process, Proto};
use portwatch_model::{Finding, Kind, ListenerRow};

/// Every interval of every host, open or closed.
pub fn intervals(store: &dyn Store) -> usize {
    let mut n = 0;
    store
        .export(None, None, &mut |_| {
            n += 1;
            true
        })
        .unwrap();
    n
}

/// The intervals open now.
pub fn open_intervals(store: &dyn Store) -> usize {
    let mut n = 0;
    store
        .export(None, None, &mut |row| {
            n += usize::from(row.closed_at.is_none());
            true
        })
        .unwrap();
    n
}

/// A day, in seconds.
pub const DAY: i64 = 86_400;

/// A year, in seconds.
pub const YEAR: i64 = 365 * DAY;

/// The hosts the store knows.
pub fn hosts_count(store: &dyn Store) -> usize {
    store.hosts(Timestamp::now()).unwrap().len()
}

/// `seconds` from the suite's origin (2023-11-14).
pub fn ts(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + seconds).unwrap()
}

/// Day `d` from `ts(0)`.
pub fn day(d: i64) -> Timestamp {
    ts(d * DAY)
}

pub fn process(pid: u32, name: &str) -> Process {
    Process {
        pid,
        name: name.into(),
        cmdline: Some(format!("/usr/sbin/{name} -f /etc/{name}/{name}.conf --workers 4").into()),
        exe: Some(format!("/usr/sbin/{name}").into()),
        uid: Some(0),
        user: Some("root".into()),
        container: None,
        unit: Some(format!("{name}.service").into()),
    }
}

pub fn listener(port: u16, inode: u64, pids: &[u32]) -> Listener {
    Listener {
        netns: 4_026_531_840,
        proto: Proto::Tcp,
        family: Family::Ipv4,
        local_addr: "0.0.0.0".parse().unwrap(),
        local_port: port,
        inode,
        uid: 0,
        user: Some("root".into()),
        exposure: Exposure::Wildcard,
        dual_stack: false,
        processes: pids.iter().map(|&pid| process(pid, &format!("srv{port}"))).collect(),
    }
}

pub fn udp(mut l: Listener) -> Listener {
    l.proto = Proto::Udp;
    l
}

pub fn facts() -> HostFacts {
    HostFacts {
        detection: None,
        os: Some("Debian GNU/Linux 12".into()),
        kernel: Some("6.1.0-18-amd64".into()),
        boot_time: Some(ts(-86_400)),
        agent_version: "0.1.0".into(),
        interval_ms: 10_000,
        tags: BTreeMap::from([("role".into(), "db".into())]),
    }
}

pub fn snapshot(seq: u64, at: Timestamp, listeners: Vec<Listener>) -> Report {
    Report {
        seq,
        observed_at: at,
        body: ReportBody::Snapshot {
            facts: facts(),
            listeners,
        },
    }
}

pub fn delta(seq: u64, at: Timestamp, opened: Vec<Listener>, closed: Vec<Listener>) -> Report {
    Report {
        seq,
        observed_at: at,
        body: ReportBody::Delta {
            opened: opened.into_iter().map(Arc::new).collect(),
            closed: closed.into_iter().map(Arc::new).collect(),
        },
    }
}

pub fn batch(host: &str, session: &str, reports: Vec<Report>) -> Batch {
    let batch = Batch {
        version: PROTOCOL_VERSION,
        host: host.into(),
        session: session.into(),
        dropped: 0,
        alive_at: None,
        reports,
    };
    batch.validate().unwrap();
    batch
}

pub fn heartbeat(host: &str, session: &str, at: Timestamp) -> Batch {
    let b = Batch {
        version: PROTOCOL_VERSION,
        host: host.into(),
        session: session.into(),
        dropped: 0,
        alive_at: Some(at),
        reports: Vec::new(),
    };
    b.validate().unwrap();
    b
}

pub fn ack(acked: u64, resync: bool) -> Ack {
    Ack {
        acked,
        resync,
        limits: None,
    }
}

pub fn ports(rows: &[ListenerRow]) -> Vec<u16> {
    rows.iter().map(|r| r.listener.local_port).collect()
}

/// (port, opened_at, closed_at) of each row, times in seconds from `ts(0)`.
pub fn spans(rows: &[ListenerRow]) -> Vec<(u16, i64, Option<i64>)> {
    let secs = |t: Timestamp| t.as_second() - 1_700_000_000;
    rows.iter()
        .map(|r| (r.listener.local_port, secs(r.opened_at), r.closed_at.map(secs)))
        .collect()
}

pub fn part(seq: u64, at: Timestamp, part: u32, parts: u32, listeners: Vec<Listener>) -> Report {
    Report {
        seq,
        observed_at: at,
        body: ReportBody::SnapshotPart {
            part,
            parts,
            facts: (part + 1 == parts).then(facts),
            listeners,
        },
    }
}

pub fn telnet() -> Listener {
    listener(23, 7, &[70])
}

/// A listener on `port` of one process, `program` (pid 812), inode `port + 1000`.
pub fn served_by(port: u16, program: &str) -> Listener {
    let mut l = listener(port, u64::from(port) + 1000, &[]);
    l.processes = vec![process(812, program)];
    l
}

/// A finding of `kind` on `host`, about tcp/`port`.
pub fn finding(kind: Kind, host: &str, port: u16) -> Finding {
    Finding {
        message: format!("{host}: tcp/{port}"),
        proto: Some(Proto::Tcp),
        local_port: Some(port),
        ..Finding::new(kind, host, format!("{}:{host}:tcp/{port}", kind.as_str()))
    }
}

/// An unexpected listener on `host`, tcp/`port`: the finding that opens an alert.
pub fn unexpected(host: &str, port: u16) -> Finding {
    finding(Kind::UnexpectedListener, host, port)
}

/// Host names, owned.
pub fn hosts(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

/// Sends `reports` of `host` (session `s1`), received at the last report's time.
pub fn send(store: &dyn Store, host: &str, reports: Vec<Report>) -> Ack {
    let at = reports.last().unwrap().observed_at;
    store.ingest(&batch(host, "s1", reports), at).unwrap()
}

/// Thirty days of history, alerts and baseline log, as of `now`.
pub fn month_plan(now: Timestamp) -> PrunePlan {
    let month = Some(std::time::Duration::from_secs(30 * DAY as u64));
    retention::plan(
        now,
        &Retention {
            history: month,
            alerts: month,
            baseline_log: month,
        },
    )
}

/// Prunes `plan` to the end, `batch_rows` at a time; what it removed, and the calls it took.
pub fn prune_all(store: &dyn Store, plan: &PrunePlan, batch_rows: usize) -> (Pruned, usize) {
    let mut cursor = PruneCursor::default();
    let mut total = Pruned::default();
    let mut calls = 0;
    while !cursor.done() {
        total += store.prune(plan, &mut cursor, batch_rows).unwrap();
        calls += 1;
        assert!(calls < 100_000, "pruning never ends");
    }
    (total, calls)
}

/// web-1: ssh open since day 0; http (nginx) closed on day 1; https
/// (haproxy) closed on day 50. db-1: a program of its own (pgbouncer) on a
/// listener closed on day 1. web-1 opens 9000 (sshd) on day 55, so the
/// newest interval is one every plan keeps (a backend may hand out the
/// greatest id of a deleted row again, and pruning never deletes it).
pub fn two_hosts(store: &dyn Store) {
    send(
        store,
        "web-1",
        vec![snapshot(
            1,
            day(0),
            vec![served_by(22, "sshd"), served_by(80, "nginx"), served_by(443, "haproxy")],
        )],
    );
    send(
        store,
        "web-1",
        vec![delta(2, day(1), vec![], vec![served_by(80, "nginx")])],
    );
    send(
        store,
        "web-1",
        vec![delta(3, day(50), vec![], vec![served_by(443, "haproxy")])],
    );
    send(
        store,
        "db-1",
        vec![snapshot(1, day(0), vec![served_by(6432, "pgbouncer")])],
    );
    send(
        store,
        "db-1",
        vec![delta(2, day(1), vec![], vec![served_by(6432, "pgbouncer")])],
    );
    send(
        store,
        "web-1",
        vec![delta(4, day(55), vec![served_by(9000, "sshd")], vec![])],
    );
}
