//! The collector's own health for Prometheus: `GET /metrics`, in the
//! Prometheus text format (0.0.4) or OpenMetrics, as the scraper asks
//! ([`Format::negotiate`]).
//!
//! Counters (ingest, connections, what ingest cut of over-long reported
//! text, sink deliveries and failures), the ingest latency histogram and
//! the gauges of the collector's own state (open connections, ingest bytes
//! in flight, batches queued for the store) are kept as things happen;
//! gauges of the fleet (hosts up and silent, open listeners, reports agents
//! dropped, active alerts, baselines, store size) are read from the store,
//! and the sinks' lag and the process's resident memory measured, at each
//! scrape, so every collector in front of a shared store reports the same
//! fleet.
//!
//! **Several collectors.** What a process counts or holds carries the label
//! `collector`, this collector's name (`[metrics] collector`, by default
//! this machine's name and the port it listens on): collectors behind one
//! load balancer's address, scraped as one target, stay apart. The label is
//! not `instance`, which Prometheus sets itself on every series from the
//! target's address (a scraped `instance` would be renamed
//! `exported_instance`, or with `honor_labels` replace the target's). The
//! fleet's gauges, read from the database, carry no such label: every
//! collector of a database serves the same values, and a query may take any
//! one of them (`max without (instance, collector)`).
//!
//! No metric has a host, port or other label whose values come from the
//! fleet: labels are fixed sets (outcome, status, kind, state), the sinks
//! of the collector's own config, or its own name.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use portwatch_common::wire::{Batch, Sanitized};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::store::{HeartbeatStats, Store, StoreError};
use portwatch_model::ALL_KINDS;
use portwatch_model::{AlertState, HostStatus};

/// The text formats `/metrics` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4: what Prometheus servers
    /// before 2.5, `promtool check metrics` and most other scrapers read,
    /// and what a client that states no preference gets.
    Prometheus,
    /// OpenMetrics 1.0.0 text (Prometheus 2.5 and later ask for it first).
    OpenMetrics,
}

