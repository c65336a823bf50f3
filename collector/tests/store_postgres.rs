//! The store's conformance suite ([`conformance`]) on the PostgreSQL
//! backend, against the real server `tests/run.sh` starts: a fresh schema
//! for every test; and what only PostgreSQL shows (its migrations, several
//! stores on one database, its partitions).
// Test code: a failed setup fails the test.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod conformance;

use conformance::build::*;
use portwatch_collector::clock;
use portwatch_collector::store::postgres::{PostgresOptions, PostgresStore};
use portwatch_collector::store::{Alerts, HistoryReads, HistoryWrites, Maintenance, Outbox, Store, StoreError};
use portwatch_fixtures::PostgresSchema;

/// A PostgreSQL store in a schema of its own, dropped when the test ends.
struct Postgres {
    // Dropped first: the store closes its connections before the schema goes.
    store: PostgresStore,
    schema: PostgresSchema,
}

impl Postgres {
    fn new() -> Postgres {
        let schema = PostgresSchema::fresh();
        let store = open(&schema).unwrap();
        Postgres { store, schema }
    }
}

fn open(schema: &PostgresSchema) -> Result<PostgresStore, StoreError> {
    let mut options = PostgresOptions::new(schema.url.clone());
    options.max_connections = 4;
    PostgresStore::open(&options, clock::Limits::default())
}

impl conformance::Backend for Postgres {
    fn store(&self) -> &dyn Store {
        &self.store
    }
}

conformance_suite!(Postgres::new());

#[test]
fn a_store_opened_anew_names_its_hosts_as_before() {
    let pg = Postgres::new();
    for host in ["web-2", "app-1"] {
        let b = batch(host, "s", vec![snapshot(1, ts(0), vec![owned(22, 1, &[])])]);
        pg.store.ingest(&b, ts(0)).unwrap();
    }
    let again = open(&pg.schema).unwrap();
    let names: Vec<String> = again
        .who(22, None, ts(0))
        .unwrap()
        .iter()
        .map(|r| r.host.to_string())
        .collect();
    assert_eq!(
        names,
        ["app-1", "web-2"],
        "an empty host-name cache fills from the database"
    );
}

#[test]
fn stores_opened_at_once_on_a_new_database_migrate_it_once() {
    let schema = PostgresSchema::fresh();
    let stores: Vec<PostgresStore> = std::thread::scope(|s| {
        let opening: Vec<_> = (0..4).map(|_| s.spawn(|| open(&schema))).collect();
        opening.into_iter().map(|t| t.join().unwrap().unwrap()).collect()
    });
    // One version row, at the last migration (0004_peers).
    assert_eq!(
        schema.psql("SELECT count(*), max(version) FROM portwatch_schema"),
        "1|4"
    );
    drop(stores);
}

#[test]
fn a_database_of_a_newer_collector_is_refused() {
    let schema = PostgresSchema::fresh();
    drop(open(&schema).unwrap());
    schema.psql("UPDATE portwatch_schema SET version = 999");
    let error = open(&schema).err().unwrap().to_string();
    assert!(error.contains("version 999") && error.contains("newer"), "{error}");
}

#[test]
fn a_database_of_another_program_is_refused() {
    let schema = PostgresSchema::fresh();
    schema.psql("CREATE TABLE intervals (x integer)");
    let error = open(&schema).err().unwrap().to_string();
    assert!(error.contains("another program"), "{error}");
}

#[test]
fn an_unreachable_server_is_named_in_a_clear_error_and_no_password_shown() {
    let mut options = PostgresOptions::new("postgres://pw:s3cret@127.0.0.1:1/pw?connect_timeout=2");
    options.max_connections = 2;
    let error = PostgresStore::open(&options, clock::Limits::default())
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("127.0.0.1:1") && !error.contains("s3cret"), "{error}");
}

#[test]
fn closed_intervals_go_to_the_partition_of_the_month_they_closed_in() {
    let pg = Postgres::new();
    let now = jiff::Timestamp::now();
    let l = owned(8080, 1, &[]);
    pg.store
        .ingest(&batch("web-1", "s", vec![snapshot(1, now, vec![l.clone()])]), now)
        .unwrap();
    pg.store
        .ingest(&batch("web-1", "s", vec![delta(2, now, vec![], vec![l])]), now)
        .unwrap();
    let month = jiff::tz::Offset::UTC.to_datetime(now);
    let table = format!("intervals_{:04}{:02}", month.year(), month.month());
    assert_eq!(
        pg.schema.psql("SELECT tableoid::regclass FROM intervals"),
        table,
        "the closed interval moved out of the open partition"
    );
}

