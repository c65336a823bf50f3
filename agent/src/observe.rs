//! Turns successive scans into numbered reports: the agent's side of the
//! history protocol (see `portwatch_common::wire`).
//!
//! A session (one run of the agent) starts with a snapshot. After that each
//! scan that differs from the previous one becomes a delta with the next
//! sequence number, and a scan that does not becomes nothing (the daemon
//! sends a heartbeat instead). When the collector asks for a resync, or the
//! spool had to drop reports, the next report is a snapshot again, from
//! which the collector reconciles its history.
//!
//! Every report stays under a JSON size bound (`REPORT_BYTES` of the wire
//! protocol), so that any report fits a batch the collector accepts: a
//! larger snapshot becomes consecutive snapshot parts, a larger delta
//! consecutive deltas (its closes first, then its opens, as within one
//! delta), all observed at the same time.
//!
//! What a report says of processes and the host is cut to the protocol's
//! limits before it is numbered and spooled (the limits table of the wire
//! protocol; the collector cuts the same way, so what it stores is what was
//! sent): a host with a 2 MiB command line sends 4 KiB of it, and a
//! listener closed in a delta is the one its opening reported.
//!
//! A scan is not atomic: the socket dump comes first, the owners' fd walk
//! after it, so a process that exits in between leaves its listening socket
//! seen without an owner, just before the socket goes. Reporting that would
//! write a false owner change (owner -> nobody) followed by a close. So a
//! listener whose every owner vanished keeps its last owners for one scan:
//! if it is gone at the next scan only its close is reported; if it is
//! still there without an owner, the change is reported then, one interval
//! late.

use std::collections::{HashMap, HashSet};

use std::sync::Arc;

use jiff::Timestamp;
use portwatch_common::wire::{json_len, HostFacts, Report, ReportBody, Sanitized, REPORT_BYTES};
use portwatch_common::{Delta, Listener, Snapshot};

/// The report-numbering state of one agent session.
#[derive(Debug)]
pub struct Observer {
    session: String,
    facts: HostFacts,
    next_seq: u64,
    last: Option<Snapshot>,
    snapshot_due: bool,
    /// Sockets (netns, inode) seen without owners once, reported with their last owners.
    orphans: HashSet<(u64, u64)>,
    /// The JSON size each report stays under.
    report_bytes: usize,
}

impl Observer {
    /// A new session: the first report will be a snapshot numbered 1.
    pub fn new(session: String, mut facts: HostFacts) -> Observer {
        Sanitized::default().facts(&mut facts);
        Observer {
            session,
            facts,
            next_seq: 1,
            last: None,
            snapshot_due: true,
            orphans: HashSet::new(),
            report_bytes: REPORT_BYTES,
        }
    }

    /// Keeps each report under `bytes` of JSON instead of the protocol's
    /// `REPORT_BYTES` (at least one listener goes in each report).
    pub fn with_report_bytes(mut self, bytes: usize) -> Observer {
        self.report_bytes = bytes;
        self
    }

    /// The session id.
    pub fn session(&self) -> &str {
        &self.session
    }

    /// `current` with the listeners whose every owner vanished since the
    /// last scan given their last owners, once (see the module docs).
    fn settle(&mut self, current: Snapshot) -> Snapshot {
        let Some(last) = &self.last else {
            return current;
        };
        let owned: HashMap<(u64, u64), &Listener> = last
            .listeners()
            .iter()
            .filter(|l| !l.processes.is_empty())
            .map(|l| ((l.netns, l.inode), l))
            .collect();
        let mut orphans = HashSet::new();
        let listeners: Vec<Listener> = current
            .into_listeners()
            .into_iter()
            .map(|l| {
                let key = (l.netns, l.inode);
                if !l.processes.is_empty() || l.inode == 0 {
                    return l;
                }
                match owned.get(&key) {
                    Some(before) if !self.orphans.contains(&key) => {
                        orphans.insert(key);
                        (*before).clone()
                    }
                    _ => l,
                }
            })
            .collect();
        self.orphans = orphans;
        Snapshot::new(listeners)
    }

