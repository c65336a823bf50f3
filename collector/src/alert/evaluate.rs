//! Runs drift over the store's hosts and keeps the alerts in line.
//!
//! A host is evaluated shortly after each batch with reports is stored for
//! it (ingest sends its name here; evaluations are batched over
//! [`DEBOUNCE`]), and every host on a timer ([`Evaluator::sweep_every`]),
//! which is what notices the passage of time: a host gone silent, a grace
//! period run out, a flapping window passed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::mpsc;

use super::drift::{self, Applied, HostView, Policy};
use crate::store::{Store, StoreError};
use portwatch_model::baseline;
use portwatch_model::time::before;
use portwatch_model::Finding;
use portwatch_model::{AlertEvent, HostRow, HostStatus};

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
    started_at: Timestamp,
    /// Stored baselines that do not parse, already logged (name, applied_at).
    broken: Mutex<HashSet<(String, Timestamp)>>,
    /// The threat lists `suspicious-peer` looks remotes up in, when the config names any.
    threats: Option<Arc<crate::threat::Lists>>,
}

impl Evaluator {
    /// An evaluator of `store`'s hosts under `policy`, sweeping every `sweep_every`.
    pub fn new(store: Arc<dyn Store>, policy: Policy, sweep_every: Duration) -> Evaluator {
        Evaluator {
            store,
            policy,
            sweep_every,
            started_at: Timestamp::now(),
            broken: Mutex::default(),
            threats: None,
        }
    }

    /// Looks the remotes of peer points up in `lists` (`suspicious-peer`).
    pub fn with_threats(mut self, lists: Arc<crate::threat::Lists>) -> Evaluator {
        self.threats = (!lists.is_empty()).then_some(lists);
        self
    }

    /// The time between sweeps.
    pub fn sweep_every(&self) -> Duration {
        self.sweep_every
    }

    /// The stored baselines, parsed. One that no longer parses (stored by
    /// a collector with other rules) is left out, and logged once.
    fn applied(&self) -> Result<Vec<Applied>, StoreError> {
        let stored = self.store.baselines()?;
        let mut applied = Vec::with_capacity(stored.len());
        for s in stored {
            match baseline::parse(&s.source) {
                Ok(b) => applied.push(Applied {
                    baseline: b,
                    applied_at: s.applied_at,
                }),
                Err(e) => {
                    let mut broken = self.broken.lock().unwrap_or_else(PoisonError::into_inner);
                    if broken.insert((s.name.clone(), s.applied_at)) {
                        tracing::error!(baseline = %s.name, error = %e,
                            "stored baseline no longer parses; it is ignored until applied again \
                             (portwatch baseline show NAME, fix, apply)");
                    }
                }
            }
        }
        Ok(applied)
    }

    /// The findings of `host` (every host if `None`) as of `now`, by host,
    /// `unbaselined` listeners included when `with_info`. Blocks on the store.
    pub fn drift(&self, host: Option<&str>, with_info: bool, now: Timestamp) -> Result<Vec<Finding>, StoreError> {
        let hosts: Vec<HostRow> = match host {
            Some(name) => self.store.host(name, now)?.into_iter().collect(),
            None => self.store.hosts(now)?,
        };
        self.drift_of(&self.context()?, &hosts, now, with_info)
    }

    /// What every evaluation reads once: the baselines, and the keys of the
    /// unresolved alerts by host.
    fn context(&self) -> Result<Context, StoreError> {
        let mut alerting: HashMap<String, HashSet<String>> = HashMap::new();
        for (host, key) in self.store.active_alert_keys()? {
            alerting.entry(host).or_default().insert(key);
        }
        Ok(Context {
            applied: self.applied()?,
            alerting,
        })
    }

