//! Suspicious addresses: the lists ops already have (FireHOL `.netset`,
//! Spamhaus DROP as text or JSON, plain CIDR lists), named in
//! `[[threat.list]]` and looked up by longest-prefix match.
//!
//! An address is first checked against `[threat] allow` (by default every
//! range that is not on the public Internet: FireHOL's level 1 lists those
//! bogons, and a peer on the LAN is not a threat for it); an allowed address
//! matches no list. IPv4-mapped IPv6 addresses (`::ffff:192.0.2.7`) are
//! looked up as the IPv4 address they map.
//!
//! [`parse`] reads the formats (pure, on text), [`list`] makes one list of a
//! file, [`reload`] keeps the configured lists loaded and current. What is
//! fatal: at start, a list whose file cannot be read or holds no entry (the
//! collector does not start); on a reload, the same only keeps the previous
//! list. A bad line is never fatal: it is logged with its number, counted in
//! `/metrics`, and the rest of the file loads.

pub mod list;
pub mod parse;
pub mod reload;

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use portwatch_model::Severity;
use prefix_trie::joint::JointPrefixSet;

pub use list::{List, ListError, ListSpec};
pub use parse::Format;
pub use reload::Lists;

/// `[threat] allow` when the config does not set it: the ranges that are not
/// public unicast addresses (RFC 6890 and its IPv6 counterparts).
pub const DEFAULT_ALLOW: [&str; 21] = [
    "0.0.0.0/8",       // "this network"
    "10.0.0.0/8",      // private
    "100.64.0.0/10",   // carrier-grade NAT (shared address space)
    "127.0.0.0/8",     // loopback
    "169.254.0.0/16",  // link-local
    "172.16.0.0/12",   // private
    "192.0.0.0/24",    // IETF protocol assignments
    "192.0.2.0/24",    // documentation (TEST-NET-1)
    "192.168.0.0/16",  // private
    "198.18.0.0/15",   // benchmarking
    "198.51.100.0/24", // documentation (TEST-NET-2)
    "203.0.113.0/24",  // documentation (TEST-NET-3)
    "224.0.0.0/4",     // multicast
    "240.0.0.0/4",     // reserved, and the limited broadcast address
    "::/128",          // unspecified
    "::1/128",         // loopback
    "64:ff9b:1::/48",  // local-use IPv4/IPv6 translation
    "2001:db8::/32",   // documentation
    "fc00::/7",        // unique local
    "fe80::/10",       // link-local
    "ff00::/8",        // multicast
];

/// [`DEFAULT_ALLOW`], parsed.
pub fn default_allow() -> Vec<IpNet> {
    DEFAULT_ALLOW.iter().filter_map(|text| parse::net(text).ok()).collect()
}

/// The networks no list may report (`[threat] allow`).
#[derive(Debug, Default)]
pub struct Allowlist {
    set: JointPrefixSet<IpNet>,
}

impl Allowlist {
    /// The allowlist of `nets`.
    pub fn new(nets: &[IpNet]) -> Allowlist {
        let mut set = JointPrefixSet::new();
        for net in nets {
            set.insert(parse::canonical_net(*net));
        }
        Allowlist { set }
    }

    /// The longest allowed network that holds `addr` (canonical).
    pub fn lookup(&self, addr: IpAddr) -> Option<IpNet> {
        self.set.get_lpm(&parse::host(addr))
    }
}

/// A list's entry that holds an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match<'a> {
    /// The list's name.
    pub list: &'a str,
    /// The list's severity.
    pub severity: Severity,
    /// The entry: the longest network of that list holding the address.
    pub net: IpNet,
    /// The list's id of the entry (Spamhaus' `SBLnnn`), if it has one.
    pub id: Option<&'a str>,
}

/// What the lists say of one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict<'a> {
    /// The address looked up: the IPv4 one a mapped IPv6 address maps.
    pub addr: IpAddr,
    /// The allowed network holding it: then it is not suspicious, whatever
    /// `matches` says.
    pub allowed_by: Option<IpNet>,
    /// Every list that holds it, in config order, each with its entry.
    pub matches: Vec<Match<'a>>,
}

impl Verdict<'_> {
    /// Whether a list holds the address and the allowlist does not.
    pub fn is_suspicious(&self) -> bool {
        self.allowed_by.is_none() && !self.matches.is_empty()
    }
}

/// The lists as loaded at one moment, and the allowlist: what lookups read.
#[derive(Debug, Default)]
pub struct Table {
    allow: Arc<Allowlist>,
    lists: Vec<Arc<List>>,
}

impl Table {
    /// The table of `lists` (in config order) behind `allow`.
    pub fn new(allow: Arc<Allowlist>, lists: Vec<Arc<List>>) -> Table {
        Table { allow, lists }
    }

    /// Its lists, in config order.
    pub fn lists(&self) -> &[Arc<List>] {
        &self.lists
    }

