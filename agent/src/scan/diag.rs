//! Socket enumeration through netlink `NETLINK_SOCK_DIAG`.
//!
//! One dump per (family, protocol) with the kernel-side state filter, so the
//! kernel walks only the listening (TCP) or bound (UDP) tables: well under a
//! millisecond for thousands of listeners on a host with 100k connections,
//! where reading `/proc/net/tcp` costs hundreds. The dump answers for the
//! network namespace of the calling thread only; `netns` runs it once per
//! namespace.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLMSG_DONE, NLMSG_ERROR, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};
use netlink_packet_sock_diag::inet::nlas::Nla;
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use netlink_sys::{Socket, SocketAddr};
use portwatch_common::{Family, Proto, State};

use super::{Connection, RawSocket};

/// Size of the receive buffer: the kernel fills replies up to it (32 KiB is
/// its own cap per message batch), so one `recv` carries a few hundred sockets.
const RECV_BUF: usize = 64 * 1024;

/// A sock_diag socket in the calling thread's network namespace.
pub struct Diag {
    socket: Socket,
    buf: Vec<u8>,
    seq: u32,
}

impl Diag {
    /// Opens the netlink socket. Fails with `EPROTONOSUPPORT` on kernels
    /// without sock_diag; the caller then falls back to `/proc/net`.
    pub fn open() -> io::Result<Diag> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Diag {
            socket,
            buf: vec![0; RECV_BUF],
            seq: 0,
        })
    }

    /// Dumps the sockets of one protocol and family in the given states
    /// (`None`: every state) and appends them to `out`, tagged with `netns`.
    ///
    /// A kernel without the protocol's diag module (`udp_diag` is one)
    /// answers `ENOENT`; that error is returned for the caller to fall back.
    pub fn dump(
        &mut self,
        proto: Proto,
        family: Family,
        listening_only: bool,
        netns: u64,
        out: &mut Vec<RawSocket>,
    ) -> io::Result<()> {
        let states = match (listening_only, proto) {
            (false, _) => StateFlags::all(),
            (true, Proto::Tcp) => StateFlags::LISTEN,
            // An unconnected UDP socket is in TCP_CLOSE; `ss` calls it UNCONN.
            (true, Proto::Udp) => StateFlags::CLOSE,
        };
        self.request(proto, family, states)?;
        loop {
            let len = self.socket.recv(&mut &mut self.buf[..], 0)?;
            if replies(&self.buf[..len], proto, netns, out)? {
                return Ok(());
            }
        }
    }

    /// Dumps the ESTABLISHED TCP sockets, IPv4 and IPv6, giving each to
    /// `each` as its reply is read: nothing is kept, however many there are.
    ///
    /// One request for both families where the kernel takes it (the
    /// original `TCPDIAG_GETSOCK` request, whose dump is not limited to one
    /// family, so the kernel walks its table of established sockets once
    /// instead of once per family); else one `SOCK_DIAG_BY_FAMILY` dump per
    /// family. The kernel is asked for the sockets whose local port is one
    /// of `local_ports` only (a filter of port ranges, [`port_filter`]), so
    /// it does not fill a reply for an outbound connection; where it takes
    /// no filter, or there are too many ranges, every established socket is
    /// given, so `each` must not rely on the filter. The replies are read in
    /// place (72 bytes a socket, no attributes asked for), not decoded into
    /// messages.
    pub fn established(&mut self, local_ports: &[u16], each: &mut dyn FnMut(Connection)) -> io::Result<()> {
        let filter = port_filter(local_ports);
        let mut attempts = vec![filter.as_deref()];
        if filter.is_some() {
            attempts.push(None);
        }
        for bytecode in attempts {
            self.seq = self.seq.wrapping_add(1);
            self.socket.send(&both_families_request(self.seq, bytecode), 0)?;
            match self.established_replies(each) {
                Ok(()) => return Ok(()),
                // Refused before any reply: a kernel without the old request (or the filter).
                Err(Refused(e)) if is_refusal(&e) => {}
                Err(Refused(e) | Failed(e)) => return Err(e),
            }
        }
        for family in [Family::Ipv4, Family::Ipv6] {
            self.request(Proto::Tcp, family, StateFlags::ESTABLISHED)?;
            self.established_replies(each).map_err(|(Refused(e) | Failed(e))| e)?;
        }
        Ok(())
    }

    /// Reads one established dump to its end; an error before the first
    /// connection is a refusal (the request may be retried another way).
    fn established_replies(&mut self, each: &mut dyn FnMut(Connection)) -> Result<(), DumpError> {
        let mut any = false;
        loop {
            let len = self.socket.recv(&mut &mut self.buf[..], 0).map_err(Failed)?;
            let mut counted = |c: Connection| {
                any = true;
                each(c)
            };
            match connections(&self.buf[..len], &mut counted) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) if !any => return Err(Refused(e)),
                Err(e) => return Err(Failed(e)),
            }
        }
    }

    /// Sends the dump request of one protocol and family in `states`.
    fn request(&mut self, proto: Proto, family: Family, states: StateFlags) -> io::Result<()> {
        let (af, socket_id) = match family {
            Family::Ipv4 => (AF_INET, SocketId::new_v4()),
            Family::Ipv6 => (AF_INET6, SocketId::new_v6()),
        };
        let protocol = match proto {
            Proto::Tcp => IPPROTO_TCP,
            Proto::Udp => IPPROTO_UDP,
        };
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = self.seq;
        let mut request = NetlinkMessage::new(
            header,
            SockDiagMessage::InetRequest(InetRequest {
                family: af,
                protocol,
                extensions: ExtensionFlags::empty(),
                states,
                socket_id,
            })
            .into(),
        );
        request.finalize();
        let mut bytes = vec![0; request.buffer_len()];
        request.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;
        Ok(())
    }
}

