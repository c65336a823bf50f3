//! Findings and alerts: how a host departs from its baselines, and the
//! alerts that follow each condition from when it is first seen to when it
//! clears.

use jiff::Timestamp;
use portwatch_common::Proto;
use serde::{Deserialize, Serialize};

/// What kind of departure a finding is. The names are a contract (`kind` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Kind {
    /// A listener matches no baseline entry of its host.
    UnexpectedListener,
    /// An expected listener has been gone for longer than the grace period.
    MissingListener,
    /// An expected port is held by another process or user.
    OwnerMismatch,
    /// A listener is more exposed than its entry allows.
    ExposureWidened,
    /// A risky port is reachable beyond loopback.
    RiskyPortExposed,
    /// The host's agent stopped reporting.
    HostSilent,
    /// The host's clock is off the collector's by more than the tolerance.
    ClockSkew,
    /// A listener opened and closed too often in the window.
    Flapping,
    /// A listener of a host no baseline covers (reported, never alerted).
    Unbaselined,
    /// A rule change made a listener reachable that the firewall filtered.
    FirewallOpened,
    /// The host's firewall and a probe from the collector disagree: filtered
    /// but reached, or open but not reached.
    OutsideViewDisagrees,
    /// A remote address that a threat list holds is connected to a listener.
    SuspiciousPeer,
}

impl Kind {
    /// The kind's name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::UnexpectedListener => "unexpected-listener",
            Kind::MissingListener => "missing-listener",
            Kind::OwnerMismatch => "owner-mismatch",
            Kind::ExposureWidened => "exposure-widened",
            Kind::RiskyPortExposed => "risky-port-exposed",
            Kind::HostSilent => "host-silent",
            Kind::ClockSkew => "clock-skew",
            Kind::Flapping => "flapping",
            Kind::Unbaselined => "unbaselined",
            Kind::FirewallOpened => "firewall-opened",
            Kind::OutsideViewDisagrees => "outside-view-disagrees",
            Kind::SuspiciousPeer => "suspicious-peer",
        }
    }

    /// Parses a kind's name.
    pub fn parse(name: &str) -> Option<Kind> {
        ALL_KINDS.iter().copied().find(|k| k.as_str() == name)
    }

    /// How serious it is.
    pub fn severity(self) -> Severity {
        match self {
            Kind::RiskyPortExposed
            | Kind::ExposureWidened
            | Kind::OwnerMismatch
            | Kind::HostSilent
            | Kind::SuspiciousPeer => Severity::Critical,
            Kind::UnexpectedListener
            | Kind::MissingListener
            | Kind::Flapping
            | Kind::ClockSkew
            | Kind::FirewallOpened
            | Kind::OutsideViewDisagrees => Severity::Warning,
            Kind::Unbaselined => Severity::Info,
        }
    }

    /// Whether the finding raises an alert (`unbaselined` only lists).
    pub fn alerts(self) -> bool {
        self != Kind::Unbaselined
    }
}

/// Every kind, in order.
pub const ALL_KINDS: [Kind; 12] = [
    Kind::UnexpectedListener,
    Kind::MissingListener,
    Kind::OwnerMismatch,
    Kind::ExposureWidened,
    Kind::RiskyPortExposed,
    Kind::HostSilent,
    Kind::ClockSkew,
    Kind::Flapping,
    Kind::Unbaselined,
    Kind::FirewallOpened,
    Kind::OutsideViewDisagrees,
    Kind::SuspiciousPeer,
];

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Someone should look.
    Warning,
    /// Someone should look now.
    Critical,
}

