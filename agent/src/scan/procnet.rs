//! Fallback enumeration from `/proc/<pid>/net/{tcp,tcp6,udp,udp6}`, for
//! kernels without sock_diag (or without `udp_diag`), and for namespaces the
//! agent may not enter.
//!
//! Slower than sock_diag (the kernel prints every socket in every state, and
//! the agent filters), and it cannot tell `IPV6_V6ONLY` per socket: an IPv6
//! wildcard socket is reported dual-stack when the namespace's default
//! (`net.ipv6.bindv6only`, passed in by the caller) says so.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use portwatch_common::{family_of, Family, Proto, State};
use procfs::net::{TcpNetEntries, UdpNetEntries};
use procfs::FromBufReadSI;

use super::RawSocket;

/// Bytes asked of the kernel per read of a `/proc/net` table.
const READ_CHUNK: usize = 256 * 1024;

/// Reads the table of one protocol and family under `net_dir`
/// (`/proc/thread-self/net` or `/proc/<pid>/net`) into `out`.
pub fn read(
    net_dir: &Path,
    proto: Proto,
    family: Family,
    listening_only: bool,
    bindv6only: bool,
    netns: u64,
    out: &mut Vec<RawSocket>,
) -> io::Result<()> {
    let name = match (proto, family) {
        (Proto::Tcp, Family::Ipv4) => "tcp",
        (Proto::Tcp, Family::Ipv6) => "tcp6",
        (Proto::Udp, Family::Ipv4) => "udp",
        (Proto::Udp, Family::Ipv6) => "udp6",
    };
    let path = net_dir.join(name);
    // The kernel prints the table in chunks of the reader's size; a socket
    // opened or closed between two chunks can make an entry repeat (or be
    // missed). A large buffer makes chunk boundaries rare; repeats are dropped below.
    let reader = BufReader::with_capacity(READ_CHUNK, File::open(&path)?);
    parse(reader, proto, family, listening_only, bindv6only, netns, out)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))
}

/// [`read`] of the table's text, from `reader`: pure, any bytes.
fn parse(
    reader: impl BufRead,
    proto: Proto,
    family: Family,
    listening_only: bool,
    bindv6only: bool,
    netns: u64,
    out: &mut Vec<RawSocket>,
) -> Result<(), procfs::ProcError> {
    let info = procfs::current_system_info();
    let rows: Vec<(std::net::SocketAddr, std::net::SocketAddr, u8, u32, u64)> = match proto {
        Proto::Tcp => TcpNetEntries::from_buf_read(reader, info)?
            .0
            .into_iter()
            .map(|e| (e.local_address, e.remote_address, e.state as u8, e.uid, e.inode))
            .collect(),
        Proto::Udp => UdpNetEntries::from_buf_read(reader, info)?
            .0
            .into_iter()
            .map(|e| (e.local_address, e.remote_address, e.state as u8, e.uid, e.inode))
            .collect(),
    };
    let mut seen = std::collections::HashSet::with_capacity(rows.len());
    for (local, remote, state, uid, inode) in rows {
        if inode != 0 && !seen.insert(inode) {
            continue;
        }
        let Some(state) = State::from_kernel(state) else {
            continue;
        };
        let listening = matches!(state, State::Listen | State::Unconn);
        let wanted = match (listening_only, proto) {
            (false, _) => true,
            (true, Proto::Tcp) => state == State::Listen,
            (true, Proto::Udp) => state == State::Unconn,
        };
        if !wanted {
            continue;
        }
        out.push(RawSocket {
            proto,
            family: family_of(local.ip()),
            local_addr: local.ip(),
            local_port: local.port(),
            peer: (!listening).then_some((remote.ip(), remote.port())),
            state,
            inode,
            uid,
            v6only: family == Family::Ipv6 && bindv6only,
            netns,
        });
    }
    Ok(())
}

