//! The collector's configuration file (TOML), strictly checked. Every key is
//! documented in `packaging/config/collector.toml`, which a test parses.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::alert::alertmanager::Alertmanager;
use crate::alert::drift::{self, Policy};
use crate::alert::evaluate;
use crate::alert::risky::RiskyPorts;
use crate::alert::sink::{Syslog, Webhook};
use crate::clock;
use crate::lifecycle::cap;
use crate::retention::{self, Retention};
use crate::setting::duration;
use crate::threat::{self, ListSpec};
use crate::{api, edge, probe};

/// Default listen address: loopback until told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";
/// Default database file.
pub const DEFAULT_DB: &str = "/var/lib/portwatch/collector.db";
/// Default configuration file, read when it exists and no `--config` is given.
pub const DEFAULT_CONFIG: &str = "/etc/portwatch/collector.toml";

/// The collector's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where the history is kept: a SQLite file (a path), or a PostgreSQL
    /// database (a `postgres://` or `postgresql://` URL).
    #[serde(default = "default_db")]
    pub db: Database,
    /// How to reach a PostgreSQL `db`: the password's file, the certificates
    /// TLS to it is verified against, the connections kept.
    #[serde(default)]
    pub postgres: PostgresConfig,
    /// Serve HTTPS with this certificate and key (default: plain HTTP).
    pub tls: Option<Tls>,
    /// Drift evaluation and alerting.
    #[serde(default)]
    pub alerts: Alerts,
    /// The `/metrics` endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// How far agents' clocks are trusted.
    #[serde(default)]
    pub clock: ClockConfig,
    /// Connections: how many, and how long a client may take.
    #[serde(default)]
    pub http: HttpConfig,
    /// What ingest may hold at once.
    #[serde(default)]
    pub ingest: IngestConfig,
    /// The web dashboard served at `/`.
    #[serde(default)]
    pub dashboard: DashboardConfig,
    /// How long history, alerts and the baseline log are kept.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Lists of suspicious addresses, and the addresses they never name.
    #[serde(default)]
    pub threat: ThreatConfig,
    /// The view from outside: TCP connects from this collector to the
    /// listeners hosts reported. Off by default: an active scan.
    #[serde(default)]
    pub probe: ProbeConfig,
}

/// `[probe]`: the view from outside (see [`crate::probe`]). **An active
/// scan of the fleet**, off unless `enabled`: turn it on only once the
/// security team responsible for the hosts (and the networks between) has
/// authorized it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// Whether this collector may probe: `serve` probes every `every` (under
    /// the `probe` lease), and `portwatch-collector probe` runs at all
    /// (`--dry-run` works without it). Default false.
    #[serde(default)]
    pub enabled: bool,
    /// Time between probes of the fleet by a serving collector.
    #[serde(default = "default_probe_every", deserialize_with = "duration")]
    pub every: Duration,
    /// Connects started per second, fleet-wide (1 to 1000).
    #[serde(default = "default_probe_rate")]
    pub rate: u32,
    /// How long a connect may take before its target counts as unreachable.
    #[serde(default = "default_probe_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Most connects in flight at once (1 to 1024).
    #[serde(default = "default_probe_concurrency")]
    pub concurrency: usize,
    /// Host name globs (`*`, `?`): only these hosts are probed (default: every host).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Addresses or CIDRs: only reported addresses within them are tried
    /// (default: every address a host reports as its own).
    #[serde(default, deserialize_with = "nets")]
    pub networks: Vec<ipnet::IpNet>,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            enabled: false,
            every: default_probe_every(),
            rate: default_probe_rate(),
            timeout: default_probe_timeout(),
            concurrency: default_probe_concurrency(),
            hosts: Vec::new(),
            networks: Vec::new(),
        }
    }
}

impl ProbeConfig {
    /// What a probe of the fleet does.
    pub fn settings(&self) -> probe::Settings {
        probe::Settings {
            pace: probe::Pace {
                rate: self.rate,
                concurrency: self.concurrency,
                timeout: self.timeout,
            },
            hosts: self.hosts.clone(),
            networks: self.networks.clone(),
        }
    }

    fn check(&self) -> Result<(), String> {
        if !(1..=probe::MAX_RATE).contains(&self.rate) {
            return Err(format!(
                "[probe] rate: {} is not between 1 and {}",
                self.rate,
                probe::MAX_RATE
            ));
        }
        if !(1..=MAX_PROBE_CONCURRENCY).contains(&self.concurrency) {
            return Err(format!(
                "[probe] concurrency: {} is not between 1 and {MAX_PROBE_CONCURRENCY}",
                self.concurrency
            ));
        }
        if self.timeout.is_zero() || self.every.is_zero() {
            return Err("[probe] timeout and every must be longer than 0s".to_owned());
        }
        Ok(())
    }
}

/// Most `[probe] concurrency`.
const MAX_PROBE_CONCURRENCY: usize = 1024;

fn default_probe_every() -> Duration {
    probe::DEFAULT_EVERY
}

fn default_probe_rate() -> u32 {
    probe::DEFAULT_RATE
}

fn default_probe_timeout() -> Duration {
    probe::DEFAULT_TIMEOUT
}

fn default_probe_concurrency() -> usize {
    probe::DEFAULT_CONCURRENCY
}

/// `[probe] networks`: addresses or CIDRs (`"10.0.0.0/8"`, `"2001:db8::1"`).
fn nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|text| {
            threat::parse::net(text.trim()).map_err(|e| {
                serde::de::Error::custom(format!(
                    "networks: {e}; write an address or a CIDR, like \"10.0.0.0/8\" or \"2001:db8::1\""
                ))
            })
        })
        .collect()
}

