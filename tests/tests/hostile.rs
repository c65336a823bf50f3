//! The hostile or broken fleet, end to end: a real collector on a temp
//! SQLite file and real agents, each test one way a host can misbehave or
//! overload the collector, asserting what was stored (nothing lost, nothing
//! dropped without being counted) and that honest hosts kept working.
// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use portwatch_agent::spool::{Spool, SpooledReport};
use portwatch_common::wire::{HostFacts, Report, ReportBody};
use portwatch_common::{Exposure, Family, Listener, Process, Proto};
use portwatch_tests::*;
use serde_json::Value;

/// Bound for an agent to ship what the tests give it (not a timing assertion).
const SETTLE: Duration = Duration::from_secs(90);

/// Held by the tests whose agents ship tens of megabytes: every agent scans
/// the whole machine, so one test's giant listeners are in another's
/// snapshots; one at a time keeps each test's figures its own.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn facts() -> HostFacts {
    HostFacts {
        detection: None,
        host_netns: None,
        addresses: Vec::new(),
        os: None,
        kernel: None,
        boot_time: None,
        agent_version: "test".into(),
        interval_ms: 10_000,
        tags: Default::default(),
    }
}

/// Writes `reports` of `session` to a spool in `dir`, as an agent that
/// could not reach its collector would have.
fn spool_of(dir: &std::path::Path, session: &str, reports: Vec<Report>) {
    let mut spool = Spool::open(dir, 64 << 20).unwrap();
    for report in reports {
        spool
            .push(&SpooledReport {
                session: session.into(),
                report,
            })
            .unwrap();
    }
}

struct Setup {
    dir: TempDir,
    collector: Collector,
    agent_token: String,
    read_token: String,
}

fn setup(tag: &str, host: &str) -> Setup {
    let dir = TempDir::new(tag).unwrap();
    let db = dir.path.join("collector.db");
    let agent_token = create_token(&db, &["--host", host]).unwrap();
    let read_token = create_token(&db, &["--role", "read", "--name", "ops"]).unwrap();
    let collector = Collector::start(&db, 0).unwrap();
    Setup {
        dir,
        collector,
        agent_token,
        read_token,
    }
}

fn host_row(s: &Setup, host: &str) -> Option<Value> {
    let hosts = portwatch_json(&s.collector.url, &s.read_token, &["hosts"]).unwrap();
    hosts.as_array()?.iter().find(|h| h["host"] == host).cloned()
}

/// A listener on 127.0.0.1:`port` held by one process whose command line is
/// `cmdline_bytes` long.
fn listener(port: u16, cmdline_bytes: usize) -> Listener {
    let mut cmdline = format!("/opt/app/bin/java -Dport={port} -cp ");
    while cmdline.len() < cmdline_bytes {
        cmdline.push_str("/opt/app/lib/dependency.jar:");
    }
    Listener {
        netns: 4_026_531_840,
        proto: Proto::Tcp,
        family: Family::Ipv4,
        local_addr: "127.0.0.1".parse().unwrap(),
        local_port: port,
        inode: u64::from(port) + 7_000_000,
        uid: 1000,
        user: Some("app".into()),
        exposure: Exposure::Loopback,
        dual_stack: false,
        processes: vec![Process {
            pid: u32::from(port),
            name: "java".into(),
            cmdline: Some(cmdline.into()),
            exe: Some("/opt/app/bin/java".into()),
            uid: Some(1000),
            user: Some("app".into()),
            container: None,
            unit: Some("app.service".into()),
        }],
        firewall: None,
    }
}

