//! `portwatch-agent scan` against real sockets held by real processes.

use std::io::Read;
use std::process::{Command, Stdio};

use portwatch_common::{Exposure, Family, Proto, State};
use portwatch_tests::*;

/// One socket of each kind: v4 loopback, v6-only loopback, dual-stack wildcard, UDP v4 wildcard, UDP v6 loopback.
const EVERY_KIND: [&str; 5] = [
    "tcp4:127.0.0.1:0",
    "tcp6:[::1]:0",
    "tcp46:[::]:0",
    "udp4:0.0.0.0:0",
    "udp6:[::1]:0",
];

#[test]
fn scan_json_reports_each_kind_of_listener_with_its_pid() {
    let l = Listeners::start(
        &[],
        &[
            EVERY_KIND[0],
            EVERY_KIND[1],
            EVERY_KIND[2],
            EVERY_KIND[3],
            EVERY_KIND[4],
            "tcp4:0.0.0.0:0",
        ],
    )
    .unwrap();
    let pid = l.opened.pid.to_string();
    let sockets = scan_json(&["--pid", &pid]);
    assert_eq!(sockets.len(), 6, "{sockets:#?}");

    let expect = [
        (
            0,
            Proto::Tcp,
            Family::Ipv4,
            "127.0.0.1",
            State::Listen,
            Exposure::Loopback,
            false,
        ),
        (
            1,
            Proto::Tcp,
            Family::Ipv6,
            "::1",
            State::Listen,
            Exposure::Loopback,
            false,
        ),
        (
            2,
            Proto::Tcp,
            Family::Ipv6,
            "::",
            State::Listen,
            Exposure::Wildcard,
            true,
        ),
        (
            3,
            Proto::Udp,
            Family::Ipv4,
            "0.0.0.0",
            State::Unconn,
            Exposure::Wildcard,
            false,
        ),
        (
            4,
            Proto::Udp,
            Family::Ipv6,
            "::1",
            State::Unconn,
            Exposure::Loopback,
            false,
        ),
        (
            5,
            Proto::Tcp,
            Family::Ipv4,
            "0.0.0.0",
            State::Listen,
            Exposure::Wildcard,
            false,
        ),
    ];
    for (i, proto, family, addr, state, exposure, dual) in expect {
        let port = l.port(i);
        let found: Vec<_> = on_port(&sockets, port)
            .into_iter()
            .filter(|s| s.proto == proto)
            .collect();
        assert_eq!(found.len(), 1, "socket {i} on port {port}: {sockets:#?}");
        let s = found[0];
        assert_eq!(
            (s.family, s.local_addr.to_string(), s.state),
            (family, addr.to_owned(), state),
            "socket {i}"
        );
        assert_eq!((s.exposure, s.dual_stack), (exposure, dual), "socket {i}");
        assert_eq!(pids_of(s), vec![l.opened.pid], "socket {i}");
        assert!(s.inode != 0);
        let p = &s.processes[0];
        assert_eq!(&*p.name, "pw-listen");
        assert!(p.exe.as_deref().is_some_and(|e| e.ends_with("/pw-listen")), "{p:?}");
        assert!(
            p.cmdline.as_deref().is_some_and(|c| c.contains("tcp46:[::]:0")),
            "{p:?}"
        );
        assert_eq!(p.uid, Some(rustix::process::geteuid().as_raw()));
        assert_eq!(s.uid, rustix::process::geteuid().as_raw());
    }
}

#[test]
fn shared_prefork_socket_lists_every_owner() {
    let l = Listeners::start(&[], &["--children", "3", "tcp4:127.0.0.1:0", "udp4:127.0.0.1:0"]).unwrap();
    assert_eq!(l.pids().len(), 4);
    let sockets = scan_json(&["--port", &l.port(0).to_string(), "--port", &l.port(1).to_string()]);
    let mine: Vec<_> = sockets
        .iter()
        .filter(|s| s.processes.iter().any(|p| p.pid == l.opened.pid))
        .collect();
    assert_eq!(mine.len(), 2, "{sockets:#?}");
    for s in mine {
        assert_eq!(pids_of(s), l.pids(), "{s:#?}");
    }
}

#[test]
fn established_connections_appear_only_with_all() {
    let l = Listeners::start(&[], &["conn4"]).unwrap();
    let (client_port, pid) = (l.port(0).to_string(), l.opened.pid.to_string());
    let listening = scan_json(&["--port", &client_port, "--pid", &pid]);
    assert!(listening.is_empty(), "{listening:#?}");
    let all = scan_json(&["--all", "--port", &client_port, "--pid", &pid]);
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0].state, State::Established);
    assert_eq!(all[0].peer_addr.map(|a| a.to_string()).as_deref(), Some("127.0.0.1"));
    assert_eq!(pids_of(&all[0]), vec![l.opened.pid]);
}

