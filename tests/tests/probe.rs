//! The view from outside, end to end: a host and a collector in two network
//! namespaces joined by a veth pair. The host's namespace (A) runs a real
//! `portwatch-agent run` (so its own namespace, whose addresses and
//! listeners it reports, is A) and real listeners behind real nftables rules;
//! the collector's (B) runs `portwatch-collector serve` and then
//! `portwatch-collector probe` on the same database. Named nftables counters
//! on B's output hook count every TCP SYN leaving B, in all and per target,
//! so the test sees every connection attempt the probe made.
//!
//! Needs root (`ip netns add`, `nft`) and the `nft` binary (`tests/run.sh`
//! installs nftables); CI runs as root.

// The helpers below are test code: a failure is a panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};
use std::time::Duration;

use portwatch_tests::{
    binary, create_token, eventually, is_root, prefixed, Agent, Collector, Listeners, Netns, TempDir,
};
use serde_json::Value;

const HOST: &str = "probe-db-1";

fn require_root(test: &str) {
    assert!(
        is_root(),
        "{test} needs root (ip netns add, veth, nft in the namespaces): run the tests as root, as CI does (sudo tests/run.sh)"
    );
}

fn ok(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ip(args: &[&str]) {
    ok(Command::new("ip").args(args).output().unwrap(), &format!("ip {args:?}"));
}

fn nft_file(ns: &Netns, dir: &TempDir, name: &str, rules: &str) {
    let file = dir.path.join(name);
    std::fs::write(&file, rules).unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "nft", "-f"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run nft (install nftables; tests/run.sh does): {e}"));
    ok(out, &format!("nft -f {name}"));
}

/// The packets named counter `name` of table `inet watch` in `ns` counted.
fn counter(ns: &Netns, name: &str) -> u64 {
    let out = Command::new("ip")
        .args([
            "netns", "exec", &ns.name, "nft", "-j", "list", "counter", "inet", "watch", name,
        ])
        .output()
        .unwrap();
    let out = ok(out, &format!("nft list counter {name}"));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|o| o["counter"]["packets"].as_u64())
        .unwrap_or_else(|| panic!("no counter {name}: {v}"))
}

/// `portwatch --json ARGS` run in `ns` against `url`.
fn portwatch_in(ns: &Netns, url: &str, token: &str, args: &[&str]) -> Option<Value> {
    let out = prefixed(&["ip", "netns", "exec", &ns.name], binary("portwatch"))
        .args(["--collector", url, "--token", token, "--json"])
        .args(args)
        .output()
        .ok()?;
    out.status.success().then(|| serde_json::from_slice(&out.stdout).ok())?
}

