//! The portwatch agent: sees every listening socket on a host, in every
//! network namespace, with every process holding it.

pub mod config;
pub mod daemon;
pub mod events;
pub mod facts;
pub mod filter;
pub mod firewall;
pub mod observe;
pub mod peers;
pub mod report;
pub mod scan;
pub mod ship;
pub mod spool;
