//! Snapshot ingest through the store, on each backend: a new host's first snapshot of 50
//! listeners (10 programs, each held by a couple of pids) per batch, the way a fleet's agents
//! start; criterion reports listeners per second. Then heartbeats of known hosts, one at a time:
//! on PostgreSQL kept in memory (as they are), and written with their host's row (what a
//! heartbeat that reports a dropped report still does, and every heartbeat did before they were
//! kept). SQLite in a temporary file; PostgreSQL in a schema of its own on the server
//! `PORTWATCH_TEST_POSTGRES` names (what `tests/postgres.sh` starts), skipped with a line on
//! stderr when it is not set.
//!
//!   cargo bench -p portwatch-collector --bench store_ingest
//!   cargo bench -p portwatch-collector --bench store_ingest -- heartbeat
//!
//! (README, Speed: Collector.)
// A benchmark: a failed setup or ingest ends it with its message.
#![allow(clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use portwatch_collector::clock;
use portwatch_collector::store::postgres::{PostgresOptions, PostgresStore};
use portwatch_collector::store::sqlite::SqliteStore;
use portwatch_collector::store::{HistoryWrites, Store};
use portwatch_common::Listener;
use portwatch_fixtures::{batch, heartbeat, owned, snapshot, PostgresSchema};

/// Listeners of each host's snapshot.
const LISTENERS: u16 = 50;

/// The snapshot of host `h`: its own sockets, programs shared with the fleet.
fn listeners(h: usize) -> Vec<Listener> {
    (0..LISTENERS)
        .map(|i| {
            let pid = 1000 + u32::from(i % 10) * 7;
            owned(8000 + i % 10, (h as u64) << 16 | u64::from(i), &[pid, pid + 1])
        })
        .map(|mut l| {
            l.local_port += LISTENERS * (l.inode as u16 % 13);
            l
        })
        .collect()
}

fn ingest_new_hosts(store: &dyn Store, next: &AtomicUsize, iters: u64) -> Duration {
    let batches: Vec<_> = (0..iters)
        .map(|_| {
            let h = next.fetch_add(1, Ordering::Relaxed);
            let at = jiff::Timestamp::now();
            batch(&format!("bench-{h}"), "s", vec![snapshot(1, at, listeners(h))])
        })
        .collect();
    let t = Instant::now();
    for b in &batches {
        store.ingest(b, jiff::Timestamp::now()).expect("ingest");
    }
    t.elapsed()
}

fn snapshot_ingest(c: &mut Criterion) {
    let mut group = c.benchmark_group("snapshot ingest, 50 listeners a host");
    group.throughput(Throughput::Elements(u64::from(LISTENERS)));
    group.sample_size(20).measurement_time(Duration::from_secs(10));

    let dir = std::env::temp_dir().join(format!("pw-bench-ingest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let sqlite = SqliteStore::open(&dir.join("collector.db")).expect("the SQLite store");
    let next = AtomicUsize::new(0);
    group.bench_function("sqlite", |b| {
        b.iter_custom(|iters| ingest_new_hosts(&sqlite, &next, iters))
    });
    drop(sqlite);
    let _ = std::fs::remove_dir_all(&dir);

    if std::env::var_os("PORTWATCH_TEST_POSTGRES").is_none() {
        eprintln!(
            "store_ingest: no PostgreSQL (set PORTWATCH_TEST_POSTGRES: `source tests/postgres.sh && postgres_start`); \
             its row is not measured"
        );
    } else {
        let schema = PostgresSchema::fresh();
        let store = PostgresStore::open(&PostgresOptions::new(schema.url.clone()), clock::Limits::default())
            .expect("the PostgreSQL store");
        let next = AtomicUsize::new(0);
        group.bench_function("postgres", |b| {
            b.iter_custom(|iters| ingest_new_hosts(&store, &next, iters))
        });
        drop(store);
    }
    group.finish();
}

/// Hosts the heartbeats go round.
const HEARTBEAT_HOSTS: usize = 100;

/// Stores the first snapshot of the hosts heartbeats will come from.
fn known_hosts(store: &dyn Store) {
    for h in 0..HEARTBEAT_HOSTS {
        let at = jiff::Timestamp::now();
        let b = batch(&format!("beat-{h}"), "s", vec![snapshot(1, at, listeners(h))]);
        store.ingest(&b, at).expect("ingest");
    }
}

/// `iters` heartbeats of the known hosts, one after another, each
/// reporting `dropped` reports dropped.
fn heartbeats(store: &dyn Store, next: &AtomicUsize, iters: u64, dropped: u64) -> Duration {
    let t = Instant::now();
    for _ in 0..iters {
        let h = next.fetch_add(1, Ordering::Relaxed) % HEARTBEAT_HOSTS;
        let at = jiff::Timestamp::now();
        let mut beat = heartbeat(&format!("beat-{h}"), "s", at);
        beat.dropped = dropped;
        store.ingest(&beat, at).expect("ingest");
    }
    t.elapsed()
}

fn heartbeat_ingest(c: &mut Criterion) {
    let mut group = c.benchmark_group("heartbeat of a known host");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20).measurement_time(Duration::from_secs(10));

    let dir = std::env::temp_dir().join(format!("pw-bench-beats-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let sqlite = SqliteStore::open(&dir.join("collector.db")).expect("the SQLite store");
    known_hosts(&sqlite);
    let next = AtomicUsize::new(0);
    group.bench_function("sqlite, written with the host's row", |b| {
        b.iter_custom(|iters| heartbeats(&sqlite, &next, iters, 0))
    });
    drop(sqlite);
    let _ = std::fs::remove_dir_all(&dir);

    if std::env::var_os("PORTWATCH_TEST_POSTGRES").is_some() {
        let schema = PostgresSchema::fresh();
        let store = PostgresStore::open(&PostgresOptions::new(schema.url.clone()), clock::Limits::default())
            .expect("the PostgreSQL store");
        known_hosts(&store);
        let next = AtomicUsize::new(0);
        group.bench_function("postgres, kept in memory", |b| {
            b.iter_custom(|iters| heartbeats(&store, &next, iters, 0))
        });
        group.bench_function("postgres, written with the host's row", |b| {
            b.iter_custom(|iters| heartbeats(&store, &next, iters, 1))
        });
        let stats = store.heartbeat_stats().expect("PostgreSQL counts heartbeats");
        eprintln!(
            "store_ingest: PostgreSQL kept {} heartbeats in memory and wrote them in {} flushes ({} host rows)",
            stats.kept, stats.flushes, stats.rows
        );
        drop(store);
    }
    group.finish();
}

criterion_group!(benches, snapshot_ingest, heartbeat_ingest);
criterion_main!(benches);