/// `portwatch-collector probe ARGS --config CONFIG` run in `ns`: its output.
fn probe_in(ns: &Netns, config: &std::path::Path, args: &[&str]) -> Output {
    prefixed(&["ip", "netns", "exec", &ns.name], binary("portwatch-collector"))
        .arg("probe")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

/// Every JSON object of `out`'s stdout, one a line.
fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Everything a test of the view from outside runs in (see the test below
/// for what each listener is): dropped, it stops the agent and the
/// collector, and deletes the namespaces and the directory.
struct World {
    // Dropped first: the processes before the namespaces they run in.
    _agent: Agent,
    collector: Collector,
    _listeners: Listeners,
    host: Netns,
    coll: Netns,
    _dir: TempDir,
    config: std::path::PathBuf,
    read: String,
    netns: u64,
    one: String,
    three: String,
    ports: [u16; 6],
    /// The host's end of the veth pair, and the first three octets of its subnet.
    veth: String,
    subnet: String,
}

/// The host's namespace and the collector's, joined by a veth pair
/// (10.232.N.0/24, N from the pid and `offset`, so that tests running at
/// once differ), with the rules, listeners, collector (its `[probe]` table
/// ending with `probe`) and agent of the test below.
fn world(tag: &str, offset: u32, probe: &str) -> World {
    let host = Netns::create(&format!("{tag}h")).unwrap();
    let coll = Netns::create(&format!("{tag}c")).unwrap();
    let n = (std::process::id() + offset) % 250 + 1;
    let (a, b) = (format!("{tag}a{n}"), format!("{tag}b{n}"));
    let (one, three, them) = (
        format!("10.232.{n}.1"),
        format!("10.232.{n}.3"),
        format!("10.232.{n}.2"),
    );
    ip(&[
        "link", "add", &a, "netns", &host.name, "type", "veth", "peer", "name", &b, "netns", &coll.name,
    ]);
    ip(&["-n", &host.name, "addr", "add", &format!("{one}/24"), "dev", &a]);
    ip(&["-n", &host.name, "addr", "add", &format!("{three}/24"), "dev", &a]);
    ip(&["-n", &coll.name, "addr", "add", &format!("{them}/24"), "dev", &b]);
    ip(&["-n", &host.name, "link", "set", &a, "up"]);
    ip(&["-n", &coll.name, "link", "set", &b, "up"]);

    let dir = TempDir::new(tag).unwrap();
    nft_file(
        &host,
        &dir,
        "host.nft",
        &format!(
            "table inet filter {{\n  chain input {{\n    type filter hook input priority 0; policy drop;\n    \
             ct state established,related accept\n    iifname \"lo\" accept\n    tcp dport 8080 accept\n    \
             tcp dport 8081 accept\n    ip saddr 10.232.{n}.0/24 tcp dport 5432 accept\n  }}\n}}\n"
        ),
    );
    // The collector's side: counters first (priority -10), then the network firewall between.
    let ports = [8080u16, 8081, 6379, 5432, 9090, 7777];
    let mut watch = String::from("table inet watch {\n  counter syn_all { }\n");
    for addr in [&one, &three] {
        for port in ports {
            watch.push_str(&format!(
                "  counter t_{}_{port} {{ }}\n",
                addr.rsplit('.').next().unwrap()
            ));
        }
    }
    watch.push_str(
        "  chain out {\n    type filter hook output priority -10; policy accept;\n    \
         oifname != \"lo\" tcp flags & (syn | ack) == syn counter name \"syn_all\"\n",
    );
    for addr in [&one, &three] {
        for port in ports {
            watch.push_str(&format!(
                "    ip daddr {addr} tcp dport {port} tcp flags & (syn | ack) == syn counter name \"t_{}_{port}\"\n",
                addr.rsplit('.').next().unwrap()
            ));
        }
    }
    watch.push_str("  }\n}\ntable inet between {\n  chain out {\n    type filter hook output priority 0; policy accept;\n    tcp dport 8081 drop\n  }\n}\n");
    nft_file(&coll, &dir, "collector.nft", &watch);

    let _listeners = Listeners::start(
        &["ip", "netns", "exec", &host.name],
        &[
            "tcp4:0.0.0.0:8080",
            "tcp4:0.0.0.0:8081",
            "tcp4:0.0.0.0:6379",
            &format!("tcp4:{one}:5432"),
            "tcp4:127.0.0.1:9090",
        ],
    )
    .unwrap();

    let db = dir.path.join("collector.db");
    let config = dir.path.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{them}:0\"\ndb = {:?}\n[alerts]\nsweep_every = \"1s\"\n\
             [probe]\nenabled = true\nrate = 50\ntimeout = \"1s\"\n{probe}",
            db.to_str().unwrap()
        ),
    )
    .unwrap();
    let agent_token = create_token(&db, &["--host", HOST]).unwrap();
    let read = create_token(&db, &["--role", "read", "--name", "ops"]).unwrap();
    let collector = Collector::serve_in(
        &["ip", "netns", "exec", &coll.name],
        &db,
        &["--config".as_ref(), config.as_os_str()],
    )
    .unwrap();
    let _agent = Agent::start_in(
        &["ip", "netns", "exec", &host.name],
        &collector.url,
        &agent_token,
        HOST,
        "200ms",
        &dir.path.join("spool"),
        // Kernel events, as installed: the probe's connections to the
        // listener on 10.x.y.1:5432 once made them report it closed.
        &[],
    )
    .unwrap();
    let netns = host.inode().unwrap();
    World {
        _agent,
        collector,
        _listeners,
        host,
        coll,
        _dir: dir,
        config,
        read,
        netns,
        one,
        three,
        ports,
        veth: a.clone(),
        subnet: format!("10.232.{n}"),
    }
}

