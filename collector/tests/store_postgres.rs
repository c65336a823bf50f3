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

/// A store on `schema` whose heartbeats are flushed every `flush`.
fn open_flushing(schema: &PostgresSchema, flush: std::time::Duration) -> PostgresStore {
    let mut options = PostgresOptions::new(schema.url.clone());
    options.max_connections = 4;
    options.heartbeat_flush = flush;
    PostgresStore::open(&options, clock::Limits::default()).unwrap()
}

/// Counts every row written to `hosts` (inserted or updated, by anyone) and
/// every statement that wrote it, from now on: the database's own count,
/// whatever process writes.
fn count_host_writes(schema: &PostgresSchema) {
    schema.psql(
        "CREATE TABLE host_writes (rows bigint NOT NULL, statements bigint NOT NULL);
         INSERT INTO host_writes VALUES (0, 0);
         CREATE FUNCTION count_host_row() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN UPDATE host_writes SET rows = rows + 1; RETURN NULL; END $$;
         CREATE FUNCTION count_host_statement() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN UPDATE host_writes SET statements = statements + 1; RETURN NULL; END $$;
         CREATE TRIGGER host_rows AFTER INSERT OR UPDATE ON hosts FOR EACH ROW EXECUTE FUNCTION count_host_row();
         CREATE TRIGGER host_statements AFTER INSERT OR UPDATE ON hosts
             FOR EACH STATEMENT EXECUTE FUNCTION count_host_statement();",
    );
}

/// (rows, statements) written to `hosts` since [`count_host_writes`].
fn host_writes(schema: &PostgresSchema) -> (u64, u64) {
    let out = schema.psql("SELECT rows, statements FROM host_writes");
    let (rows, statements) = out.split_once('|').unwrap();
    (rows.parse().unwrap(), statements.parse().unwrap())
}

