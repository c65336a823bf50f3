//! The agent -> collector protocol, versions 1 to 3.
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
//! | 3 | [`Batch::peers`]: inbound peer summaries per listener, and [`Batch::peers_dropped`] |
//!
//! An agent learns what its collector speaks from the collector's
//! acknowledgements ([`Limits::max_version`]; a collector that states no
//! limits speaks version 1). Until it has heard one, and while the answer
//! is below 3, it sends no peer summaries: a version 2 collector refuses a
//! version 3 batch whole (its version is unknown), and would drop the
//! `peers` field of an older-numbered batch without a word, as it drops
//! every field it does not know. So peers go only in version 3 batches, and
//! a batch that carries them with a lower version is refused
//! ([`BatchError::NeedsVersion`]).
//!
//! Peer summaries are not history: they take no sequence number, are not
//! spooled, and are not sent again once acknowledged. An agent keeps the
//! ones not yet acknowledged in memory, bounded, and counts those it drops
//! (a full queue, a collector older than version 3, a batch refused for
//! good) in [`Batch::peers_dropped`] of its next version 3 batch.
//!
//! Size: a batch is bounded in bytes by the collector ([`Limits`], stated
//! in every [`Ack`]), not only in reports. An agent keeps each report under
//! [`REPORT_BYTES`] of JSON (a larger snapshot goes in parts, a larger delta
//! as several deltas) and each batch under the collector's limits; a
//! collector that answers 413 is sent smaller batches.
//!
//! # Limits per field
//!
//! What an agent reports is untrusted: any local user names a process and
//! writes its command line, and an agent token can send anything at all. So
//! every string of a batch is bounded in bytes, every list in length, and
//! what can be checked against the rest of the report is. Strings and tags
//! over their limit are cut ([`Batch::sanitize`], which the collector applies
//! to every batch it accepts, and the agent to its own reports before it
//! spools them): a cut string keeps its first bytes, at a character boundary,
//! followed by the marker `…[cut N bytes]`, where N is how many bytes of the
//! original are gone, and the whole is at most the limit (see [`cut`]); a
//! string within its limit is never touched, so cutting twice cuts nothing.
//! What cannot be right is refused whole, before anything of the batch is
//! stored ([`Batch::validate`], a 400 whose message names the report's seq
//! and the field).
//!
//! | field | limit | over it | why this limit |
//! |---|---|---|---|
//! | `processes[].name` | [`MAX_NAME_BYTES`] (64 bytes) | cut | the kernel keeps 15 bytes of a command name (`comm`) |
//! | `processes[].cmdline` | [`MAX_CMDLINE_BYTES`] (4096 bytes) | cut | what `/proc/<pid>/cmdline` itself showed until Linux 4.2 (one page): the program and its options, and the head of a JVM class path; a 2 MiB `argv` is legal and says no more about who listens |
//! | `processes[].exe` | [`MAX_EXE_BYTES`] (4096 bytes) | cut | `PATH_MAX`: the kernel answers no longer a `/proc/<pid>/exe` link, ` (deleted)` included |
//! | `user`, `processes[].user` | [`MAX_USER_BYTES`] (256 bytes) | cut | `LOGIN_NAME_MAX` (useradd takes 32; directory services' fully qualified names are longer) |
//! | `processes[].container` | [`MAX_CONTAINER_BYTES`] (128 bytes) | cut | container ids are 64 hex digits |
//! | `processes[].unit` | [`MAX_UNIT_BYTES`] (256 bytes) | cut | systemd's `UNIT_NAME_MAX`: 255 bytes |
//! | `facts.os`, `facts.kernel`, `facts.agent_version` | [`MAX_FACT_BYTES`] (256 bytes) | cut | a kernel release is at most 64 bytes (`uname`), an OS name one line of `os-release` |
//! | `facts.addresses` | [`MAX_HOST_ADDRESSES`] (64) | the first 64 kept, the rest dropped; loopback, link-local, unspecified and multicast ones dropped, repeats dropped | a collector that probes connects to them: only addresses a host can have, and a bounded number of them |
//! | `facts.tags` | [`MAX_TAGS`] (64 tags) | the first 64 by key kept, the rest dropped | the agent's config takes no more |
//! | `facts.tags` keys | [`MAX_TAG_KEY_BYTES`] (64 bytes) | cut | the agent's config takes no longer |
//! | `facts.tags` values | [`MAX_TAG_VALUE_BYTES`] (256 bytes) | cut | the agent's config takes no longer |
//! | listeners of a report (`listeners`, `opened` + `closed`) | [`MAX_LISTENERS_PER_REPORT`] (100,000) | refused | three times the largest host measured (33,000 listeners) in one version 1 snapshot; agents speaking version 2 keep a report under [`REPORT_BYTES`], a few thousand listeners |
//! | `processes` of a listener | [`MAX_PROCESSES_PER_LISTENER`] (65,536) | refused | more than three times the most workers a pre-fork server takes (Apache's `ServerLimit`, 20,000) |
//! | `firewall.rule` | [`MAX_FIREWALL_RULE_BYTES`] (512 bytes) | cut | a rule's place (`inet filter input handle 8`) or why no answer could be given, a line |
//! | `firewall.sources` | [`MAX_FIREWALL_SOURCES`] (64), each [`MAX_FIREWALL_SOURCE_BYTES`] (256 bytes) | refused; each cut | one entry per way in (`ip saddr 10.0.0.0/8`, `iifname eth1`); the agent keeps 64 and says how many more in the last |
//! | `peers` of a batch | [`MAX_PEER_SAMPLES_PER_BATCH`] (10,000) | refused | a host of 1,000 TCP listeners sampled at most once a minute each, ten minutes of them; an agent sends fewer |
//! | `peers[].top` | [`MAX_PEER_TOP`] (100) | refused | the agent names at most 100 remotes (`peers_top`) |
//! | `peers[].top`, `distinct_remotes`, `classes` | consistent with `connections` | refused | the classes count every connection once, the top names distinct remotes with at least one connection each and never more connections than the listener has, and there are no more distinct remotes than connections |
//! | `family` | that of `local_addr` | refused | an `ipv4` socket has an IPv4 address, an `ipv6` one an IPv6 address (an IPv4-mapped `::ffff:10.0.0.1` included) |
//! | `dual_stack` | only on `::` | refused | only an IPv6 socket bound to `::` accepts IPv4 too |
//! | `exposure` | derived from `local_addr` | replaced | the collector classifies the address itself ([`Exposure::of`](crate::Exposure::of)); what the agent says is ignored |
//!
//! Not refused: port 0 and pid 0. No kernel reports a listening socket on
//! port 0 or a process 0 holding one, but neither contradicts anything else
//! the report says, and refusing a batch costs its host its history (the
//! agent drops what is refused for good), so they are stored as reported.
//! The host name and the session id have their own rules ([`Batch::validate`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::peers::PeerSample;
use crate::snapshot::Listener;
use crate::Family;

