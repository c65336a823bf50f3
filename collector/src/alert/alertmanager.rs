//! Alerts for Prometheus' Alertmanager (`[[alerts.alertmanager]]`), through
//! its API v2: `POST /api/v2/alerts` with a JSON array of alerts.
//!
//! Alertmanager keeps alert *states*, not events: an alert is its label
//! set, active until its `endsAt`. portwatch sends each of its alerts with
//! the labels `alertname` (the finding's kind), `host`, `severity`, `proto`
//! and `port` (when the finding is about a listener) and `portwatch_alert`
//! (the alert's number, so that an alert that resolves and comes back is a
//! new one); annotations `summary` (the message), `description` (the
//! holders, the baseline entry), `acknowledged` (who, and what they said)
//! and `url` (the alert in portwatch, from `external_url`, also its
//! `generatorURL`); `startsAt` when it opened; `endsAt` once it resolved.
//!
//! Two paths feed it, in one thread per URL, so that what it sends last
//! about an alert is what the store said last:
//! - the alert outbox, as for every sink ([`super::sink`]): an opened or
//!   acknowledged alert is sent active (no `endsAt`), a resolved one with
//!   `endsAt`, retried with backoff (1 s up to `resend_every`) while the
//!   Alertmanager is unreachable;
//! - every `resend_every` (default [`DEFAULT_RESEND_EVERY`]), every active
//!   (open or acknowledged) alert again, [`BATCH`] to a request: an
//!   Alertmanager resolves an alert that is not sent again within its
//!   `resolve_timeout` (5 minutes by default), and one restarted without
//!   its state learns them all back this way. `resend_every` must be
//!   shorter than the Alertmanagers' `resolve_timeout`.
//!
//! Each URL of an `[[alerts.alertmanager]]` (an HA pair or cluster) is sent
//! everything on its own, as Prometheus does: one that is down delays only
//! itself. The Alertmanagers deduplicate among themselves.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use portwatch_common::client::Backoff;
use serde::Deserialize;

use super::sink::{describe, redacted, Deliver, Failure, POST_TIMEOUT};
use crate::metrics::SinkMetrics;
use crate::store::Store;
use portwatch_model::{AlertEvent, AlertRow, AlertState, Severity};

/// How often active alerts are sent again unless `resend_every` says
/// otherwise: Prometheus' own `resend_delay`, well inside Alertmanager's
/// default `resolve_timeout` of 5 minutes.
pub const DEFAULT_RESEND_EVERY: Duration = Duration::from_secs(60);

/// Alerts in one request when active alerts are sent again (Prometheus
/// sends at most 256 a request too).
pub const BATCH: usize = 256;

/// Most active alerts of each state (open, acknowledged) sent again; more
/// are logged as a warning (the cap per host and kind keeps fleets far below).
pub const MAX_RESEND: usize = 100_000;

/// First delay before active alerts are sent again after a failure; it
/// doubles per failure, up to `resend_every`.
const RESEND_RETRY_MIN: Duration = Duration::from_secs(1);

/// The path of the alerts endpoint under an Alertmanager's base URL.
const ALERTS_PATH: &str = "/api/v2/alerts";

/// An Alertmanager, or an HA set of them, from the config (`[[alerts.alertmanager]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alertmanager {
    /// A unique name: each URL's place in the outbox is kept under it and the URL's host and port.
    pub name: String,
    /// Base URLs of the Alertmanagers (`http://am-1:9093`, with the path prefix if it is served under one);
    /// each is sent every alert, on its own.
    pub urls: Vec<String>,
    /// How often every active alert is sent again: shorter than the Alertmanagers' `resolve_timeout`
    /// (5m unless their config says otherwise), or they resolve alerts that are still open.
    #[serde(default = "default_resend_every", deserialize_with = "crate::setting::duration")]
    pub resend_every: Duration,
    /// Where people reach this collector (`https://portwatch.example.com`): each alert links to itself
    /// there (annotation `url`, and `generatorURL`). No link when unset.
    pub external_url: Option<String>,
    /// Only alerts at least this severe (`info`, `warning`, `critical`).
    #[serde(default = "super::sink::default_min_severity")]
    pub min_severity: Severity,
    /// PEM certificates to verify an https Alertmanager with (default: the built-in Mozilla roots).
    pub ca_file: Option<PathBuf>,
    /// Sent as `Authorization: Bearer <token>` when set (an Alertmanager behind an authenticating proxy).
    pub bearer_token: Option<String>,
}