/// What an agent spools through an outage from `start`: a snapshot of
/// `first_port` (a command line of `snapshot_cmdline` bytes), then `count - 1`
/// deltas a second apart, each opening the next port with a 76 KB command line.
fn outage(first_port: u16, count: u64, snapshot_cmdline: usize, start: Timestamp) -> Vec<Report> {
    let at = |i: u64| start + jiff::SignedDuration::from_secs(i as i64);
    let mut reports = vec![Report {
        seq: 1,
        observed_at: at(0),
        body: ReportBody::Snapshot {
            facts: facts(),
            listeners: vec![listener(first_port, snapshot_cmdline)],
        },
    }];
    reports.extend((2..=count).map(|seq| Report {
        seq,
        observed_at: at(seq),
        body: ReportBody::Delta {
            opened: vec![Arc::new(listener(first_port + seq as u16, 76_000))],
            closed: Vec::new(),
        },
    }));
    reports
}

#[test]
fn a_long_outage_of_large_reports_is_replayed_whole_in_batches_the_collector_takes() {
    // After a long outage on a busy host: 500 spooled reports of ~76 KB,
    // ~38 MB of JSON, more than the collector takes in one batch (32 MiB).
    // An agent sizing batches by count alone sent them as one, got a 413 and
    // dropped them all without counting them.
    let s = setup("hostile-backlog", "backlog-1");
    let spool_dir = s.dir.path.join("spool");
    let start = Timestamp::from_second(Timestamp::now().as_second() - 7200).unwrap();
    let at = |i: u64| start + jiff::SignedDuration::from_secs(i as i64);
    spool_of(&spool_dir, "run-before-the-outage", outage(20_000, 500, 76_000, start));
    let _heavy = heavy();
    let _agent = Agent::start(&s.collector.url, &s.agent_token, "backlog-1", "500ms", &spool_dir).unwrap();

    // The last report is replayed last: once it is stored, look at them all.
    eventually(SETTLE, || {
        let v = portwatch_json(
            &s.collector.url,
            &s.read_token,
            &["history", "--host", "backlog-1", "--port", "20500"],
        )
        .ok()?;
        (!v.as_array()?.is_empty()).then_some(())
    })
    .expect("every spooled report reaches the collector");
    let v = portwatch_json(&s.collector.url, &s.read_token, &["history", "--host", "backlog-1"]).unwrap();
    let history: Vec<Value> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| (20_000..=20_500).contains(&r["local_port"].as_u64().unwrap_or(0)))
        .cloned()
        .collect();
    assert_eq!(history.len(), 500, "one interval per spooled listener, none twice");
    for seq in 2..=500u64 {
        let row = history
            .iter()
            .find(|r| r["local_port"] == 20_000 + seq)
            .unwrap_or_else(|| panic!("port {} missing", 20_000 + seq));
        assert_eq!(row["opened_at"], at(seq).to_string(), "opened when it was observed");
    }
    let host = host_row(&s, "backlog-1").unwrap();
    assert_eq!(host["dropped_reports"], 0, "nothing was dropped: {host}");
}

#[test]
fn a_snapshot_too_large_for_any_batch_is_sent_in_parts_and_stored_whole() {
    // 250 listeners, each shared by 40 processes with 4 KB command lines:
    // a ~40 MB snapshot, over the 32 MiB the collector takes in one batch.
    let _heavy = heavy();
    let s = setup("hostile-parts", "parts-1");
    let specs: Vec<String> = (0..250).map(|_| "tcp4:127.0.0.1:0".to_owned()).collect();
    let mut args = vec!["--children", "40", "--pad", "4000"];
    args.extend(specs.iter().map(String::as_str));
    let held = Listeners::start(&[], &args).unwrap();
    let ports: Vec<u16> = (0..250).map(|i| held.port(i)).collect();
    let spool = s.dir.path.join("spool");
    let _agent = Agent::start(&s.collector.url, &s.agent_token, "parts-1", "1s", &spool).unwrap();

    let rows = eventually(SETTLE, || {
        let v = portwatch_json(&s.collector.url, &s.read_token, &["ports", "--host", "parts-1"]).ok()?;
        let ours: Vec<Value> = v
            .as_array()?
            .iter()
            .filter(|r| ports.contains(&(r["local_port"].as_u64().unwrap_or(0) as u16)))
            .cloned()
            .collect();
        (ours.len() == ports.len()).then_some(ours)
    })
    .expect("the whole snapshot reaches the collector");
    for row in &rows {
        let holders = row["processes"].as_array().unwrap();
        assert_eq!(
            holders.len(),
            41,
            "the server and its 40 children hold :{}",
            row["local_port"]
        );
        assert!(holders
            .iter()
            .any(|p| p["cmdline"].as_str().is_some_and(|c| c.len() > 4000)));
    }
    let host = host_row(&s, "parts-1").unwrap();
    assert_eq!(host["dropped_reports"], 0, "nothing was dropped: {host}");
}

