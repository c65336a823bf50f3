//! Inbound peers per listener as the collector keeps them: a bounded time
//! series of each listener's summaries (who was connected, summarized), at
//! most one point per listener place per minute, as agents with
//! `peers = true` report them.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use portwatch_common::peers::PeerSummary;
use serde::{Deserialize, Serialize};

use crate::probe::Place;

/// One point of a listener's peers time series.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PeerPoint {
    /// The listener's place (network namespace, `tcp`, address, port).
    #[serde(flatten)]
    pub place: Place,
    /// When the agent counted the connections.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: Timestamp,
    /// Its established connections then: count, distinct remotes, the
    /// busiest remotes, classes.
    #[serde(flatten)]
    pub summary: PeerSummary,
}

/// Where a page of points ends: the next page starts after this point (by
/// time, then network namespace, port and address). Written
/// `MILLISECONDS:NETNS:PORT:ADDRESS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeersCursor {
    /// The point's time, in milliseconds since the epoch.
    pub at_ms: i64,
    /// Its network namespace.
    pub netns: u64,
    /// Its port.
    pub port: u16,
    /// Its address, as text.
    pub addr: String,
}

impl PeersCursor {
    /// The cursor just after `point`.
    pub fn after(point: &PeerPoint) -> PeersCursor {
        PeersCursor {
            at_ms: point.at.as_millisecond(),
            netns: point.place.netns,
            port: point.place.port,
            addr: point.place.addr.to_string(),
        }
    }
}

impl fmt::Display for PeersCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}:{}", self.at_ms, self.netns, self.port, self.addr)
    }
}

impl FromStr for PeersCursor {
    type Err = String;

    fn from_str(s: &str) -> Result<PeersCursor, String> {
        let bad = || format!("{s:?} is not a page cursor (the Link header of the previous page gives one)");
        let mut parts = s.splitn(4, ':');
        let (Some(at), Some(netns), Some(port), Some(addr)) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let addr: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
        Ok(PeersCursor {
            at_ms: at.parse().map_err(|_| bad())?,
            netns: netns.parse().map_err(|_| bad())?,
            port: port.parse().map_err(|_| bad())?,
            addr: addr.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_as_written_ipv6_colons_included() {
        for text in [
            "1700000000000:4026531840:5432:10.0.0.7",
            "5:1:22:::1",
            "0:0:0:2001:db8::1",
        ] {
            let cursor: PeersCursor = text.parse().unwrap();
            assert_eq!(cursor.to_string(), text);
        }
        for bad in [
            "",
            "1:2:3",
            "x:1:2:10.0.0.1",
            "1:2:70000:10.0.0.1",
            "1:2:3:not-an-address",
        ] {
            assert!(bad.parse::<PeersCursor>().is_err(), "{bad}");
        }
    }
}
