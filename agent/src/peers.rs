//! Inbound peers per listener: who is connected to each TCP listener, as a
//! summary (how many connections, how many distinct remote addresses, the
//! busiest of them, and how many connections come from loopback, private or
//! public addresses), never a row per connection.
//!
//! The aggregation is pure: [`Listeners`] indexes the TCP listeners of each
//! network namespace, an [`Aggregator`] takes one namespace's established
//! connections one at a time and attributes each to the listener that
//! accepted it, and [`Aggregator::finish`] makes the summaries. The I/O is
//! [`count`]: one sock_diag dump of the ESTABLISHED TCP sockets (IPv4 and
//! IPv6) per namespace that has a listener, filtered in the kernel to the
//! namespace's listening ports, aggregated while the kernel's replies are
//! read (no list of connections is ever made), and no owner lookup for these
//! sockets.
//!
//! **Attribution.** The kernel does not say which listener accepted an
//! established socket; it follows from the addresses, as the kernel chose
//! the listener: the same namespace, TCP, the same local port, and the
//! listener's address equal to the connection's local address, else a
//! wildcard one. A listener bound to the address beats a wildcard on the
//! same port (the kernel's lookup prefers the exact address). An IPv4
//! connection is an IPv4 listener's; one an IPv6 socket holds with
//! IPv4-mapped addresses (`::ffff:a.b.c.d`) was accepted by a dual-stack
//! `::` listener (or one bound to that mapped address); any other IPv6
//! connection by an IPv6 listener. Listeners sharing one address and port
//! (`SO_REUSEPORT`) share one summary, shown on each of them: which of them
//! accepted a connection is not reported by the kernel. A connection whose
//! local address and port match no listener is counted apart, as `other`:
//! one on a listening port but another address (a listener since closed),
//! and, where the kernel could not filter by port, outbound connections.
//!
//! **Classes** count connections by their remote address, IPv4-mapped IPv6
//! addresses taken as the IPv4 address they are (also in `top` and in the
//! distinct count, so a client reaching a v4 and a dual-stack listener is
//! one remote): `loopback` is 127.0.0.0/8 and ::1; `private` is what is not
//! routed on the internet but inside a site or a provider's network:
//! RFC 1918 (10/8, 172.16/12, 192.168/16), shared address space (CGNAT,
//! 100.64/10, RFC 6598), link-local (169.254/16, fe80::/10) and unique local
//! IPv6 (fc00::/7); `public` is every other address.
//!
//! **Memory** is one counter per distinct remote address of each listener,
//! kept while one namespace is read and dropped once it is summarized:
//! distinct remotes are counted exactly, with no bound (they are at most the
//! namespace's established connections).

use std::net::{IpAddr, Ipv4Addr};

use portwatch_common::{Proto, Socket, State};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use serde::Serialize;

use crate::scan::{self, Linux, Scanner};

pub mod book;
pub mod series;

/// How many remote addresses a summary names by default.
pub const DEFAULT_TOP: usize = 5;
/// The most remote addresses a summary may be asked to name.
pub const MAX_TOP: usize = portwatch_common::wire::MAX_PEER_TOP;

/// What kind of network a remote address is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// RFC 1918, 100.64/10, link-local, fc00::/7.
    Private,
    /// Anything else.
    Public,
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address it
/// is; any other address unchanged.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        IpAddr::V4(_) => addr,
    }
}

/// The class of a remote address (see the module docs).
pub fn classify(addr: IpAddr) -> Class {
    match canonical(addr) {
        IpAddr::V4(a) if a.is_loopback() => Class::Loopback,
        IpAddr::V4(a) if a.is_private() || a.is_link_local() || is_shared(a) => Class::Private,
        IpAddr::V6(a) if a.is_loopback() => Class::Loopback,
        IpAddr::V6(a) if a.is_unique_local() || a.is_unicast_link_local() => Class::Private,
        _ => Class::Public,
    }
}

/// 100.64.0.0/10, the shared address space of carrier-grade NAT (RFC 6598).
fn is_shared(a: Ipv4Addr) -> bool {
    let [first, second, ..] = a.octets();
    first == 100 && (second & 0xc0) == 64
}

pub use portwatch_common::peers::{Classes, PeerSummary, TopRemote};

