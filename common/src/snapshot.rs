//! What history records of a host: its listeners, and how two observations
//! of them differ.
//!
//! A [`Listener`] is one listening socket with the processes holding it. Its
//! identity is the whole value: the same socket (inode) with another set of
//! owners is another listener, so an owner change is recorded as the old
//! listener closing and the new one opening at the same moment, and a
//! restarted service (new socket, new inode) as a close and an open.

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{Exposure, Family, Firewall, Process, Proto, Socket, State};

/// One listening socket (TCP LISTEN or bound unconnected UDP) and its owners,
/// as the agent ships it and the collector stores it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Listener {
    /// Network namespace inode.
    pub netns: u64,
    /// Transport protocol.
    pub proto: Proto,
    /// Address family.
    pub family: Family,
    /// Local address.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "0.0.0.0"))]
    pub local_addr: IpAddr,
    /// Local port.
    pub local_port: u16,
    /// Socket inode: tells a restarted service's new socket from the old one.
    pub inode: u64,
    /// Uid that created the socket.
    pub uid: u32,
    /// User name for `uid`, when known.
    pub user: Option<Arc<str>>,
    /// Who can reach it.
    pub exposure: Exposure,
    /// IPv6 wildcard that also accepts IPv4.
    pub dual_stack: bool,
    /// Every process holding it, ascending by pid.
    pub processes: Vec<Process>,
    /// What the host's firewall does with new inbound connections to it;
    /// `None` where it was not evaluated (loopback, an agent told not to,
    /// an agent older than the field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall: Option<Firewall>,
}

/// The kernel socket a listener is: its network namespace and inode. An
/// owner change keeps it (the same socket, other processes); a restarted
/// service makes a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketKey {
    /// Network namespace inode.
    pub netns: u64,
    /// Socket inode.
    pub inode: u64,
}

/// Where a listener listens: namespace, protocol, family, address and port.
/// What a diff of two moments pairs, and what a finding about a listener
/// names (a restarted service listens at the same place on a new socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Place {
    /// Network namespace inode.
    pub netns: u64,
    /// Transport protocol.
    pub proto: Proto,
    /// Address family.
    pub family: Family,
    /// Local address.
    pub local_addr: IpAddr,
    /// Local port.
    pub local_port: u16,
}

impl Listener {
    /// The kernel socket it is (see [`SocketKey`]).
    pub fn socket_key(&self) -> SocketKey {
        SocketKey {
            netns: self.netns,
            inode: self.inode,
        }
    }

    /// Where it listens (see [`Place`]).
    pub fn place(&self) -> Place {
        Place {
            netns: self.netns,
            proto: self.proto,
            family: self.family,
            local_addr: self.local_addr,
            local_port: self.local_port,
        }
    }

    /// Every field, by name: the identity of an interval of history. Two
    /// observations are the same interval exactly when every field is equal
    /// (`Listener`'s `Eq`), so a change of any field (owners, user, exposure)
    /// is one close and one open. This destructuring lists every field
    /// without `..`: a field added to `Listener` fails to compile here until
    /// it is added, which is the moment to decide whether a change of it is
    /// a change of the listener (it belongs in `Listener`, and in every
    /// store's interval key, which destructure the same way) or a passing
    /// measurement (it belongs beside the listener, not in it).
    pub fn identity_fields(&self) -> IdentityFields<'_> {
        let Listener {
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
        } = self;
        IdentityFields {
            netns: *netns,
            proto: *proto,
            family: *family,
            local_addr: *local_addr,
            local_port: *local_port,
            inode: *inode,
            uid: *uid,
            user: user.as_ref(),
            exposure: *exposure,
            dual_stack: *dual_stack,
            processes,
            firewall: firewall.as_ref(),
        }
    }

    /// Short protocol label as netstat prints it (`tcp46`, ...).
    pub fn proto_label(&self) -> &'static str {
        crate::socket::proto_label(self.proto, self.family, self.dual_stack)
    }

    /// The listener a scanned socket stands for; `None` for sockets that are
    /// not listening (established connections, time-wait: `scan --all`).
    pub fn from_socket(socket: &Socket) -> Option<Listener> {
        if !matches!(socket.state, State::Listen | State::Unconn) {
            return None;
        }
        let mut processes: Vec<Process> = socket.processes.iter().map(|p| Process::clone(p)).collect();
        processes.sort();
        processes.dedup();
        Some(Listener {
            netns: socket.netns,
            proto: socket.proto,
            family: socket.family,
            local_addr: socket.local_addr,
            local_port: socket.local_port,
            inode: socket.inode,
            uid: socket.uid,
            user: socket.user.clone(),
            exposure: socket.exposure,
            dual_stack: socket.dual_stack,
            processes,
            firewall: None,
        })
    }
}