mod sanitize;

pub use sanitize::{cut, host_addresses, probe_worthy, Sanitized, TextField};

/// The newest protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 3;

/// The first protocol version that carries peer summaries ([`Batch::peers`]).
pub const PEERS_VERSION: u32 = 3;

/// Most peer summaries one batch may carry ([`Batch::peers`]); a batch with more is refused.
pub const MAX_PEER_SAMPLES_PER_BATCH: usize = 10_000;

/// Most remote addresses a peer summary may name (`peers[].top`); a batch with more is refused.
pub const MAX_PEER_TOP: usize = 100;

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

/// Longest process name (`processes[].name`), in bytes; longer ones are cut.
pub const MAX_NAME_BYTES: usize = 64;
/// Longest command line (`processes[].cmdline`), in bytes; longer ones are cut.
pub const MAX_CMDLINE_BYTES: usize = 4096;
/// Longest executable path (`processes[].exe`), in bytes; longer ones are cut.
pub const MAX_EXE_BYTES: usize = 4096;
/// Longest user name (a listener's and a process's `user`), in bytes; longer ones are cut.
pub const MAX_USER_BYTES: usize = 256;
/// Longest container id (`processes[].container`), in bytes; longer ones are cut.
pub const MAX_CONTAINER_BYTES: usize = 128;
/// Longest systemd unit (`processes[].unit`), in bytes; longer ones are cut.
pub const MAX_UNIT_BYTES: usize = 256;
/// Longest `os`, `kernel` and `agent_version` of [`HostFacts`], in bytes; longer ones are cut.
pub const MAX_FACT_BYTES: usize = 256;
/// Most tags of a host; those after the first `MAX_TAGS` (by key) are dropped.
pub const MAX_TAGS: usize = 64;
/// Longest tag key, in bytes; longer ones are cut.
pub const MAX_TAG_KEY_BYTES: usize = 64;
/// Longest tag value, in bytes; longer ones are cut.
pub const MAX_TAG_VALUE_BYTES: usize = 256;
/// Most listeners in one report (a snapshot's or a part's `listeners`, a
/// delta's `opened` and `closed` together); a report with more is refused.
pub const MAX_LISTENERS_PER_REPORT: usize = 100_000;
/// Most processes holding one listener; a report with more is refused.
pub const MAX_PROCESSES_PER_LISTENER: usize = 65_536;
/// Longest `firewall.rule`, in bytes; longer ones are cut.
pub const MAX_FIREWALL_RULE_BYTES: usize = 512;
/// Longest entry of `firewall.sources`, in bytes; longer ones are cut.
pub const MAX_FIREWALL_SOURCE_BYTES: usize = 256;
/// Most `firewall.sources` of a listener; a report with more is refused
/// (the agent keeps that many and says how many more in the last).
pub const MAX_FIREWALL_SOURCES: usize = 64;