/// The TCP listeners of one network namespace, indexed by port.
#[derive(Debug, Clone, Default)]
pub struct NamespaceListeners {
    /// Listener id -> its (address, port); equal ones (`SO_REUSEPORT`) share an id.
    keys: Vec<(IpAddr, u16)>,
    by_port: HashMap<u16, Port>,
}

/// The listeners of one port.
#[derive(Debug, Clone, Default)]
struct Port {
    /// Bound to one address (IPv4, IPv6, or IPv4-mapped IPv6, as bound).
    specific: Vec<(IpAddr, usize)>,
    /// On 0.0.0.0.
    any_v4: Option<usize>,
    /// On ::.
    any_v6: Option<usize>,
    /// Whether the :: listener also accepts IPv4 (`IPV6_V6ONLY` off).
    any_v6_dual: bool,
}

impl NamespaceListeners {
    /// Adds a listener on `addr`:`port`; `dual_stack` for a :: listener
    /// that also accepts IPv4.
    pub fn add(&mut self, addr: IpAddr, port: u16, dual_stack: bool) {
        let entry = self.by_port.entry(port).or_default();
        let known = if addr.is_unspecified() {
            match addr {
                IpAddr::V4(_) => entry.any_v4,
                IpAddr::V6(_) => entry.any_v6,
            }
        } else {
            entry.specific.iter().find(|(a, _)| *a == addr).map(|&(_, id)| id)
        };
        let id = known.unwrap_or_else(|| {
            self.keys.push((addr, port));
            self.keys.len() - 1
        });
        match addr {
            IpAddr::V4(_) if addr.is_unspecified() => entry.any_v4 = Some(id),
            IpAddr::V6(_) if addr.is_unspecified() => {
                entry.any_v6 = Some(id);
                entry.any_v6_dual |= dual_stack;
            }
            _ if known.is_none() => entry.specific.push((addr, id)),
            _ => {}
        }
    }

    /// The listener that accepted a connection to `local`:`port`, when one
    /// did (see the module docs).
    fn listener_of(&self, local: IpAddr, port: u16) -> Option<usize> {
        let p = self.by_port.get(&port)?;
        if let Some(&(_, id)) = p.specific.iter().find(|(a, _)| *a == local) {
            return Some(id);
        }
        match local {
            IpAddr::V4(_) => p.any_v4,
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => p.any_v6.filter(|_| p.any_v6_dual),
            IpAddr::V6(_) => p.any_v6,
        }
    }

    /// The ports listened on.
    pub fn ports(&self) -> Vec<u16> {
        self.by_port.keys().copied().collect()
    }

    /// How many listeners (address and port pairs) there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Attributes the established connections of one namespace to its
/// listeners, one connection at a time.
///
/// One map for the namespace, from (listener, remote address) to
/// connections, rather than one per listener: a listener with a few
/// connections costs no allocation of its own.
#[derive(Debug)]
pub struct Aggregator<'a> {
    listeners: &'a NamespaceListeners,
    connections: Vec<u64>,
    remotes: HashMap<(usize, IpAddr), u64>,
    other: u64,
}

impl<'a> Aggregator<'a> {
    /// An aggregator for the listeners of one namespace.
    pub fn new(listeners: &'a NamespaceListeners) -> Aggregator<'a> {
        Aggregator {
            listeners,
            connections: vec![0; listeners.len()],
            remotes: HashMap::default(),
            other: 0,
        }
    }

    /// Counts one established connection from `remote` to `local`:`local_port`.
    pub fn add(&mut self, local: IpAddr, local_port: u16, remote: IpAddr) {
        match self.listeners.listener_of(local, local_port) {
            Some(id) => {
                self.connections[id] += 1;
                *self.remotes.entry((id, canonical(remote))).or_default() += 1;
            }
            None => self.other += 1,
        }
    }

    /// The summary of every listener (those without a connection too),
    /// naming at most `top` remotes each.
    pub fn finish(self, top: usize) -> NamespacePeers {
        // By listener, then most connections first, then the lower address:
        // the same input always gives the same lists, whatever the map's order.
        let mut remotes: Vec<(usize, IpAddr, u64)> = self.remotes.into_iter().map(|((id, a), n)| (id, a, n)).collect();
        remotes.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.2.cmp(&a.2)).then(a.1.cmp(&b.1)));
        let mut summaries: Vec<PeerSummary> = self
            .connections
            .iter()
            .map(|&connections| PeerSummary {
                connections,
                ..PeerSummary::default()
            })
            .collect();
        for (id, addr, n) in remotes {
            let s = &mut summaries[id];
            s.distinct_remotes += 1;
            match classify(addr) {
                Class::Loopback => s.classes.loopback += n,
                Class::Private => s.classes.private += n,
                Class::Public => s.classes.public += n,
            }
            if s.top.len() < top {
                s.top.push(TopRemote { addr, connections: n });
            }
        }
        NamespacePeers {
            listeners: self.listeners.keys.iter().copied().zip(summaries).collect(),
            other: self.other,
        }
    }
}

