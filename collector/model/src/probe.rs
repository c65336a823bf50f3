//! The view from outside: what a collector that probes (`[probe]`,
//! `portwatch-collector probe`) found when it connected to a host's
//! listeners from where it stands, one verdict per listener place.

use std::fmt;
use std::net::IpAddr;

use jiff::Timestamp;
use portwatch_common::Proto;
use serde::{Deserialize, Serialize};

/// What a probe from the collector found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Verified {
    /// A TCP connection to it was accepted (at one of its addresses at least).
    Reachable,
    /// No connection to it was accepted: refused, timed out, or no route, at
    /// every address tried.
    Unreachable,
    /// It was not tried: UDP (a connect cannot tell), a container's network
    /// namespace (its addresses are not reported), a wildcard listener of a
    /// host that reports no address, or an address outside `[probe] networks`.
    NotProbed,
}

impl Verified {
    /// The name, as in JSON (`reachable`, `unreachable`, `not-probed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Verified::Reachable => "reachable",
            Verified::Unreachable => "unreachable",
            Verified::NotProbed => "not-probed",
        }
    }

    /// Parses a name.
    pub fn parse(name: &str) -> Option<Verified> {
        [Verified::Reachable, Verified::Unreachable, Verified::NotProbed]
            .into_iter()
            .find(|v| v.as_str() == name)
    }
}

impl fmt::Display for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a listener is, as a probe verdict names it: the same place in the
/// host's history whatever socket holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Place {
    /// Network namespace inode.
    pub netns: u64,
    /// Transport protocol.
    pub proto: Proto,
    /// The address it is bound to (`0.0.0.0`, `::` for a wildcard).
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "0.0.0.0"))]
    pub addr: IpAddr,
    /// Its port.
    pub port: u16,
}

/// The verdict of the latest probe of one listener place of a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProbeVerdict {
    /// The listener's place.
    #[serde(flatten)]
    pub place: Place,
    /// What the probe found.
    pub state: Verified,
    /// When.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: Timestamp,
    /// What was tried and what each try answered (`10.0.0.5:5432 connected`,
    /// `10.0.0.5:22 timed out after 2s`), or why it was not probed.
    pub detail: String,
}