    /// The reports for a scan observed at `at`: none when nothing changed,
    /// one, or several when one would exceed the size bound (see the module
    /// docs), numbered consecutively.
    pub fn observe(&mut self, current: Snapshot, at: Timestamp) -> Vec<Report> {
        let current = self.settle(bounded(current));
        let bodies = match (&self.last, self.snapshot_due) {
            (Some(last), false) => {
                let delta = last.diff(&current);
                if delta.is_empty() {
                    return Vec::new();
                }
                split_delta(delta.closed, delta.opened, self.report_bytes)
            }
            _ => split_snapshot(&self.facts, current.listeners(), self.report_bytes),
        };
        self.snapshot_due = false;
        self.last = Some(current);
        self.number(bodies, at)
    }

    /// The reports of `bodies`, numbered consecutively, observed at `at`.
    fn number(&mut self, bodies: Vec<ReportBody>, at: Timestamp) -> Vec<Report> {
        bodies
            .into_iter()
            .map(|body| {
                let seq = self.next_seq;
                self.next_seq += 1;
                Report {
                    seq,
                    observed_at: at,
                    body,
                }
            })
            .collect()
    }

    /// The reports for a change of the host's listeners observed at `at`,
    /// as kernel events tell one: the same reports [`Observer::observe`]
    /// makes of the snapshot the change leads to, at the cost of the change
    /// rather than of a copy of every listener and a diff. Before the first
    /// report of a session (a snapshot, made by [`Observer::observe`]) it
    /// makes none.
    pub fn observe_change(&mut self, change: Delta, at: Timestamp) -> Vec<Report> {
        let Some(last) = &mut self.last else {
            return Vec::new();
        };
        let mut cut = Sanitized::default();
        let mut bounded_all = |ls: Vec<Arc<Listener>>| -> Vec<Arc<Listener>> {
            ls.into_iter()
                .map(|l| {
                    let mut l = Arc::unwrap_or_clone(l);
                    cut.listener(&mut l);
                    Arc::new(l)
                })
                .collect()
        };
        let change = Delta {
            opened: bounded_all(change.opened),
            closed: bounded_all(change.closed),
        };
        let applied = last.apply(change);
        let bodies = match self.snapshot_due {
            false if applied.is_empty() => return Vec::new(),
            false => split_delta(applied.closed, applied.opened, self.report_bytes),
            true => split_snapshot(&self.facts, last.listeners(), self.report_bytes),
        };
        self.snapshot_due = false;
        self.number(bodies, at)
    }

    /// Whether the next report must be a snapshot again, after reports were
    /// made (the collector asked for one, or reports were dropped); not at
    /// the start of a session, before the first.
    pub fn resync_due(&self) -> bool {
        self.snapshot_due && self.last.is_some()
    }

    /// Makes the next report a snapshot (the collector asked, or reports were dropped).
    pub fn resync(&mut self) {
        self.snapshot_due = true;
    }

    /// Takes the host's interface addresses as they are now (see
    /// `facts::own_addresses`); when they changed, the facts change and the
    /// next report is a snapshot, which carries them (a collector that
    /// probes from outside tries the addresses the host has, not those it
    /// had at start). Returns whether they changed.
    pub fn refresh_addresses(&mut self, addresses: Vec<std::net::IpAddr>) -> bool {
        if addresses == self.facts.addresses {
            return false;
        }
        self.facts.addresses = addresses;
        self.snapshot_due = true;
        true
    }
}

/// `snapshot` with every string cut to the protocol's limits (see the module docs).
fn bounded(snapshot: Snapshot) -> Snapshot {
    let mut cut = Sanitized::default();
    let mut listeners = snapshot.into_listeners();
    for listener in &mut listeners {
        cut.listener(listener);
    }
    Snapshot::new(listeners)
}

/// Bytes of JSON `value` takes.
fn json_bytes(value: &impl serde::Serialize) -> usize {
    usize::try_from(json_len(value)).unwrap_or(usize::MAX)
}