/// The summaries of one namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespacePeers {
    /// By listener (address, port).
    pub listeners: HashMap<(IpAddr, u16), PeerSummary>,
    /// Established connections given to the aggregation and attributed to
    /// no listener (see the module docs).
    pub other: u64,
}

/// The TCP listeners of a host, by network namespace: what established
/// connections are attributed to.
#[derive(Debug, Clone, Default)]
pub struct Listeners {
    by_netns: HashMap<u64, NamespaceListeners>,
}

impl Listeners {
    /// The TCP listeners among `sockets` (every one the scan found, not only
    /// those shown: a specific listener hidden by a filter still takes its
    /// connections from a wildcard one).
    pub fn of(sockets: &[Socket]) -> Listeners {
        let mut by_netns: HashMap<u64, NamespaceListeners> = HashMap::default();
        for s in sockets.iter().filter(|s| is_tcp_listener(s)) {
            by_netns
                .entry(s.netns)
                .or_default()
                .add(s.local_addr, s.local_port, s.dual_stack);
        }
        Listeners { by_netns }
    }

    /// The TCP listeners among a snapshot's `listeners` (what the daemon
    /// knows of, by scan or by kernel events).
    pub fn of_listeners<'a>(listeners: impl IntoIterator<Item = &'a portwatch_common::Listener>) -> Listeners {
        let mut by_netns: HashMap<u64, NamespaceListeners> = HashMap::default();
        for l in listeners.into_iter().filter(|l| l.proto == Proto::Tcp) {
            by_netns
                .entry(l.netns)
                .or_default()
                .add(l.local_addr, l.local_port, l.dual_stack);
        }
        Listeners { by_netns }
    }

    /// Keeps only the namespaces that hold a TCP listener of `shown`.
    pub fn keep_namespaces_of(&mut self, shown: &[Socket]) {
        let wanted: HashSet<u64> = shown.iter().filter(|s| is_tcp_listener(s)).map(|s| s.netns).collect();
        self.by_netns.retain(|netns, _| wanted.contains(netns));
    }

    /// The namespaces indexed.
    pub fn namespaces(&self) -> HashSet<u64> {
        self.by_netns.keys().copied().collect()
    }

    /// Every (network namespace, port) listened on.
    pub fn ports(&self) -> std::collections::HashSet<(u64, u16)> {
        self.by_netns
            .iter()
            .flat_map(|(&netns, ns)| ns.by_port.keys().map(move |&port| (netns, port)))
            .collect()
    }

    /// The listeners of namespace `netns`.
    pub fn in_namespace(&self, netns: u64) -> Option<&NamespaceListeners> {
        self.by_netns.get(&netns)
    }
}

/// Whether a socket is a TCP listener, the sockets that have peers.
fn is_tcp_listener(s: &Socket) -> bool {
    s.proto == Proto::Tcp && s.state == State::Listen
}

/// The peer summaries of a host.
#[derive(Debug, Clone, Default)]
pub struct Peers {
    /// By network namespace.
    pub by_netns: HashMap<u64, NamespacePeers>,
    /// Namespaces whose connections could not be read, and why.
    pub not_counted: Vec<(u64, String)>,
}

impl Peers {
    /// The summary of `socket`: `None` when it is not a TCP listener, or its
    /// namespace was not counted.
    pub fn of(&self, socket: &Socket) -> Option<&PeerSummary> {
        if !is_tcp_listener(socket) {
            return None;
        }
        self.by_netns
            .get(&socket.netns)?
            .listeners
            .get(&(socket.local_addr, socket.local_port))
    }

    /// Every listener's summary, by (network namespace, address, port), in
    /// every namespace counted.
    pub fn summaries(&self) -> impl Iterator<Item = (series::Key, &PeerSummary)> {
        self.by_netns.iter().flat_map(|(&netns, ns)| {
            ns.listeners
                .iter()
                .map(move |(&(addr, port), summary)| ((netns, addr, port), summary))
        })
    }

