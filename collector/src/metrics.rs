//! The collector's own health for Prometheus: `GET /metrics`, in the
//! OpenMetrics text format.
//!
//! Counters (ingest, connections, what ingest cut of over-long reported
//! text) and the gauges of the collector's own state (open connections,
//! ingest bytes in flight) are kept as requests happen; gauges of the fleet (hosts up and
//! silent, open listeners, reports agents dropped, active alerts,
//! baselines, store size) are read
//! from the store at each scrape, so every collector in front of a shared
//! store reports the same fleet.

use std::sync::atomic::AtomicU64;

use jiff::Timestamp;
use portwatch_common::wire::{Batch, Sanitized};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::store::{Store, StoreError};
use portwatch_model::ALL_KINDS;
use portwatch_model::{AlertState, HostStatus};

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How an ingest request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Stored and acknowledged.
    Stored,
    /// Refused (4xx): bad credentials, bad body.
    Refused,
    /// Refused for now (503): the collector's bytes in flight are taken, or
    /// the host has a batch in flight already.
    Busy,
    /// The body stopped arriving (408).
    Timeout,
    /// Failed on our side (5xx).
    Failed,
}

/// Every [`Outcome`], in the order `/metrics` lists them.
const OUTCOMES: [Outcome; 5] = [
    Outcome::Stored,
    Outcome::Refused,
    Outcome::Busy,
    Outcome::Timeout,
    Outcome::Failed,
];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AlertLabels {
    kind: &'static str,
    state: &'static str,
}

