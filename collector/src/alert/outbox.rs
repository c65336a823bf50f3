//! The order a sink takes the alert outbox in, and how far it has come.
//!
//! The outbox holds every alert change in the order it was made. Delivered
//! in that order, one noisy host's 70,000 events would hold every other
//! host's alert behind them for as long as they take. So a sink takes the
//! events it has pending host by host, in turns ([`Turns`]):
//!
//! - each host's events in their order, so that an alert's changes arrive as
//!   they happened (opened, then acknowledged, then resolved), and a
//!   receiver sees `event_id` increase within a host;
//! - the hosts with events pending take one event each, in turn; a host
//!   that has new events joins at the end of the round. A host's new alert
//!   waits for at most one event of each other host with events pending
//!   (and the one in flight), however many those hosts have.
//!
//! Across hosts, events are then not delivered in `event_id` order. A sink's
//! progress ([`Pending`], kept in the store as a
//! [`SinkProgress`](crate::store::SinkProgress)) is therefore a cursor, every
//! event up to it done with (delivered, refused for good, not wanted), and
//! the events after it done with too. The cursor moves up to the oldest
//! event still pending. Only events within [`WINDOW`] ids of the cursor are
//! taken in turns: past that (a fleet-wide flood), the newer events wait
//! for the cursor to move, so the progress kept stays bounded.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use crate::store::SinkProgress;

/// How many ids past its cursor a sink takes events in turns from.
pub const WINDOW: i64 = 100_000;

/// Most outbox rows read at a time.
const READ_PAGE: usize = 10_000;

/// Pending events, by host, and whose turn it is.
#[derive(Debug, Default)]
pub struct Turns {
    /// Each host's pending events, oldest first.
    queues: HashMap<Arc<str>, VecDeque<i64>>,
    /// The hosts with pending events, the next to take a turn first.
    order: VecDeque<Arc<str>>,
    /// Pending events, in all.
    len: usize,
}

impl Turns {
    /// Adds event `id` of `host`, newer than every event of `host` added before.
    pub fn push(&mut self, id: i64, host: &str) {
        match self.queues.get_mut(host) {
            Some(queue) => queue.push_back(id),
            None => {
                let host: Arc<str> = Arc::from(host);
                self.queues.insert(host.clone(), VecDeque::from([id]));
                self.order.push_back(host);
            }
        }
        self.len += 1;
    }

    /// The next event to deliver: the oldest of the host whose turn it is.
    pub fn pop(&mut self) -> Option<i64> {
        let host = self.order.pop_front()?;
        let queue = self.queues.get_mut(&host)?;
        let id = queue.pop_front();
        match queue.is_empty() {
            true => {
                self.queues.remove(&host);
            }
            false => self.order.push_back(host),
        }
        self.len -= usize::from(id.is_some());
        id
    }

    /// The oldest pending event, of any host.
    pub fn oldest(&self) -> Option<i64> {
        self.queues.values().filter_map(|q| q.front().copied()).min()
    }

    /// How many events are pending.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no event is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A sink's place in the outbox: the events read and pending, in turns,
/// and what it is done with since its progress was last saved.
#[derive(Debug)]
pub struct Pending {
    turns: Turns,
    /// The progress as last saved.
    saved: i64,
    /// Every event up to this one has been read (into `turns` unless done).
    read_through: i64,
    /// Events after the saved cursor that were done with before the sink
    /// (re)started: not to be taken again when read.
    done_before: HashSet<i64>,
    /// Events done with since the progress was last saved.
    done_since: Vec<i64>,
    /// The event handed out by [`Pending::take`] and not done with yet.
    in_flight: Option<i64>,
}

impl Pending {
    /// A sink's place as `progress` left it.
    pub fn new(progress: SinkProgress) -> Pending {
        Pending {
            turns: Turns::default(),
            saved: progress.cursor,
            read_through: progress.cursor,
            done_before: progress.done.into_iter().collect(),
            done_since: Vec::new(),
            in_flight: None,
        }
    }

    /// What to read next: the events after this id, at most this many
    /// (none when the window is full).
    pub fn to_read(&self) -> (i64, usize) {
        let room = (self.cursor() + WINDOW - self.read_through).max(0);
        (self.read_through, usize::try_from(room).unwrap_or(0).min(READ_PAGE))
    }

    /// Takes in the events read after [`Pending::to_read`], `(id, host)`, oldest first.
    pub fn add(&mut self, events: Vec<(i64, String)>) {
        for (id, host) in events {
            if id <= self.read_through {
                continue;
            }
            self.read_through = id;
            if !self.done_before.remove(&id) {
                self.turns.push(id, &host);
            }
        }
    }

    /// The next event to deliver, in turns; `None` when none is pending.
    /// It stays pending (the cursor stops before it) until [`Pending::done`].
    pub fn take(&mut self) -> Option<i64> {
        let id = self.turns.pop();
        self.in_flight = self.in_flight.or(id);
        id
    }

    /// Records that the sink is done with event `id` (from [`Pending::take`]).
    pub fn done(&mut self, id: i64) {
        if self.in_flight == Some(id) {
            self.in_flight = None;
        }
        self.done_since.push(id);
    }

    /// How many events were done with since the progress was last saved.
    pub fn unsaved(&self) -> usize {
        self.done_since.len()
    }

    /// Whether the progress moved since it was last saved.
    pub fn dirty(&self) -> bool {
        !self.done_since.is_empty() || self.cursor() != self.saved
    }

