//! From history to "something is wrong on web-3": drift findings against
//! baselines, and alerts with a lifecycle.
//!
//! - [`drift`]: what departs from the baselines, as findings (pure).
//! - [`risky`]: ports that should not be reachable beyond loopback.
//! - [`sink`]: webhooks, syslog and Alertmanagers ([`alertmanager`]), fed
//!   from the store's outbox of alert changes, in the order [`outbox`] takes
//!   it in.
//! - [`evaluate`]: runs drift over the store's hosts when they change and on
//!   a timer, and keeps the alerts in line with the findings.
//!
//! The rules of an alert's life (how many may be open, acknowledging,
//! resolving, a sink's place) are in [`crate::lifecycle`], apart from any store.
//!
//! An alert is one finding's condition (its `key`) from when it was first
//! seen until it cleared: open, then acknowledged by a person (with a
//! comment), then resolved when the condition clears. While an alert of a key
//! is open or acknowledged, the same condition opens no second one.

pub mod alertmanager;
pub mod drift;
pub mod evaluate;
pub mod outbox;
pub mod risky;
pub mod sink;