/// The namespace default for `IPV6_V6ONLY` as the calling thread sees it.
pub fn bindv6only() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only").is_ok_and(|s| s.trim() == "1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, UdpSocket};

    #[test]
    fn fallback_sees_tcp_listener_and_unconnected_udp_of_this_process() {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let net = Path::new("/proc/thread-self/net");
        let mut out = Vec::new();
        read(net, Proto::Tcp, Family::Ipv4, true, false, 7, &mut out).unwrap();
        read(net, Proto::Udp, Family::Ipv4, true, false, 7, &mut out).unwrap();
        let t = out
            .iter()
            .find(|s| s.proto == Proto::Tcp && s.local_port == tcp.local_addr().unwrap().port())
            .unwrap();
        assert_eq!(t.state, State::Listen);
        assert!(t.inode != 0);
        assert_eq!(t.netns, 7);
        let u = out
            .iter()
            .find(|s| s.proto == Proto::Udp && s.local_port == udp.local_addr().unwrap().port())
            .unwrap();
        assert_eq!(u.state, State::Unconn);
        assert!(out.iter().all(|s| matches!(s.state, State::Listen | State::Unconn)));
    }

    mod properties {
        //! `/proc/net` tables come from the kernel, but a parser of text
        //! must not panic whatever it is.
        use super::*;
        use proptest::prelude::*;

        const HEADER: &str =
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

        /// Lines shaped like a table's, with fields anyhow.
        fn table() -> impl Strategy<Value = Vec<u8>> {
            let field = prop_oneof![
                "[0-9A-F]{8}:[0-9A-F]{4}",
                "[0-9A-F]{32}:[0-9A-F]{4}",
                "[0-9A-F]{1,40}(:[0-9A-F]{0,6})?",
                "[0-9]{1,21}",
                "[0-9A-F]{2}",
                "-?[0-9]{1,3}:",
                any::<String>(),
            ];
            let junk = prop::collection::vec(field, 0..18).prop_map(|fields| fields.join(" ") + "\n");
            let address = prop_oneof![
                8 => "[0-9A-F]{8}:[0-9A-F]{4}",
                8 => "[0-9A-F]{32}:[0-9A-F]{4}",
                1 => "[0-9A-Fa-z:]{0,12}",
            ];
            // An entry as the kernel prints it, each field mostly right.
            let entry = (
                address.clone(),
                address,
                prop_oneof![8 => Just("0A".to_owned()), 8 => Just("07".to_owned()), 2 => "0[1-9A-C]", 1 => "[0-9A-Z]{0,3}"],
                prop_oneof![12 => "[0-9]{1,9}", 1 => "-?[0-9]{1,22}", 1 => "[a-z]{0,3}"],
                prop_oneof![12 => "[0-9]{1,19}", 1 => "-?[0-9]{1,22}", 1 => "[a-z]{0,3}"],
            )
                .prop_map(|(local, remote, state, uid, inode)| {
                    format!(
                        "   0: {local} {remote} {state} 00000000:00000000 00:00000000 00000000 {uid:>6} 0 {inode} 1 \
                         0000000000000000 100 0 0 10 0\n"
                    )
                });
            let line = prop_oneof![12 => entry, 1 => junk];
            (prop::bool::weighted(0.9), prop::collection::vec(line, 0..6)).prop_map(|(header, lines)| {
                let head = if header { HEADER } else { "" };
                (head.to_owned() + &lines.concat()).into_bytes()
            })
        }

        proptest! {
            #[test]
            fn any_table_text_never_panics_the_parser(
                bytes in prop_oneof![table(), prop::collection::vec(any::<u8>(), 0..400)],
                udp in any::<bool>(),
                v6 in any::<bool>(),
                listening_only in any::<bool>(),
            ) {
                let proto = if udp { Proto::Udp } else { Proto::Tcp };
                let family = if v6 { Family::Ipv6 } else { Family::Ipv4 };
                let mut out = Vec::new();
                if parse(&bytes[..], proto, family, listening_only, false, 1, &mut out).is_ok() {
                    for s in &out {
                        prop_assert_eq!(s.family, family_of(s.local_addr));
                        prop_assert!(!listening_only || matches!(s.state, State::Listen | State::Unconn));
                    }
                }
            }
        }
    }

    #[test]
    fn an_entry_repeated_across_chunks_is_reported_once() {
        let dir = std::env::temp_dir().join(format!("pw-procnet-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let line = "   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A \
                    00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n";
        let header = "  sl  local_address remote_address st tx_queue rx_queue tr tm->when retrnsmt uid timeout inode\n";
        std::fs::write(dir.join("tcp6"), format!("{header}{line}{line}")).unwrap();
        let mut out = Vec::new();
        read(&dir, Proto::Tcp, Family::Ipv6, true, false, 1, &mut out).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].inode, 4242);
        assert_eq!(out[0].local_port, 8080);
        assert!(!out[0].v6only);
    }
}