/// Reads the sock_diag replies of one `recv` (`bytes`) into `out`: whether
/// the dump is done (an `NLMSG_DONE` was among them). A malformed reply
/// fails the dump (`InvalidData`) and a netlink error is returned as it is;
/// either way the caller falls back. Pure: no socket, any bytes.
fn replies(bytes: &[u8], proto: Proto, netns: u64, out: &mut Vec<RawSocket>) -> io::Result<bool> {
    each_reply(bytes, |response| {
        if let Some(socket) = raw_socket(response, proto, netns) {
            out.push(socket);
        }
    })
}

/// How an established dump failed: before any connection was read (the
/// kernel refused the request), or during the dump.
enum DumpError {
    Refused(io::Error),
    Failed(io::Error),
}
use DumpError::{Failed, Refused};

/// Errors by which a kernel refuses a request it does not know.
fn is_refusal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::ENOENT | libc::EOPNOTSUPP | libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT)
    )
}

/// `nlmsg_type` of the original inet_diag request and of its replies.
const TCPDIAG_GETSOCK: u16 = 18;
/// `nlmsg_type` of `SOCK_DIAG_BY_FAMILY` requests and replies.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `struct nlmsghdr`.
const NLMSG_HDRLEN: usize = 16;
/// `struct inet_diag_msg`: family, state, timer, retrans, the socket id
/// (ports, addresses, interface, cookie), expires, queues, uid, inode.
const INET_DIAG_MSG_LEN: usize = 72;
/// `TCPF_ESTABLISHED`: the state filter bit of TCP_ESTABLISHED (1).
const TCPF_ESTABLISHED: u32 = 1 << 1;