    /// What the allowlist and every list say of `addr`: each list's entry is
    /// given even when the allowlist holds the address (to show what it hides).
    pub fn verdict(&self, addr: IpAddr) -> Verdict<'_> {
        let addr = parse::canonical(addr);
        Verdict {
            addr,
            allowed_by: self.allow.lookup(addr),
            matches: self.matching(addr),
        }
    }

    /// The lists' entries holding `addr` after the allowlist: none when it
    /// allows the address.
    pub fn suspicious(&self, addr: IpAddr) -> Vec<Match<'_>> {
        let addr = parse::canonical(addr);
        match self.allow.lookup(addr) {
            Some(_) => Vec::new(),
            None => self.matching(addr),
        }
    }

    fn matching(&self, addr: IpAddr) -> Vec<Match<'_>> {
        self.lists
            .iter()
            .filter_map(|list| {
                list.lookup(addr).map(|(net, id)| Match {
                    list: &list.name,
                    severity: list.severity,
                    net,
                    id,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(name: &str, format: Format, severity: Severity, text: &str) -> Arc<List> {
        let spec = ListSpec {
            name: name.to_owned(),
            path: format!("/lists/{name}").into(),
            format,
            severity,
        };
        Arc::new(List::from_text(&spec, text).unwrap())
    }

    fn table(allow: &[&str]) -> Table {
        let allow: Vec<IpNet> = allow.iter().map(|a| parse::net(a).unwrap()).collect();
        Table::new(
            Arc::new(Allowlist::new(&allow)),
            vec![
                list(
                    "firehol",
                    Format::Netset,
                    Severity::Warning,
                    "10.0.0.0/8\n185.220.0.0/16\n185.220.101.0/24\n2001:db8:bad::/48\n",
                ),
                list(
                    "drop",
                    Format::SpamhausDrop,
                    Severity::Critical,
                    "185.220.0.0/14 ; SBL7\n1.10.16.0/20 ; SBL256894\n",
                ),
            ],
        )
    }

    fn addr(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn each_list_answers_its_longest_entry_and_overlapping_lists_both_answer() {
        let table = table(&[]);
        let v = table.verdict(addr("185.220.101.7"));
        assert!(v.is_suspicious());
        let found: Vec<_> = v
            .matches
            .iter()
            .map(|m| (m.list, m.net.to_string(), m.id, m.severity))
            .collect();
        assert_eq!(
            found,
            [
                ("firehol", "185.220.101.0/24".to_owned(), None, Severity::Warning),
                ("drop", "185.220.0.0/14".to_owned(), Some("SBL7"), Severity::Critical)
            ]
        );
        let v = table.verdict(addr("185.221.0.1"));
        assert_eq!(v.matches.len(), 1);
        assert_eq!(v.matches[0].list, "drop");
        assert_eq!(table.suspicious(addr("8.8.8.8")), []);
    }

    #[test]
    fn the_allowlist_wins_over_every_list_and_still_shows_what_it_hides() {
        let table = table(&["10.0.0.0/8", "185.220.101.0/28"]);
        assert_eq!(table.suspicious(addr("10.1.2.3")), []);
        let v = table.verdict(addr("185.220.101.7"));
        assert_eq!(v.allowed_by.map(|n| n.to_string()).as_deref(), Some("185.220.101.0/28"));
        assert!(!v.is_suspicious());
        assert_eq!(v.matches.len(), 2, "the hidden matches are shown");
        assert_eq!(
            table.suspicious(addr("185.220.101.16")).len(),
            2,
            "just outside the /28"
        );
    }

    #[test]
    fn an_ipv4_mapped_ipv6_address_is_looked_up_as_ipv4_and_ipv6_as_itself() {
        let table = table(&[]);
        let v = table.verdict(addr("::ffff:1.10.17.1"));
        assert_eq!(v.addr, addr("1.10.17.1"));
        assert_eq!(v.matches[0].id, Some("SBL256894"));
        assert_eq!(table.suspicious(addr("2001:db8:bad:1::9"))[0].list, "firehol");
        assert_eq!(table.suspicious(addr("2001:db8:bac::1")), []);
        let allowed = self::table(&["::ffff:10.0.0.0/104"]);
        assert_eq!(
            allowed.suspicious(addr("::ffff:10.9.9.9")),
            [],
            "a mapped allow entry is IPv4"
        );
    }

    #[test]
    fn the_default_allowlist_covers_private_loopback_link_local_cgnat_and_unique_local() {
        assert_eq!(default_allow().len(), DEFAULT_ALLOW.len(), "every default parses");
        let allow = Allowlist::new(&default_allow());
        for a in [
            "10.1.2.3",
            "172.31.255.255",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.169.254",
            "100.100.100.100",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "fd12:3456::1",
        ] {
            assert!(allow.lookup(addr(a)).is_some(), "{a} is allowed by default");
        }
        for a in ["8.8.8.8", "185.220.101.7", "100.128.0.1", "172.32.0.1", "2a06:e480::1"] {
            assert!(allow.lookup(addr(a)).is_none(), "{a} is public");
        }
    }
}
