//! Clocks: when a change an agent reports is taken to have happened, and how
//! far the host's clock is off the collector's.
//!
//! History is dated by the agents' clocks (`observed_at`): a report replayed
//! from a spool after an outage keeps the time it was observed. An agent's
//! clock can be wrong, though, and a wrong time must not hide or rewrite
//! history. [`effective_times`] is the rule, a plain function of the batch,
//! the time it was received (the collector's clock, which is trusted), what
//! the store kept of the host's clock, and the [`Limits`]:
//!
//! 1. **Not in the future.** A time more than `tolerance` after `received_at`
//!    is taken as `received_at` (a report cannot have been observed after it
//!    arrived). A time less far ahead is kept as it is: small skews keep the
//!    order and spacing of the agent's reports. (A listener dated a year
//!    ahead would be invisible to every question about "now" for a year.)
//! 2. **Not in the far past.** A time more than `max_backlog` before
//!    `received_at` is taken as `received_at - max_backlog`. Within that
//!    window an old time is a legitimate backlog: an agent's spool replays
//!    reports observed hours or days ago, after an outage. (This stops an
//!    agent from dating a port's first sighting to 1970, which would hide it
//!    from the fleet-wide "new ports" trend.)
//! 3. **Never backwards, per host.** Each time is at least that of the
//!    host's previous stored report (`HostClock::last_at`), in the same batch
//!    or an earlier one: a clock stepping back cannot close an interval
//!    before it opened, open one inside a span the host said it was closed,
//!    or date a change before one already stored. The bound holds across
//!    sessions too: an agent that restarts while the collector is away
//!    replays the earlier run's reports first, in their own session, so on a
//!    sane clock a new session never starts before the last stored report;
//!    one that does (a host booting with its clock behind, before time
//!    sync) would otherwise reconcile its snapshot into the past. The bound
//!    is itself capped at `received_at + tolerance`: if the collector's own
//!    clock stepped back, a host's history is not held in the future.
//!    Reports the store will skip (already stored: this session, `seq` at or
//!    below the last stored) do not move the bound.
//!
//! The rules are applied in that order: window first (1, 2), then the bound
//! (3). A time within the window and after the bound is kept exactly.
//!
//! **Skew** is the host's clock minus the collector's, measured on a batch's
//! `alive_at` (the agent stamps it when it sends, with or without reports):
//! `alive_at - received_at`, in milliseconds, which includes the request's
//! transit (a correct clock measures a few milliseconds behind). Report
//! times are not used when `alive_at` is there: a replayed report is old
//! because it waited in a spool (backlog), not because the clock is wrong.
//! Without `alive_at` (a batch of a client that does not stamp it) only a
//! report dated after `received_at` measures anything (the latest such one:
//! the clock is at least that far ahead); otherwise the batch measures
//! nothing and the previous measurement stands. A skew beyond `tolerance`
//! either way ([`beyond_tolerance`]) is a `clock-skew` finding and shows in
//! `portwatch hosts`.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use portwatch_common::wire::Batch;

/// Default [`Limits::tolerance`]: 5 minutes.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Most [`Limits::tolerance`] takes: a longer one would let a host date its
/// changes that far after "now".
pub const MAX_TOLERANCE: Duration = Duration::from_secs(3600);

/// Default [`Limits::max_backlog`]: 30 days (an agent's spool replays a week
/// of an outage with room to spare).
pub const DEFAULT_MAX_BACKLOG: Duration = Duration::from_secs(30 * 86_400);

/// How far the collector trusts an agent's clock (`[clock]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How far ahead of the collector a time may be and still be kept, and
    /// how far off either way a host's clock may be before it is reported.
    pub tolerance: Duration,
    /// How long before its arrival a report may have been observed and keep
    /// its time.
    pub max_backlog: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            tolerance: DEFAULT_TOLERANCE,
            max_backlog: DEFAULT_MAX_BACKLOG,
        }
    }
}

/// What the store kept of a host's clock and session, before a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostClock<'a> {
    /// The session whose reports are stored.
    pub session: Option<&'a str>,
    /// The last stored `seq` of that session.
    pub last_seq: u64,
    /// The effective time of the host's last stored report, of any session
    /// (`None` before the first).
    pub last_at: Option<Timestamp>,
}

/// The effective times of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Times {
    /// One per report, in the batch's order; never decreasing over the
    /// reports that are not already stored (those the store skips).
    pub reports: Vec<Timestamp>,
    /// The heartbeat's time under the same rules, if the batch has one (not
    /// a report: it never moves the host's bound).
    pub alive_at: Option<Timestamp>,
    /// The host clock's offset from the collector's in milliseconds
    /// (positive: ahead), if this batch measures it.
    pub skew_ms: Option<i64>,
}

