//! The pruner: carries out what [`crate::retention`] says has expired,
//! through the store, in small batches that leave the writer to ingest in
//! between; a pass an hour in the background, or one now
//! (`portwatch-collector prune`).

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use crate::metrics::Metrics;
use crate::retention::{plan, PrunePlan, Retention};
use crate::store::{Maintenance, PruneCursor, Pruned, Store, StoreError};

/// Rows one pruning transaction removes at most: the single SQLite writer
/// is held for one such batch (about a millisecond: each row is also in
/// two indexes), then handed back to ingest, so a heartbeat that arrives
/// meanwhile waits about as long as for another group of batches.
pub const BATCH_ROWS: usize = 250;

/// How long the background pruner pauses between two batches, so that the
/// batches ingest queued meanwhile get the writer first.
pub const BATCH_PAUSE: Duration = Duration::from_millis(20);

/// How often the background pruner runs a pass (the first one a minute after start).
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Pages one incremental vacuum step gives back to the file system at most
/// (1 MiB of 4 KiB pages), between batches like pruning's.
pub const VACUUM_PAGES: u32 = 256;

/// What one pass of [`prune_pass`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Rows removed.
    pub pruned: Pruned,
    /// Transactions it took (pruning and reclaiming).
    pub batches: u64,
    /// Free pages left in the file (reused by new rows before it grows).
    pub free_pages: u64,
}

/// Carries `plan` out to the end on `store`: batches of at most
/// `batch_rows` rows, each its own short transaction of the store's writer,
/// `pause` between two; then gives freed space back to the file system,
/// [`VACUUM_PAGES`] at a time, with the same pauses. Blocks; the background
/// pruner runs it on a thread of its own.
pub fn prune_pass(
    store: &dyn Maintenance,
    plan: &PrunePlan,
    batch_rows: usize,
    pause: Duration,
) -> Result<Pass, StoreError> {
    let mut pass = Pass::default();
    let mut cursor = PruneCursor::default();
    while !cursor.done() {
        pass.pruned += store.prune(plan, &mut cursor, batch_rows)?;
        pass.batches += 1;
        std::thread::sleep(pause);
    }
    if pass.pruned.removed() == 0 {
        return Ok(pass);
    }
    loop {
        let left = store.reclaim(VACUUM_PAGES)?;
        pass.batches += 1;
        // A database without auto_vacuum keeps its free pages: nothing moves.
        if left == 0 || left == pass.free_pages {
            pass.free_pages = left;
            return Ok(pass);
        }
        pass.free_pages = left;
        std::thread::sleep(pause);
    }
}

/// The background pruner: a pass a minute after start, then every
/// [`PRUNE_EVERY`], each logged and counted in `metrics`. Runs until the
/// process ends; a failed pass is logged and tried again at the next. A
/// pass runs only while this collector holds `lease` ([`crate::lease::PRUNE`]).
pub async fn run(store: Arc<dyn Store>, retention: Retention, metrics: Arc<Metrics>, lease: crate::lease::Lease) {
    let first = std::env::var(TEST_FIRST_PASS_ENV)
        .ok()
        .and_then(|v| humantime::parse_duration(v.trim()).ok())
        .unwrap_or(FIRST_PASS_AFTER);
    tokio::time::sleep(first).await;
    let mut every = tokio::time::interval(PRUNE_EVERY);
    loop {
        every.tick().await;
        let plan = plan(Timestamp::now(), &retention);
        // Another collector sharing the database prunes it.
        if plan.keeps_everything() || !lease.held() {
            continue;
        }
        let (store, metrics) = (store.clone(), metrics.clone());
        let done = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let pass = prune_pass(store.as_ref(), &plan, BATCH_ROWS, BATCH_PAUSE);
            (pass, started.elapsed())
        })
        .await;
        match done {
            Ok((Ok(pass), took)) => {
                metrics.pruned(&pass.pruned);
                let p = pass.pruned;
                tracing::info!(
                    intervals = p.intervals,
                    programs = p.programs,
                    alerts = p.alerts,
                    alert_events = p.alert_events,
                    baseline_log = p.baseline_log,
                    peer_points = p.peer_points,
                    alerts_held = p.alerts_held,
                    batches = pass.batches,
                    free_pages = pass.free_pages,
                    took_ms = took.as_millis() as u64,
                    history_before = %plan.intervals_closed_before.map_or_else(|| "-".to_owned(), |t| t.to_string()),
                    "pruned what retention let go"
                );
                if p.alerts_held > 0 {
                    tracing::warn!(
                        alerts_held = p.alerts_held,
                        "expired alerts kept: a sink has not delivered their changes (is one down, or removed from \
                         the config? its place in the outbox keeps them)"
                    );
                }
            }
            Ok((Err(e), _)) => tracing::error!(error = %e, "pruning failed; trying again at the next pass"),
            Err(e) => tracing::error!(error = %e, "pruning panicked; trying again at the next pass"),
        }
    }
}

/// How long after start the first pass runs (agents reconnecting come first).
const FIRST_PASS_AFTER: Duration = Duration::from_secs(60);

/// Environment variable, for tests and benchmarks only, holding another
/// delay before the first pass (a duration such as `5s`).
pub const TEST_FIRST_PASS_ENV: &str = "PORTWATCH_TEST_PRUNE_AFTER";
