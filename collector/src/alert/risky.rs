//! Risky ports: services that should not be reachable beyond loopback
//! unless a baseline accepts it explicitly, with a reason.

use std::collections::BTreeMap;

use portwatch_common::Proto;
use serde::{Deserialize, Deserializer, Serialize};

/// The built-in list: (protocol, port, what usually listens there).
pub const DEFAULT: &[(Proto, u16, &str)] = &[
    (Proto::Tcp, 21, "FTP"),
    (Proto::Tcp, 23, "Telnet"),
    (Proto::Udp, 69, "TFTP"),
    (Proto::Tcp, 111, "rpcbind"),
    (Proto::Udp, 111, "rpcbind"),
    (Proto::Tcp, 135, "MS RPC"),
    (Proto::Tcp, 139, "NetBIOS/SMB"),
    (Proto::Udp, 161, "SNMP"),
    (Proto::Tcp, 445, "SMB"),
    (Proto::Tcp, 512, "rexec"),
    (Proto::Tcp, 513, "rlogin"),
    (Proto::Tcp, 514, "rsh"),
    (Proto::Tcp, 1433, "MS SQL"),
    (Proto::Tcp, 1521, "Oracle"),
    (Proto::Tcp, 2375, "Docker API (plain)"),
    (Proto::Tcp, 2379, "etcd"),
    (Proto::Tcp, 3306, "MySQL"),
    (Proto::Tcp, 3389, "RDP"),
    (Proto::Tcp, 5432, "PostgreSQL"),
    (Proto::Tcp, 5900, "VNC"),
    (Proto::Tcp, 5984, "CouchDB"),
    (Proto::Tcp, 6379, "Redis"),
    (Proto::Tcp, 9042, "Cassandra"),
    (Proto::Tcp, 9200, "Elasticsearch"),
    (Proto::Tcp, 11211, "memcached"),
    (Proto::Udp, 11211, "memcached"),
    (Proto::Tcp, 27017, "MongoDB"),
];

/// The risky ports in force, by (protocol, port), with a label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RiskyPorts(BTreeMap<(Proto, u16), String>);

impl Default for RiskyPorts {
    fn default() -> Self {
        RiskyPorts(DEFAULT.iter().map(|&(p, n, l)| ((p, n), l.to_owned())).collect())
    }
}

impl RiskyPorts {
    /// What usually listens on `port`, if it is risky.
    pub fn label(&self, proto: Proto, port: u16) -> Option<&str> {
        self.0.get(&(proto, port)).map(String::as_str)
    }

    /// Parses `tcp/5432` or `tcp/5432=PostgreSQL` items.
    pub fn parse(items: &[String]) -> Result<RiskyPorts, String> {
        let mut map = BTreeMap::new();
        for item in items {
            let (spec, label) = item.split_once('=').unwrap_or((item, ""));
            let parsed = spec.split_once('/').and_then(|(proto, port)| {
                let proto = match proto.trim() {
                    "tcp" => Proto::Tcp,
                    "udp" => Proto::Udp,
                    _ => return None,
                };
                let port: u16 = port.trim().parse().ok().filter(|&p| p > 0)?;
                Some((proto, port))
            });
            let Some(key) = parsed else {
                return Err(format!(
                    "risky port {item:?}: write PROTO/PORT, e.g. \"tcp/5432\" or \"tcp/5432=PostgreSQL\""
                ));
            };
            let label = match label.trim() {
                "" => DEFAULT
                    .iter()
                    .find(|&&(p, n, _)| (p, n) == key)
                    .map_or_else(|| format!("{}/{}", key.0.as_str(), key.1), |&(_, _, l)| l.to_owned()),
                l => l.to_owned(),
            };
            map.insert(key, label);
        }
        Ok(RiskyPorts(map))
    }
}

impl<'de> Deserialize<'de> for RiskyPorts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items = Vec::<String>::deserialize(d)?;
        RiskyPorts::parse(&items).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_list_names_the_usual_suspects() {
        let r = RiskyPorts::default();
        assert_eq!(r.label(Proto::Tcp, 23), Some("Telnet"));
        assert_eq!(r.label(Proto::Tcp, 5432), Some("PostgreSQL"));
        assert_eq!(r.label(Proto::Udp, 5432), None);
        assert_eq!(r.label(Proto::Tcp, 443), None);
    }

    #[test]
    fn a_configured_list_replaces_the_default_and_bad_items_are_named() {
        let r = RiskyPorts::parse(&["tcp/5432".to_owned(), "udp/5353=mDNS".to_owned()]).unwrap();
        assert_eq!(r.label(Proto::Tcp, 5432), Some("PostgreSQL"));
        assert_eq!(r.label(Proto::Udp, 5353), Some("mDNS"));
        assert_eq!(r.label(Proto::Tcp, 23), None);
        let e = RiskyPorts::parse(&["sctp/1".to_owned()]).unwrap_err();
        assert!(e.contains("sctp/1") && e.contains("PROTO/PORT"), "{e}");
    }
}
