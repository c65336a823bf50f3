//! The threat list formats, parsed from their text: pure functions, no I/O
//! (the files are read by [`super::list`]).
//!
//! A line that cannot be used is a [`BadLine`] (its 1-based number and why);
//! the lines after it are still parsed. Lines end in `\n` or `\r\n`; a
//! leading byte-order mark is ignored.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Deserialize;

/// How a list file is written (`format` of a `[[threat.list]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// FireHOL's `.netset`: one address or CIDR per line, `#` starts a comment.
    Netset,
    /// Spamhaus DROP's `drop.txt`: `CIDR ; SBLnnn` lines, `;` starts a comment line.
    SpamhausDrop,
    /// Spamhaus DROP's JSON (`drop_v4.json`, `drop_v6.json`): one object a line,
    /// `{"cidr": "1.10.16.0/20", "sblid": "SBL256894", ...}`, the last one
    /// `{"type": "metadata", ...}`.
    SpamhausJson,
    /// A plain list: an address or CIDR at the start of each line, anything
    /// after it (past whitespace) ignored; `#` and `;` start comments.
    Cidr,
}

impl Format {
    /// The name the config gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Netset => "netset",
            Format::SpamhausDrop => "spamhaus-drop",
            Format::SpamhausJson => "spamhaus-json",
            Format::Cidr => "cidr",
        }
    }
}

/// One usable line of a list: a network, and the list's own id for it
/// (Spamhaus' SBL number), if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The network, host bits cleared; an address alone is a /32 or /128.
    pub net: IpNet,
    /// The list's id of the entry (`SBL256894`).
    pub id: Option<Box<str>>,
}

/// A line that was not used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Most bad lines kept with their reason; the others are only counted.
pub const MAX_BAD_LINES_KEPT: usize = 20;

/// What a list's text holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Its entries, in file order (repeats included).
    pub entries: Vec<Entry>,
    /// The first [`MAX_BAD_LINES_KEPT`] bad lines.
    pub bad: Vec<BadLine>,
    /// How many lines were bad, all of them counted.
    pub bad_lines: usize,
}

impl Parsed {
    fn bad(&mut self, line: usize, reason: impl Into<String>) {
        self.bad_lines += 1;
        if self.bad.len() < MAX_BAD_LINES_KEPT {
            self.bad.push(BadLine {
                line,
                reason: reason.into(),
            });
        }
    }
}

/// Longest line quoted in a bad line's reason.
const QUOTED_CHARS: usize = 60;

/// `text` for a reason: at most [`QUOTED_CHARS`] characters, escaped.
fn quoted(text: &str) -> String {
    let cut: String = text.chars().take(QUOTED_CHARS).collect();
    match cut.len() < text.len() {
        true => format!("{:?}...", cut),
        false => format!("{cut:?}"),
    }
}

/// An address (`192.0.2.7`, `2001:db8::1`) or a network in CIDR notation
/// (`192.0.2.0/24`). Host bits are cleared (`192.0.2.7/24` is
/// `192.0.2.0/24`); an IPv4-mapped IPv6 network (`::ffff:192.0.2.0/120`) is
/// the IPv4 one it maps, as lookups of mapped addresses are IPv4 ones.
pub fn net(text: &str) -> Result<IpNet, String> {
    let net = match text.split_once('/') {
        Some((addr, len)) => {
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| format!("{} is not an IP address", quoted(addr)))?;
            let len: u8 = len
                .parse()
                .map_err(|_| format!("{} is not a prefix length", quoted(len)))?;
            IpNet::new(addr, len).map_err(|_| {
                format!(
                    "/{len} is longer than an {} address",
                    if addr.is_ipv4() { "IPv4" } else { "IPv6" }
                )
            })?
        }
        None => IpNet::from(
            text.parse::<IpAddr>()
                .map_err(|_| format!("{} is not an IP address or CIDR", quoted(text)))?,
        ),
    };
    Ok(canonical_net(net))
}

/// `net` with its host bits cleared, and as IPv4 when it is an IPv4-mapped
/// IPv6 network of at least /96.
pub fn canonical_net(net: IpNet) -> IpNet {
    let net = match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        _ => net,
    };
    net.trunc()
}

