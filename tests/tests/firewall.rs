//! Firewall-aware reachability, end to end: real nftables rules loaded with
//! `nft -f` in a network namespace made for the test, a real listener in it,
//! and `portwatch-agent scan --json` reading the ruleset from inside it.
//!
//! Every test needs root (`ip netns add`, `nft -f`) and the `nft` binary
//! (`tests/run.sh` installs nftables); CI runs as root.

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
