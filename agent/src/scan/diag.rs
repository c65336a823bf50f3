//! Socket enumeration through netlink `NETLINK_SOCK_DIAG`.
//!
//! One dump per (family, protocol) with the kernel-side state filter, so the
//! kernel walks only the listening (TCP) or bound (UDP) tables: well under a
//! millisecond for thousands of listeners on a host with 100k connections,
//! where reading `/proc/net/tcp` costs hundreds. The dump answers for the
//! network namespace of the calling thread only; `netns` runs it once per
//! namespace.

use std::io;

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
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

    /// Dumps the ESTABLISHED TCP sockets of one family, giving each to
    /// `each` as its reply is read: nothing is kept, however many there are.
    pub fn established(&mut self, family: Family, each: &mut dyn FnMut(Connection)) -> io::Result<()> {
        self.request(Proto::Tcp, family, StateFlags::ESTABLISHED)?;
        loop {
            let len = self.socket.recv(&mut &mut self.buf[..], 0)?;
            if connections(&self.buf[..len], each)? {
                return Ok(());
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

/// Reads the replies of one `recv` of an established dump, giving each
/// connection to `each`: whether the dump is done. Pure, as [`replies`].
fn connections(bytes: &[u8], each: &mut dyn FnMut(Connection)) -> io::Result<bool> {
    each_reply(bytes, |response| {
        let id = &response.header.socket_id;
        each(Connection {
            local_addr: id.source_address,
            local_port: id.source_port,
            remote_addr: id.destination_address,
            remote_port: id.destination_port,
        });
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

    #[test]
    fn the_established_dump_gives_both_ends_of_a_loopback_connection_and_no_listener() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = l.local_addr().unwrap();
        let client = std::net::TcpStream::connect(server).unwrap();
        let client_addr = client.local_addr().unwrap();
        let mut seen = Vec::new();
        Diag::open()
            .unwrap()
            .established(Family::Ipv4, &mut |c| seen.push(c))
            .unwrap();
        let end = |local: std::net::SocketAddr, remote: std::net::SocketAddr| Connection {
            local_addr: local.ip(),
            local_port: local.port(),
            remote_addr: remote.ip(),
            remote_port: remote.port(),
        };
        // The accepted end sits in the listener's queue (not yet accepted): it is established all the same.
        assert!(seen.contains(&end(server, client_addr)), "{seen:?}");
        assert!(seen.contains(&end(client_addr, server)), "{seen:?}");
        assert!(
            !seen.iter().any(|c| c.local_port == server.port() && c.remote_port == 0),
            "the listener itself is not established: {seen:?}"
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