/// A listener's fields, borrowed, as [`Listener::identity_fields`] lists
/// them: what a store encodes as an interval's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityFields<'a> {
    /// Network namespace inode.
    pub netns: u64,
    /// Transport protocol.
    pub proto: Proto,
    /// Address family.
    pub family: Family,
    /// Local address.
    pub local_addr: IpAddr,
    /// Local port.
    pub local_port: u16,
    /// Socket inode.
    pub inode: u64,
    /// Uid that created the socket.
    pub uid: u32,
    /// User name for `uid`.
    pub user: Option<&'a Arc<str>>,
    /// Who can reach it.
    pub exposure: Exposure,
    /// IPv6 wildcard that also accepts IPv4.
    pub dual_stack: bool,
    /// Every process holding it, ascending by pid.
    pub processes: &'a [Process],
    /// The firewall's answer.
    pub firewall: Option<&'a Firewall>,
}

/// Every listener of a host at one moment, sorted and without repeats.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    listeners: Vec<Listener>,
}

impl Snapshot {
    /// A snapshot of `listeners`, in any order, repeats dropped.
    pub fn new(mut listeners: Vec<Listener>) -> Snapshot {
        listeners.sort();
        listeners.dedup();
        Snapshot { listeners }
    }

    /// The listeners among a scan's sockets.
    pub fn from_sockets<'a>(sockets: impl IntoIterator<Item = &'a Socket>) -> Snapshot {
        Snapshot::new(sockets.into_iter().filter_map(Listener::from_socket).collect())
    }

    /// The listeners, sorted.
    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// The listeners, sorted, by value.
    pub fn into_listeners(self) -> Vec<Listener> {
        self.listeners
    }

    /// Applies what changed: removes what is held of the sockets of the
    /// `closed` listeners (by place and socket inode, whatever else they
    /// say: owners, user, firewall) and inserts the `opened` listeners not
    /// held, keeping the order, at a cost of the change's size (a search and
    /// a move each), not of the snapshot's as [`Snapshot::diff`] is. Returns
    /// the change as it applied: what was removed, as it was held, and what
    /// was inserted ([`Snapshot::diff`] of the two snapshots, where the
    /// opened sockets were not held before).
    pub fn apply(&mut self, delta: Delta) -> Delta {
        let socket = |l: &Listener| (l.netns, l.proto, l.family, l.local_addr, l.local_port, l.inode);
        let mut applied = Delta::default();
        for l in &delta.closed {
            // Sorted by these fields first: the socket's listeners are one run.
            let key = socket(l);
            let start = self.listeners.partition_point(|x| socket(x) < key);
            let end = start + self.listeners[start..].iter().take_while(|x| socket(x) == key).count();
            applied.closed.extend(self.listeners.drain(start..end).map(Arc::new));
        }
        for l in delta.opened {
            if let Err(at) = self.listeners.binary_search(&l) {
                self.listeners.insert(at, Listener::clone(&l));
                applied.opened.push(l);
            }
        }
        applied
    }

    /// What changed from `self` (earlier) to `later`: one merge walk over
    /// the two sorted lists.
    pub fn diff(&self, later: &Snapshot) -> Delta {
        use std::cmp::Ordering;
        let (before, after) = (&self.listeners, &later.listeners);
        let (mut i, mut j) = (0, 0);
        let mut delta = Delta::default();
        while i < before.len() || j < after.len() {
            let order = match (before.get(i), after.get(j)) {
                (Some(x), Some(y)) => x.cmp(y),
                (Some(_), None) => Ordering::Less,
                _ => Ordering::Greater,
            };
            match order {
                Ordering::Equal => {
                    i += 1;
                    j += 1;
                }
                Ordering::Less => {
                    delta.closed.push(Arc::new(before[i].clone()));
                    i += 1;
                }
                Ordering::Greater => {
                    delta.opened.push(Arc::new(after[j].clone()));
                    j += 1;
                }
            }
        }
        delta
    }
}

/// The listeners that opened and closed between two snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// Present in the later snapshot only.
    pub opened: Vec<Arc<Listener>>,
    /// Present in the earlier snapshot only.
    pub closed: Vec<Arc<Listener>>,
}

impl Delta {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.opened.is_empty() && self.closed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(port: u16, inode: u64, pids: &[u32]) -> Listener {
        Listener {
            netns: 1,
            proto: Proto::Tcp,
            family: Family::Ipv4,
            local_addr: "0.0.0.0".parse().unwrap(),
            local_port: port,
            inode,
            uid: 0,
            user: None,
            exposure: Exposure::Wildcard,
            dual_stack: false,
            processes: pids
                .iter()
                .map(|&pid| Process {
                    pid,
                    name: "srv".into(),
                    cmdline: None,
                    exe: None,
                    uid: Some(0),
                    user: None,
                    container: None,
                    unit: None,
                })
                .collect(),
            firewall: None,
        }
    }