/// The probe marks reachability correctly and never connects to anything it
/// was not told about. Host namespace A has two addresses (.1 and .3) and,
/// behind a drop policy that accepts established connections, loopback,
/// 8080 and 8081 from anywhere and 5432 from the veth's subnet:
/// - 0.0.0.0:8080, accepted: `open`, and reachable from the collector;
/// - 0.0.0.0:8081, accepted by the host but dropped on the way out of the
///   collector's namespace (a network firewall between): `open`, unreachable;
/// - 0.0.0.0:6379 (Redis, risky), dropped by the policy: `filtered`, unreachable;
/// - 10.x.y.1:5432 (PostgreSQL, risky), accepted from the subnet only:
///   `restricted`, reachable from the collector, tried at .1 only;
/// - 127.0.0.1:9090: loopback, never tried; 7777 unused, never tried.
///
/// The SYN counters on the collector's side: none before the probe (nor
/// after its dry run), then SYNs to exactly the seven targets of the plan,
/// their sum every SYN that left the namespace.
#[test]
fn the_probe_marks_reachability_correctly_and_connects_only_to_reported_listeners_root_only() {
    require_root("the_probe_marks_reachability_correctly_and_connects_only_to_reported_listeners_root_only");
    let w = world("prb", 0, "");
    let World {
        ref collector,
        ref host,
        ref coll,
        ref config,
        ref read,
        netns,
        ref one,
        ref three,
        ports,
        ..
    } = w;
    let _ = host;
    let settle = Duration::from_secs(30);

    // History has the four listeners beyond loopback, with the host firewall's answers.
    let reach = eventually(settle, || {
        let rows = portwatch_in(coll, &collector.url, read, &["ports", "--host", HOST])?;
        let mine: Vec<(u64, String)> = rows
            .as_array()?
            .iter()
            .filter(|r| r["netns"] == netns && r["local_addr"] != "127.0.0.1")
            .map(|r| {
                (
                    r["local_port"].as_u64().unwrap_or(0),
                    r["firewall"]["reach"].as_str().unwrap_or("-").to_owned(),
                )
            })
            .collect();
        (mine.len() == 4).then_some(mine)
    })
    .expect("the host's listeners reach history");
    let reach_of = |port: u64| reach.iter().find(|(p, _)| *p == port).map(|(_, r)| r.as_str());
    assert_eq!(reach_of(8080), Some("open"), "{reach:?}");
    assert_eq!(reach_of(8081), Some("open"), "{reach:?}");
    assert_eq!(reach_of(6379), Some("filtered"), "{reach:?}");
    assert_eq!(reach_of(5432), Some("restricted"), "{reach:?}");
    let hosts = portwatch_in(coll, &collector.url, read, &["hosts"]).unwrap();
    let me = hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == HOST)
        .unwrap()
        .clone();
    assert_eq!(me["host_netns"], netns, "{me:#}");
    let mut addresses: Vec<&str> = me["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    addresses.sort_unstable();
    assert_eq!(
        addresses,
        [one.as_str(), three.as_str()],
        "A's own addresses, loopback and link-local left out"
    );

    // The plan: exactly the reported listeners at the reported addresses.
    let dry = ok(
        probe_in(coll, config, &["--dry-run", "--json", "--host", HOST]),
        "probe --dry-run",
    );
    let plans = lines(&dry);
    assert_eq!(plans.len(), 1, "{plans:#?}");
    let mut targets: Vec<String> = plans[0]["probes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_owned())
        })
        .collect();
    targets.sort();
    let mut expected: Vec<String> = vec![
        format!("{one}:5432"),
        format!("{one}:6379"),
        format!("{three}:6379"),
        format!("{one}:8080"),
        format!("{three}:8080"),
        format!("{one}:8081"),
        format!("{three}:8081"),
    ];
    expected.sort();
    assert_eq!(targets, expected);
    assert_eq!(
        counter(coll, "syn_all"),
        0,
        "nothing connected out before the probe, nor its dry run"
    );

    // One probe.
    let run = ok(probe_in(coll, config, &["--json", "--host", HOST]), "probe");
    let results = lines(&run);
    assert_eq!(results.len(), 1, "{results:#?}");
    let verdicts = results[0]["verdicts"].as_array().unwrap().clone();
    let verdict = |port: u16| -> Value {
        verdicts
            .iter()
            .find(|v| v["port"] == port && v["netns"] == netns)
            .cloned()
            .unwrap_or_else(|| panic!("no verdict of {port} in {verdicts:#?}"))
    };
    assert_eq!(verdict(8080)["state"], "reachable", "{:#}", verdict(8080));
    assert_eq!(verdict(5432)["state"], "reachable", "{:#}", verdict(5432));
    assert_eq!(verdict(8081)["state"], "unreachable", "{:#}", verdict(8081));
    assert_eq!(verdict(6379)["state"], "unreachable", "{:#}", verdict(6379));
    assert!(
        verdict(6379)["detail"].as_str().unwrap().contains("timed out after 1s"),
        "{:#}",
        verdict(6379)
    );
    assert!(
        !verdicts.iter().any(|v| v["port"] == 9090),
        "loopback is not probed: {verdicts:#?}"
    );

    // What left the collector's namespace: SYNs to the seven targets, nothing else.
    let count = |addr: &str, port: u16| counter(coll, &format!("t_{}_{port}", addr.rsplit('.').next().unwrap()));
    let mut sum = 0;
    for addr in [&one, &three] {
        for port in ports {
            let c = count(addr, port);
            let target = format!("{addr}:{port}");
            if expected.contains(&target) {
                assert!(c >= 1, "{target} was tried: {c} SYNs");
            } else {
                assert_eq!(
                    c, 0,
                    "{target} was not reported (loopback, unused, another address): {c} SYNs"
                );
            }
            sum += c;
        }
    }
    assert_eq!(count(one, 8080), 1, "an accepted target is one SYN");
    let all = counter(coll, "syn_all");
    assert_eq!(
        all, sum,
        "every SYN that left the collector's namespace went to a target of the plan"
    );

    // Drift, as the serving collector judges it from the stored verdicts.
    let findings = |kind: &str, port: u16| -> Vec<Value> {
        portwatch_in(coll, &collector.url, read, &["drift", "--host", HOST, "--kind", kind])
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter(|f| {
                f["key"]
                    .as_str()
                    .is_some_and(|k| k.contains(&format!("tcp/{port}@{netns}:")))
            })
            .collect()
    };
    let pg = findings("risky-port-exposed", 5432);
    assert_eq!(pg.len(), 1, "{pg:#?}");
    assert_eq!(
        pg[0]["severity"], "critical",
        "restricted, but reached from the collector: {pg:#?}"
    );
    let redis = findings("risky-port-exposed", 6379);
    assert_eq!(redis[0]["severity"], "info", "filtered and not reached: {redis:#?}");
    let between = findings("outside-view-disagrees", 8081);
    assert_eq!(between.len(), 1, "open on the host, not reached: {between:#?}");
    assert_eq!(between[0]["severity"], "info", "{between:#?}");
    for port in [8080, 6379, 5432] {
        assert_eq!(
            findings("outside-view-disagrees", port),
            Vec::<Value>::new(),
            "the views agree on {port}"
        );
    }

    // Alerted at the new severity: the warning opened while the firewall's
    // answer was all there was is resolved, and a critical alert opened.
    let alerts = eventually(settle, || {
        let all = portwatch_in(
            coll,
            &collector.url,
            read,
            &["alerts", "--host", HOST, "--state", "all"],
        )?;
        let mine: Vec<(String, String)> = all
            .as_array()?
            .iter()
            .filter(|a| {
                a["kind"] == "risky-port-exposed"
                    && a["key"]
                        .as_str()
                        .is_some_and(|k| k.contains(&format!("tcp/5432@{netns}:")))
            })
            .map(|a| {
                (
                    a["severity"].as_str().unwrap_or("").to_owned(),
                    a["state"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        mine.contains(&("critical".to_owned(), "open".to_owned()))
            .then_some(mine)
    })
    .expect("the reachable database is alerted critical");
    assert!(
        alerts.contains(&("warning".to_owned(), "resolved".to_owned())),
        "{alerts:?}"
    );

    // The verdicts where listeners are shown: the API (`portwatch probe`) and `portwatch ports`.
    let probe = portwatch_in(coll, &collector.url, read, &["probe", "--host", HOST]).expect("portwatch probe");
    let states: Vec<(u64, String)> = probe
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["netns"] == netns)
        .map(|v| (v["port"].as_u64().unwrap(), v["state"].as_str().unwrap().to_owned()))
        .collect();
    for (port, state) in [
        (5432, "reachable"),
        (6379, "unreachable"),
        (8080, "reachable"),
        (8081, "unreachable"),
    ] {
        assert!(
            states.contains(&(port, state.to_owned())),
            "{port} {state} in {states:?}"
        );
    }
    let table = prefixed(&["ip", "netns", "exec", &coll.name], binary("portwatch"))
        .args(["--collector", &collector.url, "--token", read, "ports", "--host", HOST])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&ok(table, "portwatch ports").stdout).into_owned();
    assert!(
        text.lines().next().unwrap_or_default().contains("FIREWALL    VERIFIED"),
        "{text}"
    );
    // The VERIFIED cells of the rows on ADDR:PORT (the agent reports every
    // namespace it sees: another test's namespace may have a row there too).
    let verified = |port: &str, addr: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.split_whitespace().nth(3) == Some(port) && l.split_whitespace().nth(2) == Some(addr))
            .filter_map(|l| l.split_whitespace().nth(6).map(str::to_owned))
            .collect()
    };
    assert_eq!(verified("5432", one), ["reachable"], "{text}");
    assert!(
        verified("6379", "0.0.0.0").contains(&"unreachable".to_owned()),
        "{text}"
    );
    let lo = verified("9090", "127.0.0.1");
    assert!(!lo.is_empty() && lo.iter().all(|v| v == "-"), "{text}");
}

