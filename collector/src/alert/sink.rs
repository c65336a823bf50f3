//! Where alerts go besides the collector's log: webhooks, syslog and
//! Alertmanagers ([`super::alertmanager`]).
//!
//! Every change of an alert's state is written to the store's outbox
//! (`alert_events`) in the transaction that makes it. Each sink has its own
//! thread and its own progress in the outbox. It takes the pending events
//! host by host, in turns ([`super::outbox`]): each host's events in their
//! order (so an alert's opened, acknowledged and resolved arrive in that
//! order), the hosts with events pending one event each in turn, so that
//! one host's flood delays another host's alert by at most one of its
//! events. An event is done with once delivered (a webhook receiver
//! answered 2xx, the syslog socket took the datagram), or refused for good
//! (logged as an error, with the event and alert ids, and skipped); a
//! failing sink is retried with exponential backoff (1 s to 5 min, with
//! jitter) without skipping anything. A sink that fails delays only itself:
//! ingest, the other sinks and the log go on. Delivery is at least once: a
//! collector killed after a delivery and before its progress was saved (at
//! least every [`SAVE_EVERY`] or [`SAVE_EVENTS`] events) delivers those
//! events again after its restart (`event_id` lets receivers drop repeats).
//!
//! Every message has a bounded size, whatever the agents reported: a
//! webhook's JSON body at most [`MAX_WEBHOOK_BYTES`], a Slack text
//! [`MAX_SLACK_TEXT_BYTES`], a syslog datagram [`MAX_SYSLOG_BYTES`]. Text
//! that does not fit is cut with a marker ([`text::truncate`]).

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portwatch_common::client::Backoff;
use portwatch_common::text;
use serde::Deserialize;

use super::alertmanager::{Alertmanager, AlertmanagerSink};
use super::outbox::Pending;
use crate::metrics::SinkMetrics;
use crate::store::Store;
use portwatch_model::Severity;
use portwatch_model::{AlertEvent, AlertRow};

/// How long one POST may take.
pub(super) const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// First retry delay.
const RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest retry delay.
const RETRY_MAX: Duration = Duration::from_secs(300);
/// How often an idle webhook looks at the outbox without being woken.
const IDLE_POLL: Duration = Duration::from_secs(5);
/// How often a busy sink looks for new events (another host's, to take in turns).
const READ_EVERY: Duration = Duration::from_millis(100);
/// A busy sink saves its progress at least this often...
pub const SAVE_EVERY: Duration = Duration::from_secs(1);
/// ...and after this many events.
pub const SAVE_EVENTS: usize = 100;

/// Largest webhook body (`format = "json"`), in bytes: the alert's text
/// fields are cut until it fits.
pub const MAX_WEBHOOK_BYTES: usize = 16 * 1024;
/// Longest Slack text (`format = "slack"`), in bytes: under the 3,000
/// characters of a Slack text block.
pub const MAX_SLACK_TEXT_BYTES: usize = 3000;
/// Largest syslog datagram, in bytes: what RFC 5424 says every receiver
/// should take (2,048; RFC 3164 relays 1,024, so a relay may cut it further).
pub const MAX_SYSLOG_BYTES: usize = 2048;
/// The syslog line: the datagram less the header the formatter writes
/// before it (`<PRI>Mmm dd hh:mm:ss portwatch-collector[PID]: `, under 64 bytes).
const SYSLOG_LINE_BYTES: usize = MAX_SYSLOG_BYTES - 64;
/// Each text field of a webhook's alert, in bytes, at first; halved until the body fits.
const WEBHOOK_FIELD_BYTES: usize = 2048;

/// A webhook from the config (`[[alerts.webhook]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// A unique name: the webhook's place in the outbox is kept under it.
    pub name: String,
    /// Where to POST (`http://` or `https://`).
    pub url: String,
    /// `json` (the event as JSON) or `slack` (`{"text": ...}`, for Slack-compatible receivers).
    #[serde(default)]
    pub format: Format,
    /// Only alerts at least this severe (`info`, `warning`, `critical`).
    #[serde(default = "default_min_severity")]
    pub min_severity: Severity,
    /// PEM certificates to verify an https receiver with (default: the built-in Mozilla roots).
    pub ca_file: Option<PathBuf>,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub bearer_token: Option<String>,
}

pub(super) fn default_min_severity() -> Severity {
    Severity::Warning
}

/// A webhook's body format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `{"event_id": N, "event": "opened", "alert": {...}}`.
    #[default]
    Json,
    /// `{"text": "..."}`.
    Slack,
}

impl Webhook {
    /// Checks what serde cannot: the name, the URL, the CA file.
    pub fn check(&self) -> Result<(), String> {
        if !portwatch_model::baseline::valid_name(&self.name) {
            return Err(format!(
                "webhook name {:?}: use letters, digits, '-', '_' and '.'",
                self.name
            ));
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(format!(
                "webhook {:?}: url {:?} must start with http:// or https://",
                self.name, self.url
            ));
        }
        portwatch_common::client::http_agent(self.ca_file.as_deref(), POST_TIMEOUT)
            .map(drop)
            .map_err(|e| format!("webhook {:?}: {e}", self.name))
    }