#[test]
fn filters_select_by_protocol_exposure_and_process() {
    let l = Listeners::start(&[], &["tcp4:127.0.0.1:0", "tcp4:0.0.0.0:0", "udp4:0.0.0.0:0"]).unwrap();
    let pid = l.opened.pid.to_string();
    let ports = |s: Vec<portwatch_common::Socket>| {
        let mut p: Vec<u16> = s.iter().map(|s| s.local_port).collect();
        p.sort_unstable();
        p
    };
    let sorted = |mut v: Vec<u16>| {
        v.sort_unstable();
        v
    };
    assert_eq!(
        ports(scan_json(&["--pid", &pid, "--exposed"])),
        sorted(vec![l.port(1), l.port(2)])
    );
    assert_eq!(ports(scan_json(&["--pid", &pid, "--proto", "udp"])), vec![l.port(2)]);
    assert_eq!(
        ports(scan_json(&["--pid", &pid, "--proto", "tcp", "--exposed"])),
        vec![l.port(1)]
    );
    let by_name = scan_json(&["--process", "pw-listen", "--port", &l.port(0).to_string()]);
    assert_eq!(ports(by_name), vec![l.port(0)]);
    assert!(scan_json(&["--process", "no-such-process-name", "--pid", &pid]).is_empty());
}

#[test]
fn listener_inside_a_network_namespace_is_reported_root_only() {
    if !is_root() {
        eprintln!("NOT RUN: listener_inside_a_network_namespace needs root (ip netns add); CI runs as root");
        return;
    }
    let ns = Netns::create("scan").unwrap();
    let l = Listeners::start(&["ip", "netns", "exec", &ns.name], &["tcp4:127.0.0.1:0", "udp6:[::]:0"]).unwrap();
    let inode = ns.inode().unwrap();
    let sockets = scan_json(&["--netns", &inode.to_string()]);
    assert_eq!(sockets.len(), 2, "{sockets:#?}");
    for (i, proto) in [(0, Proto::Tcp), (1, Proto::Udp)] {
        let s = on_port(&sockets, l.port(i))
            .into_iter()
            .find(|s| s.proto == proto)
            .unwrap();
        assert_eq!(s.netns, inode);
        assert_eq!(pids_of(s), vec![l.opened.pid]);
    }
    // Plain `ss` in the host namespace does not see it; the agent does without --netns too.
    let all = scan_json(&["--port", &l.port(0).to_string()]);
    assert!(all.iter().any(|s| s.netns == inode), "{all:#?}");
}

#[test]
fn listener_in_an_unnamed_namespace_like_a_containers_is_found_through_its_process_root_only() {
    if !is_root() {
        eprintln!("NOT RUN: a new network namespace (unshare --net) needs root; CI runs as root");
        return;
    }
    // No /run/netns mount: the namespace is known only through /proc/<pid>/ns/net, as a container's is.
    let l = Listeners::start(&["unshare", "--net"], &["tcp4:0.0.0.0:0", "udp6:[::]:0"]).unwrap();
    let netns = rustix::fs::stat(format!("/proc/{}/ns/net", l.opened.pid))
        .unwrap()
        .st_ino;
    assert_ne!(netns, own_netns().unwrap());
    let sockets = scan_json(&["--netns", &netns.to_string()]);
    assert_eq!(sockets.len(), 2, "{sockets:#?}");
    for s in &sockets {
        assert_eq!(pids_of(s), vec![l.opened.pid]);
        assert_eq!(s.exposure, Exposure::Wildcard);
    }
}