/// Most `facts.addresses` of a host; those after the first `MAX_HOST_ADDRESSES` are dropped.
pub const MAX_HOST_ADDRESSES: usize = 64;

/// The size limits a collector applies to `POST /api/v1/ingest`, stated in
/// every [`Ack`] so that agents follow a collector whose limits changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostFacts {
    /// Operating system name and version (`Debian GNU/Linux 12`).
    pub os: Option<String>,
    /// Kernel release (`6.1.0-18-amd64`).
    pub kernel: Option<String>,
    /// When the host booted.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub boot_time: Option<Timestamp>,
    /// The agent's version.
    pub agent_version: String,
    /// The agent's scan interval, in milliseconds (the collector marks the
    /// host silent after three missed intervals).
    pub interval_ms: u64,
    /// Free-form tags from the agent's config (`role = "db"`).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// How the agent sees listeners open and close: `events` (kernel events,
    /// a full scan as a safety net) or `polling` (a scan every interval).
    /// Absent from agents older than this field; other values may come from
    /// newer agents and are kept as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detection: Option<String>,
    /// The inode of the network namespace the agent runs in (the host's
    /// own): its listeners are the ones [`addresses`](Self::addresses)
    /// reach. Absent from agents older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_netns: Option<u64>,
    /// The addresses of the host's interfaces in that namespace, loopback
    /// and link-local ones left out: where a collector that probes from
    /// outside connects to a wildcard listener. At most
    /// [`MAX_HOST_ADDRESSES`]; empty from agents older than this field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub addresses: Vec<IpAddr>,
}

/// One numbered observation of a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Report {
    /// Sequence number within the session: 1, 2, 3, ... without gaps.
    pub seq: u64,
    /// When the agent observed it (not when it was sent).
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub observed_at: Timestamp,
    /// What was observed.
    #[serde(flatten)]
    pub body: ReportBody,
}

/// What a report says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub alive_at: Option<Timestamp>,
    /// Inbound peer summaries of the host's TCP listeners (protocol version
    /// 3): each a listener's summary at a moment, sent when it changed and
    /// at most once a minute per listener; not numbered, not history (see
    /// the [module docs](self)). At most [`MAX_PEER_SAMPLES_PER_BATCH`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<PeerSample>,
    /// Peer summaries the agent dropped, unsent, since its last
    /// acknowledged version 3 batch (protocol version 3).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub peers_dropped: u64,
    /// The reports, in sequence order; may be empty in a heartbeat.
    #[serde(default)]
    pub reports: Vec<Report>,
}

