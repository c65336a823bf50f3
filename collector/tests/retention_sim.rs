//! A fleet's history with a lifetime, simulated through the store: 1,000
//! hosts x 20 listeners for 120 days, each host restarting 3 listeners a
//! day (6 listener changes) and deploying a new release of its application
//! once a week (new process identities), with 30 days of retention pruned
//! after every simulated day. The database must level off once the first 30
//! days have expired. Run twice: on a database this build creates
//! (`auto_vacuum = INCREMENTAL`, freed pages given back) and on one made
//! before it (`auto_vacuum = NONE`, freed pages reused).
//!
//! `cargo test --release -p portwatch-collector --test retention_sim -- --ignored --nocapture`
//! (`PORTWATCH_SIM_HOSTS=N` for another fleet size).
// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::unwrap_used)]

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use portwatch_collector::pruner;
use portwatch_collector::retention::{self, Retention};
use portwatch_collector::store::sqlite::SqliteStore;
use portwatch_collector::store::HistoryWrites;
use portwatch_common::wire::Batch;
use portwatch_common::{Listener, Process};
use portwatch_fixtures::{bare_facts, batch, delta, listener, process, snapshot_with};

const LISTENERS: usize = 20;
const RESTARTS_PER_DAY: usize = 3;
const DAYS: i64 = 120;
const KEEP_DAYS: u64 = 30;

fn start() -> Timestamp {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

fn at(day: i64, seconds: i64) -> Timestamp {
    start() + SignedDuration::from_secs(day * 86_400 + seconds)
}

/// Listener `i` of a host, held by `pid`; listeners 0-4 are the
/// application's, whose command line names the week's release.
fn sim_listener(i: usize, pid: u32, day: i64) -> Listener {
    let (name, cmdline) = match i {
        0..5 => (
            "app".to_owned(),
            format!("/opt/app/bin/app --release 2026.{} --port {}", day / 7, 8000 + i),
        ),
        _ => (format!("svc{i}"), format!("/usr/sbin/svc{i} --config /etc/svc{i}.conf")),
    };
    Listener {
        inode: u64::from(pid) * 100 + i as u64,
        processes: vec![Process {
            cmdline: Some(cmdline.into()),
            exe: None,
            unit: None,
            ..process(pid, &name)
        }],
        ..listener(if i < 5 { 8000 + i as u16 } else { 100 + i as u16 })
    }
}

fn host(h: usize) -> String {
    format!("sim-{h:05}")
}

#[derive(Debug, Clone, Copy)]
struct Row {
    day: i64,
    bytes: u64,
    free_pages: i64,
    intervals: i64,
    programs: i64,
}

/// Runs the simulation on `db`; the size every 10 days.
fn simulate(db: &std::path::Path, hosts: usize, old_database: bool) -> Vec<Row> {
    let store = Arc::new(SqliteStore::open(db).unwrap());
    if old_database {
        // As a database made before retention was: no auto_vacuum.
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.execute_batch("PRAGMA auto_vacuum = NONE; VACUUM;").unwrap();
        let mode: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, 0);
    }
    let lifetime = Retention {
        history: Some(Duration::from_secs(KEEP_DAYS * 86_400)),
        alerts: None,
        baseline_log: None,
    };
    // Each host's listeners as they are now.
    let mut current: Vec<Vec<Listener>> = (0..hosts)
        .map(|h| {
            (0..LISTENERS)
                .map(|i| sim_listener(i, (h * 100 + i) as u32 + 1000, 0))
                .collect()
        })
        .collect();
    let mut seqs = vec![1u64; hosts];
    let mut pid = 10_000_000u32;
    let ingest_all = |batches: Vec<(Batch, Timestamp)>| {
        let (tx, rx) = mpsc::channel();
        let n = batches.len();
        for (batch, received) in batches {
            let tx = tx.clone();
            store.ingest_queued(batch, received, Box::new(move |r| tx.send(r).unwrap()));
        }
        for _ in 0..n {
            let ack = rx.recv().unwrap().unwrap();
            assert!(!ack.resync, "{ack:?}");
        }
    };
    ingest_all(
        (0..hosts)
            .map(|h| {
                let report = snapshot_with(1, at(0, h as i64), bare_facts(), current[h].clone());
                (batch(&host(h), "sim", vec![report]), at(0, h as i64))
            })
            .collect(),
    );
    let mut rows = Vec::new();
    let t = Instant::now();
    for day in 0..DAYS {
        let mut batches = Vec::with_capacity(hosts);
        for h in 0..hosts {
            let mut reports = Vec::new();
            for k in 0..RESTARTS_PER_DAY {
                let i = (h * 7 + day as usize * 3 + k * 5) % LISTENERS;
                pid += 1;
                let new = sim_listener(i, pid, day);
                let old = std::mem::replace(&mut current[h][i], new.clone());
                seqs[h] += 1;
                let observed = at(day, (k as i64 + 1) * 6 * 3600 + h as i64);
                reports.push(delta(seqs[h], observed, vec![new], vec![old]));
            }
            let received = reports.last().unwrap().observed_at;
            batches.push((batch(&host(h), "sim", reports), received));
        }
        ingest_all(batches);
        let plan = retention::plan(at(day + 1, 0), &lifetime);
        pruner::prune_pass(store.as_ref(), &plan, pruner::BATCH_ROWS, Duration::ZERO).unwrap();
        if (day + 1) % 10 == 0 {
            let conn = rusqlite::Connection::open(db).unwrap();
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .unwrap();
            let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
            let row = Row {
                day: day + 1,
                bytes: std::fs::metadata(db).unwrap().len(),
                free_pages: count("PRAGMA freelist_count"),
                intervals: count("SELECT count(*) FROM intervals"),
                programs: count("SELECT count(*) FROM programs"),
            };
            eprintln!("{row:?} after {:.0?}", t.elapsed());
            rows.push(row);
        }
    }
    rows
}

#[test]
#[ignore = "a benchmark: 120 simulated days of a 1,000-host fleet (run it in release)"]
fn a_fleets_database_levels_off_under_retention() {
    let hosts: usize = std::env::var("PORTWATCH_SIM_HOSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let dir = std::env::temp_dir().join(format!("pw-retention-sim-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let new = simulate(&dir.join("new.db"), hosts, false);
    let old = simulate(&dir.join("old.db"), hosts, true);
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{hosts} hosts x {LISTENERS} listeners, {} changes per host per day, {KEEP_DAYS} days kept, pruned daily\n",
        2 * RESTARTS_PER_DAY
    );
    println!("| day | intervals | programs | new database (incremental vacuum) | older database (page reuse): file, free pages |");
    println!("|---:|---:|---:|---:|---:|");
    for (n, o) in new.iter().zip(&old) {
        println!(
            "| {} | {} | {} | {:.1} MiB | {:.1} MiB, {} |",
            n.day,
            n.intervals,
            n.programs,
            n.bytes as f64 / 1048576.0,
            o.bytes as f64 / 1048576.0,
            o.free_pages
        );
    }
    // Levelled off: the last 60 days grow the file by less than a tenth.
    for rows in [&new, &old] {
        let day60 = rows.iter().find(|r| r.day == 60).unwrap();
        let last = rows.last().unwrap();
        assert!(
            (last.bytes as f64) < day60.bytes as f64 * 1.1,
            "day 60: {day60:?}, day {}: {last:?}",
            last.day
        );
        assert_eq!(
            last.intervals, day60.intervals,
            "as many kept every day once 30 have expired"
        );
    }
}
