//! What a host's packet filter does with new inbound connections to a
//! listener: the agent's firewall-aware reachability, as a listener carries
//! it in history.
//!
//! A listener's exposure ([`crate::Exposure`]) is read from its bind address
//! alone; its [`Firewall`] is what the host's nftables ruleset, evaluated as
//! the kernel would for a new connection, answers. The agent decides it
//! (`portwatch_agent::firewall`); the collector stores and judges it.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// What the firewall does with new inbound connections to a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Reach {
    /// Accepted from every source.
    Open,
    /// Accepted from some sources only (see [`Firewall::sources`]).
    Restricted,
    /// Dropped or rejected for every source.
    Filtered,
    /// Not decided: an unsupported construct, no permission, no ruleset.
    Unknown,
}

impl Reach {
    /// The lowercase name used in every output.
    pub fn as_str(self) -> &'static str {
        match self {
            Reach::Open => "open",
            Reach::Restricted => "restricted",
            Reach::Filtered => "filtered",
            Reach::Unknown => "unknown",
        }
    }

    /// Whether some source can open a connection: `open` or `restricted`.
    pub fn reachable(self) -> bool {
        matches!(self, Reach::Open | Reach::Restricted)
    }
}

impl fmt::Display for Reach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The firewall's answer for one listener, as history keeps it: part of the
/// listener's identity, so a rule change that changes the answer (or the
/// rule that decides it) closes the listener's interval and opens another
/// at the moment the agent saw it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Firewall {
    /// What happens to a new inbound connection.
    pub reach: Reach,
    /// The rule that decided (`inet filter input handle 8`, `inet filter
    /// input policy drop`), or for `unknown` why it could not be decided.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub rule: Arc<str>,
    /// For `restricted`: the sources accepted, one entry per way in (e.g.
    /// `ip saddr 10.0.0.0/8`, `iifname eth1`); empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub sources: Vec<Arc<str>>,
}

impl Firewall {
    /// The rule, with the sources of a restricted answer: one text for a
    /// table cell or a message.
    pub fn describe(&self) -> String {
        if self.sources.is_empty() {
            self.rule.to_string()
        } else {
            let sources: Vec<&str> = self.sources.iter().map(|s| &**s).collect();
            format!("{} (from {})", self.rule, sources.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_firewall_answer_reads_back_from_its_json_and_sources_are_left_out_when_none() {
        let open = Firewall {
            reach: Reach::Open,
            rule: "inet filter input handle 8".into(),
            sources: Vec::new(),
        };
        let json = serde_json::to_value(&open).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"reach": "open", "rule": "inet filter input handle 8"})
        );
        assert_eq!(serde_json::from_value::<Firewall>(json).unwrap(), open);
        let restricted = Firewall {
            reach: Reach::Restricted,
            rule: "inet filter input handle 9".into(),
            sources: vec!["ip saddr 10.0.0.0/8".into()],
        };
        assert_eq!(
            restricted.describe(),
            "inet filter input handle 9 (from ip saddr 10.0.0.0/8)"
        );
        let back: Firewall = serde_json::from_str(&serde_json::to_string(&restricted).unwrap()).unwrap();
        assert_eq!(back, restricted);
    }

    #[test]
    fn only_open_and_restricted_are_reachable() {
        assert!(Reach::Open.reachable() && Reach::Restricted.reachable());
        assert!(!Reach::Filtered.reachable() && !Reach::Unknown.reachable());
    }
}
