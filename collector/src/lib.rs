//! The portwatch collector: keeps every host's listener history and answers
//! questions about it over HTTP.

pub mod alert;
pub mod api;
pub mod clock;
pub mod config;
pub mod edge;
pub mod export;
pub mod history;
pub mod learn;
pub mod lease;
pub mod lifecycle;
pub mod metrics;
pub mod probe;
pub mod pruner;
pub mod retention;
pub mod setting;
pub mod store;
pub mod threat;
pub mod token;
pub mod trend;