/// The collector's answer to a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Peer summaries in a batch whose version cannot carry them.
    #[error("the batch carries peer summaries, which need protocol version {PEERS_VERSION} (the batch says {0})")]
    PeersNeedVersion(u32),
    /// More peer summaries than [`MAX_PEER_SAMPLES_PER_BATCH`].
    #[error("{0} peer summaries, more than the {MAX_PEER_SAMPLES_PER_BATCH} a batch may carry")]
    PeerSamples(usize),
    /// A peer summary that cannot be as reported.
    #[error("peers[{index}] ({addr}:{port}): {problem}")]
    Peer {
        /// Which summary of the batch's `peers`, from 0.
        index: usize,
        /// Its listener's address.
        addr: IpAddr,
        /// Its listener's port.
        port: u16,
        /// What is wrong with it.
        problem: PeerProblem,
    },
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
    /// A report with more listeners than [`MAX_LISTENERS_PER_REPORT`].
    #[error("report {seq}: {count} listeners, more than the {MAX_LISTENERS_PER_REPORT} a report may carry (send a snapshot in parts, protocol version 2)")]
    Listeners {
        /// The report.
        seq: u64,
        /// How many listeners it has.
        count: usize,
    },
    /// A listener that cannot be as reported.
    #[error("report {seq}: {at}: {problem}")]
    Listener {
        /// The report.
        seq: u64,
        /// Which listener of the report.
        at: ListenerAt,
        /// What is wrong with it.
        problem: ListenerProblem,
    },
}

/// Where a listener is in its report: `listeners[3]`, `opened[0]`, `closed[2]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerAt {
    /// The report's list: `listeners`, `opened` or `closed`.
    pub list: &'static str,
    /// The index in that list, from 0.
    pub index: usize,
}

impl std::fmt::Display for ListenerAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]", self.list, self.index)
    }
}

/// What makes a listener impossible (see the limits table in the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenerProblem {
    /// Its family is not its address's.
    #[error("family {} with address {addr} (an ipv4 socket has an IPv4 address, an ipv6 one an IPv6 address, ::ffff:a.b.c.d included)", family.as_str())]
    Family {
        /// The family reported.
        family: Family,
        /// The address reported.
        addr: IpAddr,
    },
    /// Dual stack on an address other than `::`.
    #[error("dual_stack with address {addr} (only an IPv6 socket bound to :: accepts IPv4 too)")]
    DualStack {
        /// The address reported.
        addr: IpAddr,
    },
    /// More processes than [`MAX_PROCESSES_PER_LISTENER`].
    #[error("{0} processes, more than the {MAX_PROCESSES_PER_LISTENER} a listener may have")]
    Processes(usize),
    /// More firewall sources than [`MAX_FIREWALL_SOURCES`].
    #[error("{0} firewall sources, more than the {MAX_FIREWALL_SOURCES} a listener may have")]
    FirewallSources(usize),
}

/// What makes a peer summary impossible (see the limits table in the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerProblem {
    /// More remotes named than [`MAX_PEER_TOP`].
    #[error("{0} top remotes, more than the {MAX_PEER_TOP} a summary may name")]
    Top(usize),
    /// Classes that do not count the connections.
    #[error("classes count {classes} connections, not the {connections} of the summary")]
    Classes {
        /// The sum of the classes.
        classes: u64,
        /// The summary's connections.
        connections: u64,
    },
    /// More distinct remotes than connections, or fewer than the top names.
    #[error("{distinct} distinct remotes with {connections} connections and {top} top remotes")]
    Distinct {
        /// The summary's distinct remotes.
        distinct: u64,
        /// Its connections.
        connections: u64,
        /// Its top remotes.
        top: usize,
    },
    /// Top remotes with no connection, or with more than the listener has in all.
    #[error("top remotes with {top} connections in all (each at least 1), of {connections}")]
    TopConnections {
        /// The connections the top remotes have, summed.
        top: u64,
        /// The summary's connections.
        connections: u64,
    },
}