    fn ports(v: &[Arc<Listener>]) -> Vec<u16> {
        v.iter().map(|l| l.local_port).collect()
    }

    #[test]
    fn applying_a_diff_gives_the_later_snapshot_and_what_is_not_there_is_left_out() {
        let before = Snapshot::new(vec![
            listener(22, 1, &[10]),
            listener(80, 2, &[11]),
            listener(25, 3, &[12]),
        ]);
        let after = Snapshot::new(vec![
            listener(443, 4, &[13]),
            listener(22, 1, &[10]),
            listener(80, 2, &[14]),
        ]);
        let mut s = before.clone();
        let applied = s.apply(before.diff(&after));
        assert_eq!(s, after);
        assert_eq!(applied, before.diff(&after));
        // A socket not held closes nothing; one held already is not opened again.
        let again = s.apply(Delta {
            opened: vec![Arc::new(listener(443, 4, &[13]))],
            closed: vec![Arc::new(listener(25, 3, &[12]))],
        });
        assert!(again.is_empty(), "{again:?}");
        assert_eq!(s, after);
    }

    #[test]
    fn a_socket_closes_whatever_its_owners_were_said_to_be() {
        let mut s = Snapshot::new(vec![listener(22, 1, &[10]), listener(80, 2, &[11])]);
        // Closed as the events' table has it: its owner gone, no process.
        let applied = s.apply(Delta {
            opened: Vec::new(),
            closed: vec![Arc::new(listener(80, 2, &[]))],
        });
        assert_eq!(s, Snapshot::new(vec![listener(22, 1, &[10])]));
        assert_eq!(applied.closed, vec![Arc::new(listener(80, 2, &[11]))], "as it was held");
    }

    #[test]
    fn identical_snapshots_differ_in_nothing() {
        let s = Snapshot::new(vec![listener(22, 1, &[10]), listener(80, 2, &[11])]);
        assert!(s.diff(&s.clone()).is_empty());
    }

    #[test]
    fn opened_and_closed_listeners_are_found_in_any_input_order() {
        let before = Snapshot::new(vec![
            listener(80, 2, &[11]),
            listener(22, 1, &[10]),
            listener(25, 3, &[12]),
        ]);
        let after = Snapshot::new(vec![
            listener(443, 4, &[13]),
            listener(22, 1, &[10]),
            listener(8080, 5, &[14]),
        ]);
        let d = before.diff(&after);
        assert_eq!(ports(&d.opened), vec![443, 8080]);
        assert_eq!(ports(&d.closed), vec![25, 80]);
        let back = after.diff(&before);
        assert_eq!(ports(&back.opened), ports(&d.closed));
    }

    #[test]
    fn a_restart_on_the_same_port_is_a_close_and_an_open() {
        let before = Snapshot::new(vec![listener(80, 2, &[11])]);
        let after = Snapshot::new(vec![listener(80, 9, &[30])]);
        let d = before.diff(&after);
        assert_eq!((ports(&d.opened), ports(&d.closed)), (vec![80], vec![80]));
    }

    #[test]
    fn a_new_owner_of_the_same_socket_is_a_change() {
        let before = Snapshot::new(vec![listener(80, 2, &[11])]);
        let after = Snapshot::new(vec![listener(80, 2, &[11, 12])]);
        let d = before.diff(&after);
        assert_eq!(d.opened[0].processes.len(), 2);
        assert_eq!(d.closed[0].processes.len(), 1);
    }

    #[test]
    fn only_listening_sockets_become_listeners() {
        let mut s = Socket {
            proto: Proto::Tcp,
            family: Family::Ipv4,
            local_addr: "127.0.0.1".parse().unwrap(),
            local_port: 5432,
            peer_addr: None,
            peer_port: None,
            state: State::Listen,
            inode: 7,
            uid: 0,
            user: Some("root".into()),
            netns: 1,
            exposure: Exposure::Loopback,
            dual_stack: false,
            processes: vec![Arc::new(listener(1, 1, &[9]).processes[0].clone())],
        };
        let l = Listener::from_socket(&s).unwrap();
        assert_eq!((l.local_port, l.inode, l.user.as_deref()), (5432, 7, Some("root")));
        assert_eq!(l.processes[0].pid, 9);
        s.state = State::Established;
        assert_eq!(Listener::from_socket(&s), None);
    }
}
