//! End to end: a real agent whose spool has a damaged older segment (a disk
//! fault, say) keeps running: it moves the segment aside, ships the rest of
//! the spool in order, and the collector learns how many reports were lost.
// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use portwatch_agent::spool::SpooledReport;
use portwatch_common::wire::{HostFacts, Report, ReportBody};
use portwatch_common::{Exposure, Family, Listener, Proto};
use portwatch_tests::*;

/// Generous bound for an agent at a 200 ms interval to get its spool stored.
const SETTLE: Duration = Duration::from_secs(20);

fn listener(port: u16) -> Listener {
    Listener {
        netns: own_netns().unwrap(),
        proto: Proto::Tcp,
        family: Family::Ipv4,
        local_addr: "127.0.0.1".parse().unwrap(),
        local_port: port,
        inode: u64::from(port),
        uid: 0,
        user: None,
        exposure: Exposure::Loopback,
        dual_stack: false,
        processes: Vec::new(),
        firewall: None,
    }
}

fn snapshot(session: &str, at: Timestamp, ports: &[u16]) -> SpooledReport {
    let facts = HostFacts {
        detection: None,
        host_netns: None,
        addresses: Vec::new(),
        os: None,
        kernel: None,
        boot_time: None,
        agent_version: "earlier run".into(),
        interval_ms: 200,
        tags: Default::default(),
    };
    spooled(
        session,
        1,
        at,
        ReportBody::Snapshot {
            facts,
            listeners: ports.iter().map(|&port| listener(port)).collect(),
        },
    )
}

fn spooled(session: &str, seq: u64, observed_at: Timestamp, body: ReportBody) -> SpooledReport {
    SpooledReport {
        session: session.into(),
        report: Report { seq, observed_at, body },
    }
}

/// Writes segment `id` of the spool in `dir` with `lines`, as the spool
/// would (one JSON report per line).
fn write_segment(dir: &Path, id: u64, lines: &[String]) {
    std::fs::write(dir.join(format!("{id:020}.jsonl")), lines.concat()).unwrap();
}

fn line(item: &SpooledReport) -> String {
    serde_json::to_string(item).unwrap() + "\n"
}

#[test]
fn an_agent_whose_spool_has_a_damaged_older_segment_keeps_running_and_ships_the_rest() {
    let host = "e2e-quarantine";
    let dir = TempDir::new("e2e-quarantine").unwrap();
    let db = dir.path.join("collector.db");
    let agent_token = create_token(&db, &["--host", host]).unwrap();
    let read_token = create_token(&db, &["--role", "read", "--name", "ops"]).unwrap();
    let collector = Collector::start(&db, 0).unwrap();

    // An earlier run spooled three segments while the collector was away;
    // the second is damaged since (its second line is garbage).
    let spool = dir.path.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    // Whole milliseconds: what the collector stores.
    let t0 = Timestamp::from_millisecond(Timestamp::now().as_millisecond() - 60_000).unwrap();
    let lost = spooled(
        "earlier",
        2,
        t0 + SignedDuration::from_secs(1),
        ReportBody::Delta {
            opened: vec![listener(40002).into()],
            closed: Vec::new(),
        },
    );
    let (p1, p2, p3) = (40001, 40002, 40003);
    write_segment(&spool, 1, &[line(&snapshot("earlier", t0, &[p1]))]);
    write_segment(&spool, 2, &[line(&lost), "{\"session\":garbage\n".into()]);
    let later = t0 + SignedDuration::from_secs(2);
    write_segment(&spool, 3, &[line(&snapshot("later", later, &[p1, p3]))]);

    let agent = Agent::start(&collector.url, &agent_token, host, "200ms", &spool).unwrap();
    let dropped = eventually(SETTLE, || {
        let hosts = portwatch_json(&collector.url, &read_token, &["hosts"]).ok()?;
        let dropped = hosts.get(0)?.get("dropped_reports")?.as_u64()?;
        (dropped > 0).then_some(dropped)
    })
    .expect("the agent runs and reports the damaged segment's reports as dropped");
    assert_eq!(dropped, 2, "the damaged segment's two lines");

    let history = |port: u16| {
        let port = port.to_string();
        let rows = portwatch_json(
            &collector.url,
            &read_token,
            &["history", "--host", host, "--port", &port],
        )
        .unwrap();
        rows.as_array().cloned().unwrap_or_default()
    };
    let rows = eventually(SETTLE, || {
        let rows = history(p3);
        (!rows.is_empty()).then_some(rows)
    })
    .expect("the segment after the damaged one is shipped");
    let opened_at: Timestamp = rows[0]["opened_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(opened_at, later, "replayed with the time it was observed");
    let rows = history(p1);
    let opened_at: Timestamp = rows[0]["opened_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(opened_at, t0, "the segment before the damaged one is shipped");
    assert_eq!(history(p2), Vec::<serde_json::Value>::new(), "its report was lost");

    assert!(
        spool.join(format!("{:020}.jsonl.corrupt", 2)).exists(),
        "kept for inspection"
    );
    assert!(agent.terminate().unwrap().success(), "the agent was still running");
}
