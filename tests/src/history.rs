//! The history benchmark: a month of a fleet's listener changes, loaded
//! through the store (the quick way the issue allows: history is what the
//! agents would have sent), then the incident questions asked over HTTP of a
//! real `portwatch-collector serve` on loopback, with a read token:
//! `who --port 22` now and at past instants (a port every host has open),
//! and `ports --host H --at T` of random hosts and instants.
//!
//! Each host has 20 of [`fleet::listener`]'s listeners (sshd, nginx with
//! workers, postgres, ..., application ports, some in containers) and
//! restarts `restarts_per_day` of them a day: each restart closes an
//! interval and opens one with a new socket and pids.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use jiff::{SignedDuration, Timestamp};
use portwatch_collector::store::sqlite::SqliteStore;
use portwatch_collector::store::{HistoryWrites, TokenRow};
use portwatch_collector::token;
use portwatch_common::wire::{Batch, Report, ReportBody, PROTOCOL_VERSION};
use portwatch_common::Listener;
use portwatch_model::Role;

use crate::fleet::{self, Queries};

/// What to load and ask.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Hosts.
    pub hosts: usize,
    /// Listeners per host.
    pub listeners: usize,
    /// Days of history, ending now.
    pub days: u32,
    /// Listener restarts per host per day.
    pub restarts_per_day: u32,
    /// Queries of each kind.
    pub queries: usize,
    /// The collector binary.
    pub collector: PathBuf,
    /// The database: loaded unless it exists (then it is asked as it is).
    pub db: PathBuf,
}

/// What was measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Listener changes loaded and how long that took (`None`: the database existed).
    pub loaded: Option<(u64, Duration)>,
    /// The database file's size after loading (WAL checkpointed).
    pub bytes: u64,
    /// Listener intervals stored.
    pub intervals: u64,
    /// `who --port 22` now.
    pub who_now: Queries,
    /// `who --port 22 --at T`, T spread over the month.
    pub who_past: Queries,
    /// `ports --host H --at T`, H and T spread over the fleet and the month.
    pub ports_at: Queries,
}

/// The port `who` asks about: every host has sshd on it.
const WHO_PORT: u16 = 22;

/// Runs the benchmark; `progress` gets a line per phase.
pub fn run(plan: &Plan, progress: &mut dyn FnMut(&str)) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::default();
    let end = Timestamp::now();
    let start = end - SignedDuration::from_hours(24 * i64::from(plan.days));
    // A reader token of this run's own (a kept database is asked by many runs).
    let name = format!("history-reader-{}", end.as_nanosecond());
    let reader = format!("{}{name}", token::PREFIX);
    {
        let fresh = !plan.db.exists();
        let store = SqliteStore::open(&plan.db).with_context(|| format!("cannot open {}", plan.db.display()))?;
        if fresh {
            let t = Instant::now();
            let changes = load(plan, &store, start, progress)?;
            outcome.loaded = Some((changes, t.elapsed()));
        }
        store.create_tokens(&[TokenRow {
            name,
            role: Role::Read,
            host: None,
            hash: token::hash(&reader),
            created_at: Timestamp::now(),
            revoked_at: None,
        }])?;
    }
    // The load's writes reach the disk before anything is timed.
    std::fs::File::open(&plan.db)?.sync_all()?;
    outcome.bytes = std::fs::metadata(&plan.db)?.len();
    outcome.intervals = rusqlite::Connection::open(&plan.db)?
        .query_row("SELECT count(*) FROM intervals", [], |r| r.get::<_, i64>(0))? as u64;

    let server = fleet::Server::start(&plan.collector, &plan.db)?;
    progress(&format!("collector listening on {}", server.url));
    let agent = fleet::http_agent();
    let url = &server.url;
    // A fixed sequence of instants and hosts, the same in every run.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |bound: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % bound.max(1)
    };
    let span_s = end.duration_since(start).as_secs().max(1) as u64;
    let mut ask = |what: &str, path: &mut dyn FnMut() -> String| -> anyhow::Result<Queries> {
        // One unmeasured query first: the collector's caches fill on first use.
        fleet::timed_get(&agent, &format!("{url}{}", path()), &reader)?;
        let samples = (0..plan.queries)
            .map(|_| fleet::timed_get(&agent, &format!("{url}{}", path()), &reader))
            .collect::<anyhow::Result<Vec<_>>>()?;
        progress(&format!("{what}: {} queries", samples.len()));
        Ok(fleet::queries(samples))
    };
    outcome.who_now = ask("who now", &mut || format!("/api/v1/who?port={WHO_PORT}"))?;
    outcome.who_past = ask("who at past instants", &mut || {
        let at = start + SignedDuration::from_secs(next(span_s) as i64);
        format!("/api/v1/who?port={WHO_PORT}&at={at}")
    })?;
    outcome.ports_at = ask("ports at past instants", &mut || {
        let at = start + SignedDuration::from_secs(next(span_s) as i64);
        let host = fleet::host_name(next(plan.hosts as u64) as usize);
        format!("/api/v1/hosts/{host}/listeners?at={at}")
    })?;
    server.stop()?;
    Ok(outcome)
}

