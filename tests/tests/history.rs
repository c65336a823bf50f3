//! End to end: a real collector on a temp SQLite file or a PostgreSQL schema
//! (each test runs on both), a real agent at a short interval, real
//! listeners opening and closing; the `portwatch` CLI answers from history.
//! Outages of either side lose and duplicate nothing.
// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use portwatch_tests::*;
use serde_json::Value;

/// Generous bound for an agent at a 200 ms interval to get a change stored.
const SETTLE: Duration = Duration::from_secs(20);

struct Setup {
    // Dropped last: the collector stops before its database goes.
    _db: TestDb,
    dir: TempDir,
    collector: Collector,
    agent_token: String,
    read_token: String,
}

fn setup(tag: &str, host: &str, backend: Backend) -> Setup {
    let dir = TempDir::new(tag).unwrap();
    let test_db = TestDb::new(backend, &dir.path);
    let db = test_db.db.clone();
    let agent_token = create_token(&db, &["--host", host]).unwrap();
    let read_token = create_token(&db, &["--role", "read", "--name", "ops"]).unwrap();
    let collector = Collector::start(&db, 0).unwrap();
    Setup {
        _db: test_db,
        dir,
        collector,
        agent_token,
        read_token,
    }
}

fn who(s: &Setup, port: u16, extra: &[&str]) -> Value {
    let port = port.to_string();
    let mut args = vec!["who", "--port", port.as_str()];
    args.extend_from_slice(extra);
    portwatch_json(&s.collector.url, &s.read_token, &args).unwrap()
}

fn history(s: &Setup, host: &str, port: u16) -> Vec<Value> {
    let port = port.to_string();
    let v = portwatch_json(
        &s.collector.url,
        &s.read_token,
        &["history", "--host", host, "--port", &port],
    )
    .unwrap();
    v.as_array().cloned().unwrap_or_default()
}