/// `[threat]`: the lists of suspicious addresses (`[[threat.list]]`, see
/// [`crate::threat`]) and the allowlist checked before them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreatConfig {
    /// Addresses or CIDRs no list may report, checked first. Setting it
    /// replaces the default, [`threat::DEFAULT_ALLOW`]: every range that is
    /// not public (private, loopback, link-local, carrier-grade NAT, unique
    /// local, documentation, multicast, reserved), which FireHOL's level 1
    /// lists as bogons. `allow = []` allows nothing.
    #[serde(default = "threat::default_allow", deserialize_with = "threat_allow")]
    pub allow: Vec<ipnet::IpNet>,
    /// How often the lists' files are checked for a change (a changed file
    /// is loaded again; SIGHUP reloads every list at once).
    #[serde(default = "default_threat_check_every", deserialize_with = "duration")]
    pub check_every: Duration,
    /// The lists (`[[threat.list]]`), looked up in this order.
    #[serde(default)]
    pub list: Vec<ListSpec>,
}

impl Default for ThreatConfig {
    fn default() -> Self {
        ThreatConfig {
            allow: threat::default_allow(),
            check_every: default_threat_check_every(),
            list: Vec::new(),
        }
    }
}

impl ThreatConfig {
    /// Whether the lists' names are usable and unique.
    fn check(&self) -> Result<(), String> {
        for (i, list) in self.list.iter().enumerate() {
            list.check().map_err(|e| format!("[[threat.list]] #{}: {e}", i + 1))?;
            if self.list[..i].iter().any(|l| l.name == list.name) {
                return Err(format!(
                    "[[threat.list]] #{}: the name {:?} is taken by another list; names must be unique",
                    i + 1,
                    list.name
                ));
            }
        }
        Ok(())
    }
}

fn default_threat_check_every() -> Duration {
    threat::reload::DEFAULT_CHECK_EVERY
}

/// `[threat] allow`: addresses or CIDRs (`"10.0.0.0/8"`, `"2001:db8::1"`).
fn threat_allow<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|text| {
            threat::parse::net(text.trim()).map_err(|e| {
                serde::de::Error::custom(format!(
                    "allow: {e}; write an address or a CIDR, like \"10.0.0.0/8\" or \"2001:db8::1\""
                ))
            })
        })
        .collect()
}

/// `[dashboard]`: the web dashboard at `/` (same address and TLS as the API),
/// and its sign-in sessions (see [`crate::api`]'s session module).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardConfig {
    /// Serve the dashboard and accept its session cookies. When false, `/`
    /// and `/api/v1/session` answer 404 and only bearer tokens authenticate.
    #[serde(default = "default_dashboard_enabled")]
    pub enabled: bool,
    /// How long a sign-in lasts (from the sign-in, however active the user);
    /// then the session ends and the user signs in again. At most 7 days.
    #[serde(default = "default_session_ttl", deserialize_with = "duration")]
    pub session_ttl: Duration,
    /// How often the live views (those without an "as it was at" time)
    /// fetch their data again, keeping the user's place. 1 s to 1 h.
    #[serde(default = "default_refresh", deserialize_with = "duration")]
    pub refresh: Duration,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            enabled: default_dashboard_enabled(),
            session_ttl: default_session_ttl(),
            refresh: default_refresh(),
        }
    }
}

impl DashboardConfig {
    /// The dashboard's settings for the router; `tls`: whether the server
    /// speaks HTTPS (session cookies are then `Secure`).
    pub fn settings(&self, tls: bool) -> api::DashboardSettings {
        api::DashboardSettings {
            enabled: self.enabled,
            session_ttl: self.session_ttl,
            refresh: self.refresh,
            secure_cookies: tls,
        }
    }
}

fn default_dashboard_enabled() -> bool {
    api::DEFAULT_DASHBOARD_ENABLED
}

fn default_session_ttl() -> Duration {
    api::DEFAULT_SESSION_TTL
}

fn default_refresh() -> Duration {
    api::DEFAULT_REFRESH
}

/// `[retention]`: how long each kind of record is kept before the background
/// pruner deletes it (the rules are in [`crate::retention`]). Each takes a
/// duration of at least one day (`"400d"`, `"26w"`) or `"forever"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Listener intervals closed longer ago than this are deleted; open
    /// ones never are. Programs no interval names any more go with them.
    #[serde(default = "default_history_retention", deserialize_with = "lifetime")]
    pub history: Option<Duration>,
    /// Alerts resolved longer ago than this are deleted with their outbox
    /// events, once every sink has delivered those.
    #[serde(default = "default_alerts_retention", deserialize_with = "lifetime")]
    pub alerts: Option<Duration>,
    /// Baseline changes made longer ago than this are deleted, but each
    /// baseline's latest (default: kept forever).
    #[serde(default, deserialize_with = "lifetime")]
    pub baseline_log: Option<Duration>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            history: default_history_retention(),
            alerts: default_alerts_retention(),
            baseline_log: None,
        }
    }
}

impl RetentionConfig {
    /// The lifetimes the pruner and the queries go by.
    pub fn retention(&self) -> Retention {
        Retention {
            history: self.history,
            alerts: self.alerts,
            baseline_log: self.baseline_log,
        }
    }
}

fn default_history_retention() -> Option<Duration> {
    Some(retention::DEFAULT_HISTORY)
}

fn default_alerts_retention() -> Option<Duration> {
    Some(retention::DEFAULT_ALERTS)
}

/// A lifetime: a duration (no upper bound), or `"forever"` (`None`).
fn lifetime<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    if text.trim() == "forever" {
        return Ok(None);
    }
    humantime::parse_duration(text.trim()).map(Some).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {text:?} ({e}); write it like \"400d\" or \"26w\", or \"forever\""
        ))
    })
}

/// `[http]`: the server's connection limit and timeouts (what a client sees
/// at each is in [`crate::edge`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Most connections open at once; more wait to be accepted until one
    /// closes. Each takes a file descriptor, and up to about 30 KiB while
    /// its headers are read.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A new connection must send its first request's headers (after the TLS
    /// handshake, bounded by the same time) within this, or it is closed.
    #[serde(default = "default_header_timeout", deserialize_with = "duration")]
    pub header_timeout: Duration,
    /// A kept-alive connection is closed when its next request's headers have
    /// not arrived this long after the previous answer.
    #[serde(default = "default_idle_timeout", deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// A request body that sends nothing for this long is refused (ingest: 408).
    #[serde(default = "default_body_timeout", deserialize_with = "duration")]
    pub body_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_connections: default_max_connections(),
            header_timeout: default_header_timeout(),
            idle_timeout: default_idle_timeout(),
            body_timeout: default_body_timeout(),
        }
    }
}

