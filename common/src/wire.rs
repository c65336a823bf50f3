//! The agent -> collector protocol, version 1.
//!
//! An agent sends a [`Batch`] of numbered [`Report`]s (`POST /api/v1/ingest`,
//! gzip body) and the collector answers an [`Ack`]. Reports carry a sequence
//! number per agent *session* (one run of the agent): a session starts with a
//! snapshot, then sends a delta whenever something changed. When nothing
//! changed the agent still sends a batch, with no report and `alive_at` set:
//! a heartbeat is not history, takes no sequence number and is never spooled.
//! The collector stores a report once however often it is sent,
//! acknowledges only what it has committed, and asks for a snapshot
//! (`resync`) when it sees a gap.
//!
//! Compatibility: agents in the field lag the collector. Every type
//! tolerates unknown fields, and a new field is always optional; a change
//! that an old peer would misread gets a new [`PROTOCOL_VERSION`].

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::snapshot::Listener;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Most reports one batch may carry.
pub const MAX_REPORTS_PER_BATCH: usize = 1000;

/// What an agent says about its host on first contact and with every snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFacts {
    /// Operating system name and version (`Debian GNU/Linux 12`).
    pub os: Option<String>,
    /// Kernel release (`6.1.0-18-amd64`).
    pub kernel: Option<String>,
    /// When the host booted.
    pub boot_time: Option<Timestamp>,
    /// The agent's version.
    pub agent_version: String,
    /// The agent's scan interval, in milliseconds (the collector marks the
    /// host silent after three missed intervals).
    pub interval_ms: u64,
    /// Free-form tags from the agent's config (`role = "db"`).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// One numbered observation of a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Sequence number within the session: 1, 2, 3, ... without gaps.
    pub seq: u64,
    /// When the agent observed it (not when it was sent).
    pub observed_at: Timestamp,
    /// What was observed.
    #[serde(flatten)]
    pub body: ReportBody,
}

/// What a report says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReportBody {
    /// Every listener of the host; the collector reconciles it with what it
    /// had (closing what is gone, opening what is new, keeping the rest).
    Snapshot {
        /// The host's facts.
        facts: HostFacts,
        /// Every listener.
        listeners: Vec<Listener>,
    },
    /// What changed since the previous report.
    Delta {
        /// Listeners that appeared.
        opened: Vec<Arc<Listener>>,
        /// Listeners that went away.
        closed: Vec<Arc<Listener>>,
    },
}

/// What an agent sends in one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// Protocol version ([`PROTOCOL_VERSION`]).
    pub version: u32,
    /// The host the reports are about; must be the host of the agent's token.
    pub host: String,
    /// Identifies one run of the agent; sequence numbers count within it.
    pub session: String,
    /// Reports dropped from a full spool since the last acknowledged batch.
    #[serde(default)]
    pub dropped: u64,
    /// The agent was running and observing at this time (a heartbeat).
    #[serde(default)]
    pub alive_at: Option<Timestamp>,
    /// The reports, in sequence order; may be empty in a heartbeat.
    #[serde(default)]
    pub reports: Vec<Report>,
}

/// The collector's answer to a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Every report of the session up to this sequence number is stored.
    pub acked: u64,
    /// Send a snapshot next (the collector saw a gap, or has no state for the session).
    pub resync: bool,
}

/// Why a batch is refused before anything of it is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// A version this build does not speak.
    #[error("protocol version {0} is not supported (this collector speaks version {PROTOCOL_VERSION}); upgrade the collector")]
    Version(u32),
    /// An empty, overlong or oddly spelled host name.
    #[error("invalid host name {0:?}: use 1 to 253 letters, digits, '.', '-' or '_'")]
    Host(String),
    /// An empty or overlong session id.
    #[error("invalid session id: use 1 to 64 printable characters")]
    Session,
    /// No reports and no heartbeat, or too many reports.
    #[error("a batch carries a heartbeat (alive_at) or 1 to {MAX_REPORTS_PER_BATCH} reports, not {0}")]
    Size(usize),
    /// Sequence numbers that do not increase, or start at 0.
    #[error("report sequence numbers must start at 1 and increase within a batch (found {0} after {1})")]
    Order(u64, u64),
}

