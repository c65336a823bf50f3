//! The view from outside: from where the collector stands, a TCP connect to
//! exactly the listeners hosts reported, at the addresses they reported, and
//! a verdict for each (`reachable`, `unreachable`, `not-probed`) kept in the
//! store ([`crate::store::Probes`]) and judged by drift.
//!
//! **This is an active scan.** It is off by default (`[probe] enabled`), and
//! turning it on is for a security team to authorize: the collector then
//! opens TCP connections to the fleet's hosts. What it connects to is never
//! a range: [`plan`] takes each host's current listeners and the addresses
//! its agent reported as its own interfaces' ([`HostRow::addresses`]), and
//! gives one target per listener and address, nothing else. A listener bound
//! to one address is tried there, if that address is one of the host's; a
//! wildcard listener (`0.0.0.0`, `::`) at each of the host's addresses of its
//! family. Only the host's own network namespace (its agent's,
//! [`HostRow::host_netns`]) is probed: the addresses of containers'
//! namespaces are not reported. UDP is not probed (a connect cannot tell
//! whether anything answers), nor loopback listeners. Connects are paced at
//! `rate` a second with at most `concurrency` at once, each given `timeout`
//! ([`connect`]).
//!
//! [`HostRow::addresses`]: portwatch_model::HostRow::addresses
//! [`HostRow::host_netns`]: portwatch_model::HostRow::host_netns

pub mod connect;
pub mod plan;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use portwatch_common::Listener;
use portwatch_model::{HostStatus, ProbeVerdict, Verified};
use wildmatch::WildMatch;

use crate::store::{Store, StoreError};

pub use connect::{run, Answer, Outcome};
pub use plan::{plan, HostPlan, PlaceTargets, Skipped};

/// Default time between probes of the fleet by a serving collector.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(600);

/// Default pace: connects started per second, fleet-wide.
pub const DEFAULT_RATE: u32 = 20;

/// Default time a connect may take before the target counts as unreachable.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Default most connects in flight at once.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// Most connects a second `rate` may say: above this a probe is a flood.
pub const MAX_RATE: u32 = 1000;

/// How a probe connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Connects started per second.
    pub rate: u32,
    /// Most connects in flight at once.
    pub concurrency: usize,
    /// How long a connect may take.
    pub timeout: Duration,
}

/// What a probe of the fleet does (`[probe]`, less `enabled` and `every`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// How it connects.
    pub pace: Pace,
    /// Host name globs (`*`, `?`): only these hosts are probed; every host when empty.
    pub hosts: Vec<String>,
    /// Only addresses within these networks are tried; every reported address when empty.
    pub networks: Vec<ipnet::IpNet>,
}

/// The plans of one probe of the fleet as of `now`: every host that is up
/// (a silent host's listeners may be gone) and that `settings.hosts` and
/// `only` (globs; any may match, every host when empty) both select, by name.
/// Blocks on the store.
pub fn fleet_plans(
    store: &dyn Store,
    settings: &Settings,
    only: &[String],
    now: Timestamp,
) -> Result<Vec<HostPlan>, StoreError> {
    let selects =
        |globs: &[String], host: &str| globs.is_empty() || globs.iter().any(|g| WildMatch::new(g).matches(host));
    let mut plans = Vec::new();
    for host in store.hosts(now)? {
        if host.status != HostStatus::Up || !selects(&settings.hosts, &host.host) || !selects(only, &host.host) {
            continue;
        }
        let listeners: Vec<Listener> = store
            .listeners_at(&host.host, now)?
            .into_iter()
            .map(|r| r.listener)
            .collect();
        plans.push(plan(&host, &listeners, &settings.networks));
    }
    Ok(plans)
}

/// Every distinct target of `plans`, in the order they first appear.
pub fn targets(plans: &[HostPlan]) -> Vec<SocketAddr> {
    let mut seen = HashSet::new();
    plans
        .iter()
        .flat_map(|p| p.probes.iter().flat_map(|t| t.targets.iter().copied()))
        .filter(|t| seen.insert(*t))
        .collect()
}

/// The verdicts of `plan` from `answers` (by target) at `at`: a place is
/// reachable when one of its targets connected, unreachable when none did,
/// not-probed when it was skipped (or, which a full run never leaves, a
/// target has no answer).
pub fn verdicts(
    plan: &HostPlan,
    answers: &HashMap<SocketAddr, Answer>,
    timeout: Duration,
    at: Timestamp,
) -> Vec<ProbeVerdict> {
    let mut out = Vec::with_capacity(plan.probes.len() + plan.skipped.len());
    for p in &plan.probes {
        let got: Vec<&Answer> = p.targets.iter().filter_map(|t| answers.get(t)).collect();
        let state = if got.iter().any(|a| a.outcome.reached()) {
            Verified::Reachable
        } else if got.len() == p.targets.len() {
            Verified::Unreachable
        } else {
            Verified::NotProbed
        };
        let detail = got.iter().map(|a| a.describe(timeout)).collect::<Vec<_>>().join("; ");
        out.push(ProbeVerdict {
            place: p.place,
            state,
            at,
            detail,
        });
    }
    out.extend(plan.skipped.iter().map(|s| ProbeVerdict {
        place: s.place,
        state: Verified::NotProbed,
        at,
        detail: s.why.clone(),
    }));
    out.sort_by_key(|v| v.place);
    out
}

/// What one probe of the fleet did.
#[derive(Debug, Clone)]
pub struct Probed {
    /// Each host's plan and the verdicts stored for it, by host.
    pub hosts: Vec<(HostPlan, Vec<ProbeVerdict>)>,
    /// Every connect's answer, in the order they were made.
    pub answers: Vec<Answer>,
}