/// Splits `items` into runs of at most `budget` JSON bytes (a comma each
/// included), at least one item a run; `None` when all fit in one.
fn runs<T: serde::Serialize>(items: &[T], budget: usize) -> Option<Vec<std::ops::Range<usize>>> {
    let sizes: Vec<usize> = items.iter().map(|item| json_bytes(item) + 1).collect();
    if sizes.iter().sum::<usize>() <= budget {
        return None;
    }
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, size) in sizes.into_iter().enumerate() {
        if i > start && bytes + size > budget {
            runs.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    runs.push(start..items.len());
    Some(runs)
}

/// Room left in a report for its listeners: the bound less the report's
/// other fields (the facts, the kind, numbers), at least a quarter of it.
fn listener_budget(report_bytes: usize, fixed: usize) -> usize {
    report_bytes.saturating_sub(fixed + 256).max(report_bytes / 4)
}

/// A snapshot of `listeners`, whole or in parts of at most about `report_bytes`.
fn split_snapshot(facts: &HostFacts, listeners: &[Listener], report_bytes: usize) -> Vec<ReportBody> {
    let budget = listener_budget(report_bytes, json_bytes(facts));
    let Some(runs) = runs(listeners, budget) else {
        return vec![ReportBody::Snapshot {
            facts: facts.clone(),
            listeners: listeners.to_vec(),
        }];
    };
    let parts = u32::try_from(runs.len()).unwrap_or(u32::MAX);
    runs.into_iter()
        .enumerate()
        .map(|(i, run)| {
            let part = u32::try_from(i).unwrap_or(u32::MAX);
            ReportBody::SnapshotPart {
                part,
                parts,
                facts: (part + 1 == parts).then(|| facts.clone()),
                listeners: listeners[run].to_vec(),
            }
        })
        .collect()
}

/// A delta, whole or as consecutive deltas of at most about `report_bytes`:
/// its closes first, then its opens.
fn split_delta(closed: Vec<Arc<Listener>>, opened: Vec<Arc<Listener>>, report_bytes: usize) -> Vec<ReportBody> {
    let changes: Vec<(bool, Arc<Listener>)> = closed
        .into_iter()
        .map(|l| (false, l))
        .chain(opened.into_iter().map(|l| (true, l)))
        .collect();
    let Some(runs) = runs(
        &changes.iter().map(|(_, l)| l).collect::<Vec<_>>(),
        listener_budget(report_bytes, 0),
    ) else {
        let (opened, closed) = changes.into_iter().partition::<Vec<_>, _>(|(open, _)| *open);
        return vec![ReportBody::Delta {
            opened: opened.into_iter().map(|(_, l)| l).collect(),
            closed: closed.into_iter().map(|(_, l)| l).collect(),
        }];
    };
    runs.into_iter()
        .map(|run| {
            let (opened, closed) = changes[run].iter().cloned().partition::<Vec<_>, _>(|(open, _)| *open);
            ReportBody::Delta {
                opened: opened.into_iter().map(|(_, l)| l).collect(),
                closed: closed.into_iter().map(|(_, l)| l).collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use portwatch_common::{Exposure, Family, Listener, Proto};
    use std::collections::BTreeMap;

    fn facts() -> HostFacts {
        HostFacts {
            detection: None,
            host_netns: None,
            addresses: Vec::new(),
            os: None,
            kernel: None,
            boot_time: None,
            agent_version: "test".into(),
            interval_ms: 1000,
            tags: BTreeMap::new(),
        }
    }

    fn snapshot(ports: &[u16]) -> Snapshot {
        Snapshot::new(
            ports
                .iter()
                .map(|&p| Listener {
                    netns: 1,
                    proto: Proto::Tcp,
                    family: Family::Ipv4,
                    local_addr: "0.0.0.0".parse().unwrap(),
                    local_port: p,
                    inode: u64::from(p),
                    uid: 0,
                    user: None,
                    exposure: Exposure::Wildcard,
                    dual_stack: false,
                    processes: Vec::new(),
                    firewall: None,
                })
                .collect(),
        )
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn kind(r: &Report) -> &'static str {
        match r.body {
            ReportBody::Snapshot { .. } => "snapshot",
            ReportBody::SnapshotPart { .. } => "part",
            ReportBody::Delta { .. } => "delta",
        }
    }

    /// The one report of a scan.
    fn one(mut reports: Vec<Report>) -> Report {
        assert_eq!(reports.len(), 1, "{reports:?}");
        reports.remove(0)
    }

    #[test]
    fn a_change_makes_the_reports_a_snapshot_of_its_outcome_would_and_the_next_diff_agrees() {
        let (mut by_change, mut by_diff) = (Observer::new("s1".into(), facts()), Observer::new("s1".into(), facts()));
        let at = Timestamp::now();
        assert!(
            by_change.observe_change(Delta::default(), at).is_empty(),
            "nothing before the first snapshot"
        );
        by_change.observe(snapshot(&[22, 80]), at);
        by_diff.observe(snapshot(&[22, 80]), at);
        let l443 = snapshot(&[443]).into_listeners().remove(0);
        let l80 = snapshot(&[80]).into_listeners().remove(0);
        let change = Delta {
            opened: vec![Arc::new(l443)],
            closed: vec![Arc::new(l80)],
        };
        let a = by_change.observe_change(change, at);
        let b = by_diff.observe(snapshot(&[22, 443]), at);
        assert_eq!(a, b);
        assert_eq!(a[0].seq, 2);
        // The two observers hold the same: the next scan differs from neither.
        assert!(by_change.observe(snapshot(&[22, 443]), at).is_empty());
        assert!(by_diff.observe(snapshot(&[22, 443]), at).is_empty());
        // A change that changes nothing makes no report; one after a resync, a snapshot.
        assert!(by_change.observe_change(Delta::default(), at).is_empty());
        by_change.resync();
        let l8080 = snapshot(&[8080]).into_listeners().remove(0);
        let r = by_change.observe_change(
            Delta {
                opened: vec![Arc::new(l8080)],
                closed: Vec::new(),
            },
            at,
        );
        match &r[..] {
            [Report {
                body: ReportBody::Snapshot { listeners, .. },
                ..
            }] => assert_eq!(
                listeners.iter().map(|l| l.local_port).collect::<Vec<_>>(),
                [22, 443, 8080]
            ),
            other => panic!("not one snapshot: {other:?}"),
        }
    }

    #[test]
    fn changed_addresses_make_the_next_report_a_snapshot_with_them_and_unchanged_ones_nothing() {
        let mut o = Observer::new("s1".into(), facts());
        let at = Timestamp::now();
        assert_eq!(o.observe(Snapshot::new(Vec::new()), at).len(), 1);
        assert!(!o.refresh_addresses(Vec::new()), "the same: no change");
        assert!(o.observe(Snapshot::new(Vec::new()), at).is_empty());
        let new: Vec<std::net::IpAddr> = vec!["192.0.2.7".parse().unwrap()];
        assert!(o.refresh_addresses(new.clone()));
        assert!(o.resync_due());
        let reports = o.observe(Snapshot::new(Vec::new()), at);
        match &reports[..] {
            [Report {
                body: ReportBody::Snapshot { facts, .. },
                ..
            }] => assert_eq!(facts.addresses, new),
            other => panic!("not one snapshot: {other:?}"),
        }
        assert!(!o.refresh_addresses(new), "told once");
    }

    #[test]
    fn a_session_starts_with_a_snapshot_then_numbers_each_change() {
        let mut o = Observer::new("s1".into(), facts());
        let first = one(o.observe(snapshot(&[22]), t(0)));
        assert_eq!((first.seq, kind(&first), first.observed_at), (1, "snapshot", t(0)));
        assert!(o.observe(snapshot(&[22]), t(10)).is_empty(), "nothing changed");
        let second = one(o.observe(snapshot(&[22, 80]), t(20)));
        assert_eq!((second.seq, kind(&second)), (2, "delta"));
        let ReportBody::Delta { opened, closed } = &second.body else {
            unreachable!()
        };
        assert_eq!((opened.len(), closed.len()), (1, 0));
        assert_eq!(opened[0].local_port, 80);
        let third = one(o.observe(snapshot(&[80]), t(30)));
        assert_eq!((third.seq, kind(&third)), (3, "delta"));
    }

    /// `s` with every listener held by `pid`.
    fn owned(s: Snapshot, pid: u32) -> Snapshot {
        let mut ls = s.into_listeners();
        for l in &mut ls {
            l.processes = vec![portwatch_common::Process {
                pid,
                name: "svc".into(),
                cmdline: None,
                exe: None,
                uid: None,
                user: None,
                container: None,
                unit: None,
            }];
        }
        Snapshot::new(ls)
    }

    #[test]
    fn a_socket_that_loses_every_owner_just_before_it_closes_reports_only_the_close() {
        let mut o = Observer::new("s1".into(), facts());
        o.observe(owned(snapshot(&[22, 80]), 7), t(0));
        // The owner of :80 exited between the socket dump and the fd walk.
        let both = owned(snapshot(&[22]), 7)
            .into_listeners()
            .into_iter()
            .chain(snapshot(&[80]).into_listeners())
            .collect();
        assert!(o.observe(Snapshot::new(both), t(10)).is_empty());
        let r = one(o.observe(owned(snapshot(&[22]), 7), t(20)));
        let ReportBody::Delta { opened, closed } = &r.body else {
            unreachable!()
        };
        assert!(opened.is_empty(), "no owner change: {opened:?}");
        assert_eq!(closed.len(), 1);
        assert_eq!((closed[0].local_port, closed[0].processes[0].pid), (80, 7));
    }

    #[test]
    fn a_socket_still_without_owner_at_the_next_scan_is_reported_then() {
        let mut o = Observer::new("s1".into(), facts());
        o.observe(owned(snapshot(&[80]), 7), t(0));
        assert!(o.observe(snapshot(&[80]), t(10)).is_empty(), "one scan of grace");
        let r = one(o.observe(snapshot(&[80]), t(20)));
        let ReportBody::Delta { opened, closed } = &r.body else {
            unreachable!()
        };
        assert_eq!((opened.len(), closed.len()), (1, 1));
        assert!(opened[0].processes.is_empty() && closed[0].processes[0].pid == 7);
        assert!(o.observe(snapshot(&[80]), t(30)).is_empty(), "reported once");
    }

    #[test]
    fn a_resync_sends_a_full_snapshot_with_the_next_number() {
        let mut o = Observer::new("s1".into(), facts());
        o.observe(snapshot(&[22]), t(0));
        o.resync();
        let r = one(o.observe(snapshot(&[22]), t(10)));
        assert_eq!((r.seq, kind(&r)), (2, "snapshot"));
        let ReportBody::Snapshot { listeners, facts: f } = &r.body else {
            unreachable!()
        };
        assert_eq!(listeners.len(), 1);
        assert_eq!(f, &facts());
        assert!(o.observe(snapshot(&[22]), t(20)).is_empty());
    }

    #[test]
    fn a_snapshot_over_the_size_bound_goes_in_consecutive_parts_that_add_up_to_it() {
        let ports: Vec<u16> = (1000..1400).collect();
        let whole = snapshot(&ports);
        let per_listener = json_bytes(&whole.listeners()[0]) + 1;
        let bound = 40 * per_listener + 600;
        let mut o = Observer::new("s1".into(), facts()).with_report_bytes(bound);
        let reports = o.observe(whole.clone(), t(0));
        assert!(reports.len() >= 10, "{} parts", reports.len());
        let parts = reports.len() as u32;
        let mut union = Vec::new();
        for (i, r) in reports.iter().enumerate() {
            assert_eq!((r.seq, r.observed_at), (i as u64 + 1, t(0)));
            assert!(json_bytes(r) <= bound, "part {i}: {} bytes over {bound}", json_bytes(r));
            let ReportBody::SnapshotPart {
                part,
                parts: n,
                facts: f,
                listeners,
            } = &r.body
            else {
                panic!("part {i} is a {}", kind(r))
            };
            assert_eq!((*part, *n), (i as u32, parts));
            assert_eq!(f.is_some(), i as u32 + 1 == parts, "facts on the last part only");
            union.extend(listeners.iter().cloned());
        }
        assert_eq!(union, whole.listeners().to_vec());
        // Numbering goes on after the parts.
        let next = one(o.observe(snapshot(&ports[1..]), t(10)));
        assert_eq!((next.seq, kind(&next)), (u64::from(parts) + 1, "delta"));
        // Under the bound, a snapshot stays whole.
        let mut small = Observer::new("s2".into(), facts()).with_report_bytes(bound);
        assert_eq!(kind(&one(small.observe(snapshot(&ports[..20]), t(0)))), "snapshot");
    }

    #[test]
    fn a_delta_over_the_size_bound_goes_as_deltas_closing_first_then_opening() {
        let before: Vec<u16> = (1000..1100).collect();
        let after: Vec<u16> = (2000..2150).collect();
        let per_listener = json_bytes(&snapshot(&[1000]).listeners()[0]) + 1;
        let mut o = Observer::new("s1".into(), facts()).with_report_bytes(30 * per_listener + 300);
        let first = o.observe(snapshot(&before), t(0)).len() as u64;
        let reports = o.observe(snapshot(&after), t(10));
        assert!(reports.len() >= 8, "{} deltas", reports.len());
        let (mut closed, mut opened) = (Vec::new(), Vec::new());
        for (i, r) in reports.iter().enumerate() {
            assert_eq!((r.seq, r.observed_at), (first + i as u64 + 1, t(10)));
            let ReportBody::Delta { opened: o, closed: c } = &r.body else {
                panic!("a {}", kind(r))
            };
            assert!(c.is_empty() || opened.is_empty(), "report {i} closes after an open");
            closed.extend(c.iter().map(|l| l.local_port));
            opened.extend(o.iter().map(|l| l.local_port));
        }
        assert_eq!((closed, opened), (before, after));
    }

    #[test]
    fn a_2_mib_command_line_and_a_long_os_are_cut_before_they_are_reported() {
        use portwatch_common::wire::{MAX_CMDLINE_BYTES, MAX_FACT_BYTES};
        let huge = |pid: u32| {
            let mut s = owned(snapshot(&[8080]), pid).into_listeners();
            let args = "-Dx=y ".repeat(350_000);
            s[0].processes[0].cmdline = Some(format!("/usr/bin/java {args}").into());
            Snapshot::new(s)
        };
        let mut f = facts();
        f.os = Some("Debian ".repeat(100_000));
        let mut o = Observer::new("s1".into(), f);
        let first = one(o.observe(huge(7), t(0)));
        assert!(json_bytes(&first) < 16 * 1024, "{} bytes", json_bytes(&first));
        let ReportBody::Snapshot { facts, listeners } = &first.body else {
            panic!("a {}", kind(&first))
        };
        assert!(facts.os.as_ref().is_some_and(|os| os.len() <= MAX_FACT_BYTES));
        let cmdline = listeners[0].processes[0].cmdline.clone().unwrap();
        assert!(cmdline.len() <= MAX_CMDLINE_BYTES && cmdline.starts_with("/usr/bin/java -Dx=y"));
        assert!(cmdline.ends_with(" bytes]"));
        // The same scan again is no change; a new owner closes the listener as it was reported.
        assert!(o.observe(huge(7), t(10)).is_empty());
        let change = one(o.observe(huge(8), t(20)));
        let ReportBody::Delta { opened, closed } = &change.body else {
            panic!("a {}", kind(&change))
        };
        assert_eq!(closed[0].processes[0].cmdline.as_deref(), Some(&*cmdline));
        assert_eq!(opened[0].processes[0].pid, 8);
        assert!(json_bytes(&change) < 16 * 1024);
    }
}