/// The collector's metrics.
pub struct Metrics {
    registry: Registry,
    ingest_requests: Family<OutcomeLabels, Counter>,
    ingest_reports: Counter,
    strings_cut: Counter,
    tags_dropped: Counter,
    hosts: Family<StatusLabels, Gauge>,
    listeners: Gauge,
    dropped: Gauge<u64, AtomicU64>,
    alerts: Family<AlertLabels, Gauge>,
    baselines: Gauge,
    store_bytes: Gauge<u64, AtomicU64>,
    ingest_in_flight: Gauge,
    connections_open: Gauge,
    connections: Counter,
    connection_waits: Counter,
    /// Retention (`collector/src/retention.rs`): rows pruned, by kind.
    pruned: Family<KindLabels, Counter>,
    prune_passes: Counter,
    alerts_held: Gauge,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// The kinds of rows pruning removes, as `/metrics` labels them.
const PRUNED_KINDS: [&str; 5] = ["intervals", "programs", "alerts", "alert_events", "baseline_log"];

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric, at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("portwatch");
        let ingest_requests = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "ingest_requests",
            "Agent report batches received, by outcome (stored, refused, busy: 503 with Retry-After, \
             timeout: the body stopped arriving, failed)",
            ingest_requests.clone(),
        );
        let ingest_reports = Counter::default();
        registry.register(
            "ingest_reports",
            "Reports (snapshots and deltas) in stored batches; heartbeats carry none",
            ingest_reports.clone(),
        );
        let strings_cut = Counter::default();
        registry.register(
            "ingest_strings_cut",
            "Reported strings longer than the protocol's limit for their field, stored cut (see the limits \
             table of the wire protocol); the collector's log names the host and the fields",
            strings_cut.clone(),
        );
        let tags_dropped = Counter::default();
        registry.register(
            "ingest_tags_dropped",
            "Reported host tags beyond the protocol's 64, not stored",
            tags_dropped.clone(),
        );
        let hosts = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "hosts",
            "Hosts by status: up, or silent (three intervals missed)",
            hosts.clone(),
        );
        let listeners = Gauge::default();
        registry.register("listeners_open", "Listeners open now, fleet-wide", listeners.clone());
        let dropped = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "agent_reports_dropped",
            "Reports agents lost before the collector stored them (a full spool, a batch refused for good, \
             a gap), summed over the fleet; per host in portwatch hosts (DROPPED)",
            dropped.clone(),
        );
        let alerts = Family::<AlertLabels, Gauge>::default();
        registry.register(
            "alerts_active",
            "Open and acknowledged alerts, by kind and state",
            alerts.clone(),
        );
        let baselines = Gauge::default();
        registry.register("baselines", "Baselines applied", baselines.clone());
        let store_bytes = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "store_size_bytes",
            "Size of the store on disk (SQLite: the database file and its WAL)",
            store_bytes.clone(),
        );
        let ingest_in_flight = Gauge::default();
        registry.register(
            "ingest_bytes_in_flight",
            "Bytes of ingest bodies being read, parsed or committed ([ingest] max_bytes_in_flight at most)",
            ingest_in_flight.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "http_connections_open",
            "HTTP connections open now ([http] max_connections at most)",
            connections_open.clone(),
        );
        let connections = Counter::default();
        registry.register("http_connections", "HTTP connections accepted", connections.clone());
        let connection_waits = Counter::default();
        registry.register(
            "http_connection_limit_waits",
            "Times a new connection waited because [http] max_connections were open",
            connection_waits.clone(),
        );
        for outcome in OUTCOMES {
            let _ = ingest_requests.get_or_create(&OutcomeLabels {
                outcome: outcome_name(outcome),
            });
        }
        let (pruned, prune_passes, alerts_held) = register_retention(&mut registry);
        Metrics {
            registry,
            ingest_requests,
            ingest_reports,
            strings_cut,
            tags_dropped,
            hosts,
            listeners,
            dropped,
            alerts,
            baselines,
            store_bytes,
            ingest_in_flight,
            connections_open,
            connections,
            connection_waits,
            pruned,
            prune_passes,
            alerts_held,
        }
    }

    /// Counts a pass of the background pruner and what it removed.
    pub fn pruned(&self, pruned: &crate::store::Pruned) {
        let counts = [
            pruned.intervals,
            pruned.programs,
            pruned.alerts,
            pruned.alert_events,
            pruned.baseline_log,
        ];
        for (kind, n) in PRUNED_KINDS.into_iter().zip(counts) {
            self.pruned.get_or_create(&KindLabels { kind }).inc_by(n);
        }
        self.prune_passes.inc();
        self.alerts_held
            .set(i64::try_from(pruned.alerts_held).unwrap_or(i64::MAX));
    }

    /// `bytes` more of ingest bodies are held (negative: released).
    pub fn ingest_bytes_held(&self, bytes: i64) {
        self.ingest_in_flight.inc_by(bytes);
    }

    /// A connection was accepted.
    pub fn connection_opened(&self) {
        self.connections.inc();
        self.connections_open.inc();
    }

    /// A connection closed.
    pub fn connection_closed(&self) {
        self.connections_open.dec();
    }

    /// A new connection had to wait for a slot.
    pub fn connection_waited(&self) {
        self.connection_waits.inc();
    }

    /// Counts an ingest request that ended with `outcome`, carrying `reports` stored reports.
    pub fn ingested(&self, outcome: Outcome, reports: usize) {
        self.ingest_requests
            .get_or_create(&OutcomeLabels {
                outcome: outcome_name(outcome),
            })
            .inc();
        if outcome == Outcome::Stored {
            self.ingest_reports.inc_by(reports as u64);
        }
    }

    /// Sanitizes an accepted batch ([`Batch::sanitize`]: over-long strings
    /// cut, tags beyond the limit dropped, exposures derived from the
    /// addresses), counts what was cut, and logs it once for the batch with
    /// its host and the fields cut (the log escapes them), and once more if
    /// exposures were replaced.
    pub fn sanitized(&self, mut batch: Batch) -> Batch {
        let cut = batch.sanitize();
        self.count_cut(&cut);
        if cut.strings_cut > 0 || cut.tags_dropped > 0 {
            tracing::warn!(
                host = %batch.host,
                fields = %cut.field_names(),
                strings_cut = cut.strings_cut,
                tags_dropped = cut.tags_dropped,
                "reported text over the protocol's limits was cut before it was stored"
            );
        }
        if cut.exposures_replaced > 0 {
            tracing::warn!(
                host = %batch.host,
                listeners = cut.exposures_replaced,
                "reported exposures that were not their addresses' were replaced by them"
            );
        }
        batch
    }

    /// Counts what sanitizing a batch cut.
    pub fn count_cut(&self, cut: &Sanitized) {
        self.strings_cut.inc_by(cut.strings_cut);
        self.tags_dropped.inc_by(cut.tags_dropped);
    }

    /// Reads the gauges from `store` as of `now` and renders every metric.
    /// Blocks on the store.
    pub fn render(&self, store: &dyn Store, now: Timestamp) -> Result<String, StoreError> {
        let hosts = store.hosts(now)?;
        let silent = hosts.iter().filter(|h| h.status == HostStatus::Silent).count();
        self.hosts
            .get_or_create(&StatusLabels { status: "up" })
            .set(gauge(hosts.len() - silent));
        self.hosts
            .get_or_create(&StatusLabels { status: "silent" })
            .set(gauge(silent));
        self.listeners
            .set(gauge(hosts.iter().map(|h| h.listeners as usize).sum()));
        self.dropped
            .set(hosts.iter().map(|h| h.dropped_reports).fold(0, u64::saturating_add));
        let counts = store.active_alert_counts()?;
        for state in [AlertState::Open, AlertState::Acknowledged] {
            for kind in ALL_KINDS.into_iter().filter(|k| k.alerts()) {
                let n = counts
                    .iter()
                    .find(|(k, s, _)| *k == kind && *s == state)
                    .map_or(0, |(_, _, n)| *n);
                self.alerts
                    .get_or_create(&AlertLabels {
                        kind: kind.as_str(),
                        state: state.as_str(),
                    })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        self.baselines.set(gauge(store.baselines()?.len()));
        self.store_bytes.set(store.size_bytes()?);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .map_err(|e| StoreError::Database(format!("cannot render the metrics: {e}")))?;
        Ok(text)
    }
}

/// Registers the retention metrics, every kind at zero.
fn register_retention(registry: &mut Registry) -> (Family<KindLabels, Counter>, Counter, Gauge) {
    let pruned = Family::<KindLabels, Counter>::default();
    registry.register(
        "retention_pruned_rows",
        "Rows the background pruner deleted because [retention] let them go, by kind",
        pruned.clone(),
    );
    for kind in PRUNED_KINDS {
        let _ = pruned.get_or_create(&KindLabels { kind });
    }
    let passes = Counter::default();
    registry.register("retention_passes", "Passes of the background pruner", passes.clone());
    let held = Gauge::default();
    registry.register(
        "retention_alerts_held",
        "Expired resolved alerts the last pass kept because a sink has not delivered their changes",
        held.clone(),
    );
    (pruned, passes, held)
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Stored => "stored",
        Outcome::Refused => "refused",
        Outcome::Busy => "busy",
        Outcome::Timeout => "timeout",
        Outcome::Failed => "failed",
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