    /// Whether this webhook wants `event`.
    fn wants(&self, event: &AlertEvent) -> bool {
        event.alert().severity >= self.min_severity
    }

    /// The body for `event`, at most [`MAX_WEBHOOK_BYTES`] of JSON (or
    /// [`MAX_SLACK_TEXT_BYTES`] of Slack text).
    pub fn body(&self, event_id: i64, event: &AlertEvent) -> serde_json::Value {
        let a = event.alert();
        match self.format {
            Format::Json => {
                // The alert's text fields cut shorter until the JSON fits (the
                // escapes of control characters make it longer than the text).
                let mut limit = WEBHOOK_FIELD_BYTES;
                loop {
                    let body = serde_json::json!({
                        "event_id": event_id,
                        "event": event.name(),
                        "alert": cut_alert(a, limit),
                    });
                    let fits = serde_json::to_vec(&body).map_or(true, |b| b.len() <= MAX_WEBHOOK_BYTES);
                    if fits || limit <= 16 {
                        return body;
                    }
                    limit /= 4;
                }
            }
            Format::Slack => {
                // Process names come from the monitored hosts, where any user can
                // pick one: escaped, so `<!channel>` or a link cannot ride along.
                let mut text = format!(
                    "[{}] {} alert {} on {}: {}",
                    a.severity.as_str().to_uppercase(),
                    event.name(),
                    a.id,
                    slack_escape(&a.host),
                    slack_escape(&a.message)
                );
                if let (AlertEvent::Acknowledged(_), Some(by)) = (event, &a.acked_by) {
                    text.push_str(&format!(
                        " (acknowledged by {}: {})",
                        slack_escape(by),
                        slack_escape(a.ack_comment.as_deref().unwrap_or(""))
                    ));
                }
                serde_json::json!({ "text": text::truncate(&text, MAX_SLACK_TEXT_BYTES) })
            }
        }
    }
}

/// `alert` with each of its text fields (what agents reported, what people
/// wrote) cut to `limit` bytes ([`text::truncate`]).
fn cut_alert(alert: &AlertRow, limit: usize) -> AlertRow {
    fn cut(s: &mut String, limit: usize) {
        if let Cow::Owned(shorter) = text::truncate(s, limit) {
            *s = shorter;
        }
    }
    let mut a = alert.clone();
    cut(&mut a.message, limit);
    let f = &mut a.finding;
    cut(&mut f.message, limit);
    for field in [
        &mut a.acked_by,
        &mut a.ack_comment,
        &mut f.processes,
        &mut f.baseline,
        &mut f.expected,
        &mut f.owner,
        &mut f.reason,
    ]
    .into_iter()
    .flatten()
    {
        cut(field, limit);
    }
    a
}

/// Wakes the webhook threads when there are new events.
#[derive(Clone, Default)]
pub struct Wakers(Vec<SyncSender<()>>);

impl Wakers {
    /// Tells every webhook thread to look at the outbox now.
    pub fn wake(&self) {
        for w in &self.0 {
            let _ = w.try_send(());
        }
    }
}

/// The syslog sink (`[alerts.syslog]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Syslog {
    /// The local syslog socket (journald listens there too).
    #[serde(default = "default_syslog_socket")]
    pub socket: PathBuf,
    /// The syslog facility (`daemon`, `auth`, `local0` ... `local7`).
    #[serde(default = "default_facility")]
    pub facility: String,
    /// Only alerts at least this severe.
    #[serde(default = "default_min_severity")]
    pub min_severity: Severity,
}

/// Where syslog listens on Linux.
pub const DEFAULT_SYSLOG_SOCKET: &str = "/dev/log";

fn default_syslog_socket() -> PathBuf {
    PathBuf::from(DEFAULT_SYSLOG_SOCKET)
}

fn default_facility() -> String {
    "daemon".to_owned()
}

impl Syslog {
    /// Checks the facility's name.
    pub fn check(&self) -> Result<(), String> {
        self.facility_code().map(drop)
    }

    fn facility_code(&self) -> Result<syslog::Facility, String> {
        self.facility.parse().map_err(|()| {
            format!(
                "[alerts.syslog] facility {:?}: use daemon, auth, authpriv, user, or local0 ... local7",
                self.facility
            )
        })
    }
}

/// Text for a Slack message: `&`, `<`, `>` escaped as Slack asks, and
/// control and bidi characters as everywhere else ([`text::escape`]).
fn slack_escape(reported: &str) -> String {
    let mut out = String::with_capacity(reported.len());
    for c in text::escape(reported).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// A URL as logs may show it: scheme and host only (a webhook's path is often its secret).
pub(super) fn redacted(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host);
    format!("{scheme}://{host}/…")
}