/// An address the host gains while its agent runs reaches the collector
/// (the agent reads its addresses again every 30 s and sends a snapshot
/// when they changed), and the probe tries it.
#[test]
fn an_address_the_host_gains_while_its_agent_runs_reaches_the_collector_and_its_probe_root_only() {
    require_root("an_address_the_host_gains_while_its_agent_runs_reaches_the_collector_and_its_probe_root_only");
    let w = world("adr", 53, "every = \"1s\"\n");
    let addresses = || -> Option<Vec<String>> {
        let hosts = portwatch_in(&w.coll, &w.collector.url, &w.read, &["hosts"])?;
        let me = hosts.as_array()?.iter().find(|h| h["host"] == HOST)?.clone();
        let mut a: Vec<String> = me["addresses"]
            .as_array()?
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect();
        a.sort_unstable();
        Some(a)
    };
    let settle = Duration::from_secs(30);
    eventually(settle, || addresses().filter(|a| a.len() == 2)).expect("the host's first addresses");
    let four = format!("{}.4", w.subnet);
    ip(&["-n", &w.host.name, "addr", "add", &format!("{four}/24"), "dev", &w.veth]);
    // Read again within 30 s, shipped at the next interval.
    let now = eventually(Duration::from_secs(90), || addresses().filter(|a| a.len() == 3))
        .expect("the new address never reached the collector");
    assert_eq!(now, [w.one.clone(), w.three.clone(), four.clone()]);
    let tried = eventually(settle, || {
        let verdicts = portwatch_in(&w.coll, &w.collector.url, &w.read, &["probe", "--host", HOST])?;
        let v = verdicts
            .as_array()?
            .iter()
            .find(|v| v["port"] == 8080 && v["netns"] == w.netns)?
            .clone();
        v["detail"].as_str()?.contains(&four).then_some(v)
    })
    .expect("the probe never tried the new address");
    assert_eq!(tried["state"], "reachable", "{tried:#}");
}

