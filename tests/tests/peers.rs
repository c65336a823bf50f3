//! `portwatch-agent scan --peers` against real connections: listeners and
//! clients held by `pw-listen` processes, on this host's loopback and across
//! a veth pair between two network namespaces made for the test; and the
//! whole way round: a real agent `run --peers` shipping the summaries of a
//! real listener's loopback clients to a real collector, read back with
//! `portwatch peers`, polling and with kernel events.
//!
//! The namespace tests and the kernel-events one need root (`ip netns add`,
//! `ip link add`, loading the kernel program); CI runs as root, and without
//! root they fail saying so rather than passing unseen. The polling one needs
//! no root (the agent reads its own user's sockets' connections).

// The helpers below are test code: a failure is a panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use jiff::Timestamp;
use portwatch_tests::{
    create_token, eventually, is_root, portwatch_json, run_agent, Agent, Collector, Listeners, Netns, TempDir,
};
use serde_json::{json, Value};

/// `scan --json --peers ARGS`, as JSON objects; fails on a warning about peers.
fn scan_peers(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["scan", "--json", "--peers", "--no-firewall"];
    all.extend_from_slice(args);
    let out = run_agent(&all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scan {args:?} failed: {stderr}");
    assert!(!stderr.contains("peers not counted"), "{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().cloned().unwrap_or_default()
}

/// The `peers` object of the TCP listener on `addr`:`port`.
fn peers_of(sockets: &[Value], addr: &str, port: u16) -> Value {
    sockets
        .iter()
        .find(|s| s["proto"] == "tcp" && s["state"] == "LISTEN" && s["local_port"] == port && s["local_addr"] == addr)
        .unwrap_or_else(|| panic!("no TCP listener on {addr}:{port} in {sockets:#?}"))["peers"]
        .clone()
}

#[test]
fn loopback_clients_are_counted_on_the_listener_they_connected_to() {
    let servers = Listeners::start(&[], &["tcp4:127.0.0.1:0", "tcp4:0.0.0.0:0", "udp4:127.0.0.1:0"]).unwrap();
    let (lo, any) = (servers.port(0), servers.port(1));
    // Three remotes on the loopback listener (6 connections: 3, 2 and 1), two connections on the wildcard.
    let mut specs: Vec<String> = Vec::new();
    for (from, n) in [("127.0.0.2", 3), ("127.0.0.3", 2), ("127.0.0.4", 1)] {
        specs.extend((0..n).map(|_| format!("connect:127.0.0.1:{lo}={from}")));
    }
    specs.extend((0..2).map(|_| format!("connect:127.0.0.1:{any}")));
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let _clients = Listeners::start(&[], &specs).unwrap();

    let pid = servers.opened.pid.to_string();
    let sockets = scan_peers(&["--pid", &pid, "--peers-top", "2"]);
    assert_eq!(
        peers_of(&sockets, "127.0.0.1", lo),
        json!({
            "connections": 6,
            "distinct_remotes": 3,
            "top": [{"addr": "127.0.0.2", "connections": 3}, {"addr": "127.0.0.3", "connections": 2}],
            "classes": {"loopback": 6, "private": 0, "public": 0},
        })
    );
    assert_eq!(
        peers_of(&sockets, "0.0.0.0", any),
        json!({
            "connections": 2,
            "distinct_remotes": 1,
            "top": [{"addr": "127.0.0.1", "connections": 2}],
            "classes": {"loopback": 2, "private": 0, "public": 0},
        })
    );
    let udp = sockets.iter().find(|s| s["proto"] == "udp").expect("the UDP socket");
    assert_eq!(udp["peers"], Value::Null, "UDP has no peers");

    // Not asked: null.
    let out = run_agent(&["scan", "--json", "--no-firewall", "--pid", &pid]);
    let plain: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(peers_of(&plain, "127.0.0.1", lo), Value::Null);

    // The table's PEERS column.
    let out = run_agent(&["scan", "--peers", "--no-firewall", "--pid", &pid]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().next().unwrap_or_default().contains("FIREWALL  PEERS"),
        "{text}"
    );
    let row = |port: u16| {
        text.lines()
            .find(|l| l.starts_with("tcp ") && l.split_whitespace().nth(3) == Some(&*port.to_string()))
            .unwrap_or_else(|| panic!("no row for {port}: {text}"))
            .to_owned()
    };
    assert!(row(lo).contains("  6 conn / 3 remotes  "), "{text}");
    assert!(row(any).contains("  2 conn / 1 remote  "), "{text}");
}

/// Runs `ip ARGS`, panicking with its stderr when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("cannot run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_client_in_another_namespace_is_private_and_counted_on_the_wildcard_not_the_loopback_listener_root_only() {
    assert!(
        is_root(),
        "this test needs root (ip netns add, a veth pair between the namespaces): run the tests as root, as CI \
         does (sudo tests/run.sh)"
    );
    // Two namespaces joined by a veth pair: the server's 10.77.0.1, the client's 10.77.0.2. Deleting a
    // namespace (Netns's drop, also when an assertion fails) deletes its end of the pair, and so the pair.
    let server = Netns::create("peers-srv").unwrap();
    let client = Netns::create("peers-cli").unwrap();
    let (veth_srv, veth_cli) = (
        format!("pws{}", std::process::id()),
        format!("pwc{}", std::process::id()),
    );
    ip(&[
        "-n",
        &server.name,
        "link",
        "add",
        &veth_srv,
        "type",
        "veth",
        "peer",
        "name",
        &veth_cli,
        "netns",
        &client.name,
    ]);
    ip(&["-n", &server.name, "addr", "add", "10.77.0.1/24", "dev", &veth_srv]);
    ip(&["-n", &client.name, "addr", "add", "10.77.0.2/24", "dev", &veth_cli]);
    ip(&["-n", &server.name, "link", "set", &veth_srv, "up"]);
    ip(&["-n", &client.name, "link", "set", &veth_cli, "up"]);

    // On one port, a wildcard and a loopback listener (SO_REUSEPORT lets both listen); on another a
    // dual-stack ::, which takes IPv4 as IPv4-mapped IPv6. The namespace is the test's own: fixed ports.
    let in_server = ["ip", "netns", "exec", &server.name];
    let _listeners = Listeners::start(
        &in_server,
        &[
            "--reuseport",
            "tcp4:0.0.0.0:7300",
            "tcp4:127.0.0.1:7300",
            "tcp46:[::]:7301",
        ],
    )
    .unwrap();
    let in_client = ["ip", "netns", "exec", &client.name];
    let _from_client = Listeners::start(
        &in_client,
        &[
            "connect:10.77.0.1:7300",
            "connect:10.77.0.1:7300",
            "connect:10.77.0.1:7301",
        ],
    )
    .unwrap();
    let _from_loopback = Listeners::start(&in_server, &["connect:127.0.0.1:7300"]).unwrap();

    let sockets = scan_peers(&["--netns", &server.inode().unwrap().to_string()]);
    assert_eq!(
        peers_of(&sockets, "0.0.0.0", 7300),
        json!({
            "connections": 2,
            "distinct_remotes": 1,
            "top": [{"addr": "10.77.0.2", "connections": 2}],
            "classes": {"loopback": 0, "private": 2, "public": 0},
        })
    );
    assert_eq!(
        peers_of(&sockets, "127.0.0.1", 7300),
        json!({
            "connections": 1,
            "distinct_remotes": 1,
            "top": [{"addr": "127.0.0.1", "connections": 1}],
            "classes": {"loopback": 1, "private": 0, "public": 0},
        })
    );
    assert_eq!(
        peers_of(&sockets, "::", 7301),
        json!({
            "connections": 1,
            "distinct_remotes": 1,
            "top": [{"addr": "10.77.0.2", "connections": 1}],
            "classes": {"loopback": 0, "private": 1, "public": 0},
        }),
        "an IPv4 client of a dual-stack listener is shown as its IPv4 address"
    );
}

#[test]
fn peers_of_a_namespace_the_agent_cannot_enter_are_null_and_named_in_the_warning_root_only() {
    assert!(
        is_root(),
        "this test needs root (ip netns add, then setpriv to another user): run the tests as root, as CI does"
    );
    // A listener in a namespace, held by an unprivileged user: that user's agent reads the namespace's
    // listeners through the holder's /proc/<pid>/net, but cannot enter it to dump its connections.
    let ns = Netns::create("peers-unpriv").unwrap();
    let nobody = ["--reuid=65534", "--regid=65534", "--clear-groups"];
    let mut prefix = vec!["ip", "netns", "exec", &ns.name, "setpriv"];
    prefix.extend(nobody);
    let inside = Listeners::start(&prefix, &["tcp4:127.0.0.1:0"]).unwrap();
    let inode = ns.inode().unwrap().to_string();
    let out = Command::new("setpriv")
        .args(nobody)
        .arg(portwatch_tests::binary("portwatch-agent"))
        .args(["scan", "--json", "--peers", "--no-firewall", "--netns", &inode])
        .output()
        .expect("setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let sockets: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        peers_of(&sockets, "127.0.0.1", inside.port(0)),
        Value::Null,
        "{sockets:#?}"
    );
    assert!(
        stderr.contains(&format!("peers not counted in network namespace {inode}")),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one warning line: {stderr}");
}

#[test]
fn peers_top_needs_peers_and_a_number_from_1_to_100() {
    for (args, needle) in [
        (&["scan", "--peers-top", "3"][..], "--peers"),
        (&["scan", "--peers", "--peers-top", "0"], "from 1 to 100"),
        (&["scan", "--peers", "--peers-top", "101"], "from 1 to 100"),
    ] {
        let out = run_agent(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

/// A generous bound for the agent to start, scan and ship (every 200 ms),
/// and, after a change, for its per-listener minute to pass.
const SHIPPED: Duration = Duration::from_secs(120);

/// `portwatch --json peers --host HOST ARGS` as an array of points.
fn peers_points(collector: &Collector, token: &str, host: &str, args: &[&str]) -> Vec<Value> {
    try_points(collector, token, host, args).unwrap()
}

/// [`peers_points`], or why not (a host not heard from yet is a 404).
fn try_points(collector: &Collector, token: &str, host: &str, args: &[&str]) -> anyhow::Result<Vec<Value>> {
    let mut all = vec!["peers", "--host", host];
    all.extend_from_slice(args);
    let v = portwatch_json(&collector.url, token, &all)?;
    v.as_array()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("not an array: {v}"))
}

/// The agent `run --peers` (with `flags`) ships the summaries of a real
/// listener with real loopback clients: the count reads back with
/// `portwatch peers`, a moment before the agent's first point answers none,
/// and after one client leaves, a new point (at most one a minute) says so
/// while a moment between the two still answers the first.
/// Returns how the agent saw its listeners (`detection`), and its log.
fn a_running_agent_ships_peers_that_portwatch_peers_reads_back(tag: &str, flags: &[&str]) -> (String, String) {
    let dir = TempDir::new(tag).unwrap();
    let db = dir.path.join("collector.db");
    let host = format!("peers-{tag}");
    let agent_token = create_token(&db, &["--host", &host]).unwrap();
    let read = create_token(&db, &["--role", "read", "--name", "ops"]).unwrap();
    let collector = Collector::start(&db, 0).unwrap();

    let server = Listeners::start(&[], &["tcp4:127.0.0.1:0"]).unwrap();
    let port = server.port(0);
    let p = port.to_string();
    let kept: Vec<String> = (0..2).map(|_| format!("connect:127.0.0.1:{port}=127.0.0.2")).collect();
    let kept: Vec<&str> = kept.iter().map(String::as_str).collect();
    let _kept = Listeners::start(&[], &kept).unwrap();
    let leaving = Listeners::start(&[], &[&format!("connect:127.0.0.1:{port}=127.0.0.3")]).unwrap();
    let before = Timestamp::now();
    std::thread::sleep(Duration::from_millis(20));

    let mut extra = vec!["--peers", "--peers-top", "3", "--no-firewall"];
    extra.extend_from_slice(flags);
    let spool = dir.path.join("spool");
    let agent = Agent::start_logged_at(
        Some("portwatch_agent=info"),
        &collector.url,
        &agent_token,
        &host,
        "200ms",
        &spool,
        &extra,
    )
    .unwrap();

    let first = eventually(SHIPPED, || {
        let points = try_points(&collector, &read, &host, &["--port", &p]).ok()?;
        (points.len() == 1 && points[0]["connections"] == 3).then(|| points[0].clone())
    })
    .unwrap_or_else(|| {
        panic!(
            "no point with 3 connections on :{port}: {:?}\nagent log:\n{}",
            try_points(&collector, &read, &host, &["--port", &p]),
            agent.log()
        )
    });
    assert_eq!(first["addr"], "127.0.0.1");
    assert_eq!(first["port"], port);
    assert_eq!(first["proto"], "tcp");
    assert_eq!(first["distinct_remotes"], 2);
    assert_eq!(
        first["top"],
        json!([{"addr": "127.0.0.2", "connections": 2}, {"addr": "127.0.0.3", "connections": 1}])
    );
    assert_eq!(first["classes"], json!({"loopback": 3, "private": 0, "public": 0}));
    let before_text = before.to_string();
    assert_eq!(
        peers_points(&collector, &read, &host, &["--port", &p, "--at", &before_text]),
        Vec::<Value>::new(),
        "before the agent's first point: none"
    );

    // A listener opened after the agent started, and its client.
    let late = Listeners::start(&[], &["tcp4:127.0.0.1:0"]).unwrap();
    let late_port = late.port(0);
    let _late_client = Listeners::start(&[], &[&format!("connect:127.0.0.1:{late_port}=127.0.0.5")]).unwrap();

    // One client leaves and another comes: the change is shipped, within a
    // minute of the first point. (With kernel events no dump of the
    // connections runs between the two points: the events tell both.)
    drop(leaving);
    let _came = Listeners::start(&[], &[&format!("connect:127.0.0.1:{port}=127.0.0.4")]).unwrap();
    let second = eventually(SHIPPED, || {
        let points = peers_points(&collector, &read, &host, &["--port", &p]);
        (points.len() == 1 && points[0]["distinct_remotes"] == 2 && points[0]["top"][1]["addr"] == "127.0.0.4")
            .then(|| points[0].clone())
    })
    .unwrap_or_else(|| panic!("the change was never shipped\nagent log:\n{}", agent.log()));
    assert_eq!(second["connections"], 3, "{second}");
    assert_eq!(
        second["top"],
        json!([{"addr": "127.0.0.2", "connections": 2}, {"addr": "127.0.0.4", "connections": 1}])
    );
    let late_p = late_port.to_string();
    let late_points = eventually(SHIPPED, || {
        let points = peers_points(&collector, &read, &host, &["--port", &late_p]);
        (points.len() == 1 && points[0]["connections"] == 1).then_some(points)
    })
    .unwrap_or_else(|| panic!("no point for the listener opened late\nagent log:\n{}", agent.log()));
    assert_eq!(late_points[0]["top"], json!([{"addr": "127.0.0.5", "connections": 1}]));
    let (t1, t2): (Timestamp, Timestamp) = (
        first["at"].as_str().unwrap().parse().unwrap(),
        second["at"].as_str().unwrap().parse().unwrap(),
    );
    assert!(
        t2.duration_since(t1) >= jiff::SignedDuration::from_secs(60),
        "at most one point a minute per listener: {t1} then {t2}"
    );
    let between = (t1 + jiff::SignedDuration::from_secs(30)).to_string();
    let then = peers_points(&collector, &read, &host, &["--port", &p, "--at", &between]);
    assert_eq!(then, vec![first.clone()], "a moment between the points: the older one");
    let window = peers_points(&collector, &read, &host, &["--port", &p, "--since", &before_text]);
    assert_eq!(
        window,
        vec![first, second],
        "the window: both points, oldest first, nothing else"
    );

    // The table, as people read it.
    let out = Command::new(portwatch_tests::binary("portwatch"))
        .args([
            "--collector",
            &collector.url,
            "--token",
            &read,
            "peers",
            "--host",
            &host,
            "--port",
            &p,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.starts_with("LISTENER  ") && text.lines().next().unwrap().ends_with("TOP REMOTES"),
        "{text}"
    );
    let row = text.lines().nth(1).unwrap_or_default();
    assert!(row.starts_with(&format!("127.0.0.1:{port}  ")), "{text}");
    assert!(row.ends_with("127.0.0.2 (2), 127.0.0.4 (1)"), "{text}");
    // How the agent saw its listeners, as the collector has it.
    let hosts = portwatch_json(&collector.url, &read, &["hosts"]).unwrap();
    let detection = hosts[0]["detection"].as_str().unwrap_or_default().to_owned();
    let log = agent.log();
    drop(agent);
    (detection, log)
}

#[test]
fn polling_the_daemon_ships_a_listeners_peers_when_they_change_and_portwatch_peers_reads_them() {
    let (detection, _) = a_running_agent_ships_peers_that_portwatch_peers_reads_back("peers-poll", &["--no-events"]);
    assert_eq!(detection, "polling");
}

#[test]
fn as_root_with_kernel_events_the_daemon_counts_a_listeners_peers_from_the_connections_events() {
    assert!(
        is_root(),
        "this test needs root (the agent loads its kernel program for events): run the tests as root, as CI does"
    );
    let (detection, log) = a_running_agent_ships_peers_that_portwatch_peers_reads_back("peers-events", &[]);
    assert_eq!(
        detection, "events",
        "the agent fell back to polling: this test is for kernel events"
    );
    // Counted from the connections' events: the program was loaded with them,
    // and no dump (at start, and at a safety scan every 5 minutes) found what
    // events had not told.
    assert!(log.contains("inbound connections for the peers"), "{log}");
    assert!(!log.contains("disagreed with kernel events"), "{log}");
}

#[test]
fn as_root_two_thousand_connections_coming_and_going_under_kernel_events_agree_with_every_dump() {
    assert!(
        is_root(),
        "this test needs root (the agent loads its kernel program for events): run the tests as root, as CI does"
    );
    const CONNECTIONS: usize = 2_000;
    const KEPT: usize = 50;
    let dir = TempDir::new("peers-churn").unwrap();
    let db = dir.path.join("collector.db");
    let host = "peers-churn";
    let agent_token = create_token(&db, &["--host", host]).unwrap();
    let read = create_token(&db, &["--role", "read", "--name", "ops"]).unwrap();
    let collector = Collector::start(&db, 0).unwrap();
    // Open before the agent: its port is one the agent gives the kernel program.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepting = std::thread::spawn(move || {
        let accepted: Vec<_> = (0..CONNECTIONS).map(|_| listener.accept().unwrap().0).collect();
        (listener, accepted)
    });
    // A dump of the connections every second (with the safety scan): each
    // must find what the events since the one before told, no more, no less.
    let flags = ["--peers", "--no-firewall", "--safety-scan-interval", "1s"];
    let agent = Agent::start_logged_at(
        Some("portwatch_agent=debug"),
        &collector.url,
        &agent_token,
        host,
        "200ms",
        &dir.path.join("spool"),
        &flags,
    )
    .unwrap();
    let agreed = |log: &str| log.matches("the dump of connections agreed with kernel events").count();
    eventually(SHIPPED, || (agreed(&agent.log()) > 0).then_some(()))
        .unwrap_or_else(|| panic!("no dump of connections settled\nagent log:\n{}", agent.log()));

    let mut clients: Vec<std::net::TcpStream> = (0..CONNECTIONS)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let _accepted = accepting.join().unwrap();
    clients.truncate(KEPT);
    let after_churn = agreed(&agent.log());
    // Two more dumps settled after the churn: the book and the kernel agree.
    eventually(SHIPPED, || (agreed(&agent.log()) >= after_churn + 2).then_some(()))
        .unwrap_or_else(|| panic!("no dump settled after the churn\nagent log:\n{}", agent.log()));
    let log = agent.log();
    assert!(log.contains("inbound connections for the peers"), "{log}");
    assert!(!log.contains("disagreed with kernel events"), "{log}");
    assert!(!log.contains("kernel events of connections lost"), "{log}");

    // What the collector has: the kept connections.
    let p = port.to_string();
    eventually(SHIPPED, || {
        let points = try_points(&collector, &read, host, &["--port", &p]).ok()?;
        (points.len() == 1 && points[0]["connections"] == KEPT).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "no point with {KEPT} connections: {:?}\nagent log:\n{}",
            try_points(&collector, &read, host, &["--port", &p]),
            agent.log()
        )
    });
    drop(clients);
}

/// The `suspicious-peer` alerts of `host` on `port`, any state. (The agent
/// sees the whole machine: the other tests' listeners, whose loopback
/// clients may come from a listed address too, are on other ports.)
fn suspicious_alerts(collector: &Collector, token: &str, host: &str, port: u16) -> Vec<Value> {
    // A host not heard from yet is a 404: none yet.
    let Ok(all) = portwatch_json(&collector.url, token, &["alerts", "--state", "all", "--host", host]) else {
        return Vec::new();
    };
    all.as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["kind"] == "suspicious-peer" && a["finding"]["local_port"] == port)
        .cloned()
        .collect()
}

/// The whole way round for threat lists: a real agent ships the peers of a
/// real listener, one client of which comes from an address a list of the
/// collector's config holds; the collector raises `suspicious-peer` for it
/// (as serious as the list says), none for the other client, and resolves
/// it once the agent's next point no longer names the address. (Loopback
/// clients, so `[threat] allow = []`: the default allowlist would allow them.)
#[test]
fn a_listed_remote_connected_to_a_listener_raises_a_suspicious_peer_alert_that_resolves_when_it_leaves() {
    let dir = TempDir::new("peers-threat").unwrap();
    let db = dir.path.join("collector.db");
    let host = "peers-threat".to_owned();
    let agent_token = create_token(&db, &["--host", &host]).unwrap();
    let read = create_token(&db, &["--role", "read", "--name", "ops"]).unwrap();
    let list = dir.path.join("listed.netset");
    std::fs::write(&list, "# the test's list\n127.0.0.3\n").unwrap();
    let config = dir.path.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "db = {db:?}\n[threat]\nallow = []\n[[threat.list]]\nname = \"test-list\"\npath = {list:?}\n\
             format = \"netset\"\nseverity = \"critical\"\n"
        ),
    )
    .unwrap();
    let collector = Collector::serve(
        &db,
        &[
            "--config".as_ref(),
            config.as_os_str(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
        ],
    )
    .unwrap();

    let server = Listeners::start(&[], &["tcp4:127.0.0.1:0"]).unwrap();
    let port = server.port(0);
    let _clean = Listeners::start(&[], &[&format!("connect:127.0.0.1:{port}=127.0.0.2")]).unwrap();
    let listed = Listeners::start(&[], &[&format!("connect:127.0.0.1:{port}=127.0.0.3")]).unwrap();
    let spool = dir.path.join("spool");
    let flags = ["--peers", "--no-firewall", "--no-events"];
    let agent = Agent::start_logged(&collector.url, &agent_token, &host, "200ms", &spool, &flags).unwrap();

    let raised = eventually(SHIPPED, || {
        let alerts = suspicious_alerts(&collector, &read, &host, port);
        (!alerts.is_empty()).then_some(alerts)
    })
    .unwrap_or_else(|| panic!("no suspicious-peer alert\nagent log:\n{}", agent.log()));
    assert_eq!(raised.len(), 1, "one listed client, one alert: {raised:?}");
    let alert = &raised[0];
    assert_eq!(
        (&alert["state"], &alert["severity"]),
        (&json!("open"), &json!("critical"))
    );
    assert!(alert["key"].as_str().unwrap().ends_with(":127.0.0.3"), "{alert}");
    assert_eq!(alert["finding"]["local_port"], port);
    let message = alert["finding"]["message"].as_str().unwrap();
    assert!(
        message.contains("127.0.0.3 held 1 connection(s)") && message.contains("test-list (127.0.0.3/32)"),
        "{message}"
    );

    // The listed client leaves: the next point (a minute after the first at
    // the soonest) no longer names it, and the alert resolves.
    drop(listed);
    let resolved = eventually(SHIPPED, || {
        let alerts = suspicious_alerts(&collector, &read, &host, port);
        alerts.iter().all(|a| a["state"] == "resolved").then_some(alerts)
    })
    .unwrap_or_else(|| panic!("the alert never resolved\nagent log:\n{}", agent.log()));
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    drop(agent);
}