/// What makes `summary` impossible, if anything.
pub fn peer_problem(summary: &crate::peers::PeerSummary) -> Option<PeerProblem> {
    let connections = summary.connections;
    if summary.top.len() > MAX_PEER_TOP {
        return Some(PeerProblem::Top(summary.top.len()));
    }
    let classes = summary.classes.total();
    if classes != connections {
        return Some(PeerProblem::Classes { classes, connections });
    }
    let distinct = summary.distinct_remotes;
    if distinct > connections || distinct < summary.top.len() as u64 {
        return Some(PeerProblem::Distinct {
            distinct,
            connections,
            top: summary.top.len(),
        });
    }
    let top = summary
        .top
        .iter()
        .map(|t| t.connections)
        .fold(0u64, u64::saturating_add);
    if top > connections || summary.top.iter().any(|t| t.connections == 0) {
        return Some(PeerProblem::TopConnections { top, connections });
    }
    None
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Batch {
    /// Checks what can be checked without the collector's state: the
    /// version, host name, session id, the number and order of reports, the
    /// numbering of snapshot parts, and what the limits table of the
    /// [module docs](self) refuses (listeners per report, processes per
    /// listener, family and dual stack against the address). What is only
    /// too long is not refused: [`Batch::sanitize`] cuts it.
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
            report.body.validate(report.seq)?;
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
        if !self.peers.is_empty() && self.version < PEERS_VERSION {
            return Err(BatchError::PeersNeedVersion(self.version));
        }
        if self.peers.len() > MAX_PEER_SAMPLES_PER_BATCH {
            return Err(BatchError::PeerSamples(self.peers.len()));
        }
        for (index, sample) in self.peers.iter().enumerate() {
            if let Some(problem) = peer_problem(&sample.summary) {
                return Err(BatchError::Peer {
                    index,
                    addr: sample.local_addr,
                    port: sample.local_port,
                    problem,
                });
            }
        }
        Ok(())
    }

    /// The lowest protocol version that can carry this batch's reports.
    pub fn required_version(reports: &[Report]) -> u32 {
        Batch::version_for(
            reports
                .iter()
                .any(|r| matches!(r.body, ReportBody::SnapshotPart { .. })),
        )
    }

    /// The lowest protocol version of a batch that carries snapshot parts
    /// or not (what [`Batch::required_version`] says of its reports).
    pub fn version_for(snapshot_parts: bool) -> u32 {
        match snapshot_parts {
            true => 2,
            false => 1,
        }
    }
}

impl ReportBody {
    /// The structural rules of one report's listeners (see the limits table
    /// in the [module docs](self)).
    fn validate(&self, seq: u64) -> Result<(), BatchError> {
        let count = match self {
            ReportBody::Snapshot { listeners, .. } | ReportBody::SnapshotPart { listeners, .. } => listeners.len(),
            ReportBody::Delta { opened, closed } => opened.len().saturating_add(closed.len()),
        };
        if count > MAX_LISTENERS_PER_REPORT {
            return Err(BatchError::Listeners { seq, count });
        }
        match self {
            ReportBody::Snapshot { listeners, .. } | ReportBody::SnapshotPart { listeners, .. } => {
                validate_listeners(seq, "listeners", listeners.iter())
            }
            ReportBody::Delta { opened, closed } => {
                validate_listeners(seq, "opened", opened.iter().map(|l| &**l))?;
                validate_listeners(seq, "closed", closed.iter().map(|l| &**l))
            }
        }
    }
}

/// The first impossible listener of `listeners`, the report's `list`, as an error.
fn validate_listeners<'a>(
    seq: u64,
    list: &'static str,
    listeners: impl Iterator<Item = &'a Listener>,
) -> Result<(), BatchError> {
    for (index, listener) in listeners.enumerate() {
        if let Some(problem) = listener_problem(listener) {
            return Err(BatchError::Listener {
                seq,
                at: ListenerAt { list, index },
                problem,
            });
        }
    }
    Ok(())
}