impl HttpConfig {
    /// The server's limits.
    pub fn limits(&self) -> edge::Limits {
        edge::Limits {
            max_connections: self.max_connections,
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
        }
    }
}

fn default_max_connections() -> usize {
    edge::DEFAULT_MAX_CONNECTIONS
}

fn default_header_timeout() -> Duration {
    edge::DEFAULT_HEADER_TIMEOUT
}

fn default_idle_timeout() -> Duration {
    edge::DEFAULT_IDLE_TIMEOUT
}

fn default_body_timeout() -> Duration {
    edge::DEFAULT_BODY_TIMEOUT
}

/// Most connections `max_connections` takes.
const MAX_CONNECTIONS: usize = 1_000_000;

/// `[ingest]`: what ingest may hold at once (see [`crate::api`]'s ingest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Most decompressed bytes of batches being read, parsed, queued or
    /// committed at once; a batch beyond it gets 503 with `Retry-After`.
    /// At least 32 MiB, the largest batch.
    #[serde(default = "default_max_bytes_in_flight")]
    pub max_bytes_in_flight: usize,
    /// Most decompressed bytes of one batch; a larger one gets 413. Stated
    /// to agents in every acknowledgement, so they send smaller ones (an
    /// agent that has not heard it yet sends up to 32 MiB, and halves a
    /// batch answered 413). From 2 MiB (a report is at most 1 MiB) to 32 MiB.
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_bytes_in_flight: default_max_bytes_in_flight(),
            max_batch_bytes: default_max_batch_bytes(),
        }
    }
}

fn default_max_batch_bytes() -> usize {
    api::MAX_DECOMPRESSED_BYTES
}

/// The smallest `max_batch_bytes`: two of the largest reports an agent makes.
const MIN_BATCH_BYTES: usize = 2 * portwatch_common::wire::REPORT_BYTES;

fn default_max_bytes_in_flight() -> usize {
    api::DEFAULT_MAX_BYTES_IN_FLIGHT
}

/// `[clock]`: how far the collector trusts the times agents report (the
/// rules are in [`crate::clock`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockConfig {
    /// A report dated more than this after it was received is dated when
    /// received; a host whose clock is off by more than this, either way,
    /// has a `clock-skew` finding. At most 1 hour.
    #[serde(default = "default_tolerance", deserialize_with = "duration")]
    pub tolerance: Duration,
    /// A report observed longer than this before it was received (replayed
    /// from an agent's spool) is dated this long before it was received:
    /// the furthest back an agent can date a change, or a port's first
    /// sighting.
    #[serde(default = "default_max_backlog", deserialize_with = "duration")]
    pub max_backlog: Duration,
}

impl Default for ClockConfig {
    fn default() -> Self {
        ClockConfig {
            tolerance: default_tolerance(),
            max_backlog: default_max_backlog(),
        }
    }
}

impl ClockConfig {
    /// The limits ingest dates reports by.
    pub fn limits(&self) -> clock::Limits {
        clock::Limits {
            tolerance: self.tolerance,
            max_backlog: self.max_backlog,
        }
    }
}

fn default_tolerance() -> Duration {
    clock::DEFAULT_TOLERANCE
}

fn default_max_backlog() -> Duration {
    clock::DEFAULT_MAX_BACKLOG
}

/// `[metrics]`: who may read `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` without a token (default: a read or admin token is needed).
    #[serde(default)]
    pub public: bool,
    /// This collector's name in the `collector` label of its own counters
    /// and gauges (those of the process, not of the fleet), so that several
    /// collectors on one database are told apart however they are scraped;
    /// default: this machine's name and the port it listens on (`db-1:7878`).
    #[serde(default)]
    pub collector: Option<String>,
}

/// How drift is evaluated and alerts raised (`[alerts]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alerts {
    /// Ports that must not be reachable beyond loopback unless a baseline
    /// accepts it (`"tcp/5432"`, `"udp/161=SNMP"`); replaces the built-in list.
    #[serde(default)]
    pub risky_ports: Option<RiskyPorts>,
    /// A listener that closed more than this many times in `flap_window` is flapping.
    #[serde(default = "default_flap_max")]
    pub flap_max: u32,
    /// The flapping window.
    #[serde(default = "default_flap_window", deserialize_with = "duration")]
    pub flap_window: Duration,
    /// After a start, how long before any host may be judged silent (agents
    /// retrying with backoff need time to come back).
    #[serde(default = "default_startup_grace", deserialize_with = "duration")]
    pub startup_grace: Duration,
    /// How often every host is evaluated (changed hosts are evaluated at once).
    #[serde(default = "default_sweep_every", deserialize_with = "duration")]
    pub sweep_every: Duration,
    /// Most unresolved alerts of one kind on one host (1 to 10,000); the
    /// findings beyond are counted in one summary alert of that host and kind.
    #[serde(default = "default_max_open_per_kind")]
    pub max_open_per_kind: usize,
    /// Webhooks that receive every alert change (`[[alerts.webhook]]`).
    #[serde(default)]
    pub webhook: Vec<Webhook>,
    /// Also send alert changes to the local syslog (`[alerts.syslog]`).
    pub syslog: Option<Syslog>,
    /// Alertmanagers that are sent every alert, and every active alert again
    /// every `resend_every` (`[[alerts.alertmanager]]`).
    #[serde(default)]
    pub alertmanager: Vec<Alertmanager>,
}

impl Default for Alerts {
    fn default() -> Self {
        Alerts {
            risky_ports: None,
            flap_max: default_flap_max(),
            flap_window: default_flap_window(),
            sweep_every: default_sweep_every(),
            startup_grace: default_startup_grace(),
            max_open_per_kind: default_max_open_per_kind(),
            webhook: Vec::new(),
            syslog: None,
            alertmanager: Vec::new(),
        }
    }
}

