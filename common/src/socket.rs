//! A socket as portwatch reports it, and the rules that classify it.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::Process;

/// Transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// The lowercase name used in every output (`tcp`, `udp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Family {
    /// IPv4 (`AF_INET`).
    Ipv4,
    /// IPv6 (`AF_INET6`).
    Ipv6,
}

impl Family {
    /// The lowercase name used in every output (`ipv4`, `ipv6`).
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

/// Socket state, named as `ss` names it.
///
/// TCP sockets carry their TCP state; UDP sockets are `UNCONN` when bound
/// but not connected, `ESTABLISHED` when connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum State {
    /// Accepting connections (TCP).
    #[serde(rename = "LISTEN")]
    Listen,
    /// Bound, not connected (UDP; a TCP socket in CLOSE is also shown so).
    #[serde(rename = "UNCONN")]
    Unconn,
    /// Connected.
    #[serde(rename = "ESTABLISHED")]
    Established,
    /// TCP SYN-SENT.
    #[serde(rename = "SYN-SENT")]
    SynSent,
    /// TCP SYN-RECV.
    #[serde(rename = "SYN-RECV")]
    SynRecv,
    /// TCP FIN-WAIT-1.
    #[serde(rename = "FIN-WAIT-1")]
    FinWait1,
    /// TCP FIN-WAIT-2.
    #[serde(rename = "FIN-WAIT-2")]
    FinWait2,
    /// TCP TIME-WAIT.
    #[serde(rename = "TIME-WAIT")]
    TimeWait,
    /// TCP CLOSE-WAIT.
    #[serde(rename = "CLOSE-WAIT")]
    CloseWait,
    /// TCP LAST-ACK.
    #[serde(rename = "LAST-ACK")]
    LastAck,
    /// TCP CLOSING.
    #[serde(rename = "CLOSING")]
    Closing,
    /// TCP NEW-SYN-RECV (request sockets).
    #[serde(rename = "NEW-SYN-RECV")]
    NewSynRecv,
}

impl State {
    /// Maps the kernel's numeric TCP state (`include/net/tcp_states.h`).
    /// Returns `None` for a number the kernel does not define.
    pub fn from_kernel(state: u8) -> Option<State> {
        Some(match state {
            1 => State::Established,
            2 => State::SynSent,
            3 => State::SynRecv,
            4 => State::FinWait1,
            5 => State::FinWait2,
            6 => State::TimeWait,
            7 => State::Unconn,
            8 => State::CloseWait,
            9 => State::LastAck,
            10 => State::Listen,
            11 => State::Closing,
            12 => State::NewSynRecv,
            _ => return None,
        })
    }

    /// The name used in every output (`LISTEN`, `UNCONN`, `ESTABLISHED`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Listen => "LISTEN",
            State::Unconn => "UNCONN",
            State::Established => "ESTABLISHED",
            State::SynSent => "SYN-SENT",
            State::SynRecv => "SYN-RECV",
            State::FinWait1 => "FIN-WAIT-1",
            State::FinWait2 => "FIN-WAIT-2",
            State::TimeWait => "TIME-WAIT",
            State::CloseWait => "CLOSE-WAIT",
            State::LastAck => "LAST-ACK",
            State::Closing => "CLOSING",
            State::NewSynRecv => "NEW-SYN-RECV",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who can reach a socket, judged from its local address alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Exposure {
    /// Bound to a loopback address (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104):
    /// reachable from the same network namespace only.
    Loopback,
    /// Bound to the unspecified address (0.0.0.0 or ::): every interface.
    Wildcard,
    /// Bound to one non-loopback address: reachable on that interface.
    Specific,
}

impl Exposure {
    /// Classifies a local address.
    pub fn of(addr: IpAddr) -> Exposure {
        let addr = canonical(addr);
        if addr.is_loopback() {
            Exposure::Loopback
        } else if addr.is_unspecified() {
            Exposure::Wildcard
        } else {
            Exposure::Specific
        }
    }

    /// The lowercase name used in every output.
    pub fn as_str(self) -> &'static str {
        match self {
            Exposure::Loopback => "loopback",
            Exposure::Wildcard => "wildcard",
            Exposure::Specific => "specific",
        }
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address it
/// stands for; every other address unchanged.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Whether an IPv6 socket also accepts IPv4 traffic (shown as `tcp46` /
/// `udp46`): bound to `::` with `IPV6_V6ONLY` off. An IPv6 socket bound to a
/// specific address never does, and an IPv4 socket is not dual-stack.
pub fn is_dual_stack(addr: IpAddr, v6only: bool) -> bool {
    matches!(addr, IpAddr::V6(v6) if v6 == Ipv6Addr::UNSPECIFIED) && !v6only
}

/// One socket seen by the scanner, with every process holding it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Socket {
    /// Transport protocol.
    pub proto: Proto,
    /// Address family.
    pub family: Family,
    /// Local address, as text (`0.0.0.0`, `::1`, `fe80::1%2` never: no scope).
    pub local_addr: IpAddr,
    /// Local port.
    pub local_port: u16,
    /// Remote address for connected sockets; `None` for listening and unconnected ones.
    #[serde(default)]
    pub peer_addr: Option<IpAddr>,
    /// Remote port for connected sockets; `None` for listening and unconnected ones.
    #[serde(default)]
    pub peer_port: Option<u16>,
    /// Socket state.
    pub state: State,
    /// Socket inode (what `/proc/<pid>/fd/N -> socket:[inode]` points to); 0
    /// for sockets that have none (TIME-WAIT).
    pub inode: u64,
    /// Uid that created the socket.
    pub uid: u32,
    /// User name for `uid`, when the system knows one (shared: many sockets
    /// have the same user).
    pub user: Option<Arc<str>>,
    /// Inode of the network namespace the socket lives in.
    pub netns: u64,
    /// Who can reach the socket.
    pub exposure: Exposure,
    /// An IPv6 wildcard socket that also accepts IPv4 (`IPV6_V6ONLY` off).
    pub dual_stack: bool,
    /// Every process holding the socket, by pid; empty when none could be
    /// found (see the scan's unattributed count). Shared: one process often
    /// holds many sockets.
    pub processes: Vec<Arc<Process>>,
}

impl Socket {
    /// Short protocol label as netstat prints it (see [`proto_label`]).
    pub fn proto_label(&self) -> &'static str {
        proto_label(self.proto, self.family, self.dual_stack)
    }
}