fn default_resend_every() -> Duration {
    DEFAULT_RESEND_EVERY
}

impl Alertmanager {
    /// Checks what serde cannot: the name, the URLs, the external URL, the CA file.
    pub fn check(&self) -> Result<(), String> {
        let name = &self.name;
        if !portwatch_model::baseline::valid_name(name) {
            return Err(format!(
                "alertmanager name {name:?}: use letters, digits, '-', '_' and '.'"
            ));
        }
        if self.urls.is_empty() {
            return Err(format!(
                "alertmanager {name:?}: urls is empty; give at least one, such as [\"http://127.0.0.1:9093\"]"
            ));
        }
        for (i, url) in self.urls.iter().enumerate() {
            if !(url.starts_with("http://") || url.starts_with("https://")) || authority(url).is_empty() {
                return Err(format!(
                    "alertmanager {name:?}: url {url:?} must start with http:// or https:// and name a host, \
                     such as \"http://127.0.0.1:9093\""
                ));
            }
            if url.contains(ALERTS_PATH) {
                return Err(format!(
                    "alertmanager {name:?}: url {url:?}: give the Alertmanager's base URL; {ALERTS_PATH} is added"
                ));
            }
            if self.urls[..i].iter().any(|u| authority(u) == authority(url)) {
                return Err(format!(
                    "alertmanager {name:?}: two urls at {}; each Alertmanager once",
                    authority(url)
                ));
            }
        }
        if let Some(external) = &self.external_url {
            if !(external.starts_with("http://") || external.starts_with("https://")) {
                return Err(format!(
                    "alertmanager {name:?}: external_url {external:?} must start with http:// or https://"
                ));
            }
        }
        portwatch_common::client::http_agent(self.ca_file.as_deref(), POST_TIMEOUT)
            .map(drop)
            .map_err(|e| format!("alertmanager {name:?}: {e}"))
    }

    /// The name of the sink of `url` (one of [`Alertmanager::urls`]): its place in the outbox, in logs and in
    /// `/metrics`.
    pub fn sink_name(&self, url: &str) -> String {
        format!("alertmanager:{}@{}", self.name, authority(url))
    }

    /// Whether this Alertmanager wants `alert`.
    fn wants(&self, alert: &AlertRow) -> bool {
        alert.severity >= self.min_severity
    }

    /// Where `alert` is shown in portwatch, if `external_url` is set.
    fn link(&self, alert: &AlertRow) -> Option<String> {
        // Host names are letters, digits, '.', '-' and '_' (checked at ingest): nothing to escape.
        self.external_url.as_ref().map(|base| {
            format!(
                "{}/api/v1/alerts?state=all&host={}#alert-{}",
                base.trim_end_matches('/'),
                alert.host,
                alert.id
            )
        })
    }

    /// `alert` as Alertmanager's API v2 takes it (a `postableAlert`):
    /// active, or resolved (with `endsAt`) when `resolved`.
    pub fn postable(&self, alert: &AlertRow, resolved: bool) -> serde_json::Value {
        let f = &alert.finding;
        let mut labels = serde_json::Map::new();
        labels.insert("alertname".into(), alert.kind.as_str().into());
        labels.insert("host".into(), alert.host.clone().into());
        labels.insert("severity".into(), alert.severity.as_str().into());
        if let Some(proto) = f.proto {
            labels.insert("proto".into(), proto.as_str().into());
        }
        if let Some(port) = f.local_port {
            labels.insert("port".into(), port.to_string().into());
        }
        labels.insert("portwatch_alert".into(), alert.id.to_string().into());
        let mut annotations = serde_json::Map::new();
        annotations.insert("summary".into(), alert.message.clone().into());
        let mut description = Vec::new();
        if let Some(holders) = &f.processes {
            description.push(format!("held by {holders}"));
        }
        if let Some(expected) = &f.expected {
            let baseline = f.baseline.as_deref().unwrap_or("?");
            description.push(format!("baseline {baseline} expects {expected}"));
        }
        if let (Some(owner), Some(reason)) = (&f.owner, &f.reason) {
            description.push(format!("owner {owner}: {reason}"));
        }
        if !description.is_empty() {
            annotations.insert("description".into(), description.join("; ").into());
        }
        if alert.state == AlertState::Acknowledged || alert.acked_by.is_some() {
            annotations.insert(
                "acknowledged".into(),
                format!(
                    "by {}: {}",
                    alert.acked_by.as_deref().unwrap_or("?"),
                    alert.ack_comment.as_deref().unwrap_or("")
                )
                .into(),
            );
        }
        let link = self.link(alert);
        if let Some(link) = &link {
            annotations.insert("url".into(), link.clone().into());
        }
        let mut postable = serde_json::Map::new();
        postable.insert("labels".into(), labels.into());
        postable.insert("annotations".into(), annotations.into());
        postable.insert("startsAt".into(), alert.opened_at.to_string().into());
        if resolved {
            let ended = alert.resolved_at.unwrap_or_else(jiff::Timestamp::now);
            postable.insert("endsAt".into(), ended.to_string().into());
        }
        if let Some(link) = link {
            postable.insert("generatorURL".into(), link.into());
        }
        postable.into()
    }
}