impl Alerts {
    /// The drift policy these settings make, with the default clock
    /// tolerance ([`Config::policy`] has the configured one).
    pub fn policy(&self) -> Policy {
        Policy {
            risky: self.risky_ports.clone().unwrap_or_default(),
            flap_max: self.flap_max,
            flap_window: self.flap_window,
            startup_grace: self.startup_grace,
            clock_tolerance: clock::DEFAULT_TOLERANCE,
            max_open_per_kind: self.max_open_per_kind,
        }
    }
}

fn default_flap_max() -> u32 {
    drift::DEFAULT_FLAP_MAX
}

fn default_flap_window() -> Duration {
    drift::DEFAULT_FLAP_WINDOW
}

fn default_startup_grace() -> Duration {
    drift::DEFAULT_STARTUP_GRACE
}

fn default_max_open_per_kind() -> usize {
    cap::DEFAULT_MAX_OPEN
}

fn default_sweep_every() -> Duration {
    evaluate::DEFAULT_SWEEP_EVERY
}

/// The collector's TLS certificate and key, PEM files read at start (and
/// again on SIGHUP, so a renewed certificate needs no restart).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Certificate chain, the collector's own certificate first.
    pub cert: PathBuf,
    /// Private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7878))
}

fn default_db() -> Database {
    Database::Sqlite(PathBuf::from(DEFAULT_DB))
}

/// Where the history is kept (the `db` setting, or `--db`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file, created and migrated at start.
    Sqlite(PathBuf),
    /// A PostgreSQL database (`postgres://` or `postgresql://`, libpq-style
    /// options such as `sslmode` and `host=/run/postgresql` in the query),
    /// migrated at start; any number of collectors may share it.
    Postgres(String),
}

impl Database {
    /// `db` as the setting says it: a URL of PostgreSQL, else a file's path.
    pub fn parse(db: &str) -> Database {
        if crate::store::postgres::PostgresOptions::is_url(db) {
            Database::Postgres(db.to_owned())
        } else {
            Database::Sqlite(PathBuf::from(db))
        }
    }

    /// The SQLite file, if the history is kept in one.
    pub fn sqlite_file(&self) -> Option<&Path> {
        match self {
            Database::Sqlite(path) => Some(path),
            Database::Postgres(_) => None,
        }
    }
}

impl std::fmt::Display for Database {
    /// The file's path, or the URL with any password masked.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "{}", path.display()),
            Database::Postgres(url) => f.write_str(&crate::store::postgres::shown(url)),
        }
    }
}

impl<'de> Deserialize<'de> for Database {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Database, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.is_empty() {
            return Err(serde::de::Error::custom(
                "db is empty: give a file (\"/var/lib/portwatch/collector.db\") or a postgres:// URL",
            ));
        }
        Ok(Database::parse(&text))
    }
}

/// `[postgres]`: how to reach a PostgreSQL `db` (ignored for a SQLite file).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// A file whose first line is the password (keep it out of the URL and
    /// the config: mode 0600, owned by the collector's user).
    pub password_file: Option<PathBuf>,
    /// PEM certificates a TLS connection to the database (`sslmode=require`
    /// or `prefer` in the URL) is verified against; the system's bundle if unset.
    pub ca_file: Option<PathBuf>,
    /// Connections to the database kept at most, per collector.
    #[serde(default = "default_postgres_connections")]
    pub max_connections: usize,
    /// How often the heartbeats a collector keeps in memory are written
    /// (every host heard from, in one statement): a crash loses at most this
    /// much of the hosts' `last_seen`, never history, and other collectors
    /// read `last_seen` up to this much behind (silence is judged with it:
    /// three of these at least). 100ms to 60s.
    #[serde(default = "default_heartbeat_flush", deserialize_with = "duration")]
    pub heartbeat_flush: Duration,
}

fn default_postgres_connections() -> usize {
    crate::store::postgres::DEFAULT_MAX_CONNECTIONS
}

fn default_heartbeat_flush() -> Duration {
    crate::store::postgres::DEFAULT_FLUSH_EVERY
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            password_file: None,
            ca_file: None,
            max_connections: default_postgres_connections(),
            heartbeat_flush: default_heartbeat_flush(),
        }
    }
}

impl PostgresConfig {
    /// The store's options for the database at `url`.
    pub fn options(&self, url: &str) -> crate::store::postgres::PostgresOptions {
        crate::store::postgres::PostgresOptions {
            url: url.to_owned(),
            password_file: self.password_file.clone(),
            ca_file: self.ca_file.clone(),
            max_connections: self.max_connections,
            heartbeat_flush: self.heartbeat_flush,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: default_listen(),
            db: default_db(),
            postgres: PostgresConfig::default(),
            tls: None,
            alerts: Alerts::default(),
            metrics: MetricsConfig::default(),
            clock: ClockConfig::default(),
            http: HttpConfig::default(),
            ingest: IngestConfig::default(),
            dashboard: DashboardConfig::default(),
            retention: RetentionConfig::default(),
            threat: ThreatConfig::default(),
            probe: ProbeConfig::default(),
        }
    }
}