#[test]
fn empty_network_namespace_from_ip_netns_is_scanned_without_complaint_root_only() {
    if !is_root() {
        eprintln!("NOT RUN: empty_network_namespace needs root (ip netns add); CI runs as root");
        return;
    }
    let ns = Netns::create("empty").unwrap();
    let out = run_agent(&["scan", "--json", "--netns", &ns.inode().unwrap().to_string()]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn unprivileged_scan_lists_sockets_without_owners_and_says_which_privilege_fixes_it_root_only() {
    if !is_root() {
        eprintln!("NOT RUN: unprivileged scan needs root to drop to another user; CI runs as root");
        return;
    }
    let l = Listeners::start(&[], &["tcp4:127.0.0.1:0"]).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(binary("portwatch-agent"))
        .args([
            "scan",
            "--json",
            "--port",
            &l.port(0).to_string(),
            "--netns",
            &own_netns().unwrap().to_string(),
        ])
        .output()
        .expect("setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let sockets: Vec<portwatch_common::Socket> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sockets.len(), 1, "{sockets:#?}");
    assert!(sockets[0].processes.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("1 of 1 socket could not be attributed"), "{stderr}");
    assert!(stderr.contains("CAP_SYS_PTRACE") && stderr.contains("root"), "{stderr}");
}

#[test]
fn unprivileged_scan_names_the_namespaces_it_could_not_enter_root_only() {
    if !is_root() {
        eprintln!("NOT RUN: needs root to make a namespace and drop to another user; CI runs as root");
        return;
    }
    let ns = Netns::create("unpriv").unwrap();
    let _inside = Listeners::start(&["ip", "netns", "exec", &ns.name], &["tcp4:127.0.0.1:0"]).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(binary("portwatch-agent"))
        .args(["scan", "--json"])
        .output()
        .expect("setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let inode = ns.inode().unwrap().to_string();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("not scanned") && stderr.contains(&inode), "{stderr}");
    assert!(stderr.contains("CAP_SYS_ADMIN"), "{stderr}");
    let sockets: Vec<portwatch_common::Socket> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(sockets.iter().all(|s| s.netns.to_string() != inode));
}

#[test]
fn table_is_sorted_by_port_with_a_header() {
    let _l = Listeners::start(&[], &["tcp4:127.0.0.1:0", "udp4:127.0.0.1:0", "tcp6:[::1]:0"]).unwrap();
    let out = run_agent(&["scan"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("PROTO  ") && header.ends_with("PROCESSES"),
        "{header}"
    );
    let port_col = header.find("PORT").unwrap();
    let ports: Vec<u16> = lines
        .map(|l| l[port_col..].split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert!(ports.len() >= 3);
    assert!(ports.windows(2).all(|w| w[0] <= w[1]), "{text}");
}

#[test]
fn csv_has_a_header_and_a_row_per_owner() {
    let l = Listeners::start(&[], &["--children", "1", "tcp4:127.0.0.1:0"]).unwrap();
    let pid = l.opened.pid.to_string();
    let out = run_agent(&[
        "scan",
        "--format",
        "csv",
        "--port",
        &l.port(0).to_string(),
        "--pid",
        &pid,
    ]);
    assert!(out.status.success());
    let mut reader = csv::Reader::from_reader(out.stdout.as_slice());
    let headers = reader.headers().unwrap().clone();
    let pid_col = headers.iter().position(|h| h == "pid").unwrap();
    let mut pids: Vec<u32> = reader.records().map(|r| r.unwrap()[pid_col].parse().unwrap()).collect();
    pids.sort_unstable();
    assert_eq!(pids, l.pids());
}

#[test]
fn usage_errors_exit_2_and_say_what_is_wrong() {
    for (args, hint) in [
        (vec!["scan", "--proto", "sctp"], "possible values: tcp, udp"),
        (vec!["scan", "--port", "70000"], "70000"),
        (vec!["scan", "--json", "--format", "csv"], "cannot be used with"),
        (vec!["frobnicate"], "unrecognized subcommand"),
    ] {
        let out = run_agent(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(hint), "{args:?}: {stderr}");
    }
}

#[test]
fn help_explains_the_scan_and_its_privileges() {
    let out = run_agent(&["scan", "--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--json",
        "--exposed",
        "--netns",
        "CAP_SYS_PTRACE",
        "Exit status",
        "Examples",
    ] {
        assert!(text.contains(needle), "scan --help lacks {needle}:\n{text}");
    }
}

#[test]
fn a_reader_closing_the_pipe_early_is_not_an_error() {
    let _l = Listeners::start(&[], &["tcp4:127.0.0.1:0", "tcp4:127.0.0.1:0", "tcp4:127.0.0.1:0"]).unwrap();
    let mut child = agent()
        .args(["scan", "--all"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let status = child.wait().unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(status.success(), "{status}: {stderr}");
}

#[test]
fn proc_net_fallback_reports_what_sock_diag_reports() {
    let host = Listeners::start(&[], &EVERY_KIND).unwrap();
    // With root, a listener in another namespace checks the fallback after setns too.
    let ns = is_root().then(|| Netns::create("procnet").unwrap());
    let inside = ns.as_ref().map(|ns| {
        Listeners::start(
            &["ip", "netns", "exec", &ns.name],
            &["tcp4:0.0.0.0:0", "udp4:127.0.0.1:0"],
        )
        .unwrap()
    });
    if ns.is_none() {
        eprintln!("NOT RUN (part): the fallback inside another namespace needs root; CI runs as root");
    }
    let mut pids = vec![host.opened.pid];
    pids.extend(inside.iter().map(|l| l.opened.pid));
    let key = |s: &portwatch_common::Socket| {
        (
            s.proto,
            s.family,
            s.local_addr,
            s.local_port,
            s.state,
            s.inode,
            s.uid,
            s.netns,
            s.dual_stack,
            pids_of(s),
        )
    };
    for pid in pids {
        let pid = pid.to_string();
        // /proc/net tables are printed in chunks, and other tests open and close
        // sockets meanwhile: an entry can be missed at a chunk boundary. A real
        // disagreement persists over every try.
        let mut last = None;
        for _ in 0..5 {
            let mut diag: Vec<_> = scan_json(&["--pid", &pid]).iter().map(key).collect();
            let mut proc_net: Vec<_> = scan_json(&["--pid", &pid, "--proc-net"]).iter().map(key).collect();
            diag.sort();
            proc_net.sort();
            assert!(!diag.is_empty());
            if diag == proc_net {
                last = None;
                break;
            }
            last = Some((diag, proc_net));
        }
        if let Some((diag, proc_net)) = last {
            panic!("pid {pid}: sock_diag {diag:?}\n/proc/net {proc_net:?}");
        }
    }
}
