//! End to end: an agent whose clock is a year ahead reports telnet on
//! 0.0.0.0 over HTTP to a real collector. The listener is dated when it was
//! received, so `ports` and `who` show it now; `hosts` shows the skew and
//! `drift` has a `clock-skew` finding, until the clock is set right.
// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::process::Command;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use portwatch_agent::ship::Shipper;
use portwatch_common::wire::{Batch, HostFacts, Report, ReportBody, PROTOCOL_VERSION};
use portwatch_common::{Exposure, Family, Listener, Process, Proto};
use portwatch_tests::*;
use serde_json::Value;

const HOST: &str = "clock-web-1";
/// Generous bound for a change to be evaluated (sweep 1 s).
const SETTLE: Duration = Duration::from_secs(30);
const YEAR: SignedDuration = SignedDuration::from_hours(365 * 24);

fn telnet() -> Listener {
    Listener {
        netns: 4_026_531_840,
        proto: Proto::Tcp,
        family: Family::Ipv4,
        local_addr: "0.0.0.0".parse().unwrap(),
        local_port: 23,
        inode: 4242,
        uid: 0,
        user: Some("root".into()),
        exposure: Exposure::Wildcard,
        dual_stack: false,
        processes: vec![Process {
            pid: 600,
            name: "in.telnetd".into(),
            cmdline: Some("/usr/sbin/in.telnetd".into()),
            exe: Some("/usr/sbin/in.telnetd".into()),
            uid: Some(0),
            user: Some("root".into()),
            container: None,
            unit: Some("inetd.service".into()),
        }],
        firewall: None,
    }
}

/// A session's first batch, as an agent sends it: a snapshot with telnet,
/// and the heartbeat stamped at sending, both on an agent clock reading `at`.
fn snapshot(session: &str, at: Timestamp) -> Batch {
    Batch {
        version: PROTOCOL_VERSION,
        host: HOST.into(),
        session: session.into(),
        dropped: 0,
        peers: Vec::new(),
        peers_dropped: 0,
        alive_at: Some(at),
        reports: vec![Report {
            seq: 1,
            observed_at: at,
            body: ReportBody::Snapshot {
                facts: HostFacts {
                    detection: None,
                    host_netns: None,
                    addresses: Vec::new(),
                    os: Some("Debian GNU/Linux 12".into()),
                    kernel: Some("6.1.0".into()),
                    boot_time: None,
                    agent_version: "0.1.0".into(),
                    interval_ms: 10_000,
                    tags: BTreeMap::new(),
                },
                listeners: vec![telnet()],
            },
        }],
    }
}

fn time(v: &Value) -> Timestamp {
    v.as_str().unwrap().parse().unwrap()
}

fn host_row(url: &str, token: &str) -> Value {
    let hosts = portwatch_json(url, token, &["hosts"]).unwrap();
    hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == HOST)
        .unwrap()
        .clone()
}

fn clock_findings(url: &str, token: &str) -> Vec<Value> {
    let drift = portwatch_json(url, token, &["drift", "--host", HOST]).unwrap();
    drift
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "clock-skew")
        .cloned()
        .collect()
}

fn clock_alerts(url: &str, token: &str) -> Vec<Value> {
    let alerts = portwatch_json(url, token, &["alerts", "--state", "all", "--host", HOST]).unwrap();
    alerts
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "clock-skew")
        .cloned()
        .collect()
}

