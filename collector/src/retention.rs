//! Retention: how long history is kept, and what has expired at a given time.
//!
//! The rules are plain functions over values: [`plan`] turns `now` and the
//! configured lifetimes ([`Retention`], `[retention]` in the config) into a
//! [`PrunePlan`] of cutoffs; a store only carries a plan out
//! ([`crate::store::Maintenance::prune`], run by [`crate::pruner`]), it
//! decides nothing.
//!
//! - **History**: an interval closed before `now - history` is expired. An
//!   open interval never is, however long ago it opened (it is what listens
//!   now). A program (a process identity, stored once) that no interval names
//!   any more goes with the last interval that named it.
//! - **Alerts**: a resolved alert whose `resolved_at` is before
//!   `now - alerts` is expired, with its events in the outbox, unless one of
//!   its events is still to be delivered by a sink that has a place in the
//!   outbox: such an alert is kept (and counted as held) until every sink is
//!   done with its events. Open and acknowledged alerts never expire.
//! - **Peers**: a point of a listener's peers time series dated before
//!   `now - history` is expired, whatever listens now (a point is a past
//!   moment's count, not what is open).
//! - **Baseline log**: kept forever unless `baseline_log` is set; then a
//!   change made before `now - baseline_log` is expired, except the latest
//!   change of each baseline name (who applied what is in force, or removed it).
//!
//! A lifetime under one day is refused ([`check`]): it would delete history
//! faster than an operator notices a problem. Tests may go below with the
//! hidden environment variable [`TEST_FLOOR_ENV`].

use std::time::Duration;

use jiff::Timestamp;

/// How long closed intervals are kept unless `[retention] history` says otherwise.
pub const DEFAULT_HISTORY: Duration = Duration::from_secs(400 * DAY_SECS);

/// How long resolved alerts (and their outbox events) are kept unless `[retention] alerts` says otherwise.
pub const DEFAULT_ALERTS: Duration = Duration::from_secs(180 * DAY_SECS);

/// The shortest lifetime a configuration may set.
pub const MIN_LIFETIME: Duration = Duration::from_secs(DAY_SECS);

/// Environment variable, for tests only, holding a shorter floor than
/// [`MIN_LIFETIME`] (a duration such as `1s`), so that a test can expire
/// history in seconds. Not documented for operators.
pub const TEST_FLOOR_ENV: &str = "PORTWATCH_TEST_RETENTION_FLOOR";

const DAY_SECS: u64 = 86_400;

/// How long each kind of record is kept; `None` is forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Closed listener intervals, by their `closed_at`.
    pub history: Option<Duration>,
    /// Resolved alerts and their outbox events, by `resolved_at`.
    pub alerts: Option<Duration>,
    /// Baseline changes, by when they were made.
    pub baseline_log: Option<Duration>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            history: Some(DEFAULT_HISTORY),
            alerts: Some(DEFAULT_ALERTS),
            baseline_log: None,
        }
    }
}

/// What is expired at one moment: the cutoffs a store prunes by. A record
/// dated strictly before its cutoff is expired; `None` keeps everything of
/// that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrunePlan {
    /// The moment the plan was made for.
    pub now: Timestamp,
    /// Intervals closed before this are expired (open ones never are).
    pub intervals_closed_before: Option<Timestamp>,
    /// Alerts resolved before this are expired, with their events, once
    /// every sink is done with those events.
    pub alerts_resolved_before: Option<Timestamp>,
    /// Baseline log entries made before this are expired, but each name's latest.
    pub baseline_log_before: Option<Timestamp>,
    /// Points of listeners' peers time series dated before this are
    /// expired (the history's cutoff: peers are kept as long as history).
    pub peer_points_before: Option<Timestamp>,
}

impl PrunePlan {
    /// Whether the plan removes nothing whatever the data.
    pub fn keeps_everything(&self) -> bool {
        self.intervals_closed_before.is_none()
            && self.alerts_resolved_before.is_none()
            && self.baseline_log_before.is_none()
            && self.peer_points_before.is_none()
    }
}

/// The plan of what is expired at `now` under `retention`.
pub fn plan(now: Timestamp, retention: &Retention) -> PrunePlan {
    let cutoff = |lifetime: Option<Duration>| lifetime.map(|d| portwatch_model::time::before(now, d));
    PrunePlan {
        now,
        intervals_closed_before: cutoff(retention.history),
        alerts_resolved_before: cutoff(retention.alerts),
        baseline_log_before: cutoff(retention.baseline_log),
        peer_points_before: cutoff(retention.history),
    }
}

/// The start of the retained history at `now`: history before it may be
/// gone (`None`: history is kept forever).
pub fn history_kept_since(now: Timestamp, retention: &Retention) -> Option<Timestamp> {
    plan(now, retention).intervals_closed_before
}

/// Whether a question about the moment `at`, asked at `now`, lies before
/// the retained history: `Some(start)` of the retained window if it does
/// (the listeners that were open then and have closed since may be gone),
/// `None` if the answer is whole.
pub fn before_retention(at: Timestamp, now: Timestamp, retention: &Retention) -> Option<Timestamp> {
    history_kept_since(now, retention).filter(|&start| at < start)
}