impl Severity {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    /// Parses a severity's name.
    pub fn parse(name: &str) -> Option<Severity> {
        [Severity::Info, Severity::Warning, Severity::Critical]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// One departure from the baseline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Finding {
    /// What kind.
    pub kind: Kind,
    /// How serious.
    pub severity: Severity,
    /// The host.
    pub host: String,
    /// Names the condition: the same condition seen again has the same key.
    pub key: String,
    /// One line for a person.
    pub message: String,
    /// The listener concerned, if any.
    pub proto: Option<Proto>,
    /// Its address.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub local_addr: Option<std::net::IpAddr>,
    /// Its port (or the expected port, for a missing listener).
    pub local_port: Option<u16>,
    /// Who holds it (`sshd[812]`), if known.
    pub processes: Option<String>,
    /// The baseline whose entry is concerned.
    pub baseline: Option<String>,
    /// The entry, as a person reads it (`tcp/22 on wildcard by sshd`).
    pub expected: Option<String>,
    /// The entry's owner.
    pub owner: Option<String>,
    /// The entry's reason.
    pub reason: Option<String>,
    /// On a summary alert (the collector caps alerts per host and kind): how many findings of its kind on
    /// its host have no alert of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub more: Option<u64>,
}

/// Longest [`Finding::message`], in bytes. Messages quote what agents
/// report (process names, units): a longer one is cut (`portwatch_common::text::truncate`).
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// Longest account of a listener's holders ([`Finding::processes`], and
/// where a message names them), in bytes: a process may be named anything,
/// at any length, by whoever runs it.
pub const MAX_HOLDERS_BYTES: usize = 256;

impl Finding {
    /// A finding of `kind` on `host` for the condition `key`, with the
    /// kind's severity and nothing else said yet.
    pub fn new(kind: Kind, host: &str, key: String) -> Finding {
        Finding {
            kind,
            severity: kind.severity(),
            host: host.to_owned(),
            key,
            message: String::new(),
            proto: None,
            local_addr: None,
            local_port: None,
            processes: None,
            baseline: None,
            expected: None,
            owner: None,
            reason: None,
            more: None,
        }
    }
}

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum AlertState {
    /// The condition holds and nobody has said they are on it.
    Open,
    /// Someone is on it; the condition still holds.
    Acknowledged,
    /// The condition cleared.
    Resolved,
}

impl AlertState {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Open => "open",
            AlertState::Acknowledged => "acknowledged",
            AlertState::Resolved => "resolved",
        }
    }

    /// Parses a state's name.
    pub fn parse(name: &str) -> Option<AlertState> {
        [AlertState::Open, AlertState::Acknowledged, AlertState::Resolved]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// An alert: one finding's condition from when it was first seen to when it cleared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertRow {
    /// Its number.
    pub id: i64,
    /// The condition (see [`Finding::key`]).
    pub key: String,
    /// The finding's kind.
    pub kind: Kind,
    /// Its severity.
    pub severity: Severity,
    /// The host.
    pub host: String,
    /// One line for a person.
    pub message: String,
    /// Where it is in its life.
    pub state: AlertState,
    /// When the condition was first seen.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub opened_at: Timestamp,
    /// When it was acknowledged.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub acked_at: Option<Timestamp>,
    /// Who acknowledged it (token name).
    pub acked_by: Option<String>,
    /// What they said.
    pub ack_comment: Option<String>,
    /// When the condition cleared.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub resolved_at: Option<Timestamp>,
    /// The finding that opened it.
    pub finding: Finding,
}

/// A change of an alert's state, for the sinks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", content = "alert", rename_all = "lowercase")]
pub enum AlertEvent {
    /// A new alert.
    Opened(AlertRow),
    /// Someone acknowledged it.
    Acknowledged(AlertRow),
    /// Its condition cleared.
    Resolved(AlertRow),
}

impl AlertEvent {
    /// The alert.
    pub fn alert(&self) -> &AlertRow {
        match self {
            AlertEvent::Opened(a) | AlertEvent::Acknowledged(a) | AlertEvent::Resolved(a) => a,
        }
    }

    /// `opened`, `acknowledged` or `resolved`.
    pub fn name(&self) -> &'static str {
        match self {
            AlertEvent::Opened(_) => "opened",
            AlertEvent::Acknowledged(_) => "acknowledged",
            AlertEvent::Resolved(_) => "resolved",
        }
    }

    /// The event named `name` (see [`AlertEvent::name`]) of `alert`.
    pub fn from_name(name: &str, alert: AlertRow) -> Option<AlertEvent> {
        match name {
            "opened" => Some(AlertEvent::Opened(alert)),
            "acknowledged" => Some(AlertEvent::Acknowledged(alert)),
            "resolved" => Some(AlertEvent::Resolved(alert)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_to_what_they_name_and_nothing_else() {
        for s in [Severity::Info, Severity::Warning, Severity::Critical] {
            assert_eq!(Severity::parse(s.as_str()), Some(s));
        }
        for s in [AlertState::Open, AlertState::Acknowledged, AlertState::Resolved] {
            assert_eq!(AlertState::parse(s.as_str()), Some(s));
        }
        assert_eq!(Severity::parse("CRITICAL"), None);
        assert_eq!(AlertState::parse(""), None);
    }
}