fn listeners_opening_and_closing_become_history_that_every_query_answers(backend: Backend) {
    let s = setup("e2e-basic", "e2e-basic", backend);
    let spool = s.dir.path.join("spool");
    let _agent = Agent::start(&s.collector.url, &s.agent_token, "e2e-basic", "200ms", &spool).unwrap();
    let l = Listeners::start(&[], &["tcp4:127.0.0.1:0"]).unwrap();
    let port = l.port(0);

    let rows = eventually(SETTLE, || {
        let v = who(&s, port, &[]);
        (!v.as_array()?.is_empty()).then_some(v)
    })
    .expect("the agent's report of the new listener reaches the collector");
    assert_eq!(rows[0]["host"], "e2e-basic");
    assert_eq!(rows[0]["local_addr"], "127.0.0.1");
    assert_eq!(rows[0]["processes"][0]["pid"], l.opened.pid);
    assert_eq!(rows[0]["processes"][0]["name"], "pw-listen");
    let opened_at = rows[0]["opened_at"].as_str().unwrap().to_owned();

    let hosts = portwatch_json(&s.collector.url, &s.read_token, &["hosts"]).unwrap();
    assert_eq!(hosts[0]["host"], "e2e-basic");
    assert_eq!(hosts[0]["status"], "up");

    drop(l);
    let closed = eventually(SETTLE, || {
        let h = history(&s, "e2e-basic", port);
        h.iter().find(|r| !r["closed_at"].is_null()).cloned()
    })
    .expect("the close reaches the collector");
    assert_eq!(closed["opened_at"], opened_at.as_str());
    let closed_at = closed["closed_at"].as_str().unwrap().to_owned();
    assert!(closed_at > opened_at);

    // ports --at: open at its opening instant, gone at its closing instant.
    let ports_at = |at: &str| {
        portwatch_json(
            &s.collector.url,
            &s.read_token,
            &["ports", "--host", "e2e-basic", "--at", at],
        )
        .unwrap()
    };
    let has_port = |v: &Value| v.as_array().unwrap().iter().any(|r| r["local_port"] == port);
    assert!(has_port(&ports_at(&opened_at)));
    assert!(!has_port(&ports_at(&closed_at)));
    assert!(who(&s, port, &[]).as_array().unwrap().is_empty());
    assert_eq!(who(&s, port, &["--at", &opened_at]).as_array().unwrap().len(), 1);
    assert_eq!(history(&s, "e2e-basic", port).len(), 1, "one interval, no duplicate");

    // diff: between its opening and closing instants it closed; from just before it opened, it opened.
    let d = portwatch_json(
        &s.collector.url,
        &s.read_token,
        &["diff", "--host", "e2e-basic", "--from", &opened_at, "--to", &closed_at],
    )
    .unwrap();
    assert!(
        d["closed"].as_array().unwrap().iter().any(|r| r["local_port"] == port),
        "{d}"
    );
    let just_before: jiff::Timestamp =
        opened_at.parse::<jiff::Timestamp>().unwrap() - jiff::SignedDuration::from_millis(1);
    let d = portwatch_json(
        &s.collector.url,
        &s.read_token,
        &[
            "diff",
            "--host",
            "e2e-basic",
            "--from",
            &just_before.to_string(),
            "--to",
            &opened_at,
        ],
    )
    .unwrap();
    assert!(
        d["opened"].as_array().unwrap().iter().any(|r| r["local_port"] == port),
        "{d}"
    );
    assert!(d["closed"].as_array().unwrap().is_empty(), "{d}");

    // export: the interval, with its process, as CSV.
    let out = std::process::Command::new(binary("portwatch"))
        .args([
            "--collector",
            &s.collector.url,
            "--token",
            &s.read_token,
            "export",
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csv = String::from_utf8(out.stdout).unwrap();
    let line = csv
        .lines()
        .find(|l| l.contains(&format!(",{port},")))
        .unwrap_or_else(|| panic!("{csv}"));
    assert!(
        line.starts_with("e2e-basic,tcp,ipv4,127.0.0.1,") && line.contains(&opened_at) && line.contains("pw-listen"),
        "{line}"
    );
}

fn changes_made_while_the_collector_is_down_arrive_later_with_their_original_times(backend: Backend) {
    let s = setup("e2e-outage", "e2e-outage", backend);
    let spool = s.dir.path.join("spool");
    let _agent = Agent::start(&s.collector.url, &s.agent_token, "e2e-outage", "200ms", &spool).unwrap();
    let before = Listeners::start(&[], &["tcp4:127.0.0.1:0"]).unwrap();
    let before_port = before.port(0);
    eventually(SETTLE, || {
        (!who(&s, before_port, &[]).as_array()?.is_empty()).then_some(())
    })
    .expect("first listener stored");

    // The collector dies (kill -9) while the agent keeps shipping.
    let (db, port) = (s.collector.db.clone(), s.collector.port());
    let Setup {
        _db,
        dir,
        collector,
        agent_token,
        read_token,
    } = s;
    collector.kill();
    let during = Listeners::start(&[], &["tcp4:127.0.0.1:0"]).unwrap();
    let during_port = during.port(0);
    let opened_while_down = jiff::Timestamp::now();
    std::thread::sleep(Duration::from_millis(1500));
    drop(before);
    std::thread::sleep(Duration::from_millis(1500));
    let back_at = jiff::Timestamp::now();

    let s = Setup {
        _db,
        dir,
        collector: Collector::start(&db, port).unwrap(),
        agent_token,
        read_token,
    };
    let rows = eventually(Duration::from_secs(60), || {
        let h = history(&s, "e2e-outage", before_port);
        h.iter().any(|r| !r["closed_at"].is_null()).then_some(h)
    })
    .expect("the spooled close arrives once the collector is back (the agent retries with backoff)");
    assert_eq!(rows.len(), 1, "no duplicate interval: {rows:?}");
    let closed_at: jiff::Timestamp = rows[0]["closed_at"].as_str().unwrap().parse().unwrap();
    assert!(
        closed_at < back_at,
        "the close keeps the time it was observed, not the time it arrived"
    );

    let during_rows = eventually(SETTLE, || {
        let h = history(&s, "e2e-outage", during_port);
        (!h.is_empty()).then_some(h)
    })
    .expect("the listener opened during the outage arrives");
    assert_eq!(during_rows.len(), 1);
    let opened_at: jiff::Timestamp = during_rows[0]["opened_at"].as_str().unwrap().parse().unwrap();
    assert!(opened_at < back_at && opened_at >= opened_while_down - jiff::SignedDuration::from_secs(1));
    drop(during);
}

fn restarting_a_killed_agent_makes_no_false_events(backend: Backend) {
    let s = setup("e2e-restart", "e2e-restart", backend);
    let spool = s.dir.path.join("spool");
    let l = Listeners::start(&[], &["tcp4:127.0.0.1:0"]).unwrap();
    let port = l.port(0);
    let agent = Agent::start(&s.collector.url, &s.agent_token, "e2e-restart", "200ms", &spool).unwrap();
    eventually(SETTLE, || (!who(&s, port, &[]).as_array()?.is_empty()).then_some(())).expect("listener stored");
    agent.kill();
    let again = Agent::start(&s.collector.url, &s.agent_token, "e2e-restart", "200ms", &spool).unwrap();
    // Wait until the new run has certainly reported (its snapshot updates last_seen).
    let restarted_at = jiff::Timestamp::now();
    eventually(SETTLE, || {
        let hosts = portwatch_json(&s.collector.url, &s.read_token, &["hosts"]).ok()?;
        let seen: jiff::Timestamp = hosts[0]["last_seen"].as_str()?.parse().ok()?;
        (seen > restarted_at + jiff::SignedDuration::from_millis(600)).then_some(())
    })
    .expect("the restarted agent reports");
    let h = history(&s, "e2e-restart", port);
    assert_eq!(
        h.len(),
        1,
        "the restart neither closed nor reopened the listener: {h:?}"
    );
    assert!(h[0]["closed_at"].is_null());
    assert!(again.terminate().unwrap().success(), "SIGTERM stops the agent cleanly");
}

#[test]
fn the_quick_start_serves_with_a_local_agent_and_prints_a_query_that_works() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = TempDir::new("e2e-quickstart").unwrap();
    let db = dir.path.join("collector.db");
    let mut serve = Command::new(binary("portwatch-collector"))
        .args([
            "serve",
            "--local-agent",
            "--local-agent-interval",
            "200ms",
            "--listen",
            "127.0.0.1:0",
            "--db",
        ])
        .arg(&db)
        .env("PORTWATCH_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(serve.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    for _ in 0..3 {
        printed.push(lines.next().unwrap().unwrap());
    }
    let url = printed[0]
        .strip_prefix("portwatch-collector listening on ")
        .unwrap()
        .to_owned();
    assert!(
        printed[2].contains("portwatch --collector") && printed[2].contains("who --port 22"),
        "{printed:?}"
    );
    let read_token = std::fs::read_to_string(dir.path.join("local-read.token")).unwrap();
    let hosts = eventually(SETTLE, || {
        let v = portwatch_json(&url, read_token.trim(), &["hosts"]).ok()?;
        (v.as_array()?.len() == 1 && v[0]["listeners"].as_u64()? > 0).then_some(v)
    })
    .expect("the local agent reports to the quick-start collector");
    assert_eq!(hosts[0]["status"], "up");
    let pid = rustix::process::Pid::from_child(&serve);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert!(
        serve.wait().unwrap().success(),
        "SIGTERM stops the collector and its local agent cleanly"
    );
}

fn killing_the_collector_repeatedly_while_listeners_churn_loses_and_duplicates_nothing(backend: Backend) {
    let s = setup("e2e-churn", "e2e-churn", backend);
    let spool = s.dir.path.join("spool");
    let _agent = Agent::start(&s.collector.url, &s.agent_token, "e2e-churn", "100ms", &spool).unwrap();
    let (db, port) = (s.collector.db.clone(), s.collector.port());
    let Setup {
        _db,
        dir,
        mut collector,
        agent_token,
        read_token,
    } = s;

    // Each round: a listener opens, the oldest open one closes, and the
    // collector is killed (-9) and restarted at a moment unrelated to the
    // agent's shipping, so some kills land mid-request or mid-transaction.
    let mut open: std::collections::VecDeque<Listeners> = Default::default();
    let mut opened_ports = Vec::new();
    let mut closed_ports = Vec::new();
    for round in 0..6u64 {
        let l = Listeners::start(&[], &["tcp4:127.0.0.1:0"]).unwrap();
        opened_ports.push(l.port(0));
        open.push_back(l);
        if open.len() > 2 {
            let gone = open.pop_front().unwrap();
            closed_ports.push(gone.port(0));
        }
        std::thread::sleep(Duration::from_millis(130 + 70 * round));
        collector.kill();
        std::thread::sleep(Duration::from_millis(250));
        collector = Collector::start(&db, port).unwrap();
    }
    let s = Setup {
        _db,
        dir,
        collector,
        agent_token,
        read_token,
    };

    // Once the agent has caught up, every listener has exactly one interval,
    // closed exactly when it was closed.
    let still_open: Vec<u16> = open.iter().map(|l| l.port(0)).collect();
    let settled = eventually(Duration::from_secs(60), || {
        // Until the agent's first batch after the churn lands, the collector may
        // not know the host yet (every batch of a short up-window can miss while
        // the agent backs off): that is "not yet", not a failure.
        portwatch_json(&s.collector.url, &s.read_token, &["hosts"])
            .ok()?
            .as_array()?
            .iter()
            .any(|h| h["host"] == "e2e-churn")
            .then_some(())?;
        let all: Vec<(u16, Vec<Value>)> = opened_ports.iter().map(|&p| (p, history(&s, "e2e-churn", p))).collect();
        let done = all
            .iter()
            .all(|(p, h)| h.len() == 1 && h[0]["closed_at"].is_null() == still_open.contains(p));
        done.then_some(all)
    });
    let Some(all) = settled else {
        let now: Vec<_> = opened_ports.iter().map(|&p| (p, history(&s, "e2e-churn", p))).collect();
        panic!("history did not converge to one interval per listener: {now:#?}");
    };
    for (p, h) in &all {
        assert_eq!(h.len(), 1, "port {p}: {h:?}");
        assert_eq!(h[0]["closed_at"].is_null(), still_open.contains(p), "port {p}: {h:?}");
    }
    assert_eq!(closed_ports.len(), 4);
    // Stays converged: nothing is replayed twice after the catch-up.
    std::thread::sleep(Duration::from_millis(500));
    for p in &opened_ports {
        assert_eq!(history(&s, "e2e-churn", *p).len(), 1, "port {p}");
    }
    drop(open);
}

fn trends_show_listeners_over_time_new_ports_and_short_lived_listeners(backend: Backend) {
    let s = setup("e2e-trends", "e2e-trends", backend);
    let spool = s.dir.path.join("spool");
    let _agent = Agent::start(&s.collector.url, &s.agent_token, "e2e-trends", "200ms", &spool).unwrap();
    let stays = Listeners::start(&[], &["tcp4:127.0.0.1:0"]).unwrap();
    let brief = Listeners::start(&[], &["tcp4:127.0.0.1:0"]).unwrap();
    let (stays_port, brief_port) = (stays.port(0), brief.port(0));
    eventually(SETTLE, || {
        (!who(&s, brief_port, &[]).as_array()?.is_empty()).then_some(())
    })
    .expect("stored");
    drop(brief);
    eventually(SETTLE, || {
        history(&s, "e2e-trends", brief_port)
            .iter()
            .any(|r| !r["closed_at"].is_null())
            .then_some(())
    })
    .expect("the close is stored");

    let t = portwatch_json(&s.collector.url, &s.read_token, &["trends", "--host", "e2e-trends"]).unwrap();
    assert_eq!(t["bucket_secs"], 3600);
    let points = t["open_listeners"].as_array().unwrap();
    assert_eq!(points.len(), 25, "24 hours, both ends: {t:#}");
    // The host's listeners opened a moment ago: none at the earlier boundaries, and the
    // one that stays open (at least) at the last.
    assert_eq!(points[0]["listeners"], 0);
    assert!(points[24]["listeners"].as_u64().unwrap() >= 1, "{t:#}");
    let short = t["short_lived"].as_array().unwrap();
    assert!(
        short
            .iter()
            .any(|x| x["port"] == brief_port && x["process"] == "pw-listen" && x["count"] == 1),
        "{t:#}"
    );
    assert!(!short.iter().any(|x| x["port"] == stays_port), "{t:#}");
    let new: Vec<&Value> = t["new_ports_24h"].as_array().unwrap().iter().collect();
    assert!(
        new.iter().any(|f| f["port"] == stays_port && f["host"] == "e2e-trends"),
        "{t:#}"
    );
    assert!(t["top_ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["port"] == stays_port && p["hosts"] == 1));

    // Fleet-wide, by day, as a table for people.
    let out = std::process::Command::new(binary("portwatch"))
        .args([
            "--collector",
            &s.collector.url,
            "--token",
            &s.read_token,
            "trends",
            "--bucket",
            "day",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with("Open listeners (fleet-wide), every day:"), "{text}");
    assert!(
        text.contains("Short-lived listeners") && text.contains(&format!("tcp/{brief_port}")),
        "{text}"
    );
    drop(stays);
}

on_every_backend!(
    listeners_opening_and_closing_become_history_that_every_query_answers,
    changes_made_while_the_collector_is_down_arrive_later_with_their_original_times,
    restarting_a_killed_agent_makes_no_false_events,
    killing_the_collector_repeatedly_while_listeners_churn_loses_and_duplicates_nothing,
    trends_show_listeners_over_time_new_ports_and_short_lived_listeners,
);