/// `check` until it answers, for at most `limit`.
fn eventually<T>(limit: std::time::Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Heartbeats write nothing as they come: however many the hosts send, the
/// `hosts` table is written at most once per flush window (and once more
/// when the store closes), each host at most once per write, as PostgreSQL
/// itself counts the rows written.
#[test]
fn heartbeats_write_their_hosts_at_most_once_a_flush_window() {
    use std::time::{Duration, Instant};
    let schema = PostgresSchema::fresh();
    let window = Duration::from_millis(500);
    let store = open_flushing(&schema, window);
    let names = ["web-1", "web-2", "web-3"];
    let now = jiff::Timestamp::now();
    for host in names {
        let b = batch(host, "s", vec![snapshot(1, now, vec![owned(22, 1, &[])])]);
        store.ingest(&b, now).unwrap();
    }
    count_host_writes(&schema);
    let started = Instant::now();
    let mut sent = 0u64;
    // Heartbeats as fast as the store answers them, for a few windows.
    while started.elapsed() < window * 5 {
        for host in names {
            let at = jiff::Timestamp::now();
            assert_eq!(store.ingest(&heartbeat(host, "s", at), at).unwrap(), ack(1, false));
            sent += 1;
        }
    }
    let last = jiff::Timestamp::now();
    let stats = store.heartbeat_stats().unwrap();
    drop(store); // the last flush
    let elapsed = started.elapsed();
    let windows = elapsed.as_millis().div_ceil(window.as_millis()) as u64;
    let (rows, statements) = host_writes(&schema);
    assert!(
        sent > 10 * (windows + 1) * names.len() as u64,
        "enough heartbeats to tell one write each from one a window: {sent} in {elapsed:?}"
    );
    assert_eq!(stats.kept, sent, "every heartbeat was kept in memory");
    assert!(
        statements <= windows + 1 && rows <= (windows + 1) * names.len() as u64,
        "{sent} heartbeats in {elapsed:?} ({windows} windows of {window:?}) wrote {rows} rows in {statements} statements"
    );
    assert!(rows >= names.len() as u64, "the hosts were written at all: {rows}");
    eprintln!("{sent} heartbeats in {elapsed:?}: {rows} rows written in {statements} statements");
    // What the last flush left is the last heartbeat of each host, read by another store.
    let again = open(&schema).unwrap();
    for host in names {
        let seen = again.host(host, last).unwrap().unwrap().last_seen;
        assert!(seen > now && seen <= last, "{host}: {seen}");
    }
}

/// A heartbeat is seen at once through the store that took it, and through
/// another (another collector) once a flush window has passed.
#[test]
fn a_heartbeat_is_seen_at_once_by_its_store_and_by_another_within_the_flush_window() {
    use std::time::Duration;
    let schema = PostgresSchema::fresh();
    let taking = open_flushing(&schema, Duration::from_millis(500));
    let other = open(&schema).unwrap();
    // Stored to the millisecond.
    let t0 = jiff::Timestamp::from_millisecond(jiff::Timestamp::now().as_millisecond()).unwrap();
    let b = batch("db-1", "s", vec![snapshot(1, t0, vec![owned(5432, 1, &[])])]);
    taking.ingest(&b, t0).unwrap();
    let t1 = t0 + jiff::SignedDuration::from_secs(7);
    // Its agent's clock is ten minutes ahead: beyond the tolerance.
    let beat = heartbeat("db-1", "s", t1 + jiff::SignedDuration::from_secs(600));
    assert_eq!(taking.ingest(&beat, t1).unwrap(), ack(1, false));
    let mine = taking.host("db-1", t1).unwrap().unwrap();
    assert_eq!(
        (mine.last_seen, mine.clock_skew_ms, mine.clock_skew_at),
        (t1, Some(600_000), Some(t1)),
        "read through the store that keeps it"
    );
    assert_eq!(taking.hosts(t1).unwrap()[0].last_seen, t1, "in the list of hosts too");
    let theirs = eventually(Duration::from_secs(30), || {
        let h = other.host("db-1", t1).unwrap().unwrap();
        (h.last_seen == t1).then_some(h)
    })
    .expect("another store reads the heartbeat once it is flushed");
    assert_eq!((theirs.clock_skew_ms, theirs.clock_skew_at), (Some(600_000), Some(t1)));
    assert!(theirs.clock_skewed);
    let stats = taking.heartbeat_stats().unwrap();
    assert!(stats.kept == 1 && stats.flushes >= 1 && stats.rows == 1, "{stats:?}");
}

/// Two collectors flushing the same host, in either order: the newest
/// `last_seen` and the latest skew measurement are what stays.
#[test]
fn two_collectors_flushing_one_host_in_either_order_leave_the_newest_values() {
    use std::time::Duration;
    let schema = PostgresSchema::fresh();
    // Windows long enough that only the test flushes.
    let a = open_flushing(&schema, Duration::from_secs(60));
    let b = open_flushing(&schema, Duration::from_secs(60));
    a.ingest(
        &batch("web-1", "s", vec![snapshot(1, ts(0), vec![owned(22, 1, &[])])]),
        ts(0),
    )
    .unwrap();
    let read = || {
        let h = open(&schema).unwrap().host("web-1", ts(100)).unwrap().unwrap();
        (h.last_seen, h.clock_skew_ms)
    };
    for newer_flushes_first in [true, false] {
        let base = if newer_flushes_first { 10 } else { 20 };
        a.ingest(
            &heartbeat("web-1", "s", ts(base + 5) + jiff::SignedDuration::from_secs(60)),
            ts(base + 5),
        )
        .unwrap();
        b.ingest(&heartbeat("web-1", "s", ts(base + 1)), ts(base + 1)).unwrap();
        let (first, second) = if newer_flushes_first { (&a, &b) } else { (&b, &a) };
        first.flush_heartbeats().unwrap();
        second.flush_heartbeats().unwrap();
        assert_eq!(
            read(),
            (ts(base + 5), Some(60_000)),
            "newer flushed first: {newer_flushes_first}"
        );
    }
}

/// Through a store whose heartbeats are flushed every 5 s, a host whose
/// agent scans every second is not judged silent before three flush windows
/// of silence: the heartbeats that show it alive may be waiting in another
/// collector's memory.
#[test]
fn silence_is_judged_by_three_flush_windows_when_they_are_longer_than_three_intervals() {
    use std::time::Duration;
    let schema = PostgresSchema::fresh();
    let store = open_flushing(&schema, Duration::from_secs(5));
    let fast = portwatch_common::wire::HostFacts {
        interval_ms: 1_000,
        ..facts()
    };
    let b = batch("fast-1", "s", vec![snapshot_with(1, ts(0), fast, vec![])]);
    store.ingest(&b, ts(0)).unwrap();
    let status = |at| store.host("fast-1", at).unwrap().unwrap().status;
    assert_eq!(
        status(ts(4)),
        portwatch_model::HostStatus::Up,
        "three intervals, one window"
    );
    assert_eq!(status(ts(14)), portwatch_model::HostStatus::Up);
    assert_eq!(status(ts(15)), portwatch_model::HostStatus::Silent);
}
