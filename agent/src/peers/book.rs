//! The inbound connections of a host as kernel events tell them, so that
//! the daemon counts its listeners' peers without a socket dump every
//! interval.
//!
//! The kernel program tells each connection a listener accepted (SYN_RECV
//! to ESTABLISHED) and each that leaves ESTABLISHED, on the ports of its
//! table (see `events::PeerPorts`). The book keeps the set of connections
//! those events leave open, by network namespace; [`Book::count`] makes the
//! same summaries as a dump would, from memory. A dump of the established
//! connections (at start, at each full scan, and when connection events
//! were lost) is the truth: [`Book::reset`] takes it, and from then on
//! ignores events dated before the dump began, whose effect the dump
//! already shows (an event read after a dump may be older than it: the
//! reader thread and the dump do not wait for each other). Events dated
//! during the dump are applied: adding a connection the dump found, or
//! removing one it did not, changes nothing. How far the book was from the
//! dump is told by [`Book::settle`], once every event dated before the
//! dump ended has been read: a connection accepted or ended while the
//! kernel was dumping, or just before with its event read after, is in the
//! dump or not, and is no miss of the events when they tell it.
//!
//! Pure: the dump and the events are given to it.

use std::net::IpAddr;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use super::{Aggregator, Listeners, NamespacePeers, Peers};

/// One connection, as its local end sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Connection {
    /// Local address (IPv4-mapped on an IPv6 socket that speaks IPv4).
    pub local_addr: IpAddr,
    /// Local port.
    pub local_port: u16,
    /// Remote address.
    pub remote_addr: IpAddr,
    /// Remote port.
    pub remote_port: u16,
}

/// How a dump differed from the book.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drift {
    /// Connections the dump found that events had not told.
    pub missed_accepts: usize,
    /// Connections the book held that the dump did not find.
    pub missed_ends: usize,
}

impl Drift {
    /// Both together.
    pub fn total(&self) -> usize {
        self.missed_accepts + self.missed_ends
    }
}

/// The open inbound connections, by network namespace.
#[derive(Debug, Default)]
pub struct Book {
    by_netns: HashMap<u64, HashSet<Connection>>,
    /// Namespaces whose last dump failed, and why: not counted until one
    /// succeeds (what was open there before is not known).
    not_counted: HashMap<u64, String>,
    /// CLOCK_MONOTONIC nanoseconds the last dump began at: older events are
    /// in it.
    dumped_at_ns: u64,
    /// And the time it ended: once events up to it are read, what differs
    /// is a miss.
    dump_ended_ns: u64,
    /// Whether a dump was ever taken: before it, nothing is counted.
    dumped: bool,
    /// What the last dumps found that the book did not hold, and the
    /// reverse, less what events dated since have told.
    unsettled_accepts: HashSet<(u64, Connection)>,
    unsettled_ends: HashSet<(u64, Connection)>,
    /// A dump was taken that [`Book::settle`] has not told of.
    unsettled: bool,
}

impl Book {
    /// Takes a dump made from `began_ns` to `ended_ns` as the truth: `dumps`
    /// holds the connections of each namespace dumped, or why it could not
    /// be. Namespaces not in `dumps` are forgotten. How the book differed
    /// from the dump, in the namespaces counted before, is for
    /// [`Book::settle`]; a dump taken before the last one was settled (see
    /// [`Book::settling`]) replaces it, and what that one differed by is not
    /// told.
    ///
    /// A dump holds the connections of the ports listened on (`listeners`,
    /// what it was made for) only: those the book held on another port, a
    /// listener's since closed, are dropped and are no miss.
    pub fn reset(
        &mut self,
        (began_ns, ended_ns): (u64, u64),
        listeners: &Listeners,
        dumps: Vec<(u64, Result<HashSet<Connection>, String>)>,
    ) {
        self.unsettled_accepts.clear();
        self.unsettled_ends.clear();
        let mut by_netns = HashMap::default();
        let mut not_counted = HashMap::default();
        for (netns, dump) in dumps {
            match dump {
                Ok(now) => {
                    let empty = HashSet::default();
                    let before = match self.counted(netns) {
                        true => self.by_netns.get(&netns).unwrap_or(&empty),
                        false => &empty,
                    };
                    if self.counted(netns) {
                        let dumped_port = |c: &&Connection| {
                            listeners
                                .in_namespace(netns)
                                .is_some_and(|ns| ns.by_port.contains_key(&c.local_port))
                        };
                        self.unsettled_accepts
                            .extend(now.difference(before).map(|c| (netns, *c)));
                        self.unsettled_ends
                            .extend(before.difference(&now).filter(dumped_port).map(|c| (netns, *c)));
                    }
                    by_netns.insert(netns, now);
                }
                Err(reason) => {
                    not_counted.insert(netns, reason);
                }
            }
        }
        self.by_netns = by_netns;
        self.not_counted = not_counted;
        self.dumped_at_ns = began_ns;
        self.dump_ended_ns = ended_ns;
        self.dumped = true;
        self.unsettled = true;
    }