impl Batch {
    /// Checks what can be checked without the collector's state.
    pub fn validate(&self) -> Result<(), BatchError> {
        if self.version != PROTOCOL_VERSION {
            return Err(BatchError::Version(self.version));
        }
        if !valid_host_name(&self.host) {
            return Err(BatchError::Host(self.host.clone()));
        }
        if self.session.is_empty() || self.session.len() > 64 || !self.session.chars().all(|c| c.is_ascii_graphic()) {
            return Err(BatchError::Session);
        }
        if (self.reports.is_empty() && self.alive_at.is_none()) || self.reports.len() > MAX_REPORTS_PER_BATCH {
            return Err(BatchError::Size(self.reports.len()));
        }
        let mut previous = 0;
        for report in &self.reports {
            if report.seq <= previous {
                return Err(BatchError::Order(report.seq, previous));
            }
            previous = report.seq;
        }
        Ok(())
    }
}

/// A host name as portwatch accepts it: 1 to 253 ASCII letters, digits,
/// `.`, `-`, `_`.
pub fn valid_host_name(name: &str) -> bool {
    (1..=253).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> HostFacts {
        HostFacts {
            os: Some("Debian GNU/Linux 12".into()),
            kernel: Some("6.1.0".into()),
            boot_time: None,
            agent_version: "0.1.0".into(),
            interval_ms: 10_000,
            tags: BTreeMap::from([("role".into(), "db".into())]),
        }
    }

    fn batch(seqs: &[u64]) -> Batch {
        Batch {
            version: PROTOCOL_VERSION,
            host: "web-3".into(),
            session: "a1b2".into(),
            dropped: 0,
            alive_at: None,
            reports: seqs
                .iter()
                .map(|&seq| Report {
                    seq,
                    observed_at: Timestamp::from_second(1_700_000_000).unwrap(),
                    body: ReportBody::Delta {
                        opened: Vec::new(),
                        closed: Vec::new(),
                    },
                })
                .collect(),
        }
    }

    #[test]
    fn reports_are_tagged_by_kind_with_rfc3339_times() {
        let r = Report {
            seq: 1,
            observed_at: Timestamp::from_second(1_700_000_000).unwrap(),
            body: ReportBody::Snapshot {
                facts: facts(),
                listeners: Vec::new(),
            },
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["kind"], "snapshot");
        assert_eq!(v["observed_at"], "2023-11-14T22:13:20Z");
        assert_eq!(v["facts"]["tags"]["role"], "db");
        assert_eq!(serde_json::from_value::<Report>(v).unwrap(), r);
        let delta = serde_json::to_value(&batch(&[1]).reports[0]).unwrap();
        assert_eq!(delta["kind"], "delta");
    }

    #[test]
    fn unknown_fields_from_newer_agents_are_tolerated() {
        let json = r#"{"version":1,"host":"h","session":"s","reports":[
            {"seq":1,"observed_at":"2026-01-01T00:00:00Z","kind":"delta","opened":[],"closed":[],"future":true}],
            "also_future":[1]}"#;
        let b: Batch = serde_json::from_str(json).unwrap();
        assert_eq!((b.dropped, b.alive_at), (0, None));
        assert_eq!(b.reports[0].seq, 1);
        b.validate().unwrap();
    }

    #[test]
    fn batches_are_validated_before_anything_is_stored() {
        assert_eq!(batch(&[1, 2, 3]).validate(), Ok(()));
        assert_eq!(batch(&[]).validate(), Err(BatchError::Size(0)));
        let mut heartbeat = batch(&[]);
        heartbeat.alive_at = Some(Timestamp::from_second(1_700_000_000).unwrap());
        assert_eq!(heartbeat.validate(), Ok(()));
        assert_eq!(batch(&[2, 2]).validate(), Err(BatchError::Order(2, 2)));
        assert_eq!(batch(&[0]).validate(), Err(BatchError::Order(0, 0)));
        let mut b = batch(&[1]);
        b.version = 2;
        assert_eq!(b.validate(), Err(BatchError::Version(2)));
        let mut b = batch(&[1]);
        b.host = "web 3;drop".into();
        assert!(matches!(b.validate(), Err(BatchError::Host(_))));
        let mut b = batch(&[1]);
        b.session = String::new();
        assert_eq!(b.validate(), Err(BatchError::Session));
        let too_many: Vec<u64> = (1..=MAX_REPORTS_PER_BATCH as u64 + 1).collect();
        assert!(matches!(batch(&too_many).validate(), Err(BatchError::Size(_))));
    }

    #[test]
    fn host_names_are_plain() {
        for ok in ["web-3", "db1.prod.example.com", "host_a"] {
            assert!(valid_host_name(ok), "{ok}");
        }
        for bad in ["", "a b", "x/y", "ünï", &"a".repeat(254)] {
            assert!(!valid_host_name(bad), "{bad}");
        }
    }
}