/// The entries and bad lines of `text`, a list written in `format`.
pub fn parse(format: Format, text: &str) -> Parsed {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut parsed = Parsed::default();
    let mut metadata = false;
    let mut last = 0;
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        last = number;
        let line = line.strip_suffix('\r').unwrap_or(line);
        let entry = match format {
            Format::Netset => netset_line(line),
            Format::Cidr => cidr_line(line),
            Format::SpamhausDrop => drop_line(line),
            Format::SpamhausJson => match json_line(line) {
                Ok(JsonLine::Metadata) => {
                    metadata = true;
                    Ok(None)
                }
                Ok(JsonLine::Entry(entry)) => Ok(Some(entry)),
                Ok(JsonLine::Blank) => Ok(None),
                Err(e) => Err(e),
            },
        };
        match entry {
            Ok(Some(entry)) => parsed.entries.push(entry),
            Ok(None) => {}
            Err(reason) => parsed.bad(number, reason),
        }
    }
    if format == Format::SpamhausJson && !metadata && last > 0 {
        parsed.bad(
            last + 1,
            "no {\"type\":\"metadata\"} line at the end: the file may be cut short",
        );
    }
    parsed
}

/// A netset line: one address or CIDR, `#` to the end of the line a comment.
fn netset_line(line: &str) -> Result<Option<Entry>, String> {
    let line = line.split_once('#').map_or(line, |(before, _)| before).trim();
    if line.is_empty() {
        return Ok(None);
    }
    if line.split_whitespace().nth(1).is_some() {
        return Err(format!(
            "{}: one address or CIDR a line, nothing after it but a # comment",
            quoted(line)
        ));
    }
    Ok(Some(Entry {
        net: net(line)?,
        id: None,
    }))
}

/// A plain CIDR line: an address or CIDR first, the rest ignored; `#` and `;` comments.
fn cidr_line(line: &str) -> Result<Option<Entry>, String> {
    let line = line.split(['#', ';']).next().unwrap_or("").trim();
    let Some(first) = line.split_whitespace().next() else {
        return Ok(None);
    };
    Ok(Some(Entry {
        net: net(first)?,
        id: None,
    }))
}

/// A `drop.txt` line: `CIDR ; SBLnnn`; a line starting with `;` is a comment.
fn drop_line(line: &str) -> Result<Option<Entry>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with(';') {
        return Ok(None);
    }
    let (cidr, id) = line.split_once(';').unwrap_or((line, ""));
    let id = id.trim();
    if id.split_whitespace().nth(1).is_some() {
        return Err(format!("{}: write CIDR ; SBLnnn", quoted(line)));
    }
    Ok(Some(Entry {
        net: net(cidr.trim())?,
        id: (!id.is_empty()).then(|| id.into()),
    }))
}

enum JsonLine {
    Blank,
    Metadata,
    Entry(Entry),
}

/// What the JSON lines of Spamhaus DROP carry that is used here (the rest,
/// `rir` and any field added later, is ignored).
#[derive(Deserialize)]
struct JsonRecord<'a> {
    #[serde(borrow)]
    cidr: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    sblid: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "type", borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
}

/// A Spamhaus JSON line: an entry, or the metadata line.
fn json_line(line: &str) -> Result<JsonLine, String> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(JsonLine::Blank);
    }
    let record: JsonRecord =
        serde_json::from_str(line).map_err(|e| format!("{}: not a JSON object ({e})", quoted(line)))?;
    if record.kind.as_deref() == Some("metadata") {
        return Ok(JsonLine::Metadata);
    }
    let Some(cidr) = record.cidr else {
        return Err(format!("{}: no \"cidr\"", quoted(line)));
    };
    Ok(JsonLine::Entry(Entry {
        net: net(cidr.trim())?,
        id: record.sblid.filter(|id| !id.is_empty()).map(|id| id.into()),
    }))
}

/// The IPv4 address an IPv4-mapped IPv6 address (`::ffff:192.0.2.7`) maps;
/// any other address as it is.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        IpAddr::V4(_) => addr,
    }
}