/// `INET_DIAG_REQ_BYTECODE`: the request attribute holding a filter.
const INET_DIAG_REQ_BYTECODE: u16 = 1;
/// Filter operations (`struct inet_diag_bc_op` codes).
const INET_DIAG_BC_JMP: u8 = 1;
const INET_DIAG_BC_S_GE: u8 = 2;
const INET_DIAG_BC_S_LE: u8 = 3;
/// One port range of a filter: `S_GE lo`, `S_LE hi` (8 bytes each, the
/// port in the second half) and a `JMP` to the end (4 bytes).
const FILTER_BLOCK: usize = 20;
/// The most port ranges a filter holds: its jumps are 16-bit byte offsets.
const MAX_FILTER_RANGES: usize = 3000;

/// A `TCPDIAG_GETSOCK` dump request for established TCP sockets of every
/// family: a `struct nlmsghdr` and a `struct inet_diag_req` (family 0,
/// no extension, an empty socket id, the state filter), with `bytecode`
/// as its filter when given. Pure.
fn both_families_request(seq: u32, bytecode: Option<&[u8]>) -> Vec<u8> {
    // inet_diag_req: family, src_len, dst_len, ext (4), inet_diag_sockid (48), states (4), dbs (4).
    const REQ_LEN: usize = 4 + 48 + 4 + 4;
    let attr_len = bytecode.map_or(0, |bc| 4 + bc.len());
    let len = NLMSG_HDRLEN + REQ_LEN + attr_len;
    let mut bytes = Vec::with_capacity(len);
    bytes.extend_from_slice(&(len as u32).to_ne_bytes());
    bytes.extend_from_slice(&TCPDIAG_GETSOCK.to_ne_bytes());
    bytes.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    bytes.extend_from_slice(&seq.to_ne_bytes());
    bytes.extend_from_slice(&0u32.to_ne_bytes());
    bytes.extend_from_slice(&[0; 4 + 48]);
    bytes.extend_from_slice(&TCPF_ESTABLISHED.to_ne_bytes());
    bytes.extend_from_slice(&0u32.to_ne_bytes());
    if let Some(bc) = bytecode {
        bytes.extend_from_slice(&(attr_len as u16).to_ne_bytes());
        bytes.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
        bytes.extend_from_slice(bc);
    }
    bytes
}

/// The kernel-side filter (inet_diag bytecode) that accepts a socket whose
/// local port is one of `ports`: for each range of consecutive ports, "port
/// at least lo, else try the next range; at most hi, else the next range;
/// then accept", the last range's misses jumping past the end (reject).
/// `None` for no port, or more ranges than a filter can address. Pure.
fn port_filter(ports: &[u16]) -> Option<Vec<u8>> {
    let mut sorted = ports.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    for port in sorted {
        match ranges.last_mut() {
            Some((_, hi)) if u32::from(*hi) + 1 == u32::from(port) => *hi = port,
            _ => ranges.push((port, port)),
        }
    }
    if ranges.is_empty() || ranges.len() > MAX_FILTER_RANGES {
        return None;
    }
    let total = FILTER_BLOCK * ranges.len();
    let mut bc = Vec::with_capacity(total);
    let mut op = |code: u8, yes: u8, no: usize| {
        bc.push(code);
        bc.push(yes);
        bc.extend_from_slice(&(no as u16).to_ne_bytes());
    };
    for (i, &(lo, hi)) in ranges.iter().enumerate() {
        // Offsets count from the operation that jumps.
        let remaining = total - i * FILTER_BLOCK;
        let miss = if i + 1 == ranges.len() {
            remaining + 4
        } else {
            FILTER_BLOCK
        };
        op(INET_DIAG_BC_S_GE, 8, miss);
        op(0, 0, usize::from(lo));
        op(INET_DIAG_BC_S_LE, 8, miss - 8);
        op(0, 0, usize::from(hi));
        op(INET_DIAG_BC_JMP, 4, remaining - 16);
    }
    Some(bc)
}