    /// Where the cursor stands: every event up to it is done with, as the
    /// events before the oldest pending one (or the one in flight) are, or
    /// every event read when none is.
    pub fn cursor(&self) -> i64 {
        let oldest = [self.turns.oldest(), self.in_flight].into_iter().flatten().min();
        match oldest {
            Some(oldest) => (oldest - 1).max(self.saved),
            None => self.read_through,
        }
    }

    /// The progress to save now: the cursor and the events done after it
    /// since the last save (the store keeps those done before).
    pub fn progress(&self) -> (i64, Vec<i64>) {
        let cursor = self.cursor();
        let mut done: Vec<i64> = self.done_since.iter().copied().filter(|&id| id > cursor).collect();
        done.sort_unstable();
        (cursor, done)
    }

    /// Records that [`Pending::progress`] was saved.
    pub fn saved(&mut self) {
        self.saved = self.cursor();
        self.done_since.clear();
        let saved = self.saved;
        self.done_before.retain(|&id| id > saved);
    }

    /// How many events are pending (read, not done with).
    pub fn len(&self) -> usize {
        self.turns.len()
    }

    /// Whether no event read is pending.
    pub fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(turns: &mut Turns) -> Vec<i64> {
        std::iter::from_fn(|| turns.pop()).collect()
    }

    #[test]
    fn hosts_take_turns_and_each_keeps_its_order() {
        let mut t = Turns::default();
        for (id, host) in [(1, "a"), (2, "a"), (3, "a"), (4, "b"), (5, "a"), (6, "c"), (7, "b")] {
            t.push(id, host);
        }
        assert_eq!(t.len(), 7);
        assert_eq!(drain(&mut t), [1, 4, 6, 2, 7, 3, 5]);
        assert!(t.is_empty() && t.oldest().is_none());
    }

    #[test]
    fn a_quiet_host_s_alert_passes_a_flood_after_one_event_of_it() {
        let mut t = Turns::default();
        for id in 1..=20_000 {
            t.push(id, "flood");
        }
        // The flood is being delivered when another host's alert comes in.
        assert_eq!(drain_n(&mut t, 3), [1, 2, 3]);
        t.push(20_001, "web-3");
        assert_eq!(drain_n(&mut t, 2), [4, 20_001]);
        assert_eq!(t.oldest(), Some(5));
        // The flood goes on, in its order.
        assert_eq!(drain(&mut t), (5..=20_000).collect::<Vec<_>>());
    }

    fn drain_n(turns: &mut Turns, n: usize) -> Vec<i64> {
        (0..n).filter_map(|_| turns.pop()).collect()
    }

    #[test]
    fn a_host_that_runs_out_joins_at_the_end_of_the_round_when_it_has_more() {
        let mut t = Turns::default();
        t.push(1, "a");
        t.push(2, "b");
        t.push(3, "b");
        assert_eq!(t.pop(), Some(1));
        t.push(4, "a");
        assert_eq!(drain(&mut t), [2, 4, 3]);
    }

    fn events(ids: impl IntoIterator<Item = (i64, &'static str)>) -> Vec<(i64, String)> {
        ids.into_iter().map(|(id, h)| (id, h.to_owned())).collect()
    }

    #[test]
    fn the_cursor_stops_before_the_oldest_pending_event_and_the_done_after_it_are_kept() {
        let mut p = Pending::new(SinkProgress {
            cursor: 10,
            done: vec![],
        });
        assert_eq!(p.to_read(), (10, READ_PAGE));
        p.add(events([(11, "flood"), (12, "flood"), (13, "flood"), (14, "web-3")]));
        assert_eq!(p.take(), Some(11));
        assert_eq!(p.progress(), (10, vec![]), "11 is in flight");
        p.done(11);
        assert_eq!(p.take(), Some(14));
        p.done(14);
        assert_eq!(p.progress(), (11, vec![14]), "12 and 13 are pending");
        p.saved();

        // Restarted from what was saved: 14 is not taken again.
        let mut again = Pending::new(SinkProgress {
            cursor: 11,
            done: vec![14],
        });
        again.add(events([(12, "flood"), (13, "flood"), (14, "web-3"), (15, "db-1")]));
        assert_eq!(std::iter::from_fn(|| again.take()).collect::<Vec<_>>(), [12, 15, 13]);
        for id in [12, 15, 13] {
            again.done(id);
        }
        assert_eq!(again.progress(), (15, vec![]), "every event read is done with");
        again.saved();
        assert_eq!(again.to_read(), (15, READ_PAGE));
    }

    #[test]
    fn events_past_the_window_wait_for_the_cursor() {
        let mut p = Pending::new(SinkProgress::default());
        let flood: Vec<(i64, String)> = (1..=WINDOW).map(|id| (id, "flood".to_owned())).collect();
        p.add(flood);
        assert_eq!(p.to_read(), (WINDOW, 0), "the window is full");
        assert_eq!(p.take(), Some(1));
        p.done(1);
        assert_eq!(p.to_read(), (WINDOW, 1), "one more may be read");
        assert_eq!(p.len(), WINDOW as usize - 1);
    }

    #[test]
    fn rows_read_twice_are_taken_once() {
        let mut p = Pending::new(SinkProgress::default());
        p.add(events([(1, "a"), (2, "a")]));
        p.add(events([(2, "a"), (3, "b")]));
        assert_eq!(std::iter::from_fn(|| p.take()).collect::<Vec<_>>(), [1, 3, 2]);
    }
}