#[test]
fn after_a_gap_the_agent_drops_and_counts_what_cannot_be_placed_and_goes_on_from_the_next_snapshot() {
    // Reports 3 and 4 were lost before reaching the spool (a failed push).
    // The collector can place nothing after the gap until a snapshot; an
    // agent that sent the same unplaceable batch again and again never got
    // to the snapshot spooled after it.
    let _heavy = heavy();
    let s = setup("hostile-gap", "gap-1");
    let spool_dir = s.dir.path.join("spool");
    let start = Timestamp::from_second(Timestamp::now().as_second() - 3600).unwrap();
    let at = |i: i64| start + jiff::SignedDuration::from_secs(i);
    let delta = |seq: u64, port: u16| Report {
        seq,
        observed_at: at(seq as i64),
        body: ReportBody::Delta {
            opened: vec![Arc::new(listener(port, 100))],
            closed: Vec::new(),
        },
    };
    spool_of(
        &spool_dir,
        "run-with-a-gap",
        vec![
            Report {
                seq: 1,
                observed_at: at(1),
                body: ReportBody::Snapshot {
                    facts: facts(),
                    listeners: vec![listener(21_001, 100)],
                },
            },
            delta(2, 21_002),
            delta(5, 21_005),
            delta(6, 21_006),
            Report {
                seq: 7,
                observed_at: at(7),
                body: ReportBody::Snapshot {
                    facts: facts(),
                    listeners: vec![listener(21_001, 100), listener(21_002, 100), listener(21_007, 100)],
                },
            },
            delta(8, 21_008),
        ],
    );
    let _agent = Agent::start(&s.collector.url, &s.agent_token, "gap-1", "300ms", &spool_dir).unwrap();
    let ports = |v: &Value| -> Vec<u64> {
        let mut p: Vec<u64> = v
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["local_port"].as_u64())
            .filter(|p| (21_000..21_100).contains(p))
            .collect();
        p.sort_unstable();
        p
    };
    let history = eventually(SETTLE, || {
        let v = portwatch_json(&s.collector.url, &s.read_token, &["history", "--host", "gap-1"]).ok()?;
        ports(&v).contains(&21_008).then_some(v)
    })
    .expect("the reports after the gap's snapshot reach the collector");
    assert_eq!(
        ports(&history),
        vec![21_001, 21_002, 21_007, 21_008],
        "5 and 6 could not be placed"
    );
    let host = eventually(SETTLE, || host_row(&s, "gap-1").filter(|h| h["dropped_reports"] != 0))
        .expect("the dropped reports are counted");
    assert_eq!(host["dropped_reports"], 2, "reports 5 and 6: {host}");
    // And `portwatch hosts` says so in its DROPPED column.
    let out = std::process::Command::new(binary("portwatch"))
        .args(["--collector", &s.collector.url, "--token", &s.read_token, "hosts"])
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    let column = header.iter().position(|h| *h == "DROPPED").expect("a DROPPED column");
    let row = table.lines().find(|l| l.starts_with("gap-1")).unwrap();
    // LAST SEEN is two words in the header and in the row (date and time).
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[column], "2", "{table}");
}