    /// Established connections attributed to no listener, in every
    /// namespace counted.
    pub fn other(&self) -> u64 {
        self.by_netns.values().map(|ns| ns.other).sum()
    }
}

/// Counts the established connections of every namespace of `listeners`
/// (one sock_diag dump of ESTABLISHED TCP sockets, IPv4 and IPv6, in each,
/// on the scanner's namespace thread for other namespaces), naming at most
/// `top` remotes per listener. A namespace that cannot be entered or dumped
/// is in [`Peers::not_counted`] with the reason: never a silent zero.
pub fn count(scanner: &Scanner<Linux>, listeners: &Listeners, top: usize) -> Peers {
    let mut peers = Peers::default();
    for (netns, result) in in_each_namespace(scanner, listeners, |ns| {
        let mut aggregator = Aggregator::new(ns);
        scan::established_here(&ns.ports(), &mut |c| {
            aggregator.add(c.local_addr, c.local_port, c.remote_addr)
        })
        .map_err(|e| format!("cannot dump its established connections: {e}"))?;
        Ok(aggregator.finish(top))
    }) {
        match result {
            Ok(ns) => {
                peers.by_netns.insert(netns, ns);
            }
            Err(reason) => peers.not_counted.push((netns, reason)),
        }
    }
    peers.not_counted.sort();
    peers
}

/// The established connections on the listening ports of every namespace
/// of `listeners`, for [`book::Book::reset`]: the same dump as [`count`],
/// kept as a set rather than counted.
pub fn dump(scanner: &Scanner<Linux>, listeners: &Listeners) -> Vec<(u64, Result<HashSet<book::Connection>, String>)> {
    in_each_namespace(scanner, listeners, |ns| {
        let mut set = HashSet::default();
        scan::established_here(&ns.ports(), &mut |c| {
            set.insert(book::Connection {
                local_addr: c.local_addr,
                local_port: c.local_port,
                remote_addr: c.remote_addr,
                remote_port: c.remote_port,
            });
        })
        .map_err(|e| format!("cannot dump its established connections: {e}"))?;
        Ok(set)
    })
}