    /// The findings of `hosts` as of `now`: one history read per host.
    fn drift_of(
        &self,
        ctx: &Context,
        hosts: &[HostRow],
        now: Timestamp,
        with_info: bool,
    ) -> Result<Vec<Finding>, StoreError> {
        let since = before(now, drift::lookback(&ctx.applied, &self.policy));
        let none = HashSet::new();
        let mut findings = Vec::new();
        let threats = self.threats.as_ref().map(|lists| lists.table());
        for h in hosts {
            let recent = self.store.history(&h.host, None, Some(since), Some(now))?;
            let listeners: Vec<_> = recent.iter().filter(|r| r.closed_at.is_none()).cloned().collect();
            let judged = self.judged(h, now);
            let verdicts = self.store.probe_verdicts(&h.host)?;
            // Peer points are read only where a list can make them a finding.
            let peers = match &threats {
                Some(_) => self.store.peers_at(&h.host, None, now)?,
                None => Vec::new(),
            };
            let view = HostView {
                host: judged.as_ref().unwrap_or(h),
                listeners: &listeners,
                recent: &recent,
                alerting: ctx.alerting.get(&h.host).unwrap_or(&none),
                with_info,
                verdicts: &verdicts,
                peers: &peers,
                threats: threats.as_deref(),
            };
            findings.extend(drift::evaluate(&view, &ctx.applied, &self.policy, now));
        }
        Ok(findings)
    }

    /// `host` as drift should judge it: not silent while its agent may still
    /// be finding its way back after the collector started (see [`Policy::startup_grace`]).
    fn judged(&self, host: &HostRow, now: Timestamp) -> Option<HostRow> {
        if host.status != HostStatus::Silent {
            return None;
        }
        let three = Duration::from_millis(host.interval_ms.saturating_mul(3));
        let back_by = self
            .started_at
            .checked_add(self.policy.startup_grace.saturating_add(three))
            .unwrap_or(Timestamp::MAX);
        (now < back_by).then(|| HostRow {
            status: HostStatus::Up,
            ..host.clone()
        })
    }

    /// Evaluates `hosts` and brings their alerts in line; what changed.
    /// Blocks on the store.
    pub fn evaluate(&self, hosts: Scope, now: Timestamp) -> Result<Vec<AlertEvent>, StoreError> {
        let ctx = self.context()?;
        let rows: Vec<HostRow> = match hosts {
            Scope::Changed(names) => {
                let mut rows = Vec::with_capacity(names.len());
                for name in names {
                    rows.extend(self.store.host(&name, now)?);
                }
                rows
            }
            Scope::All => self.store.hosts(now)?,
            Scope::Timely => {
                // A probe (another process's, or this one's) stores verdicts
                // without a report: the hosts probed since about the last sweep.
                let since = before(now, self.sweep_every.saturating_mul(2));
                let probed: HashSet<String> = self.store.probed_hosts(since)?.into_iter().collect();
                // Only where the passage of time can change a finding: a host
                // silent (or back), one a baseline covers (a grace period
                // running out), one with an alert to resolve (a flapping
                // window passing, a clock set right), one whose clock is off
                // (measured by heartbeats too, which do not have the host
                // evaluated). Anything else changes only with a report,
                // which has the host evaluated at once.
                self.store
                    .hosts(now)?
                    .into_iter()
                    .filter(|h| {
                        h.status == HostStatus::Silent
                            || h.clock_skewed
                            || probed.contains(&h.host)
                            || ctx.alerting.contains_key(&h.host)
                            || ctx.applied.iter().any(|a| a.baseline.selects(&h.host, &h.tags))
                    })
                    .collect()
            }
        };
        let findings = self.drift_of(&ctx, &rows, now, false)?;
        let names: Vec<String> = rows.into_iter().map(|h| h.host).collect();
        self.store
            .sync_alerts(&names, &findings, self.policy.max_open_per_kind, now)
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

/// Niceness of the evaluation thread: drift is background work, and must not
/// take the CPU from ingest and queries when they need it.
const EVALUATION_NICENESS: i32 = 10;

/// Gives the calling thread [`EVALUATION_NICENESS`]. A failure (a system call
/// filter denying `setpriority`, as the packaged unit did before it allowed
/// it again) is logged once per process as a warning with the errno: the
/// evaluation then runs at the collector's own priority, and competes with
/// queries.
fn lower_priority() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), EVALUATION_NICENESS) {
        WARNED.call_once(|| {
            tracing::warn!(errno = e.raw_os_error(), error = %e, niceness = EVALUATION_NICENESS,
                "cannot lower the drift evaluator's priority (setpriority failed; a systemd unit's \
                 SystemCallFilter must allow setpriority); drift evaluation competes with queries for the CPU");
        });
    }
}

