//! Retention through [`Maintenance`](portwatch_collector::store::Maintenance):
//! pruning by a plan in small batches, what it must keep (open intervals,
//! undelivered outbox events, programs named again meanwhile, each
//! baseline's latest change), the space it gives back, and forgetting a host
//! (with a batch of it racing the forget).

use jiff::Timestamp;
use portwatch_collector::pruner;
use portwatch_collector::retention::{self, Retention};
use portwatch_collector::store::{PruneCursor, Pruned, Store, TokenRow};
use portwatch_common::wire::Ack;
use portwatch_common::Listener;
use portwatch_model::{AlertState, Role};

use super::build::*;

pub fn closed_intervals_past_the_cutoff_go_in_small_batches_and_open_ones_stay_however_old(store: &dyn Store) {
    two_hosts(store);
    let plan = month_plan(day(60));
    let counted = store.prune_count(&plan).unwrap();
    assert_eq!(
        (counted.intervals, counted.programs),
        (2, 2),
        "web-1's http and db-1's pgbouncer intervals, and their programs nginx and pgbouncer: {counted:?}"
    );
    assert_eq!(store.prune_count(&plan).unwrap(), counted, "a dry run removes nothing");
    let (pruned, calls) = prune_all(store, &plan, 1);
    assert_eq!((pruned.intervals, pruned.programs), (2, 2), "{pruned:?}");
    assert!(calls >= 4, "one row per batch: {calls} calls");
    let history = store.history("web-1", None, None, None).unwrap();
    let kept: Vec<(u16, &str, bool)> = history
        .iter()
        .map(|r| {
            (
                r.listener.local_port,
                &*r.listener.processes[0].name,
                r.closed_at.is_some(),
            )
        })
        .collect();
    assert_eq!(
        kept,
        vec![(22, "sshd", false), (443, "haproxy", true), (9000, "sshd", false)],
        "open since day 0 and closed on day 50 stay, with their programs sshd and haproxy"
    );
    let open = store.listeners_at("web-1", day(60)).unwrap();
    assert_eq!(&*open[0].listener.processes[0].name, "sshd");
    assert!(store.history("db-1", None, None, None).unwrap().is_empty());
    assert_eq!(
        store.prune_count(&plan).unwrap(),
        Pruned::default(),
        "nothing left to prune, programs included"
    );
    // A plan that keeps history forever removes none of it.
    let forever = retention::plan(
        day(400),
        &Retention {
            history: None,
            ..Retention::default()
        },
    );
    assert_eq!(prune_all(store, &forever, 10).0.intervals, 0);
}

pub fn a_program_named_again_while_a_pass_runs_is_kept(store: &dyn Store) {
    let first = vec![served_by(80, "nginx"), served_by(81, "varnish"), served_by(22, "sshd")];
    send(store, "web-1", vec![snapshot(1, day(0), first)]);
    let closed = vec![served_by(80, "nginx"), served_by(81, "varnish")];
    send(store, "web-1", vec![delta(2, day(1), vec![], closed)]);
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
        store.prune_count(&plan).unwrap(),
        Pruned {
            programs: 1,
            ..Pruned::default()
        },
        "sshd is named, one of the two is left unnamed"
    );
    // Both open a listener again before the pass goes on: the one removed
    // comes back anew, the one left is named again before the pass reaches it.
    send(
        store,
        "web-1",
        vec![delta(
            3,
            day(60),
            vec![served_by(90, "nginx"), served_by(91, "varnish")],
            vec![],
        )],
    );
    while !cursor.done() {
        store.prune(&plan, &mut cursor, 1).unwrap();
    }
    let open = store.listeners_at("web-1", day(60)).unwrap();
    let names: Vec<(u16, &str)> = open
        .iter()
        .map(|r| (r.listener.local_port, &*r.listener.processes[0].name))
        .collect();
    assert_eq!(
        names,
        vec![(22, "sshd"), (90, "nginx"), (91, "varnish")],
        "their programs are still there"
    );
    assert_eq!(store.prune_count(&plan).unwrap(), Pruned::default());
}

