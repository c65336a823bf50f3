//! The history rules: how a host's batches become opens and closes of
//! listener intervals, decided here as plain functions over plain values.
//! A store backend reads the state these functions take, runs the plan they
//! return inside one transaction, and decides nothing itself.
//!
//! - [`plan_batch`]: given the host's session state, the parts of a snapshot
//!   it has staged, a batch and its reports' effective times ([`crate::clock`]),
//!   the steps to apply in order, the session state after them, and the
//!   acknowledgement. It holds the duplicate, resend, gap and dropped-report
//!   rules.
//! - [`reconcile`]: given the host's open intervals and a snapshot, which
//!   intervals to open and which to close (duplicate open intervals
//!   included).
//! - [`close_time`]: a close is never dated before its open.
//! - [`status`]: up or silent.
//!
//! A [`Step::Open`] opens an interval only if the listener has none open
//! (open-if-absent); a [`Step::Close`] closes the listener's open interval
//! if there is one (close-if-open): a delta that repeats what is stored
//! changes nothing. Which listener an interval is, is
//! [`portwatch_common::Listener::interval_identity`]: every field, owners
//! included, so an owner change is one close and one open.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::Hash;

use jiff::Timestamp;
use portwatch_common::wire::{Ack, Batch, HostFacts, ReportBody};
use portwatch_common::Listener;
use portwatch_model::HostStatus;

/// What the store knows of a host's agent session before a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionState {
    /// The session whose reports are stored (`None` before the first snapshot).
    pub session: Option<String>,
    /// The last stored `seq` of that session.
    pub last_seq: u64,
    /// Reports the agent said it dropped, in all.
    pub dropped: u64,
}

/// The parts of a snapshot in progress that the store keeps for a host:
/// parts `0..parts` of `session`, the last of them numbered `last_seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    /// The session the parts belong to.
    pub session: String,
    /// How many parts are kept (parts `0..parts`).
    pub parts: u32,
    /// The `seq` of the last part kept.
    pub last_seq: u64,
}

impl Staged {
    /// What the store keeps, from its rows `(session, part, seq)` in part
    /// order: `None` unless they are parts `0..n` of one session with
    /// consecutive seqs (anything else cannot be continued, and a next part
    /// then asks for a resync).
    pub fn from_rows<'a>(rows: impl IntoIterator<Item = (&'a str, u32, u64)>) -> Option<Staged> {
        let mut staged: Option<Staged> = None;
        for (session, part, seq) in rows {
            staged = match staged {
                None if part == 0 => Some(Staged {
                    session: session.to_owned(),
                    parts: 1,
                    last_seq: seq,
                }),
                Some(s) if s.session == session && part == s.parts && s.last_seq.checked_add(1) == Some(seq) => {
                    Some(Staged {
                        parts: s.parts + 1,
                        last_seq: seq,
                        ..s
                    })
                }
                _ => return None,
            };
        }
        staged
    }

    /// Whether report `seq`, part `part` of a snapshot of `session`, follows
    /// these parts.
    fn followed_by(&self, session: &str, seq: u64, part: u32) -> bool {
        self.session == session && self.parts == part && self.last_seq.checked_add(1) == Some(seq)
    }
}

/// One write of a batch, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<'b> {
    /// Forget the staged parts of any snapshot in progress.
    ClearParts,
    /// Make the host's open intervals exactly those of `listeners`, at `at`
    /// (see [`reconcile`]).
    Reconcile {
        /// The snapshot's listeners.
        listeners: &'b [Listener],
        /// Its effective time, in milliseconds.
        at: i64,
    },
    /// Keep a part of a snapshot until its last part arrives.
    StagePart {
        /// Its session.
        session: &'b str,
        /// Its report's `seq`.
        seq: u64,
        /// Its number.
        part: u32,
        /// Its listeners.
        listeners: &'b [Listener],
    },
    /// The last part of a snapshot: reconcile with the listeners of the
    /// parts kept followed by `listeners`, at `at`, and forget the parts.
    ReconcileStaged {
        /// The last part's listeners.
        listeners: &'b [Listener],
        /// Its effective time, in milliseconds.
        at: i64,
    },
    /// Close the listener's open interval at `at`, if it has one.
    Close {
        /// The listener.
        listener: &'b Listener,
        /// The delta's effective time, in milliseconds.
        at: i64,
    },
    /// Open an interval for the listener at `at`, unless one is open.
    Open {
        /// The listener.
        listener: &'b Listener,
        /// The delta's effective time, in milliseconds.
        at: i64,
    },
}

