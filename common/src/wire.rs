//! The agent -> collector protocol, versions 1 and 2.
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
//! that an old peer would misread gets a new [`PROTOCOL_VERSION`]. A batch
//! is sent with the lowest version that can carry it
//! ([`Batch::required_version`]), so a new agent keeps working with an
//! older collector for everything but what only the new version can say.
//!
//! | version | adds |
//! |---|---|
//! | 1 | snapshots, deltas, heartbeats |
//! | 2 | [`ReportBody::SnapshotPart`]: a snapshot too large for one batch, sent in parts |
//!
//! Size: a batch is bounded in bytes by the collector ([`Limits`], stated
//! in every [`Ack`]), not only in reports. An agent keeps each report under
//! [`REPORT_BYTES`] of JSON (a larger snapshot goes in parts, a larger delta
//! as several deltas) and each batch under the collector's limits; a
//! collector that answers 413 is sent smaller batches.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::snapshot::Listener;

/// The newest protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 2;

/// The oldest protocol version this build still accepts.
pub const MIN_PROTOCOL_VERSION: u32 = 1;

/// Most reports one batch may carry.
pub const MAX_REPORTS_PER_BATCH: usize = 1000;

/// Most parts one snapshot may be sent in (at [`REPORT_BYTES`] a part, 4 GiB
/// of listeners).
pub const MAX_SNAPSHOT_PARTS: u32 = 4096;

/// The JSON size an agent keeps each report under: a snapshot larger than
/// this is sent as [`ReportBody::SnapshotPart`]s, a delta as several deltas.
/// Far below any sane [`Limits::max_decompressed_bytes`], so one report
/// always fits a batch.
pub const REPORT_BYTES: usize = 1024 * 1024;

/// The size limits a collector applies to `POST /api/v1/ingest`, stated in
/// every [`Ack`] so that agents follow a collector whose limits changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest request body as sent (gzip-compressed or not), in bytes.
    pub max_body_bytes: u64,
    /// Largest request body once decompressed (the batch's JSON), in bytes.
    pub max_decompressed_bytes: u64,
    /// Most reports in one batch.
    pub max_reports: u64,
    /// The newest protocol version the collector speaks.
    pub max_version: u32,
}

impl Limits {
    /// What a collector that states no limits (one older than this field)
    /// applies: version 1's limits.
    pub const VERSION_1: Limits = Limits {
        max_body_bytes: 8 * 1024 * 1024,
        max_decompressed_bytes: 32 * 1024 * 1024,
        max_reports: MAX_REPORTS_PER_BATCH as u64,
        max_version: 1,
    };
}

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
    /// One part of a snapshot too large for one batch (protocol version 2).
    /// The parts of one snapshot are consecutive reports numbered `part` 0,
    /// 1, ... `parts - 1`, observed at the same time; the collector keeps
    /// each part as it arrives (and acknowledges it) and reconciles the
    /// host's listeners with their union when the last one arrives, exactly
    /// as for a [`ReportBody::Snapshot`]. A part that does not follow the
    /// previous part of its snapshot is a gap: the collector asks for a new
    /// snapshot.
    SnapshotPart {
        /// This part's index, from 0.
        part: u32,
        /// How many parts the snapshot has (2 to [`MAX_SNAPSHOT_PARTS`]).
        parts: u32,
        /// The host's facts: on the last part.
        #[serde(default)]
        facts: Option<HostFacts>,
        /// This part's listeners.
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
    /// The collector's size limits (absent from collectors older than
    /// them: assume [`Limits::VERSION_1`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
}

