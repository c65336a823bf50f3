//! Runs drift over the store's hosts and keeps the alerts in line.
//!
//! A host is evaluated shortly after each batch with reports is stored for
//! it (ingest sends its name here; evaluations are batched over
//! [`DEBOUNCE`]), and every host on a timer ([`Evaluator::sweep_every`]),
//! which is what notices the passage of time: a host gone silent, a grace
//! period run out, a flapping window passed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::mpsc;

use super::drift::{self, Applied, Finding, HostView, Policy};
use crate::baseline;
use crate::store::{AlertEvent, HostRow, Store, StoreError};

/// How long changed hosts are collected before they are evaluated together.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// Default time between evaluations of every host.
pub const DEFAULT_SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Most changed hosts waiting for evaluation; past that, the next sweep catches up.
pub const CHANGED_QUEUE: usize = 10_000;

/// Evaluates hosts against the baselines.
pub struct Evaluator {
    store: Arc<dyn Store>,
    policy: Policy,
    sweep_every: Duration,
}

impl Evaluator {
    /// An evaluator of `store`'s hosts under `policy`, sweeping every `sweep_every`.
    pub fn new(store: Arc<dyn Store>, policy: Policy, sweep_every: Duration) -> Evaluator {
        Evaluator {
            store,
            policy,
            sweep_every,
        }
    }

    /// The time between sweeps.
    pub fn sweep_every(&self) -> Duration {
        self.sweep_every
    }

    /// The stored baselines, parsed. One that no longer parses (stored by
    /// a collector with other rules) is logged and left out.
    fn applied(&self) -> Result<Vec<Applied>, StoreError> {
        let stored = self.store.baselines()?;
        Ok(stored
            .into_iter()
            .filter_map(|s| match baseline::parse(&s.source) {
                Ok(b) => Some(Applied {
                    baseline: b,
                    applied_at: s.applied_at,
                }),
                Err(e) => {
                    tracing::error!(baseline = %s.name, error = %e,
                        "stored baseline no longer parses; it is ignored until applied again");
                    None
                }
            })
            .collect())
    }

    /// The findings of `host` (every host if `None`) as of `now`, by host.
    /// Blocks on the store.
    pub fn drift(&self, host: Option<&str>, now: Timestamp) -> Result<Vec<Finding>, StoreError> {
        let hosts: Vec<HostRow> = self
            .store
            .hosts(now)?
            .into_iter()
            .filter(|h| host.is_none_or(|want| h.host == want))
            .collect();
        self.drift_of(&hosts, now)
    }

    /// The findings of `hosts` as of `now`: one history read per host.
    fn drift_of(&self, hosts: &[HostRow], now: Timestamp) -> Result<Vec<Finding>, StoreError> {
        let applied = self.applied()?;
        let since = drift::before(now, drift::lookback(&applied, &self.policy));
        let mut findings = Vec::new();
        for h in hosts {
            let recent = self.store.history(&h.host, None, Some(since), Some(now))?;
            let listeners: Vec<_> = recent.iter().filter(|r| r.closed_at.is_none()).cloned().collect();
            let view = HostView {
                host: h,
                listeners: &listeners,
                recent: &recent,
            };
            findings.extend(drift::evaluate(&view, &applied, &self.policy, now));
        }
        Ok(findings)
    }

    /// Evaluates `hosts` (every host if `None`) and brings their alerts in
    /// line; what changed. Blocks on the store.
    pub fn evaluate(&self, hosts: Option<&BTreeSet<String>>, now: Timestamp) -> Result<Vec<AlertEvent>, StoreError> {
        let rows: Vec<HostRow> = self
            .store
            .hosts(now)?
            .into_iter()
            .filter(|h| hosts.is_none_or(|set| set.contains(&h.host)))
            .collect();
        let findings = self.drift_of(&rows, now)?;
        let names: Vec<String> = rows.into_iter().map(|h| h.host).collect();
        self.store.sync_alerts(&names, &findings, now)
    }
}

/// Logs an alert's change: the collector's log is always one of the sinks.
fn log_event(event: &AlertEvent) {
    let a = event.alert();
    match event {
        AlertEvent::Opened(_) => tracing::warn!(
            alert = a.id, kind = a.kind.as_str(), severity = a.severity.as_str(), host = %a.host,
            "alert opened: {}", a.message
        ),
        AlertEvent::Acknowledged(_) => tracing::info!(
            alert = a.id, kind = a.kind.as_str(), host = %a.host, by = a.acked_by.as_deref().unwrap_or(""),
            "alert acknowledged: {}", a.ack_comment.as_deref().unwrap_or("")
        ),
        AlertEvent::Resolved(_) => tracing::info!(
            alert = a.id, kind = a.kind.as_str(), host = %a.host,
            "alert resolved (the condition cleared): {}", a.message
        ),
    }
}

/// Hands alert events on: to the log, and a nudge to the webhooks (which
/// read the events from the store's outbox, where they already are).
#[derive(Clone, Default)]
pub struct Notifier {
    wakers: super::sink::Wakers,
}

impl Notifier {
    /// A notifier that wakes `wakers` (none: log only).
    pub fn new(wakers: super::sink::Wakers) -> Notifier {
        Notifier { wakers }
    }

    /// Logs `events` and wakes the webhooks.
    pub fn notify(&self, events: Vec<AlertEvent>) {
        if events.is_empty() {
            return;
        }
        for event in &events {
            log_event(event);
        }
        self.wakers.wake();
    }
}

/// Evaluates changed hosts as their names arrive on `changed`, and every
/// host every [`Evaluator::sweep_every`] or when `sweep_now` is notified,
/// until `changed` closes.
pub async fn run(
    evaluator: Arc<Evaluator>,
    mut changed: mpsc::Receiver<String>,
    sweep_now: Arc<tokio::sync::Notify>,
    notifier: Notifier,
) {
    let mut sweep = tokio::time::interval(evaluator.sweep_every());
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let hosts = tokio::select! {
            _ = sweep.tick() => None,
            _ = sweep_now.notified() => None,
            first = changed.recv() => {
                let Some(first) = first else { break };
                tokio::time::sleep(DEBOUNCE).await;
                let mut set = BTreeSet::from([first]);
                while let Ok(more) = changed.try_recv() {
                    set.insert(more);
                }
                Some(set)
            }
        };
        let ev = evaluator.clone();
        let result = tokio::task::spawn_blocking(move || ev.evaluate(hosts.as_ref(), Timestamp::now())).await;
        match result {
            Ok(Ok(events)) => notifier.notify(events),
            Ok(Err(e)) => tracing::error!(error = %e, "cannot evaluate drift; retrying at the next change or sweep"),
            Err(e) => tracing::error!(error = %e, "drift evaluation failed"),
        }
    }
}