impl Config {
    /// The file `path` if given, else [`DEFAULT_CONFIG`] if it exists, else the defaults.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let path = match path {
            Some(p) => p,
            None if Path::new(DEFAULT_CONFIG).exists() => Path::new(DEFAULT_CONFIG),
            None => return Ok(Config::default()),
        };
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        Config::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// The drift policy of `[alerts]` and `[clock]`.
    pub fn policy(&self) -> Policy {
        Policy {
            clock_tolerance: self.clock.tolerance,
            ..self.alerts.policy()
        }
    }

    /// What ingest may hold at once, from `[ingest]` and `[http] body_timeout`.
    pub fn ingest_limits(&self) -> api::IngestLimits {
        api::IngestLimits {
            max_bytes_in_flight: self.ingest.max_bytes_in_flight,
            max_batch_bytes: self.ingest.max_batch_bytes,
            body_timeout: self.http.body_timeout,
        }
    }

    /// Parses configuration text; the error names the line and key.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())?;
        config.probe.check()?;
        if config.clock.tolerance > clock::MAX_TOLERANCE {
            return Err(format!(
                "[clock] tolerance: {} is longer than {}, the most it takes (a host could date its changes that far \
                 after now)",
                humantime::format_duration(config.clock.tolerance),
                humantime::format_duration(clock::MAX_TOLERANCE)
            ));
        }
        if !(2..=1000).contains(&config.postgres.max_connections) {
            return Err(format!(
                "[postgres] max_connections: {} is not between 2 and 1000 (ingest takes a quarter, reads the rest)",
                config.postgres.max_connections
            ));
        }
        let (shortest, longest) = (
            crate::store::postgres::MIN_FLUSH_EVERY,
            crate::store::postgres::MAX_FLUSH_EVERY,
        );
        if !(shortest..=longest).contains(&config.postgres.heartbeat_flush) {
            return Err(format!(
                "[postgres] heartbeat_flush: {} is not between {} and {}",
                humantime::format_duration(config.postgres.heartbeat_flush),
                humantime::format_duration(shortest),
                humantime::format_duration(longest)
            ));
        }
        if let Some(name) = &config.metrics.collector {
            crate::metrics::check_collector_name(name).map_err(|e| format!("[metrics] collector: {e}"))?;
        }
        let http = &config.http;
        if !(1..=MAX_CONNECTIONS).contains(&http.max_connections) {
            return Err(format!(
                "[http] max_connections: {} is not between 1 and {MAX_CONNECTIONS}",
                http.max_connections
            ));
        }
        if http.header_timeout > http.idle_timeout {
            return Err(format!(
                "[http] header_timeout ({}) is longer than idle_timeout ({}), which bounds every request's headers: \
                 make it at most idle_timeout",
                humantime::format_duration(http.header_timeout),
                humantime::format_duration(http.idle_timeout)
            ));
        }
        if !(MIN_BATCH_BYTES..=api::MAX_DECOMPRESSED_BYTES).contains(&config.ingest.max_batch_bytes) {
            return Err(format!(
                "[ingest] max_batch_bytes: {} is not between {MIN_BATCH_BYTES} (2 MiB) and {} (32 MiB)",
                config.ingest.max_batch_bytes,
                api::MAX_DECOMPRESSED_BYTES
            ));
        }
        if config.ingest.max_bytes_in_flight < config.ingest.max_batch_bytes {
            return Err(format!(
                "[ingest] max_bytes_in_flight: {} is less than one batch of the largest size ({} bytes, \
                 max_batch_bytes), which could then never be taken",
                config.ingest.max_bytes_in_flight, config.ingest.max_batch_bytes
            ));
        }
        if config.dashboard.session_ttl > api::MAX_SESSION_TTL {
            return Err(format!(
                "[dashboard] session_ttl: {} is longer than {}, the most it takes (a stolen session cookie would \
                 work that long)",
                humantime::format_duration(config.dashboard.session_ttl),
                humantime::format_duration(api::MAX_SESSION_TTL)
            ));
        }
        let (shortest, longest) = api::REFRESH_RANGE;
        if !(shortest..=longest).contains(&config.dashboard.refresh) {
            return Err(format!(
                "[dashboard] refresh: {} is not between {} and {}",
                humantime::format_duration(config.dashboard.refresh),
                humantime::format_duration(shortest),
                humantime::format_duration(longest)
            ));
        }
        if !(1..=cap::MAX_MAX_OPEN).contains(&config.alerts.max_open_per_kind) {
            return Err(format!(
                "[alerts] max_open_per_kind: {} is not between 1 and {}",
                config.alerts.max_open_per_kind,
                cap::MAX_MAX_OPEN
            ));
        }
        retention::check(&config.retention.retention(), retention::floor())?;
        if let Some(syslog) = &config.alerts.syslog {
            syslog.check()?;
        }
        config.threat.check()?;
        let hooks = &config.alerts.webhook;
        for (i, hook) in hooks.iter().enumerate() {
            hook.check()
                .map_err(|e| format!("[[alerts.webhook]] #{}: {e}", i + 1))?;
            if hooks[..i].iter().any(|h| h.name == hook.name) {
                return Err(format!(
                    "[[alerts.webhook]] #{}: the name {:?} is taken by another webhook; names must be unique",
                    i + 1,
                    hook.name
                ));
            }
        }
        let managers = &config.alerts.alertmanager;
        for (i, am) in managers.iter().enumerate() {
            am.check()
                .map_err(|e| format!("[[alerts.alertmanager]] #{}: {e}", i + 1))?;
            if managers[..i].iter().any(|m| m.name == am.name) {
                return Err(format!(
                    "[[alerts.alertmanager]] #{}: the name {:?} is taken by another alertmanager; names must be unique",
                    i + 1,
                    am.name
                ));
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses_to_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/config/collector.toml");
        assert_eq!(Config::load(Some(&path)).unwrap(), Config::default());
        assert_eq!(Config::default().listen.to_string(), DEFAULT_LISTEN);
    }

    #[test]
    fn probing_is_off_by_default_and_its_pace_is_bounded() {
        let probe = Config::default().probe;
        assert!(!probe.enabled);
        assert_eq!(
            (probe.rate, probe.timeout),
            (probe::DEFAULT_RATE, probe::DEFAULT_TIMEOUT)
        );
        let on = Config::parse("[probe]\nenabled = true\nrate = 5\nnetworks = [\"10.0.0.0/8\"]\nhosts = [\"db-*\"]\n")
            .unwrap();
        assert!(on.probe.enabled);
        assert_eq!(on.probe.settings().pace.rate, 5);
        assert_eq!(on.probe.networks, vec!["10.0.0.0/8".parse::<ipnet::IpNet>().unwrap()]);
        let err = Config::parse("[probe]\nrate = 0\n").unwrap_err();
        assert!(err.contains("[probe] rate: 0 is not between 1 and 1000"), "{err}");
        let err = Config::parse("[probe]\nnetworks = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert!(err.contains("networks:"), "{err}");
        let err = Config::parse("[probe]\nrange = \"10.0.0.0/8\"\n").unwrap_err();
        assert!(err.contains("unknown field `range`"), "{err}");
    }

    /// The lines of the example's commented table `header`, up to the first blank line, uncommented.
    fn commented_table(text: &str, header: &str) -> String {
        let start = text
            .find(&format!("# {header}\n"))
            .unwrap_or_else(|| panic!("{header} is in the example"));
        text[start..]
            .lines()
            .take_while(|l| !l.trim().is_empty())
            .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
            .collect()
    }

    #[test]
    fn the_examples_commented_risky_list_webhook_syslog_and_alertmanager_are_the_built_in_ones_and_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/config/collector.toml");
        let text = std::fs::read_to_string(path).unwrap();
        // Uncomment the `risky_ports` lines.
        let mut risky = String::new();
        let mut in_risky = false;
        for line in text.lines() {
            if line.starts_with("# risky_ports") {
                in_risky = true;
            }
            if in_risky && line.starts_with("#  ") || line.starts_with("# risky_ports") {
                risky.push_str(&line[2..]);
                risky.push('\n');
            } else {
                in_risky = false;
            }
        }
        let parsed = Config::parse(&format!("[alerts]\n{risky}")).unwrap();
        assert_eq!(parsed.alerts.risky_ports, Some(RiskyPorts::default()), "{risky}");
        // The example's CA files do not exist here: without them, the tables are valid.
        let without_ca = |table: String| -> String {
            table
                .lines()
                .filter(|l| !l.starts_with("ca_file"))
                .map(|l| format!("{l}\n"))
                .collect()
        };
        let hook = without_ca(commented_table(&text, "[[alerts.webhook]]"));
        let parsed = Config::parse(&hook).unwrap();
        assert_eq!(parsed.alerts.webhook[0].name, "ops");
        let am = without_ca(commented_table(&text, "[[alerts.alertmanager]]"));
        let parsed = Config::parse(&am).unwrap_or_else(|e| panic!("{e}:\n{am}"));
        let am = &parsed.alerts.alertmanager[0];
        assert_eq!(
            (am.name.as_str(), am.urls.len(), am.resend_every),
            ("main", 2, crate::alert::alertmanager::DEFAULT_RESEND_EVERY)
        );
        assert_eq!(am.external_url.as_deref(), Some("https://portwatch.example.com"));
        let syslog = commented_table(&text, "[alerts.syslog]");
        let parsed = Config::parse(&syslog).unwrap().alerts.syslog.unwrap();
        assert_eq!(
            (parsed.facility.as_str(), parsed.socket.to_str()),
            ("daemon", Some("/dev/log"))
        );
        let e = Config::parse("[alerts.syslog]\nfacility = \"kernel-ish\"\n").unwrap_err();
        assert!(e.contains("facility") && e.contains("local0"), "{e}");
    }

    #[test]
    fn the_examples_threat_allowlist_is_the_default_and_its_commented_list_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/config/collector.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let start = text
            .find("# allow = [")
            .expect("the example shows the default allowlist");
        let allow: String = text[start..]
            .lines()
            .take_while(|l| l.starts_with("# "))
            .map(|l| format!("{}\n", &l[2..]))
            .collect();
        let parsed = Config::parse(&format!("[threat]\n{allow}")).unwrap_or_else(|e| panic!("{e}:\n{allow}"));
        assert_eq!(parsed.threat.allow, threat::default_allow(), "{allow}");
        let list = commented_table(&text, "[[threat.list]]");
        let parsed = Config::parse(&list).unwrap_or_else(|e| panic!("{e}:\n{list}"));
        let list = &parsed.threat.list[0];
        assert_eq!(
            (list.name.as_str(), list.format, list.severity),
            (
                "firehol-level1",
                threat::Format::Netset,
                portwatch_model::Severity::Critical
            )
        );
        assert_eq!(
            Config::default().threat.check_every,
            threat::reload::DEFAULT_CHECK_EVERY
        );
    }

    #[test]
    fn a_broken_threat_list_entry_is_named_with_what_is_wrong() {
        let list = |body: &str| format!("[[threat.list]]\n{body}");
        let ok = "name = \"drop\"\npath = \"/l/drop.txt\"\nformat = \"spamhaus-drop\"\nseverity = \"critical\"\n";
        assert_eq!(Config::parse(&list(ok)).unwrap().threat.list[0].name, "drop");
        let e = Config::parse(&list(&ok.replace("spamhaus-drop", "spamhaus"))).unwrap_err();
        assert!(
            e.contains("line 4") && e.contains("spamhaus-json") && e.contains("netset"),
            "{e}"
        );
        let e = Config::parse(&list(&ok.replace("critical", "high"))).unwrap_err();
        assert!(
            e.contains("line 5") && e.contains("high") && e.contains("warning"),
            "{e}"
        );
        let e = Config::parse(&list(&ok.replace("path = \"/l/drop.txt\"\n", ""))).unwrap_err();
        assert!(e.contains("missing field `path`"), "{e}");
        let e = Config::parse(&list(&format!("{ok}url = \"https://x\"\n"))).unwrap_err();
        assert!(e.contains("line 6") && e.contains("url"), "{e}");
        let e = Config::parse(&list(&ok.replace("\"drop\"", "\"my drop\""))).unwrap_err();
        assert_eq!(
            e,
            "[[threat.list]] #1: name \"my drop\": use 1 to 64 letters, digits, '-', '_' and '.'"
        );
        let e = Config::parse(&format!("{}{}", list(ok), list(ok))).unwrap_err();
        assert!(e.contains("#2") && e.contains("\"drop\" is taken"), "{e}");
        let e = Config::parse("[threat]\nallow = [\"10.0.0.0/8\", \"10.0.0.0/40\"]\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("/40") && e.contains("CIDR"), "{e}");
        let none = Config::parse("[threat]\nallow = []\ncheck_every = \"5m\"\n")
            .unwrap()
            .threat;
        assert_eq!((none.allow.len(), none.check_every), (0, Duration::from_secs(300)));
    }

    #[test]
    fn a_bad_alertmanager_table_is_named_with_what_is_wrong() {
        let e = Config::parse("[[alerts.alertmanager]]\nname = \"am\"\nurls = [\"am-1:9093\"]\n").unwrap_err();
        assert_eq!(
            e,
            "[[alerts.alertmanager]] #1: alertmanager \"am\": url \"am-1:9093\" must start with http:// or \
             https:// and name a host, such as \"http://127.0.0.1:9093\""
        );
        let two = "[[alerts.alertmanager]]\nname = \"am\"\nurls = [\"http://a:9093\"]\n";
        let e = Config::parse(&format!("{two}{two}")).unwrap_err();
        assert!(e.contains("#2") && e.contains("\"am\" is taken"), "{e}");
        let e = Config::parse("[[alerts.alertmanager]]\nname = \"am\"\nurls = [\"http://a:9093\"]\nresend = \"1m\"\n")
            .unwrap_err();
        assert!(e.contains("line 4") && e.contains("resend"), "{e}");
        let e = Config::parse("[[alerts.alertmanager]]\nname = \"am\"\n").unwrap_err();
        assert!(e.contains("missing field `urls`"), "{e}");
    }

    #[test]
    fn clock_limits_reach_ingest_and_drift_and_a_long_tolerance_is_refused() {
        let config = Config::parse("[clock]\ntolerance = \"30s\"\nmax_backlog = \"7d\"\n").unwrap();
        assert_eq!(
            config.clock.limits(),
            clock::Limits {
                tolerance: Duration::from_secs(30),
                max_backlog: Duration::from_secs(7 * 86_400)
            }
        );
        assert_eq!(config.policy().clock_tolerance, Duration::from_secs(30));
        assert_eq!(Config::default().clock.limits(), clock::Limits::default());
        let e = Config::parse("[clock]\ntolerance = \"2h\"\n").unwrap_err();
        assert!(e.contains("[clock] tolerance") && e.contains("1h"), "{e}");
        let e = Config::parse("[clock]\nmax_backlog = \"90d\"\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("30 days"), "{e}");
        let e = Config::parse("[clock]\nskew = \"1m\"\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("skew"), "{e}");
    }

    #[test]
    fn edge_limits_reach_the_server_and_ingest_and_impossible_ones_are_refused() {
        let config = Config::parse(
            "[http]\nmax_connections = 300\nheader_timeout = \"2s\"\nidle_timeout = \"5s\"\nbody_timeout = \"3s\"\n\
             [ingest]\nmax_bytes_in_flight = 67_108_864\n",
        )
        .unwrap();
        assert_eq!(
            config.http.limits(),
            edge::Limits {
                max_connections: 300,
                header_timeout: Duration::from_secs(2),
                idle_timeout: Duration::from_secs(5),
            }
        );
        assert_eq!(
            config.ingest_limits(),
            api::IngestLimits {
                max_bytes_in_flight: 64 << 20,
                max_batch_bytes: 32 << 20,
                body_timeout: Duration::from_secs(3),
            }
        );
        assert_eq!(Config::default().http.limits(), edge::Limits::default());
        assert_eq!(Config::default().ingest_limits(), api::IngestLimits::default());
        let e = Config::parse("[http]\nmax_connections = 0\n").unwrap_err();
        assert!(e.contains("[http] max_connections") && e.contains("between 1"), "{e}");
        let e = Config::parse("[http]\nheader_timeout = \"1m\"\n").unwrap_err();
        assert!(e.contains("header_timeout") && e.contains("idle_timeout"), "{e}");
        let e = Config::parse("[http]\nbody_timeout = \"0s\"\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("zero"), "{e}");
        let e = Config::parse("[ingest]\nmax_bytes_in_flight = 1_000_000\n").unwrap_err();
        assert!(
            e.contains("max_bytes_in_flight") && e.contains("max_batch_bytes"),
            "{e}"
        );
        let small = Config::parse("[ingest]\nmax_bytes_in_flight = 4_194_304\nmax_batch_bytes = 4_194_304\n").unwrap();
        assert_eq!(small.ingest_limits().max_batch_bytes, 4 << 20);
        for bad in ["1_000_000", "33_554_433"] {
            let e = Config::parse(&format!("[ingest]\nmax_batch_bytes = {bad}\n")).unwrap_err();
            assert!(e.contains("max_batch_bytes") && e.contains("between"), "{e}");
        }
        let e = Config::parse("[ingest]\nmax_body_bytes = 5\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("max_body_bytes"), "{e}");
    }

    #[test]
    fn the_dashboard_is_on_by_default_and_its_session_length_and_refresh_are_bounded() {
        let defaults = Config::default().dashboard;
        assert!(defaults.enabled);
        assert_eq!(defaults.session_ttl, api::DEFAULT_SESSION_TTL);
        let config = Config::parse("[dashboard]\nenabled = false\nsession_ttl = \"30m\"\n").unwrap();
        let settings = config.dashboard.settings(true);
        assert!(!settings.enabled && settings.secure_cookies);
        assert_eq!(settings.session_ttl, Duration::from_secs(1800));
        let e = Config::parse("[dashboard]\nsession_ttl = \"8d\"\n").unwrap_err();
        assert!(e.contains("[dashboard] session_ttl") && e.contains("7days"), "{e}");
        assert_eq!(defaults.refresh, api::DEFAULT_REFRESH);
        let config = Config::parse("[dashboard]\nrefresh = \"2s\"\n").unwrap();
        assert_eq!(config.dashboard.settings(false).refresh, Duration::from_secs(2));
        let e = Config::parse("[dashboard]\nrefresh = \"500ms\"\n").unwrap_err();
        assert!(
            e.contains("[dashboard] refresh") && e.contains("between 1s and 1h"),
            "{e}"
        );
        let e = Config::parse("[dashboard]\nport = 80\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("port"), "{e}");
    }

    #[test]
    fn retention_takes_days_or_forever_and_refuses_less_than_a_day_naming_the_key() {
        let day = Duration::from_secs(86_400);
        assert_eq!(
            Config::default().retention.retention(),
            Retention {
                history: Some(400 * day),
                alerts: Some(180 * day),
                baseline_log: None
            }
        );
        let config =
            Config::parse("[retention]\nhistory = \"30d\"\nalerts = \"forever\"\nbaseline_log = \"2y\"\n").unwrap();
        assert_eq!(config.retention.history, Some(30 * day));
        assert_eq!(config.retention.alerts, None);
        assert!(
            config.retention.baseline_log.unwrap() > 700 * day,
            "longer than [clock]'s 30 days"
        );
        let e = Config::parse("[retention]\nhistory = \"12h\"\n").unwrap_err();
        assert!(
            e.contains("[retention] history") && e.contains("12h") && e.contains("1day"),
            "{e}"
        );
        let e = Config::parse("[retention]\nalerts = \"soon\"\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("forever"), "{e}");
        let e = Config::parse("[retention]\nintervals = \"30d\"\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("intervals"), "{e}");
    }

    #[test]
    fn unknown_keys_and_bad_addresses_name_their_line() {
        let e = Config::parse("listen = \"0.0.0.0:7878\"\ndatabase = \"x\"\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("database"), "{e}");
        let e = Config::parse("listen = \"everywhere\"").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        assert_eq!(
            Config::parse("db = \"/srv/pw.db\"").unwrap().db,
            Database::Sqlite(PathBuf::from("/srv/pw.db"))
        );
        let e = Config::parse("[tls]\ncert = \"/etc/c.pem\"\n").unwrap_err();
        assert!(e.contains("key"), "{e}");
        let e = Config::parse("[tls]\ncert = \"c\"\nkey = \"k\"\nca = \"x\"\n").unwrap_err();
        assert!(e.contains("line 4") && e.contains("ca"), "{e}");
        let alerts = Config::parse("[alerts]\nrisky_ports = [\"tcp/23\"]\nflap_window = \"5m\"\n")
            .unwrap()
            .alerts;
        assert_eq!(alerts.flap_window, Duration::from_secs(300));
        assert_eq!(
            alerts.policy().risky.label(portwatch_common::Proto::Tcp, 23),
            Some("Telnet")
        );
        assert_eq!(alerts.policy().risky.label(portwatch_common::Proto::Tcp, 5432), None);
        let e = Config::parse("[alerts]\nflap_window = \"20000y\"\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("30 days"), "{e}");
        let e = Config::parse("[alerts]\nflap_max = 3\nsweep_every = \"0s\"\n").unwrap_err();
        assert!(e.contains("line 3") && e.contains("zero"), "{e}");
        assert_eq!(
            Config::parse("[alerts]\nmax_open_per_kind = 20\n")
                .unwrap()
                .policy()
                .max_open_per_kind,
            20
        );
        for bad in ["0", "10001"] {
            let e = Config::parse(&format!("[alerts]\nmax_open_per_kind = {bad}\n")).unwrap_err();
            assert!(
                e.contains("max_open_per_kind") && e.contains("between 1 and 10000"),
                "{e}"
            );
        }
        let e = Config::parse("[alerts]\nmax_open_per_kind = -1\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("max_open_per_kind"), "{e}");
        let e = Config::parse("[alerts]\n\nrisky_ports = [\"tcp:23\"]\n").unwrap_err();
        assert!(e.contains("line 3") && e.contains("PROTO/PORT"), "{e}");
        let tls = Config::parse("[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n")
            .unwrap()
            .tls
            .unwrap();
        assert_eq!((tls.cert, tls.key), (PathBuf::from("c.pem"), PathBuf::from("k.pem")));
    }

    #[test]
    fn a_postgres_url_names_a_database_server_and_its_connections_are_bounded() {
        let config = Config::parse(
            "db = \"postgresql://pw@db.example/pw?sslmode=require\"\n[postgres]\npassword_file = \"/etc/pw\"\n",
        )
        .unwrap();
        assert_eq!(
            config.db,
            Database::Postgres("postgresql://pw@db.example/pw?sslmode=require".to_owned())
        );
        assert_eq!(config.postgres.password_file.as_deref(), Some(Path::new("/etc/pw")));
        assert_eq!(config.db.sqlite_file(), None);
        let error = Config::parse("[postgres]\nmax_connections = 1\n").unwrap_err();
        assert!(error.contains("[postgres] max_connections"), "{error}");
        let error = Config::parse("[postgres]\npasword_file = \"/x\"\n").unwrap_err();
        assert!(error.contains("pasword_file"), "{error}");
        assert!(Config::parse("db = \"\"").unwrap_err().contains("db is empty"));
    }

    #[test]
    fn the_heartbeat_flush_window_and_the_collector_s_name_are_bounded() {
        let config = Config::default();
        assert_eq!(config.postgres.heartbeat_flush, Duration::from_secs(5));
        assert_eq!(
            config.postgres.options("postgres://db/pw").heartbeat_flush,
            Duration::from_secs(5)
        );
        assert_eq!(config.metrics.collector, None);
        let config = Config::parse("[postgres]\nheartbeat_flush = \"2s\"\n[metrics]\ncollector = \"c-1\"\n").unwrap();
        assert_eq!(
            (config.postgres.heartbeat_flush, config.metrics.collector.as_deref()),
            (Duration::from_secs(2), Some("c-1"))
        );
        for flush in ["10ms", "2m"] {
            let error = Config::parse(&format!("[postgres]\nheartbeat_flush = \"{flush}\"\n")).unwrap_err();
            assert!(
                error.contains("[postgres] heartbeat_flush") && error.contains("between 100ms and 1m"),
                "{error}"
            );
        }
        let error = Config::parse("[metrics]\ncollector = \"\"\n").unwrap_err();
        assert!(error.contains("[metrics] collector"), "{error}");
    }

    #[test]
    fn a_password_in_a_postgres_url_is_not_shown() {
        assert_eq!(
            Database::parse("postgres://pw:s3cret@db/pw").to_string(),
            "postgres://pw:***@db/pw"
        );
    }
}
