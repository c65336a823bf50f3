//! The listeners as kernel events tell them, between two full scans.
//!
//! A full scan sets the table ([`Tracked::reset`]); each event then opens or
//! closes one listener. TCP events are exact. A UDP socket's release has no
//! event of its own, only hints (its fd closed, its process exited): the
//! listener becomes a suspect, and the daemon confirms the release with a
//! socket dump a moment later ([`Tracked::confirm`]), recording the close at
//! the hint's time. A suspect still present stays open (a forked child or a
//! duplicated fd still holds it).
//!
//! Pure: the owner of an event's socket is given by the caller.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use portwatch_common::socket::is_dual_stack;
use portwatch_common::{Delta, Exposure, Listener, Process, Proto, Snapshot};

use super::parse::{Event, Kind};

/// A listener's identity: (network namespace, socket inode).
pub type Key = (u64, u64);

/// A UDP listener that a hint says may be released, since `ktime_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suspect {
    /// Which listener.
    pub key: Key,
    /// When the hint came (CLOCK_MONOTONIC nanoseconds).
    pub ktime_ns: u64,
}

/// How a full scan and the event-made table differed (both should be zero).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Disagreement {
    /// Listeners the scan found that events never opened.
    pub missed_opens: usize,
    /// Listeners events left open that the scan did not find.
    pub missed_closes: usize,
}

impl Disagreement {
    /// Their sum.
    pub fn total(&self) -> usize {
        self.missed_opens + self.missed_closes
    }
}

/// The event-made listener table.
#[derive(Debug, Default)]
pub struct Tracked {
    listeners: BTreeMap<Key, Listener>,
    /// (tgid, fd) -> the UDP listener that bind(2) on that fd made.
    udp_fds: HashMap<(u32, u32), Key>,
    suspects: Vec<Suspect>,
}

/// The change of `listener` closing.
fn closed(listener: Listener) -> Delta {
    Delta {
        opened: Vec::new(),
        closed: vec![Arc::new(listener)],
    }
}

/// The listener an open event stands for, owned by `owner` (the calling
/// task as the scanner reads it), or, when that task has already exited, by
/// what the event itself says of it (pid and command name).
pub fn listener(event: &Event, owner: Option<Arc<Process>>, user: Option<Arc<str>>) -> Option<Listener> {
    let (proto, family) = (event.proto()?, event.family?);
    let process = owner.map_or_else(
        || Process {
            pid: event.tgid,
            name: Arc::from(event.comm.as_str()),
            cmdline: None,
            exe: None,
            uid: None,
            user: None,
            container: None,
            unit: None,
        },
        |p| Process::clone(&p),
    );
    Some(Listener {
        netns: event.netns,
        proto,
        family,
        local_addr: event.addr,
        local_port: event.port,
        inode: event.inode,
        uid: event.uid,
        user,
        exposure: Exposure::of(event.addr),
        dual_stack: is_dual_stack(event.addr, event.v6only),
        processes: vec![process],
        firewall: None,
    })
}

impl Tracked {
    /// Takes a full scan's listeners as the truth. Returns how the table
    /// differed from them, leaving out the listeners in `touched` (events
    /// that came while the scan ran may be in it or not).
    pub fn reset(&mut self, scanned: &[Listener], touched: &HashSet<Key>) -> Disagreement {
        let now: BTreeMap<Key, &Listener> = scanned.iter().map(|l| ((l.netns, l.inode), l)).collect();
        let differs = |k: &&Key| !touched.contains(*k);
        let missed_opens = now
            .keys()
            .filter(|k| !self.listeners.contains_key(*k))
            .filter(differs)
            .count();
        let missed_closes = self
            .listeners
            .keys()
            .filter(|k| !now.contains_key(*k))
            .filter(differs)
            .count();
        self.listeners = now.into_iter().map(|(k, l)| (k, l.clone())).collect();
        self.udp_fds.retain(|_, key| self.listeners.contains_key(key));
        self.suspects.retain(|s| self.listeners.contains_key(&s.key));
        Disagreement {
            missed_opens,
            missed_closes,
        }
    }

    /// Applies one event; `open` makes the listener of an open event (see
    /// [`listener`]) and is called only for a socket not yet in the table.
    /// Returns how the table changed (a report is due unless empty).
    pub fn apply(&mut self, event: &Event, open: impl FnOnce(&Event) -> Option<Listener>) -> Delta {
        let key = (event.netns, event.inode);
        match event.kind {
            Kind::TcpListen | Kind::UdpBind => {
                if event.kind == Kind::UdpBind {
                    self.udp_fds.insert((event.tgid, event.fd), key);
                }
                if self.listeners.contains_key(&key) {
                    return Delta::default();
                }
                match open(event) {
                    Some(l) => {
                        let opened = Arc::new(l.clone());
                        self.listeners.insert(key, l);
                        Delta {
                            opened: vec![opened],
                            closed: Vec::new(),
                        }
                    }
                    None => Delta::default(),
                }
            }
            Kind::TcpUnlisten => {
                if let Some(l) = self.listeners.remove(&key) {
                    return closed(l);
                }
                // A socket without a file by now: find it by its address.
                let found = self
                    .listeners
                    .iter()
                    .find(|(k, l)| {
                        k.0 == event.netns
                            && l.proto == Proto::Tcp
                            && l.local_port == event.port
                            && l.local_addr == event.addr
                    })
                    .map(|(k, _)| *k);
                found
                    .and_then(|k| self.listeners.remove(&k))
                    .map_or_else(Delta::default, closed)
            }
            // A connection's: the peers' book takes it (see `peers::book`).
            Kind::TcpAccepted | Kind::TcpEnded => Delta::default(),
            Kind::UdpCloseHint => {
                if let Some(key) = self.udp_fds.remove(&(event.tgid, event.fd)) {
                    self.suspect(key, event.ktime_ns);
                }
                Delta::default()
            }
            Kind::ExitHint => {
                let keys: Vec<Key> = self
                    .udp_fds
                    .iter()
                    .filter(|((tgid, _), _)| *tgid == event.tgid)
                    .map(|(_, k)| *k)
                    .collect();
                self.udp_fds.retain(|(tgid, _), _| *tgid != event.tgid);
                for key in keys {
                    self.suspect(key, event.ktime_ns);
                }
                Delta::default()
            }
        }
    }