/// Why an event was not delivered.
#[derive(Debug)]
pub(super) enum Failure {
    /// Try again later (unreachable, 5xx, 408, 429).
    Transient(String),
    /// The receiver refuses this event for good (another 4xx): retrying
    /// cannot help, and would hold up every later event.
    Permanent(String),
}

/// One way of delivering alert events.
pub(super) trait Deliver {
    /// The sink's name in the outbox (`webhook:ops`, `syslog`).
    fn sink(&self) -> String;
    /// Whether it wants `event` at all.
    fn wants(&self, event: &AlertEvent) -> bool;
    /// Delivers one event.
    fn deliver(&mut self, id: i64, event: &AlertEvent) -> Result<(), Failure>;
    /// For a sink whose receiver keeps alert states and forgets those not
    /// sent again (Alertmanager): how long until it sends them again.
    fn resend_in(&self) -> Option<Duration> {
        None
    }
    /// Sends the active alerts again if that is due ([`Deliver::resend_in`]);
    /// counts and logs its own failures, and sets when to try again.
    fn resend(&mut self, _store: &dyn Store, _metrics: &SinkMetrics) {}
    /// The longest delay between two tries of a failing delivery.
    fn retry_max(&self) -> Duration {
        RETRY_MAX
    }
}

struct WebhookSink {
    hook: Webhook,
    agent: ureq::Agent,
}

impl Deliver for WebhookSink {
    fn sink(&self) -> String {
        format!("webhook:{}", self.hook.name)
    }

    fn wants(&self, event: &AlertEvent) -> bool {
        self.hook.wants(event)
    }

    fn deliver(&mut self, id: i64, event: &AlertEvent) -> Result<(), Failure> {
        let hook = &self.hook;
        let url = redacted(&hook.url);
        let mut request = self
            .agent
            .post(&hook.url)
            .header("User-Agent", concat!("portwatch-collector/", env!("CARGO_PKG_VERSION")));
        if let Some(token) = &hook.bearer_token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let response = request
            .send_json(hook.body(id, event))
            .map_err(|e| Failure::Transient(format!("{url}: {}", describe(&e))))?;
        webhook_answer(&url, response.status().as_u16())
    }
}

/// What a webhook's answer `status` means: 2xx delivered; 408, 429 and 5xx
/// a receiver that may take it later; any other status a refusal for good
/// (a 400, 404, 410, 413 ... comes again however often it is sent).
fn webhook_answer(url: &str, status: u16) -> Result<(), Failure> {
    match status {
        200..=299 => Ok(()),
        408 | 429 | 500.. => Err(Failure::Transient(format!("{url} answered {status}"))),
        _ => Err(Failure::Permanent(format!(
            "{url} answered {status}: it refuses this event; check the webhook's url and format"
        ))),
    }
}

struct SyslogSink {
    config: Syslog,
    facility: syslog::Facility,
    /// Connected on first use, and again after a failure.
    logger: Option<syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>>,
}

impl Deliver for SyslogSink {
    fn sink(&self) -> String {
        "syslog".to_owned()
    }

    fn wants(&self, event: &AlertEvent) -> bool {
        event.alert().severity >= self.config.min_severity
    }

    fn deliver(&mut self, id: i64, event: &AlertEvent) -> Result<(), Failure> {
        let socket = self.config.socket.display().to_string();
        if self.logger.is_none() {
            let formatter = syslog::Formatter3164 {
                facility: self.facility,
                hostname: None,
                process: "portwatch-collector".to_owned(),
                pid: std::process::id(),
            };
            let logger = syslog::unix_custom(formatter, &self.config.socket)
                .map_err(|e| Failure::Transient(format!("cannot connect to syslog at {socket}: {e}")))?;
            self.logger = Some(logger);
        }
        let a = event.alert();
        let line = syslog_line(id, event);
        let Some(logger) = self.logger.as_mut() else {
            return Err(Failure::Transient("no syslog connection".to_owned()));
        };
        let sent = match (event, a.severity) {
            (AlertEvent::Opened(_), Severity::Critical) => logger.crit(line),
            (AlertEvent::Opened(_), Severity::Warning) => logger.warning(line),
            (AlertEvent::Opened(_), Severity::Info) => logger.info(line),
            _ => logger.notice(line),
        };
        sent.map_err(|e| {
            let failure = syslog_failure(&socket, &e);
            if matches!(failure, Failure::Transient(_)) {
                self.logger = None;
            }
            failure
        })
    }
}

/// What a failed syslog send means. EMSGSIZE, a datagram larger than the
/// socket takes, comes again however often it is sent: refused for good.
/// Anything else (no daemon listening, a full buffer, a socket replaced) is
/// retried on a new connection; so is EINVAL, which says the socket or its
/// address is wrong, for every message alike: skipping would drop them all.
fn syslog_failure(socket: &str, e: &syslog::Error) -> Failure {
    let io = match e {
        syslog::Error::Write(io) | syslog::Error::Io(io) => Some(io),
        syslog::Error::Initialization(_) => None,
    };
    match io.and_then(rustix::io::Errno::from_io_error) {
        Some(rustix::io::Errno::MSGSIZE) => Failure::Permanent(format!(
            "syslog at {socket}: {e}: the message is larger than the socket takes"
        )),
        _ => Failure::Transient(format!("syslog at {socket}: {e}")),
    }
}