/// The host network of `addr` (a /32 or /128), to look it up in a trie.
pub fn host(addr: IpAddr) -> IpNet {
    match addr {
        IpAddr::V4(v4) => IpNet::V4(Ipv4Net::from(v4)),
        IpAddr::V6(v6) => IpNet::V6(Ipv6Net::from(v6)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(parsed: &Parsed) -> Vec<String> {
        parsed.entries.iter().map(|e| e.net.to_string()).collect()
    }

    #[test]
    fn an_address_alone_is_a_host_network_and_host_bits_are_cleared() {
        assert_eq!(net("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(net("2001:db8::1").unwrap().to_string(), "2001:db8::1/128");
        assert_eq!(net("192.0.2.7/24").unwrap().to_string(), "192.0.2.0/24");
        assert_eq!(net("::ffff:192.0.2.0/120").unwrap().to_string(), "192.0.2.0/24");
        assert_eq!(net("::ffff:0:0/64").unwrap().to_string(), "::/64");
    }

    #[test]
    fn a_bad_address_or_length_says_which() {
        assert!(net("192.0.2.0/33").unwrap_err().contains("/33 is longer than an IPv4"));
        assert!(net("2001:db8::/129").unwrap_err().contains("IPv6"));
        assert!(net("300.1.1.1")
            .unwrap_err()
            .contains("\"300.1.1.1\" is not an IP address"));
        assert!(net("10.0.0.0/x").unwrap_err().contains("\"x\" is not a prefix length"));
        assert!(net("10.0.0.0/-1").is_err());
    }

    #[test]
    fn netset_comments_crlf_and_ipv6_load_and_a_bad_line_is_numbered_while_the_rest_loads() {
        let text = "#\r\n# level1\r\n1.2.3.0/24\r\n  5.6.7.8  # a host\r\n\r\n2001:db8::/32\r\nnot-an-ip\r\n9.9.9.9 8.8.8.8\r\n10.1.0.0/16";
        let parsed = parse(Format::Netset, text);
        assert_eq!(
            nets(&parsed),
            ["1.2.3.0/24", "5.6.7.8/32", "2001:db8::/32", "10.1.0.0/16"]
        );
        assert_eq!(parsed.bad_lines, 2);
        assert_eq!(parsed.bad[0].line, 7);
        assert!(parsed.bad[0].reason.contains("\"not-an-ip\""), "{}", parsed.bad[0]);
        assert_eq!(parsed.bad[1].line, 8);
        assert!(
            parsed.bad[1].reason.contains("one address or CIDR a line"),
            "{}",
            parsed.bad[1]
        );
        assert_eq!(parsed.bad[1].to_string(), format!("line 8: {}", parsed.bad[1].reason));
    }

    #[test]
    fn a_plain_cidr_list_takes_the_first_field_and_both_comment_styles() {
        let parsed = parse(
            Format::Cidr,
            "\u{feff}192.0.2.0/24 scanner farm\n; note\n# note\n198.51.100.9;x\n2001:db8::/48\tcloud\n1.2.3/24\n",
        );
        assert_eq!(nets(&parsed), ["192.0.2.0/24", "198.51.100.9/32", "2001:db8::/48"]);
        assert_eq!((parsed.bad_lines, parsed.bad[0].line), (1, 6));
    }

    #[test]
    fn spamhaus_drop_lines_carry_their_sbl_id() {
        let text = "; Spamhaus DROP List 2026/12/01 - (c) 2026 The Spamhaus Project SLU\n\
                    ; Last-Modified: Tue, 01 Dec 2026 16:40:32 GMT\n\
                    1.10.16.0/20 ; SBL256894\n\
                    2.56.192.0/22;SBL459831\n\
                    2001:db8:1::/48 ; SBL1\n\
                    5.134.128.0/19\n\
                    abc ; SBL9\n\
                    6.0.0.0/8 ; SBL1 SBL2\n";
        let parsed = parse(Format::SpamhausDrop, text);
        let ids: Vec<_> = parsed.entries.iter().map(|e| e.id.as_deref()).collect();
        assert_eq!(
            nets(&parsed),
            ["1.10.16.0/20", "2.56.192.0/22", "2001:db8:1::/48", "5.134.128.0/19"]
        );
        assert_eq!(ids, [Some("SBL256894"), Some("SBL459831"), Some("SBL1"), None]);
        let lines: Vec<_> = parsed.bad.iter().map(|b| b.line).collect();
        assert_eq!(lines, [7, 8]);
    }

    #[test]
    fn spamhaus_json_skips_its_metadata_line_and_ignores_unknown_fields() {
        let text = "{\"cidr\":\"1.10.16.0/20\",\"sblid\":\"SBL256894\",\"rir\":\"apnic\"}\n\
                    {\"cidr\":\"2a06:e480::/29\",\"sblid\":\"SBL301771\",\"rir\":\"ripencc\",\"new\":1}\n\
                    {\"sblid\":\"SBL1\"}\n\
                    {\"cidr\":\"1.2.3.4/40\",\"sblid\":\"SBL2\"}\n\
                    not json\n\
                    {\"type\":\"metadata\",\"timestamp\":1764608432,\"size\":2,\"records\":2}\n";
        let parsed = parse(Format::SpamhausJson, text);
        assert_eq!(nets(&parsed), ["1.10.16.0/20", "2a06:e480::/29"]);
        assert_eq!(parsed.entries[1].id.as_deref(), Some("SBL301771"));
        let lines: Vec<_> = parsed.bad.iter().map(|b| b.line).collect();
        assert_eq!(lines, [3, 4, 5]);
        assert!(parsed.bad[0].reason.contains("no \"cidr\""), "{}", parsed.bad[0]);
    }

    #[test]
    fn spamhaus_json_without_its_metadata_line_is_reported_as_maybe_cut_short() {
        let parsed = parse(Format::SpamhausJson, "{\"cidr\":\"1.10.16.0/20\",\"sblid\":\"SBL1\"}\n");
        assert_eq!(parsed.entries.len(), 1);
        assert_eq!(parsed.bad[0].line, 2);
        assert!(parsed.bad[0].reason.contains("cut short"));
        assert_eq!(parse(Format::SpamhausJson, ""), Parsed::default());
    }

    #[test]
    fn a_file_of_garbage_keeps_the_first_bad_lines_and_counts_them_all() {
        let text = "x\n".repeat(1000);
        let parsed = parse(Format::Netset, &text);
        assert_eq!(parsed.bad_lines, 1000);
        assert_eq!(parsed.bad.len(), MAX_BAD_LINES_KEPT);
        assert!(parsed.entries.is_empty());
        let long = format!("{}\n", "y".repeat(500));
        let reason = &parse(Format::Netset, &long).bad[0].reason;
        assert!(reason.len() < 120, "{reason}");
    }

    #[test]
    fn a_mapped_address_is_looked_up_as_ipv4() {
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(canonical(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        assert_eq!(canonical(v6), v6);
        assert_eq!(host(canonical(mapped)).to_string(), "192.0.2.7/32");
    }

    /// A fixture of `collector/tests/threat/`.
    fn fixture(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/threat")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn the_firehol_fixture_loads_past_its_crlf_comments_and_bad_lines() {
        let text = fixture("firehol_level1.netset");
        assert!(text.contains("\r\n"), "the fixture keeps its CRLF line ends");
        let parsed = parse(Format::Netset, &text);
        assert_eq!(
            nets(&parsed),
            [
                "0.0.0.0/8",
                "1.10.16.0/20",
                "5.188.10.0/23",
                "10.0.0.0/8",
                "185.220.101.7/32",
                "192.168.0.0/16",
                "224.0.0.0/3",
                "2001:db8:bad::/48",
                "198.51.100.0/24"
            ]
        );
        let bad: Vec<_> = parsed.bad.iter().map(|b| b.line).collect();
        assert_eq!(bad, [15, 18]);
        assert!(parsed.bad[0].reason.contains("/33"), "{}", parsed.bad[0]);
    }

    #[test]
    fn the_spamhaus_fixtures_load_with_their_ids() {
        let drop = parse(Format::SpamhausDrop, &fixture("drop.txt"));
        assert_eq!(drop.entries.len(), 5);
        assert_eq!(drop.entries[0].id.as_deref(), Some("SBL256894"));
        assert_eq!((drop.bad_lines, drop.bad[0].line), (1, 9));
        let v4 = parse(Format::SpamhausJson, &fixture("drop_v4.json"));
        assert_eq!(v4.entries.len(), 4);
        assert_eq!((v4.bad_lines, v4.bad[0].line), (1, 5));
        let v6 = parse(Format::SpamhausJson, &fixture("drop_v6.json"));
        assert_eq!(nets(&v6), ["2001:db8:bad:1::/64", "2a06:e480::/29"]);
        assert_eq!(v6.entries[0].id.as_deref(), Some("SBL301771"));
        assert_eq!(v6.bad_lines, 0);
    }

    #[test]
    fn the_plain_fixture_loads_mapped_networks_as_ipv4() {
        let parsed = parse(Format::Cidr, &fixture("soc.cidr"));
        assert_eq!(
            nets(&parsed),
            [
                "203.0.113.0/24",
                "198.51.100.77/32",
                "192.0.2.0/24",
                "2001:db8:bad:1:2::/80"
            ]
        );
        assert_eq!(parsed.bad_lines, 0);
    }
}