#[test]
fn a_host_history_is_read_in_pages_and_the_cli_says_how_to_get_the_next() {
    // One `history` call once returned 478 MiB; four at once took the
    // collector to 3.5 GiB. Now each answer is a bounded page.
    let s = setup("hostile-history", "hist-1");
    let now = Timestamp::from_second(Timestamp::now().as_second() - 60).unwrap();
    let mut shipper = portwatch_agent::ship::Shipper::new(&s.collector.url, &s.agent_token, None).unwrap();
    let batch = portwatch_common::wire::Batch {
        version: 1,
        host: "hist-1".into(),
        session: "s".into(),
        dropped: 0,
        peers: Vec::new(),
        peers_dropped: 0,
        alive_at: None,
        reports: vec![Report {
            seq: 1,
            observed_at: now,
            body: ReportBody::Snapshot {
                facts: facts(),
                listeners: (0..25).map(|i| listener(22_000 + i, 100)).collect(),
            },
        }],
    };
    assert_eq!(shipper.send(&batch).unwrap().acked, 1);
    let page = |after: Option<&str>| {
        let mut args = vec![
            "--collector",
            &s.collector.url,
            "--token",
            &s.read_token,
            "--json",
            "history",
            "--host",
            "hist-1",
            "--limit",
            "10",
        ];
        if let Some(after) = after {
            args.extend(["--after", after]);
        }
        let out = std::process::Command::new(binary("portwatch"))
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        let note = String::from_utf8(out.stderr).unwrap();
        let next = note
            .split("--after ")
            .nth(1)
            .map(|rest| rest.split_whitespace().next().unwrap().to_owned());
        (rows, next)
    };
    let mut ports = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let (rows, next) = page(after.as_deref());
        pages += 1;
        ports.extend(rows.iter().map(|r| r["local_port"].as_u64().unwrap()));
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3, "25 intervals in pages of 10");
    ports.sort_unstable();
    assert_eq!(ports, (22_000..22_025).collect::<Vec<u64>>(), "each interval once");
}

#[test]
fn a_batch_answered_413_is_sent_again_in_halves_and_the_collectors_limit_followed() {
    // A collector that takes smaller batches than an agent assumes before its
    // first acknowledgement: the first batch is answered 413. An agent that
    // took that as a refusal for good dropped the whole batch.
    let dir = TempDir::new("hostile-413").unwrap();
    let db = dir.path.join("collector.db");
    let agent_token = create_token(&db, &["--host", "small-1"]).unwrap();
    let read_token = create_token(&db, &["--role", "read", "--name", "ops"]).unwrap();
    let config = dir.path.join("collector.toml");
    std::fs::write(&config, "[ingest]\nmax_batch_bytes = 4_194_304\n").unwrap();
    let collector = Collector::serve(
        &db,
        &[
            "--config".as_ref(),
            config.as_os_str(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--db".as_ref(),
            db.as_os_str(),
        ],
    )
    .unwrap();
    let spool_dir = dir.path.join("spool");
    let start = Timestamp::from_second(Timestamp::now().as_second() - 3600).unwrap();
    // 100 reports of ~76 KB: 7.6 MB in one batch by the version 1 limits, over the 4 MiB taken here.
    spool_of(&spool_dir, "run-before", outage(23_000, 100, 100, start));
    let _heavy = heavy();
    let _agent = Agent::start(&collector.url, &agent_token, "small-1", "500ms", &spool_dir).unwrap();
    let history = eventually(SETTLE, || {
        let v = portwatch_json(&collector.url, &read_token, &["history", "--host", "small-1"]).ok()?;
        let ours = v
            .as_array()?
            .iter()
            .filter(|r| (23_000..=23_100).contains(&r["local_port"].as_u64().unwrap_or(0)))
            .count();
        (ours >= 100).then_some(ours)
    })
    .expect("every spooled report reaches the collector");
    assert_eq!(history, 100, "one interval per report, none twice");
    let hosts = portwatch_json(&collector.url, &read_token, &["hosts"]).unwrap();
    assert_eq!(hosts[0]["dropped_reports"], 0, "nothing dropped: {hosts}");
}