#[test]
fn a_snapshot_from_a_year_ahead_shows_now_with_its_skew_and_a_clock_skew_finding() {
    let dir = TempDir::new("clock").unwrap();
    let db = dir.path.join("collector.db");
    let config = dir.path.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndb = {:?}\n[alerts]\nsweep_every = \"1s\"\nstartup_grace = \"1s\"\n",
            db.to_str().unwrap()
        ),
    )
    .unwrap();
    let agent_token = create_token(&db, &["--host", HOST]).unwrap();
    let read = create_token(&db, &["--role", "read", "--name", "ops-read"]).unwrap();
    let collector = Collector::serve(&db, &[OsStr::new("--config"), config.as_os_str()]).unwrap();
    let url = collector.url.clone();
    let mut agent = Shipper::new(&url, &agent_token, None).unwrap();

    let before = Timestamp::now();
    let ack = agent.send(&snapshot("ahead", before + YEAR)).unwrap();
    let after = Timestamp::now();
    assert_eq!((ack.acked, ack.resync), (1, false));

    // Telnet listens now, opened when the collector received the snapshot.
    let ports = portwatch_json(&url, &read, &["ports", "--host", HOST]).unwrap();
    let ports = ports.as_array().unwrap();
    assert_eq!(ports.len(), 1, "{ports:#?}");
    let opened = time(&ports[0]["opened_at"]);
    // (Stored to the millisecond.)
    assert!(
        before.as_millisecond() <= opened.as_millisecond() && opened <= after,
        "{before} <= {opened} <= {after}"
    );
    let who = portwatch_json(&url, &read, &["who", "--port", "23"]).unwrap();
    let who = who.as_array().unwrap();
    assert!(
        who.len() == 1 && who[0]["host"] == HOST && who[0]["local_addr"] == "0.0.0.0",
        "{who:#?}"
    );

    // The skew: a year ahead, less the request's transit.
    let row = host_row(&url, &read);
    let skew = row["clock_skew_ms"].as_i64().unwrap();
    let year_ms = YEAR.as_millis() as i64;
    assert!((year_ms - 60_000..=year_ms).contains(&skew), "{row:#}");
    assert_eq!(row["clock_skewed"], true, "{row:#}");
    let out = Command::new(binary("portwatch"))
        .args(["--collector", &url, "--token", &read, "hosts"])
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    let line = table.lines().find(|l| l.starts_with(HOST)).unwrap();
    assert!(
        table.lines().next().unwrap().contains("SKEW") && (line.contains(" +364d23h ") || line.contains(" +365d00h ")),
        "{table}"
    );

    // Drift judges telnet now: risky beyond loopback.
    let drift = portwatch_json(&url, &read, &["drift", "--host", HOST]).unwrap();
    assert!(
        drift
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "risky-port-exposed" && f["local_port"] == 23),
        "{drift:#}"
    );

    // A warning finding, and its alert.
    let findings = clock_findings(&url, &read);
    assert!(
        findings.len() == 1
            && findings[0]["severity"] == "warning"
            && findings[0]["message"]
                .as_str()
                .unwrap()
                .contains("ahead of the collector's"),
        "{findings:#?}"
    );
    eventually(SETTLE, || {
        (clock_alerts(&url, &read).iter().any(|a| a["state"] == "open")).then_some(())
    })
    .expect("the clock-skew alert opens");

    // The clock set right, the agent restarted: telnet is still open since
    // it was first received, the skew is gone, and so is the finding.
    let ack = agent.send(&snapshot("right", Timestamp::now())).unwrap();
    assert_eq!((ack.acked, ack.resync), (1, false));
    let ports = portwatch_json(&url, &read, &["ports", "--host", HOST]).unwrap();
    let ports = ports.as_array().unwrap();
    assert!(ports.len() == 1 && time(&ports[0]["opened_at"]) == opened, "{ports:#?}");
    let row = host_row(&url, &read);
    assert!(row["clock_skew_ms"].as_i64().unwrap().abs() < 60_000, "{row:#}");
    assert_eq!(row["clock_skewed"], false, "{row:#}");
    assert!(clock_findings(&url, &read).is_empty());
    eventually(SETTLE, || {
        let alerts = clock_alerts(&url, &read);
        (alerts.len() == 1 && alerts[0]["state"] == "resolved").then_some(())
    })
    .expect("the clock-skew alert resolves once the clock is right");
}
