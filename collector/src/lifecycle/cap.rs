//! How many alerts one host may have open: at most `max_open` of each kind.
//!
//! What an agent reports is the agent's to choose: 20,000 listeners of a
//! risky port on 20,000 addresses, or 50,000 that keep flapping, are as many
//! findings. An alert for each would send as many events to every sink, a
//! flood that buries the other hosts' alerts and the people reading them.
//! So [`plan`] decides, host by host and kind by kind, which findings have an
//! alert of their own:
//!
//! - A finding that has an unresolved alert keeps it, while its condition
//!   holds (an alert is never resolved to make room, nor moved to another
//!   finding). When the finding has become more severe than its alert (a
//!   risky port a probe from the collector reached, where the firewall
//!   restricted it), the alert is resolved and a new one opened at the new
//!   severity, so that every sink hears of it; a finding grown less severe
//!   keeps its alert as it is.
//! - A new finding opens one while fewer than `max_open` alerts of its host
//!   and kind are unresolved: the most severe first, then by port, address
//!   and key, so that the same findings always get the same alerts.
//! - The findings left over are counted in one **summary** alert of that
//!   host and kind (its key is [`summary_key`], `KIND:HOST:overflow`): "…
//!   and 19,900 more risky-port-exposed findings on web-3 …; see portwatch
//!   drift --host web-3 --kind risky-port-exposed". It resolves when none
//!   is left over; as the alerts of the host and kind resolve, the next
//!   findings in line take their place.
//! - The summary's count is kept current in the alert itself, silently: a
//!   changed count writes no outbox event (one each evaluation would be a
//!   flood of its own), so sinks hear of a summary when it opens (with the
//!   count then) and when it resolves (with the last count).
//!
//! `portwatch drift` still lists every finding: the cap is on alerts only.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet};

use portwatch_model::AlertRow;
use portwatch_model::{Finding, Kind};

/// Default `[alerts] max_open_per_kind`: unresolved alerts of one kind on one host.
pub const DEFAULT_MAX_OPEN: usize = 100;

/// The most `[alerts] max_open_per_kind` may be.
pub const MAX_MAX_OPEN: usize = 10_000;

/// What to do to the alerts of the hosts evaluated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Findings that open an alert (summaries included), by host, kind and rank.
    pub open: Vec<Finding>,
    /// Unresolved alerts to resolve (their condition cleared, or their
    /// summary has nothing left to count), by id.
    pub resolve: Vec<i64>,
    /// Summary alerts whose count changed: the alert's id and its new
    /// finding (message and severity with it). No outbox event.
    pub update: Vec<(i64, Finding)>,
}

/// The key of the summary alert of `kind` on `host`. Host names have no
/// `:` and no finding's key ends so, so it names no other condition.
pub fn summary_key(kind: Kind, host: &str) -> String {
    format!("{}:{host}:overflow", kind.as_str())
}

/// Whether `alert` is the summary alert of its host and kind.
pub fn is_summary(alert: &AlertRow) -> bool {
    alert.key == summary_key(alert.kind, &alert.host)
}