/// Reads the replies of one `recv` of an established dump in place,
/// giving each connection to `each`: whether the dump is done. A reply too
/// short for its header, or a netlink error, fails the dump. Pure: no
/// socket, any bytes.
fn connections(bytes: &[u8], each: &mut dyn FnMut(Connection)) -> io::Result<bool> {
    let malformed =
        |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("malformed sock_diag reply: {what}"));
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some((header, _)) = rest.split_first_chunk::<NLMSG_HDRLEN>() else {
            return Err(malformed("a truncated header"));
        };
        let len = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let kind = u16::from_ne_bytes([header[4], header[5]]);
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(malformed("a message length beyond the reply"));
        }
        let body = &rest[NLMSG_HDRLEN..len];
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let Some(code) = body.first_chunk::<4>() else {
                    return Err(malformed("a truncated error"));
                };
                let errno = i32::from_ne_bytes(*code);
                // 0 is an acknowledgement, not an error.
                if errno != 0 {
                    return Err(io::Error::from_raw_os_error(errno.saturating_neg()));
                }
            }
            TCPDIAG_GETSOCK | SOCK_DIAG_BY_FAMILY => {
                let Some(msg) = body.first_chunk::<INET_DIAG_MSG_LEN>() else {
                    return Err(malformed("a truncated socket"));
                };
                if let Some(c) = connection(msg) {
                    each(c);
                }
            }
            _ => {}
        }
        rest = rest.get(nlmsg_align(len)..).unwrap_or_default();
    }
    Ok(false)
}

/// The connection of one `struct inet_diag_msg`; `None` for a family other
/// than IPv4 and IPv6.
fn connection(msg: &[u8; INET_DIAG_MSG_LEN]) -> Option<Connection> {
    let addr = |at: usize| -> Option<IpAddr> {
        let bytes: [u8; 16] = msg[at..at + 16].try_into().ok()?;
        match msg[0] {
            AF_INET => Some(IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))),
            AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(bytes))),
            _ => None,
        }
    };
    Some(Connection {
        local_port: u16::from_be_bytes([msg[4], msg[5]]),
        remote_port: u16::from_be_bytes([msg[6], msg[7]]),
        local_addr: addr(8)?,
        remote_addr: addr(24)?,
    })
}

/// Gives each socket reply of one `recv` to `f`: whether the dump is done.
fn each_reply(bytes: &[u8], mut f: impl FnMut(&InetResponse)) -> io::Result<bool> {
    let mut offset = 0;
    while offset < bytes.len() {
        let message = NetlinkMessage::<SockDiagMessage>::deserialize(&bytes[offset..])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("malformed sock_diag reply: {e}")))?;
        let size = message.header.length as usize;
        match message.payload {
            NetlinkPayload::Done(_) => return Ok(true),
            NetlinkPayload::Error(e) => return Err(e.to_io()),
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => f(&response),
            _ => {}
        }
        if size == 0 {
            break;
        }
        offset += nlmsg_align(size);
    }
    Ok(false)
}

fn nlmsg_align(len: usize) -> usize {
    (len + 3) & !3
}

