//! The kernel program's event record (`struct pw_event` in
//! `agent/bpf/portwatch.bpf.c`), parsed from the bytes of a ring buffer
//! entry. Pure: tested on records built here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use portwatch_common::{Family, Proto};

/// Size of one record.
pub const RECORD_BYTES: usize = 96;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A TCP socket entered LISTEN.
    TcpListen,
    /// A TCP socket left LISTEN.
    TcpUnlisten,
    /// A UDP socket was bound by bind(2).
    UdpBind,
    /// The fd a tracked UDP bind returned was closed: the socket may be released.
    UdpCloseHint,
    /// A process that bound a UDP socket exited: its sockets may be released.
    ExitHint,
    /// A listener's connection became established (SYN_RECV to ESTABLISHED:
    /// a passive open), on a port whose peers are counted.
    TcpAccepted,
    /// A connection on a port whose peers are counted left ESTABLISHED.
    TcpEnded,
}

impl Kind {
    /// Whether the event is of a connection (for the peers), not of a listener.
    pub fn is_connection(self) -> bool {
        matches!(self, Kind::TcpAccepted | Kind::TcpEnded)
    }
}

/// One event, as the kernel program saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: Kind,
    /// CLOCK_MONOTONIC nanoseconds.
    pub ktime_ns: u64,
    /// Network namespace inode (0 for hints).
    pub netns: u64,
    /// Socket inode (0 for hints, or when the socket had no file).
    pub inode: u64,
    /// The calling thread.
    pub pid: u32,
    /// The calling process.
    pub tgid: u32,
    /// The socket's uid.
    pub uid: u32,
    /// The fd, for UDP binds and close hints.
    pub fd: u32,
    /// Local port.
    pub port: u16,
    /// Address family; `None` for hints.
    pub family: Option<Family>,
    /// Local address (unspecified for hints).
    pub addr: IpAddr,
    /// `IPV6_V6ONLY` is set.
    pub v6only: bool,
    /// The calling task's command name (of whatever task the kernel ran the
    /// event in, for connection events: often none of the socket's).
    pub comm: String,
    /// Remote address, for connection events (unspecified otherwise).
    pub remote_addr: IpAddr,
    /// Remote port, for connection events (0 otherwise).
    pub remote_port: u16,
}

impl Event {
    /// The protocol of a socket event; `None` for hints.
    pub fn proto(&self) -> Option<Proto> {
        match self.kind {
            Kind::TcpListen | Kind::TcpUnlisten | Kind::TcpAccepted | Kind::TcpEnded => Some(Proto::Tcp),
            Kind::UdpBind => Some(Proto::Udp),
            Kind::UdpCloseHint | Kind::ExitHint => None,
        }
    }
}

/// Why a record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not one record long: the program and the agent disagree.
    #[error("event record of {0} bytes, expected {RECORD_BYTES}")]
    Size(usize),
    /// An event kind this agent does not know.
    #[error("unknown event kind {0}")]
    Kind(u8),
    /// A socket event of a family other than IPv4 or IPv6.
    #[error("unknown address family {0}")]
    Family(u8),
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(x)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_ne_bytes(x)
}