/// The host and port of `url`, without user info: how a sink and its logs name an Alertmanager.
fn authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    host.rsplit('@').next().unwrap_or(host).to_owned()
}

/// One Alertmanager URL's delivery: the outbox's events, and active alerts again every `resend_every`.
pub(super) struct AlertmanagerSink {
    config: Arc<Alertmanager>,
    /// The sink's name ([`Alertmanager::sink_name`]).
    name: String,
    /// `{url}/api/v2/alerts`.
    endpoint: String,
    agent: ureq::Agent,
    /// When active alerts are next sent again.
    resend_at: Instant,
    /// How soon after a failed resend to try again.
    resend_backoff: Backoff,
}

impl AlertmanagerSink {
    /// The sink of `url`, one of `config`'s.
    pub(super) fn new(config: Arc<Alertmanager>, url: &str) -> Result<AlertmanagerSink, String> {
        let agent = portwatch_common::client::http_agent(config.ca_file.as_deref(), POST_TIMEOUT)
            .map_err(|e| format!("alertmanager {:?}: {e}", config.name))?;
        Ok(AlertmanagerSink {
            name: config.sink_name(url),
            endpoint: format!("{}{ALERTS_PATH}", url.trim_end_matches('/')),
            resend_backoff: Backoff::new(RESEND_RETRY_MIN, config.resend_every),
            config,
            agent,
            resend_at: Instant::now(),
        })
    }

    /// POSTs `alerts` (a JSON array of postable alerts).
    fn post(&self, alerts: &serde_json::Value) -> Result<(), Failure> {
        let url = redacted(&self.endpoint);
        let mut request = self
            .agent
            .post(&self.endpoint)
            .header("User-Agent", concat!("portwatch-collector/", env!("CARGO_PKG_VERSION")));
        if let Some(token) = &self.config.bearer_token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let response = request
            .send_json(alerts)
            .map_err(|e| Failure::Transient(format!("{url}: {}", describe(&e))))?;
        match response.status().as_u16() {
            200..=299 => Ok(()),
            status @ (408 | 429 | 500..) => Err(Failure::Transient(format!("{url} answered {status}"))),
            status => {
                let mut response = response;
                let why = response.body_mut().read_to_string().unwrap_or_default();
                Err(Failure::Permanent(format!(
                    "{url} answered {status} ({}): it refuses these alerts",
                    portwatch_common::text::truncate(&portwatch_common::text::escape(why.trim()), 300)
                )))
            }
        }
    }

    /// Every active alert this Alertmanager wants, open and acknowledged, oldest first.
    fn active(store: &dyn Store, config: &Alertmanager) -> Result<Vec<AlertRow>, String> {
        let mut all = Vec::new();
        for state in [AlertState::Open, AlertState::Acknowledged] {
            let alerts = store.alerts(Some(state), None, MAX_RESEND).map_err(|e| e.to_string())?;
            if alerts.len() >= MAX_RESEND {
                tracing::warn!(
                    alertmanager = %config.name,
                    state = state.as_str(),
                    sent = MAX_RESEND,
                    "more active alerts than are sent again; the oldest may resolve in Alertmanager"
                );
            }
            all.extend(alerts.into_iter().filter(|a| config.wants(a)));
        }
        all.sort_by_key(|a| a.id);
        Ok(all)
    }
}