/// Turns one reply into a socket; `None` for a state number the kernel may
/// add in the future (skipped rather than mislabelled).
fn raw_socket(response: &InetResponse, proto: Proto, netns: u64) -> Option<RawSocket> {
    let h = &response.header;
    let state = State::from_kernel(h.state)?;
    let family = if h.family == AF_INET6 {
        Family::Ipv6
    } else {
        Family::Ipv4
    };
    let v6only = response.nlas.iter().any(|nla| matches!(nla, Nla::SkV6Only(true)));
    let connected = !matches!(state, State::Listen | State::Unconn);
    Some(RawSocket {
        proto,
        family,
        local_addr: h.socket_id.source_address,
        local_port: h.socket_id.source_port,
        peer: connected.then_some((h.socket_id.destination_address, h.socket_id.destination_port)),
        state,
        inode: u64::from(h.inode),
        uid: h.uid,
        v6only,
        netns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, UdpSocket};

    fn dump(proto: Proto, family: Family) -> Vec<RawSocket> {
        let mut out = Vec::new();
        Diag::open().unwrap().dump(proto, family, true, 1, &mut out).unwrap();
        out
    }

    #[test]
    fn dump_sees_a_fresh_tcp_listener_with_its_uid() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let found = dump(Proto::Tcp, Family::Ipv4);
        let s = found.iter().find(|s| s.local_port == port).expect("listener in dump");
        assert_eq!(s.state, State::Listen);
        assert_eq!(s.local_addr, "127.0.0.1".parse::<std::net::IpAddr>().unwrap());
        assert_eq!(s.uid, rustix::process::getuid().as_raw());
        assert!(s.inode != 0);
        assert_eq!(s.peer, None);
        assert_eq!(s.netns, 1);
    }

    #[test]
    fn dump_sees_unconnected_udp_but_not_connected_udp() {
        let free = UdpSocket::bind("127.0.0.1:0").unwrap();
        let connected = UdpSocket::bind("127.0.0.1:0").unwrap();
        connected.connect(free.local_addr().unwrap()).unwrap();
        let found = dump(Proto::Udp, Family::Ipv4);
        let port = |s: &UdpSocket| s.local_addr().unwrap().port();
        assert!(found
            .iter()
            .any(|s| s.local_port == port(&free) && s.state == State::Unconn));
        assert!(!found.iter().any(|s| s.local_port == port(&connected)));
    }

    /// A loopback connection to a fresh listener on `addr`: (listener, client, server end, client end).
    fn connected(addr: &str) -> (TcpListener, std::net::TcpStream, Connection, Connection) {
        let l = TcpListener::bind(addr).unwrap();
        let server = l.local_addr().unwrap();
        let client = std::net::TcpStream::connect(server).unwrap();
        let from = client.local_addr().unwrap();
        let end = |local: std::net::SocketAddr, remote: std::net::SocketAddr| Connection {
            local_addr: local.ip(),
            local_port: local.port(),
            remote_addr: remote.ip(),
            remote_port: remote.port(),
        };
        (l, client, end(server, from), end(from, server))
    }

    #[test]
    fn the_established_dump_gives_both_ends_of_ipv4_and_ipv6_connections_and_no_listener() {
        let (l4, _c4, server4, client4) = connected("127.0.0.1:0");
        let (_l6, _c6, server6, client6) = connected("[::1]:0");
        let mut seen = Vec::new();
        Diag::open().unwrap().established(&[], &mut |c| seen.push(c)).unwrap();
        // The accepted ends sit in the listeners' queues (not yet accepted): established all the same.
        for end in [server4, client4, server6, client6] {
            assert!(seen.contains(&end), "{end:?} not in {seen:?}");
        }
        let port = l4.local_addr().unwrap().port();
        assert!(
            !seen.iter().any(|c| c.local_port == port && c.remote_port == 0),
            "the listener itself is not established: {seen:?}"
        );
    }

    #[test]
    fn one_request_dumps_the_established_sockets_of_both_families() {
        let (_l4, _c4, server4, _) = connected("127.0.0.1:0");
        let (_l6, _c6, server6, _) = connected("[::1]:0");
        let mut diag = Diag::open().unwrap();
        diag.socket.send(&both_families_request(7, None), 0).unwrap();
        let mut seen = Vec::new();
        assert!(
            diag.established_replies(&mut |c| seen.push(c)).is_ok(),
            "this kernel takes the request"
        );
        assert!(seen.contains(&server4) && seen.contains(&server6), "{seen:?}");
    }

    #[test]
    fn with_a_port_filter_the_kernel_gives_only_the_connections_on_those_ports() {
        let (l, _c, server, client) = connected("127.0.0.1:0");
        let (_l6, _c6, server6, client6) = connected("[::1]:0");
        let port = l.local_addr().unwrap().port();
        let mut seen = Vec::new();
        Diag::open()
            .unwrap()
            .established(&[port, server6.local_port, 1], &mut |c| seen.push(c))
            .unwrap();
        assert!(seen.contains(&server) && seen.contains(&server6), "{seen:?}");
        assert!(!seen.contains(&client) && !seen.contains(&client6), "{seen:?}");
        let mut ports: Vec<u16> = seen.iter().map(|c| c.local_port).collect();
        ports.sort_unstable();
        ports.dedup();
        assert!(
            ports.iter().all(|p| [port, server6.local_port, 1].contains(p)),
            "{ports:?}"
        );
    }

    /// The kernel's audit of a filter (`inet_diag_bc_audit`) and its run
    /// (`inet_diag_bc_run`) for the operations a port filter uses.
    fn audit(bc: &[u8]) -> bool {
        let op = |at: usize| {
            (
                bc[at],
                usize::from(bc[at + 1]),
                usize::from(u16::from_ne_bytes([bc[at + 2], bc[at + 3]])),
            )
        };
        let on_yes_chain = |target: usize| {
            let mut at = 0;
            while at < target {
                at += op(at).1.max(4);
            }
            at == target
        };
        let mut at = 0;
        while at < bc.len() {
            let len = bc.len() - at;
            let (code, yes, no) = op(at);
            let min_len = match code {
                INET_DIAG_BC_S_GE | INET_DIAG_BC_S_LE if len >= 8 => 8,
                INET_DIAG_BC_JMP => 4,
                _ => return false,
            };
            if no < min_len || no > len + 4 || no % 4 != 0 || (no < len && !on_yes_chain(at + no)) {
                return false;
            }
            if yes < min_len || yes > len + 4 || yes % 4 != 0 {
                return false;
            }
            at += yes;
        }
        at == bc.len()
    }

    fn accepts(bc: &[u8], sport: u16) -> bool {
        let mut at: i64 = 0;
        let end = i64::try_from(bc.len()).unwrap();
        while at < end {
            let i = usize::try_from(at).unwrap();
            let (code, yes, no) = (bc[i], bc[i + 1], u16::from_ne_bytes([bc[i + 2], bc[i + 3]]));
            let value = || u16::from_ne_bytes([bc[i + 6], bc[i + 7]]);
            let taken = match code {
                INET_DIAG_BC_S_GE => sport >= value(),
                INET_DIAG_BC_S_LE => sport <= value(),
                _ => false,
            };
            at += if taken { i64::from(yes) } else { i64::from(no) };
        }
        at == end
    }

    #[test]
    fn a_port_filter_passes_the_kernels_audit_and_accepts_exactly_its_ports() {
        let sets: [&[u16]; 6] = [
            &[80],
            &[22, 80, 443, 5432, 65535],
            &[1, 2, 3, 10, 11, 12, 65534, 65535, 0],
            &[8080, 8081, 8082, 8083],
            &[7, 7, 7],
            &[9, 3, 5, 4],
        ];
        for ports in sets {
            let bc = port_filter(ports).unwrap();
            assert!(audit(&bc), "{ports:?}");
            for sport in (0..=u16::MAX).filter(|p| *p < 100 || ports.contains(p) || p % 997 == 0 || *p > 65500) {
                assert_eq!(
                    accepts(&bc, sport),
                    ports.contains(&sport),
                    "port {sport} with {ports:?}"
                );
            }
        }
        let many: Vec<u16> = (0..3000u16).map(|i| i * 3).collect();
        let bc = port_filter(&many).unwrap();
        assert!(audit(&bc));
        assert!(accepts(&bc, 8997) && !accepts(&bc, 8998) && !accepts(&bc, 9000));
        let too_many: Vec<u16> = (0..3001u16).map(|i| i * 3).collect();
        assert_eq!(port_filter(&too_many), None);
        assert_eq!(port_filter(&[]), None);
    }

    #[test]
    fn the_per_family_established_dump_reads_the_same_replies() {
        let (_l, _c, server, client) = connected("127.0.0.1:0");
        let mut diag = Diag::open().unwrap();
        diag.request(Proto::Tcp, Family::Ipv4, StateFlags::ESTABLISHED).unwrap();
        let mut seen = Vec::new();
        assert!(diag.established_replies(&mut |c| seen.push(c)).is_ok());
        assert!(seen.contains(&server) && seen.contains(&client), "{seen:?}");
        assert!(seen.iter().all(|c| c.local_addr.is_ipv4()), "{seen:?}");
    }

    #[test]
    fn a_netlink_error_or_a_cut_reply_fails_the_established_dump() {
        let mut error = Vec::new();
        error.extend_from_slice(&36u32.to_ne_bytes());
        error.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        error.extend_from_slice(&[0; 10]);
        error.extend_from_slice(&(-libc::EPERM).to_ne_bytes());
        error.extend_from_slice(&[0; 16]);
        let e = connections(&error, &mut |_| {}).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        let request = both_families_request(1, None);
        assert!(
            connections(&request[..20], &mut |_| {}).is_err(),
            "a socket reply cut short"
        );
    }

    /// The bytes of a real dump: a TCP listener on 127.0.0.1, then `NLMSG_DONE`.
    fn captured() -> Vec<u8> {
        let _l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut diag = Diag::open().unwrap();
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut request = NetlinkMessage::new(
            header,
            SockDiagMessage::InetRequest(InetRequest {
                family: AF_INET,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::empty(),
                states: StateFlags::LISTEN,
                socket_id: SocketId::new_v4(),
            })
            .into(),
        );
        request.finalize();
        let mut bytes = vec![0; request.buffer_len()];
        request.serialize(&mut bytes);
        diag.socket.send(&bytes, 0).unwrap();
        let mut all = Vec::new();
        loop {
            let len = diag.socket.recv(&mut &mut diag.buf[..], 0).unwrap();
            all.extend_from_slice(&diag.buf[..len]);
            if replies(&diag.buf[..len], Proto::Tcp, 1, &mut Vec::new()).unwrap() {
                return all;
            }
        }
    }

    mod properties {
        //! sock_diag replies come from the kernel, but a parser of bytes
        //! must not panic whatever they are.
        use super::*;
        use proptest::prelude::*;

        fn reply() -> &'static [u8] {
            static REPLY: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
            REPLY.get_or_init(captured)
        }

        proptest! {
            #[test]
            fn any_bytes_never_panic_the_reply_parser(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
                let _ = replies(&bytes, Proto::Tcp, 1, &mut Vec::new());
            }

            #[test]
            fn any_bytes_never_panic_the_connection_parser(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
                let _ = connections(&bytes, &mut |_| {});
            }

            #[test]
            fn a_damaged_real_reply_never_panics_the_parser(
                damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
            ) {
                let mut bytes = reply().to_vec();
                for (at, byte, how) in damage {
                    if bytes.is_empty() {
                        break;
                    }
                    let i = at.index(bytes.len());
                    match how {
                        0 => bytes[i] = byte,
                        1 => bytes.truncate(i),
                        _ => bytes.insert(i, byte),
                    }
                }
                let mut out = Vec::new();
                if replies(&bytes, Proto::Tcp, 1, &mut out).is_ok() {
                    prop_assert!(out.iter().all(|s| s.proto == Proto::Tcp && s.netns == 1));
                }
            }
        }

        #[test]
        fn the_captured_reply_parses_whole() {
            let mut out = Vec::new();
            assert!(replies(reply(), Proto::Tcp, 1, &mut out).unwrap(), "it ends the dump");
            assert!(out.iter().any(|s| s.state == State::Listen && s.local_addr.is_ipv4()));
        }
    }

    #[test]
    fn many_listeners_span_several_netlink_batches() {
        let listeners: Vec<_> = (0..600).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        let found = dump(Proto::Tcp, Family::Ipv4);
        for l in &listeners {
            let port = l.local_addr().unwrap().port();
            assert!(found.iter().any(|s| s.local_port == port), "port {port} missing");
        }
    }
}
