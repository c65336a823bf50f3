//! Baselines and their change log; alerts, from a finding's first sighting to
//! its clearing (the cap on a flood among them); the outbox of their changes,
//! and how far each sink has come in it.

use portwatch_collector::lifecycle::cap;
use portwatch_collector::store::{AckOutcome, SinkProgress, Store};
use portwatch_model::{AlertEvent, AlertState, BaselineAction, Finding, Kind, Severity};

use super::build::*;

pub fn baseline_changes_are_logged_with_who_when_and_why_and_a_same_source_is_no_change(store: &dyn Store) {
    assert_eq!(
        store.put_baseline("web", "a", "ops-ann", Some("first"), ts(0)).unwrap(),
        BaselineAction::Create
    );
    assert_eq!(
        store.put_baseline("web", "a", "ops-bob", None, ts(1)).unwrap(),
        BaselineAction::Unchanged
    );
    assert_eq!(
        store
            .put_baseline("web", "b", "ops-bob", Some("add 443"), ts(2))
            .unwrap(),
        BaselineAction::Update
    );
    assert!(store
        .remove_baseline("web", "ops-cid", Some("host retired"), ts(3))
        .unwrap());
    assert!(!store.remove_baseline("web", "ops-cid", None, ts(4)).unwrap());
    assert!(store.baselines().unwrap().is_empty());
    let log = store.baseline_log(Some("web")).unwrap();
    let summary: Vec<_> = log
        .iter()
        .map(|r| {
            (
                r.action,
                r.actor.as_str(),
                r.comment.as_deref(),
                r.source.as_deref(),
                r.at,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (BaselineAction::Create, "ops-ann", Some("first"), Some("a"), ts(0)),
            (BaselineAction::Update, "ops-bob", Some("add 443"), Some("b"), ts(2)),
            (BaselineAction::Remove, "ops-cid", Some("host retired"), None, ts(3)),
        ]
    );
    assert!(store.baseline_log(Some("db")).unwrap().is_empty());
}

pub fn an_alert_opens_once_while_its_condition_holds_and_resolves_when_it_clears(store: &dyn Store) {
    let unexpected = finding(Kind::UnexpectedListener, "web-1", 8080);
    let unbaselined = finding(Kind::Unbaselined, "web-2", 22);
    let events = store
        .sync_alerts(
            &hosts(&["web-1", "web-2"]),
            &[unexpected.clone(), unbaselined],
            cap::DEFAULT_MAX_OPEN,
            ts(0),
        )
        .unwrap();
    assert_eq!(events.len(), 1, "unbaselined listeners raise no alert: {events:?}");
    let AlertEvent::Opened(opened) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(
        (opened.state, opened.opened_at, &opened.finding),
        (AlertState::Open, ts(0), &unexpected)
    );

    // Seen again (twice in one call, too): no second alert.
    let again = store
        .sync_alerts(
            &hosts(&["web-1"]),
            &[unexpected.clone(), unexpected.clone()],
            cap::DEFAULT_MAX_OPEN,
            ts(10),
        )
        .unwrap();
    assert!(again.is_empty(), "{again:?}");

    // Acknowledged, still holding: still one alert, acknowledged.
    let AckOutcome::Acknowledged(acked) = store.ack_alert(opened.id, "ops-ann", "on it", ts(20)).unwrap() else {
        panic!("not acknowledged")
    };
    assert_eq!(
        (acked.acked_by.as_deref(), acked.ack_comment.as_deref()),
        (Some("ops-ann"), Some("on it"))
    );
    assert!(matches!(
        store.ack_alert(opened.id, "ops-bob", "me too", ts(21)).unwrap(),
        AckOutcome::NotOpen(_)
    ));
    assert_eq!(
        store.ack_alert(opened.id + 1_000, "ops-bob", "?", ts(21)).unwrap(),
        AckOutcome::NotFound
    );
    assert!(store
        .sync_alerts(
            &hosts(&["web-1"]),
            std::slice::from_ref(&unexpected),
            cap::DEFAULT_MAX_OPEN,
            ts(30)
        )
        .unwrap()
        .is_empty());

    assert_eq!(
        store.active_alert_keys().unwrap(),
        vec![("web-1".to_owned(), unexpected.key.clone())],
        "an acknowledged alert is still active"
    );
    // Evaluating another host leaves this one's alert alone.
    assert!(store
        .sync_alerts(&hosts(&["web-2"]), &[], cap::DEFAULT_MAX_OPEN, ts(35))
        .unwrap()
        .is_empty());

    // The condition clears: resolved (evaluated in a sweep of many hosts).
    let many: Vec<String> = (1..=20).map(|i| format!("web-{i}")).collect();
    let cleared = store.sync_alerts(&many, &[], cap::DEFAULT_MAX_OPEN, ts(40)).unwrap();
    let [AlertEvent::Resolved(resolved)] = &cleared[..] else {
        panic!("{cleared:?}")
    };
    assert_eq!(
        (resolved.id, resolved.resolved_at, resolved.state),
        (opened.id, Some(ts(40)), AlertState::Resolved)
    );
    assert!(matches!(
        store.ack_alert(opened.id, "ops-bob", "late", ts(41)).unwrap(),
        AckOutcome::NotOpen(_)
    ));

    // It comes back: a new alert.
    let back = store
        .sync_alerts(&hosts(&["web-1"]), &[unexpected], cap::DEFAULT_MAX_OPEN, ts(50))
        .unwrap();
    let [AlertEvent::Opened(second)] = &back[..] else {
        panic!("{back:?}")
    };
    assert_ne!(second.id, opened.id);
    let all = store.alerts(None, Some("web-1"), 10).unwrap();
    assert_eq!(
        all.iter().map(|a| (a.id, a.state)).collect::<Vec<_>>(),
        vec![(second.id, AlertState::Open), (opened.id, AlertState::Resolved)]
    );
    assert_eq!(store.alerts(Some(AlertState::Resolved), None, 10).unwrap().len(), 1);
    assert_eq!(store.alerts(None, None, 1).unwrap().len(), 1);
}

pub fn a_flood_opens_the_cap_and_one_summary_whose_count_changes_in_place_without_an_event(store: &dyn Store) {
    let flood: Vec<Finding> = (0..1000).map(|p| unexpected("web-1", 10_000 + p)).collect();
    let events = store.sync_alerts(&hosts(&["web-1"]), &flood, 10, ts(0)).unwrap();
    assert_eq!(events.len(), 11, "10 alerts and the summary");
    let AlertEvent::Opened(summary) = &events[10] else {
        panic!("{events:?}")
    };
    assert_eq!(summary.key, "unexpected-listener:web-1:overflow");
    assert_eq!(summary.finding.more, Some(990));
    assert!(summary
        .message
        .starts_with("… and 990 more unexpected-listener findings on web-1"));

    // Half the flood clears: the count changes in place, and no event says so.
    let events = store
        .sync_alerts(&hosts(&["web-1"]), &flood[..500], 10, ts(10))
        .unwrap();
    assert_eq!(events, vec![]);
    let now = store.alerts(None, Some("web-1"), 100).unwrap();
    assert_eq!(now.len(), 11);
    let current = now.iter().find(|a| a.id == summary.id).unwrap();
    assert_eq!((current.state, current.finding.more), (AlertState::Open, Some(490)));
    assert!(current.message.starts_with("… and 490 more "), "{}", current.message);
    assert_eq!(store.alert_events_after(0, 100).unwrap().len(), 11);

    // It all clears: every alert resolves, the summary with its last count.
    let events = store.sync_alerts(&hosts(&["web-1"]), &[], 10, ts(20)).unwrap();
    assert_eq!(events.len(), 11);
    let AlertEvent::Resolved(last) = &events[10] else {
        panic!("{events:?}")
    };
    assert_eq!((last.id, last.finding.more), (summary.id, Some(490)));
}

/// Event ids are the outbox's own (increasing, not necessarily from 1 or
/// without holes): the test names each by its place, read from the outbox.
pub fn a_sink_s_progress_is_its_cursor_and_the_events_done_after_it(store: &dyn Store) {
    store
        .sync_alerts(
            &hosts(&["web-1"]),
            &[unexpected("web-1", 8080)],
            cap::DEFAULT_MAX_OPEN,
            ts(0),
        )
        .unwrap();
    let first = store.alert_events_after(0, 10).unwrap()[0].0;
    // A new sink starts at the newest event.
    assert_eq!(
        store.sink_progress("webhook:ops").unwrap(),
        SinkProgress {
            cursor: first,
            done: vec![]
        }
    );
    let many: Vec<Finding> = (0..5).map(|p| unexpected("web-2", p)).collect();
    store
        .sync_alerts(&hosts(&["web-2"]), &many, cap::DEFAULT_MAX_OPEN, ts(1))
        .unwrap();
    let ids: Vec<i64> = store
        .alert_events_after(0, 10)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!((ids.len(), ids[0]), (6, first));
    // e[1] is the first event, e[6] the last.
    let e = |n: usize| ids[n - 1];
    assert_eq!(
        store.alert_event_hosts_after(e(1), 3).unwrap(),
        vec![
            (e(2), "web-2".to_owned()),
            (e(3), "web-2".to_owned()),
            (e(4), "web-2".to_owned())
        ]
    );
    let AlertEvent::Opened(a) = store.alert_event(e(3)).unwrap().unwrap().1.unwrap() else {
        panic!("not an opening")
    };
    assert_eq!(a.finding.local_port, Some(1));
    assert!(store.alert_event(e(6) + 1_000).unwrap().is_none());

    store
        .set_sink_progress("webhook:ops", e(2), &[e(4), e(5), e(1)])
        .unwrap();
    assert_eq!(
        store.sink_progress("webhook:ops").unwrap(),
        SinkProgress {
            cursor: e(2),
            done: vec![e(4), e(5)]
        }
    );
    // The cursor moves on: what it passes is forgotten; it never moves back.
    store.set_sink_progress("webhook:ops", e(4), &[e(6)]).unwrap();
    assert_eq!(
        store.sink_progress("webhook:ops").unwrap(),
        SinkProgress {
            cursor: e(4),
            done: vec![e(5), e(6)]
        }
    );
    store.set_sink_progress("webhook:ops", e(3), &[]).unwrap();
    assert_eq!(store.sink_progress("webhook:ops").unwrap().cursor, e(4));
    // Each sink has its own.
    assert_eq!(
        store.sink_progress("syslog").unwrap(),
        SinkProgress {
            cursor: e(6),
            done: vec![]
        }
    );
}

/// Single-writer property, made explicit: **outbox events become visible in
/// id order**. A sink follows the outbox with a cursor (`alert_events_after`
/// the last id it saw); if an event could become visible after one with a
/// higher id (ids handed out by a sequence, committed out of order by two
/// writers), a sink would step past it and never deliver it. Four writers
/// raise alerts at once while a reader follows the cursor: every event must
/// reach the reader.
pub fn outbox_events_become_visible_in_id_order_while_writers_race(store: &dyn Store) {
    const WRITERS: usize = 4;
    const ALERTS: usize = 40;
    let done = std::sync::atomic::AtomicUsize::new(0);
    let seen = std::thread::scope(|scope| {
        for w in 0..WRITERS {
            let done = &done;
            scope.spawn(move || {
                let host = format!("racer-{w}");
                let mut findings = Vec::new();
                for i in 0..ALERTS {
                    let mut f = Finding::new(Kind::UnexpectedListener, &host, format!("unexpected:{host}:{i}"));
                    f.message = format!("{host}: listener {i}");
                    findings.push(f);
                    store
                        .sync_alerts(std::slice::from_ref(&host), &findings, 1_000, ts(i as i64))
                        .unwrap();
                }
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        let mut cursor = 0;
        let mut seen = Vec::new();
        loop {
            let finished = done.load(std::sync::atomic::Ordering::SeqCst) == WRITERS;
            let page = store.alert_events_after(cursor, 1_000).unwrap();
            for (id, event) in &page {
                assert!(*id > cursor, "events come after the cursor, in id order");
                cursor = *id;
                seen.push(event.as_ref().unwrap().alert().key.clone());
            }
            if finished && page.is_empty() {
                break seen;
            }
        }
    });
    assert_eq!(
        seen.len(),
        WRITERS * ALERTS,
        "an event the cursor stepped past is never delivered"
    );
    let mut keys = seen.clone();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), WRITERS * ALERTS);
}

pub fn an_alert_whose_finding_grows_more_severe_is_resolved_and_opened_again_at_its_severity(store: &dyn Store) {
    let mut risky = finding(Kind::RiskyPortExposed, "db-1", 5432);
    risky.severity = Severity::Warning;
    let opened = store
        .sync_alerts(&hosts(&["db-1"]), &[risky.clone()], cap::DEFAULT_MAX_OPEN, ts(0))
        .unwrap();
    let AlertEvent::Opened(first) = &opened[0] else {
        panic!("{opened:?}")
    };
    // A probe from the collector reached it: critical now.
    risky.severity = Severity::Critical;
    let events = store
        .sync_alerts(&hosts(&["db-1"]), &[risky.clone()], cap::DEFAULT_MAX_OPEN, ts(10))
        .unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    let (AlertEvent::Resolved(was), AlertEvent::Opened(now)) = (&events[0], &events[1]) else {
        panic!("resolved, then opened: {events:?}")
    };
    assert_eq!((was.id, was.severity), (first.id, Severity::Warning));
    assert_eq!(
        (now.severity, now.state, now.opened_at),
        (Severity::Critical, AlertState::Open, ts(10))
    );
    assert_ne!(now.id, first.id);
    // Less severe again: the alert stays as it is.
    risky.severity = Severity::Info;
    let calmer = store
        .sync_alerts(&hosts(&["db-1"]), &[risky], cap::DEFAULT_MAX_OPEN, ts(20))
        .unwrap();
    assert!(calmer.is_empty(), "{calmer:?}");
    let active: Vec<_> = store
        .alerts(None, Some("db-1"), 10)
        .unwrap()
        .into_iter()
        .filter(|a| a.state != AlertState::Resolved)
        .collect();
    assert_eq!(active.len(), 1, "{active:?}");
    assert_eq!((active[0].id, active[0].severity), (now.id, Severity::Critical));
}
