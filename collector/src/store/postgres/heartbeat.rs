//! Heartbeats kept in memory and written in batches: a heartbeat changes
//! nothing but its host's `last_seen` and measured clock skew, and a fleet
//! of agents sends thousands a second, so the PostgreSQL store writes none
//! of them as it comes.
//!
//! A heartbeat of a known host, with nothing dropped, is answered from the
//! host's row as read (one `SELECT` for the heartbeats of a group: its
//! session and last stored `seq` make the answer) and its `last_seen` and
//! skew are kept here, the newest of each per host. Every flush window
//! ([`DEFAULT_FLUSH_EVERY`], `[postgres] heartbeat_flush`) one `UPDATE`
//! writes every host heard from since the last flush: `last_seen` as the
//! greater of the stored and the kept one (several collectors flushing the
//! same host in any order leave the newest), the skew where it was
//! measured later than the stored one. A heartbeat of a host not stored
//! yet, or one that reports dropped reports, is written with its group as
//! before (once per host, and rare).
//!
//! **What a crash loses.** A collector killed loses at most one window of
//! `last_seen` (and skew) of the hosts it heard from, never history: the
//! agents' next heartbeats put it back. A clean stop (SIGTERM, SIGINT)
//! flushes before the process exits, and so does dropping the store.
//!
//! **What reads see.** Reads through this store see what it keeps in
//! memory as if it were written (the newest of the row and the kept value).
//! Through another collector `last_seen` may be behind by one window and
//! the time of one flush; silence is judged with that lag (see
//! [`crate::history::status`]: three flush windows at least, against three
//! agent intervals, 30 s by default, for a 5 s window).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::{pg, Inner};
use crate::store::stored::RawHost;
use crate::store::{HeartbeatStats, StoreError};

/// How often the heartbeats kept in memory are written, by default.
pub const DEFAULT_FLUSH_EVERY: Duration = Duration::from_secs(5);

/// What heartbeats told of one host since the last flush: the newest of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Beat {
    /// When it was last heard from (ms).
    pub(super) last_seen: i64,
    /// The skew last measured (ms) and when (ms), if any was.
    pub(super) skew: Option<(i64, i64)>,
}

impl Beat {
    /// Keeps the newest of `self` and `other`, field by field.
    fn merge(&mut self, other: Beat) {
        self.last_seen = self.last_seen.max(other.last_seen);
        if other.skew.map(|(_, at)| at) >= self.skew.map(|(_, at)| at) {
            self.skew = other.skew.or(self.skew);
        }
    }

    /// A row as read, with what this beat knows newer put in.
    fn apply(&self, raw: &mut RawHost) {
        raw.last_seen = raw.last_seen.max(self.last_seen);
        if let Some((skew_ms, at)) = self.skew {
            if raw.clock_skew_at.is_none_or(|stored| at > stored) {
                raw.clock_skew_ms = Some(skew_ms);
                raw.clock_skew_at = Some(at);
            }
        }
    }
}

/// Heartbeats not written yet, by host name.
#[derive(Default)]
struct Kept {
    /// Heard since the last flush began.
    dirty: HashMap<String, Beat>,
    /// Being written by the flush in progress (still shown to reads until
    /// it has committed; put back into `dirty` if it fails).
    flushing: HashMap<String, Beat>,
}

/// The heartbeats a store keeps, and what it did with them.
pub(super) struct Heartbeats {
    kept: Mutex<Kept>,
    /// Held by the flush in progress: flushes run one at a time.
    flush: tokio::sync::Mutex<()>,
    /// How often the flusher writes.
    pub(super) every: Duration,
    kept_total: AtomicU64,
    flushes: AtomicU64,
    rows: AtomicU64,
    failures: AtomicU64,
}