/// What [`plan_batch`] decided for one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPlan<'b> {
    /// The writes, in order.
    pub steps: Vec<Step<'b>>,
    /// The host's session state after the batch.
    pub state: SessionState,
    /// The facts of the batch's latest snapshot, if it has one.
    pub facts: Option<&'b HostFacts>,
    /// The effective time of the batch's last report applied, in
    /// milliseconds: the host's clock bound for its next reports.
    pub last_at: Option<i64>,
    /// The answer to the agent.
    pub ack: Ack,
}

/// Plans `batch` for a host in `state` with `staged` parts kept, its
/// reports dated `times` (one per report, by [`crate::clock::effective_times`]).
///
/// - A report of the stored session at or below its last `seq` is stored
///   already and skipped: a batch sent twice is stored once.
/// - A snapshot is always applied and starts its session.
/// - A snapshot's parts are kept until the last; a part other than the first
///   must follow the kept ones (same session, next part, next `seq`), and a
///   delta must be the next `seq` of the stored session: otherwise the batch
///   stops there and the answer asks for a resync.
/// - The batch's `dropped` count is added unless every report of it was
///   stored already (the resend of a batch whose answer was lost: it was
///   counted then).
/// - The answer acknowledges the last stored `seq` of the batch's session,
///   or 0 and a resync when the store has no state for that session.
pub fn plan_batch<'b>(
    state: &SessionState,
    staged: Option<Staged>,
    batch: &'b Batch,
    times: &[Timestamp],
) -> BatchPlan<'b> {
    let mut session = state.session.clone();
    let mut last_seq = state.last_seq;
    let mut staged = staged;
    let mut steps = Vec::new();
    let mut facts = None;
    let mut last_at = None;
    let mut skipped = 0;
    let mut gap = false;
    for (report, at) in batch.reports.iter().zip(times) {
        let current = session.as_deref() == Some(batch.session.as_str());
        if current && report.seq <= last_seq {
            skipped += 1;
            continue;
        }
        let at = at.as_millisecond();
        match &report.body {
            ReportBody::Snapshot {
                facts: new_facts,
                listeners,
            } => {
                staged = None;
                steps.push(Step::ClearParts);
                steps.push(Step::Reconcile { listeners, at });
                facts = Some(new_facts);
                session = Some(batch.session.clone());
            }
            ReportBody::SnapshotPart {
                part,
                parts,
                facts: part_facts,
                listeners,
            } => {
                if *part == 0 {
                    // Whatever was kept is replaced: the parts below set `staged`.
                    steps.push(Step::ClearParts);
                } else if !current
                    || last_seq.checked_add(1) != Some(report.seq)
                    || !staged
                        .as_ref()
                        .is_some_and(|s| s.followed_by(&batch.session, report.seq, *part))
                {
                    gap = true;
                    break;
                }
                if part + 1 < *parts {
                    steps.push(Step::StagePart {
                        session: &batch.session,
                        seq: report.seq,
                        part: *part,
                        listeners,
                    });
                    staged = Some(Staged {
                        session: batch.session.clone(),
                        parts: part + 1,
                        last_seq: report.seq,
                    });
                } else {
                    steps.push(Step::ReconcileStaged { listeners, at });
                    staged = None;
                    facts = part_facts.as_ref().or(facts);
                }
                session = Some(batch.session.clone());
            }
            ReportBody::Delta { opened, closed } => {
                if !current || last_seq.checked_add(1) != Some(report.seq) {
                    gap = true;
                    break;
                }
                steps.extend(closed.iter().map(|l| Step::Close { listener: l, at }));
                steps.extend(opened.iter().map(|l| Step::Open { listener: l, at }));
            }
        }
        last_seq = report.seq;
        last_at = Some(at);
    }
    let resent = !batch.reports.is_empty() && skipped == batch.reports.len();
    let dropped = if resent {
        state.dropped
    } else {
        state.dropped.saturating_add(batch.dropped)
    };
    let current = session.as_deref() == Some(batch.session.as_str());
    BatchPlan {
        steps,
        state: SessionState {
            session,
            last_seq,
            dropped,
        },
        facts,
        last_at,
        ack: Ack {
            acked: if current { last_seq } else { 0 },
            resync: gap || !current,
            limits: None,
        },
    }
}

