//! Which sockets a `scan` shows: the `--port`, `--proto`, `--pid`,
//! `--process`, `--exposed` and `--netns` filters, all of which must match.

use portwatch_common::{Exposure, Proto, Socket};

/// The filters of one `scan`; an empty filter keeps everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Keep sockets on one of these local ports (empty: any).
    pub ports: Vec<u16>,
    /// Keep sockets of this protocol.
    pub proto: Option<Proto>,
    /// Keep sockets held by this pid.
    pub pid: Option<u32>,
    /// Keep sockets held by a process of this name (`comm`) or executable file name.
    pub process: Option<String>,
    /// Keep sockets reachable from outside their namespace (not loopback).
    pub exposed: bool,
    /// Keep sockets of this network namespace (inode).
    pub netns: Option<u64>,
}

impl Filter {
    /// Whether `socket` passes every filter.
    pub fn matches(&self, socket: &Socket) -> bool {
        (self.ports.is_empty() || self.ports.contains(&socket.local_port))
            && self.proto.is_none_or(|p| p == socket.proto)
            && self.pid.is_none_or(|pid| socket.processes.iter().any(|p| p.pid == pid))
            && self.process.as_deref().is_none_or(|name| {
                socket
                    .processes
                    .iter()
                    .any(|p| &*p.name == name || p.exe.as_deref().and_then(|e| e.rsplit('/').next()) == Some(name))
            })
            && (!self.exposed || socket.exposure != Exposure::Loopback)
            && self.netns.is_none_or(|ns| ns == socket.netns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portwatch_common::{Process, State};

    fn socket(port: u16, addr: &str, proto: Proto, holders: &[(u32, &str, &str)]) -> Socket {
        let local_addr = addr.parse().unwrap();
        Socket {
            proto,
            family: portwatch_common::family_of(local_addr),
            local_addr,
            local_port: port,
            peer_addr: None,
            peer_port: None,
            state: State::Listen,
            inode: 1,
            uid: 0,
            user: None,
            netns: 10,
            exposure: Exposure::of(local_addr),
            dual_stack: false,
            processes: holders
                .iter()
                .map(|&(pid, name, exe)| {
                    std::sync::Arc::new(Process {
                        pid,
                        name: name.into(),
                        cmdline: None,
                        exe: Some(exe.into()),
                        uid: None,
                        user: None,
                        container: None,
                        unit: None,
                    })
                })
                .collect(),
        }
    }

    #[test]
    fn empty_filter_keeps_everything() {
        assert!(Filter::default().matches(&socket(1, "127.0.0.1", Proto::Udp, &[])));
    }

    #[test]
    fn each_filter_narrows_and_all_must_match() {
        let nginx = socket(
            80,
            "0.0.0.0",
            Proto::Tcp,
            &[(10, "nginx", "/usr/sbin/nginx"), (11, "nginx", "/usr/sbin/nginx")],
        );
        let dns = socket(
            53,
            "127.0.0.53",
            Proto::Udp,
            &[(20, "systemd-resolve", "/usr/lib/systemd/systemd-resolved")],
        );
        let f = |f: Filter| (f.matches(&nginx), f.matches(&dns));

        assert_eq!(
            f(Filter {
                ports: vec![80],
                ..Default::default()
            }),
            (true, false)
        );
        assert_eq!(
            f(Filter {
                ports: vec![80, 53],
                ..Default::default()
            }),
            (true, true)
        );
        assert_eq!(
            f(Filter {
                proto: Some(Proto::Udp),
                ..Default::default()
            }),
            (false, true)
        );
        assert_eq!(
            f(Filter {
                pid: Some(11),
                ..Default::default()
            }),
            (true, false)
        );
        assert_eq!(
            f(Filter {
                process: Some("nginx".into()),
                ..Default::default()
            }),
            (true, false)
        );
        // The exe file name matches too: comm is cut at 15 bytes.
        assert_eq!(
            f(Filter {
                process: Some("systemd-resolved".into()),
                ..Default::default()
            }),
            (false, true)
        );
        assert_eq!(
            f(Filter {
                exposed: true,
                ..Default::default()
            }),
            (true, false)
        );
        assert_eq!(
            f(Filter {
                netns: Some(10),
                ..Default::default()
            }),
            (true, true)
        );
        assert_eq!(
            f(Filter {
                netns: Some(11),
                ..Default::default()
            }),
            (false, false)
        );
        assert_eq!(
            f(Filter {
                ports: vec![80],
                proto: Some(Proto::Udp),
                ..Default::default()
            }),
            (false, false)
        );
    }
}