/// The plan that brings the unresolved alerts `active` of the hosts
/// evaluated in line with their `findings`, at most `max_open` (at least 1)
/// alerts of one kind on one host, plus its summary (see the [module docs](self)).
/// Findings of kinds that do not alert are left out; a key seen twice counts once.
pub fn plan(findings: &[Finding], active: &[AlertRow], max_open: usize) -> Plan {
    let max_open = max_open.max(1);
    let by_key: HashMap<&str, &AlertRow> = active.iter().map(|a| (a.key.as_str(), a)).collect();
    let mut seen = HashSet::new();
    let mut groups: BTreeMap<(&str, Kind), Vec<&Finding>> = BTreeMap::new();
    for f in findings.iter().filter(|f| f.kind.alerts()) {
        if seen.insert(f.key.as_str()) {
            groups.entry((f.host.as_str(), f.kind)).or_default().push(f);
        }
    }

    let mut plan = Plan::default();
    let mut summaries = HashSet::new();
    let mut escalated = HashSet::new();
    for ((host, kind), group) in groups {
        let kept = group.iter().filter(|f| by_key.contains_key(f.key.as_str())).count();
        for f in &group {
            if let Some(a) = by_key.get(f.key.as_str()).filter(|a| f.severity > a.severity) {
                escalated.insert(a.id);
                plan.open.push((*f).clone());
            }
        }
        let mut new: Vec<&Finding> = group
            .into_iter()
            .filter(|f| !by_key.contains_key(f.key.as_str()))
            .collect();
        new.sort_by(|a, b| rank(a).cmp(&rank(b)));
        let left_over = new.split_off(max_open.saturating_sub(kept).min(new.len()));
        let alerted = kept + new.len();
        plan.open.extend(new.into_iter().cloned());
        if left_over.is_empty() {
            continue;
        }
        let summary = summary(kind, host, &left_over, alerted, max_open);
        match by_key.get(summary.key.as_str()) {
            None => plan.open.push(summary.clone()),
            Some(a) if a.message != summary.message || a.severity != summary.severity => {
                plan.update.push((a.id, summary.clone()));
            }
            Some(_) => {}
        }
        summaries.insert(summary.key);
    }

    plan.resolve = active
        .iter()
        .filter(|a| match is_summary(a) {
            true => !summaries.contains(&a.key),
            false => !seen.contains(a.key.as_str()) || escalated.contains(&a.id),
        })
        .map(|a| a.id)
        .collect();
    plan.resolve.sort_unstable();
    plan
}

/// Which new findings get an alert first: the most severe, then by port,
/// address and key.
fn rank(f: &Finding) -> impl Ord + '_ {
    (Reverse(f.severity), f.local_port, f.local_addr, f.proto, &f.key)
}

/// The summary of `left_over` findings of `kind` on `host`, while `alerted`
/// of them have an alert.
fn summary(kind: Kind, host: &str, left_over: &[&Finding], alerted: usize, max_open: usize) -> Finding {
    let mut f = Finding::new(kind, host, summary_key(kind, host));
    f.severity = left_over.iter().map(|f| f.severity).max().unwrap_or(f.severity);
    let n = left_over.len();
    f.more = Some(n as u64);
    let kind = kind.as_str();
    f.message = format!(
        "… and {} more {kind} finding{} on {host} without an alert of {} own ({alerted} open, at most {max_open} \
         per host and kind); see portwatch drift --host {host} --kind {kind}",
        thousands(n),
        if n == 1 { "" } else { "s" },
        if n == 1 { "its" } else { "their" },
    );
    f
}

