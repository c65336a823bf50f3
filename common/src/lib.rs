//! Domain and wire types shared by the portwatch agent and collector.
//!
//! This crate holds data only: what a socket and its owning processes look
//! like, and the rules that classify them (exposure, dual stack). It does no
//! I/O, so both halves of portwatch, and their tests, agree on one meaning.
#![deny(missing_docs)]

pub mod process;
pub mod socket;

pub use process::Process;
pub use socket::{family_of, Exposure, Family, Proto, Socket, State};
