//! What the suite's tests build and read: the values every test of the
//! workspace builds (listeners, reports and batches of them, findings, times:
//! [`portwatch_fixtures`], re-exported here), and what the suite adds on a
//! store (counts of what it holds, history sent, plans pruned). One set for
//! every concern, and for a backend's own tests beside the suite.

use jiff::Timestamp;
use portwatch_collector::retention::{self, PrunePlan, Retention};
use portwatch_collector::store::{PruneCursor, Pruned, Store};
use portwatch_common::wire::{Ack, Report};
pub use portwatch_fixtures::*;

/// Every interval of every host, open or closed.
pub fn intervals(store: &dyn Store) -> usize {
    let mut n = 0;
    store
        .export(None, None, &mut |_| {
            n += 1;
            true
        })
        .unwrap();
    n
}

/// The intervals open now.
pub fn open_intervals(store: &dyn Store) -> usize {
    let mut n = 0;
    store
        .export(None, None, &mut |row| {
            n += usize::from(row.closed_at.is_none());
            true
        })
        .unwrap();
    n
}

/// The hosts the store knows.
pub fn hosts_count(store: &dyn Store) -> usize {
    store.hosts(Timestamp::now()).unwrap().len()
}

/// Host names, owned.
pub fn hosts(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

/// Sends `reports` of `host` (session `s1`), received at the last report's time.
pub fn send(store: &dyn Store, host: &str, reports: Vec<Report>) -> Ack {
    let at = reports.last().unwrap().observed_at;
    store.ingest(&batch(host, "s1", reports), at).unwrap()
}

/// Thirty days of history, alerts and baseline log, as of `now`.
pub fn month_plan(now: Timestamp) -> PrunePlan {
    let month = Some(std::time::Duration::from_secs(30 * DAY as u64));
    retention::plan(
        now,
        &Retention {
            history: month,
            alerts: month,
            baseline_log: month,
        },
    )
}

/// Prunes `plan` to the end, `batch_rows` at a time; what it removed, and the calls it took.
pub fn prune_all(store: &dyn Store, plan: &PrunePlan, batch_rows: usize) -> (Pruned, usize) {
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

/// web-1: ssh open since day 0; http (nginx) closed on day 1; https
/// (haproxy) closed on day 50. db-1: a program of its own (pgbouncer) on a
/// listener closed on day 1. web-1 opens 9000 (sshd) on day 55, so the
/// newest interval is one every plan keeps (a backend may hand out the
/// greatest id of a deleted row again, and pruning never deletes it).
pub fn two_hosts(store: &dyn Store) {
    send(
        store,
        "web-1",
        vec![snapshot(
            1,
            day(0),
            vec![served_by(22, "sshd"), served_by(80, "nginx"), served_by(443, "haproxy")],
        )],
    );
    send(
        store,
        "web-1",
        vec![delta(2, day(1), vec![], vec![served_by(80, "nginx")])],
    );
    send(
        store,
        "web-1",
        vec![delta(3, day(50), vec![], vec![served_by(443, "haproxy")])],
    );
    send(
        store,
        "db-1",
        vec![snapshot(1, day(0), vec![served_by(6432, "pgbouncer")])],
    );
    send(
        store,
        "db-1",
        vec![delta(2, day(1), vec![], vec![served_by(6432, "pgbouncer")])],
    );
    send(
        store,
        "web-1",
        vec![delta(4, day(55), vec![served_by(9000, "sshd")], vec![])],
    );
}