/// A serving collector with `[probe] enabled` probes the fleet by itself
/// (under the `probe` lease, which a collector alone on its database holds),
/// at start and every `every`: the verdicts reach the API without a
/// `portwatch-collector probe`, and a listener that opens later is probed at
/// the next round.
#[test]
fn a_serving_collector_with_probe_enabled_probes_by_itself_every_interval_root_only() {
    require_root("a_serving_collector_with_probe_enabled_probes_by_itself_every_interval_root_only");
    let w = world("prs", 97, "every = \"1s\"\n");
    let settle = Duration::from_secs(30);
    let state_of = |port: u64| -> Option<String> {
        let verdicts = portwatch_in(&w.coll, &w.collector.url, &w.read, &["probe", "--host", HOST])?;
        verdicts
            .as_array()?
            .iter()
            .find(|v| v["port"] == port && v["netns"] == w.netns)
            .and_then(|v| v["state"].as_str().map(str::to_owned))
    };
    let first = eventually(settle, || state_of(8080)).expect("the collector probes by itself");
    assert_eq!(first, "reachable");
    assert_eq!(
        eventually(settle, || state_of(6379).filter(|s| s == "unreachable")).as_deref(),
        Some("unreachable")
    );
    // Accepted by no rule of its own: open the host's firewall for it first.
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &w.host.name,
            "nft",
            "add",
            "rule",
            "inet",
            "filter",
            "input",
            "tcp",
            "dport",
            "8088",
            "accept",
        ])
        .output()
        .unwrap();
    ok(out, "nft add rule");
    let _late = Listeners::start(&["ip", "netns", "exec", &w.host.name], &["tcp4:0.0.0.0:8088"]).unwrap();
    let reached = eventually(settle, || state_of(8088).filter(|s| s == "reachable"));
    assert_eq!(
        reached.as_deref(),
        Some("reachable"),
        "a listener opened later is probed at a later round"
    );
    let metrics = Command::new("ip")
        .args(["netns", "exec", &w.coll.name, "curl", "-sf", "-H"])
        .arg(format!("Authorization: Bearer {}", w.read))
        .arg(format!("{}/metrics", w.collector.url))
        .output()
        .unwrap();
    let text =
        portwatch_fixtures::without_collector_label(&String::from_utf8_lossy(&ok(metrics, "curl /metrics").stdout));
    let count = |outcome: &str| -> u64 {
        let name = format!("portwatch_probe_connects_total{{outcome=\"{outcome}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&name))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    assert!(count("connected") >= 3, "{text}");
    assert!(count("timed_out") >= 4, "{text}");
    assert_eq!(count("failed"), 0, "{text}");
}

/// Probing is off unless the config says otherwise: `portwatch-collector
/// probe` refuses to connect anywhere and says why, and its dry run, which
/// connects to nothing, works.
#[test]
fn the_probe_command_refuses_to_scan_unless_the_config_enables_it() {
    let dir = TempDir::new("probeoff").unwrap();
    let db = dir.path.join("collector.db");
    let run = |args: &[&str]| {
        Command::new(binary("portwatch-collector"))
            .arg("probe")
            .args(args)
            .arg("--db")
            .arg(&db)
            .output()
            .unwrap()
    };
    let refused = run(&[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("probing is off") && stderr.contains("[probe] enabled = true"),
        "{stderr}"
    );
    let dry = ok(run(&["--dry-run", "--json"]), "probe --dry-run");
    assert!(dry.stdout.is_empty(), "no host, no plan");
}