/// What [`reconcile`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciled<K, I> {
    /// Keys of the snapshot with no open interval: open one each, in the
    /// snapshot's order (a key the snapshot repeats, once).
    pub open: Vec<K>,
    /// Open intervals to close: those whose key the snapshot lacks, and
    /// every duplicate open interval of a key beyond the one kept.
    pub close: Vec<I>,
}

/// Makes a host's open intervals those of a snapshot: `open` are the open
/// intervals (a key, and the interval's reference with its opening time),
/// `snapshot` the keys of the snapshot's listeners. A key open and in the
/// snapshot keeps its interval untouched (an agent restart makes no false
/// event); of several open intervals of one key (which a backend without
/// one writer might make), the earliest opened is kept.
pub fn reconcile<K, I>(
    open: impl IntoIterator<Item = (K, I, i64)>,
    snapshot: impl IntoIterator<Item = K>,
) -> Reconciled<K, I>
where
    K: Eq + Hash + Clone,
{
    struct Open<I> {
        intervals: Vec<(i64, I)>,
        in_snapshot: bool,
    }
    let mut by_key: HashMap<K, Open<I>> = HashMap::new();
    for (key, interval, opened_at) in open {
        by_key
            .entry(key)
            .or_insert_with(|| Open {
                intervals: Vec::new(),
                in_snapshot: false,
            })
            .intervals
            .push((opened_at, interval));
    }
    let mut to_open = Vec::new();
    for key in snapshot {
        match by_key.entry(key) {
            Entry::Occupied(mut entry) => {
                let entry = entry.get_mut();
                if !entry.in_snapshot {
                    entry.in_snapshot = true;
                    // Keep the earliest opened (a stable sort: of equal
                    // times, the first read); close the others.
                    entry.intervals.sort_by_key(|(opened_at, _)| *opened_at);
                    entry.intervals.remove(0);
                }
            }
            Entry::Vacant(entry) => {
                to_open.push(entry.key().clone());
                entry.insert(Open {
                    intervals: Vec::new(),
                    in_snapshot: true,
                });
            }
        }
    }
    Reconciled {
        open: to_open,
        close: by_key.into_values().flat_map(|o| o.intervals).map(|(_, i)| i).collect(),
    }
}

/// When an interval opened at `opened_at` closes if its close is observed
/// at `at`: never before it opened (an agent's clock may step back).
pub fn close_time(opened_at: i64, at: i64) -> i64 {
    at.max(opened_at)
}

/// A host's agent scanning every `interval_ms` (0: not known yet) is silent
/// once it has not been heard from for three of its intervals.
pub const SILENT_AFTER_INTERVALS: i128 = 3;

/// The interval a host is judged by before its agent said its own.
pub const UNKNOWN_INTERVAL_MS: u64 = 10_000;

