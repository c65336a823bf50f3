//! End to end: an agent given two collectors (`--collector` twice) stays
//! with the first while it answers, moves to the second when the first is
//! killed (kill -9), and stays there when the first comes back; a refusal
//! (401) from the first is not sent to the second.
//!
//! Two collectors cannot share one SQLite file (one writer), so each has its
//! own, copied from one where the tokens were made (the same tokens work on
//! both): the second does not know the agent's session and asks for a
//! snapshot, which is how the agent's listeners reach it. Two collectors on
//! one PostgreSQL database share the session: the switch asks for nothing,
//! drops nothing, and the history has each interval once.
// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use portwatch_tests::*;
use serde_json::Value;

/// Generous bound for an agent at a 200 ms interval to get a change stored.
const SETTLE: Duration = Duration::from_secs(60);

struct Setup {
    dir: TempDir,
    host: String,
    agent_token: String,
    read_token: String,
    /// The first collector's database and the second's.
    dbs: [PathBuf; 2],
}

/// Tokens made in the first database, then a copy of it as the second.
fn setup(tag: &str) -> Setup {
    let dir = TempDir::new(tag).unwrap();
    let host = tag.to_owned();
    let first = dir.path.join("first.db");
    let second = dir.path.join("second.db");
    let agent_token = create_token(&first, &["--host", &host]).unwrap();
    let read_token = create_token(&first, &["--role", "read", "--name", "ops"]).unwrap();
    let db = rusqlite::Connection::open(&first).unwrap();
    db.execute("VACUUM INTO ?1", [second.to_str().unwrap()]).unwrap();
    drop(db);
    Setup {
        dir,
        host,
        agent_token,
        read_token,
        dbs: [first, second],
    }
}

impl Setup {
    /// An agent sending to `first`, then `second`, with `extra` flags.
    fn agent(&self, first: &Collector, second: &Collector, extra: &[&str]) -> Agent {
        let mut flags = vec!["--collector", second.url.as_str()];
        flags.extend_from_slice(extra);
        Agent::start_logged(
            &first.url,
            &self.agent_token,
            &self.host,
            "200ms",
            &self.dir.path.join("spool"),
            &flags,
        )
        .unwrap()
    }

    /// The intervals of `port` in `collector`'s history of this host (none
    /// while the host is unknown there).
    fn history(&self, collector: &Collector, port: u16) -> Vec<Value> {
        let port = port.to_string();
        portwatch_json(
            &collector.url,
            &self.read_token,
            &["history", "--host", &self.host, "--port", &port],
        )
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
    }

    /// The hosts `collector` knows.
    fn hosts(&self, collector: &Collector) -> Vec<Value> {
        let v = portwatch_json(&collector.url, &self.read_token, &["hosts"]).unwrap();
        v.as_array().cloned().unwrap_or_default()
    }

    /// Waits until `collector` has an open interval of `port`.
    fn wait_open(&self, collector: &Collector, port: u16, what: &str, agent: &Agent) {
        eventually(SETTLE, || {
            let rows = self.history(collector, port);
            rows.iter().any(|r| r["closed_at"].is_null()).then_some(())
        })
        .unwrap_or_else(|| panic!("{what}; the agent's log:\n{}", agent.log()));
    }
}