pub fn a_program_named_by_an_interval_given_a_forgotten_hosts_id_is_kept(store: &dyn Store) {
    let first = vec![served_by(80, "nginx"), served_by(81, "varnish")];
    send(store, "web-1", vec![snapshot(1, day(0), first.clone())]);
    send(store, "web-1", vec![delta(2, day(1), vec![], first.clone())]);
    // The newest interval is db-1's, to be forgotten.
    send(store, "db-1", vec![snapshot(1, day(59), vec![served_by(22, "sshd")])]);
    let plan = month_plan(day(60));
    let mut cursor = PruneCursor::default();
    while store.prune(&plan, &mut cursor, 1).unwrap().programs == 0 {
        assert!(!cursor.done());
    }
    // db-1 goes with every interval left: in a backend that hands out the
    // greatest id again, the next ones get ids the pass has seen.
    store.forget_host("db-1").unwrap().unwrap();
    send(store, "web-2", vec![snapshot(1, day(60), first)]);
    while !cursor.done() {
        store.prune(&plan, &mut cursor, 1).unwrap();
    }
    let open = store.listeners_at("web-2", day(60)).unwrap();
    let names: Vec<&str> = open.iter().map(|r| &*r.listener.processes[0].name).collect();
    assert_eq!(names, vec!["nginx", "varnish"], "both programs are there");
}

pub fn an_outbox_id_is_never_given_twice_so_a_sinks_place_stays_right(store: &dyn Store) {
    send(
        store,
        "web-1",
        vec![snapshot(1, day(0), vec![served_by(23, "telnetd")])],
    );
    assert_eq!(store.sink_progress("webhook:ops").unwrap().cursor, 0);
    store
        .sync_alerts(&hosts(&["web-1"]), &[unexpected("web-1", 23)], 100, day(0))
        .unwrap();
    let last = store.alert_events_after(0, 10).unwrap().last().unwrap().0;
    store.set_sink_progress("webhook:ops", last, &[]).unwrap();
    // The host with the newest events is forgotten; another host's alert is the next change.
    store.forget_host("web-1").unwrap().unwrap();
    store
        .sync_alerts(&hosts(&["web-2"]), &[unexpected("web-2", 23)], 100, day(1))
        .unwrap();
    let pending = store.alert_event_hosts_after(last, 10).unwrap();
    assert_eq!(pending.len(), 1, "the sink still has web-2's alert to deliver");
    assert_eq!(pending[0].1, "web-2");
    assert!(pending[0].0 > last);
}