impl Deliver for AlertmanagerSink {
    fn sink(&self) -> String {
        self.name.clone()
    }

    fn wants(&self, event: &AlertEvent) -> bool {
        self.config.wants(event.alert())
    }

    fn deliver(&mut self, _id: i64, event: &AlertEvent) -> Result<(), Failure> {
        let resolved = matches!(event, AlertEvent::Resolved(_));
        self.post(&serde_json::Value::Array(vec![self
            .config
            .postable(event.alert(), resolved)]))
    }

    /// A failing Alertmanager is tried again at least every `resend_every`:
    /// one that restarted has lost every alert, and the resend that gives
    /// them back waits for the delivery being retried.
    fn retry_max(&self) -> Duration {
        self.config.resend_every
    }

    fn resend_in(&self) -> Option<Duration> {
        Some(self.resend_at.saturating_duration_since(Instant::now()))
    }

    fn resend(&mut self, store: &dyn Store, metrics: &SinkMetrics) {
        if Instant::now() < self.resend_at {
            return;
        }
        let failed = |this: &mut AlertmanagerSink, error: &str| {
            metrics.failed(&this.name);
            let delay = this.resend_backoff.failed(Duration::ZERO);
            this.resend_at = Instant::now() + delay;
            tracing::warn!(sink = %this.name, error, retry_in = ?delay, "cannot send the active alerts again");
        };
        let active = match AlertmanagerSink::active(store, &self.config) {
            Ok(active) => active,
            Err(e) => return failed(self, &format!("cannot read the active alerts: {e}")),
        };
        for batch in active.chunks(BATCH) {
            let alerts = batch.iter().map(|a| self.config.postable(a, false)).collect();
            match self.post(&serde_json::Value::Array(alerts)) {
                Ok(()) => metrics.delivered(&self.name),
                Err(Failure::Transient(e)) => return failed(self, &e),
                Err(Failure::Permanent(e)) => {
                    metrics.refused(&self.name);
                    tracing::error!(sink = %self.name, error = %e, first = batch[0].id, alerts = batch.len(),
                        "Alertmanager refused a batch of active alerts; skipped until the next resend");
                }
            }
        }
        tracing::debug!(sink = %self.name, alerts = active.len(), "active alerts sent again");
        self.resend_backoff.succeeded();
        self.resend_at = Instant::now() + self.config.resend_every;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portwatch_model::{Finding, Kind};

    fn config(text: &str) -> Result<Alertmanager, String> {
        toml::from_str::<Alertmanager>(text).map_err(|e| e.to_string())
    }

    fn risky_alert(state: AlertState) -> AlertRow {
        let finding = Finding {
            message: "web-3: tcp/23 (Telnet) is reachable on 0.0.0.0".into(),
            proto: Some(portwatch_common::Proto::Tcp),
            local_addr: Some("0.0.0.0".parse().unwrap()),
            local_port: Some(23),
            processes: Some("in.telnetd[812]".into()),
            ..Finding::new(
                Kind::RiskyPortExposed,
                "web-3",
                "risky-port-exposed:web-3:tcp/23".into(),
            )
        };
        AlertRow {
            id: 42,
            key: finding.key.clone(),
            kind: finding.kind,
            severity: Severity::Critical,
            host: "web-3".into(),
            message: finding.message.clone(),
            state,
            opened_at: jiff::Timestamp::from_second(1_800_000_000).unwrap(),
            acked_at: None,
            acked_by: None,
            ack_comment: None,
            resolved_at: (state == AlertState::Resolved).then(|| jiff::Timestamp::from_second(1_800_000_600).unwrap()),
            finding,
        }
    }

    #[test]
    fn an_alert_is_sent_with_its_labels_link_and_times() {
        let am =
            config("name = \"am\"\nurls = [\"http://127.0.0.1:9093\"]\nexternal_url = \"https://pw.example.com/\"\n")
                .unwrap();
        assert_eq!(am.resend_every, DEFAULT_RESEND_EVERY);
        assert_eq!(am.min_severity, Severity::Warning);
        am.check().unwrap();
        let active = am.postable(&risky_alert(AlertState::Open), false);
        assert_eq!(
            active["labels"],
            serde_json::json!({
                "alertname": "risky-port-exposed",
                "host": "web-3",
                "severity": "critical",
                "proto": "tcp",
                "port": "23",
                "portwatch_alert": "42",
            })
        );
        assert_eq!(
            active["annotations"]["summary"],
            "web-3: tcp/23 (Telnet) is reachable on 0.0.0.0"
        );
        assert_eq!(active["annotations"]["description"], "held by in.telnetd[812]");
        let link = "https://pw.example.com/api/v1/alerts?state=all&host=web-3#alert-42";
        assert_eq!(
            (&active["annotations"]["url"], &active["generatorURL"]),
            (&link.into(), &link.into())
        );
        assert_eq!(active["startsAt"], "2027-01-15T08:00:00Z");
        assert!(
            active.get("endsAt").is_none(),
            "active: Alertmanager ends it after resolve_timeout"
        );

        let resolved = am.postable(&risky_alert(AlertState::Resolved), true);
        assert_eq!(resolved["endsAt"], "2027-01-15T08:10:00Z");
        assert_eq!(resolved["labels"], active["labels"], "the same alert to Alertmanager");

        let mut acked = risky_alert(AlertState::Acknowledged);
        acked.acked_by = Some("ops-admin".into());
        acked.ack_comment = Some("closing it".into());
        let acked = am.postable(&acked, false);
        assert_eq!(acked["annotations"]["acknowledged"], "by ops-admin: closing it");
        assert_eq!(acked["labels"], active["labels"]);

        // No external URL: no link at all (Alertmanager takes only a URI as generatorURL).
        let bare = config("name = \"am\"\nurls = [\"http://127.0.0.1:9093\"]\n").unwrap();
        let active = bare.postable(&risky_alert(AlertState::Open), false);
        assert!(active.get("generatorURL").is_none() && active["annotations"].get("url").is_none());
    }

    #[test]
    fn each_url_is_a_sink_of_its_own_named_by_host_and_port() {
        let am = config(
            "name = \"ha\"\nurls = [\"http://am-1.example:9093/\", \"https://u:pw@am-2.example:9443/am\"]\n\
             resend_every = \"30s\"\n",
        )
        .unwrap();
        am.check().unwrap();
        assert_eq!(am.resend_every, Duration::from_secs(30));
        assert_eq!(am.sink_name(&am.urls[0]), "alertmanager:ha@am-1.example:9093");
        assert_eq!(am.sink_name(&am.urls[1]), "alertmanager:ha@am-2.example:9443");
        let sink = AlertmanagerSink::new(Arc::new(am.clone()), &am.urls[1]).unwrap();
        assert_eq!(sink.endpoint, "https://u:pw@am-2.example:9443/am/api/v2/alerts");
    }

    #[test]
    fn a_bad_alertmanager_config_says_what_is_wrong() {
        let checked = |text: &str| config(text).and_then(|am| am.check()).unwrap_err();
        let e = checked("name = \"am\"\nurls = []\n");
        assert!(e.contains("urls is empty"), "{e}");
        let e = checked("name = \"am\"\nurls = [\"127.0.0.1:9093\"]\n");
        assert!(e.contains("\"127.0.0.1:9093\" must start with http://"), "{e}");
        let e = checked("name = \"am\"\nurls = [\"http://a:9093/api/v2/alerts\"]\n");
        assert!(e.contains("base URL"), "{e}");
        let e = checked("name = \"am\"\nurls = [\"http://a:9093\", \"http://a:9093/x\"]\n");
        assert!(e.contains("two urls at a:9093"), "{e}");
        let e = checked("name = \"am\"\nurls = [\"http://a:9093\"]\nexternal_url = \"pw.example\"\n");
        assert!(e.contains("external_url"), "{e}");
        let e = checked("name = \"a m\"\nurls = [\"http://a:9093\"]\n");
        assert!(e.contains("alertmanager name \"a m\""), "{e}");
        let e = checked("name = \"am\"\nurls = [\"http://a:9093\"]\nresend_every = \"0s\"\n");
        assert!(e.contains("line 3") && e.contains("zero"), "{e}");
        let e = checked("name = \"am\"\nurl = \"http://a:9093\"\n");
        assert!(e.contains("line 2") && e.contains("unknown field `url`"), "{e}");
    }
}