/// Listener `i` of host `h` in its `g`-th life: a new socket and new pids.
fn life(h: usize, i: usize, g: u32) -> Listener {
    let mut l = fleet::listener(h, i);
    l.inode += u64::from(g) << 32;
    for p in &mut l.processes {
        p.pid += g * 1000;
    }
    l
}

/// Loads every host's month: a snapshot at `start`, then its restarts, each
/// host's reports in one batch. Returns the listener changes stored.
fn load(plan: &Plan, store: &SqliteStore, start: Timestamp, progress: &mut dyn FnMut(&str)) -> anyhow::Result<u64> {
    if plan.listeners == 0 || plan.listeners > 50 {
        bail!("listeners per host: 1 to 50 (the fleet's listeners)");
    }
    let restarts = u64::from(plan.days) * u64::from(plan.restarts_per_day);
    let step_s = 86_400 / i64::from(plan.restarts_per_day.max(1));
    let mut changes = 0u64;
    let t = Instant::now();
    for h in 0..plan.hosts {
        let mut lives = vec![0u32; plan.listeners];
        let mut reports = vec![Report {
            seq: 1,
            observed_at: start,
            body: ReportBody::Snapshot {
                facts: fleet::facts(),
                listeners: (0..plan.listeners).map(|i| life(h, i, 0)).collect(),
            },
        }];
        changes += plan.listeners as u64;
        for k in 0..restarts {
            let i = ((k as usize) * 7 + h) % plan.listeners;
            let old = life(h, i, lives[i]);
            lives[i] += 1;
            // Hosts restart at different seconds of the same schedule.
            let at = start + SignedDuration::from_secs((k as i64 + 1) * step_s - (h % 1000) as i64);
            reports.push(Report {
                seq: k + 2,
                observed_at: at,
                body: ReportBody::Delta {
                    opened: vec![Arc::new(life(h, i, lives[i]))],
                    closed: vec![Arc::new(old)],
                },
            });
            changes += 2;
        }
        let batch = Batch {
            version: PROTOCOL_VERSION,
            host: fleet::host_name(h),
            session: "history".into(),
            dropped: 0,
            peers: Vec::new(),
            peers_dropped: 0,
            alive_at: None,
            reports,
        };
        store.ingest(&batch, Timestamp::now())?;
        if (h + 1) % 1000 == 0 {
            progress(&format!(
                "{} hosts loaded ({changes} changes, {:.0} changes/s)",
                h + 1,
                changes as f64 / t.elapsed().as_secs_f64()
            ));
        }
    }
    Ok(changes)
}

/// The outcome as a table.
pub fn report(plan: &Plan, o: &Outcome) -> String {
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    let mut out = format!(
        "history: {} hosts x {} listeners, {} days, {} restarts per host per day; {}\n",
        plan.hosts,
        plan.listeners,
        plan.days,
        plan.restarts_per_day,
        plan.db.display()
    );
    if let Some((changes, elapsed)) = o.loaded {
        out += &format!(
            "loaded through the store: {changes} listener changes in {:.0} s; {} bytes, {:.0} bytes per change\n",
            elapsed.as_secs_f64(),
            o.bytes,
            o.bytes as f64 / changes.max(1) as f64
        );
    }
    out += &format!("stored: {} listener intervals\n", o.intervals);
    for (name, q) in [
        (format!("who --port {WHO_PORT} now"), &o.who_now),
        (format!("who --port {WHO_PORT} --at T"), &o.who_past),
        ("ports --host H --at T".to_owned(), &o.ports_at),
    ] {
        out += &format!(
            "{name:<28} p50 {}, p99 {} ({} queries, {} rows, {} bytes in the last)\n",
            ms(q.p50),
            ms(q.p99),
            q.count,
            q.rows,
            q.bytes
        );
    }
    out
}
