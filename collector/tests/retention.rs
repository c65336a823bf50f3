//! Retention through the store's traits, on a real SQLite file: pruning by a
//! plan in small batches, what it must keep (open intervals, undelivered
//! outbox events, programs named again meanwhile), the space it frees, and
//! forgetting a host (with a batch of it racing the forget).
// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use portwatch_collector::pruner;
use portwatch_collector::retention::{self, Retention};
use portwatch_collector::store::sqlite::SqliteStore;
use portwatch_collector::store::{
    Alerts, Baselines, HistoryReads, HistoryWrites, Maintenance, Outbox, PruneCursor, Pruned, Tokens,
};
use portwatch_common::wire::{Batch, HostFacts, Report, ReportBody, PROTOCOL_VERSION};
use portwatch_common::{Exposure, Family, Listener, Process, Proto};
use portwatch_model::{AlertState, Finding, Kind, Role};
use support::{make_token, temp_store};

const DAY: i64 = 86_400;

/// Day `d` of the test's calendar (day 0 is 2026-01-01).
fn day(d: i64) -> Timestamp {
    Timestamp::from_second(1_767_225_600 + d * DAY).unwrap()
}

/// Thirty days of history, as of `now`.
fn month_plan(now: Timestamp) -> retention::PrunePlan {
    retention::plan(
        now,
        &Retention {
            history: Some(Duration::from_secs(30 * 86_400)),
            alerts: Some(Duration::from_secs(30 * 86_400)),
            baseline_log: Some(Duration::from_secs(30 * 86_400)),
        },
    )
}

fn listener(port: u16, program: &str) -> Listener {
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
        processes: vec![Process {
            pid: 812,
            name: program.into(),
            cmdline: Some(format!("/usr/sbin/{program} -D").into()),
            exe: Some(format!("/usr/sbin/{program}").into()),
            uid: Some(0),
            user: Some("root".into()),
            container: None,
            unit: None,
        }],
    }
}

fn batch(host: &str, session: &str, reports: Vec<Report>) -> Batch {
    Batch {
        version: PROTOCOL_VERSION,
        host: host.into(),
        session: session.into(),
        dropped: 0,
        alive_at: None,
        reports,
    }
}

fn snapshot(seq: u64, at: Timestamp, listeners: Vec<Listener>) -> Report {
    Report {
        seq,
        observed_at: at,
        body: ReportBody::Snapshot {
            facts: HostFacts {
                os: None,
                kernel: None,
                boot_time: None,
                agent_version: "0.1.0".into(),
                interval_ms: 10_000,
                tags: Default::default(),
                detection: None,
            },
            listeners,
        },
    }
}

fn delta(seq: u64, at: Timestamp, opened: Vec<Listener>, closed: Vec<Listener>) -> Report {
    Report {
        seq,
        observed_at: at,
        body: ReportBody::Delta {
            opened: opened.into_iter().map(Arc::new).collect(),
            closed: closed.into_iter().map(Arc::new).collect(),
        },
    }
}

/// Sends `reports` of `host` (session `s1`), received at the last report's time.
fn send(store: &SqliteStore, host: &str, reports: Vec<Report>) -> portwatch_common::wire::Ack {
    let at = reports.last().unwrap().observed_at;
    store.ingest(&batch(host, "s1", reports), at).unwrap()
}

/// Prunes `plan` to the end, `batch_rows` at a time; what it removed, and the calls it took.
fn prune_all(store: &SqliteStore, plan: &retention::PrunePlan, batch_rows: usize) -> (Pruned, usize) {
    let mut cursor = PruneCursor::default();
    let mut total = Pruned::default();
    let mut calls = 0;
    while !cursor.done() {
        total += store.prune(plan, &mut cursor, batch_rows).unwrap();
        calls += 1;
        assert!(calls < 100_000, "pruning never ends");
    }
    (total, calls)
}