/// The syslog message for `event`: one line, its reported text escaped
/// ([`text::escape`]) so that it shows as text wherever syslog writes it,
/// the message cut ([`text::truncate`]) so that the datagram stays within
/// [`MAX_SYSLOG_BYTES`], the event's id kept at the end.
fn syslog_line(id: i64, event: &AlertEvent) -> String {
    let a = event.alert();
    let head = format!(
        "alert {} {} [{}] {} on {}: ",
        a.id,
        event.name(),
        a.severity.as_str(),
        a.kind.as_str(),
        text::escape(&a.host)
    );
    let tail = format!(" (event {id})");
    let room = SYSLOG_LINE_BYTES.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", text::truncate(&text::escape(&a.message), room))
}

/// The sinks of the config, to [`start`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Sinks<'a> {
    /// `[[alerts.webhook]]`.
    pub webhooks: &'a [Webhook],
    /// `[alerts.syslog]`.
    pub syslog: Option<&'a Syslog>,
    /// `[[alerts.alertmanager]]`.
    pub alertmanagers: &'a [Alertmanager],
}

/// Starts one delivery thread per webhook, one for syslog if set and one
/// per Alertmanager URL, reporting to `metrics`; the handle that wakes them.
/// Each delivers while this collector holds its lease, from `lease_of` (see
/// [`crate::lease::sink`]): of collectors sharing a database, one delivers
/// each sink's events.
pub fn start(
    store: Arc<dyn Store>,
    config: Sinks<'_>,
    metrics: &SinkMetrics,
    lease_of: &dyn Fn(&str) -> crate::lease::Lease,
) -> Result<Wakers, String> {
    let Sinks {
        webhooks,
        syslog,
        alertmanagers,
    } = config;
    let mut sinks: Vec<Box<dyn Deliver + Send>> = Vec::new();
    for hook in webhooks {
        let agent = portwatch_common::client::http_agent(hook.ca_file.as_deref(), POST_TIMEOUT)
            .map_err(|e| format!("webhook {:?}: {e}", hook.name))?;
        sinks.push(Box::new(WebhookSink {
            hook: hook.clone(),
            agent,
        }));
    }
    if let Some(config) = syslog {
        sinks.push(Box::new(SyslogSink {
            facility: config.facility_code()?,
            config: config.clone(),
            logger: None,
        }));
    }
    for am in alertmanagers {
        let am = Arc::new(am.clone());
        for url in &am.urls {
            sinks.push(Box::new(AlertmanagerSink::new(am.clone(), url)?));
        }
    }
    let mut wakers = Vec::new();
    for mut sink in sinks {
        let (tx, rx) = sync_channel(1);
        let store = store.clone();
        let metrics = metrics.clone();
        metrics.add(&sink.sink());
        let lease = lease_of(&crate::lease::sink(&sink.sink()));
        std::thread::Builder::new()
            .name(sink.sink())
            .spawn(move || run_sink(store.as_ref(), sink.as_mut(), &rx, &metrics, &lease))
            .map_err(|e| format!("cannot start a thread for an alert sink: {e}"))?;
        wakers.push(tx);
    }
    Ok(Wakers(wakers))
}

/// How often a sink whose lease is held elsewhere looks whether it is held here.
const LEASE_POLL: Duration = Duration::from_millis(500);

/// The time an alert change was made: when the alert opened, was
/// acknowledged, or resolved.
fn made_at(event: &AlertEvent) -> jiff::Timestamp {
    let a = event.alert();
    match event {
        AlertEvent::Opened(_) => a.opened_at,
        AlertEvent::Acknowledged(_) => a.acked_at.unwrap_or(a.opened_at),
        AlertEvent::Resolved(_) => a.resolved_at.unwrap_or(a.opened_at),
    }
}