/// Why a batch is refused before anything of it is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// A version this build does not speak.
    #[error("protocol version {0} is not supported (this collector speaks versions {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}); upgrade the collector")]
    Version(u32),
    /// A report the batch's version cannot carry.
    #[error("report {seq} is a snapshot part, which needs protocol version 2 (the batch says {version})")]
    NeedsVersion {
        /// The report.
        seq: u64,
        /// The batch's version.
        version: u32,
    },
    /// A snapshot part numbered outside its snapshot.
    #[error("report {seq}: snapshot part {part} of {parts} is impossible (parts number 0 to parts - 1, 2 to {MAX_SNAPSHOT_PARTS} parts)")]
    Part {
        /// The report.
        seq: u64,
        /// Its part index.
        part: u32,
        /// Its part count.
        parts: u32,
    },
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
        if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&self.version) {
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
            if let ReportBody::SnapshotPart { part, parts, .. } = report.body {
                if self.version < 2 {
                    return Err(BatchError::NeedsVersion {
                        seq: report.seq,
                        version: self.version,
                    });
                }
                if !(2..=MAX_SNAPSHOT_PARTS).contains(&parts) || part >= parts {
                    return Err(BatchError::Part {
                        seq: report.seq,
                        part,
                        parts,
                    });
                }
            }
        }
        Ok(())
    }

    /// The lowest protocol version that can carry this batch's reports.
    pub fn required_version(reports: &[Report]) -> u32 {
        match reports
            .iter()
            .any(|r| matches!(r.body, ReportBody::SnapshotPart { .. }))
        {
            true => 2,
            false => 1,
        }
    }
}

/// Bytes of `value` as JSON, counted without building the text (how
/// agents keep reports and batches under their bounds).
pub fn json_len(value: &impl Serialize) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // The wire types always serialize (no maps with non-string keys); a
    // failure would only make the count short.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
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
        b.version = 3;
        assert_eq!(b.validate(), Err(BatchError::Version(3)));
        b.version = 0;
        assert_eq!(b.validate(), Err(BatchError::Version(0)));
        let mut b = batch(&[1]);
        b.host = "web 3;drop".into();
        assert!(matches!(b.validate(), Err(BatchError::Host(_))));
        let mut b = batch(&[1]);
        b.session = String::new();
        assert_eq!(b.validate(), Err(BatchError::Session));
        let too_many: Vec<u64> = (1..=MAX_REPORTS_PER_BATCH as u64 + 1).collect();
        assert!(matches!(batch(&too_many).validate(), Err(BatchError::Size(_))));
    }

    fn part(seq: u64, part: u32, parts: u32) -> Report {
        Report {
            seq,
            observed_at: Timestamp::from_second(1_700_000_000).unwrap(),
            body: ReportBody::SnapshotPart {
                part,
                parts,
                facts: (part + 1 == parts).then(facts),
                listeners: Vec::new(),
            },
        }
    }

    #[test]
    fn snapshot_parts_need_version_2_and_a_place_in_their_snapshot() {
        let mut b = batch(&[]);
        b.version = 1;
        b.reports = vec![part(1, 0, 2), part(2, 1, 2)];
        assert_eq!(Batch::required_version(&b.reports), 2);
        assert_eq!(
            b.validate(),
            Err(BatchError::NeedsVersion { seq: 1, version: 1 }),
            "a version 1 batch cannot carry parts"
        );
        b.version = Batch::required_version(&b.reports);
        assert_eq!(b.validate(), Ok(()));
        for (p, parts) in [(2, 2), (0, 1), (0, 0), (0, MAX_SNAPSHOT_PARTS + 1)] {
            b.reports = vec![part(1, p, parts)];
            assert_eq!(
                b.validate(),
                Err(BatchError::Part { seq: 1, part: p, parts }),
                "{p}/{parts}"
            );
        }
        assert_eq!(Batch::required_version(&batch(&[1, 2]).reports), 1);
    }

    #[test]
    fn a_snapshot_part_is_tagged_and_an_ack_without_limits_is_version_1s() {
        let r = part(7, 1, 3);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            (v["kind"].as_str(), v["part"].as_u64(), v["parts"].as_u64()),
            (Some("snapshot_part"), Some(1), Some(3))
        );
        assert_eq!(serde_json::from_value::<Report>(v).unwrap(), r);
        let old: Ack = serde_json::from_str(r#"{"acked":3,"resync":false}"#).unwrap();
        assert_eq!(old.limits, None);
        let new = Ack {
            acked: 3,
            resync: false,
            limits: Some(Limits::VERSION_1),
        };
        let text = serde_json::to_string(&new).unwrap();
        assert!(text.contains("max_decompressed_bytes"), "{text}");
        assert_eq!(serde_json::from_str::<Ack>(&text).unwrap(), new);
    }

    #[test]
    fn json_len_is_the_length_of_the_json_text() {
        let b = batch(&[1, 2, 3]);
        assert_eq!(json_len(&b), serde_json::to_vec(&b).unwrap().len() as u64);
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