    /// Whether the last dump is still to be settled: events of its time may
    /// still come.
    pub fn settling(&self) -> bool {
        self.unsettled
    }

    /// How the last dump differed from the book, less the
    /// connections that events told of, once every event dated before
    /// `told_until_ns` has been given (the reader drained the ring buffer
    /// from then on); `None` while events of the last dump's time may still
    /// come, and once told, until the next dump.
    pub fn settle(&mut self, told_until_ns: u64) -> Option<Drift> {
        if !self.unsettled || told_until_ns < self.dump_ended_ns {
            return None;
        }
        self.unsettled = false;
        Some(Drift {
            missed_accepts: std::mem::take(&mut self.unsettled_accepts).len(),
            missed_ends: std::mem::take(&mut self.unsettled_ends).len(),
        })
    }

    fn counted(&self, netns: u64) -> bool {
        self.dumped && !self.not_counted.contains_key(&netns)
    }

    /// A listener accepted `connection` at `ktime_ns`.
    pub fn accepted(&mut self, netns: u64, connection: Connection, ktime_ns: u64) {
        // Told, if late: no miss, whenever it happened.
        self.unsettled_accepts.remove(&(netns, connection));
        if ktime_ns >= self.dumped_at_ns {
            self.by_netns.entry(netns).or_default().insert(connection);
        }
    }

    /// `connection` left ESTABLISHED at `ktime_ns`.
    pub fn ended(&mut self, netns: u64, connection: &Connection, ktime_ns: u64) {
        self.unsettled_ends.remove(&(netns, *connection));
        if ktime_ns < self.dumped_at_ns {
            return;
        }
        if let Some(set) = self.by_netns.get_mut(&netns) {
            set.remove(connection);
            if set.is_empty() {
                self.by_netns.remove(&netns);
            }
        }
    }

    /// How many connections the book holds.
    pub fn len(&self) -> usize {
        self.by_netns.values().map(HashSet::len).sum()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.by_netns.values().all(HashSet::is_empty)
    }