/// Short protocol label as netstat prints it: `tcp`, `tcp6`, `tcp46` (an
/// IPv6 socket that also accepts IPv4), `udp`, `udp6`, `udp46`.
pub fn proto_label(proto: Proto, family: Family, dual_stack: bool) -> &'static str {
    match (proto, family, dual_stack) {
        (Proto::Tcp, Family::Ipv4, _) => "tcp",
        (Proto::Tcp, Family::Ipv6, false) => "tcp6",
        (Proto::Tcp, Family::Ipv6, true) => "tcp46",
        (Proto::Udp, Family::Ipv4, _) => "udp",
        (Proto::Udp, Family::Ipv6, false) => "udp6",
        (Proto::Udp, Family::Ipv6, true) => "udp46",
    }
}

/// The family of an address.
pub fn family_of(addr: IpAddr) -> Family {
    match addr {
        IpAddr::V4(_) => Family::Ipv4,
        IpAddr::V6(_) => Family::Ipv6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn loopback_addresses_of_both_families_are_loopback() {
        for a in ["127.0.0.1", "127.0.0.53", "127.255.255.254", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(Exposure::of(ip(a)), Exposure::Loopback, "{a}");
        }
    }

    #[test]
    fn unspecified_addresses_are_wildcard() {
        for a in ["0.0.0.0", "::", "::ffff:0.0.0.0"] {
            assert_eq!(Exposure::of(ip(a)), Exposure::Wildcard, "{a}");
        }
    }

    #[test]
    fn any_other_address_is_specific() {
        for a in [
            "10.0.0.5",
            "192.168.1.1",
            "fe80::1",
            "2001:db8::1",
            "::ffff:10.1.2.3",
            "128.0.0.1",
        ] {
            assert_eq!(Exposure::of(ip(a)), Exposure::Specific, "{a}");
        }
    }

    #[test]
    fn only_an_ipv6_wildcard_without_v6only_is_dual_stack() {
        assert!(is_dual_stack(ip("::"), false));
        assert!(!is_dual_stack(ip("::"), true));
        assert!(!is_dual_stack(ip("::1"), false));
        assert!(!is_dual_stack(ip("0.0.0.0"), false));
        assert!(!is_dual_stack(ip("2001:db8::1"), false));
    }

    #[test]
    fn kernel_states_map_to_ss_names() {
        assert_eq!(State::from_kernel(10), Some(State::Listen));
        assert_eq!(State::from_kernel(7), Some(State::Unconn));
        assert_eq!(State::from_kernel(1), Some(State::Established));
        assert_eq!(State::from_kernel(0), None);
        assert_eq!(State::from_kernel(13), None);
        assert_eq!(State::from_kernel(6).map(State::as_str), Some("TIME-WAIT"));
    }

    #[test]
    fn json_field_names_follow_the_output_contract() {
        let s = Socket {
            proto: Proto::Tcp,
            family: Family::Ipv6,
            local_addr: ip("::"),
            local_port: 8080,
            peer_addr: None,
            peer_port: None,
            state: State::Listen,
            inode: 4242,
            uid: 0,
            user: Some("root".into()),
            netns: 4026531840,
            exposure: Exposure::Wildcard,
            dual_stack: true,
            processes: vec![Arc::new(Process {
                pid: 7,
                name: "nginx".into(),
                cmdline: Some("nginx -g daemon off;".into()),
                exe: None,
                uid: Some(0),
                user: Some("root".into()),
                container: None,
                unit: Some("nginx.service".into()),
            })],
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["proto"], "tcp");
        assert_eq!(v["family"], "ipv6");
        assert_eq!(v["local_addr"], "::");
        assert_eq!(v["local_port"], 8080);
        assert_eq!(v["state"], "LISTEN");
        assert_eq!(v["inode"], 4242);
        assert_eq!(v["netns"], 4026531840u64);
        assert_eq!(v["exposure"], "wildcard");
        assert_eq!(v["dual_stack"], true);
        assert_eq!(v["processes"][0]["pid"], 7);
        assert_eq!(v["processes"][0]["exe"], serde_json::Value::Null);
        assert_eq!(v["processes"][0]["unit"], "nginx.service");
        assert_eq!(s.proto_label(), "tcp46");
        let back: Socket = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn multi_word_states_serialize_as_ss_spells_them() {
        let v = serde_json::to_value(State::FinWait1).unwrap();
        assert_eq!(v, "FIN-WAIT-1");
        assert_eq!(v, State::FinWait1.as_str());
    }
}
