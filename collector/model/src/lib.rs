//! portwatch's shared model: what the collector keeps and answers, as plain
//! values. Everything that reads history depends on this crate (the
//! collector's store, rules and API, the `portwatch` CLI, the dashboard's
//! answers); it depends on nothing of theirs, so no import cycle can pass
//! through it.
#![deny(missing_docs)]

pub mod access;
pub mod alert;
pub mod baseline;
pub mod diff;
pub mod history;
pub mod peers;
pub mod probe;
pub mod time;
pub mod trend;

pub use access::Role;
pub use alert::{AlertEvent, AlertRow, AlertState, Finding, Kind, Severity, ALL_KINDS};
pub use baseline::{Baseline, BaselineAction, BaselineLogRow, StoredBaseline};
pub use history::{host_page, HistoryCursor, HistoryWindow, HostFilter, HostPage, HostRow, HostStatus, ListenerRow};
pub use peers::{PeerPoint, PeersCursor};
pub use probe::{Place, ProbeVerdict, Verified};