pub fn a_resolved_alert_goes_with_its_events_only_once_every_sink_has_delivered_them(store: &dyn Store) {
    let web = hosts(&["web-1"]);
    // The sink has a place before the alert's events exist.
    assert_eq!(store.sink_progress("webhook:ops").unwrap().cursor, 0);
    store
        .sync_alerts(&web, &[unexpected("web-1", 23)], 100, day(0))
        .unwrap();
    store.sync_alerts(&web, &[], 100, day(1)).unwrap();
    // One still open, however old.
    store
        .sync_alerts(&web, &[unexpected("web-1", 445)], 100, day(2))
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
    let (pruned, _) = prune_all(store, &plan, 10);
    assert_eq!((pruned.alerts, pruned.alert_events, pruned.alerts_held), (0, 0, 1));
    assert_eq!(store.alerts(None, None, 10).unwrap().len(), 2, "nothing went");
    // Delivered: the first by the cursor, the resolution as done after it.
    store.set_sink_progress("webhook:ops", events[0], &[events[1]]).unwrap();
    let (pruned, _) = prune_all(store, &plan, 10);
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

pub fn the_baseline_log_keeps_each_baselines_latest_change(store: &dyn Store) {
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
    let (pruned, _) = prune_all(store, &month_plan(day(90)), 1);
    assert_eq!(pruned.baseline_log, 2, "web's first two changes");
    let log = store.baseline_log(None).unwrap();
    let kept: Vec<(&str, Timestamp)> = log.iter().map(|l| (l.name.as_str(), l.at)).collect();
    assert_eq!(kept, vec![("web", day(2)), ("db", day(0))]);
    let forever = retention::plan(day(900), &Retention::default());
    assert_eq!(
        prune_all(store, &forever, 10).0.baseline_log,
        0,
        "kept forever by default"
    );
}

/// What every backend answers of its space: it grows with what is written,
/// and the space pruning frees is reclaimed step by step to the end, with no
/// freed page kept. (How much goes back to the file system is the backend's
/// own: SQLite's file shrinks, see its tests.)
pub fn the_space_pruning_frees_is_reclaimed_step_by_step_to_the_end(store: &dyn Store) {
    let empty = store.size_bytes().unwrap();
    let many: Vec<Listener> = (1..2000).map(|p| served_by(p, "svc")).collect();
    send(store, "web-1", vec![snapshot(1, day(0), many.clone())]);
    send(store, "web-1", vec![delta(2, day(1), vec![], many)]);
    assert!(store.size_bytes().unwrap() > empty, "1999 intervals take room");
    let (pruned, _) = prune_all(store, &month_plan(day(60)), 500);
    assert!(
        pruned.intervals >= 1998,
        "every closed interval (but the newest, maybe): {pruned:?}"
    );
    let mut steps = Vec::new();
    for _ in 0..10_000 {
        let left = store.reclaim(8).unwrap();
        steps.push(left);
        if left == 0 {
            break;
        }
    }
    assert_eq!(steps.last(), Some(&0), "every freed page given back");
    assert!(
        steps.windows(2).all(|w| w[1] <= w[0]),
        "each step keeps no more freed pages than the one before: {steps:?}"
    );
    assert_eq!(
        store.reclaim(pruner::VACUUM_PAGES).unwrap(),
        0,
        "nothing left to give back"
    );
}

pub fn a_forgotten_host_leaves_nothing_behind_and_its_ports_first_sightings_move(store: &dyn Store) {
    let token = |name: &str, role, host: Option<&str>| TokenRow {
        name: name.into(),
        role,
        host: host.map(str::to_owned),
        hash: format!("hash of {name}"),
        created_at: day(0),
        revoked_at: None,
    };
    store
        .create_token(&token("agent:web-1", Role::Agent, Some("web-1")))
        .unwrap();
    store
        .create_token(&token("agent:web-2", Role::Agent, Some("web-2")))
        .unwrap();
    store.create_token(&token("ops", Role::Read, None)).unwrap();
    // web-1 saw 22 and 7000 first; web-2 has 22 from day 3.
    send(
        store,
        "web-1",
        vec![snapshot(1, day(1), vec![served_by(22, "sshd"), served_by(7000, "x")])],
    );
    send(store, "web-2", vec![snapshot(1, day(3), vec![served_by(22, "sshd")])]);
    store
        .sync_alerts(&hosts(&["web-1"]), &[unexpected("web-1", 7000)], 100, day(1))
        .unwrap();
    // A snapshot in parts in progress.
    send(
        store,
        "web-1",
        vec![part(2, day(4), 0, 2, vec![served_by(8080, "java")])],
    );
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
    assert!(store.token_by_hash("hash of agent:web-1").unwrap().is_none());
    let names: Vec<String> = store.tokens().unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(names, vec!["agent:web-2", "ops"]);
    let first = store.first_seen_ports(day(0), None).unwrap();
    let first: Vec<(u16, &str, Timestamp)> = first.iter().map(|f| (f.port, f.host.as_str(), f.first_seen)).collect();
    assert_eq!(first, vec![(22, "web-2", day(3))], "7000 was web-1's alone");
    assert!(store.forget_host("web-1").unwrap().is_none(), "unknown now");
    assert_eq!(store.who(22, None, day(5)).unwrap().len(), 1);
}

pub fn a_batch_of_a_host_being_forgotten_finds_a_new_empty_host_and_is_asked_for_a_snapshot(store: &dyn Store) {
    send(store, "web-1", vec![snapshot(1, day(0), vec![served_by(22, "sshd")])]);
    let acks = std::thread::scope(|scope| {
        // Its agent keeps sending deltas while the host is forgotten, until it is asked for a snapshot.
        let sender = scope.spawn(|| {
            let mut acks: Vec<Ack> = Vec::new();
            for seq in 2u64.. {
                let opened = vec![served_by(1000 + (seq % 60_000) as u16, "svc")];
                acks.push(send(store, "web-1", vec![delta(seq, ts(seq as i64), opened, vec![])]));
                let resyncs = acks.iter().filter(|a| a.resync).count();
                if resyncs == 5 {
                    return acks;
                }
            }
            unreachable!()
        });
        while store.history("web-1", None, None, None).unwrap().len() < 20 {
            std::thread::yield_now();
        }
        store.forget_host("web-1").unwrap().unwrap();
        sender.join().unwrap()
    });
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
            &batch("web-1", "s2", vec![snapshot(1, at, vec![served_by(22, "sshd")])]),
            at,
        )
        .unwrap();
    let history = store.history("web-1", None, None, None).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].opened_at, at);
}

/// A host's name is never read from a forgotten host's (a backend may hand
/// the forgotten host's id to the next new one, SQLite does, and a cache of
/// names read before the forget must not name it so).
pub fn a_host_registered_after_another_was_forgotten_is_read_under_its_own_name(store: &dyn Store) {
    send(store, "a-host", vec![snapshot(1, day(0), vec![served_by(22, "sshd")])]);
    send(store, "b-host", vec![snapshot(1, day(0), vec![served_by(22, "sshd")])]);
    // Names read (and cached, where a backend caches them) once.
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
    send(store, "c-host", vec![snapshot(1, day(2), vec![served_by(22, "sshd")])]);
    assert_eq!(names(day(3)), vec!["a-host", "c-host"]);
    let hosts: Vec<String> = store.hosts(day(3)).unwrap().into_iter().map(|h| h.host).collect();
    assert_eq!(hosts, vec!["a-host", "c-host"]);
}