impl Heartbeats {
    pub(super) fn new(every: Duration) -> Heartbeats {
        Heartbeats {
            kept: Mutex::default(),
            flush: tokio::sync::Mutex::new(()),
            every,
            kept_total: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lag of `last_seen` as another collector reads it, in ms (see
    /// [`crate::history::status`]).
    pub(super) fn lag_ms(&self) -> u64 {
        u64::try_from(self.every.as_millis()).unwrap_or(u64::MAX)
    }

    /// Keeps a heartbeat of `host`.
    pub(super) fn keep(&self, host: &str, beat: Beat) {
        let mut kept = self.kept();
        match kept.dirty.get_mut(host) {
            Some(known) => known.merge(beat),
            None => {
                kept.dirty.insert(host.to_owned(), beat);
            }
        }
        self.kept_total.fetch_add(1, Ordering::Relaxed);
    }

    /// What is kept of `host` (of every host if `None`), to lay over rows
    /// read after this call: taken before the read, so a flush that
    /// commits during the read hides nothing from it.
    pub(super) fn overlay(&self, host: Option<&str>) -> HashMap<String, Beat> {
        let kept = self.kept();
        let mut overlay = HashMap::new();
        for map in [&kept.flushing, &kept.dirty] {
            let beats: Box<dyn Iterator<Item = (&String, &Beat)>> = match host {
                Some(host) => Box::new(map.get_key_value(host).into_iter()),
                None => Box::new(map.iter()),
            };
            for (name, beat) in beats {
                match overlay.get_mut(name) {
                    Some(known) => Beat::merge(known, *beat),
                    None => {
                        overlay.insert(name.clone(), *beat);
                    }
                }
            }
        }
        overlay
    }

    /// `raw` with what `overlay` knows of its host newer than the row.
    pub(super) fn lay_over(overlay: &HashMap<String, Beat>, raw: &mut RawHost) {
        if let Some(beat) = overlay.get(&raw.name) {
            beat.apply(raw);
        }
    }

    /// What was done so far.
    pub(super) fn stats(&self) -> HeartbeatStats {
        HeartbeatStats {
            kept: self.kept_total.load(Ordering::Relaxed),
            flushes: self.flushes.load(Ordering::Relaxed),
            rows: self.rows.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }

    /// Writes every host heard from since the last flush, in one
    /// statement; nothing when none was. On failure what was taken is kept
    /// again for the next flush (merged with what came meanwhile).
    pub(super) async fn flush(&self, inner: &Inner) -> Result<u64, StoreError> {
        let _one_at_a_time = self.flush.lock().await;
        let taken: Vec<(String, Beat)> = {
            let mut kept = self.kept();
            if kept.dirty.is_empty() {
                return Ok(0);
            }
            let dirty = std::mem::take(&mut kept.dirty);
            kept.flushing = dirty.clone();
            dirty.into_iter().collect()
        };
        let written = write(inner, &taken).await;
        let mut kept = self.kept();
        let flushed = std::mem::take(&mut kept.flushing);
        match written {
            Ok(rows) => {
                drop(kept);
                self.flushes.fetch_add(1, Ordering::Relaxed);
                self.rows.fetch_add(rows, Ordering::Relaxed);
                Ok(rows)
            }
            Err(error) => {
                for (name, beat) in flushed {
                    match kept.dirty.get_mut(&name) {
                        Some(newer) => newer.merge(beat),
                        None => {
                            kept.dirty.insert(name, beat);
                        }
                    }
                }
                drop(kept);
                self.failures.fetch_add(1, Ordering::Relaxed);
                Err(error)
            }
        }
    }
}

/// The flush of `beats` (one `UPDATE` for them all); the rows it changed.
/// A row whose stored values are as new already is left alone.
async fn write(inner: &Inner, beats: &[(String, Beat)]) -> Result<u64, StoreError> {
    let names: Vec<&str> = beats.iter().map(|(name, _)| name.as_str()).collect();
    let last_seen: Vec<i64> = beats.iter().map(|(_, b)| b.last_seen).collect();
    let skew_ms: Vec<Option<i64>> = beats.iter().map(|(_, b)| b.skew.map(|(ms, _)| ms)).collect();
    let skew_at: Vec<Option<i64>> = beats.iter().map(|(_, b)| b.skew.map(|(_, at)| at)).collect();
    let client = inner.client().await?;
    client
        .execute(
            "UPDATE hosts h SET last_seen = greatest(h.last_seen, b.last_seen),
                 clock_skew_ms = CASE WHEN b.skew_at > coalesce(h.clock_skew_at, b.skew_at - 1)
                                      THEN b.skew_ms ELSE h.clock_skew_ms END,
                 clock_skew_at = greatest(h.clock_skew_at, b.skew_at)
             FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) AS b(name, last_seen, skew_ms, skew_at)
             WHERE h.name = b.name
               AND (b.last_seen > h.last_seen OR b.skew_at > coalesce(h.clock_skew_at, b.skew_at - 1))",
            &[&names, &last_seen, &skew_ms, &skew_at],
        )
        .await
        .map_err(pg)
}

/// The flusher: writes what is kept every window until `stop` says so (or
/// its sender is gone), then once more.
pub(super) async fn flush_every(inner: std::sync::Arc<Inner>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(inner.heartbeats.every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|stopping| *stopping) => break,
        }
        if let Err(error) = inner.heartbeats.flush(&inner).await {
            tracing::warn!(error = %error, "cannot write the heartbeats kept in memory; trying again at the next flush");
        }
    }
    if let Err(error) = inner.heartbeats.flush(&inner).await {
        tracing::warn!(error = %error, "cannot write the heartbeats kept in memory before stopping: the hosts' last_seen may be a flush window behind");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(last_seen: i64, skew: Option<(i64, i64)>) -> Beat {
        Beat { last_seen, skew }
    }

    #[test]
    fn the_newest_of_each_field_is_kept_in_whatever_order_beats_come() {
        let mut a = beat(100, Some((5, 100)));
        a.merge(beat(90, Some((-3, 90))));
        assert_eq!(a, beat(100, Some((5, 100))), "older values never win");
        a.merge(beat(110, None));
        assert_eq!(a, beat(110, Some((5, 100))), "no measurement keeps the last one");
        a.merge(beat(105, Some((7, 120))));
        assert_eq!(
            a,
            beat(110, Some((7, 120))),
            "a later measurement wins, last_seen stays the newest"
        );
    }

    #[test]
    fn reads_see_the_newest_of_the_row_and_the_kept_beat() {
        let beats = Heartbeats::new(DEFAULT_FLUSH_EVERY);
        beats.keep("web-1", beat(200, Some((40, 200))));
        beats.keep("web-1", beat(150, None));
        let overlay = beats.overlay(Some("web-1"));
        assert_eq!(overlay.len(), 1);
        assert!(beats.overlay(Some("web-2")).is_empty());
        let mut raw = raw_host("web-1", 100, Some((0, 100)));
        Heartbeats::lay_over(&overlay, &mut raw);
        assert_eq!(
            (raw.last_seen, raw.clock_skew_ms, raw.clock_skew_at),
            (200, Some(40), Some(200))
        );
        let mut newer = raw_host("web-1", 300, Some((1, 300)));
        Heartbeats::lay_over(&overlay, &mut newer);
        assert_eq!(
            (newer.last_seen, newer.clock_skew_ms, newer.clock_skew_at),
            (300, Some(1), Some(300)),
            "a row newer than what is kept (another collector's flush) stays"
        );
        assert_eq!(beats.stats().kept, 2);
    }

    fn raw_host(name: &str, last_seen: i64, skew: Option<(i64, i64)>) -> RawHost {
        RawHost {
            name: name.to_owned(),
            first_seen: 0,
            last_seen,
            agent_version: None,
            interval_ms: 10_000,
            os: None,
            kernel: None,
            boot_time: None,
            tags: "{}".to_owned(),
            dropped: 0,
            listeners: 0,
            clock_skew_ms: skew.map(|(ms, _)| ms),
            clock_skew_at: skew.map(|(_, at)| at),
            detection: None,
            host_netns: None,
            addresses: None,
        }
    }
}