/// `19950` as `19,950`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use portwatch_common::Proto;
    use portwatch_model::AlertState;
    use portwatch_model::Severity;

    fn risky(host: &str, i: u32) -> Finding {
        let addr = std::net::IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        Finding {
            message: format!("{host}: tcp {addr}:23 (Telnet) is reachable beyond loopback"),
            proto: Some(Proto::Tcp),
            local_addr: Some(addr),
            local_port: Some(23),
            ..Finding::new(
                Kind::RiskyPortExposed,
                host,
                format!("risky-port-exposed:{host}:tcp/23@1:{addr}"),
            )
        }
    }

    /// The unresolved alert `id` that `f` opened.
    fn alert(id: i64, f: &Finding) -> AlertRow {
        AlertRow {
            id,
            key: f.key.clone(),
            kind: f.kind,
            severity: f.severity,
            host: f.host.clone(),
            message: f.message.clone(),
            state: AlertState::Open,
            opened_at: jiff::Timestamp::UNIX_EPOCH,
            acked_at: None,
            acked_by: None,
            ack_comment: None,
            resolved_at: None,
            finding: f.clone(),
        }
    }

    /// The alerts `plan` opens, as if the store had given them ids from `first`.
    fn opened(plan: &Plan, first: i64) -> Vec<AlertRow> {
        plan.open
            .iter()
            .enumerate()
            .map(|(i, f)| alert(first + i as i64, f))
            .collect()
    }

    #[test]
    fn a_finding_grown_more_severe_reopens_its_alert_and_one_grown_less_keeps_it() {
        let mut was = Finding::new(
            Kind::RiskyPortExposed,
            "db-1",
            "risky-port-exposed:db-1:tcp/5432@1:10.0.0.5".into(),
        );
        was.severity = Severity::Warning;
        let mut other = Finding::new(
            Kind::RiskyPortExposed,
            "db-1",
            "risky-port-exposed:db-1:tcp/6379@1:0.0.0.0".into(),
        );
        other.severity = Severity::Critical;
        let active = [alert(7, &was), alert(8, &other)];
        let mut now = was.clone();
        now.severity = Severity::Critical;
        let mut calmer = other.clone();
        calmer.severity = Severity::Info;
        let plan = plan(&[now.clone(), calmer], &active, 100);
        assert_eq!(plan.resolve, [7], "{plan:?}");
        assert_eq!(plan.open, [now], "{plan:?}");
        assert!(plan.update.is_empty(), "{plan:?}");
    }

    #[test]
    fn a_flood_of_findings_opens_the_first_ones_and_one_summary_that_counts_the_rest() {
        let flood: Vec<Finding> = (0..20_000).rev().map(|i| risky("web-3", i)).collect();
        let p = plan(&flood, &[], 50);
        assert_eq!(p.open.len(), 51, "50 alerts and the summary");
        assert!(p.resolve.is_empty() && p.update.is_empty(), "{p:?}");
        // The first by address, whatever order the findings came in.
        let firsts: Vec<_> = p.open[..50].iter().map(|f| f.local_addr.unwrap()).collect();
        let expected: Vec<_> = (0..50).map(|i| risky("web-3", i).local_addr.unwrap()).collect();
        assert_eq!(firsts, expected);
        let summary = &p.open[50];
        assert_eq!(
            (summary.kind, summary.severity, summary.key.as_str(), summary.more),
            (
                Kind::RiskyPortExposed,
                Severity::Critical,
                "risky-port-exposed:web-3:overflow",
                Some(19_950)
            )
        );
        assert_eq!(
            summary.message,
            "… and 19,950 more risky-port-exposed findings on web-3 without an alert of their own (50 open, at most \
             50 per host and kind); see portwatch drift --host web-3 --kind risky-port-exposed"
        );
    }

    #[test]
    fn the_cap_is_per_host_and_kind() {
        let mut findings: Vec<Finding> = (0..10).map(|i| risky("web-3", i)).collect();
        findings.extend((0..3).map(|i| risky("web-4", i)));
        let mut flap = risky("web-3", 99);
        flap.kind = Kind::Flapping;
        flap.key = "flapping:web-3:tcp/23@1:10.0.0.99".into();
        findings.push(flap);
        let p = plan(&findings, &[], 3);
        let keys: Vec<&str> = p.open.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "risky-port-exposed:web-3:tcp/23@1:10.0.0.0",
                "risky-port-exposed:web-3:tcp/23@1:10.0.0.1",
                "risky-port-exposed:web-3:tcp/23@1:10.0.0.2",
                "risky-port-exposed:web-3:overflow",
                "flapping:web-3:tcp/23@1:10.0.0.99",
                "risky-port-exposed:web-4:tcp/23@1:10.0.0.0",
                "risky-port-exposed:web-4:tcp/23@1:10.0.0.1",
                "risky-port-exposed:web-4:tcp/23@1:10.0.0.2",
            ]
        );
        assert_eq!(p.open[3].more, Some(7));
    }

    #[test]
    fn a_finding_with_an_alert_keeps_it_and_a_freed_place_goes_to_the_next_in_line() {
        // Alerts on .5 to .9; the findings now are .0 to .9: those five keep
        // their alerts, however the new ones rank.
        let findings: Vec<Finding> = (0..10).map(|i| risky("web-3", i)).collect();
        let active: Vec<AlertRow> = (5..10).map(|i| alert(i64::from(i), &findings[i as usize])).collect();
        let p = plan(&findings, &active, 7);
        let keys: Vec<String> = p.open.iter().map(|f| f.key.clone()).collect();
        assert_eq!(
            keys,
            [
                "risky-port-exposed:web-3:tcp/23@1:10.0.0.0",
                "risky-port-exposed:web-3:tcp/23@1:10.0.0.1",
                "risky-port-exposed:web-3:overflow",
            ]
        );
        assert_eq!(p.open[2].more, Some(3));
        assert!(p.resolve.is_empty(), "{p:?}");

        // .9 clears: its alert resolves, and .2 takes its place; the summary
        // counts one less, in place.
        let mut active = active;
        active.extend(opened(&p, 100));
        let now: Vec<Finding> = findings[..9].to_vec();
        let p = plan(&now, &active, 7);
        assert_eq!(p.resolve, vec![9]);
        assert_eq!(
            p.open.iter().map(|f| f.key.as_str()).collect::<Vec<_>>(),
            [now[2].key.as_str()]
        );
        let [(id, summary)] = &p.update[..] else {
            panic!("{p:?}")
        };
        assert_eq!((*id, summary.more), (102, Some(2)));
        assert!(summary.message.starts_with("… and 2 more "), "{}", summary.message);
    }

    #[test]
    fn an_unchanged_count_changes_nothing_and_none_left_over_resolves_the_summary() {
        let findings: Vec<Finding> = (0..5).map(|i| risky("web-3", i)).collect();
        let first = plan(&findings, &[], 2);
        let active = opened(&first, 1);
        assert_eq!(
            plan(&findings, &active, 2),
            Plan::default(),
            "the same findings again: nothing to do"
        );
        // Three clear; the two with alerts remain: nothing left over.
        let p = plan(&findings[..2], &active, 2);
        assert_eq!((p.open.len(), p.update.len()), (0, 0), "{p:?}");
        assert_eq!(p.resolve, vec![3], "the summary (id 3) resolves");
        // Everything clears: every alert resolves, the summary with them.
        assert_eq!(plan(&[], &active, 2).resolve, vec![1, 2, 3]);
    }

    #[test]
    fn more_alerts_than_the_cap_are_kept_not_resolved_to_make_room() {
        // Opened before the cap was lowered (or by a collector without one).
        let findings: Vec<Finding> = (0..10).map(|i| risky("web-3", i)).collect();
        let active: Vec<AlertRow> = findings[..8].iter().zip(1..).map(|(f, id)| alert(id, f)).collect();
        let p = plan(&findings, &active, 3);
        assert!(p.resolve.is_empty(), "{p:?}");
        assert_eq!(p.open.len(), 1, "only the summary: {p:?}");
        assert_eq!(p.open[0].more, Some(2));
        assert!(
            p.open[0].message.contains("(8 open, at most 3 per host and kind)"),
            "{}",
            p.open[0].message
        );
    }

    #[test]
    fn the_most_severe_come_first_and_the_summary_is_as_severe_as_what_it_counts() {
        let mut findings: Vec<Finding> = (0..4).map(|i| risky("web-3", i)).collect();
        for f in &mut findings {
            f.kind = Kind::OwnerMismatch;
            f.key = f.key.replace("risky-port-exposed", "owner-mismatch");
        }
        findings[0].severity = Severity::Warning; // a holder the agent could not name
        findings[1].severity = Severity::Warning;
        let p = plan(&findings, &[], 2);
        let open: Vec<_> = p.open.iter().map(|f| (f.local_addr, f.severity)).collect();
        assert_eq!(
            open,
            [
                (findings[2].local_addr, Severity::Critical),
                (findings[3].local_addr, Severity::Critical),
                (None, Severity::Warning),
            ]
        );
        assert_eq!(p.open[2].more, Some(2));
        // One critical finding left over makes the summary critical.
        findings[0].severity = Severity::Critical;
        let p = plan(&findings, &[], 2);
        assert_eq!(
            (p.open[2].key.as_str(), p.open[2].severity),
            ("owner-mismatch:web-3:overflow", Severity::Critical)
        );
    }

    #[test]
    fn findings_that_do_not_alert_are_not_counted_and_a_key_counts_once() {
        let mut info = risky("web-3", 1);
        info.kind = Kind::Unbaselined;
        let twice = risky("web-3", 2);
        let p = plan(&[info, twice.clone(), twice], &[], 1);
        assert_eq!(p.open.len(), 1, "{p:?}");
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(
            [0, 7, 999, 1000, 19_950, 1_234_567].map(thousands),
            ["0", "7", "999", "1,000", "19,950", "1,234,567"]
        );
    }
}