/// `portwatch_ingest_requests_total` of `collector`, every outcome summed.
fn ingest_requests(collector: &Collector, token: &str) -> u64 {
    let text = ureq::get(format!("{}/metrics", collector.url))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("portwatch_ingest_requests_total{") || l.starts_with("portwatch_ingest_requests_total ")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn start(db: &Path, port: u16) -> Collector {
    Collector::start(db, port).unwrap()
}

#[test]
fn a_killed_collector_hands_the_agent_to_the_next_which_it_keeps_when_the_first_is_back() {
    // With kernel events where this machine allows them (root, BTF): the
    // snapshot the second asks for is made from the event-made table.
    killed_collector_hands_over("e2e-failover", &[]);
}

#[test]
fn a_killed_collector_hands_a_polling_agent_to_the_next_which_it_keeps() {
    // Polling: the snapshot the second asks for is the next scan.
    killed_collector_hands_over("e2e-failover-polling", &["--no-events"]);
}

fn killed_collector_hands_over(tag: &str, extra: &[&str]) {
    let s = setup(tag);
    let first = start(&s.dbs[0], 0);
    let second = start(&s.dbs[1], 0);
    let agent = s.agent(&first, &second, extra);

    let before = Listeners::start(&[], &["tcp4:127.0.0.1:0"]).unwrap();
    let before_port = before.port(0);
    s.wait_open(&first, before_port, "the first collector stores the listener", &agent);
    assert_eq!(
        ingest_requests(&second, &s.read_token),
        0,
        "while the first answers, nothing goes to the second"
    );

    // The first dies; the agent sends its next batch to the second, which
    // does not know the session and asks for a snapshot.
    let first_port = first.port();
    first.kill();
    let during = Listeners::start(&[], &["tcp4:127.0.0.1:0"]).unwrap();
    s.wait_open(
        &second,
        before_port,
        "the listener opened before the switch reaches the second collector (a snapshot)",
        &agent,
    );
    s.wait_open(
        &second,
        during.port(0),
        "the listener opened at the switch reaches the second",
        &agent,
    );
    let log = agent.log();
    let switches: Vec<&str> = log.lines().filter(|l| l.contains("switched collector")).collect();
    assert_eq!(switches.len(), 1, "the switch is logged once: {log}");
    assert!(
        switches[0].contains(&format!("from=http://127.0.0.1:{first_port}")) && switches[0].contains(&second.url),
        "from and to: {}",
        switches[0]
    );

    // The first comes back: the agent stays with the second, which answers.
    let first = start(&s.dbs[0], first_port);
    let after = Listeners::start(&[], &["tcp4:127.0.0.1:0"]).unwrap();
    let after_port = after.port(0);
    s.wait_open(
        &second,
        after_port,
        "a listener opened once the first is back goes to the second",
        &agent,
    );
    drop(before);
    let closed = eventually(SETTLE, || {
        let rows = s.history(&second, before_port);
        (!rows.is_empty() && rows.iter().all(|r| !r["closed_at"].is_null())).then_some(rows)
    })
    .unwrap_or_else(|| {
        panic!(
            "the close reaches the second collector; the agent's log:\n{}",
            agent.log()
        )
    });
    assert_eq!(
        closed.len(),
        1,
        "one interval, opened by the snapshot, closed: {closed:?}"
    );
    assert_eq!(
        s.history(&first, after_port),
        Vec::<Value>::new(),
        "the first got nothing after its restart"
    );
    assert_eq!(
        s.history(&first, before_port)
            .iter()
            .filter(|r| r["closed_at"].is_null())
            .count(),
        1,
        "the first still has the listener open, as it last heard"
    );
    assert_eq!(
        agent.log().lines().filter(|l| l.contains("switched collector")).count(),
        1,
        "no switch back"
    );
    assert!(agent.terminate().unwrap().success());
    drop((during, after, first, second));
}

#[test]
fn a_refusal_from_the_first_collector_is_not_sent_to_the_next() {
    let s = setup("e2e-failover-refused");
    // The first no longer takes the agent's token; the second would.
    let out = std::process::Command::new(binary("portwatch-collector"))
        .args(["token", "revoke", &format!("agent:{}", s.host), "--db"])
        .arg(&s.dbs[0])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let first = start(&s.dbs[0], 0);
    let second = start(&s.dbs[1], 0);
    let agent = s.agent(&first, &second, &[]);

    // The daemon logs the refusal once the whole round is over, whatever it sent where.
    // (A switch, were it made, would be logged before that.)
    eventually(SETTLE, || {
        let log = agent.log();
        (log.contains("fix the agent token") || log.contains("switched collector")).then_some(())
    })
    .unwrap_or_else(|| panic!("the agent reports the refused token; its log:\n{}", agent.log()));
    assert!(ingest_requests(&first, &s.read_token) >= 1, "the first refused a batch");
    assert_eq!(
        ingest_requests(&second, &s.read_token),
        0,
        "a 401 is the same answer everywhere: nothing was sent to the second"
    );
    assert_eq!(s.hosts(&second), Vec::<Value>::new());
    assert!(!agent.log().contains("switched collector"), "{}", agent.log());
    assert!(agent.terminate().unwrap().success());
}

#[test]
fn two_collectors_on_one_postgres_database_hand_an_agent_over_losing_and_repeating_nothing() {
    let dir = TempDir::new("e2e-failover-pg").unwrap();
    let db = TestDb::new(Backend::Postgres, &dir.path);
    let host = "e2e-failover-pg";
    let agent_token = create_token(&db.db, &["--host", host]).unwrap();
    let read_token = create_token(&db.db, &["--role", "read", "--name", "ops"]).unwrap();
    let first = start(&db.db, 0);
    let second = start(&db.db, 0);
    let agent = Agent::start_logged(
        &first.url,
        &agent_token,
        host,
        "200ms",
        &dir.path.join("spool"),
        &["--collector", second.url.as_str()],
    )
    .unwrap();
    let history = |port: u16| -> Vec<Value> {
        let port = port.to_string();
        portwatch_json(&second.url, &read_token, &["history", "--host", host, "--port", &port])
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    };
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        eventually(SETTLE, || done().then_some(()))
            .unwrap_or_else(|| panic!("{what}; the agent's log:\n{}", agent.log()));
    };

    let before = Listeners::start(&[], &["tcp4:127.0.0.1:0"]).unwrap();
    let before_port = before.port(0);
    // Stored through the first, read through the second: one database.
    wait("the first stores the listener, the second reads it", &|| {
        history(before_port).iter().any(|r| r["closed_at"].is_null())
    });
    assert_eq!(
        ingest_requests(&second, &read_token),
        0,
        "nothing goes to the second yet"
    );

    first.kill();
    let during = Listeners::start(&[], &["tcp4:127.0.0.1:0"]).unwrap();
    let during_port = during.port(0);
    wait("a listener opened at the switch reaches the second", &|| {
        history(during_port).iter().any(|r| r["closed_at"].is_null())
    });
    drop(before);
    wait("the close reaches the second", &|| {
        let rows = history(before_port);
        !rows.is_empty() && rows.iter().all(|r| !r["closed_at"].is_null())
    });
    assert_eq!(history(before_port).len(), 1, "one interval, opened once, closed once");
    assert_eq!(history(during_port).len(), 1, "one interval, still open");
    let log = agent.log();
    assert_eq!(
        log.lines().filter(|l| l.contains("switched collector")).count(),
        1,
        "one switch: {log}"
    );
    assert!(
        !log.contains("asked for a snapshot") && !log.contains("dropped reports"),
        "the second knew the session: no snapshot asked, nothing dropped: {log}"
    );
}

