//! Domain and wire types shared by the portwatch agent and collector.
//!
//! This crate holds data only: what a socket and its owning processes look
//! like, the rules that classify them (exposure, dual stack), what history
//! records of a host (listeners, and the difference of two observations),
//! and the versioned agent -> collector protocol. It does no I/O, so both
//! halves of portwatch, and their tests, agree on one meaning. What agents
//! report is untrusted text: [`wire`] bounds it in size (its limits table),
//! [`text`] makes it safe to show in terminals, logs and spreadsheets. The exceptions to "no I/O", each behind a feature:
//! [`client`] (`client`), the HTTP client setup (timeouts, TLS trust) the
//! agent and the `portwatch` CLI share; [`cli`] (`cli`), the man pages and
//! shell completions every binary writes of itself; [`log`] (`log`), the
//! daemons' log, which escapes every field with [`text`].
#![deny(missing_docs)]

#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "client")]
pub mod client;
pub mod firewall;
#[cfg(feature = "log")]
pub mod log;
pub mod peers;
pub mod process;
pub mod snapshot;
pub mod socket;
pub mod text;
pub mod wire;

pub use firewall::{Firewall, Reach};
pub use process::Process;
pub use snapshot::{Delta, IdentityFields, Listener, Place, Snapshot, SocketKey};
pub use socket::{family_of, Exposure, Family, Proto, Socket, State};
