//! Inbound peers per listener, as the wire and the collector's history carry
//! them: who was connected to a TCP listener at a moment, as a summary (how
//! many established connections, how many distinct remote addresses, the
//! busiest of them, and how many come from loopback, private or public
//! addresses), never a row per connection. The agent computes them
//! (`portwatch-agent scan --peers`, and `run` with `peers = true`); the
//! collector keeps them as a bounded time series per listener.

use std::net::IpAddr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Connections by the class of their remote address (loopback is
/// 127.0.0.0/8 and ::1; private is RFC 1918, 100.64/10, link-local and
/// fc00::/7; public is every other address).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Classes {
    /// From loopback addresses.
    #[serde(default)]
    pub loopback: u64,
    /// From private addresses.
    #[serde(default)]
    pub private: u64,
    /// From public addresses.
    #[serde(default)]
    pub public: u64,
}

impl Classes {
    /// Every connection counted, whatever its class (saturating).
    pub fn total(&self) -> u64 {
        self.loopback.saturating_add(self.private).saturating_add(self.public)
    }
}

/// One of the busiest remote addresses of a listener.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TopRemote {
    /// The remote address (IPv4-mapped addresses as IPv4).
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "10.0.0.7"))]
    pub addr: IpAddr,
    /// Its established connections to the listener.
    pub connections: u64,
}

/// The established connections of one listener, summarized.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PeerSummary {
    /// Established connections accepted by the listener.
    pub connections: u64,
    /// Distinct remote addresses among them (exact).
    pub distinct_remotes: u64,
    /// The remote addresses with the most connections, most first, ties by
    /// address (ascending, IPv4 before IPv6); at most the top N asked
    /// (`peers_top`, at most [`MAX_PEER_TOP`](crate::wire::MAX_PEER_TOP)).
    #[serde(default)]
    pub top: Vec<TopRemote>,
    /// The connections by the class of their remote address.
    #[serde(default)]
    pub classes: Classes,
}

/// One point of a listener's peers time series: its summary at a moment,
/// and which listener it is (the place: the network namespace, TCP, the
/// address it is bound to and its port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PeerSample {
    /// When the agent counted the connections.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub observed_at: Timestamp,
    /// The listener's network namespace (inode).
    pub netns: u64,
    /// The address the listener is bound to (`0.0.0.0`, `::` for a wildcard).
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "0.0.0.0"))]
    pub local_addr: IpAddr,
    /// The listener's port.
    pub local_port: u16,
    /// Its established connections then.
    #[serde(flatten)]
    pub summary: PeerSummary,
}