impl Format {
    /// The content type of this format's text.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// Its name in `portwatch_metrics_scrapes_total`.
    fn name(self) -> &'static str {
        match self {
            Format::Prometheus => "prometheus",
            Format::OpenMetrics => "openmetrics",
        }
    }

    /// The format an `Accept` header asks for: the one of higher quality
    /// (`q=`), OpenMetrics on a tie when it is named; Prometheus text when
    /// the header is absent, names neither (as Go's promhttp does), or asks
    /// for a version of one that is not spoken (OpenMetrics other than
    /// 1.0.0 and 0.0.1, text other than 0.0.4).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Prometheus;
        };
        // The quality of each format: from the most specific range that matches it.
        let (mut om, mut text) = ((0u8, 0.0f32), (0u8, 0.0f32));
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let (mut q, mut version) = (1.0f32, None);
            for param in parts {
                let (key, value) = param.split_once('=').unwrap_or((param, ""));
                let value = value.trim().trim_matches('"');
                match key.trim().to_ascii_lowercase().as_str() {
                    "q" => q = value.parse().unwrap_or(0.0),
                    "version" => version = Some(value.to_owned()),
                    _ => {}
                }
            }
            let version = version.as_deref();
            let (om_rank, text_rank) = match media.as_str() {
                "application/openmetrics-text" if matches!(version, None | Some("1.0.0" | "0.0.1")) => (3, 0),
                "text/plain" if matches!(version, None | Some("0.0.4")) => (0, 3),
                "application/*" => (2, 0),
                "text/*" => (0, 2),
                "*/*" => (1, 1),
                _ => (0, 0),
            };
            if om_rank > om.0 {
                om = (om_rank, q);
            }
            if text_rank > text.0 {
                text = (text_rank, q);
            }
        }
        match om.1 > 0.0 && (om.1 > text.1 || (om.1 == text.1 && om.0 == 3)) {
            true => Format::OpenMetrics,
            false => Format::Prometheus,
        }
    }
}

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

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FormatLabels {
    format: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SinkLabels {
    sink: String,
}

/// What the alert sinks report to `/metrics`, by sink (its name in the
/// config: `webhook:NAME`, `syslog`, `alertmanager:NAME@HOST:PORT`).
#[derive(Clone, Default)]
pub struct SinkMetrics {
    delivered: Family<SinkLabels, Counter>,
    failures: Family<SinkLabels, Counter>,
    refused: Family<SinkLabels, Counter>,
    lag: Family<SinkLabels, Gauge<f64, AtomicU64>>,
    /// Each sink's event in delivery, by when it was made (`None`: idle).
    in_flight: Arc<Mutex<BTreeMap<String, Option<Timestamp>>>>,
}

impl SinkMetrics {
    fn labels(sink: &str) -> SinkLabels {
        SinkLabels { sink: sink.to_owned() }
    }

    /// Lists `sink` (at zero) before it has done anything.
    pub fn add(&self, sink: &str) {
        let labels = SinkMetrics::labels(sink);
        let _ = self.delivered.get_or_create(&labels);
        let _ = self.failures.get_or_create(&labels);
        let _ = self.refused.get_or_create(&labels);
        let _ = self.lag.get_or_create(&labels);
        self.in_flight().entry(sink.to_owned()).or_insert(None);
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Option<Timestamp>>> {
        self.in_flight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `sink` is delivering an event made at `made` (until [`SinkMetrics::idle`]).
    pub fn delivering(&self, sink: &str, made: Timestamp) {
        self.in_flight().insert(sink.to_owned(), Some(made));
    }

    /// `sink` has no event in delivery.
    pub fn idle(&self, sink: &str) {
        self.in_flight().insert(sink.to_owned(), None);
    }

    /// `sink` delivered an event (or a batch of alerts re-sent).
    pub fn delivered(&self, sink: &str) {
        self.delivered.get_or_create(&SinkMetrics::labels(sink)).inc();
    }

    /// A delivery by `sink` failed and will be tried again.
    pub fn failed(&self, sink: &str) {
        self.failures.get_or_create(&SinkMetrics::labels(sink)).inc();
    }

    /// `sink`'s receiver refused an event for good (skipped).
    pub fn refused(&self, sink: &str) {
        self.refused.get_or_create(&SinkMetrics::labels(sink)).inc();
    }

    /// Sets each sink's lag as of `now`: how long ago the event it is
    /// delivering was made, 0 when it has none.
    fn measure(&self, now: Timestamp) {
        for (sink, made) in self.in_flight().iter() {
            let lag = made.map_or(0.0, |made| now.duration_since(made).as_secs_f64().max(0.0));
            self.lag.get_or_create(&SinkMetrics::labels(sink)).set(lag);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ListLabels {
    list: String,
}

/// What the threat lists (`[[threat.list]]`, [`crate::threat`]) report to
/// `/metrics`, by list (its name in the config).
#[derive(Clone, Default)]
pub struct ThreatMetrics {
    entries: Family<ListLabels, Gauge>,
    bad_lines: Family<ListLabels, Gauge>,
    reload_failures: Family<ListLabels, Counter>,
}

impl ThreatMetrics {
    fn labels(list: &str) -> ListLabels {
        ListLabels { list: list.to_owned() }
    }

    /// `list` was loaded: `entries` networks, `bad_lines` lines not used.
    pub fn loaded(&self, list: &str, entries: usize, bad_lines: usize) {
        let labels = ThreatMetrics::labels(list);
        self.entries
            .get_or_create(&labels)
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.bad_lines
            .get_or_create(&labels)
            .set(i64::try_from(bad_lines).unwrap_or(i64::MAX));
        let _ = self.reload_failures.get_or_create(&labels);
    }

    /// A reload of `list` failed: the previous one is kept.
    pub fn reload_failed(&self, list: &str) {
        self.reload_failures.get_or_create(&ThreatMetrics::labels(list)).inc();
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "threat_list_entries",
            "Networks of each threat list ([[threat.list]]) as loaded now",
            self.entries.clone(),
        );
        registry.register(
            "threat_list_bad_lines",
            "Lines of each threat list's file that were not used (the collector's log names the first ones and \
             why), as loaded now",
            self.bad_lines.clone(),
        );
        registry.register(
            "threat_list_reload_failures",
            "Reloads of a changed threat list file that failed (unreadable, or no entry in it): the previous \
             list is kept, the collector's log says why",
            self.reload_failures.clone(),
        );
    }
}

/// The collector's metrics.
pub struct Metrics {
    registry: Registry,
    ingest_seconds: Histogram,
    batches_queued: Gauge,
    scrapes: Family<FormatLabels, Counter>,
    sinks: SinkMetrics,
    threat: ThreatMetrics,
    resident: Gauge<u64, AtomicU64>,
    ingest_requests: Family<OutcomeLabels, Counter>,
    ingest_reports: Counter,
    strings_cut: Counter,
    tags_dropped: Counter,
    peer_summaries: Counter,
    peers_dropped: Counter,
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
    heavy_reads_abandoned: Counter,
    /// Retention (`collector/src/retention.rs`): rows pruned, by kind.
    pruned: Family<KindLabels, Counter>,
    prune_passes: Counter,
    alerts_held: Gauge,
    /// The view from outside (`crate::probe`): connects made, by outcome.
    probe_connects: Family<OutcomeLabels, Counter>,
    /// Heartbeats the store kept in memory, and its flushes ([`HeartbeatStats`]).
    heartbeats: HeartbeatCounters,
}

/// The store's [`HeartbeatStats`] as counters, and what they showed last.
struct HeartbeatCounters {
    kept: Counter,
    flushes: Counter,
    rows: Counter,
    failures: Counter,
    shown: Mutex<HeartbeatStats>,
}

impl HeartbeatCounters {
    fn register(registry: &mut Registry) -> HeartbeatCounters {
        let counters = HeartbeatCounters {
            kept: Counter::default(),
            flushes: Counter::default(),
            rows: Counter::default(),
            failures: Counter::default(),
            shown: Mutex::default(),
        };
        registry.register(
            "store_heartbeats_kept",
            "Heartbeats answered without a write, kept in memory until the next flush (PostgreSQL; a SQLite \
             store writes them with their group)",
            counters.kept.clone(),
        );
        registry.register(
            "store_heartbeat_flushes",
            "Flushes of the heartbeats kept in memory: one statement each, every [postgres] heartbeat_flush \
             when any heartbeat came",
            counters.flushes.clone(),
        );
        registry.register(
            "store_heartbeat_flush_rows",
            "Host rows the heartbeat flushes changed",
            counters.rows.clone(),
        );
        registry.register(
            "store_heartbeat_flush_failures",
            "Heartbeat flushes that failed (what they held is written by the next; the collector's log says why)",
            counters.failures.clone(),
        );
        counters
    }

    /// Moves the counters up to `now` (what the store says it has done).
    fn show(&self, now: HeartbeatStats) {
        let mut shown = self.shown.lock().unwrap_or_else(PoisonError::into_inner);
        self.kept.inc_by(now.kept.saturating_sub(shown.kept));
        self.flushes.inc_by(now.flushes.saturating_sub(shown.flushes));
        self.rows.inc_by(now.rows.saturating_sub(shown.rows));
        self.failures.inc_by(now.failures.saturating_sub(shown.failures));
        *shown = now;
    }
}

/// The longest collector name `[metrics] collector` takes.
pub const MAX_COLLECTOR_NAME: usize = 128;

/// Whether `name` may be a collector's name in the `collector` label:
/// 1 to [`MAX_COLLECTOR_NAME`] bytes, no control character.
pub fn check_collector_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_COLLECTOR_NAME {
        return Err(format!("{name:?} is not 1 to {MAX_COLLECTOR_NAME} bytes long"));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{name:?} has a control character"));
    }
    Ok(())
}

/// The default name of a collector listening on `port` of this machine:
/// `HOSTNAME:PORT`, stable across restarts.
pub fn default_collector_name(port: u16) -> String {
    format!("{}:{port}", crate::lease::this_host())
}

/// What a probe's connect answered, as `/metrics` labels it.
const PROBE_OUTCOMES: [&str; 4] = ["connected", "refused", "timed_out", "failed"];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// The kinds of rows pruning removes, as `/metrics` labels them.
const PRUNED_KINDS: [&str; 6] = [
    "intervals",
    "programs",
    "alerts",
    "alert_events",
    "baseline_log",
    "peer_points",
];

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric, at zero, for a collector named after this
    /// machine alone (tests, and a router built without a name).
    pub fn new() -> Metrics {
        Metrics::named(&crate::lease::this_host(), ThreatMetrics::default())
    }

    /// Registers every metric, at zero, for the collector `collector` (see
    /// [`check_collector_name`]), whose threat lists report to `threat`.
    pub fn named(collector: &str, threat: ThreatMetrics) -> Metrics {
        let mut root = Registry::default();
        let fleet = root.sub_registry_with_prefix("portwatch");
        let hosts = Family::<StatusLabels, Gauge>::default();
        fleet.register(
            "hosts",
            "Hosts by status: up, or silent (three intervals missed), read from the database: the same on every \
             collector of it",
            hosts.clone(),
        );
        let listeners = Gauge::default();
        fleet.register("listeners_open", "Listeners open now, fleet-wide", listeners.clone());
        let dropped = Gauge::<u64, AtomicU64>::default();
        fleet.register(
            "agent_reports_dropped",
            "Reports agents lost before the collector stored them (a full spool, a batch refused for good, \
             a gap), summed over the fleet; per host in portwatch hosts (DROPPED)",
            dropped.clone(),
        );
        let alerts = Family::<AlertLabels, Gauge>::default();
        fleet.register(
            "alerts_active",
            "Open and acknowledged alerts, by kind and state",
            alerts.clone(),
        );
        let baselines = Gauge::default();
        fleet.register("baselines", "Baselines applied", baselines.clone());
        let store_bytes = Gauge::<u64, AtomicU64>::default();
        fleet.register(
            "store_size_bytes",
            "Size of the store on disk (SQLite: the database file and its WAL; PostgreSQL: the database)",
            store_bytes.clone(),
        );
        let label = || (Cow::Borrowed("collector"), Cow::Owned(collector.to_owned()));
        // The standard name every process exporter uses, without the prefix.
        let resident = Gauge::<u64, AtomicU64>::default();
        root.sub_registry_with_label(label()).register_with_unit(
            "process_resident_memory",
            "Resident memory of the collector process (VmRSS)",
            Unit::Bytes,
            resident.clone(),
        );
        let registry = root
            .sub_registry_with_prefix("portwatch")
            .sub_registry_with_label(label());
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
        let peer_summaries = Counter::default();
        registry.register(
            "ingest_peer_summaries",
            "Inbound peer summaries received from agents (protocol version 3) and recorded in the peers time series",
            peer_summaries.clone(),
        );
        let peers_dropped = Counter::default();
        registry.register(
            "agent_peer_summaries_dropped",
            "Inbound peer summaries agents say they dropped unsent (a full queue, a collector older than version 3, \
             a batch refused)",
            peers_dropped.clone(),
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
        let heavy_reads_abandoned = Counter::default();
        registry.register(
            "heavy_reads_abandoned",
            "Heavy reads (fleet-wide trends, a port's history across the fleet) stopped midway because their \
             client hung up",
            heavy_reads_abandoned.clone(),
        );
        let ingest_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register_with_unit(
            "ingest_duration",
            "Time from an ingest request's headers to its acknowledgement, for stored batches (reading, \
             checking, queueing for the store, committing)",
            Unit::Seconds,
            ingest_seconds.clone(),
        );
        let batches_queued = Gauge::default();
        registry.register(
            "ingest_batches_queued",
            "Report batches handed to the store and not yet committed (waiting for the committer, or in its \
             transaction)",
            batches_queued.clone(),
        );
        let scrapes = Family::<FormatLabels, Counter>::default();
        registry.register(
            "metrics_scrapes",
            "Answers of /metrics, by the format the scraper asked for (prometheus: text 0.0.4, openmetrics)",
            scrapes.clone(),
        );
        for format in [Format::Prometheus, Format::OpenMetrics] {
            let _ = scrapes.get_or_create(&FormatLabels { format: format.name() });
        }
        let sinks = SinkMetrics::default();
        registry.register(
            "alert_sink_deliveries",
            "Alert changes a sink delivered (an Alertmanager sink also counts each batch of active alerts it \
             re-sent)",
            sinks.delivered.clone(),
        );
        registry.register(
            "alert_sink_failures",
            "Deliveries a sink tried that failed and will be tried again (receiver unreachable, 5xx, 408, 429, \
             syslog socket failing); the collector's log says why",
            sinks.failures.clone(),
        );
        registry.register(
            "alert_sink_refused",
            "Alert changes a sink's receiver refused for good (logged as errors and skipped)",
            sinks.refused.clone(),
        );
        registry.register_with_unit(
            "alert_sink_lag",
            "How long ago the alert change a sink is delivering was made; 0 when the sink has nothing to deliver",
            Unit::Seconds,
            sinks.lag.clone(),
        );
        for outcome in OUTCOMES {
            let _ = ingest_requests.get_or_create(&OutcomeLabels {
                outcome: outcome_name(outcome),
            });
        }
        let (pruned, prune_passes, alerts_held) = register_retention(registry);
        let probe_connects = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "probe_connects",
            "TCP connects the collector's probe ([probe], portwatch-collector probe run by serve) made to reported \
             listeners, by outcome: connected, refused, timed_out, failed",
            probe_connects.clone(),
        );
        for outcome in PROBE_OUTCOMES {
            let _ = probe_connects.get_or_create(&OutcomeLabels { outcome });
        }
        threat.register(registry);
        let heartbeats = HeartbeatCounters::register(registry);
        Metrics {
            registry: root,
            ingest_seconds,
            batches_queued,
            scrapes,
            sinks,
            threat,
            resident,
            ingest_requests,
            ingest_reports,
            strings_cut,
            tags_dropped,
            peer_summaries,
            peers_dropped,
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
            heavy_reads_abandoned,
            pruned,
            prune_passes,
            alerts_held,
            probe_connects,
            heartbeats,
        }
    }

    /// Counts a batch's peer summaries recorded, and those its agent says it dropped.
    pub fn peers(&self, recorded: usize, dropped: u64) {
        self.peer_summaries.inc_by(recorded as u64);
        self.peers_dropped.inc_by(dropped);
    }

    /// Counts a probe's connects by what they answered: how many connected,
    /// were refused, timed out and failed otherwise.
    pub fn probed(&self, [connected, refused, timed_out, failed]: [u64; 4]) {
        for (outcome, n) in PROBE_OUTCOMES.into_iter().zip([connected, refused, timed_out, failed]) {
            self.probe_connects.get_or_create(&OutcomeLabels { outcome }).inc_by(n);
        }
    }

    /// What the alert sinks report to.
    pub fn sinks(&self) -> SinkMetrics {
        self.sinks.clone()
    }

    /// What the threat lists report to.
    pub fn threat(&self) -> ThreatMetrics {
        self.threat.clone()
    }

    /// A stored batch took `took` from its request's headers to its acknowledgement.
    pub fn ingest_took(&self, took: Duration) {
        self.ingest_seconds.observe(took.as_secs_f64());
    }

    /// `n` more batches were handed to the store (negative: committed or failed).
    pub fn batches_queued(&self, n: i64) {
        self.batches_queued.inc_by(n);
    }

    /// Counts a pass of the background pruner and what it removed.
    pub fn pruned(&self, pruned: &crate::store::Pruned) {
        let counts = [
            pruned.intervals,
            pruned.programs,
            pruned.alerts,
            pruned.alert_events,
            pruned.baseline_log,
            pruned.peer_points,
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

    /// A heavy read stopped because its client hung up.
    pub fn heavy_read_abandoned(&self) {
        self.heavy_reads_abandoned.inc();
    }

    /// Heavy reads stopped so far because their client hung up.
    pub fn heavy_reads_abandoned(&self) -> u64 {
        self.heavy_reads_abandoned.get()
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

    /// Reads the gauges from `store` as of `now` and renders every metric
    /// in `format`. Blocks on the store.
    pub fn render(&self, store: &dyn Store, now: Timestamp, format: Format) -> Result<String, StoreError> {
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
        if let Some(stats) = store.heartbeat_stats() {
            self.heartbeats.show(stats);
        }
        self.sinks.measure(now);
        self.scrapes
            .get_or_create(&FormatLabels { format: format.name() })
            .inc();
        match resident_bytes() {
            Ok(bytes) => {
                self.resident.set(bytes);
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the collector's resident memory from /proc/self/status"),
        }
        let mut text = String::new();
        match format {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry),
            Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut text, &self.registry),
        }
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

/// This process's resident memory, in bytes (`VmRSS` of `/proc/self/status`).
fn resident_bytes() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    parse_vm_rss(&status).ok_or_else(|| "no VmRSS line".to_owned())
}

/// `VmRSS:     12345 kB` of a `/proc/PID/status` text, in bytes.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scraper_gets_the_format_it_asks_for() {
        // What Prometheus 2.42 sends, and what it sent before OpenMetrics.
        let prometheus =
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
                          text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(
            Format::negotiate(Some("text/plain;version=0.0.4;q=1,*/*;q=0.1")),
            Format::Prometheus
        );
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("application/json")), Format::Prometheus);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text")),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some("Application/OpenMetrics-Text; Version=\"1.0.0\"")),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;version=2.0.0")),
            Format::Prometheus,
            "a version not spoken"
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0.2, text/plain;q=0.9")),
            Format::Prometheus
        );
        assert_eq!(
            Format::negotiate(Some("text/plain;q=0, application/*;q=0.3")),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0")),
            Format::Prometheus
        );
    }

    #[test]
    fn resident_memory_is_read_from_the_status_file() {
        let status = "Name:\tportwatch-collec\nVmPeak:\t  90000 kB\nVmRSS:\t   20480 kB\nThreads:\t9\n";
        assert_eq!(parse_vm_rss(status), Some(20 << 20));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert!(resident_bytes().unwrap() > 0);
    }

    #[test]
    fn a_sink_s_lag_is_the_age_of_the_change_it_is_delivering() {
        let metrics = Metrics::named("c1:7878", ThreatMetrics::default());
        let sinks = metrics.sinks();
        sinks.add("webhook:ops");
        let now = Timestamp::from_second(1_800_000_100).unwrap();
        sinks.delivering("webhook:ops", Timestamp::from_second(1_800_000_000).unwrap());
        sinks.failed("webhook:ops");
        sinks.measure(now);
        let text = render_registry(&metrics);
        for line in [
            "portwatch_alert_sink_lag_seconds{collector=\"c1:7878\",sink=\"webhook:ops\"} 100.0",
            "portwatch_alert_sink_failures_total{collector=\"c1:7878\",sink=\"webhook:ops\"} 1",
            "portwatch_alert_sink_deliveries_total{collector=\"c1:7878\",sink=\"webhook:ops\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
        }
        sinks.delivered("webhook:ops");
        sinks.idle("webhook:ops");
        sinks.measure(now);
        let text = render_registry(&metrics);
        assert!(
            text.lines()
                .any(|l| l == "portwatch_alert_sink_lag_seconds{collector=\"c1:7878\",sink=\"webhook:ops\"} 0.0"),
            "{text}"
        );
    }

    #[test]
    fn the_process_s_own_series_name_the_collector_and_the_fleet_s_do_not() {
        let metrics = Metrics::named("db-1:7878", ThreatMetrics::default());
        metrics.ingested(Outcome::Stored, 3);
        metrics.hosts.get_or_create(&StatusLabels { status: "up" }).set(2);
        metrics.heartbeats.show(HeartbeatStats {
            kept: 10,
            flushes: 2,
            rows: 4,
            failures: 0,
        });
        metrics.heartbeats.show(HeartbeatStats {
            kept: 12,
            flushes: 3,
            rows: 5,
            failures: 1,
        });
        let text = render_registry(&metrics);
        for line in [
            "portwatch_ingest_requests_total{collector=\"db-1:7878\",outcome=\"stored\"} 1",
            "portwatch_ingest_reports_total{collector=\"db-1:7878\"} 3",
            "portwatch_store_heartbeats_kept_total{collector=\"db-1:7878\"} 12",
            "portwatch_store_heartbeat_flushes_total{collector=\"db-1:7878\"} 3",
            "portwatch_store_heartbeat_flush_rows_total{collector=\"db-1:7878\"} 5",
            "portwatch_store_heartbeat_flush_failures_total{collector=\"db-1:7878\"} 1",
            "portwatch_hosts{status=\"up\"} 2",
            "portwatch_listeners_open 0",
            "portwatch_store_size_bytes 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
        }
        assert!(
            text.lines()
                .any(|l| l.starts_with("process_resident_memory_bytes{collector=\"db-1:7878\"} ")),
            "{text}"
        );
        let unlabelled: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.contains("collector=\"db-1:7878\""))
            .map(|l| l.split(['{', ' ']).next().unwrap_or(l))
            .collect();
        let fleet = [
            "portwatch_hosts",
            "portwatch_listeners_open",
            "portwatch_agent_reports_dropped",
            "portwatch_alerts_active",
            "portwatch_baselines",
            "portwatch_store_size_bytes",
        ];
        assert!(
            unlabelled.iter().all(|name| fleet.contains(name)),
            "only the fleet's gauges go without the collector's name: {unlabelled:?}"
        );
    }

    #[test]
    fn a_collector_s_name_is_short_printable_text() {
        assert_eq!(check_collector_name("db-1:7878"), Ok(()));
        assert!(check_collector_name("").is_err());
        assert!(check_collector_name(&"x".repeat(MAX_COLLECTOR_NAME + 1)).is_err());
        assert!(check_collector_name("a\nb").unwrap_err().contains("control"));
        assert!(default_collector_name(7878).ends_with(":7878"));
    }

    fn render_registry(metrics: &Metrics) -> String {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &metrics.registry).unwrap();
        text
    }
}