/// Runs `f` over the listeners of each namespace of `listeners`, in that
/// namespace; one the scan found but cannot find again, or cannot enter,
/// comes back with the reason.
fn in_each_namespace<T: Send>(
    scanner: &Scanner<Linux>,
    listeners: &Listeners,
    f: impl Fn(&NamespaceListeners) -> Result<T, String> + Sync,
) -> Vec<(u64, Result<T, String>)> {
    let wanted = listeners.namespaces();
    if wanted.is_empty() {
        return Vec::new();
    }
    let mut done: Vec<(u64, Result<T, String>)> = scanner
        .os()
        .in_namespaces(&wanted, |netns| match listeners.in_namespace(netns) {
            Some(ns) => f(ns),
            None => Err("no listener there".to_owned()),
        })
        .into_iter()
        .map(|(netns, result)| (netns, result.and_then(|r| r)))
        .collect();
    let found: HashSet<u64> = done.iter().map(|(netns, _)| *netns).collect();
    for netns in wanted.difference(&found) {
        done.push((*netns, Err("network namespace not found again".to_owned())));
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Listeners from `(address, port, dual_stack)`.
    fn listeners(specs: &[(&str, u16, bool)]) -> NamespaceListeners {
        let mut l = NamespaceListeners::default();
        for &(addr, port, dual) in specs {
            l.add(ip(addr), port, dual);
        }
        l
    }

    /// Summaries after `(local, port, remote)` connections, top 5.
    fn run(l: &NamespaceListeners, conns: &[(&str, u16, &str)]) -> NamespacePeers {
        let mut a = Aggregator::new(l);
        for &(local, port, remote) in conns {
            a.add(ip(local), port, ip(remote));
        }
        a.finish(DEFAULT_TOP)
    }

    fn connections(p: &NamespacePeers, addr: &str, port: u16) -> u64 {
        p.listeners[&(ip(addr), port)].connections
    }

    #[test]
    fn a_specific_listener_takes_its_address_and_the_wildcard_the_rest_of_the_port() {
        let l = listeners(&[("0.0.0.0", 80, false), ("127.0.0.1", 80, false)]);
        let p = run(
            &l,
            &[
                ("127.0.0.1", 80, "127.0.0.1"),
                ("127.0.0.1", 80, "127.0.0.1"),
                ("10.0.0.1", 80, "10.0.0.9"),
            ],
        );
        assert_eq!(connections(&p, "127.0.0.1", 80), 2);
        assert_eq!(connections(&p, "0.0.0.0", 80), 1);
        assert_eq!(p.other, 0);
    }

    #[test]
    fn the_order_listeners_are_added_in_does_not_change_attribution() {
        let a = listeners(&[("127.0.0.1", 80, false), ("0.0.0.0", 80, false)]);
        let b = listeners(&[("0.0.0.0", 80, false), ("127.0.0.1", 80, false)]);
        let conns = [("127.0.0.1", 80, "127.0.0.1"), ("192.168.1.2", 80, "192.168.1.3")];
        assert_eq!(run(&a, &conns), run(&b, &conns));
    }

    #[test]
    fn a_dual_stack_wildcard_takes_ipv4_mapped_connections_and_maps_the_remote_back_to_ipv4() {
        let l = listeners(&[("::", 443, true)]);
        let p = run(
            &l,
            &[
                ("::ffff:10.0.0.1", 443, "::ffff:10.0.0.7"),
                ("2001:db8::1", 443, "2001:db8::2"),
                // An IPv4 socket is never an IPv6 listener's.
                ("10.0.0.1", 443, "10.0.0.7"),
            ],
        );
        let s = &p.listeners[&(ip("::"), 443)];
        assert_eq!(s.connections, 2);
        assert_eq!(s.top[0].addr, ip("10.0.0.7"), "{s:?}");
        assert_eq!(
            s.classes,
            Classes {
                loopback: 0,
                private: 1,
                public: 1
            }
        );
        assert_eq!(p.other, 1);
    }

    #[test]
    fn an_ipv6_only_wildcard_takes_no_ipv4_mapped_connection() {
        let l = listeners(&[("::", 443, false)]);
        let p = run(
            &l,
            &[("::ffff:10.0.0.1", 443, "::ffff:10.0.0.7"), ("fd00::1", 443, "fd00::2")],
        );
        assert_eq!(connections(&p, "::", 443), 1);
        assert_eq!(p.other, 1);
    }

    #[test]
    fn ipv4_and_ipv6_wildcards_on_one_port_each_take_their_family() {
        let l = listeners(&[("0.0.0.0", 22, false), ("::", 22, false)]);
        let p = run(&l, &[("10.0.0.1", 22, "10.0.0.2"), ("fe80::1", 22, "fe80::2")]);
        assert_eq!(connections(&p, "0.0.0.0", 22), 1);
        assert_eq!(connections(&p, "::", 22), 1);
    }

    #[test]
    fn a_listener_bound_to_an_ipv4_mapped_address_takes_its_connections_before_the_wildcard() {
        let l = listeners(&[("::", 8080, true), ("::ffff:10.0.0.1", 8080, false)]);
        let p = run(
            &l,
            &[
                ("::ffff:10.0.0.1", 8080, "::ffff:10.0.0.2"),
                ("::ffff:10.0.0.5", 8080, "::ffff:10.0.0.2"),
            ],
        );
        assert_eq!(connections(&p, "::ffff:10.0.0.1", 8080), 1);
        assert_eq!(connections(&p, "::", 8080), 1);
    }

    #[test]
    fn outbound_connections_and_other_ports_are_counted_apart() {
        let l = listeners(&[("0.0.0.0", 80, false), ("127.0.0.1", 81, false)]);
        let p = run(
            &l,
            &[
                ("10.0.0.1", 40000, "93.184.216.34"),
                // 81 listens on loopback only: a connection on another address is not its.
                ("10.0.0.1", 81, "10.0.0.2"),
            ],
        );
        assert_eq!(p.other, 2);
        assert_eq!(connections(&p, "0.0.0.0", 80), 0);
        assert_eq!(
            p.listeners[&(ip("127.0.0.1"), 81)],
            PeerSummary::default(),
            "a listener without connections has an empty summary, not none"
        );
    }

    #[test]
    fn listeners_sharing_an_address_and_port_share_one_summary() {
        let l = listeners(&[
            ("0.0.0.0", 80, false),
            ("0.0.0.0", 80, false),
            ("10.0.0.1", 81, false),
            ("10.0.0.1", 81, false),
        ]);
        assert_eq!(l.len(), 2);
        let p = run(&l, &[("10.0.0.1", 80, "10.0.0.2"), ("10.0.0.1", 81, "10.0.0.2")]);
        assert_eq!(connections(&p, "0.0.0.0", 80), 1);
        assert_eq!(connections(&p, "10.0.0.1", 81), 1);
    }

    #[test]
    fn top_remotes_are_the_busiest_then_the_lowest_address_and_distinct_is_exact() {
        let l = listeners(&[("0.0.0.0", 5432, false)]);
        let mut a = Aggregator::new(&l);
        // 9 remotes: 10.0.0.{1..=9}; remote k makes k connections, and three more tie at 4.
        for k in 1..=9u8 {
            for _ in 0..k {
                a.add(ip("10.0.0.100"), 5432, IpAddr::from([10, 0, 0, k]));
            }
        }
        for last in [40u8, 30, 20] {
            for _ in 0..4 {
                a.add(ip("10.0.0.100"), 5432, IpAddr::from([10, 0, 0, last]));
            }
        }
        let p = a.finish(6);
        let s = &p.listeners[&(ip("0.0.0.0"), 5432)];
        assert_eq!(s.connections, 45 + 12);
        assert_eq!(s.distinct_remotes, 12);
        let top: Vec<(String, u64)> = s.top.iter().map(|t| (t.addr.to_string(), t.connections)).collect();
        assert_eq!(
            top,
            [
                ("10.0.0.9", 9),
                ("10.0.0.8", 8),
                ("10.0.0.7", 7),
                ("10.0.0.6", 6),
                ("10.0.0.5", 5),
                ("10.0.0.4", 4),
            ]
            .map(|(a, n)| (a.to_owned(), n))
        );
        let mut again = Aggregator::new(&l);
        for _ in 0..4 {
            for last in [40u8, 30, 20, 4] {
                again.add(ip("10.0.0.100"), 5432, IpAddr::from([10, 0, 0, last]));
            }
        }
        let ties: Vec<String> = again.finish(3).listeners[&(ip("0.0.0.0"), 5432)]
            .top
            .iter()
            .map(|t| t.addr.to_string())
            .collect();
        assert_eq!(
            ties,
            ["10.0.0.4", "10.0.0.20", "10.0.0.30"],
            "ties by address, ascending"
        );
    }

    #[test]
    fn top_zero_names_no_remote_and_top_larger_than_the_remotes_names_all() {
        let l = listeners(&[("0.0.0.0", 80, false)]);
        let mut a = Aggregator::new(&l);
        a.add(ip("10.0.0.1"), 80, ip("10.0.0.2"));
        a.add(ip("10.0.0.1"), 80, ip("::ffff:10.0.0.3"));
        assert!(a.finish(0).listeners[&(ip("0.0.0.0"), 80)].top.is_empty());
        let mut a = Aggregator::new(&l);
        a.add(ip("10.0.0.1"), 80, ip("10.0.0.2"));
        a.add(ip("10.0.0.1"), 80, ip("10.0.0.3"));
        assert_eq!(a.finish(MAX_TOP).listeners[&(ip("0.0.0.0"), 80)].top.len(), 2);
    }

    #[test]
    fn a_remote_seen_as_ipv4_and_as_ipv4_mapped_is_one_remote() {
        let l = listeners(&[("0.0.0.0", 80, false), ("::", 80, true)]);
        let mut a = Aggregator::new(&l);
        a.add(ip("10.0.0.1"), 80, ip("10.0.0.2"));
        a.add(ip("::ffff:10.0.0.1"), 80, ip("::ffff:10.0.0.2"));
        let p = a.finish(5);
        // Two listeners, one remote each: the same address, shown as IPv4 on both.
        for key in [(ip("0.0.0.0"), 80), (ip("::"), 80)] {
            assert_eq!(p.listeners[&key].top[0].addr, ip("10.0.0.2"));
        }
    }

    #[test]
    fn addresses_are_classed_loopback_private_or_public() {
        for (addr, class) in [
            ("127.0.0.1", Class::Loopback),
            ("127.8.9.10", Class::Loopback),
            ("::1", Class::Loopback),
            ("::ffff:127.0.0.1", Class::Loopback),
            ("10.1.2.3", Class::Private),
            ("172.16.0.1", Class::Private),
            ("172.31.255.254", Class::Private),
            ("192.168.10.1", Class::Private),
            ("100.64.0.1", Class::Private),
            ("100.127.255.254", Class::Private),
            ("169.254.1.1", Class::Private),
            ("fe80::1", Class::Private),
            ("fd12:3456::1", Class::Private),
            ("fc00::1", Class::Private),
            ("::ffff:192.168.1.1", Class::Private),
            ("172.32.0.1", Class::Public),
            ("100.128.0.1", Class::Public),
            ("100.63.255.255", Class::Public),
            ("8.8.8.8", Class::Public),
            ("2001:4860:4860::8888", Class::Public),
            ("::ffff:8.8.8.8", Class::Public),
        ] {
            assert_eq!(classify(ip(addr)), class, "{addr}");
        }
    }

    #[test]
    fn classes_add_up_to_the_connections() {
        let l = listeners(&[("::", 80, true)]);
        let p = run(
            &l,
            &[
                ("::1", 80, "::1"),
                ("::ffff:127.0.0.1", 80, "::ffff:127.0.0.1"),
                ("fd00::1", 80, "fd00::2"),
                ("2001:db8::1", 80, "2606:4700::1"),
                ("2001:db8::1", 80, "2606:4700::1"),
            ],
        );
        let s = &p.listeners[&(ip("::"), 80)];
        assert_eq!(
            s.classes,
            Classes {
                loopback: 2,
                private: 1,
                public: 2
            }
        );
        assert_eq!(s.distinct_remotes, 4);
        assert_eq!(s.top[0].addr, ip("2606:4700::1"));
    }

    mod properties {
        //! Whatever the listeners and connections, the counts add up.
        use super::*;
        use proptest::prelude::*;

        /// Addresses from a small pool, so that listeners and connections meet.
        fn addr() -> impl Strategy<Value = IpAddr> {
            prop::sample::select(vec![
                "0.0.0.0",
                "::",
                "127.0.0.1",
                "10.0.0.1",
                "::1",
                "::ffff:10.0.0.1",
                "192.168.1.9",
                "8.8.8.8",
                "fd00::7",
                "2001:db8::1",
                "::ffff:8.8.8.8",
                "100.64.3.4",
            ])
            .prop_map(|a| a.parse::<IpAddr>().unwrap())
        }

        proptest! {
            #[test]
            fn every_connection_is_counted_once_and_the_summaries_add_up(
                specs in prop::collection::vec((addr(), 1u16..5, any::<bool>()), 0..8),
                conns in prop::collection::vec((addr(), 1u16..6, addr()), 0..200),
                top in 0usize..6,
            ) {
                let mut l = NamespaceListeners::default();
                for &(a, port, dual) in &specs {
                    l.add(a, port, dual);
                }
                let mut aggregator = Aggregator::new(&l);
                for &(local, port, remote) in &conns {
                    aggregator.add(local, port, remote);
                }
                let p = aggregator.finish(top);
                prop_assert_eq!(p.listeners.len(), l.len());
                let attributed: u64 = p.listeners.values().map(|s| s.connections).sum();
                prop_assert_eq!(attributed + p.other, conns.len() as u64);
                for s in p.listeners.values() {
                    prop_assert_eq!(s.classes.loopback + s.classes.private + s.classes.public, s.connections);
                    prop_assert!(s.distinct_remotes <= s.connections);
                    prop_assert_eq!(s.top.len() as u64, s.distinct_remotes.min(top as u64));
                    for pair in s.top.windows(2) {
                        prop_assert!(
                            (pair[0].connections, std::cmp::Reverse(pair[0].addr))
                                > (pair[1].connections, std::cmp::Reverse(pair[1].addr)),
                            "{:?}", s.top
                        );
                    }
                    prop_assert!(s.top.iter().all(|t| canonical(t.addr) == t.addr));
                }
            }
        }
    }

    #[test]
    fn the_summary_serializes_as_the_output_contract_says() {
        let l = listeners(&[("0.0.0.0", 80, false)]);
        let p = run(&l, &[("10.0.0.1", 80, "10.0.0.2")]);
        let v = serde_json::to_value(&p.listeners[&(ip("0.0.0.0"), 80)]).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "connections": 1,
                "distinct_remotes": 1,
                "top": [{"addr": "10.0.0.2", "connections": 1}],
                "classes": {"loopback": 0, "private": 1, "public": 0},
            })
        );
    }
}