    /// The summaries of every namespace of `listeners`, naming at most
    /// `top` remotes per listener, as [`super::count`] would make them from
    /// a dump. A namespace whose last dump failed, or none was taken, is in
    /// [`Peers::not_counted`].
    pub fn count(&self, listeners: &Listeners, top: usize) -> Peers {
        let mut peers = Peers::default();
        for netns in listeners.namespaces() {
            if let Some(reason) = self.not_counted.get(&netns) {
                peers.not_counted.push((netns, reason.clone()));
                continue;
            }
            if !self.dumped {
                peers
                    .not_counted
                    .push((netns, "its connections were not dumped yet".to_owned()));
                continue;
            }
            let Some(ns) = listeners.in_namespace(netns) else {
                continue;
            };
            let mut aggregator = Aggregator::new(ns);
            for c in self.by_netns.get(&netns).into_iter().flatten() {
                aggregator.add(c.local_addr, c.local_port, c.remote_addr);
            }
            let summaries: NamespacePeers = aggregator.finish(top);
            peers.by_netns.insert(netns, summaries);
        }
        peers.not_counted.sort();
        peers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::DEFAULT_TOP;
    use portwatch_common::{Family, Listener, Proto};

    const NS: u64 = 4_026_531_840;

    fn conn(local: &str, port: u16, remote: &str, remote_port: u16) -> Connection {
        Connection {
            local_addr: local.parse().unwrap(),
            local_port: port,
            remote_addr: remote.parse().unwrap(),
            remote_port,
        }
    }

    fn tcp_listener(addr: &str, port: u16) -> Listener {
        let local_addr: IpAddr = addr.parse().unwrap();
        Listener {
            netns: NS,
            proto: Proto::Tcp,
            family: if local_addr.is_ipv4() {
                Family::Ipv4
            } else {
                Family::Ipv6
            },
            local_addr,
            local_port: port,
            inode: 1,
            uid: 0,
            user: None,
            exposure: portwatch_common::Exposure::of(local_addr),
            dual_stack: false,
            processes: Vec::new(),
            firewall: None,
        }
    }

    fn listeners() -> Listeners {
        Listeners::of_listeners(&[tcp_listener("0.0.0.0", 5432)])
    }

    fn connections_of(book: &Book) -> u64 {
        let peers = book.count(&listeners(), DEFAULT_TOP);
        assert!(peers.not_counted.is_empty(), "{:?}", peers.not_counted);
        peers.by_netns[&NS].listeners[&("0.0.0.0".parse().unwrap(), 5432)].connections
    }

    fn dump(conns: &[Connection]) -> Vec<(u64, Result<HashSet<Connection>, String>)> {
        vec![(NS, Ok(conns.iter().copied().collect()))]
    }

    #[test]
    fn accepts_and_ends_after_the_dump_keep_the_count_and_the_remotes() {
        let mut book = Book::default();
        let a = conn("10.0.0.1", 5432, "10.0.0.7", 40000);
        let b = conn("10.0.0.1", 5432, "10.0.0.7", 40001);
        let c = conn("10.0.0.1", 5432, "192.0.2.9", 40002);
        book.reset((100, 100), &listeners(), dump(&[a]));
        book.accepted(NS, b, 200);
        book.accepted(NS, c, 201);
        assert_eq!(connections_of(&book), 3);
        book.ended(NS, &a, 300);
        let peers = book.count(&listeners(), DEFAULT_TOP);
        let s = &peers.by_netns[&NS].listeners[&("0.0.0.0".parse().unwrap(), 5432)];
        assert_eq!((s.connections, s.distinct_remotes), (2, 2));
        assert_eq!((s.classes.private, s.classes.public), (1, 1));
        assert_eq!(book.len(), 2);
    }

    #[test]
    fn the_book_counts_what_a_dump_aggregated_would() {
        let conns = [
            conn("127.0.0.1", 5432, "127.0.0.1", 1),
            conn("10.0.0.1", 5432, "10.0.0.2", 2),
            conn("10.0.0.1", 5432, "10.0.0.2", 3),
            conn("10.0.0.1", 9999, "10.0.0.2", 4),
        ];
        let mut book = Book::default();
        book.reset((0, 0), &listeners(), dump(&[]));
        for (i, c) in conns.iter().enumerate() {
            book.accepted(NS, *c, i as u64);
        }
        let index = listeners();
        let mut direct = Aggregator::new(index.in_namespace(NS).unwrap());
        for c in &conns {
            direct.add(c.local_addr, c.local_port, c.remote_addr);
        }
        assert_eq!(
            book.count(&index, DEFAULT_TOP).by_netns[&NS],
            direct.finish(DEFAULT_TOP)
        );
    }

    #[test]
    fn events_older_than_the_dump_are_already_in_it_and_ignored() {
        let mut book = Book::default();
        let old = conn("10.0.0.1", 5432, "10.0.0.7", 40000);
        let kept = conn("10.0.0.1", 5432, "10.0.0.8", 40000);
        book.reset((1_000, 1_000), &listeners(), dump(&[kept]));
        // Read after the dump, dated before it: `old` was accepted and ended
        // before the dump (its end event was lost, or is still to come), and
        // `kept` ended and came back (a new connection of the same ends).
        book.accepted(NS, old, 900);
        book.ended(NS, &kept, 950);
        assert_eq!(connections_of(&book), 1);
        // Dated during or after the dump: applied.
        book.ended(NS, &kept, 1_000);
        assert_eq!(connections_of(&book), 0);
    }

    #[test]
    fn a_dump_says_what_events_missed_both_ways() {
        let mut book = Book::default();
        let (a, b, c) = (
            conn("10.0.0.1", 5432, "10.0.0.7", 1),
            conn("10.0.0.1", 5432, "10.0.0.7", 2),
            conn("10.0.0.1", 5432, "10.0.0.7", 3),
        );
        // The first dump has nothing to differ from.
        book.reset((0, 0), &listeners(), dump(&[a, b]));
        assert_eq!(book.settle(u64::MAX).unwrap().total(), 0);
        // b's end and c's accept were never told.
        book.reset((10, 10), &listeners(), dump(&[a, c]));
        assert_eq!(book.settle(9), None, "events of the dump's time may still come");
        assert_eq!(
            book.settle(10).unwrap(),
            Drift {
                missed_accepts: 1,
                missed_ends: 1
            }
        );
        assert_eq!(connections_of(&book), 2);
        assert_eq!(book.settle(u64::MAX), None, "said once");
    }

    #[test]
    fn connections_that_came_and_went_while_the_kernel_dumped_are_no_miss() {
        let mut book = Book::default();
        let (a, b, c) = (
            conn("10.0.0.1", 5432, "10.0.0.7", 1),
            conn("10.0.0.1", 5432, "10.0.0.7", 2),
            conn("10.0.0.1", 5432, "10.0.0.7", 3),
        );
        book.reset((0, 0), &listeners(), dump(&[a, b]));
        // During the next dump (begun at 10), c was accepted and b ended: the
        // dump saw both, and their events come after it.
        book.reset((10, 20), &listeners(), dump(&[a, c]));
        book.accepted(NS, c, 12);
        book.ended(NS, &b, 13);
        assert_eq!(book.settle(20), Some(Drift::default()));
        assert_eq!(connections_of(&book), 2);
        // Just before the dump, read after it: no miss either, and no change.
        let d = conn("10.0.0.1", 5432, "10.0.0.7", 4);
        book.reset((30, 40), &listeners(), dump(&[c, d]));
        book.accepted(NS, d, 29);
        book.ended(NS, &a, 28);
        assert_eq!(book.settle(40), Some(Drift::default()));
        assert_eq!(connections_of(&book), 2, "the dump's: c and d");
    }

    #[test]
    fn connections_of_a_listener_since_closed_are_dropped_by_the_dump_and_no_miss() {
        let mut book = Book::default();
        book.reset((0, 0), &listeners(), dump(&[]));
        let gone = conn("10.0.0.1", 8080, "10.0.0.7", 1);
        book.accepted(NS, gone, 5);
        // 8080 no longer listened on: the dump, made for 5432, cannot see it.
        book.reset((10, 10), &listeners(), dump(&[]));
        assert_eq!(book.settle(10), Some(Drift::default()));
        assert!(book.is_empty());
    }

    #[test]
    fn a_namespace_not_dumped_is_not_counted_and_never_a_silent_zero() {
        let mut book = Book::default();
        let peers = book.count(&listeners(), DEFAULT_TOP);
        assert_eq!(peers.not_counted.len(), 1, "before any dump");
        book.reset((0, 0), &listeners(), vec![(NS, Err("cannot enter it".to_owned()))]);
        book.accepted(NS, conn("10.0.0.1", 5432, "10.0.0.7", 1), 5);
        let peers = book.count(&listeners(), DEFAULT_TOP);
        assert_eq!(peers.not_counted, vec![(NS, "cannot enter it".to_owned())]);
        assert!(peers.by_netns.is_empty());
        // Nor does a failed namespace count as a difference at the next dump.
        book.reset((10, 10), &listeners(), dump(&[conn("10.0.0.1", 5432, "10.0.0.7", 1)]));
        assert_eq!(book.settle(u64::MAX).unwrap().total(), 0);
        assert_eq!(connections_of(&book), 1);
    }

    #[test]
    fn a_namespace_born_after_the_dump_is_counted_from_its_events() {
        let mut book = Book::default();
        book.reset((0, 0), &listeners(), Vec::new());
        book.accepted(NS, conn("10.0.0.1", 5432, "10.0.0.7", 1), 5);
        assert_eq!(connections_of(&book), 1);
    }
}