/// Two collectors (two stores on one database) bringing the same host's
/// alerts in line at the same moment, round after round: each condition
/// opens one alert and that alert resolves once, whoever gets there first.
#[test]
fn two_collectors_syncing_a_host_at_once_open_each_alert_once_and_resolve_it_once() {
    use portwatch_model::AlertEvent;
    let pg = Postgres::new();
    let other = open(&pg.schema).unwrap();
    let web = hosts(&["web-1"]);
    let findings: Vec<_> = (0..20).map(|p| unexpected("web-1", 7000 + p)).collect();
    const ROUNDS: i64 = 6;
    for round in 0..ROUNDS {
        for (findings, at) in [(&findings[..], ts(round * 100)), (&[][..], ts(round * 100 + 50))] {
            let start = std::sync::Barrier::new(2);
            std::thread::scope(|s| {
                for store in [&pg.store, &other] {
                    let (start, web) = (&start, &web);
                    s.spawn(move || {
                        start.wait();
                        store.sync_alerts(web, findings, 1_000, at).unwrap()
                    });
                }
            });
        }
    }
    let events = pg.store.alert_events_after(0, 100_000).unwrap();
    let mut opened = std::collections::HashMap::<String, usize>::new();
    let mut resolved = std::collections::HashMap::<i64, usize>::new();
    for (_, event) in &events {
        match event.as_ref().unwrap() {
            AlertEvent::Opened(alert) => *opened.entry(alert.key.clone()).or_default() += 1,
            AlertEvent::Resolved(alert) => *resolved.entry(alert.id).or_default() += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(opened.len(), 20);
    let wrong: Vec<(&String, &usize)> = opened.iter().filter(|(_, &n)| n != ROUNDS as usize).collect();
    assert!(wrong.is_empty(), "each condition opened once a round: {wrong:?}");
    assert_eq!(resolved.len(), 20 * ROUNDS as usize, "every alert resolved");
    let twice: Vec<(&i64, &usize)> = resolved.iter().filter(|(_, &n)| n != 1).collect();
    assert!(twice.is_empty(), "and once: {twice:?}");
    assert_eq!(pg.store.alerts(None, None, 1_000).unwrap().len(), 20 * ROUNDS as usize);
}

/// A sink reading the outbox while two collectors add to it: ids come in
/// order, and no event committed behind the sink's cursor is left out.
#[test]
fn outbox_events_added_by_two_collectors_are_read_in_id_order_with_none_skipped() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let pg = Postgres::new();
    let other = open(&pg.schema).unwrap();
    const WRITERS: usize = 4;
    const ALERTS: usize = 30;
    let done = AtomicUsize::new(0);
    let seen = std::thread::scope(|s| {
        for w in 0..WRITERS {
            let store = if w % 2 == 0 { &pg.store } else { &other };
            let done = &done;
            s.spawn(move || {
                let host = format!("racer-{w}");
                let mut findings = Vec::new();
                for i in 0..ALERTS {
                    findings.push(unexpected(&host, 1000 + i as u16));
                    store
                        .sync_alerts(std::slice::from_ref(&host), &findings, 1_000, ts(i as i64))
                        .unwrap();
                }
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        let mut cursor = 0;
        let mut seen = Vec::new();
        loop {
            let finished = done.load(Ordering::SeqCst) == WRITERS;
            for (id, _) in pg.store.alert_events_after(cursor, 7).unwrap() {
                assert!(id > cursor, "in id order");
                cursor = id;
                seen.push(id);
            }
            if finished && pg.store.alert_events_after(cursor, 1).unwrap().is_empty() {
                break seen;
            }
        }
    });
    let all: Vec<i64> = pg
        .store
        .alert_events_after(0, 100_000)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(all.len(), WRITERS * ALERTS);
    assert_eq!(seen, all, "the sink read every event there is, none skipped");
}

/// A collector pruning while another ingests listeners of the very programs
/// the pass found unnamed: every interval still names programs that exist.
#[test]
fn a_prune_pass_racing_ingest_from_another_collector_keeps_every_program_an_interval_names() {
    use std::sync::atomic::{AtomicBool, Ordering};
    const PROGRAMS: u16 = 40;
    let pg = Postgres::new();
    let other = open(&pg.schema).unwrap();
    let first: Vec<_> = (0..PROGRAMS).map(|i| served_by(100 + i, &format!("svc-{i}"))).collect();
    send(&pg.store, "web-1", vec![snapshot(1, day(0), first.clone())]);
    send(&pg.store, "web-1", vec![delta(2, day(1), vec![], first)]);
    let plan = month_plan(day(60));
    assert_eq!(pg.store.prune_count(&plan).unwrap().programs, u64::from(PROGRAMS));
    let ingesting = AtomicBool::new(true);
    let passes = std::thread::scope(|s| {
        let ingesting = &ingesting;
        let other = &other;
        s.spawn(move || {
            // The same programs, one new listener a batch, from the other collector.
            for n in 0..(4 * PROGRAMS) {
                let l = served_by(1000 + n, &format!("svc-{}", n % PROGRAMS));
                send(
                    other,
                    "web-2",
                    vec![if n == 0 {
                        snapshot(1, day(60), vec![l])
                    } else {
                        delta(u64::from(n) + 1, day(60), vec![l], vec![])
                    }],
                );
            }
            ingesting.store(false, Ordering::SeqCst);
        });
        let mut passes = 0;
        while ingesting.load(Ordering::SeqCst) {
            prune_all(&pg.store, &plan, 1);
            passes += 1;
        }
        passes
    });
    assert!(passes >= 1);
    prune_all(&pg.store, &plan, 1);
    // Reading every interval back fails on a program that is gone.
    let open = pg.store.listeners_at("web-2", day(61)).unwrap();
    assert_eq!(open.len(), 4 * PROGRAMS as usize);
    for row in &open {
        let want = format!("svc-{}", (row.listener.local_port - 1000) % PROGRAMS);
        assert_eq!(&*row.listener.processes[0].name, want);
    }
    assert_eq!(intervals(&pg.store), 4 * PROGRAMS as usize, "web-1's closed ones went");
    assert_eq!(
        pg.schema.psql("SELECT count(*) FROM programs"),
        PROGRAMS.to_string(),
        "one program each, named"
    );
}

/// Retention drops a month of closed intervals whole once it is entirely
/// past the cutoff (its partition goes), counts what it held, keeps what is
/// open, and a close dated in the dropped month still goes somewhere.
#[test]
fn pruning_a_month_entirely_past_the_cutoff_drops_its_partition() {
    let pg = Postgres::new();
    let now = jiff::Timestamp::now();
    let (gone, kept) = (served_by(8080, "java"), served_by(22, "sshd"));
    let web = |reports| pg.store.ingest(&batch("web-1", "s", reports), now).unwrap();
    web(vec![snapshot(1, now, vec![gone.clone(), kept.clone()])]);
    web(vec![delta(2, now, vec![], vec![gone])]);
    let month = jiff::tz::Offset::UTC.to_datetime(now);
    let table = format!("intervals_{:04}{:02}", month.year(), month.month());
    let exists = || pg.schema.psql(&format!("SELECT to_regclass('{table}') IS NOT NULL"));
    assert_eq!(exists(), "t");
    // Kept 30 days, as of 100 days from now: this month is wholly expired.
    let plan = month_plan(now.checked_add(jiff::SignedDuration::from_hours(24 * 100)).unwrap());
    assert_eq!(pg.store.prune_count(&plan).unwrap().intervals, 1);
    let (pruned, _) = prune_all(&pg.store, &plan, 1000);
    assert_eq!(pruned.intervals, 1, "{pruned:?}");
    assert_eq!(exists(), "f", "the month's partition is dropped");
    assert_eq!(
        pg.schema.psql(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'intervals'::regclass AND c.relname <> 'intervals_open'"
        ),
        pg.schema.psql(&format!(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'intervals'::regclass AND c.relname > '{table}' AND c.relname <> 'intervals_open'"
        )),
        "no month before the cutoff is left"
    );
    let history = pg.store.history("web-1", None, None, None).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].listener.local_port, 22);
    // A close dated in the dropped month lands in the default partition.
    web(vec![delta(3, now, vec![], vec![kept])]);
    let history = pg.store.history("web-1", None, None, None).unwrap();
    assert!(history[0].closed_at.is_some());
    assert_eq!(
        pg.schema.psql("SELECT tableoid::regclass FROM intervals"),
        "intervals_open"
    );
}

/// The test server's TLS port (`tests/postgres.sh`: TCP takes TLS only) and its CA's certificate.
fn tls_server() -> (String, std::path::PathBuf) {
    let need =
        |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is unset: run through `bash tests/run.sh`"));
    (
        need("PORTWATCH_TEST_POSTGRES_TLS"),
        need("PORTWATCH_TEST_POSTGRES_CA").into(),
    )
}

#[test]
fn tls_to_the_database_is_verified_against_the_ca_file() {
    let (url, ca) = tls_server();
    let schema = PostgresSchema::fresh();
    let name = schema.url.rsplit("search_path%3D").next().unwrap().to_owned();
    let url = format!("{url}&options=-csearch_path%3D{name}");
    let mut options = PostgresOptions::new(url.clone());
    options.ca_file = Some(ca);
    options.max_connections = 2;
    let store = PostgresStore::open(&options, clock::Limits::default()).unwrap();
    let b = batch("web-1", "s", vec![snapshot(1, ts(0), vec![owned(22, 1, &[])])]);
    store.ingest(&b, ts(0)).unwrap();
    assert_eq!(store.who(22, None, ts(0)).unwrap().len(), 1);
    drop(store);

    // The system's bundle does not know the test's CA: refused, and said so.
    let mut untrusted = PostgresOptions::new(url);
    untrusted.max_connections = 2;
    let error = PostgresStore::open(&untrusted, clock::Limits::default())
        .err()
        .unwrap()
        .to_string();
    assert!(error.to_lowercase().contains("certificate"), "{error}");
}

#[test]
fn a_server_that_takes_only_tls_refuses_a_plain_connection_and_says_why() {
    let (url, _) = tls_server();
    let mut options = PostgresOptions::new(url.replace("sslmode=require", "sslmode=disable"));
    options.max_connections = 2;
    let error = PostgresStore::open(&options, clock::Limits::default())
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("pg_hba.conf") && error.contains("28000"), "{error}");
}