/// The effective time of each report of `batch` (and of its `alive_at`),
/// received at `received_at` from a host whose clock the store left as
/// `host`, and the skew the batch measures (see the module docs).
pub fn effective_times(received_at: Timestamp, host: &HostClock<'_>, limits: &Limits, batch: &Batch) -> Times {
    let latest = plus(received_at, limits.tolerance);
    let earliest = minus(received_at, limits.max_backlog);
    let window = |t: Timestamp| {
        if t > latest {
            received_at
        } else if t < earliest {
            earliest
        } else {
            t
        }
    };
    let mut bound = host.last_at.map(|t| t.min(latest));
    let resent = |seq: u64| host.session == Some(batch.session.as_str()) && seq <= host.last_seq;
    let mut reports = Vec::with_capacity(batch.reports.len());
    for report in &batch.reports {
        let at = at_least(window(report.observed_at), bound);
        if !resent(report.seq) {
            bound = Some(at);
        }
        reports.push(at);
    }
    let skew_ms = match batch.alive_at {
        Some(alive) => Some(millis_between(received_at, alive)),
        None => batch
            .reports
            .iter()
            .map(|r| r.observed_at)
            .max()
            .filter(|&t| t > received_at)
            .map(|t| millis_between(received_at, t)),
    };
    Times {
        reports,
        alive_at: batch.alive_at.map(|t| at_least(window(t), bound)),
        skew_ms,
    }
}

/// Whether a skew of `skew_ms` (either way) is more than `tolerance`.
pub fn beyond_tolerance(skew_ms: i64, tolerance: Duration) -> bool {
    u128::from(skew_ms.unsigned_abs()) > tolerance.as_millis()
}

fn at_least(t: Timestamp, bound: Option<Timestamp>) -> Timestamp {
    bound.map_or(t, |b| t.max(b))
}

/// `later - earlier` in milliseconds.
fn millis_between(earlier: Timestamp, later: Timestamp) -> i64 {
    later.as_millisecond().saturating_sub(earlier.as_millisecond())
}

fn plus(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

fn minus(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_sub(d).ok())
        .unwrap_or(Timestamp::MIN)
}

#[cfg(test)]
mod tests {
    use portwatch_common::wire::{Report, ReportBody, PROTOCOL_VERSION};

    use super::*;

    const DAY: i64 = 86_400;
    const YEAR: i64 = 365 * DAY;

    fn ts(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    /// A batch of session `s` with a report `(seq, observed at ts(second))` each.
    fn batch(reports: &[(u64, i64)], alive_at: Option<i64>) -> Batch {
        let batch = Batch {
            version: PROTOCOL_VERSION,
            host: "web-3".into(),
            session: "s".into(),
            dropped: 0,
            peers: Vec::new(),
            peers_dropped: 0,
            alive_at: alive_at.map(ts),
            reports: reports
                .iter()
                .map(|&(seq, at)| Report {
                    seq,
                    observed_at: ts(at),
                    body: ReportBody::Delta {
                        opened: Vec::new(),
                        closed: Vec::new(),
                    },
                })
                .collect(),
        };
        batch.validate().unwrap();
        batch
    }

    fn host(session: Option<&str>, last_seq: u64, last_at: Option<i64>) -> HostClock<'_> {
        HostClock {
            session,
            last_seq,
            last_at: last_at.map(ts),
        }
    }

    /// The effective report times in seconds from `ts(0)`, of `batch` received at `ts(received)`.
    fn times(received: i64, host: &HostClock<'_>, batch: &Batch) -> Vec<i64> {
        effective_times(ts(received), host, &Limits::default(), batch)
            .reports
            .iter()
            .map(|t| t.as_second() - ts(0).as_second())
            .collect()
    }

    #[test]
    fn times_within_the_window_and_after_the_bound_are_kept_exactly() {
        let b = batch(&[(1, -7 * DAY), (2, -60), (3, 0), (4, 299)], Some(0));
        assert_eq!(times(0, &HostClock::default(), &b), vec![-7 * DAY, -60, 0, 299]);
    }

    #[test]
    fn a_time_beyond_the_tolerance_in_the_future_is_taken_as_received() {
        let b = batch(&[(1, YEAR), (2, 301)], None);
        assert_eq!(times(0, &HostClock::default(), &b), vec![0, 0]);
        // 5 minutes ahead exactly is within the tolerance.
        assert_eq!(times(0, &HostClock::default(), &batch(&[(1, 300)], None)), vec![300]);
    }

    #[test]
    fn a_time_before_the_backlog_window_is_taken_as_its_start() {
        let epoch = -1_700_000_000; // 1970-01-01
        let b = batch(&[(1, epoch), (2, -31 * DAY), (3, -29 * DAY)], Some(0));
        assert_eq!(
            times(0, &HostClock::default(), &b),
            vec![-30 * DAY, -30 * DAY, -29 * DAY]
        );
    }

