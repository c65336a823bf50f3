//! End to end, with the real binaries: a collector whose `[retention]
//! history` is seconds long (the test-only floor lets it go below a day),
//! `portwatch-collector prune --dry-run` and `prune` beside it, the CLI's
//! answers about a moment before the kept history, and a host forgotten
//! through the API, then a 404 for the CLI.
// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use portwatch_common::wire::{Batch, HostFacts, Report, ReportBody, PROTOCOL_VERSION};
use portwatch_common::{Exposure, Family, Listener, Proto};
use portwatch_tests::*;

/// How long the collector keeps closed intervals in this test.
const KEEP: Duration = Duration::from_secs(3);

fn listener(port: u16) -> Listener {
    Listener {
        netns: 4026531840,
        proto: Proto::Tcp,
        family: Family::Ipv4,
        local_addr: "0.0.0.0".parse().unwrap(),
        local_port: port,
        inode: u64::from(port) + 1000,
        uid: 0,
        user: Some("root".into()),
        exposure: Exposure::Wildcard,
        dual_stack: false,
        processes: vec![],
        firewall: None,
    }
}

fn post(url: &str, token: &str, batch: &Batch) -> u16 {
    let agent = portwatch_common::client::http_agent(None, Duration::from_secs(10)).unwrap();
    agent
        .post(&format!("{url}/api/v1/ingest"))
        .header("Authorization", &format!("Bearer {token}"))
        .send_json(batch)
        .unwrap()
        .status()
        .as_u16()
}

fn portwatch(url: &str, token: &str, args: &[&str]) -> std::process::Output {
    Command::new(binary("portwatch"))
        .args(["--collector", url, "--token", token])
        .args(args)
        .output()
        .unwrap()
}

fn collector_cli(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(binary("portwatch-collector"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env(portwatch_collector::retention::TEST_FLOOR_ENV, "1s")
        .output()
        .unwrap()
}

#[test]
fn expired_history_is_pruned_said_so_when_asked_about_and_a_forgotten_host_is_a_404() {
    let dir = TempDir::new("retention-e2e").unwrap();
    let db = dir.path.join("collector.db");
    let agent = create_token(&db, &["--host", "web-3"]).unwrap();
    let read = create_token(&db, &["--role", "read", "--name", "ops"]).unwrap();
    let admin = create_token(&db, &["--role", "admin", "--name", "root"]).unwrap();
    let config = dir.path.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndb = {:?}\n[retention]\nhistory = \"{}s\"\n",
            db.display().to_string(),
            KEEP.as_secs()
        ),
    )
    .unwrap();
    // Refused without the test-only floor, naming the key.
    let out = Command::new(binary("portwatch-collector"))
        .args(["prune", "--dry-run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("[retention] history"),
        "{stderr}"
    );
    std::env::set_var(portwatch_collector::retention::TEST_FLOOR_ENV, "1s");
    let collector = Collector::serve(&db, &["--config".as_ref(), config.as_os_str()]).unwrap();
    let url = collector.url.clone();
    // ssh stays open; 8080 opens and closes now; 9090 opens.
    let now = Timestamp::now();
    let facts = HostFacts {
        os: None,
        kernel: None,
        boot_time: None,
        agent_version: "0.1.0".into(),
        interval_ms: 10_000,
        tags: Default::default(),
        detection: None,
        host_netns: None,
        addresses: Vec::new(),
    };
    let batch = Batch {
        version: PROTOCOL_VERSION,
        host: "web-3".into(),
        session: "s1".into(),
        dropped: 0,
        peers: Vec::new(),
        peers_dropped: 0,
        alive_at: None,
        reports: vec![
            Report {
                seq: 1,
                observed_at: now,
                body: ReportBody::Snapshot {
                    facts,
                    listeners: vec![listener(22), listener(8080)],
                },
            },
            Report {
                seq: 2,
                observed_at: now,
                body: ReportBody::Delta {
                    opened: vec![],
                    closed: vec![Arc::new(listener(8080))],
                },
            },
            // A newer interval: pruning leaves the newest row (its id would be given again).
            Report {
                seq: 3,
                observed_at: now,
                body: ReportBody::Delta {
                    opened: vec![Arc::new(listener(9090))],
                    closed: vec![],
                },
            },
        ],
    };
    assert_eq!(post(&url, &agent, &batch), 200);
    // Once its lifetime is over, the closed interval is expired (and the open one is not).
    std::thread::sleep(KEEP + Duration::from_secs(1));
    let out = collector_cli(&config, &["prune", "--dry-run"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("would delete: 1 intervals"), "{stdout}");
    let out = collector_cli(&config, &["prune"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("deleted: 1 intervals"), "{stdout}");
    let out = collector_cli(&config, &["prune", "--dry-run"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("would delete: 0 intervals"));
    // The history shows what is kept and says from when.
    let out = portwatch(&url, &read, &["--json", "history", "--host", "web-3"]);
    assert!(out.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ports: Vec<u64> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["local_port"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, vec![22, 9090], "{rows}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("keeps history from"), "{stderr}");
    // A moment before the kept history is an error that says so, not an empty list.
    let before = (Timestamp::now() - SignedDuration::from_secs(60)).to_string();
    let out = portwatch(&url, &read, &["ports", "--host", "web-3", "--at", &before]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("before the kept history"),
        "{stderr}"
    );
    let out = portwatch(&url, &read, &["who", "--port", "22", "--at", &before]);
    assert!(!out.status.success());
    // Forgotten through the API: then a 404 for the CLI.
    let status = |token: &str| {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent()
            .delete(&format!("{url}/api/v1/hosts/web-3"))
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(status(&read), 403);
    assert_eq!(status(&admin), 200);
    assert_eq!(status(&admin), 404);
    let out = portwatch(&url, &read, &["ports", "--host", "web-3"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("no host \"web-3\""),
        "{stderr}"
    );
    let out = collector_cli(&config, &["host", "forget", "web-3"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no host \"web-3\""));
    collector.kill();
}