/// One sink's delivery loop, in turns ([`Pending`]): runs until the process
/// ends (or, once idle, until its wakers are gone). A sink that sends
/// active alerts again ([`Deliver::resend`]) does so between events, on the
/// same thread, so that what it sends last about an alert is what the store
/// said last.
fn run_sink(
    store: &dyn Store,
    sink: &mut dyn Deliver,
    wake: &Receiver<()>,
    metrics: &SinkMetrics,
    lease: &crate::lease::Lease,
) {
    let name = sink.sink();
    let mut backoff = Backoff::new(RETRY_MIN, sink.retry_max().clamp(RETRY_MIN, RETRY_MAX));
    let pause = |backoff: &mut Backoff, what: &str, error: &str| {
        let delay = backoff.failed(Duration::ZERO);
        tracing::warn!(sink = %name, error, retry_in = ?delay, "{what}");
        std::thread::sleep(delay);
    };
    let save = |pending: &mut Pending, backoff: &mut Backoff| {
        if !pending.dirty() {
            return;
        }
        let (cursor, done) = pending.progress();
        while let Err(e) = store.set_sink_progress(&name, cursor, &done) {
            pause(backoff, "cannot record the sink's progress", &e.to_string());
        }
        pending.saved();
    };
    let read_progress = |backoff: &mut Backoff| loop {
        match store.sink_progress(&name) {
            Ok(p) => break p,
            Err(e) => pause(backoff, "cannot read the sink's progress", &e.to_string()),
        }
    };
    while !lease.held() {
        std::thread::sleep(LEASE_POLL);
    }
    let mut pending = Pending::new(read_progress(&mut backoff));
    let mut read_at: Option<Instant> = None;
    let mut saved_at = Instant::now();
    loop {
        if !lease.held() {
            // Another collector delivers now, from the place saved here
            // first; what this one read is stale once it takes over again,
            // where it starts from the store's place.
            save(&mut pending, &mut backoff);
            tracing::info!(sink = %name, "the sink's lease is held elsewhere; delivering stops here");
            while !lease.held() {
                std::thread::sleep(LEASE_POLL);
            }
            pending = Pending::new(read_progress(&mut backoff));
            read_at = None;
            tracing::info!(sink = %name, "the sink's lease is held here; delivering resumes");
        }
        sink.resend(store, metrics);
        // New events, another host's among them, join the turns soon.
        if pending.is_empty() || read_at.is_none_or(|at| at.elapsed() >= READ_EVERY) {
            let (after, limit) = pending.to_read();
            if limit > 0 {
                match store.alert_event_hosts_after(after, limit) {
                    Ok(events) => pending.add(events),
                    Err(e) => {
                        pause(&mut backoff, "cannot read the alert outbox", &e.to_string());
                        continue;
                    }
                }
            }
            read_at = Some(Instant::now());
        }
        let Some(id) = pending.take() else {
            save(&mut pending, &mut backoff);
            saved_at = Instant::now();
            let idle = sink
                .resend_in()
                .map_or(IDLE_POLL, |due| due.clamp(READ_EVERY, IDLE_POLL));
            match wake.recv_timeout(idle) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        };
        let event = loop {
            match store.alert_event(id) {
                Ok(event) => break event,
                Err(e) => pause(&mut backoff, "cannot read the alert outbox", &e.to_string()),
            }
        };
        match event.map(|(_, event)| event) {
            None => tracing::error!(sink = %name, event_id = id, "alert event gone from the outbox; skipped"),
            Some(Err(e)) => tracing::error!(sink = %name, event_id = id, error = %e, "alert event skipped"),
            Some(Ok(event)) if sink.wants(&event) => {
                metrics.delivering(&name, made_at(&event));
                loop {
                    match sink.deliver(id, &event) {
                        Ok(()) => {
                            backoff.succeeded();
                            metrics.delivered(&name);
                            tracing::debug!(sink = %name, event_id = id, "delivered");
                            break;
                        }
                        Err(Failure::Permanent(e)) => {
                            metrics.refused(&name);
                            tracing::error!(sink = %name, event_id = id, alert = event.alert().id, error = %e,
                                "alert event refused for good; skipped (the alert is in `portwatch alerts`)");
                            break;
                        }
                        Err(Failure::Transient(e)) => {
                            metrics.failed(&name);
                            // What is done stays done, however long the receiver is away.
                            save(&mut pending, &mut backoff);
                            saved_at = Instant::now();
                            pause(&mut backoff, "alert delivery failed; will retry", &e);
                        }
                    }
                }
                metrics.idle(&name);
            }
            Some(Ok(_)) => {}
        }
        pending.done(id);
        if pending.unsaved() >= SAVE_EVENTS || saved_at.elapsed() >= SAVE_EVERY {
            save(&mut pending, &mut backoff);
            saved_at = Instant::now();
        }
    }
}