    #[test]
    fn times_never_go_backwards_within_a_batch() {
        let b = batch(&[(1, 100), (2, 50), (3, 120), (4, 110)], None);
        assert_eq!(times(200, &HostClock::default(), &b), vec![100, 100, 120, 120]);
    }

    #[test]
    fn times_never_go_backwards_across_batches_of_a_session() {
        let last = host(Some("s"), 3, Some(100));
        assert_eq!(times(200, &last, &batch(&[(4, 40), (5, 150)], None)), vec![100, 150]);
        // The alive_at of a heartbeat follows the same rules.
        let t = effective_times(ts(200), &last, &Limits::default(), &batch(&[], Some(40)));
        assert_eq!(t.alive_at, Some(ts(100)));
    }

    #[test]
    fn a_new_session_does_not_start_before_the_hosts_last_report() {
        // A restart replays the earlier run's reports first: a new session
        // dated before them is a clock that stepped back.
        let last = host(Some("old"), 9, Some(100));
        assert_eq!(times(200, &last, &batch(&[(1, 50), (2, 60)], None)), vec![100, 100]);
    }

    #[test]
    fn reports_already_stored_do_not_move_the_bound() {
        // Seq 2 was stored before (it was then dated when received, at 100);
        // resent, its raw time would now be within the tolerance.
        let last = host(Some("s"), 2, Some(100));
        let b = batch(&[(2, 400), (3, 200)], None);
        assert_eq!(times(350, &last, &b), vec![400, 200]);
    }

    #[test]
    fn the_bound_is_capped_where_the_collector_clock_stepped_back() {
        // The bound was set when the collector's clock was a day ahead.
        let last = host(Some("s"), 1, Some(DAY));
        assert_eq!(times(0, &last, &batch(&[(2, 10)], None)), vec![300]);
    }

    #[test]
    fn a_year_ahead_snapshot_then_a_correct_one_are_dated_when_received_then_as_observed() {
        let first = effective_times(
            ts(0),
            &HostClock::default(),
            &Limits::default(),
            &batch(&[(1, YEAR)], Some(YEAR)),
        );
        assert_eq!((first.reports.clone(), first.skew_ms), (vec![ts(0)], Some(YEAR * 1000)));
        let after = host(Some("s"), 1, Some(0));
        assert_eq!(times(10, &after, &batch(&[(2, 10)], Some(10))), vec![10]);
    }

    #[test]
    fn skew_is_measured_from_the_heartbeat_either_way() {
        let limits = Limits::default();
        let measure = |alive: i64| effective_times(ts(0), &HostClock::default(), &limits, &batch(&[], Some(alive)));
        assert_eq!(measure(7200).skew_ms, Some(7_200_000));
        assert_eq!(measure(-45).skew_ms, Some(-45_000));
        assert_eq!(measure(0).skew_ms, Some(0));
    }

    #[test]
    fn a_long_backlog_replay_is_not_skew() {
        // A week of spooled reports replayed after an outage, sent now.
        let b = batch(&[(1, -7 * DAY), (2, -6 * DAY), (3, -DAY)], Some(0));
        let t = effective_times(ts(0), &HostClock::default(), &Limits::default(), &b);
        assert_eq!(t.skew_ms, Some(0));
        assert_eq!(t.reports, vec![ts(-7 * DAY), ts(-6 * DAY), ts(-DAY)]);
        // Without a heartbeat, past times measure nothing: backlog and a
        // slow clock look alike.
        let b = batch(&[(1, -7 * DAY)], None);
        let t = effective_times(ts(0), &HostClock::default(), &Limits::default(), &b);
        assert_eq!(t.skew_ms, None);
    }

    #[test]
    fn without_a_heartbeat_a_future_report_measures_the_skew() {
        let b = batch(&[(1, -10), (2, 3600)], None);
        let t = effective_times(ts(0), &HostClock::default(), &Limits::default(), &b);
        assert_eq!(t.skew_ms, Some(3_600_000));
    }

    #[test]
    fn the_limits_are_configurable() {
        let limits = Limits {
            tolerance: Duration::from_secs(1),
            max_backlog: Duration::from_secs(DAY as u64),
        };
        let b = batch(&[(1, -2 * DAY), (2, -10), (3, 2)], None);
        let t = effective_times(ts(0), &HostClock::default(), &limits, &b);
        assert_eq!(t.reports, vec![ts(-DAY), ts(-10), ts(0)]);
    }

    #[test]
    fn skew_beyond_the_tolerance_is_either_way() {
        let five_min = DEFAULT_TOLERANCE;
        assert!(!beyond_tolerance(300_000, five_min));
        assert!(beyond_tolerance(300_001, five_min));
        assert!(beyond_tolerance(-300_001, five_min));
        assert!(!beyond_tolerance(-40, five_min));
        assert!(beyond_tolerance(i64::MIN, five_min));
    }
}
