//! An alert's life and a sink's place in the outbox, as plain rules over
//! plain values. A store reads the state, asks these rules, and writes what
//! they answer; it decides nothing (see [`crate::store::Alerts`] and
//! [`crate::store::Outbox`]).
//!
//! - [`cap`]: which findings get an alert of their own, what resolves, and
//!   the summary of the rest (at most so many open alerts per host and kind).
//! - [`acknowledge`]: only an open alert is acknowledged, once.
//! - [`resolve`]: an alert resolves when its condition clears.
//! - [`first_place`] and [`advance`]: where a sink starts in the outbox,
//!   and how its place moves.

pub mod cap;

use jiff::Timestamp;
use portwatch_model::{AlertRow, AlertState};

/// How far a sink has come in the alert outbox: it is done with (delivered,
/// refused for good, or did not want) every event up to `cursor`, and with
/// the events `done`, all after it. Every other event is still to deliver.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkProgress {
    /// Every event up to this one is done with.
    pub cursor: i64,
    /// Events after the cursor that are done with too, ascending.
    pub done: Vec<i64>,
}

/// `alert` acknowledged by `actor` at `at`, saying `comment`; `None` when
/// it is not open (acknowledged already, or resolved): an acknowledgement
/// is never overwritten, and a resolved alert stays resolved.
pub fn acknowledge(alert: &AlertRow, actor: &str, comment: &str, at: Timestamp) -> Option<AlertRow> {
    (alert.state == AlertState::Open).then(|| AlertRow {
        state: AlertState::Acknowledged,
        acked_at: Some(at),
        acked_by: Some(actor.to_owned()),
        ack_comment: Some(comment.to_owned()),
        ..alert.clone()
    })
}

/// `alert` resolved at `at`: its condition cleared (see [`cap::plan`]).
/// Resolving a resolved alert keeps the first time.
pub fn resolve(alert: AlertRow, at: Timestamp) -> AlertRow {
    if alert.state == AlertState::Resolved {
        return alert;
    }
    AlertRow {
        state: AlertState::Resolved,
        resolved_at: Some(at),
        ..alert
    }
}

/// Where a sink that has no place in the outbox yet starts, `newest` being
/// the newest event there: after it, so that a sink added to a running
/// collector hears of changes from now on and is not flooded with history.
pub fn first_place(newest: Option<i64>) -> SinkProgress {
    SinkProgress {
        cursor: newest.unwrap_or(0).max(0),
        done: Vec::new(),
    }
}

/// A sink's place after it says it is done with every event up to `cursor`
/// and with the events `done` after it, `stored` being its place before:
/// the cursor only moves forward, and what is done at or before it is
/// forgotten; the rest is kept, ascending, each once.
pub fn advance(stored: &SinkProgress, cursor: i64, done: &[i64]) -> SinkProgress {
    let cursor = stored.cursor.max(cursor);
    let mut after: Vec<i64> = stored
        .done
        .iter()
        .chain(done)
        .copied()
        .filter(|&id| id > cursor)
        .collect();
    after.sort_unstable();
    after.dedup();
    SinkProgress { cursor, done: after }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portwatch_model::{Finding, Kind, Severity};

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn alert(state: AlertState) -> AlertRow {
        let finding = Finding::new(Kind::UnexpectedListener, "web-3", "k".to_owned());
        AlertRow {
            id: 7,
            key: "k".into(),
            kind: Kind::UnexpectedListener,
            severity: Severity::Warning,
            host: "web-3".into(),
            message: "m".into(),
            state,
            opened_at: t(10),
            acked_at: None,
            acked_by: None,
            ack_comment: None,
            resolved_at: None,
            finding,
        }
    }

    #[test]
    fn only_an_open_alert_is_acknowledged_and_an_acknowledgement_is_never_overwritten() {
        let acked = acknowledge(&alert(AlertState::Open), "alice", "on it", t(20)).unwrap();
        assert_eq!(acked.state, AlertState::Acknowledged);
        assert_eq!(
            (acked.acked_at, acked.acked_by.as_deref(), acked.ack_comment.as_deref()),
            (Some(t(20)), Some("alice"), Some("on it"))
        );
        assert_eq!((acked.opened_at, acked.resolved_at), (t(10), None));
        assert_eq!(
            acknowledge(&acked, "bob", "me too", t(30)),
            None,
            "the first acknowledgement stays"
        );
        let resolved = resolve(alert(AlertState::Open), t(40));
        assert_eq!(acknowledge(&resolved, "bob", "late", t(50)), None);
    }

    #[test]
    fn an_alert_resolves_once_and_keeps_its_acknowledgement() {
        let acked = acknowledge(&alert(AlertState::Open), "alice", "on it", t(20)).unwrap();
        let resolved = resolve(acked, t(30));
        assert_eq!(resolved.state, AlertState::Resolved);
        assert_eq!(resolved.resolved_at, Some(t(30)));
        assert_eq!(resolved.acked_by.as_deref(), Some("alice"));
        assert_eq!(resolve(resolved.clone(), t(99)), resolved, "the first time stays");
    }

    #[test]
    fn a_new_sink_starts_after_the_newest_event() {
        assert_eq!(first_place(None), SinkProgress::default());
        assert_eq!(
            first_place(Some(41)),
            SinkProgress {
                cursor: 41,
                done: vec![]
            }
        );
    }

    #[test]
    fn a_sinks_place_only_moves_forward_and_forgets_what_it_passed() {
        let start = SinkProgress {
            cursor: 2,
            done: vec![4, 5],
        };
        assert_eq!(
            advance(&start, 4, &[6, 6, 1]),
            SinkProgress {
                cursor: 4,
                done: vec![5, 6]
            }
        );
        assert_eq!(advance(&start, 1, &[]), start, "never back");
        assert_eq!(
            advance(&start, 10, &[7]),
            SinkProgress {
                cursor: 10,
                done: vec![]
            }
        );
    }
}
