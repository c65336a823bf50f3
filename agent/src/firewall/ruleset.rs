//! The subset of `nft -j list ruleset` (libnftables' JSON schema, version 1)
//! that the evaluator reads, as serde types.
//!
//! Each element of the top-level `nftables` array is an object with one key
//! naming its kind (`table`, `chain`, `rule`, `set`, ...). Rules keep their
//! statements as [`serde_json::Value`]s: the evaluator reads the statements
//! and expressions it knows into the typed forms below and answers
//! `unknown` for every other one, so a construct this file does not know
//! never fails the parse of the whole ruleset.
//!
//! Why not a crate of nft's JSON schema: the two on crates.io model it as
//! closed types, `nftables` with a closed enum per statement and
//! expression, `nftables-json` with `deny_unknown_fields` on every object,
//! so one statement, expression or field that their version does not know
//! (an `xt` match that iptables-nft writes, a key a newer nft adds) fails
//! the whole document, and with it every listener's answer in that
//! namespace. Here only the rules the evaluator cannot read are `unknown`,
//! and only where the verdict depends on them.

use serde::Deserialize;
use serde_json::Value;

/// Why a ruleset could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not JSON, or not the shape `nft -j` prints.
    #[error("not an nft -j ruleset: {0}")]
    Json(#[from] serde_json::Error),
}

/// A whole ruleset: its base and regular chains, rules and named sets.
#[derive(Debug, Clone, Default)]
pub struct Ruleset {
    /// Every chain, in the order listed.
    pub chains: Vec<Chain>,
    /// Every rule, in the order listed (which is the order in its chain).
    pub rules: Vec<Rule>,
    /// Every named set and map.
    pub sets: Vec<Set>,
}

#[derive(Deserialize)]
struct Document {
    nftables: Vec<serde_json::Map<String, Value>>,
}

impl Ruleset {
    /// Parses the output of `nft -j list ruleset`.
    pub fn parse(json: &[u8]) -> Result<Ruleset, ParseError> {
        let doc: Document = serde_json::from_slice(json)?;
        let mut ruleset = Ruleset::default();
        for object in doc.nftables {
            for (kind, value) in object {
                match kind.as_str() {
                    "chain" => ruleset.chains.push(serde_json::from_value(value)?),
                    "rule" => ruleset.rules.push(serde_json::from_value(value)?),
                    "set" | "map" => ruleset.sets.push(serde_json::from_value(value)?),
                    // metainfo, table, flowtable, counter, quota, ct helper...:
                    // nothing the input path's verdict reads.
                    _ => {}
                }
            }
        }
        Ok(ruleset)
    }

    /// The chain `name` of table `table` in `family`.
    pub fn chain(&self, family: &str, table: &str, name: &str) -> Option<&Chain> {
        self.chains
            .iter()
            .find(|c| c.family == family && c.table == table && c.name == name)
    }

    /// The rules of a chain, in order.
    pub fn rules_of<'a>(&'a self, chain: &'a Chain) -> impl Iterator<Item = &'a Rule> + 'a {
        self.rules
            .iter()
            .filter(move |r| r.family == chain.family && r.table == chain.table && r.chain == chain.name)
    }

    /// The named set `name` of a table.
    pub fn set(&self, family: &str, table: &str, name: &str) -> Option<&Set> {
        self.sets
            .iter()
            .find(|s| s.family == family && s.table == table && s.name == name)
    }
}

/// A chain; a base chain has a hook, a type, a priority and a policy.
#[derive(Debug, Clone, Deserialize)]
pub struct Chain {
    /// `ip`, `ip6`, `inet`, `arp`, `bridge` or `netdev`.
    pub family: String,
    /// Its table.
    pub table: String,
    /// Its name.
    pub name: String,
    /// Kernel handle.
    #[serde(default)]
    pub handle: u64,
    /// `filter`, `nat` or `route` (base chains only).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// `prerouting`, `input`, ... (base chains only).
    #[serde(default)]
    pub hook: Option<String>,
    /// Priority (base chains only); lower runs first.
    #[serde(default)]
    pub prio: Option<i64>,
    /// `accept` or `drop` (base chains only).
    #[serde(default)]
    pub policy: Option<String>,
}

/// A rule: its statements, in order.
#[derive(Debug, Clone, Deserialize)]
pub struct Rule {
    /// Its table's family.
    pub family: String,
    /// Its table.
    pub table: String,
    /// Its chain.
    pub chain: String,
    /// Kernel handle.
    #[serde(default)]
    pub handle: u64,
    /// Its statements (`match`, `accept`, `counter`, ...), as listed.
    #[serde(default)]
    pub expr: Vec<Value>,
}

/// A named set or map.
#[derive(Debug, Clone, Deserialize)]
pub struct Set {
    /// Its table's family.
    pub family: String,
    /// Its table.
    pub table: String,
    /// Its name.
    pub name: String,
    /// Its elements; absent when empty.
    #[serde(default)]
    pub elem: Vec<Value>,
}

/// A statement or expression as `{"kind": body}`: its kind and body.
pub fn tagged(v: &Value) -> Option<(&str, &Value)> {
    match v {
        Value::Object(map) if map.len() == 1 => map.iter().next().map(|(k, v)| (k.as_str(), v)),
        _ => None,
    }
}

/// A `match` statement: `left op right`.
#[derive(Debug, Clone, Deserialize)]
pub struct Match {
    /// `==`, `!=`, `in`, `<`, `>`, `<=`, `>=`.
    pub op: String,
    /// What of the packet is compared.
    pub left: Value,
    /// What it is compared with.
    pub right: Value,
}

/// A `jump` or `goto` statement's body.
#[derive(Debug, Clone, Deserialize)]
pub struct Target {
    /// The chain jumped to, in the same table.
    pub target: String,
}

/// A `payload` expression: a header field.
#[derive(Debug, Clone, Deserialize)]
pub struct Payload {
    /// `ip`, `ip6`, `tcp`, `udp`, `th`, ...
    pub protocol: String,
    /// `saddr`, `dport`, `protocol`, `nexthdr`, ...
    pub field: String,
}

/// A `meta` or `ct` expression: which key.
#[derive(Debug, Clone, Deserialize)]
pub struct Key {
    /// `l4proto`, `iifname`, `state`, ...
    pub key: String,
}

/// A `prefix` value: an address and a prefix length.
#[derive(Debug, Clone, Deserialize)]
pub struct Prefix {
    /// The network address.
    pub addr: String,
    /// Prefix length in bits.
    pub len: u8,
}

/// A `vmap` statement: a verdict looked up by a key.
#[derive(Debug, Clone, Deserialize)]
pub struct Vmap {
    /// What of the packet is looked up.
    pub key: Value,
    /// The map: an anonymous `{"set": [[key, verdict], ...]}` or `"@name"`.
    pub data: Value,
}