/// Up or silent at `now` (milliseconds), for a host last heard from at
/// `last_seen` whose agent scans every `interval_ms`, as read from a store
/// whose `last_seen` may be up to `lag_ms` behind the heartbeats received
/// (0 for a store that writes every heartbeat; the PostgreSQL store's flush
/// window otherwise, see `store::postgres`): silent after three of the
/// agent's intervals, or three lags when those are longer, so a host whose
/// heartbeats wait in another collector's memory is never judged silent for it.
pub fn status(now: i64, last_seen: i64, interval_ms: u64, lag_ms: u64) -> HostStatus {
    let judged_by = if interval_ms == 0 {
        UNKNOWN_INTERVAL_MS
    } else {
        interval_ms
    };
    let silence = i128::from(now) - i128::from(last_seen);
    if silence >= SILENT_AFTER_INTERVALS * i128::from(judged_by.max(lag_ms)) {
        HostStatus::Silent
    } else {
        HostStatus::Up
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use portwatch_common::wire::{Report, PROTOCOL_VERSION};
    use portwatch_common::{Exposure, Family, Proto};

    use super::*;

    fn ts(ms: i64) -> Timestamp {
        Timestamp::from_millisecond(1_700_000_000_000 + ms).unwrap()
    }

    fn listener(port: u16) -> Listener {
        Listener {
            netns: 1,
            proto: Proto::Tcp,
            family: Family::Ipv4,
            local_addr: "0.0.0.0".parse().unwrap(),
            local_port: port,
            inode: u64::from(port),
            uid: 0,
            user: None,
            exposure: Exposure::Wildcard,
            dual_stack: false,
            processes: Vec::new(),
            firewall: None,
        }
    }

    fn facts(version: &str) -> HostFacts {
        HostFacts {
            os: None,
            kernel: None,
            boot_time: None,
            agent_version: version.into(),
            interval_ms: 10_000,
            tags: BTreeMap::new(),
            detection: None,
            host_netns: None,
            addresses: Vec::new(),
        }
    }

    fn snapshot(seq: u64, ports: &[u16]) -> Report {
        Report {
            seq,
            observed_at: ts(0),
            body: ReportBody::Snapshot {
                facts: facts("1"),
                listeners: ports.iter().map(|&p| listener(p)).collect(),
            },
        }
    }

    fn part(seq: u64, part: u32, parts: u32, ports: &[u16]) -> Report {
        Report {
            seq,
            observed_at: ts(0),
            body: ReportBody::SnapshotPart {
                part,
                parts,
                facts: (part + 1 == parts).then(|| facts("parts")),
                listeners: ports.iter().map(|&p| listener(p)).collect(),
            },
        }
    }

    fn delta(seq: u64, opened: &[u16], closed: &[u16]) -> Report {
        Report {
            seq,
            observed_at: ts(0),
            body: ReportBody::Delta {
                opened: opened.iter().map(|&p| Arc::new(listener(p))).collect(),
                closed: closed.iter().map(|&p| Arc::new(listener(p))).collect(),
            },
        }
    }

    fn batch(session: &str, dropped: u64, reports: Vec<Report>) -> Batch {
        Batch {
            version: PROTOCOL_VERSION,
            host: "web-3".into(),
            session: session.into(),
            dropped,
            peers: Vec::new(),
            peers_dropped: 0,
            alive_at: None,
            reports,
        }
    }

    /// Each report dated its seq in milliseconds.
    fn times(b: &Batch) -> Vec<Timestamp> {
        b.reports.iter().map(|r| ts(r.seq as i64)).collect()
    }

    fn at(seq: u64) -> i64 {
        ts(seq as i64).as_millisecond()
    }

    fn state(session: &str, last_seq: u64, dropped: u64) -> SessionState {
        SessionState {
            session: Some(session.into()),
            last_seq,
            dropped,
        }
    }

    /// The steps as (kind, port or count, time) for short assertions.
    fn shape(plan: &BatchPlan<'_>) -> Vec<(&'static str, u16, i64)> {
        plan.steps
            .iter()
            .map(|s| match *s {
                Step::ClearParts => ("clear", 0, 0),
                Step::Reconcile { listeners, at } => ("reconcile", listeners.len() as u16, at),
                Step::StagePart { part, listeners, .. } => ("stage", part as u16 * 100 + listeners.len() as u16, 0),
                Step::ReconcileStaged { listeners, at } => ("reconcile-staged", listeners.len() as u16, at),
                Step::Close { listener, at } => ("close", listener.local_port, at),
                Step::Open { listener, at } => ("open", listener.local_port, at),
            })
            .collect()
    }

    #[test]
    fn a_snapshot_starts_its_session_and_deltas_follow_closes_first() {
        let b = batch("s1", 0, vec![snapshot(1, &[22, 80]), delta(2, &[443], &[80])]);
        let plan = plan_batch(&SessionState::default(), None, &b, &times(&b));
        assert_eq!(
            shape(&plan),
            [
                ("clear", 0, 0),
                ("reconcile", 2, at(1)),
                ("close", 80, at(2)),
                ("open", 443, at(2))
            ]
        );
        assert_eq!(plan.state, state("s1", 2, 0));
        assert_eq!(plan.facts.map(|f| f.agent_version.as_str()), Some("1"));
        assert_eq!(plan.last_at, Some(at(2)));
        assert_eq!((plan.ack.acked, plan.ack.resync), (2, false));
    }

    #[test]
    fn reports_stored_already_are_skipped_and_a_whole_resend_adds_no_dropped_count() {
        let b = batch("s1", 7, vec![delta(3, &[1], &[]), delta(4, &[2], &[])]);
        let resent = plan_batch(&state("s1", 4, 7), None, &b, &times(&b));
        assert!(resent.steps.is_empty());
        assert_eq!(resent.state, state("s1", 4, 7), "counted when it first came");
        assert_eq!((resent.ack.acked, resent.ack.resync), (4, false));
        assert_eq!(resent.last_at, None);

        let overlapping = plan_batch(&state("s1", 3, 7), None, &b, &times(&b));
        assert_eq!(shape(&overlapping), [("open", 2, at(4))]);
        assert_eq!(overlapping.state, state("s1", 4, 14));
    }

    #[test]
    fn a_gap_stops_the_batch_there_and_asks_for_a_resync() {
        let b = batch(
            "s1",
            0,
            vec![delta(2, &[1], &[]), delta(4, &[2], &[]), delta(5, &[3], &[])],
        );
        let plan = plan_batch(&state("s1", 1, 0), None, &b, &times(&b));
        assert_eq!(shape(&plan), [("open", 1, at(2))]);
        assert_eq!((plan.ack.acked, plan.ack.resync), (2, true));
        assert_eq!(plan.state.last_seq, 2);
    }

    #[test]
    fn a_delta_of_another_session_is_not_applied_and_acknowledges_nothing() {
        let b = batch("s2", 3, vec![delta(1, &[1], &[])]);
        let plan = plan_batch(&state("s1", 9, 0), None, &b, &times(&b));
        assert!(plan.steps.is_empty());
        assert_eq!((plan.ack.acked, plan.ack.resync), (0, true));
        assert_eq!(
            plan.state,
            state("s1", 9, 3),
            "the stored session stays; the drop is counted"
        );
        // A heartbeat of an unknown session asks for a snapshot too.
        let heartbeat = batch("s2", 0, Vec::new());
        let plan = plan_batch(&SessionState::default(), None, &heartbeat, &[]);
        assert_eq!((plan.ack.acked, plan.ack.resync), (0, true));
    }

    #[test]
    fn a_snapshot_in_parts_is_staged_then_reconciled_whole_with_the_last_parts_facts() {
        let b = batch(
            "s1",
            0,
            vec![part(1, 0, 3, &[1, 2]), part(2, 1, 3, &[3]), part(3, 2, 3, &[4])],
        );
        let plan = plan_batch(&SessionState::default(), None, &b, &times(&b));
        assert_eq!(
            shape(&plan),
            [
                ("clear", 0, 0),
                ("stage", 2, 0),
                ("stage", 101, 0),
                ("reconcile-staged", 1, at(3))
            ]
        );
        assert_eq!(plan.facts.map(|f| f.agent_version.as_str()), Some("parts"));
        assert_eq!((plan.ack.acked, plan.ack.resync), (3, false));

        // Across batches: the store's staged parts are continued.
        let first = batch("s1", 0, vec![part(1, 0, 3, &[1, 2])]);
        let plan = plan_batch(&SessionState::default(), None, &first, &times(&first));
        assert_eq!((plan.ack.acked, plan.ack.resync), (1, false));
        let staged = Staged {
            session: "s1".into(),
            parts: 1,
            last_seq: 1,
        };
        let rest = batch("s1", 0, vec![part(2, 1, 3, &[3]), part(3, 2, 3, &[4])]);
        let plan = plan_batch(&plan.state, Some(staged.clone()), &rest, &times(&rest));
        assert_eq!(shape(&plan), [("stage", 101, 0), ("reconcile-staged", 1, at(3))]);

        // A part that does not follow what is kept: nothing of it, a resync.
        for (kept, report) in [
            (None, part(2, 1, 3, &[3])),
            (Some(staged.clone()), part(2, 2, 3, &[3])),
            (
                Some(Staged {
                    last_seq: 0,
                    ..staged.clone()
                }),
                part(2, 1, 3, &[3]),
            ),
            (
                Some(Staged {
                    session: "s0".into(),
                    ..staged
                }),
                part(2, 1, 3, &[3]),
            ),
        ] {
            let b = batch("s1", 0, vec![report]);
            let plan = plan_batch(&state("s1", 1, 0), kept, &b, &times(&b));
            assert!(plan.steps.is_empty(), "{:?}", plan.steps);
            assert_eq!((plan.ack.acked, plan.ack.resync), (1, true));
        }
    }

    #[test]
    fn staged_parts_are_continued_only_when_they_are_parts_0_to_n_of_one_session_in_seq_order() {
        assert_eq!(Staged::from_rows([]), None);
        assert_eq!(
            Staged::from_rows([("s", 0, 7), ("s", 1, 8), ("s", 2, 9)]),
            Some(Staged {
                session: "s".into(),
                parts: 3,
                last_seq: 9
            })
        );
        assert_eq!(
            Staged::from_rows([("s", 0, u64::MAX - 1), ("s", 1, u64::MAX)]).map(|s| s.last_seq),
            Some(u64::MAX),
            "seqs near 2^64 are plain numbers here"
        );
        for rows in [
            vec![("s", 1, 7)],
            vec![("s", 0, 7), ("s", 2, 8)],
            vec![("s", 0, 7), ("s", 1, 9)],
            vec![("s", 0, 7), ("t", 1, 8)],
            vec![("s", 0, u64::MAX), ("s", 1, 0)],
        ] {
            assert_eq!(Staged::from_rows(rows.clone()), None, "{rows:?}");
        }
    }

    #[test]
    fn a_dropped_count_near_the_top_saturates() {
        let b = batch("s1", u64::MAX, vec![delta(2, &[1], &[])]);
        let plan = plan_batch(&state("s1", 1, 5), None, &b, &times(&b));
        assert_eq!(plan.state.dropped, u64::MAX);
    }

    #[test]
    fn reconcile_keeps_what_is_open_closes_what_is_gone_and_opens_what_is_new() {
        // Open: a (id 1), b (id 2), and c twice (ids 3 and 4, 4 opened first).
        let open = [("a", 1, 10), ("b", 2, 10), ("c", 3, 30), ("c", 4, 20)];
        let r = reconcile(open, ["a", "c", "d", "d"]);
        assert_eq!(r.open, ["d"], "a repeated key opens once");
        let mut close = r.close;
        close.sort();
        assert_eq!(close, [2, 3], "b is gone; of c's duplicates the earliest opened stays");
        let nothing = reconcile(open, Vec::<&str>::new());
        assert_eq!(nothing.open, Vec::<&str>::new());
        assert_eq!(nothing.close.len(), 4);
        let same = reconcile([("a", 1, 10)], ["a"]);
        assert!(
            same.open.is_empty() && same.close.is_empty(),
            "a restart with the same listeners changes nothing"
        );
    }

    #[test]
    fn a_close_is_never_dated_before_its_open() {
        assert_eq!(close_time(100, 50), 100);
        assert_eq!(close_time(100, 150), 150);
        assert_eq!(close_time(i64::MIN, i64::MIN), i64::MIN);
    }

    #[test]
    fn a_host_is_silent_after_three_of_its_intervals_or_three_default_ones() {
        assert_eq!(status(29_999, 0, 10_000, 0), HostStatus::Up);
        assert_eq!(status(30_000, 0, 10_000, 0), HostStatus::Silent);
        assert_eq!(
            status(30_000, 0, 0, 0),
            HostStatus::Silent,
            "judged by 10 s until it says"
        );
        assert_eq!(status(29_999, 0, 0, 0), HostStatus::Up);
        assert_eq!(status(i64::MAX, i64::MIN, u64::MAX, 0), HostStatus::Up, "no overflow");
        assert_eq!(
            status(0, 100, 10_000, 0),
            HostStatus::Up,
            "heard from in the future: up"
        );
    }

    #[test]
    fn a_store_whose_last_seen_lags_judges_silence_by_three_lags_when_longer_than_three_intervals() {
        assert_eq!(
            status(30_000, 0, 10_000, 5_000),
            HostStatus::Silent,
            "a lag shorter than the interval changes nothing"
        );
        // A 1 s agent seen through a store 5 s behind: 3 s of silence may be the lag alone.
        assert_eq!(status(14_999, 0, 1_000, 5_000), HostStatus::Up);
        assert_eq!(status(15_000, 0, 1_000, 5_000), HostStatus::Silent);
        assert_eq!(status(i64::MAX, i64::MIN, 1, u64::MAX), HostStatus::Up, "no overflow");
    }
}