#[test]
fn a_token_revoked_in_the_shared_database_is_refused_by_every_collector() {
    let dir = TempDir::new("e2e-revoke-pg").unwrap();
    let db = TestDb::new(Backend::Postgres, &dir.path);
    let read_token = create_token(&db.db, &["--role", "read", "--name", "ops"]).unwrap();
    let collectors = [start(&db.db, 0), start(&db.db, 0)];
    let status = |c: &Collector| -> u16 {
        match ureq::get(format!("{}/api/v1/hosts", c.url))
            .header("Authorization", format!("Bearer {read_token}"))
            .call()
        {
            Ok(answer) => answer.status().as_u16(),
            Err(ureq::Error::StatusCode(code)) => code,
            Err(e) => panic!("{e}"),
        }
    };
    for c in &collectors {
        assert_eq!(status(c), 200, "the token works on both");
    }
    let out = std::process::Command::new(binary("portwatch-collector"))
        .args(["token", "revoke", "ops", "--db"])
        .arg(&db.db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for c in &collectors {
        eventually(SETTLE, || (status(c) == 401).then_some(()))
            .unwrap_or_else(|| panic!("{} still takes the revoked token", c.url));
    }
}

/// `batch` sent to `collector` as an agent sends it (its host's token, JSON);
/// the collector's answer.
fn send(collector: &Collector, token: &str, batch: &portwatch_common::wire::Batch) -> Value {
    ureq::post(format!("{}/api/v1/ingest", collector.url))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .send(serde_json::to_vec(batch).unwrap())
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap()
}

/// On PostgreSQL a heartbeat writes nothing as it comes (the flush window
/// here is longer than the test); the collector shows it at once, and a
/// clean stop (SIGTERM) writes it before the process ends.
#[test]
fn a_collector_stopped_cleanly_writes_the_heartbeats_it_kept_in_memory() {
    use portwatch_fixtures::{batch, heartbeat, snapshot};
    let dir = TempDir::new("e2e-heartbeat-flush").unwrap();
    let db = TestDb::new(Backend::Postgres, &dir.path);
    let host = "e2e-beat-1";
    let agent_token = create_token(&db.db, &["--host", host]).unwrap();
    let read_token = create_token(&db.db, &["--role", "read", "--name", "ops"]).unwrap();
    let config = dir.path.join("collector.toml");
    std::fs::write(&config, "[postgres]\nheartbeat_flush = \"60s\"\n").unwrap();
    let collector = Collector::serve(
        &db.db,
        &[
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--db".as_ref(),
            db.db.as_os_str(),
            "--config".as_ref(),
            config.as_os_str(),
        ],
    )
    .unwrap();
    let now = jiff::Timestamp::now;
    let answer = send(
        &collector,
        &agent_token,
        &batch(host, "s", vec![snapshot(1, now(), vec![])]),
    );
    assert_eq!(answer["acked"], 1, "{answer}");
    let stored = || -> i64 {
        db.psql(&format!("SELECT last_seen FROM hosts WHERE name = '{host}'"))
            .unwrap()
            .parse()
            .unwrap()
    };
    let after_snapshot = stored();
    // Received in a later millisecond than the snapshot.
    eventually(SETTLE, || (now().as_millisecond() > after_snapshot).then_some(())).unwrap();
    let answer = send(&collector, &agent_token, &heartbeat(host, "s", now()));
    assert_eq!(
        (&answer["acked"], &answer["resync"]),
        (&1.into(), &false.into()),
        "{answer}"
    );
    let hosts = portwatch_json(&collector.url, &read_token, &["hosts"]).unwrap();
    let shown: jiff::Timestamp = hosts[0]["last_seen"].as_str().unwrap().parse().unwrap();
    assert!(
        shown.as_millisecond() > after_snapshot,
        "the collector shows the heartbeat: {hosts}"
    );
    assert_eq!(stored(), after_snapshot, "the heartbeat is not written yet");
    assert!(collector.terminate().unwrap().success());
    assert_eq!(stored(), shown.as_millisecond(), "written before the collector exited");
}

/// A collector killed (kill -9) loses what it kept of heartbeats, at most
/// one flush window of `last_seen` (here the window is longer than the
/// test), and nothing else: the history and the session are in the
/// database, and the next collector answers the host's next heartbeat
/// without asking for a snapshot.
#[test]
fn a_killed_collector_loses_at_most_the_heartbeats_it_kept_never_history() {
    use portwatch_fixtures::{batch, heartbeat, owned, snapshot};
    let dir = TempDir::new("e2e-heartbeat-kill").unwrap();
    let db = TestDb::new(Backend::Postgres, &dir.path);
    let host = "e2e-beat-2";
    let agent_token = create_token(&db.db, &["--host", host]).unwrap();
    let config = dir.path.join("collector.toml");
    std::fs::write(&config, "[postgres]\nheartbeat_flush = \"60s\"\n").unwrap();
    let args = [
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--db".as_ref(),
        db.db.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
    ];
    let collector = Collector::serve(&db.db, &args).unwrap();
    let now = jiff::Timestamp::now;
    let first = batch(host, "s", vec![snapshot(1, now(), vec![owned(22, 1, &[10])])]);
    assert_eq!(send(&collector, &agent_token, &first)["acked"], 1);
    let stored = || -> i64 {
        db.psql(&format!("SELECT last_seen FROM hosts WHERE name = '{host}'"))
            .unwrap()
            .parse()
            .unwrap()
    };
    let after_snapshot = stored();
    eventually(SETTLE, || (now().as_millisecond() > after_snapshot).then_some(())).unwrap();
    assert_eq!(send(&collector, &agent_token, &heartbeat(host, "s", now()))["acked"], 1);
    collector.kill();
    assert_eq!(stored(), after_snapshot, "the kept heartbeat is lost with the process");
    assert_eq!(
        db.psql("SELECT count(*) FROM intervals WHERE closed_at IS NULL")
            .unwrap(),
        "1",
        "the history is not"
    );
    let next = Collector::serve(&db.db, &args).unwrap();
    let answer = send(&next, &agent_token, &heartbeat(host, "s", now()));
    assert_eq!(
        (&answer["acked"], &answer["resync"]),
        (&1.into(), &false.into()),
        "{answer}"
    );
    assert!(next.terminate().unwrap().success());
    assert!(stored() > after_snapshot, "the next heartbeat puts last_seen back");
}