/// The shortest lifetime allowed: [`MIN_LIFETIME`], or the value of
/// [`TEST_FLOOR_ENV`] when it is set to a shorter valid duration.
pub fn floor() -> Duration {
    floor_from(std::env::var(TEST_FLOOR_ENV).ok().as_deref())
}

/// [`floor`] given the environment variable's value.
fn floor_from(value: Option<&str>) -> Duration {
    value
        .and_then(|v| humantime::parse_duration(v.trim()).ok())
        .map_or(MIN_LIFETIME, |d| d.min(MIN_LIFETIME))
}

/// Refuses a lifetime shorter than `floor`, naming the key.
pub fn check(retention: &Retention, floor: Duration) -> Result<(), String> {
    let keys = [
        ("history", retention.history),
        ("alerts", retention.alerts),
        ("baseline_log", retention.baseline_log),
    ];
    for (key, lifetime) in keys {
        if let Some(d) = lifetime.filter(|&d| d < floor) {
            return Err(format!(
                "[retention] {key}: {} is shorter than {}, the least it takes (history would be deleted before \
                 anyone could look at it); write a number of days like \"30d\", or \"forever\"",
                humantime::format_duration(d),
                humantime::format_duration(floor)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const DAY: Duration = Duration::from_secs(DAY_SECS);

    #[test]
    fn the_plan_cuts_each_kind_at_now_minus_its_lifetime_and_forever_cuts_nothing() {
        let now = t("2026-12-01T00:00:00Z");
        let plan = plan(now, &Retention::default());
        assert_eq!(plan.now, now);
        assert_eq!(
            plan.intervals_closed_before,
            Some(t("2025-10-27T00:00:00Z")),
            "400 days"
        );
        assert_eq!(plan.alerts_resolved_before, Some(t("2026-06-04T00:00:00Z")), "180 days");
        assert_eq!(
            plan.peer_points_before, plan.intervals_closed_before,
            "peers are kept as long as history"
        );
        assert_eq!(
            plan.baseline_log_before, None,
            "the baseline log is kept forever by default"
        );
        assert!(!plan.keeps_everything());
        let forever = Retention {
            history: None,
            alerts: None,
            baseline_log: None,
        };
        assert!(super::plan(now, &forever).keeps_everything());
        let month = Retention {
            history: Some(30 * DAY),
            alerts: None,
            baseline_log: Some(DAY),
        };
        let plan = super::plan(now, &month);
        assert_eq!(plan.intervals_closed_before, Some(t("2026-11-01T00:00:00Z")));
        assert_eq!(plan.baseline_log_before, Some(t("2026-11-30T00:00:00Z")));
    }

    #[test]
    fn a_cutoff_before_the_epoch_or_time_itself_is_clamped_not_a_panic() {
        let plan = plan(t("1970-01-02T00:00:00Z"), &Retention::default());
        assert!(plan.intervals_closed_before.unwrap() < t("1970-01-02T00:00:00Z"));
        let _ = super::plan(Timestamp::MIN, &Retention::default());
    }

    #[test]
    fn a_moment_before_the_retained_window_is_told_apart_from_one_inside_it() {
        let now = t("2026-12-01T00:00:00Z");
        let month = Retention {
            history: Some(30 * DAY),
            ..Retention::default()
        };
        let start = t("2026-11-01T00:00:00Z");
        assert_eq!(before_retention(t("2026-10-31T23:59:59Z"), now, &month), Some(start));
        assert_eq!(
            before_retention(start, now, &month),
            None,
            "the window's first instant is kept"
        );
        assert_eq!(before_retention(t("2026-11-20T00:00:00Z"), now, &month), None);
        let forever = Retention { history: None, ..month };
        assert_eq!(before_retention(t("1990-01-01T00:00:00Z"), now, &forever), None);
        assert_eq!(history_kept_since(now, &month), Some(start));
    }

    #[test]
    fn a_lifetime_under_a_day_is_refused_naming_its_key_unless_a_test_lowers_the_floor() {
        assert_eq!(check(&Retention::default(), floor_from(None)), Ok(()));
        let short = Retention {
            alerts: Some(Duration::from_secs(3600)),
            ..Retention::default()
        };
        let e = check(&short, floor_from(None)).unwrap_err();
        assert!(
            e.contains("[retention] alerts") && e.contains("1h") && e.contains("1day"),
            "{e}"
        );
        let e = check(
            &Retention {
                baseline_log: Some(Duration::from_secs(60)),
                ..Retention::default()
            },
            MIN_LIFETIME,
        )
        .unwrap_err();
        assert!(e.contains("[retention] baseline_log"), "{e}");
        assert_eq!(check(&short, floor_from(Some("1s"))), Ok(()));
        assert_eq!(floor_from(Some("2s")), Duration::from_secs(2));
        assert_eq!(floor_from(Some("90d")), MIN_LIFETIME, "the floor is never raised");
        assert_eq!(floor_from(Some("soon")), MIN_LIFETIME, "a bad value keeps the floor");
    }
}