fn sql_count(dir: &std::path::Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(dir.join("collector.db")).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

struct Dir(std::path::PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn store(tag: &str) -> (Dir, Arc<SqliteStore>) {
    let (dir, store) = temp_store("retention", tag);
    (Dir(dir), store)
}

/// web-1: ssh open since day 0; http closed on day 1; https closed on day 50.
/// db-1: a program of its own (`pgbouncer`) on a listener closed on day 1.
/// web-1 opens 9000 on day 55.
fn two_hosts(store: &SqliteStore) {
    send(
        store,
        "web-1",
        vec![snapshot(
            1,
            day(0),
            vec![listener(22, "sshd"), listener(80, "nginx"), listener(443, "haproxy")],
        )],
    );
    send(
        store,
        "web-1",
        vec![delta(2, day(1), vec![], vec![listener(80, "nginx")])],
    );
    send(
        store,
        "web-1",
        vec![delta(3, day(50), vec![], vec![listener(443, "haproxy")])],
    );
    send(
        store,
        "db-1",
        vec![snapshot(1, day(0), vec![listener(6432, "pgbouncer")])],
    );
    send(
        store,
        "db-1",
        vec![delta(2, day(1), vec![], vec![listener(6432, "pgbouncer")])],
    );
    // The newest interval (pruning never deletes the greatest id, which SQLite would give again).
    send(
        store,
        "web-1",
        vec![delta(4, day(55), vec![listener(9000, "sshd")], vec![])],
    );
}

#[test]
fn closed_intervals_past_the_cutoff_go_in_small_batches_and_open_ones_stay_however_old() {
    let (dir, store) = store("intervals");
    two_hosts(&store);
    let plan = month_plan(day(60));
    let counted = store.prune_count(&plan).unwrap();
    assert_eq!(
        (counted.intervals, counted.programs),
        (2, 2),
        "web-1's http and db-1's pgbouncer intervals, and their programs nginx and pgbouncer: {counted:?}"
    );
    assert_eq!(store.prune_count(&plan).unwrap(), counted, "a dry run removes nothing");
    let (pruned, calls) = prune_all(&store, &plan, 1);
    assert_eq!((pruned.intervals, pruned.programs), (2, 2), "{pruned:?}");
    assert!(calls >= 4, "one row per batch: {calls} calls");
    let history = store.history("web-1", None, None, None).unwrap();
    let ports: Vec<(u16, bool)> = history
        .iter()
        .map(|r| (r.listener.local_port, r.closed_at.is_some()))
        .collect();
    assert_eq!(
        ports,
        vec![(22, false), (443, true), (9000, false)],
        "open since day 0 and closed on day 50 stay"
    );
    let open = store.listeners_at("web-1", day(60)).unwrap();
    assert_eq!(&*open[0].listener.processes[0].name, "sshd");
    assert!(store.history("db-1", None, None, None).unwrap().is_empty());
    assert_eq!(
        sql_count(&dir.0, "SELECT count(*) FROM programs"),
        2,
        "sshd and haproxy"
    );
    assert_eq!(
        store.prune_count(&plan).unwrap(),
        Pruned::default(),
        "nothing left to prune"
    );
    // A plan that keeps history forever removes none of it.
    let forever = retention::plan(
        day(400),
        &Retention {
            history: None,
            ..Retention::default()
        },
    );
    assert_eq!(prune_all(&store, &forever, 10).0.intervals, 0);
}

#[test]
fn a_program_named_again_while_a_pass_runs_is_kept() {
    let (dir, store) = store("programs");
    let first = vec![listener(80, "nginx"), listener(81, "varnish"), listener(22, "sshd")];
    send(&store, "web-1", vec![snapshot(1, day(0), first)]);
    let closed = vec![listener(80, "nginx"), listener(81, "varnish")];
    send(&store, "web-1", vec![delta(2, day(1), vec![], closed)]);
    let plan = month_plan(day(60));
    let mut cursor = PruneCursor::default();
    // Up to the first program removed: both were found unnamed, one is gone.
    loop {
        let pruned = store.prune(&plan, &mut cursor, 1).unwrap();
        assert!(!cursor.done());
        if pruned.programs > 0 {
            break;
        }
    }
    assert_eq!(
        sql_count(&dir.0, "SELECT count(*) FROM programs"),
        2,
        "sshd and one of the two"
    );
    let left: String = rusqlite::Connection::open(dir.0.join("collector.db"))
        .unwrap()
        .query_row("SELECT name FROM programs WHERE name != 'sshd'", [], |r| r.get(0))
        .unwrap();
    // The one left opens a listener again, before the pass reaches it.
    send(
        &store,
        "web-1",
        vec![delta(3, day(60), vec![listener(90, &left)], vec![])],
    );
    while !cursor.done() {
        store.prune(&plan, &mut cursor, 1).unwrap();
    }
    let open = store.listeners_at("web-1", day(60)).unwrap();
    let names: Vec<&str> = open.iter().map(|r| &*r.listener.processes[0].name).collect();
    assert_eq!(names, vec!["sshd", &left], "its program is still there");
}

#[test]
fn a_program_named_by_an_interval_given_a_forgotten_hosts_id_is_kept() {
    let (_dir, store) = store("programs-forget");
    let first = vec![listener(80, "nginx"), listener(81, "varnish")];
    send(&store, "web-1", vec![snapshot(1, day(0), first.clone())]);
    send(&store, "web-1", vec![delta(2, day(1), vec![], first.clone())]);
    // The newest interval is db-1's, to be forgotten.
    send(&store, "db-1", vec![snapshot(1, day(59), vec![listener(22, "sshd")])]);
    let plan = month_plan(day(60));
    let mut cursor = PruneCursor::default();
    while store.prune(&plan, &mut cursor, 1).unwrap().programs == 0 {
        assert!(!cursor.done());
    }
    // db-1 goes with every interval left: the next ones get ids the pass has seen.
    store.forget_host("db-1").unwrap().unwrap();
    send(&store, "web-2", vec![snapshot(1, day(60), first)]);
    while !cursor.done() {
        store.prune(&plan, &mut cursor, 1).unwrap();
    }
    let open = store.listeners_at("web-2", day(60)).unwrap();
    let names: Vec<&str> = open.iter().map(|r| &*r.listener.processes[0].name).collect();
    assert_eq!(names, vec!["nginx", "varnish"], "both programs are there");
}

#[test]
fn an_outbox_id_is_never_given_twice_so_a_sinks_place_stays_right() {
    let (_dir, store) = store("outbox-ids");
    send(
        &store,
        "web-1",
        vec![snapshot(1, day(0), vec![listener(23, "telnetd")])],
    );
    assert_eq!(store.sink_progress("webhook:ops").unwrap().cursor, 0);
    store
        .sync_alerts(&["web-1".to_owned()], &[finding("web-1", 23)], 100, day(0))
        .unwrap();
    let last = store.alert_events_after(0, 10).unwrap().last().unwrap().0;
    store.set_sink_progress("webhook:ops", last, &[]).unwrap();
    // The host with the newest events is forgotten; another host's alert is the next change.
    store.forget_host("web-1").unwrap().unwrap();
    store
        .sync_alerts(&["web-2".to_owned()], &[finding("web-2", 23)], 100, day(1))
        .unwrap();
    let pending = store.alert_event_hosts_after(last, 10).unwrap();
    assert_eq!(pending.len(), 1, "the sink still has web-2's alert to deliver");
    assert_eq!(pending[0].1, "web-2");
    assert!(pending[0].0 > last);
}

fn finding(host: &str, port: u16) -> Finding {
    Finding {
        message: format!("{host}: tcp/{port} on 0.0.0.0 is in no baseline"),
        proto: Some(Proto::Tcp),
        local_addr: Some("0.0.0.0".parse().unwrap()),
        local_port: Some(port),
        ..Finding::new(
            Kind::UnexpectedListener,
            host,
            format!("unexpected-listener:tcp:0.0.0.0:{port}"),
        )
    }
}

#[test]
fn a_resolved_alert_goes_with_its_events_only_once_every_sink_has_delivered_them() {
    let (_dir, store) = store("alerts");
    let hosts = vec!["web-1".to_owned()];
    // The sink has a place before the alert's events exist.
    assert_eq!(store.sink_progress("webhook:ops").unwrap().cursor, 0);
    store.sync_alerts(&hosts, &[finding("web-1", 23)], 100, day(0)).unwrap();
    store.sync_alerts(&hosts, &[], 100, day(1)).unwrap();
    // One still open, however old.
    store
        .sync_alerts(&hosts, &[finding("web-1", 445)], 100, day(2))
        .unwrap();
    let events: Vec<i64> = store
        .alert_events_after(0, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(events.len(), 3);
    let plan = month_plan(day(90));
    let counted = store.prune_count(&plan).unwrap();
    assert_eq!((counted.alerts, counted.alerts_held), (0, 1), "{counted:?}");
    let (pruned, _) = prune_all(&store, &plan, 10);
    assert_eq!((pruned.alerts, pruned.alert_events, pruned.alerts_held), (0, 0, 1));
    assert_eq!(store.alerts(None, None, 10).unwrap().len(), 2, "nothing went");
    // Delivered: the first by the cursor, the resolution as done after it.
    store.set_sink_progress("webhook:ops", events[0], &[events[1]]).unwrap();
    let (pruned, _) = prune_all(&store, &plan, 10);
    assert_eq!((pruned.alerts, pruned.alert_events, pruned.alerts_held), (1, 2, 0));
    let left = store.alerts(None, None, 10).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].state, AlertState::Open);
    let after: Vec<i64> = store
        .alert_events_after(0, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(after, vec![events[2]], "the open alert's event stays for the sink");
    let progress = store.sink_progress("webhook:ops").unwrap();
    let pending = store.alert_event_hosts_after(progress.cursor, 100).unwrap();
    assert_eq!(
        pending,
        vec![(events[2], "web-1".to_owned())],
        "the sink's place still reads right"
    );
}

#[test]
fn the_baseline_log_keeps_each_baselines_latest_change() {
    let (_dir, store) = store("baselines");
    let source = |port: u16| {
        format!(
            "name = \"web\"\nhosts = [\"web-*\"]\n\n[[listener]]\nproto = \"tcp\"\nport = {port}\nowner = \"sre\"\n\
             reason = \"ssh\"\n"
        )
    };
    for (i, port) in [22, 23, 24].into_iter().enumerate() {
        store
            .put_baseline("web", &source(port), "root", Some("why"), day(i as i64))
            .unwrap();
    }
    store.put_baseline("db", &source(5432), "root", None, day(0)).unwrap();
    let (pruned, _) = prune_all(&store, &month_plan(day(90)), 1);
    assert_eq!(pruned.baseline_log, 2, "web's first two changes");
    let log = store.baseline_log(None).unwrap();
    let kept: Vec<(&str, Timestamp)> = log.iter().map(|l| (l.name.as_str(), l.at)).collect();
    assert_eq!(kept, vec![("web", day(2)), ("db", day(0))]);
    let forever = retention::plan(day(900), &Retention::default());
    assert_eq!(
        prune_all(&store, &forever, 10).0.baseline_log,
        0,
        "kept forever by default"
    );
}

#[test]
fn a_new_database_gives_freed_space_back_to_the_file_system() {
    let (dir, store) = store("vacuum");
    assert_eq!(sql_count(&dir.0, "PRAGMA auto_vacuum"), 2, "incremental");
    let many: Vec<Listener> = (1..2000).map(|p| listener(p, "svc")).collect();
    send(&store, "web-1", vec![snapshot(1, day(0), many.clone())]);
    send(&store, "web-1", vec![delta(2, day(1), vec![], many)]);
    prune_all(&store, &month_plan(day(60)), 500);
    let pages = sql_count(&dir.0, "PRAGMA page_count");
    assert!(store.reclaim(8).unwrap() > 0, "freed pages are left after a small step");
    let mut left = u64::MAX;
    for _ in 0..10_000 {
        left = store.reclaim(pruner::VACUUM_PAGES).unwrap();
        if left == 0 {
            break;
        }
    }
    assert_eq!(left, 0, "every freed page given back");
    assert!(sql_count(&dir.0, "PRAGMA page_count") < pages, "the file got shorter");
}

#[test]
fn a_forgotten_host_leaves_nothing_behind_and_its_ports_first_sightings_move() {
    let (_dir, store) = store("forget");
    let agent = make_token(&store, "agent:web-1", Role::Agent, Some("web-1"));
    make_token(&store, "agent:web-2", Role::Agent, Some("web-2"));
    make_token(&store, "ops", Role::Read, None);
    // web-1 saw 22 and 7000 first; web-2 has 22 from day 3.
    send(
        &store,
        "web-1",
        vec![snapshot(1, day(1), vec![listener(22, "sshd"), listener(7000, "x")])],
    );
    send(&store, "web-2", vec![snapshot(1, day(3), vec![listener(22, "sshd")])]);
    store
        .sync_alerts(&["web-1".to_owned()], &[finding("web-1", 7000)], 100, day(1))
        .unwrap();
    // A snapshot in parts in progress.
    let part = Report {
        seq: 2,
        observed_at: day(4),
        body: ReportBody::SnapshotPart {
            part: 0,
            parts: 2,
            facts: None,
            listeners: vec![listener(8080, "java")],
        },
    };
    send(&store, "web-1", vec![part]);
    let forgotten = store.forget_host("web-1").unwrap().unwrap();
    assert_eq!(
        (
            forgotten.intervals,
            forgotten.alerts,
            forgotten.alert_events,
            forgotten.tokens,
            forgotten.snapshot_parts,
            forgotten.first_seen_moved,
            forgotten.first_seen_dropped
        ),
        (2, 1, 1, 1, 1, 1, 1),
        "{forgotten:?}"
    );
    assert!(store.host("web-1", day(5)).unwrap().is_none());
    assert!(store.history("web-1", None, None, None).unwrap().is_empty());
    assert!(store.alerts(None, Some("web-1"), 10).unwrap().is_empty());
    assert!(store
        .token_by_hash(&portwatch_collector::token::hash(&agent))
        .unwrap()
        .is_none());
    let names: Vec<String> = store.tokens().unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(names, vec!["agent:web-2", "ops"]);
    let first = store.first_seen_ports(day(0), None).unwrap();
    let first: Vec<(u16, &str, Timestamp)> = first.iter().map(|f| (f.port, f.host.as_str(), f.first_seen)).collect();
    assert_eq!(first, vec![(22, "web-2", day(3))], "7000 was web-1's alone");
    assert!(store.forget_host("web-1").unwrap().is_none(), "unknown now");
    assert_eq!(store.who(22, None, day(5)).unwrap().len(), 1);
}

#[test]
fn a_batch_of_a_host_being_forgotten_finds_a_new_empty_host_and_is_asked_for_a_snapshot() {
    let (_dir, store) = store("race");
    send(&store, "web-1", vec![snapshot(1, day(0), vec![listener(22, "sshd")])]);
    // Its agent keeps sending deltas while the host is forgotten, until it is asked for a snapshot.
    let sender = {
        let store = store.clone();
        std::thread::spawn(move || {
            let mut acks: Vec<portwatch_common::wire::Ack> = Vec::new();
            for seq in 2u64.. {
                let opened = vec![listener(1000 + (seq % 60_000) as u16, "svc")];
                let at = day(0).checked_add(jiff::SignedDuration::from_secs(seq as i64)).unwrap();
                acks.push(send(&store, "web-1", vec![delta(seq, at, opened, vec![])]));
                let resyncs = acks.iter().filter(|a| a.resync).count();
                if resyncs == 5 {
                    return acks;
                }
            }
            unreachable!()
        })
    };
    while store.history("web-1", None, None, None).unwrap().len() < 20 {
        std::thread::yield_now();
    }
    store.forget_host("web-1").unwrap().unwrap();
    let acks = sender.join().unwrap();
    let first_resync = acks.iter().position(|a| a.resync).unwrap();
    assert!(first_resync >= 19, "the deltas before the forget were stored");
    assert!(
        acks[first_resync..].iter().all(|a| a.resync && a.acked == 0),
        "{acks:?}"
    );
    // The host is there again, as new and empty: none of its old history, none of the refused deltas.
    let host = store.host("web-1", day(1)).unwrap().unwrap();
    assert_eq!(host.listeners, 0);
    assert!(store.history("web-1", None, None, None).unwrap().is_empty());
    // The snapshot its agent then sends starts it cleanly.
    let at = day(1);
    store
        .ingest(
            &batch("web-1", "s2", vec![snapshot(1, at, vec![listener(22, "sshd")])]),
            at,
        )
        .unwrap();
    let history = store.history("web-1", None, None, None).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].opened_at, at);
}

#[test]
fn a_new_host_given_a_forgotten_hosts_id_is_read_under_its_own_name() {
    let (_dir, store) = store("reuse");
    send(&store, "a-host", vec![snapshot(1, day(0), vec![listener(22, "sshd")])]);
    send(&store, "b-host", vec![snapshot(1, day(0), vec![listener(22, "sshd")])]);
    // Names read (and cached) once.
    let names = |at| -> Vec<String> {
        store
            .who(22, None, at)
            .unwrap()
            .iter()
            .map(|r| r.host.to_string())
            .collect()
    };
    assert_eq!(names(day(1)), vec!["a-host", "b-host"]);
    store.forget_host("b-host").unwrap().unwrap();
    // SQLite gives the greatest id, b-host's, to the next new host.
    send(&store, "c-host", vec![snapshot(1, day(2), vec![listener(22, "sshd")])]);
    assert_eq!(names(day(3)), vec!["a-host", "c-host"]);
}