    fn suspect(&mut self, key: Key, ktime_ns: u64) {
        if self.listeners.contains_key(&key) && !self.suspects.iter().any(|s| s.key == key) {
            self.suspects.push(Suspect { key, ktime_ns });
        }
    }

    /// Whether some release waits to be confirmed.
    pub fn has_suspects(&self) -> bool {
        !self.suspects.is_empty()
    }

    /// Closes the suspects not `present` (in a socket dump taken after
    /// the hints), returning the time of each close's hint, oldest first;
    /// the others stay open.
    pub fn confirm(&mut self, present: impl Fn(&Key) -> bool) -> Vec<(Key, u64)> {
        let mut closed: Vec<(Key, u64)> = Vec::new();
        for s in std::mem::take(&mut self.suspects) {
            if !present(&s.key) && self.listeners.remove(&s.key).is_some() {
                closed.push((s.key, s.ktime_ns));
            }
        }
        closed.sort_by_key(|&(_, t)| t);
        closed
    }

    /// Removes one listener (a confirmed release); whether it was there.
    pub fn close(&mut self, key: Key) -> bool {
        self.listeners.remove(&key).is_some()
    }

    /// The table as a snapshot, for the observer to diff.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::new(self.listeners.values().cloned().collect())
    }

    /// Its listeners, by (network namespace, inode).
    pub fn listeners(&self) -> impl Iterator<Item = &Listener> {
        self.listeners.values()
    }

    /// Changes each listener with `f` (what is not part of the event: the
    /// firewall's answer, read again).
    pub fn update(&mut self, mut f: impl FnMut(&mut Listener)) {
        self.listeners.values_mut().for_each(&mut f);
    }

    /// How many listeners it holds.
    pub fn len(&self) -> usize {
        self.listeners.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse::{parse, tests::record};
    use super::*;

    fn event(kind: u8, inode: u64, tgid: u32) -> Event {
        let family = if kind >= 4 { 0 } else { 2 };
        parse(&record(kind, family, &[0, 0, 0, 0], 5353, inode, tgid, "svc")).unwrap()
    }

    fn open(e: &Event) -> Option<Listener> {
        listener(e, None, None)
    }

    #[test]
    fn a_tcp_listener_opens_with_the_events_task_and_closes() {
        let mut t = Tracked::default();
        assert!(!t.apply(&event(1, 10, 77), open).is_empty());
        let snap = t.snapshot();
        let l = &snap.listeners()[0];
        assert_eq!(
            (l.proto, l.local_port, l.inode, l.exposure),
            (Proto::Tcp, 5353, 10, Exposure::Wildcard)
        );
        assert_eq!((l.processes[0].pid, &*l.processes[0].name), (77, "svc"));
        assert!(t
            .apply(&event(1, 10, 77), |_| panic!("already open: no new listener"))
            .is_empty());
        assert!(!t.apply(&event(2, 10, 77), open).is_empty());
        assert!(t.is_empty());
        assert!(
            t.apply(&event(2, 10, 77), open).is_empty(),
            "closing what is not open changes nothing"
        );
    }

    #[test]
    fn a_udp_release_is_closed_only_once_a_dump_confirms_it() {
        let mut t = Tracked::default();
        assert!(!t.apply(&event(3, 20, 5), open).is_empty());
        assert!(!t.apply(&event(3, 21, 6), open).is_empty());
        // fd 7 of process 5 closed; process 6 exited.
        assert!(t.apply(&event(4, 0, 5), open).is_empty());
        assert!(t.apply(&event(5, 0, 6), open).is_empty());
        assert!(t.has_suspects());
        let key20 = (4_026_531_840, 20);
        let key21 = (4_026_531_840, 21);
        // Still there in the dump (a child holds 21): only 20 closes, at the hint's time.
        let closed = t.confirm(|k| *k == key21);
        assert_eq!(closed, vec![(key20, 1_000_000_123)]);
        assert_eq!(t.len(), 1);
        assert!(!t.has_suspects());
    }

    #[test]
    fn a_full_scan_counts_what_events_missed_except_what_changed_meanwhile() {
        let mut t = Tracked::default();
        t.apply(&event(1, 1, 1), open);
        t.apply(&event(1, 2, 1), open);
        let scanned: Vec<Listener> = [2, 3, 4].iter().map(|&i| open(&event(1, i, 1)).unwrap()).collect();
        // 1 was closed unseen, 3 and 4 opened unseen; 4 had an event during the scan.
        let d = t.reset(&scanned, &HashSet::from([(4_026_531_840, 4)]));
        assert_eq!(
            d,
            Disagreement {
                missed_opens: 1,
                missed_closes: 1
            }
        );
        assert_eq!(t.len(), 3);
        assert_eq!(t.reset(&scanned, &HashSet::new()).total(), 0);
    }
}
