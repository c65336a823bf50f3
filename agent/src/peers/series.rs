//! The daemon's peers time series: which listeners' summaries to ship, and
//! the ones waiting for the collector.
//!
//! **When a summary is shipped** ([`due`]): a listener's first summary
//! (the agent's start, or the listener's) is shipped at once, whatever it
//! says; after that, a summary is shipped only when it differs from the
//! last one shipped of that listener (its connections, distinct remotes,
//! top remotes with their counts, or classes) and at least [`SHIP_EVERY`]
//! (a minute) has passed since that one. So a listener whose connections
//! never change costs one point, a busy one at most one point a minute, and
//! a change is shipped at the first interval after the minute is up. A
//! listener that goes away is forgotten; if it comes back, its first
//! summary is shipped again.
//!
//! **Best-effort, not history.** Summaries are not spooled and take no
//! sequence number: they wait in memory ([`Series`]), at most
//! [`MAX_PENDING`], and go with the next batch to a collector that speaks
//! protocol version 3 (what its acknowledgements say, see
//! `portwatch_common::wire`). One acknowledged is never sent again. The ones
//! dropped are counted and the count goes with the next version 3 batch
//! (`peers_dropped`): the oldest when the queue is full (a collector away
//! for long), all of them when the collector says it speaks an older
//! version (it would refuse them), those of a batch the collector refused
//! for good, and those pending when the agent stops.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Duration;

use jiff::Timestamp;
use portwatch_common::peers::{PeerSample, PeerSummary};
use portwatch_common::wire::{MAX_PEER_SAMPLES_PER_BATCH, PEERS_VERSION};
use rustc_hash::FxHashMap as HashMap;

/// The least time between two summaries shipped of one listener.
pub const SHIP_EVERY: Duration = Duration::from_secs(60);

/// Most summaries waiting for the collector; beyond it the oldest are
/// dropped (counted). Ten minutes of 200 busy listeners.
pub const MAX_PENDING: usize = 2_000;

/// A listener, as its peers are counted: network namespace, address, port
/// (TCP; listeners sharing these with `SO_REUSEPORT` share one summary).
pub type Key = (u64, IpAddr, u16);

/// The last summary shipped of a listener, and when it was observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipped {
    /// When it was observed.
    pub at: Timestamp,
    /// What it said.
    pub summary: PeerSummary,
}

/// Whether a listener's `summary` observed `now` is to be shipped, given
/// the `last` one shipped of it (see the module docs): the first always,
/// then a changed one at least [`SHIP_EVERY`] after the last.
pub fn due(last: Option<&Shipped>, summary: &PeerSummary, now: Timestamp) -> bool {
    match last {
        None => true,
        Some(last) => {
            let since = now.duration_since(last.at);
            last.summary != *summary && since >= jiff::SignedDuration::from_secs(SHIP_EVERY.as_secs() as i64)
        }
    }
}

/// The summaries shipped and waiting (see the module docs).
#[derive(Debug, Default)]
pub struct Series {
    last: HashMap<Key, Shipped>,
    pending: VecDeque<PeerSample>,
    dropped: u64,
    /// The collector said it speaks an older version (logged once per change).
    refused_by_version: bool,
}