/// One probe of the fleet, start to end: plans as of now, connects, and
/// each probed host's verdicts stored in place of its previous ones. The
/// plans, verdicts and every answer, for whoever shows them. The store is
/// called on blocking threads.
pub async fn probe_fleet(store: Arc<dyn Store>, settings: &Settings, only: &[String]) -> Result<Probed, StoreError> {
    let (s, only_owned, st) = (settings.clone(), only.to_vec(), store.clone());
    let plans = tokio::task::spawn_blocking(move || fleet_plans(st.as_ref(), &s, &only_owned, Timestamp::now()))
        .await
        .map_err(|e| StoreError::Database(format!("the probe's planning panicked: {e}")))??;
    let targets = targets(&plans);
    let made = run(&targets, settings.pace).await;
    let answers: HashMap<SocketAddr, Answer> = made.iter().map(|a| (a.target, a.clone())).collect();
    let at = Timestamp::now();
    let results: Vec<(HostPlan, Vec<ProbeVerdict>)> = plans
        .into_iter()
        .map(|p| {
            let v = verdicts(&p, &answers, settings.pace.timeout, at);
            (p, v)
        })
        .collect();
    let to_store: Vec<(String, Vec<ProbeVerdict>)> = results.iter().map(|(p, v)| (p.host.clone(), v.clone())).collect();
    tokio::task::spawn_blocking(move || {
        for (host, v) in to_store {
            store.replace_probe_verdicts(&host, &v)?;
        }
        Ok::<(), StoreError>(())
    })
    .await
    .map_err(|e| StoreError::Database(format!("storing the probe's verdicts panicked: {e}")))??;
    Ok(Probed {
        hosts: results,
        answers: made,
    })
}

/// A serving collector's probes: one probe of the fleet at start and every
/// `every` after the end of the previous one, while this collector holds
/// `lease` (another collector of the database probes otherwise). A failed
/// probe (the store unavailable) is logged and tried again at the next.
/// Drift judges the verdicts at its next sweep, which takes in every probed
/// host.
pub async fn every(
    store: Arc<dyn Store>,
    settings: Settings,
    every: Duration,
    lease: crate::lease::Lease,
    metrics: Arc<crate::metrics::Metrics>,
) {
    tracing::warn!(
        every = ?every, rate = settings.pace.rate, hosts = ?settings.hosts, networks = ?settings.networks,
        "[probe] is enabled: this collector connects to the listeners hosts report (an active scan)"
    );
    loop {
        if lease.held() {
            let started = std::time::Instant::now();
            match probe_fleet(store.clone(), &settings, &[]).await {
                Ok(Probed {
                    hosts: results,
                    answers,
                }) => {
                    let mut by_outcome = [0u64; 4];
                    for a in &answers {
                        by_outcome[match a.outcome {
                            Outcome::Connected => 0,
                            Outcome::Refused => 1,
                            Outcome::TimedOut => 2,
                            Outcome::Failed(_) => 3,
                        }] += 1;
                    }
                    metrics.probed(by_outcome);
                    let count =
                        |state: Verified| results.iter().flat_map(|(_, v)| v).filter(|v| v.state == state).count();
                    tracing::info!(
                        hosts = results.len(),
                        connects = results.iter().map(|(p, _)| p.connects()).sum::<usize>(),
                        reachable = count(Verified::Reachable),
                        unreachable = count(Verified::Unreachable),
                        not_probed = count(Verified::NotProbed),
                        took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                        "probed the fleet"
                    );
                }
                Err(e) => tracing::warn!(error = %e, "cannot probe the fleet; trying again at the next probe"),
            }
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portwatch_common::Proto;
    use portwatch_model::Place;

    fn place(port: u16) -> Place {
        Place {
            netns: 1,
            proto: Proto::Tcp,
            addr: "0.0.0.0".parse().unwrap(),
            port,
        }
    }

    fn answer(target: &str, outcome: Outcome) -> (SocketAddr, Answer) {
        let target: SocketAddr = target.parse().unwrap();
        (
            target,
            Answer {
                target,
                outcome,
                took_ms: 1,
            },
        )
    }

    #[test]
    fn a_place_is_reachable_when_one_address_connected_and_unreachable_when_none_did() {
        let targets = |port: u16| {
            vec![
                format!("10.0.0.5:{port}").parse().unwrap(),
                format!("10.0.1.5:{port}").parse().unwrap(),
            ]
        };
        let plan = HostPlan {
            host: "db-1".into(),
            probes: vec![
                PlaceTargets {
                    place: place(22),
                    targets: targets(22),
                },
                PlaceTargets {
                    place: place(5432),
                    targets: targets(5432),
                },
            ],
            skipped: vec![Skipped {
                place: place(53),
                why: "udp".into(),
            }],
        };
        let answers: HashMap<SocketAddr, Answer> = [
            answer("10.0.0.5:22", Outcome::TimedOut),
            answer("10.0.1.5:22", Outcome::Connected),
            answer("10.0.0.5:5432", Outcome::Refused),
            answer("10.0.1.5:5432", Outcome::TimedOut),
        ]
        .into_iter()
        .collect();
        let at = Timestamp::UNIX_EPOCH;
        let v = verdicts(&plan, &answers, Duration::from_secs(2), at);
        let states: Vec<(u16, Verified)> = v.iter().map(|v| (v.place.port, v.state)).collect();
        assert_eq!(
            states,
            [
                (22, Verified::Reachable),
                (53, Verified::NotProbed),
                (5432, Verified::Unreachable)
            ]
        );
        assert_eq!(v[0].detail, "10.0.0.5:22 timed out after 2s; 10.0.1.5:22 connected");
        assert_eq!(v[1].detail, "udp");
        assert_eq!(
            super::targets(&[plan.clone(), plan]).len(),
            4,
            "a target twice in the fleet is one connect"
        );
    }
}