/// What makes `listener` impossible, if anything.
fn listener_problem(listener: &Listener) -> Option<ListenerProblem> {
    let addr = listener.local_addr;
    if listener.family != crate::family_of(addr) {
        return Some(ListenerProblem::Family {
            family: listener.family,
            addr,
        });
    }
    if listener.dual_stack && addr != IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED) {
        return Some(ListenerProblem::DualStack { addr });
    }
    if listener.processes.len() > MAX_PROCESSES_PER_LISTENER {
        return Some(ListenerProblem::Processes(listener.processes.len()));
    }
    if let Some(firewall) = &listener.firewall {
        if firewall.sources.len() > MAX_FIREWALL_SOURCES {
            return Some(ListenerProblem::FirewallSources(firewall.sources.len()));
        }
    }
    None
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
            detection: None,
            host_netns: None,
            addresses: Vec::new(),
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
            peers: Vec::new(),
            peers_dropped: 0,
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
        b.version = PROTOCOL_VERSION + 1;
        assert_eq!(b.validate(), Err(BatchError::Version(PROTOCOL_VERSION + 1)));
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

    fn listener(addr: &str) -> Listener {
        let local_addr: IpAddr = addr.parse().unwrap();
        Listener {
            netns: 1,
            proto: crate::Proto::Tcp,
            family: crate::family_of(local_addr),
            local_addr,
            local_port: 22,
            inode: 7,
            uid: 0,
            user: None,
            exposure: crate::Exposure::of(local_addr),
            dual_stack: false,
            processes: Vec::new(),
            firewall: None,
        }
    }

    /// A batch of one snapshot (seq 7) of `listeners`.
    fn snapshot_of(listeners: Vec<Listener>) -> Batch {
        let mut b = batch(&[]);
        b.reports = vec![Report {
            seq: 7,
            observed_at: Timestamp::from_second(1_700_000_000).unwrap(),
            body: ReportBody::Snapshot {
                facts: facts(),
                listeners,
            },
        }];
        b
    }

    #[test]
    fn a_family_that_is_not_the_addresss_is_refused_naming_report_and_listener() {
        let mut wrong = listener("::1");
        wrong.family = Family::Ipv4;
        let b = snapshot_of(vec![listener("0.0.0.0"), listener("10.0.0.1"), listener("::"), wrong]);
        let e = b.validate().unwrap_err();
        assert_eq!(
            e,
            BatchError::Listener {
                seq: 7,
                at: ListenerAt {
                    list: "listeners",
                    index: 3
                },
                problem: ListenerProblem::Family {
                    family: Family::Ipv4,
                    addr: "::1".parse().unwrap()
                }
            }
        );
        assert!(
            e.to_string()
                .starts_with("report 7: listeners[3]: family ipv4 with address ::1"),
            "{e}"
        );
        let mut v4_as_v6 = listener("10.0.0.1");
        v4_as_v6.family = Family::Ipv6;
        let e = snapshot_of(vec![v4_as_v6]).validate().unwrap_err().to_string();
        assert!(
            e.starts_with("report 7: listeners[0]: family ipv6 with address 10.0.0.1"),
            "{e}"
        );
    }

    #[test]
    fn an_ipv4_mapped_address_is_an_ipv6_sockets_own() {
        let mapped = listener("::ffff:10.0.0.1");
        assert_eq!(mapped.family, Family::Ipv6);
        assert_eq!(snapshot_of(vec![mapped]).validate(), Ok(()));
    }

    #[test]
    fn dual_stack_is_refused_anywhere_but_on_the_ipv6_wildcard() {
        let mut both = listener("::");
        both.dual_stack = true;
        assert_eq!(snapshot_of(vec![both]).validate(), Ok(()));
        for addr in ["0.0.0.0", "::1", "::ffff:0.0.0.0", "2001:db8::1"] {
            let mut l = listener(addr);
            l.dual_stack = true;
            let e = snapshot_of(vec![l]).validate().unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("report 7: listeners[0]: dual_stack with address {addr}")),
                "{e}"
            );
        }
    }

    #[test]
    fn a_delta_names_the_list_of_its_impossible_listener() {
        let mut wrong = listener("127.0.0.1");
        wrong.family = Family::Ipv6;
        let mut b = batch(&[3]);
        b.reports[0].body = ReportBody::Delta {
            opened: vec![Arc::new(listener("::1"))],
            closed: vec![Arc::new(listener("::")), Arc::new(wrong)],
        };
        let e = b.validate().unwrap_err().to_string();
        assert!(
            e.starts_with("report 3: closed[1]: family ipv6 with address 127.0.0.1"),
            "{e}"
        );
    }

    #[test]
    fn a_snapshot_part_is_held_to_the_same_rules() {
        let mut wrong = listener("::1");
        wrong.family = Family::Ipv4;
        let mut b = batch(&[]);
        b.reports = vec![part(5, 0, 2)];
        let ReportBody::SnapshotPart { listeners, .. } = &mut b.reports[0].body else {
            unreachable!()
        };
        listeners.push(wrong);
        let e = b.validate().unwrap_err().to_string();
        assert!(e.starts_with("report 5: listeners[0]: family ipv4"), "{e}");
    }

    #[test]
    fn too_many_listeners_in_a_report_or_processes_on_a_listener_are_refused() {
        let many = vec![listener("0.0.0.0"); MAX_LISTENERS_PER_REPORT + 1];
        assert_eq!(
            snapshot_of(many).validate(),
            Err(BatchError::Listeners {
                seq: 7,
                count: MAX_LISTENERS_PER_REPORT + 1
            })
        );
        let mut b = batch(&[1]);
        let one = Arc::new(listener("0.0.0.0"));
        let half = vec![one; MAX_LISTENERS_PER_REPORT / 2 + 1];
        b.reports[0].body = ReportBody::Delta {
            opened: half.clone(),
            closed: half,
        };
        assert!(matches!(b.validate(), Err(BatchError::Listeners { seq: 1, .. })));
        assert_eq!(snapshot_of(vec![listener("0.0.0.0"); 1000]).validate(), Ok(()));

        let process = crate::Process {
            pid: 1,
            name: "httpd".into(),
            cmdline: None,
            exe: None,
            uid: None,
            user: None,
            container: None,
            unit: None,
        };
        let mut prefork = listener("0.0.0.0");
        prefork.processes = vec![process; 20_000];
        assert_eq!(snapshot_of(vec![prefork.clone()]).validate(), Ok(()));
        prefork
            .processes
            .resize(MAX_PROCESSES_PER_LISTENER + 1, prefork.processes[0].clone());
        let e = snapshot_of(vec![prefork]).validate().unwrap_err().to_string();
        assert!(
            e.starts_with("report 7: listeners[0]: 65537 processes, more than"),
            "{e}"
        );
    }

    #[test]
    fn port_0_pid_0_and_a_wrong_exposure_are_not_refused() {
        let mut l = listener("0.0.0.0");
        l.local_port = 0;
        l.exposure = crate::Exposure::Loopback;
        l.processes.push(crate::Process {
            pid: 0,
            name: "x".into(),
            cmdline: None,
            exe: None,
            uid: None,
            user: None,
            container: None,
            unit: None,
        });
        assert_eq!(snapshot_of(vec![l]).validate(), Ok(()));
    }

    fn sample(connections: u64, remotes: &[(&str, u64)]) -> PeerSample {
        use crate::peers::{Classes, PeerSummary, TopRemote};
        PeerSample {
            observed_at: Timestamp::from_second(1_700_000_000).unwrap(),
            netns: 1,
            local_addr: "0.0.0.0".parse().unwrap(),
            local_port: 5432,
            summary: PeerSummary {
                connections,
                distinct_remotes: remotes.len() as u64,
                top: remotes
                    .iter()
                    .map(|&(addr, connections)| TopRemote {
                        addr: addr.parse().unwrap(),
                        connections,
                    })
                    .collect(),
                classes: Classes {
                    private: connections,
                    ..Classes::default()
                },
            },
        }
    }

    /// A version 3 heartbeat with `peers`.
    fn with_peers(peers: Vec<PeerSample>) -> Batch {
        let mut b = batch(&[]);
        b.alive_at = Some(Timestamp::from_second(1_700_000_000).unwrap());
        b.version = PEERS_VERSION;
        b.peers = peers;
        b
    }

    #[test]
    fn peer_summaries_need_version_3_and_an_old_batch_reads_as_none() {
        let mut b = with_peers(vec![sample(3, &[("10.0.0.7", 2), ("10.0.0.8", 1)])]);
        assert_eq!(b.validate(), Ok(()));
        let json = serde_json::to_value(&b).unwrap();
        assert_eq!(json["peers"][0]["connections"], 3);
        assert_eq!(json["peers"][0]["top"][0]["addr"], "10.0.0.7");
        assert_eq!(serde_json::from_value::<Batch>(json).unwrap(), b);
        b.version = 2;
        let e = b.validate().unwrap_err();
        assert_eq!(e, BatchError::PeersNeedVersion(2));
        assert!(e.to_string().contains("need protocol version 3"), "{e}");
        // A batch without peers says nothing of them: what older agents send.
        let text = serde_json::to_string(&batch(&[1])).unwrap();
        assert!(!text.contains("peers"), "{text}");
        let old: Batch = serde_json::from_str(&text).unwrap();
        assert_eq!((old.peers.len(), old.peers_dropped), (0, 0));
    }

    #[test]
    fn too_many_peer_summaries_or_top_remotes_are_refused() {
        let many = vec![sample(0, &[]); MAX_PEER_SAMPLES_PER_BATCH + 1];
        assert_eq!(
            with_peers(many).validate(),
            Err(BatchError::PeerSamples(MAX_PEER_SAMPLES_PER_BATCH + 1))
        );
        assert_eq!(
            with_peers(vec![sample(0, &[]); MAX_PEER_SAMPLES_PER_BATCH]).validate(),
            Ok(())
        );
        let addrs: Vec<String> = (0..=MAX_PEER_TOP)
            .map(|i| format!("10.0.{}.{}", i / 250, i % 250))
            .collect();
        let top: Vec<(&str, u64)> = addrs.iter().map(|a| (a.as_str(), 1)).collect();
        let e = with_peers(vec![sample(0, &[]), sample(101, &top)])
            .validate()
            .unwrap_err();
        assert_eq!(
            e,
            BatchError::Peer {
                index: 1,
                addr: "0.0.0.0".parse().unwrap(),
                port: 5432,
                problem: PeerProblem::Top(MAX_PEER_TOP + 1)
            }
        );
        assert!(
            e.to_string().starts_with("peers[1] (0.0.0.0:5432): 101 top remotes"),
            "{e}"
        );
        assert_eq!(with_peers(vec![sample(100, &top[..MAX_PEER_TOP])]).validate(), Ok(()));
    }

    #[test]
    fn a_peer_summary_that_cannot_be_is_refused_saying_why() {
        let refused = |s: PeerSample| with_peers(vec![s]).validate().unwrap_err().to_string();
        let mut classes = sample(3, &[("10.0.0.7", 3)]);
        classes.summary.classes.public = 1;
        assert!(refused(classes).contains("classes count 4 connections, not the 3"));
        let mut distinct = sample(1, &[("10.0.0.7", 1)]);
        distinct.summary.distinct_remotes = 2;
        assert!(refused(distinct).contains("2 distinct remotes with 1 connections"));
        let mut fewer = sample(2, &[("10.0.0.7", 1), ("10.0.0.8", 1)]);
        fewer.summary.distinct_remotes = 1;
        assert!(refused(fewer).contains("1 distinct remotes"));
        assert!(refused(sample(2, &[("10.0.0.7", 3)])).contains("top remotes with 3 connections in all"));
        assert!(refused(sample(2, &[("10.0.0.7", 2), ("10.0.0.8", 0)])).contains("each at least 1"));
        let mut huge = sample(2, &[("10.0.0.7", u64::MAX), ("10.0.0.8", u64::MAX)]);
        huge.summary.connections = u64::MAX;
        huge.summary.classes.private = u64::MAX;
        // Sums saturate rather than overflow: no panic on what an agent token sends.
        assert_eq!(with_peers(vec![huge]).validate(), Ok(()));
    }
}
