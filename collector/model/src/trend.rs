//! Trends: what history says over time (the value types; the collector builds them).

use std::time::Duration;

use jiff::Timestamp;
use portwatch_common::Proto;
use serde::{Deserialize, Serialize};

/// A listener open less than this is short-lived.
pub const SHORT_LIVED: Duration = Duration::from_secs(60);
/// A listener opened at the same hour (UTC) on at least this many days recurs.
pub const RECURRING_DAYS: usize = 3;
/// Most entries in each top list.
pub const TOP: usize = 20;
/// Most buckets one answer may have.
pub const MAX_BUCKETS: usize = 2000;

/// The number of open listeners at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Point {
    /// The moment (a bucket's start).
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: Timestamp,
    /// Listeners open then.
    pub listeners: u64,
}

/// A port seen for the first time, fleet-wide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FirstSeen {
    /// Protocol.
    pub proto: Proto,
    /// Port.
    pub port: u16,
    /// When it first opened anywhere.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub first_seen: Timestamp,
    /// Where.
    pub host: String,
}

/// Listeners of one host and port that opened and closed within [`SHORT_LIVED`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ShortLived {
    /// Host.
    pub host: String,
    /// Protocol.
    pub proto: Proto,
    /// Port.
    pub port: u16,
    /// The holder's name, if known.
    pub process: Option<String>,
    /// How many times.
    pub count: u64,
    /// The shortest, in milliseconds.
    pub shortest_ms: u64,
    /// The last time one opened.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub last_opened_at: Timestamp,
}

/// A listener that opens at the same hour of the day on several days (a cron job?).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Recurring {
    /// Host.
    pub host: String,
    /// Protocol.
    pub proto: Proto,
    /// Port.
    pub port: u16,
    /// The hour (UTC, 0-23) it opens at.
    pub hour_utc: i8,
    /// On how many days it did.
    pub days: usize,
}

/// A port by the number of hosts it is open on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TopPort {
    /// Protocol.
    pub proto: Proto,
    /// Port.
    pub port: u16,
    /// Hosts with it open at the end of the window.
    pub hosts: u64,
}

/// The trends of a window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Trends {
    /// The host, if one was asked for (else fleet-wide).
    pub host: Option<String>,
    /// Start of the window.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub since: Timestamp,
    /// End of the window.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub until: Timestamp,
    /// Bucket width, in seconds.
    pub bucket_secs: u64,
    /// Open listeners at each bucket's start.
    pub open_listeners: Vec<Point>,
    /// Ports first seen fleet-wide in the 24 hours before `until`.
    pub new_ports_24h: Vec<FirstSeen>,
    /// Ports first seen fleet-wide in the 7 days before `until`.
    pub new_ports_7d: Vec<FirstSeen>,
    /// Listeners open less than a minute, most frequent first.
    pub short_lived: Vec<ShortLived>,
    /// Listeners opening at the same hour on several days, most days first.
    pub recurring: Vec<Recurring>,
    /// Ports open on the most hosts at `until`.
    pub top_ports: Vec<TopPort>,
}