impl Series {
    /// Takes the summaries of every current TCP listener observed `at`:
    /// queues those [`due`], forgets the listeners not among them. Returns
    /// how many were queued.
    pub fn observe<'a>(&mut self, at: Timestamp, current: impl IntoIterator<Item = (Key, &'a PeerSummary)>) -> usize {
        let mut seen: HashMap<Key, ()> = HashMap::default();
        let mut queued = 0;
        for (key, summary) in current {
            if seen.insert(key, ()).is_some() {
                continue;
            }
            if !due(self.last.get(&key), summary, at) {
                continue;
            }
            self.last.insert(
                key,
                Shipped {
                    at,
                    summary: summary.clone(),
                },
            );
            if self.pending.len() >= MAX_PENDING {
                self.pending.pop_front();
                self.dropped += 1;
            }
            self.pending.push_back(PeerSample {
                observed_at: at,
                netns: key.0,
                local_addr: key.1,
                local_port: key.2,
                summary: summary.clone(),
            });
            queued += 1;
        }
        self.last.retain(|key, _| seen.contains_key(key));
        queued
    }

    /// What the next batch to a collector speaking `max_version` carries:
    /// the oldest pending summaries (at most a batch's worth) and the count
    /// dropped so far; nothing for a collector older than version 3.
    pub fn for_batch(&self, max_version: u32) -> (Vec<PeerSample>, u64) {
        if max_version < PEERS_VERSION {
            return (Vec::new(), 0);
        }
        let take = self.pending.len().min(MAX_PEER_SAMPLES_PER_BATCH);
        (self.pending.iter().take(take).cloned().collect(), self.dropped)
    }

    /// A batch that carried `sent` summaries and the count `dropped` was
    /// acknowledged by a collector speaking `max_version`: they are gone
    /// from the queue and the count. A collector older than version 3 can
    /// take none: every pending one is dropped, counted.
    pub fn acked(&mut self, sent: usize, dropped: u64, max_version: u32) {
        self.pending.drain(..sent.min(self.pending.len()));
        self.dropped = self.dropped.saturating_sub(dropped);
        if max_version < PEERS_VERSION {
            if !self.refused_by_version {
                tracing::warn!(
                    max_version,
                    "peers = true, but the collector speaks protocol version {max_version}, older than the \
                     {PEERS_VERSION} that carries peer summaries: they are dropped (counted) until it is upgraded"
                );
                self.refused_by_version = true;
            }
            self.drop_pending();
        } else {
            self.refused_by_version = false;
        }
    }

    /// The collector refused a batch for good: its `sent` summaries are
    /// dropped, counted.
    pub fn refused(&mut self, sent: usize) {
        let sent = sent.min(self.pending.len());
        self.pending.drain(..sent);
        self.dropped += sent as u64;
    }

    /// Drops every pending summary, counted.
    pub fn drop_pending(&mut self) {
        self.dropped += self.pending.len() as u64;
        self.pending.clear();
    }

    /// Summaries waiting.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Summaries dropped and not yet reported to the collector.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + second).unwrap()
    }

    fn summary(connections: u64) -> PeerSummary {
        PeerSummary {
            connections,
            distinct_remotes: connections.min(1),
            top: Vec::new(),
            classes: portwatch_common::peers::Classes {
                loopback: connections,
                ..Default::default()
            },
        }
    }

    fn key(port: u16) -> Key {
        (1, "0.0.0.0".parse().unwrap(), port)
    }

    #[test]
    fn the_first_summary_ships_then_a_changed_one_at_most_once_a_minute() {
        let last = Shipped {
            at: at(0),
            summary: summary(2),
        };
        assert!(
            due(None, &summary(0), at(0)),
            "a listener's first summary ships, even with no connection"
        );
        assert!(!due(Some(&last), &summary(3), at(59)), "changed, but within the minute");
        assert!(due(Some(&last), &summary(3), at(60)), "changed, and a minute passed");
        assert!(!due(Some(&last), &summary(2), at(3600)), "unchanged: never again");
        let mut top = summary(2);
        top.top.push(portwatch_common::peers::TopRemote {
            addr: "127.0.0.1".parse().unwrap(),
            connections: 2,
        });
        assert!(
            due(Some(&last), &top, at(61)),
            "a change of the top remotes is a change"
        );
        assert!(
            !due(Some(&last), &summary(3), at(-10)),
            "a clock stepped back is not a minute passed"
        );
    }

    #[test]
    fn a_series_queues_what_is_due_and_forgets_listeners_gone() {
        let mut s = Series::default();
        let (a, b) = (summary(1), summary(5));
        assert_eq!(s.observe(at(0), [(key(80), &a), (key(443), &b), (key(80), &a)]), 2);
        assert_eq!(s.observe(at(10), [(key(80), &summary(2)), (key(443), &b)]), 0);
        assert_eq!(s.observe(at(70), [(key(80), &summary(2)), (key(443), &b)]), 1);
        // 443 went away and came back: its first summary again.
        assert_eq!(s.observe(at(80), [(key(80), &summary(2))]), 0);
        assert_eq!(s.observe(at(90), [(key(443), &b)]), 1);
        let (sent, dropped) = s.for_batch(PEERS_VERSION);
        let ports: Vec<(u16, u64, Timestamp)> = sent
            .iter()
            .map(|p| (p.local_port, p.summary.connections, p.observed_at))
            .collect();
        assert_eq!(
            ports,
            [(80, 1, at(0)), (443, 5, at(0)), (80, 2, at(70)), (443, 5, at(90))]
        );
        assert_eq!(dropped, 0);
        s.acked(3, 0, PEERS_VERSION);
        assert_eq!(s.pending(), 1);
    }

    #[test]
    fn a_collector_older_than_version_3_is_sent_none_and_what_waits_is_dropped_counted() {
        let mut s = Series::default();
        s.observe(at(0), [(key(80), &summary(1)), (key(81), &summary(1))]);
        assert_eq!(s.for_batch(2), (Vec::new(), 0));
        s.acked(0, 0, 2);
        assert_eq!((s.pending(), s.dropped()), (0, 2));
        s.observe(at(0), [(key(82), &summary(1))]);
        let (sent, dropped) = s.for_batch(3);
        assert_eq!((sent.len(), dropped), (1, 2));
        s.acked(sent.len(), dropped, 3);
        assert_eq!((s.pending(), s.dropped()), (0, 0));
    }

    #[test]
    fn a_full_queue_drops_its_oldest_and_a_refused_batch_its_summaries_counted() {
        let mut s = Series::default();
        let one = summary(1);
        let keys: Vec<Key> = (0..MAX_PENDING as u16 + 3).map(key).collect();
        s.observe(at(0), keys.iter().map(|&k| (k, &one)));
        assert_eq!((s.pending(), s.dropped()), (MAX_PENDING, 3));
        let (sent, _) = s.for_batch(3);
        assert_eq!(sent[0].local_port, 3, "the oldest went first");
        s.refused(10);
        assert_eq!((s.pending(), s.dropped()), (MAX_PENDING - 10, 13));
        s.drop_pending();
        assert_eq!((s.pending(), s.dropped()), (0, MAX_PENDING as u64 + 3));
    }
}