/// A thread of its own, at a lower priority, that runs evaluations.
struct Worker {
    evaluator: Arc<Evaluator>,
    jobs: Option<std::sync::mpsc::SyncSender<Job>>,
}

/// One evaluation and where its answer goes.
type Job = (Scope, tokio::sync::oneshot::Sender<Result<Vec<AlertEvent>, StoreError>>);

impl Worker {
    fn start(evaluator: Arc<Evaluator>) -> Worker {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(1);
        let ev = evaluator.clone();
        let spawned = std::thread::Builder::new()
            .name("drift-evaluator".to_owned())
            .spawn(move || {
                lower_priority();
                for (scope, reply) in rx {
                    // A panic (a bug) fails this evaluation, not every later one.
                    let run = std::panic::AssertUnwindSafe(|| ev.evaluate(scope, Timestamp::now()));
                    let result = std::panic::catch_unwind(run).unwrap_or_else(|_| {
                        Err(StoreError::Database(
                            "the drift evaluation panicked (a bug: see the log)".to_owned(),
                        ))
                    });
                    let _ = reply.send(result);
                }
            });
        let jobs = match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::warn!(error = %e, "no thread of its own for drift evaluation; using the blocking pool");
                None
            }
        };
        Worker { evaluator, jobs }
    }

    async fn evaluate(&self, scope: Scope) -> Result<Vec<AlertEvent>, String> {
        let Some(jobs) = &self.jobs else {
            let ev = self.evaluator.clone();
            return match tokio::task::spawn_blocking(move || ev.evaluate(scope, Timestamp::now())).await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(e) => Err(format!("the evaluation failed: {e}")),
            };
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        jobs.send((scope, reply))
            .map_err(|_| "the drift evaluator stopped".to_owned())?;
        match answer.await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err("the drift evaluator stopped (a panic? see above)".to_owned()),
        }
    }
}

/// What one evaluation reads once, for every host it looks at.
struct Context {
    /// The stored baselines, parsed.
    applied: Vec<Applied>,
    /// Keys of the unresolved alerts, by host.
    alerting: HashMap<String, HashSet<String>>,
}

/// Which hosts an evaluation looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// These hosts, whose history just changed.
    Changed(BTreeSet<String>),
    /// The hosts where time alone can change a finding (the periodic sweep).
    Timely,
    /// Every host (after a start, a baseline change, or changes that could not be queued).
    All,
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

/// Evaluates changed hosts as their names arrive on `changed`, every host
/// when `sweep_now` is notified, and every host every
/// [`Evaluator::sweep_every`] while this collector holds the `sweep` lease
/// (one collector of those sharing a database sweeps), until `changed` closes.
pub async fn run(
    evaluator: Arc<Evaluator>,
    mut changed: mpsc::Receiver<String>,
    sweep_now: Arc<tokio::sync::Notify>,
    notifier: Notifier,
    sweep_lease: crate::lease::Lease,
) {
    let mut sweep = tokio::time::interval(evaluator.sweep_every());
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let worker = Worker::start(evaluator);
    // The first sweep (right after a start) looks at every host, and so does
    // the next one after an evaluation failed.
    let mut full_due = true;
    loop {
        let scope = tokio::select! {
            _ = sweep.tick() => {
                if !sweep_lease.held() {
                    // Another collector sweeps; this one's first sweep, when it takes over, is whole.
                    full_due = true;
                    continue;
                }
                match std::mem::take(&mut full_due) {
                    true => Scope::All,
                    false => Scope::Timely,
                }
            }
            _ = sweep_now.notified() => Scope::All,
            first = changed.recv() => {
                let Some(first) = first else { break };
                tokio::time::sleep(DEBOUNCE).await;
                let mut set = BTreeSet::from([first]);
                while let Ok(more) = changed.try_recv() {
                    set.insert(more);
                }
                Scope::Changed(set)
            }
        };
        match worker.evaluate(scope).await {
            Ok(events) => notifier.notify(events),
            Err(e) => {
                full_due = true;
                tracing::error!(error = %e, "cannot evaluate drift; every host is evaluated at the next sweep");
            }
        }
    }
}
