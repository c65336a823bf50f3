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
//! A scan is not atomic: the socket dump comes first, the owners' fd walk
//! after it, so a process that exits in between leaves its listening socket
//! seen without an owner, just before the socket goes. Reporting that would
//! write a false owner change (owner -> nobody) followed by a close. So a
//! listener whose every owner vanished keeps its last owners for one scan:
//! if it is gone at the next scan only its close is reported; if it is
//! still there without an owner, the change is reported then, one interval
//! late.

use std::collections::{HashMap, HashSet};

use jiff::Timestamp;
use portwatch_common::wire::{HostFacts, Report, ReportBody};
use portwatch_common::{Listener, Snapshot};

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
}

impl Observer {
    /// A new session: the first report will be a snapshot numbered 1.
    pub fn new(session: String, facts: HostFacts) -> Observer {
        Observer {
            session,
            facts,
            next_seq: 1,
            last: None,
            snapshot_due: true,
            orphans: HashSet::new(),
        }
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

    /// The report for a scan observed at `at`, or `None` when nothing changed.
    pub fn observe(&mut self, current: Snapshot, at: Timestamp) -> Option<Report> {
        let current = self.settle(current);
        let body = match (&self.last, self.snapshot_due) {
            (Some(last), false) => {
                let delta = last.diff(&current);
                if delta.is_empty() {
                    return None;
                }
                ReportBody::Delta {
                    opened: delta.opened,
                    closed: delta.closed,
                }
            }
            _ => ReportBody::Snapshot {
                facts: self.facts.clone(),
                listeners: current.listeners().to_vec(),
            },
        };
        self.snapshot_due = false;
        self.last = Some(current);
        let seq = self.next_seq;
        self.next_seq += 1;
        Some(Report {
            seq,
            observed_at: at,
            body,
        })
    }

    /// Makes the next report a snapshot (the collector asked, or reports were dropped).
    pub fn resync(&mut self) {
        self.snapshot_due = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portwatch_common::{Exposure, Family, Listener, Proto};
    use std::collections::BTreeMap;

    fn facts() -> HostFacts {
        HostFacts {
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
            ReportBody::Delta { .. } => "delta",
        }
    }

    #[test]
    fn a_session_starts_with_a_snapshot_then_numbers_each_change() {
        let mut o = Observer::new("s1".into(), facts());
        let first = o.observe(snapshot(&[22]), t(0)).unwrap();
        assert_eq!((first.seq, kind(&first), first.observed_at), (1, "snapshot", t(0)));
        assert!(o.observe(snapshot(&[22]), t(10)).is_none(), "nothing changed");
        let second = o.observe(snapshot(&[22, 80]), t(20)).unwrap();
        assert_eq!((second.seq, kind(&second)), (2, "delta"));
        let ReportBody::Delta { opened, closed } = &second.body else {
            unreachable!()
        };
        assert_eq!((opened.len(), closed.len()), (1, 0));
        assert_eq!(opened[0].local_port, 80);
        let third = o.observe(snapshot(&[80]), t(30)).unwrap();
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
        assert!(o.observe(Snapshot::new(both), t(10)).is_none());
        let r = o.observe(owned(snapshot(&[22]), 7), t(20)).unwrap();
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
        assert!(o.observe(snapshot(&[80]), t(10)).is_none(), "one scan of grace");
        let r = o.observe(snapshot(&[80]), t(20)).unwrap();
        let ReportBody::Delta { opened, closed } = &r.body else {
            unreachable!()
        };
        assert_eq!((opened.len(), closed.len()), (1, 1));
        assert!(opened[0].processes.is_empty() && closed[0].processes[0].pid == 7);
        assert!(o.observe(snapshot(&[80]), t(30)).is_none(), "reported once");
    }

    #[test]
    fn a_resync_sends_a_full_snapshot_with_the_next_number() {
        let mut o = Observer::new("s1".into(), facts());
        o.observe(snapshot(&[22]), t(0));
        o.resync();
        let r = o.observe(snapshot(&[22]), t(10)).unwrap();
        assert_eq!((r.seq, kind(&r)), (2, "snapshot"));
        let ReportBody::Snapshot { listeners, facts: f } = &r.body else {
            unreachable!()
        };
        assert_eq!(listeners.len(), 1);
        assert_eq!(f, &facts());
        assert!(o.observe(snapshot(&[22]), t(20)).is_none());
    }
}
