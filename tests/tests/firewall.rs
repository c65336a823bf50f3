//! Firewall-aware reachability, end to end: real nftables rules loaded with
//! `nft -f` in a network namespace made for the test, a real listener in it,
//! and `portwatch-agent scan --json` reading the ruleset from inside it.
//!
//! Legacy iptables likewise: real `iptables-legacy` rules in a namespace,
//! read by the agent with `iptables-legacy-save` there.
//!
//! Every test needs root (`ip netns add`, `nft -f`, `iptables-legacy`) and
//! the `nft` and `iptables-legacy` binaries (`tests/run.sh` installs
//! nftables and iptables); CI runs as root.

// The helpers below are test code: a failure is a panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use portwatch_tests::{is_root, run_agent, Listeners, Netns, TempDir};
use serde_json::Value;

fn require_root(test: &str) {
    assert!(
        is_root(),
        "{test} needs root (ip netns add, nft -f in the namespace): run the tests as root, as CI does (sudo tests/run.sh)"
    );
}

/// A namespace with `rules` loaded and a listener on each of `specs`.
struct Setup {
    ns: Netns,
    _listeners: Listeners,
    _dir: TempDir,
}

fn setup(tag: &str, rules: &str, specs: &[&str]) -> Setup {
    let ns = Netns::create(tag).unwrap();
    let dir = TempDir::new(tag).unwrap();
    let file = dir.path.join("rules.nft");
    std::fs::write(&file, rules).unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "nft", "-f"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run nft (install nftables; tests/run.sh does): {e}"));
    assert!(
        out.status.success(),
        "nft -f failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listeners = Listeners::start(&["ip", "netns", "exec", &ns.name], specs).unwrap();
    Setup {
        ns,
        _listeners: listeners,
        _dir: dir,
    }
}

/// The scan of the namespace, as JSON objects; and its stderr.
fn scan(ns: &Netns) -> (Vec<Value>, String) {
    let out = run_agent(&["scan", "--json", "--netns", &ns.inode().unwrap().to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "scan failed: {stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (v.as_array().cloned().unwrap_or_default(), stderr)
}

fn on(sockets: &[Value], port: u16, addr: &str) -> Value {
    sockets
        .iter()
        .find(|s| s["local_port"] == port && s["local_addr"] == addr)
        .cloned()
        .unwrap_or_else(|| panic!("no listener on {addr}:{port} in {sockets:#?}"))
}

#[test]
fn policy_drop_filters_a_wildcard_listener_and_loopback_is_not_evaluated_root_only() {
    require_root("policy_drop_filters_a_wildcard_listener_and_loopback_is_not_evaluated_root_only");
    let rules = "table inet filter {\n  chain input { type filter hook input priority 0; policy drop; }\n}\n";
    let s = setup("fwdrop", rules, &["tcp4:0.0.0.0:8080", "tcp4:127.0.0.1:9090"]);
    let (sockets, stderr) = scan(&s.ns);
    let wild = on(&sockets, 8080, "0.0.0.0");
    assert_eq!(wild["firewall"], "filtered", "{wild:#}");
    assert_eq!(wild["firewall_rule"], "inet filter input policy drop", "{wild:#}");
    let lo = on(&sockets, 9090, "127.0.0.1");
    assert_eq!(lo["firewall"], Value::Null, "{lo:#}");
    assert_eq!(lo["firewall_rule"], Value::Null, "{lo:#}");
    assert!(!stderr.contains("firewall"), "{stderr}");

    let table = run_agent(&["scan", "--netns", &s.ns.inode().unwrap().to_string()]);
    let text = String::from_utf8_lossy(&table.stdout);
    let header = text.lines().next().unwrap_or_default();
    assert!(header.contains("EXPOSURE  FIREWALL"), "{text}");
    let row = |port: &str| {
        text.lines()
            .find(|l| l.split_whitespace().nth(3) == Some(port))
            .unwrap_or_default()
    };
    assert_eq!(row("8080").split_whitespace().nth(5), Some("filtered"), "{text}");
    assert_eq!(row("9090").split_whitespace().nth(5), Some("-"), "{text}");
}

#[test]
fn an_accepted_port_is_open_root_only() {
    require_root("an_accepted_port_is_open_root_only");
    let rules = "table inet filter {\n  chain input {\n    type filter hook input priority 0; policy drop;\n    tcp dport 22 accept\n  }\n}\n";
    let s = setup("fwopen", rules, &["tcp4:0.0.0.0:22", "tcp4:0.0.0.0:23"]);
    let (sockets, _) = scan(&s.ns);
    let ssh = on(&sockets, 22, "0.0.0.0");
    assert_eq!(ssh["firewall"], "open", "{ssh:#}");
    let rule = ssh["firewall_rule"].as_str().unwrap_or_default();
    assert!(rule.starts_with("inet filter input handle "), "{rule}");
    assert_eq!(on(&sockets, 23, "0.0.0.0")["firewall"], "filtered");
}

#[test]
fn a_source_subnet_accept_is_restricted_and_names_the_subnet_root_only() {
    require_root("a_source_subnet_accept_is_restricted_and_names_the_subnet_root_only");
    let rules = "table inet filter {\n  chain input {\n    type filter hook input priority 0; policy drop;\n    ip saddr 10.0.0.0/8 tcp dport 5432 accept\n  }\n}\n";
    let s = setup("fwsubnet", rules, &["tcp4:0.0.0.0:5432"]);
    let (sockets, _) = scan(&s.ns);
    let pg = on(&sockets, 5432, "0.0.0.0");
    assert_eq!(pg["firewall"], "restricted", "{pg:#}");
    assert_eq!(
        pg["firewall_sources"],
        serde_json::json!(["ip saddr 10.0.0.0/8"]),
        "{pg:#}"
    );
    let rule = pg["firewall_rule"].as_str().unwrap_or_default();
    assert!(rule.ends_with("(from ip saddr 10.0.0.0/8)"), "{rule}");
}

#[test]
fn accepting_established_connections_then_dropping_is_filtered_root_only() {
    require_root("accepting_established_connections_then_dropping_is_filtered_root_only");
    let rules = "table inet filter {\n  chain input {\n    type filter hook input priority 0; policy accept;\n    ct state established,related accept\n    iifname \"lo\" accept\n    drop\n  }\n}\n";
    let s = setup("fwct", rules, &["tcp4:0.0.0.0:443", "udp6:[::]:53"]);
    let (sockets, _) = scan(&s.ns);
    for (port, addr) in [(443, "0.0.0.0"), (53, "::")] {
        let l = on(&sockets, port, addr);
        assert_eq!(l["firewall"], "filtered", "{l:#}");
        let rule = l["firewall_rule"].as_str().unwrap_or_default();
        assert!(rule.starts_with("inet filter input handle "), "{rule}");
    }
}

#[test]
fn a_construct_the_evaluator_does_not_know_is_unknown_root_only() {
    require_root("a_construct_the_evaluator_does_not_know_is_unknown_root_only");
    let rules = "table inet filter {\n  chain input {\n    type filter hook input priority 0; policy drop;\n    tcp dport 8443 limit rate 10/second accept\n  }\n}\n";
    let s = setup("fwunknown", rules, &["tcp4:0.0.0.0:8443"]);
    let (sockets, _) = scan(&s.ns);
    let l = on(&sockets, 8443, "0.0.0.0");
    assert_eq!(l["firewall"], "unknown", "{l:#}");
    let rule = l["firewall_rule"].as_str().unwrap_or_default();
    assert!(rule.contains("statement limit not evaluated"), "{rule}");
}

#[test]
fn an_empty_namespace_firewall_leaves_a_listener_open_root_only() {
    require_root("an_empty_namespace_firewall_leaves_a_listener_open_root_only");
    let s = setup("fwnone", "", &["tcp4:0.0.0.0:80"]);
    let (sockets, _) = scan(&s.ns);
    let l = on(&sockets, 80, "0.0.0.0");
    assert_eq!(l["firewall"], "open", "{l:#}");
    assert_eq!(l["firewall_rule"], "no base chain on the input path");
}

/// Two namespaces joined by a veth pair: the server's at `10.231.N.1`, the
/// client's at `10.231.N.2` (N from the pid, so concurrent runs differ).
struct Pair {
    server: Netns,
    client: Netns,
    server_addr: String,
    /// N, and the veth ends in the server's and the client's namespace.
    n: u32,
    server_dev: String,
    client_dev: String,
}

fn veth_pair(tag: &str) -> Pair {
    let server = Netns::create(&format!("{tag}s")).unwrap();
    let client = Netns::create(&format!("{tag}c")).unwrap();
    let n = std::process::id() % 250 + 1;
    let (a, b) = (format!("pws{n}"), format!("pwc{n}"));
    let ip = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ip(&[
        "link",
        "add",
        &a,
        "netns",
        &server.name,
        "type",
        "veth",
        "peer",
        "name",
        &b,
        "netns",
        &client.name,
    ]);
    ip(&[
        "-n",
        &server.name,
        "addr",
        "add",
        &format!("10.231.{n}.1/24"),
        "dev",
        &a,
    ]);
    ip(&[
        "-n",
        &client.name,
        "addr",
        "add",
        &format!("10.231.{n}.2/24"),
        "dev",
        &b,
    ]);
    ip(&["-n", &server.name, "link", "set", &a, "up"]);
    ip(&["-n", &client.name, "link", "set", &b, "up"]);
    Pair {
        server,
        client,
        server_addr: format!("10.231.{n}.1"),
        n,
        server_dev: a,
        client_dev: b,
    }
}

/// Whether a TCP connection from `from` to `addr:port` is accepted within 2 s.
fn connects(from: &Netns, addr: &str, port: u16) -> bool {
    Command::new("ip")
        .args(["netns", "exec", &from.name, "timeout", "2", "bash", "-c"])
        .arg(format!("exec 3<>/dev/tcp/{addr}/{port}"))
        .status()
        .unwrap()
        .success()
}

fn nft_in(ns: &Netns, args: &[&str]) {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "nft"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run nft (install nftables; tests/run.sh does): {e}"));
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The daemon ships the firewall's answer with each listener and a rule
/// change as the change of the listener it decides: a database on 0.0.0.0
/// behind a drop policy is stored `filtered`, and really is unreachable
/// from the other end of a veth pair; a rule that accepts it makes it
/// reachable there, `open` in history from the moment the agent saw it, and
/// raises `firewall-opened` (critical: a database port), while the
/// risky-port finding of the filtered listener was info.
#[test]
fn a_rule_change_that_opens_a_filtered_database_reaches_history_and_raises_firewall_opened_root_only() {
    require_root("a_rule_change_that_opens_a_filtered_database_reaches_history_and_raises_firewall_opened_root_only");
    const HOST: &str = "fw-db-1";
    let pair = veth_pair("fwhist");
    nft_in(
        &pair.server,
        &["add table inet filter { chain input { type filter hook input priority 0; policy drop; }; }"],
    );
    let _db = Listeners::start(&["ip", "netns", "exec", &pair.server.name], &["tcp4:0.0.0.0:5432"]).unwrap();
    assert!(
        !connects(&pair.client, &pair.server_addr, 5432),
        "the drop policy drops the connection from the other namespace"
    );
    let dir = TempDir::new("fwhist").unwrap();
    let db = dir.path.join("collector.db");
    let config = dir.path.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndb = {:?}\n[alerts]\nsweep_every = \"1s\"\n",
            db.to_str().unwrap()
        ),
    )
    .unwrap();
    let agent_token = portwatch_tests::create_token(&db, &["--host", HOST]).unwrap();
    let read = portwatch_tests::create_token(&db, &["--role", "read", "--name", "ops"]).unwrap();
    let collector =
        portwatch_tests::Collector::serve(&db, &[std::ffi::OsStr::new("--config"), config.as_os_str()]).unwrap();
    let _agent =
        portwatch_tests::Agent::start(&collector.url, &agent_token, HOST, "200ms", &dir.path.join("spool")).unwrap();
    let netns = pair.server.inode().unwrap();
    let settle = std::time::Duration::from_secs(30);
    let reach_now = || -> Option<String> {
        let rows = portwatch_tests::portwatch_json(&collector.url, &read, &["ports", "--host", HOST]).ok()?;
        let row = rows
            .as_array()?
            .iter()
            .find(|r| r["local_port"] == 5432 && r["netns"] == netns)?
            .clone();
        row["firewall"]["reach"].as_str().map(str::to_owned)
    };
    let first = portwatch_tests::eventually(settle, reach_now).expect("the listener reaches history");
    assert_eq!(first, "filtered");
    let findings = |kind: &str| -> Vec<Value> {
        portwatch_tests::portwatch_json(&collector.url, &read, &["drift", "--host", HOST, "--kind", kind])
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter(|f| {
                f["key"]
                    .as_str()
                    .is_some_and(|k| k.contains(&format!("tcp/5432@{netns}:")))
            })
            .collect()
    };
    let risky = findings("risky-port-exposed");
    assert_eq!(risky.len(), 1, "{risky:#?}");
    assert_eq!(risky[0]["severity"], "info", "filtered by the firewall: {risky:#?}");

    nft_in(&pair.server, &["add rule inet filter input tcp dport 5432 accept"]);
    assert!(
        connects(&pair.client, &pair.server_addr, 5432),
        "the accept rule lets the connection in"
    );
    portwatch_tests::eventually(settle, || (reach_now()? == "open").then_some(()))
        .expect("the rule change reaches history as the listener's change");
    let history =
        portwatch_tests::portwatch_json(&collector.url, &read, &["history", "--host", HOST, "--port", "5432"]).unwrap();
    let mine: Vec<&Value> = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["netns"] == netns)
        .collect();
    assert_eq!(mine.len(), 2, "one interval filtered, then one open: {mine:#?}");
    assert_eq!(mine[0]["firewall"]["reach"], "filtered");
    assert_eq!(mine[0]["firewall"]["rule"], "inet filter input policy drop");
    assert_eq!(mine[1]["firewall"]["reach"], "open");
    assert_eq!(
        mine[0]["closed_at"], mine[1]["opened_at"],
        "closed and opened at the moment seen"
    );
    assert_eq!(mine[0]["inode"], mine[1]["inode"], "the same socket");
    let opened = portwatch_tests::eventually(settle, || {
        let f = findings("firewall-opened");
        (!f.is_empty()).then_some(f)
    })
    .expect("firewall-opened is found");
    assert_eq!(opened[0]["severity"], "critical", "{opened:#?}");
    let alerts = portwatch_tests::eventually(settle, || {
        let all = portwatch_tests::portwatch_json(&collector.url, &read, &["alerts", "--host", HOST]).ok()?;
        let a: Vec<Value> = all
            .as_array()?
            .iter()
            .filter(|a| {
                a["key"]
                    .as_str()
                    .is_some_and(|k| k.starts_with(&format!("firewall-opened:{HOST}:tcp/5432@{netns}:")))
            })
            .cloned()
            .collect();
        (!a.is_empty()).then_some(a)
    })
    .expect("and alerted");
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let risky = findings("risky-port-exposed");
    assert_eq!(risky[0]["severity"], "critical", "open now: {risky:#?}");
}

fn iptables_legacy_in(ns: &Netns, args: &[&str]) {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "iptables-legacy"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run iptables-legacy (install iptables; tests/run.sh does): {e}"));
    assert!(
        out.status.success(),
        "iptables-legacy {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Legacy iptables rules are evaluated, and the traffic agrees: behind a
/// DROP policy with ssh accepted from 10.0.0.0/8, ssh is `restricted` to it
/// and the database `filtered`; from the peer namespace's 10.231.N.2 ssh
/// connects and the database does not; from its 192.168.N.2 (outside
/// 10.0.0.0/8, on the same veth) ssh does not either.
#[test]
fn legacy_iptables_restricts_ssh_to_a_subnet_and_filters_a_database_as_the_traffic_does_root_only() {
    require_root("legacy_iptables_restricts_ssh_to_a_subnet_and_filters_a_database_as_the_traffic_does_root_only");
    let pair = veth_pair("fwleg");
    let n = pair.n;
    for (ns, addr, dev) in [
        (&pair.server, format!("192.168.{n}.1/24"), &pair.server_dev),
        (&pair.client, format!("192.168.{n}.2/24"), &pair.client_dev),
    ] {
        let out = Command::new("ip")
            .args(["-n", &ns.name, "addr", "add", &addr, "dev", dev])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    iptables_legacy_in(&pair.server, &["-P", "INPUT", "DROP"]);
    iptables_legacy_in(
        &pair.server,
        &[
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "--dport",
            "22",
            "-s",
            "10.0.0.0/8",
            "-j",
            "ACCEPT",
        ],
    );
    let _listeners = Listeners::start(
        &["ip", "netns", "exec", &pair.server.name],
        &["tcp4:0.0.0.0:22", "tcp4:0.0.0.0:5432"],
    )
    .unwrap();

    let (sockets, stderr) = scan(&pair.server);
    let ssh = on(&sockets, 22, "0.0.0.0");
    assert_eq!(ssh["firewall"], "restricted", "{ssh:#}");
    assert_eq!(ssh["firewall_sources"], serde_json::json!(["-s 10.0.0.0/8"]), "{ssh:#}");
    assert_eq!(
        ssh["firewall_rule"],
        "iptables-legacy filter INPUT rule 1: -A INPUT -s 10.0.0.0/8 -p tcp -m tcp --dport 22 -j ACCEPT (from -s 10.0.0.0/8)",
        "{ssh:#}"
    );
    let db = on(&sockets, 5432, "0.0.0.0");
    assert_eq!(db["firewall"], "filtered", "{db:#}");
    assert_eq!(
        db["firewall_rule"], "iptables-legacy filter INPUT policy DROP",
        "{db:#}"
    );
    assert!(!stderr.contains("firewall"), "{stderr}");

    assert!(
        connects(&pair.client, &pair.server_addr, 22),
        "ssh from 10.231.{n}.2, inside 10.0.0.0/8, is accepted"
    );
    assert!(
        !connects(&pair.client, &pair.server_addr, 5432),
        "the database is dropped by the policy"
    );
    assert!(
        !connects(&pair.client, &format!("192.168.{n}.1"), 22),
        "ssh from 192.168.{n}.2, outside 10.0.0.0/8, is dropped"
    );
}

/// The daemon sees legacy iptables change although the nftables generation
/// does not move: tables made in a namespace already read are read at once
/// (the database goes from `open` to `filtered` in history), and a rule
/// added to them is read within the minute's re-read (`open` again), each
/// as the traffic behaves.
#[test]
fn the_daemon_reads_legacy_iptables_again_when_tables_appear_and_every_minute_root_only() {
    require_root("the_daemon_reads_legacy_iptables_again_when_tables_appear_and_every_minute_root_only");
    const HOST: &str = "fw-legacy-1";
    let pair = veth_pair("fwlegd");
    let _db = Listeners::start(&["ip", "netns", "exec", &pair.server.name], &["tcp4:0.0.0.0:5432"]).unwrap();
    let dir = TempDir::new("fwlegd").unwrap();
    let db = dir.path.join("collector.db");
    let config = dir.path.join("collector.toml");
    std::fs::write(
        &config,
        format!("listen = \"127.0.0.1:0\"\ndb = {:?}\n", db.to_str().unwrap()),
    )
    .unwrap();
    let agent_token = portwatch_tests::create_token(&db, &["--host", HOST]).unwrap();
    let read = portwatch_tests::create_token(&db, &["--role", "read", "--name", "ops"]).unwrap();
    let collector =
        portwatch_tests::Collector::serve(&db, &[std::ffi::OsStr::new("--config"), config.as_os_str()]).unwrap();
    let _agent =
        portwatch_tests::Agent::start(&collector.url, &agent_token, HOST, "200ms", &dir.path.join("spool")).unwrap();
    let netns = pair.server.inode().unwrap();
    let reach_now = || -> Option<(String, String)> {
        let rows = portwatch_tests::portwatch_json(&collector.url, &read, &["ports", "--host", HOST]).ok()?;
        let row = rows
            .as_array()?
            .iter()
            .find(|r| r["local_port"] == 5432 && r["netns"] == netns)?
            .clone();
        Some((
            row["firewall"]["reach"].as_str()?.to_owned(),
            row["firewall"]["rule"].as_str()?.to_owned(),
        ))
    };
    let settle = std::time::Duration::from_secs(30);
    let first = portwatch_tests::eventually(settle, reach_now).expect("the listener reaches history");
    assert_eq!(first.0, "open", "no firewall at all yet: {first:?}");
    assert!(connects(&pair.client, &pair.server_addr, 5432));

    iptables_legacy_in(&pair.server, &["-P", "INPUT", "DROP"]);
    assert!(!connects(&pair.client, &pair.server_addr, 5432), "the policy drops it");
    let filtered = portwatch_tests::eventually(settle, || reach_now().filter(|(r, _)| r == "filtered"))
        .expect("the new legacy tables are read without waiting for the minute's re-read");
    assert_eq!(filtered.1, "iptables-legacy filter INPUT policy DROP");

    iptables_legacy_in(
        &pair.server,
        &["-A", "INPUT", "-p", "tcp", "--dport", "5432", "-j", "ACCEPT"],
    );
    assert!(
        connects(&pair.client, &pair.server_addr, 5432),
        "the accept rule lets it in"
    );
    // Bounded by the minute's re-read and a margin, not a timing assertion.
    let open = portwatch_tests::eventually(std::time::Duration::from_secs(120), || {
        reach_now().filter(|(r, _)| r == "open")
    })
    .expect("the rule added to the legacy tables is read again within the minute");
    assert_eq!(
        open.1,
        "iptables-legacy filter INPUT rule 1: -A INPUT -p tcp -m tcp --dport 5432 -j ACCEPT"
    );
}