/// A ureq error without the URL (which may hold a secret).
pub(super) fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) => format!("I/O error: {}", io.kind()),
        ureq::Error::Timeout(_) => "no answer in time".to_owned(),
        ureq::Error::HostNotFound => "the host name does not resolve".to_owned(),
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) => "the TLS handshake failed (ca_file?)".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_show_no_webhook_path_and_slack_text_carries_no_markup() {
        assert_eq!(
            redacted("https://hooks.slack.com/services/T0/B0/secret?x=1"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(redacted("http://user:pw@127.0.0.1:9/h"), "http://127.0.0.1:9/…");
        assert_eq!(
            slack_escape("nc[1] <!channel> & <http://x|ok>\n"),
            "nc[1] &lt;!channel&gt; &amp; &lt;http://x|ok&gt;\\n"
        );
        assert_eq!(slack_escape("a\u{202e}b"), "a\\u{202e}b");
    }

    #[test]
    fn a_syslog_message_is_one_line_of_text_whatever_the_process_is_named() {
        let finding = portwatch_model::Finding::new(
            portwatch_model::Kind::Unbaselined,
            "web-3",
            "unbaselined:tcp:22".to_owned(),
        );
        let alert = portwatch_model::AlertRow {
            id: 7,
            key: finding.key.clone(),
            kind: finding.kind,
            severity: Severity::Warning,
            host: "web-3".into(),
            message: "tcp/22 held by x\u{9b}2J\u{202e}\n<13>forged".into(),
            state: portwatch_model::AlertState::Open,
            opened_at: jiff::Timestamp::UNIX_EPOCH,
            acked_at: None,
            acked_by: None,
            ack_comment: None,
            resolved_at: None,
            finding,
        };
        assert_eq!(
            syslog_line(3, &AlertEvent::Opened(alert)),
            "alert 7 opened [warning] unbaselined on web-3: tcp/22 held by x\\u{9b}2J\\u{202e}\\n<13>forged (event 3)"
        );
    }

    fn hook(text: &str) -> Result<Webhook, String> {
        toml::from_str::<Webhook>(text).map_err(|e| e.to_string())
    }

    #[test]
    fn a_webhook_is_checked_and_defaults_to_json_and_warning() {
        let h = hook("name = \"ops\"\nurl = \"http://127.0.0.1:9/hook\"\n").unwrap();
        assert_eq!((h.format, h.min_severity), (Format::Json, Severity::Warning));
        assert!(h.check().is_ok());
        let bad = hook("name = \"ops\"\nurl = \"ftp://x\"\n").unwrap();
        assert!(bad.check().unwrap_err().contains("http://"));
        let e = hook("name = \"ops\"\nurl = \"http://x\"\nformat = \"xml\"\n").unwrap_err();
        assert!(e.contains("line 3") && e.contains("format"), "{e}");
    }

    fn opened(id: i64, host: &str, message: &str) -> AlertEvent {
        let finding = portwatch_model::Finding {
            message: message.to_owned(),
            processes: Some(message.to_owned()),
            ..portwatch_model::Finding::new(
                portwatch_model::Kind::RiskyPortExposed,
                host,
                format!("risky-port-exposed:{host}:tcp/23@1:0.0.0.0"),
            )
        };
        AlertEvent::Opened(portwatch_model::AlertRow {
            id,
            key: finding.key.clone(),
            kind: finding.kind,
            severity: Severity::Critical,
            host: host.into(),
            message: message.into(),
            state: portwatch_model::AlertState::Open,
            opened_at: jiff::Timestamp::UNIX_EPOCH,
            acked_at: None,
            acked_by: None,
            ack_comment: Some(message.into()),
            resolved_at: None,
            finding,
        })
    }

    /// A process name of 300 KB, with control characters that escaping makes longer still.
    fn huge_name() -> String {
        format!("tcp/23 held by evil{}[4242]", "\u{1b}x".repeat(150_000))
    }

    #[test]
    fn every_sink_message_stays_within_its_bound_whatever_was_reported() {
        let event = opened(7, "web-3", &huge_name());
        let line = syslog_line(99, &event);
        assert!(line.len() <= SYSLOG_LINE_BYTES, "{}", line.len());
        assert!(
            line.starts_with("alert 7 opened [critical] risky-port-exposed on web-3: tcp/23 held by evil\\x1bx"),
            "{line:.120}"
        );
        assert!(
            line.ends_with(" bytes] (event 99)"),
            "the event id is kept: {}",
            &line[line.len() - 40..]
        );

        let json = hook("name = \"ops\"\nurl = \"http://127.0.0.1:9/h\"\n").unwrap();
        let body = serde_json::to_vec(&json.body(99, &event)).unwrap();
        assert!(body.len() <= MAX_WEBHOOK_BYTES, "{}", body.len());
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (body["event_id"].as_i64(), body["alert"]["id"].as_i64()),
            (Some(99), Some(7))
        );
        let message = body["alert"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("tcp/23 held by evil\u{1b}x") && message.ends_with(" bytes]"),
            "{message:.80}"
        );

        let slack = hook("name = \"ops\"\nurl = \"http://127.0.0.1:9/h\"\nformat = \"slack\"\n").unwrap();
        let text = slack.body(99, &event)["text"].as_str().unwrap().to_owned();
        assert!(text.len() <= MAX_SLACK_TEXT_BYTES, "{}", text.len());
        assert!(
            text.starts_with("[CRITICAL] opened alert 7 on web-3: tcp/23 held by evil\\x1bx"),
            "{text:.80}"
        );

        // What fits is sent as it is.
        let small = opened(8, "web-3", "tcp/23 held by in.telnetd[812]");
        assert_eq!(
            json.body(1, &small)["alert"],
            serde_json::to_value(small.alert()).unwrap()
        );
    }

    #[test]
    fn a_syslog_datagram_the_socket_cannot_take_is_refused_for_good() {
        // A unix datagram larger than the socket's buffer, and a UDP one larger
        // than a datagram can be: EMSGSIZE, whatever the retry.
        let (a, _b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let unix = a.send(&vec![b'x'; 1 << 20]).unwrap_err();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = udp.local_addr().unwrap();
        let too_big = udp.send_to(&vec![b'x'; 70_000], target).unwrap_err();
        for e in [unix, too_big] {
            assert_eq!(e.raw_os_error(), Some(rustix::io::Errno::MSGSIZE.raw_os_error()), "{e}");
            let failure = syslog_failure("/dev/log", &syslog::Error::Write(e));
            assert!(
                matches!(&failure, Failure::Permanent(m) if m.contains("larger than the socket takes")),
                "{failure:?}"
            );
        }
        // No daemon listening (it restarts): retried.
        let gone = std::io::Error::from_raw_os_error(rustix::io::Errno::CONNREFUSED.raw_os_error());
        assert!(matches!(
            syslog_failure("/dev/log", &syslog::Error::Write(gone)),
            Failure::Transient(_)
        ));
        let inval = std::io::Error::from_raw_os_error(rustix::io::Errno::INVAL.raw_os_error());
        assert!(matches!(
            syslog_failure("/dev/log", &syslog::Error::Io(inval)),
            Failure::Transient(_)
        ));
    }

    #[test]
    fn a_huge_process_name_reaches_syslog_cut_in_one_datagram() {
        let dir = std::env::temp_dir().join(format!("pw-sink-syslog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log.sock");
        let daemon = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        daemon.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let config: Syslog = toml::from_str(&format!("socket = {:?}\n", path.to_str().unwrap())).unwrap();
        let mut sink = SyslogSink {
            facility: config.facility_code().unwrap(),
            config,
            logger: None,
        };
        sink.deliver(3, &opened(7, "web-3", &huge_name())).unwrap();
        sink.deliver(4, &opened(8, "web-3", "tcp/23 held by in.telnetd[812]"))
            .unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let n = daemon.recv(&mut buf).unwrap();
        assert!(n <= MAX_SYSLOG_BYTES, "{n}");
        let datagram = String::from_utf8_lossy(&buf[..n]).into_owned();
        // daemon (3) * 8 + crit (2) = 26.
        assert!(
            datagram.starts_with("<26>") && datagram.ends_with("(event 3)"),
            "{datagram:.100}"
        );
        let n = daemon.recv(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).contains("alert 8 opened"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_webhook_refusal_is_for_good_except_timeouts_rate_limits_and_server_errors() {
        for status in [200, 202, 299] {
            assert!(webhook_answer("u", status).is_ok(), "{status}");
        }
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(
                matches!(webhook_answer("u", status), Err(Failure::Transient(_))),
                "{status}"
            );
        }
        for status in [301, 400, 401, 403, 404, 410, 413, 422] {
            assert!(
                matches!(webhook_answer("u", status), Err(Failure::Permanent(_))),
                "{status}"
            );
        }
    }

    /// A sink that records what it is given, `pace` per event; `each` runs
    /// before each delivery, with how many came before.
    struct Recorder {
        delivered: Arc<std::sync::Mutex<Vec<(i64, String)>>>,
        pace: Duration,
        each: Box<dyn FnMut(usize) + Send>,
    }

    impl Deliver for Recorder {
        fn sink(&self) -> String {
            "webhook:test".to_owned()
        }
        fn wants(&self, _: &AlertEvent) -> bool {
            true
        }
        fn deliver(&mut self, id: i64, event: &AlertEvent) -> Result<(), Failure> {
            let n = self.delivered.lock().unwrap().len();
            (self.each)(n);
            std::thread::sleep(self.pace);
            self.delivered.lock().unwrap().push((id, event.alert().host.clone()));
            Ok(())
        }
    }

    fn findings(host: &str, n: u16) -> Vec<portwatch_model::Finding> {
        (0..n)
            .map(|port| portwatch_model::Finding {
                message: format!("{host}: tcp/{port}"),
                local_port: Some(port),
                ..portwatch_model::Finding::new(
                    portwatch_model::Kind::UnexpectedListener,
                    host,
                    format!("unexpected-listener:{host}:tcp/{port}@1:0.0.0.0"),
                )
            })
            .collect()
    }

    #[test]
    fn another_host_s_alert_passes_a_flood_being_delivered_and_each_host_keeps_its_order() {
        use crate::store::sqlite::SqliteStore;
        use crate::store::{Alerts, Outbox};
        let dir = std::env::temp_dir().join(format!("pw-sink-fair-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Arc::new(SqliteStore::open(&dir.join("c.db")).unwrap());
        let t = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        // The sink exists before the flood (a new sink starts after the newest event).
        assert_eq!(store.sink_progress("webhook:test").unwrap().cursor, 0);
        let flood = findings("flood-1", 1000);
        store.sync_alerts(&["flood-1".to_owned()], &flood, 10_000, t).unwrap();

        let delivered: Arc<std::sync::Mutex<Vec<(i64, String)>>> = Arc::default();
        let writer = store.clone();
        let mut recorder = Recorder {
            delivered: delivered.clone(),
            pace: Duration::from_millis(2),
            each: Box::new(move |n| {
                // While the flood is being delivered, web-3's alert opens, then
                // is resolved.
                if n == 10 {
                    writer
                        .sync_alerts(&["web-3".to_owned()], &findings("web-3", 1), 100, t)
                        .unwrap();
                    writer.sync_alerts(&["web-3".to_owned()], &[], 100, t).unwrap();
                }
            }),
        };
        let (wake, woken) = sync_channel(1);
        let reader = store.clone();
        let running = std::thread::spawn(move || {
            let lease = crate::lease::Lease::always();
            run_sink(reader.as_ref(), &mut recorder, &woken, &SinkMetrics::default(), &lease)
        });
        let all = loop {
            let all = delivered.lock().unwrap().clone();
            if all.len() >= 1002 {
                break all;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        drop(wake);
        running.join().unwrap();

        let at = |host: &str| -> Vec<usize> { (0..all.len()).filter(|&i| all[i].1 == host).collect() };
        let web = at("web-3");
        assert_eq!(web.len(), 2, "opened and resolved, once each");
        // Read within 100 ms of being written (50 events at 2 ms), then
        // taken every other turn: not after the 990 flood events still to go.
        assert!(web[1] < 10 + 50 + 4, "web-3's events came {web:?}th of 1002");
        for host in ["flood-1", "web-3"] {
            let ids: Vec<i64> = at(host).into_iter().map(|i| all[i].0).collect();
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "{host} in its order: {ids:?}");
        }
        let mut ids: Vec<i64> = all.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        assert_eq!(ids, (1..=1002).collect::<Vec<_>>(), "each once");
        // All done with, and saved so.
        assert_eq!(
            store.sink_progress("webhook:test").unwrap(),
            crate::store::SinkProgress {
                cursor: 1002,
                done: vec![]
            }
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_sink_delivers_only_where_its_lease_is_held_and_the_next_holder_resumes_at_its_place() {
        use crate::lease::Lease;
        use crate::store::sqlite::SqliteStore;
        use crate::store::{Alerts, Outbox};
        let dir = std::env::temp_dir().join(format!("pw-sink-lease-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Arc::new(SqliteStore::open(&dir.join("c.db")).unwrap());
        let t = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        assert_eq!(store.sink_progress("webhook:test").unwrap().cursor, 0);
        store
            .sync_alerts(&["web-1".to_owned()], &findings("web-1", 20), 100, t)
            .unwrap();

        // Two collectors' deliveries of one sink: `first` holds its lease, `second` not yet.
        let (first_lease, second_lease) = (Lease::always(), Lease::held_until(None));
        type Delivered = Arc<std::sync::Mutex<Vec<(i64, String)>>>;
        let (first, second): (Delivered, Delivered) = (Arc::default(), Arc::default());
        let flip = first_lease.clone();
        let mut recorders = [
            Recorder {
                delivered: first.clone(),
                pace: Duration::from_millis(1),
                // The lease is lost while the 6th event is being delivered.
                each: Box::new(move |n| {
                    if n == 5 {
                        flip.set_until(None);
                    }
                }),
            },
            Recorder {
                delivered: second.clone(),
                pace: Duration::ZERO,
                each: Box::new(|_| {}),
            },
        ]
        .into_iter();
        let mut running = Vec::new();
        let mut wakes = Vec::new();
        for lease in [first_lease, second_lease.clone()] {
            let (wake, woken) = sync_channel(1);
            let (reader, mut recorder) = (store.clone(), recorders.next().unwrap());
            wakes.push(wake);
            running.push(std::thread::spawn(move || {
                run_sink(reader.as_ref(), &mut recorder, &woken, &SinkMetrics::default(), &lease)
            }));
        }
        let wait = |what: &str, done: &dyn Fn() -> bool| {
            for _ in 0..3000 {
                if done() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            panic!("{what}");
        };
        wait("the first saves its place once it lost the lease", &|| {
            let p = store.sink_progress("webhook:test").unwrap();
            p.cursor + p.done.len() as i64 >= 6
        });
        assert_eq!(
            first.lock().unwrap().len(),
            6,
            "nothing delivered once the lease is lost"
        );
        assert!(second.lock().unwrap().is_empty(), "nothing delivered without the lease");
        second_lease.set_until(Some(std::time::Instant::now() + Duration::from_secs(3600)));
        wait("the second delivers the rest", &|| second.lock().unwrap().len() >= 14);
        drop(wakes);
        let mut ids: Vec<i64> = first
            .lock()
            .unwrap()
            .iter()
            .chain(second.lock().unwrap().iter())
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, (1..=20).collect::<Vec<_>>(), "each event once, across the two");
        drop(running);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