/// Parses one record.
pub fn parse(b: &[u8]) -> Result<Event, ParseError> {
    if b.len() != RECORD_BYTES {
        return Err(ParseError::Size(b.len()));
    }
    let kind = match b[42] {
        1 => Kind::TcpListen,
        2 => Kind::TcpUnlisten,
        3 => Kind::UdpBind,
        4 => Kind::UdpCloseHint,
        5 => Kind::ExitHint,
        6 => Kind::TcpAccepted,
        7 => Kind::TcpEnded,
        k => return Err(ParseError::Kind(k)),
    };
    let hint = matches!(kind, Kind::UdpCloseHint | Kind::ExitHint);
    let family = match (hint, b[43]) {
        (true, _) => None,
        (false, 2) => Some(Family::Ipv4),
        (false, 10) => Some(Family::Ipv6),
        (false, f) => return Err(ParseError::Family(f)),
    };
    let addr = address(family, &b[48..64]);
    let (remote_addr, remote_port) = match kind.is_connection() {
        true => (address(family, &b[80..96]), u16::from_ne_bytes([b[46], b[47]])),
        false => (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
    };
    let comm = &b[64..80];
    let comm = &comm[..comm.iter().position(|&c| c == 0).unwrap_or(comm.len())];
    Ok(Event {
        kind,
        ktime_ns: u64_at(b, 0),
        netns: u64_at(b, 8),
        inode: u64_at(b, 16),
        pid: u32_at(b, 24),
        tgid: u32_at(b, 28),
        uid: u32_at(b, 32),
        fd: u32_at(b, 36),
        port: u16::from_ne_bytes([b[40], b[41]]),
        family,
        addr,
        v6only: b[44] != 0,
        comm: String::from_utf8_lossy(comm).into_owned(),
        remote_addr,
        remote_port,
    })
}

/// An address of `family` from its 16 bytes (an IPv4 one in the first 4);
/// unspecified IPv4 for no family.
fn address(family: Option<Family>, raw: &[u8]) -> IpAddr {
    match family {
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Some(Family::Ipv4) => IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3])),
        Some(Family::Ipv6) => {
            let mut a = [0u8; 16];
            a.copy_from_slice(raw);
            IpAddr::V6(Ipv6Addr::from(a))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A record as the kernel program writes it.
    pub(crate) fn record(kind: u8, family: u8, addr: &[u8], port: u16, inode: u64, tgid: u32, comm: &str) -> Vec<u8> {
        let mut b = vec![0u8; RECORD_BYTES];
        b[0..8].copy_from_slice(&1_000_000_123u64.to_ne_bytes());
        b[8..16].copy_from_slice(&4_026_531_840u64.to_ne_bytes());
        b[16..24].copy_from_slice(&inode.to_ne_bytes());
        b[24..28].copy_from_slice(&(tgid + 1).to_ne_bytes());
        b[28..32].copy_from_slice(&tgid.to_ne_bytes());
        b[32..36].copy_from_slice(&1000u32.to_ne_bytes());
        b[36..40].copy_from_slice(&7u32.to_ne_bytes());
        b[40..42].copy_from_slice(&port.to_ne_bytes());
        b[42] = kind;
        b[43] = family;
        b[48..48 + addr.len()].copy_from_slice(addr);
        b[64..64 + comm.len()].copy_from_slice(comm.as_bytes());
        b
    }

    #[test]
    fn a_tcp4_listen_record_reads_back_whole() {
        let e = parse(&record(1, 2, &[127, 0, 0, 1], 8080, 4242, 99, "nginx")).unwrap();
        assert_eq!(e.kind, Kind::TcpListen);
        assert_eq!(e.proto(), Some(Proto::Tcp));
        assert_eq!((e.ktime_ns, e.netns, e.inode), (1_000_000_123, 4_026_531_840, 4242));
        assert_eq!((e.pid, e.tgid, e.uid, e.fd, e.port), (100, 99, 1000, 7, 8080));
        assert_eq!(e.family, Some(Family::Ipv4));
        assert_eq!(e.addr, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(e.comm, "nginx");
        assert!(!e.v6only);
    }

    #[test]
    fn a_udp6_bind_record_keeps_its_address_and_a_full_comm() {
        let addr: Ipv6Addr = "fe80::1".parse().unwrap();
        let mut b = record(3, 10, &addr.octets(), 53, 1, 2, "sixteen-bytes-xx");
        b[44] = 1;
        let e = parse(&b).unwrap();
        assert_eq!(
            (e.kind, e.family, e.addr),
            (Kind::UdpBind, Some(Family::Ipv6), IpAddr::V6(addr))
        );
        assert_eq!(e.comm, "sixteen-bytes-xx");
        assert!(e.v6only);
    }

    #[test]
    fn a_connection_record_has_both_ends_and_a_listener_record_no_remote() {
        let mut b = record(
            6,
            10,
            &"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets(),
            443,
            0,
            0,
            "swapper/1",
        );
        b[46..48].copy_from_slice(&51000u16.to_ne_bytes());
        b[80..96].copy_from_slice(&"2001:db8::9".parse::<Ipv6Addr>().unwrap().octets());
        let e = parse(&b).unwrap();
        assert_eq!(
            (e.kind, e.proto(), e.kind.is_connection()),
            (Kind::TcpAccepted, Some(Proto::Tcp), true)
        );
        assert_eq!((e.addr, e.port), ("2001:db8::1".parse::<IpAddr>().unwrap(), 443));
        assert_eq!(
            (e.remote_addr, e.remote_port),
            ("2001:db8::9".parse::<IpAddr>().unwrap(), 51000)
        );

        let mut b = record(7, 2, &[10, 0, 0, 1], 22, 0, 0, "sshd");
        b[46..48].copy_from_slice(&40000u16.to_ne_bytes());
        b[80..84].copy_from_slice(&[10, 0, 0, 2]);
        let e = parse(&b).unwrap();
        assert_eq!(
            (e.kind, e.remote_addr, e.remote_port),
            (Kind::TcpEnded, "10.0.0.2".parse().unwrap(), 40000)
        );

        // The same bytes in a listener's record are not read as a remote end.
        let mut b = record(1, 2, &[10, 0, 0, 1], 22, 5, 9, "sshd");
        b[46..48].copy_from_slice(&40000u16.to_ne_bytes());
        b[80..84].copy_from_slice(&[10, 0, 0, 2]);
        let e = parse(&b).unwrap();
        assert!(!e.kind.is_connection());
        assert_eq!((e.remote_addr, e.remote_port), ("0.0.0.0".parse().unwrap(), 0));
    }

    #[test]
    fn hints_carry_no_address_and_bad_records_are_refused() {
        let e = parse(&record(5, 0, &[], 0, 0, 9, "exit")).unwrap();
        assert_eq!((e.kind, e.family, e.proto()), (Kind::ExitHint, None, None));
        assert_eq!(parse(&[0u8; 12]), Err(ParseError::Size(12)));
        assert_eq!(
            parse(&[0u8; 80]),
            Err(ParseError::Size(80)),
            "the record before remote addresses"
        );
        assert_eq!(parse(&record(9, 2, &[], 0, 0, 1, "x")), Err(ParseError::Kind(9)));
        assert_eq!(parse(&record(1, 1, &[], 0, 0, 1, "x")), Err(ParseError::Family(1)));
    }
}
