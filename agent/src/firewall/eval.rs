//! The evaluator: what the input path of a ruleset does with a new inbound
//! connection to one listener, from any source.
//!
//! A packet is fixed in everything the listener decides (protocol,
//! destination port, address family), arrives on an interface other than
//! `lo`, and belongs to a new connection (`ct state new`). Its source (address
//! and interface) is left open: a match on it forks the evaluation into the
//! packets it matches and those it does not, each path carrying what it
//! assumed. Every path ends in a verdict (a rule's, or a base chain's
//! policy), and the paths together say whether every source is accepted
//! (`open`), some are (`restricted`, naming what the accepting paths
//! assumed), or none is (`filtered`). A statement or match the evaluator
//! does not know ends its path in `unknown`, which makes the chain's answer
//! `unknown`: never a guess.
//!
//! Every base chain of the packet's family on the `prerouting` (type
//! `filter`) and `input` hooks sees the packet; it is delivered only when
//! each accepts it, so a chain that drops it for every source decides
//! `filtered` whatever the others say.

use std::fmt;

use portwatch_common::{Family, Proto};
use rustc_hash::FxHashMap as HashMap;
use serde_json::Value;

use super::ruleset::{tagged, Chain, Key, Match, Payload, Prefix, Rule, Ruleset, Target, Vmap};

/// How many paths one base chain may fork into before the answer is
/// `unknown` (each source match forks two; rulesets seen in practice stay
/// far below).
const MAX_PATHS: usize = 4096;

/// How deep jumps may nest (the kernel allows 16).
const MAX_DEPTH: usize = 32;

pub use portwatch_common::Reach;

/// The firewall's answer for one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// What happens to a new inbound connection.
    pub reach: Reach,
    /// For `restricted`: the sources accepted, one entry per way in (e.g.
    /// `ip saddr 10.0.0.0/8`, `ip saddr @admins`, `iifname eth1`); empty otherwise.
    pub sources: Vec<String>,
    /// The rule that decided (`inet filter input handle 8`, `inet filter
    /// input policy drop`), or for `unknown` why it could not be decided.
    pub rule: String,
}

impl Answer {
    /// An `unknown` answer for `reason`.
    pub fn unknown(reason: impl Into<String>) -> Answer {
        Answer {
            reach: Reach::Unknown,
            sources: Vec::new(),
            rule: reason.into(),
        }
    }

    /// As a listener carries it in history: at most
    /// [`MAX_FIREWALL_SOURCES`](portwatch_common::wire::MAX_FIREWALL_SOURCES)
    /// sources, the last saying how many more there were.
    pub fn to_firewall(&self) -> portwatch_common::Firewall {
        use portwatch_common::wire::MAX_FIREWALL_SOURCES;
        let mut sources: Vec<std::sync::Arc<str>> = Vec::with_capacity(self.sources.len().min(MAX_FIREWALL_SOURCES));
        if self.sources.len() <= MAX_FIREWALL_SOURCES {
            sources.extend(self.sources.iter().map(|s| std::sync::Arc::from(s.as_str())));
        } else {
            let kept = MAX_FIREWALL_SOURCES - 1;
            sources.extend(self.sources[..kept].iter().map(|s| std::sync::Arc::from(s.as_str())));
            sources.push(format!("and {} more", self.sources.len() - kept).into());
        }
        portwatch_common::Firewall {
            reach: self.reach,
            rule: self.rule.as_str().into(),
            sources,
        }
    }

    /// `rule`, with the sources for a restricted answer: the one text the
    /// table and the JSON `firewall_rule` show.
    pub fn describe(&self) -> String {
        if self.sources.is_empty() {
            self.rule.clone()
        } else {
            format!("{} (from {})", self.rule, self.sources.join(", "))
        }
    }
}

/// What a listener receives: which protocol and port, over which families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Query {
    /// Transport protocol.
    pub proto: Proto,
    /// Destination port.
    pub port: u16,
    /// Whether IPv4 packets reach it.
    pub ipv4: bool,
    /// Whether IPv6 packets reach it.
    pub ipv6: bool,
    /// The address it is bound to, when not a wildcard (an IPv4-mapped
    /// address as the IPv4 address it is): the packets' destination.
    pub dest: Option<std::net::IpAddr>,
}

impl Query {
    /// The query for a listener on `addr`: an IPv4 address (or an
    /// IPv4-mapped IPv6 one) receives IPv4, another IPv6 address IPv6, and a
    /// dual-stack IPv6 wildcard both.
    pub fn for_listener(proto: Proto, addr: std::net::IpAddr, port: u16, dual_stack: bool) -> Query {
        let (ipv4, ipv6) = match addr {
            std::net::IpAddr::V4(_) => (true, false),
            std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => (true, false),
            std::net::IpAddr::V6(_) => (dual_stack, true),
        };
        let dest = match addr {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, std::net::IpAddr::V4),
            v4 => v4,
        };
        let dest = (!dest.is_unspecified()).then_some(dest);
        Query {
            proto,
            port,
            ipv4,
            ipv6,
            dest,
        }
    }

    /// This query for the packets of `family` alone.
    pub fn only(self, family: Family) -> Query {
        Query {
            ipv4: family == Family::Ipv4,
            ipv6: family == Family::Ipv6,
            ..self
        }
    }

    /// The families whose packets reach the listener.
    pub fn families(self) -> impl Iterator<Item = Family> {
        [(self.ipv4, Family::Ipv4), (self.ipv6, Family::Ipv6)]
            .into_iter()
            .filter_map(|(yes, family)| yes.then_some(family))
    }
}

/// Evaluates `ruleset` for a new inbound connection to what `query` names.
pub fn evaluate(ruleset: &Ruleset, query: Query) -> Answer {
    let mut per_family = Vec::new();
    if query.ipv4 {
        per_family.push((Family::Ipv4, evaluate_family(ruleset, packet(query, Family::Ipv4))));
    }
    if query.ipv6 {
        per_family.push((Family::Ipv6, evaluate_family(ruleset, packet(query, Family::Ipv6))));
    }
    either_family(per_family)
}

fn packet(query: Query, family: Family) -> Packet {
    Packet {
        proto: query.proto,
        port: query.port,
        family,
    }
}

/// A listener reachable over two families is reachable when either is.
pub(super) fn either_family(mut answers: Vec<(Family, Answer)>) -> Answer {
    if answers.len() == 1 {
        return answers.remove(0).1;
    }
    if let Some((_, unknown)) = answers.iter().find(|(_, a)| a.reach == Reach::Unknown) {
        return unknown.clone();
    }
    if answers.iter().all(|(_, a)| a.reach == answers[0].1.reach) && answers[0].1.reach != Reach::Restricted {
        return answers.remove(0).1;
    }
    let mut sources = Vec::new();
    let mut rule = None;
    for (family, answer) in &answers {
        match answer.reach {
            Reach::Open => sources.push(match family {
                Family::Ipv4 => "any IPv4 source".to_owned(),
                Family::Ipv6 => "any IPv6 source".to_owned(),
            }),
            Reach::Restricted => sources.extend(answer.sources.iter().cloned()),
            Reach::Filtered | Reach::Unknown => continue,
        }
        rule.get_or_insert_with(|| answer.rule.clone());
    }
    Answer {
        reach: Reach::Restricted,
        sources,
        rule: rule.unwrap_or_default(),
    }
}

/// The packet being evaluated: all but its source.
#[derive(Debug, Clone, Copy)]
struct Packet {
    proto: Proto,
    port: u16,
    family: Family,
}

/// The base chains a packet of `family` meets on its way in, in the order
/// the kernel runs them.
fn base_chains(ruleset: &Ruleset, family: Family) -> Vec<&Chain> {
    let own_family = match family {
        Family::Ipv4 => "ip",
        Family::Ipv6 => "ip6",
    };
    let mut chains: Vec<(u8, i64, &Chain)> = ruleset
        .chains
        .iter()
        .filter(|c| c.family == own_family || c.family == "inet" || c.family == "netdev")
        .filter_map(|c| {
            let order = match c.hook.as_deref()? {
                "ingress" => 0,
                "prerouting" => 1,
                "input" => 2,
                _ => return None,
            };
            Some((order, c.prio.unwrap_or(0), c))
        })
        .collect();
    chains.sort_by_key(|&(order, prio, _)| (order, prio));
    chains.into_iter().map(|(_, _, c)| c).collect()
}

fn evaluate_family(ruleset: &Ruleset, packet: Packet) -> Answer {
    let chains = base_chains(ruleset, packet.family);
    if chains.is_empty() {
        return Answer {
            reach: Reach::Open,
            sources: Vec::new(),
            rule: "no base chain on the input path".to_owned(),
        };
    }
    let answers: Vec<Answer> = chains.iter().map(|c| evaluate_base_chain(ruleset, c, packet)).collect();
    // A drop in any base chain is final.
    if let Some(filtered) = answers.iter().find(|a| a.reach == Reach::Filtered) {
        return filtered.clone();
    }
    if let Some(unknown) = answers.iter().find(|a| a.reach == Reach::Unknown) {
        return unknown.clone();
    }
    let restricted: Vec<&Answer> = answers.iter().filter(|a| a.reach == Reach::Restricted).collect();
    if let Some(first) = restricted.first() {
        // Accepted only where every restricting chain accepts.
        let sources = if restricted.len() == 1 {
            first.sources.clone()
        } else {
            vec![restricted
                .iter()
                .map(|a| format!("({})", a.sources.join(" or ")))
                .collect::<Vec<_>>()
                .join(" and ")]
        };
        return Answer {
            reach: Reach::Restricted,
            sources,
            rule: first.rule.clone(),
        };
    }
    // Open: name an explicit accept rather than a policy, where one decided.
    answers
        .iter()
        .find(|a| !a.rule.contains(" policy "))
        .unwrap_or(&answers[0])
        .clone()
}

/// A condition on the packet's source that a path assumed true (or, when
/// `negated`, false).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cond {
    /// What is compared (`ip saddr`, `iifname`).
    left: String,
    /// What with (`10.0.0.0/8`, `@admins`, `eth1`).
    right: String,
    negated: bool,
}

impl Cond {
    fn negate(&self) -> Cond {
        Cond {
            negated: !self.negated,
            ..self.clone()
        }
    }
}

impl fmt::Display for Cond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.negated {
            write!(f, "{} != {}", self.left, self.right)
        } else {
            write!(f, "{} {}", self.left, self.right)
        }
    }
}

/// What a match says of the packet.
enum Test {
    True,
    False,
    /// True for some sources only.
    Source(Cond),
    Unknown(String),
}

fn test(yes: bool) -> Test {
    if yes {
        Test::True
    } else {
        Test::False
    }
}

/// A verdict statement.
enum Verdict {
    Accept,
    Drop,
    Jump(String),
    Goto(String),
    Return,
}

/// How one path ended.
#[derive(Debug, Clone)]
enum End {
    Accept { assumed: Vec<Cond>, rule: String },
    Drop { assumed: Vec<Cond>, rule: String },
    Unknown { reason: String },
}

/// One path being walked: the call stack (chain, next rule) and what it assumed.
#[derive(Clone)]
struct Path<'a> {
    stack: Vec<(&'a Chain, usize)>,
    assumed: Vec<Cond>,
}

/// The rules of each chain, found once per evaluation.
struct Chains<'a> {
    ruleset: &'a Ruleset,
    rules: HashMap<(&'a str, &'a str, &'a str), Vec<&'a Rule>>,
}

impl<'a> Chains<'a> {
    fn new(ruleset: &'a Ruleset) -> Chains<'a> {
        let mut rules: HashMap<(&str, &str, &str), Vec<&Rule>> = HashMap::default();
        for r in &ruleset.rules {
            rules
                .entry((r.family.as_str(), r.table.as_str(), r.chain.as_str()))
                .or_default()
                .push(r);
        }
        Chains { ruleset, rules }
    }

    fn rule(&self, chain: &Chain, i: usize) -> Option<&'a Rule> {
        self.rules
            .get(&(chain.family.as_str(), chain.table.as_str(), chain.name.as_str()))
            .and_then(|rules| rules.get(i))
            .copied()
    }
}

fn rule_ref(rule: &Rule) -> String {
    format!("{} {} {} handle {}", rule.family, rule.table, rule.chain, rule.handle)
}

fn evaluate_base_chain(ruleset: &Ruleset, base: &Chain, packet: Packet) -> Answer {
    let chain_ref = format!("{} {} {}", base.family, base.table, base.name);
    match (base.hook.as_deref(), base.kind.as_deref()) {
        (Some("input" | "prerouting"), Some("filter") | None) => {}
        // A nat chain translates addresses, it does not filter; the
        // input-hook chains see the translated packet.
        (Some("input" | "prerouting"), Some("nat")) => {
            return Answer {
                reach: Reach::Open,
                sources: Vec::new(),
                rule: format!("{chain_ref} policy accept"),
            }
        }
        (hook, kind) => {
            return Answer::unknown(format!(
                "{chain_ref}: a {} chain on the {} hook is not evaluated",
                kind.unwrap_or("?"),
                hook.unwrap_or("?")
            ))
        }
    }
    let chains = Chains::new(ruleset);
    let mut ends = Vec::new();
    let mut work = vec![Path {
        stack: vec![(base, 0)],
        assumed: Vec::new(),
    }];
    while let Some(path) = work.pop() {
        if ends.len() + work.len() > MAX_PATHS {
            return Answer::unknown(format!("{chain_ref}: too many source-dependent branches to evaluate"));
        }
        ends.push(walk(&chains, base, packet, path, &mut work));
    }
    decide(&chain_ref, ends)
}

/// Walks one path to its end, pushing the paths it forks into `work`.
fn walk<'a>(chains: &Chains<'a>, base: &'a Chain, packet: Packet, mut path: Path<'a>, work: &mut Vec<Path<'a>>) -> End {
    let policy_end = |assumed: Vec<Cond>| {
        let rule = format!(
            "{} {} {} policy {}",
            base.family,
            base.table,
            base.name,
            base.policy.as_deref().unwrap_or("accept")
        );
        match base.policy.as_deref() {
            None | Some("accept") => End::Accept { assumed, rule },
            Some("drop") => End::Drop { assumed, rule },
            Some(other) => End::Unknown {
                reason: format!("{rule}: unknown policy {other}"),
            },
        }
    };
    'rules: loop {
        let Some(&mut (chain, ref mut next)) = path.stack.last_mut() else {
            return policy_end(path.assumed);
        };
        let Some(rule) = chains.rule(chain, *next) else {
            // End of a chain: back to the caller (a base chain: its policy).
            path.stack.pop();
            if path.stack.is_empty() {
                return policy_end(path.assumed);
            }
            continue;
        };
        *next += 1;
        let here = rule_ref(rule);
        // A rule matches only where all its matches hold: one that is false
        // for this packet (or contradicts what the path assumed) skips the
        // rule before any other forks or is unknown.
        let never = rule.expr.iter().filter_map(tagged).any(|(kind, body)| {
            kind == "match"
                && serde_json::from_value::<Match>(body.clone()).is_ok_and(|m| {
                    match test_match(chains.ruleset, rule, packet, &m) {
                        Test::False => true,
                        Test::Source(cond) => path.assumed.contains(&cond.negate()),
                        Test::True | Test::Unknown(_) => false,
                    }
                })
        });
        if never {
            continue;
        }
        for statement in &rule.expr {
            let Some((kind, body)) = tagged(statement) else {
                return End::Unknown {
                    reason: format!("{here}: unreadable statement"),
                };
            };
            let verdict = match kind {
                "match" => {
                    let Ok(m) = serde_json::from_value::<Match>(body.clone()) else {
                        return End::Unknown {
                            reason: format!("{here}: unreadable match"),
                        };
                    };
                    match test_match(chains.ruleset, rule, packet, &m) {
                        Test::True => continue,
                        Test::False => continue 'rules,
                        Test::Unknown(what) => {
                            return End::Unknown {
                                reason: format!("{here}: {what} not evaluated"),
                            }
                        }
                        Test::Source(cond) => {
                            if path.assumed.contains(&cond) {
                                continue;
                            }
                            if path.assumed.contains(&cond.negate()) {
                                continue 'rules;
                            }
                            // Fork: the sources it does not match go on to the next rule.
                            let mut other = path.clone();
                            other.assumed.push(cond.negate());
                            work.push(other);
                            path.assumed.push(cond);
                            continue;
                        }
                    }
                }
                // Statements that leave the verdict alone.
                "counter" | "log" => continue,
                "accept" => Verdict::Accept,
                "drop" | "reject" => Verdict::Drop,
                "return" => Verdict::Return,
                "jump" | "goto" => match serde_json::from_value::<Target>(body.clone()) {
                    Ok(t) if kind == "jump" => Verdict::Jump(t.target),
                    Ok(t) => Verdict::Goto(t.target),
                    Err(_) => {
                        return End::Unknown {
                            reason: format!("{here}: unreadable {kind}"),
                        }
                    }
                },
                "vmap" => match vmap_verdict(chains.ruleset, rule, packet, body) {
                    Ok(Some(v)) => v,
                    Ok(None) => continue 'rules,
                    Err(what) => {
                        return End::Unknown {
                            reason: format!("{here}: {what} not evaluated"),
                        }
                    }
                },
                other => {
                    return End::Unknown {
                        reason: format!("{here}: statement {other} not evaluated"),
                    }
                }
            };
            match verdict {
                Verdict::Accept => {
                    return End::Accept {
                        assumed: path.assumed,
                        rule: here,
                    }
                }
                Verdict::Drop => {
                    return End::Drop {
                        assumed: path.assumed,
                        rule: here,
                    }
                }
                Verdict::Return => {
                    path.stack.pop();
                }
                Verdict::Jump(target) | Verdict::Goto(target) if path.stack.len() >= MAX_DEPTH => {
                    return End::Unknown {
                        reason: format!("{here}: jumps nest too deep (to {target})"),
                    };
                }
                Verdict::Jump(target) => match chains.ruleset.chain(&rule.family, &rule.table, &target) {
                    Some(to) => path.stack.push((to, 0)),
                    None => {
                        return End::Unknown {
                            reason: format!("{here}: jump to a missing chain {target}"),
                        }
                    }
                },
                // A goto does not come back here: the target returns to our caller.
                Verdict::Goto(target) => match chains.ruleset.chain(&rule.family, &rule.table, &target) {
                    Some(to) => {
                        path.stack.pop();
                        path.stack.push((to, 0));
                    }
                    None => {
                        return End::Unknown {
                            reason: format!("{here}: goto to a missing chain {target}"),
                        }
                    }
                },
            }
            continue 'rules;
        }
        // A rule without a verdict: on to the next.
    }
}

/// What a chain's paths say together.
fn decide(chain_ref: &str, ends: Vec<End>) -> Answer {
    let mut accepts = Vec::new();
    let mut drops = Vec::new();
    for end in ends {
        match end {
            End::Unknown { reason } => return Answer::unknown(reason),
            End::Accept { assumed, rule } => {
                accepts.push(PathEnd::new(assumed.iter().map(|c| (c.negated, c.to_string())), rule))
            }
            End::Drop { assumed, rule } => {
                drops.push(PathEnd::new(assumed.iter().map(|c| (c.negated, c.to_string())), rule))
            }
        }
    }
    settle(chain_ref, &accepts, &drops)
}

/// Where one path of a new connection through a chain ended, as
/// [`settle`] weighs it (the nftables and the legacy evaluator alike).
pub(super) struct PathEnd {
    /// It assumed no source condition but negated ones: it holds for every source.
    every_source: bool,
    /// The source conditions it assumed, as text (`any source` for none).
    sources: String,
    /// The rule that ended it.
    rule: String,
}

impl PathEnd {
    /// The path that assumed `conds` (each: whether it is negated, and its
    /// text) and ended at `rule`.
    pub(super) fn new(conds: impl IntoIterator<Item = (bool, String)>, rule: String) -> PathEnd {
        let (mut every_source, mut texts) = (true, Vec::new());
        for (negated, text) in conds {
            every_source &= negated;
            texts.push(text);
        }
        PathEnd {
            every_source,
            sources: match texts.is_empty() {
                true => "any source".to_owned(),
                false => texts.join(" "),
            },
            rule,
        }
    }
}

/// The answer of a chain whose paths ended in `accepts` and `drops` (none
/// unknown): open when none drops, filtered when none accepts, else
/// restricted to the sources the accepting paths assumed. The deciding rule
/// is the first path that holds for every source, else the first path, else
/// the chain itself (`chain_ref`: its policy).
pub(super) fn settle(chain_ref: &str, accepts: &[PathEnd], drops: &[PathEnd]) -> Answer {
    let deciding = |ends: &[PathEnd]| {
        ends.iter()
            .find(|p| p.every_source)
            .or(ends.first())
            .map_or_else(|| chain_ref.to_owned(), |p| p.rule.clone())
    };
    if drops.is_empty() {
        return Answer {
            reach: Reach::Open,
            sources: Vec::new(),
            rule: deciding(accepts),
        };
    }
    let Some(first) = accepts.first() else {
        return Answer {
            reach: Reach::Filtered,
            sources: Vec::new(),
            rule: deciding(drops),
        };
    };
    let mut sources: Vec<String> = Vec::new();
    for path in accepts {
        if !sources.contains(&path.sources) {
            sources.push(path.sources.clone());
        }
    }
    Answer {
        reach: Reach::Restricted,
        sources,
        rule: first.rule.clone(),
    }
}

/// A value a match compares with, resolved (named sets looked up).
#[derive(Debug, Clone)]
enum Atom {
    Num(u64),
    Range(u64, u64),
    Str(String),
    Prefix(u8),
    Other,
}

/// The atoms of a match's right side, and its text.
fn atoms(ruleset: &Ruleset, rule: &Rule, right: &Value) -> (Vec<Atom>, String) {
    let mut out = Vec::new();
    collect_atoms(ruleset, rule, right, &mut out, 0);
    (out, render(right))
}

fn collect_atoms(ruleset: &Ruleset, rule: &Rule, v: &Value, out: &mut Vec<Atom>, depth: u8) {
    if depth > 4 {
        out.push(Atom::Other);
        return;
    }
    match v {
        Value::Number(n) => out.push(n.as_u64().map_or(Atom::Other, Atom::Num)),
        Value::String(s) => match s.strip_prefix('@') {
            Some(name) => match ruleset.set(&rule.family, &rule.table, name) {
                Some(set) => {
                    for e in &set.elem {
                        collect_atoms(ruleset, rule, e, out, depth + 1);
                    }
                }
                None => out.push(Atom::Other),
            },
            None => out.push(Atom::Str(s.clone())),
        },
        Value::Array(items) => {
            for item in items {
                collect_atoms(ruleset, rule, item, out, depth + 1);
            }
        }
        _ => match tagged(v) {
            Some(("set", items)) => collect_atoms(ruleset, rule, items, out, depth + 1),
            // A set element with a timeout, counter or comment.
            Some(("elem", body)) => match body.get("val") {
                Some(val) => collect_atoms(ruleset, rule, val, out, depth + 1),
                None => out.push(Atom::Other),
            },
            Some(("range", Value::Array(ends))) => match (
                ends.first().and_then(Value::as_u64),
                ends.get(1).and_then(Value::as_u64),
            ) {
                (Some(a), Some(b)) => out.push(Atom::Range(a, b)),
                _ => out.push(Atom::Other),
            },
            Some(("prefix", body)) => match serde_json::from_value::<Prefix>(body.clone()) {
                Ok(p) => out.push(Atom::Prefix(p.len)),
                Err(_) => out.push(Atom::Other),
            },
            _ => out.push(Atom::Other),
        },
    }
}

/// A short text of a value, as nft would print it.
fn render(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => format!("{{ {} }}", items.iter().map(render).collect::<Vec<_>>().join(", ")),
        _ => match tagged(v) {
            Some(("set", Value::Array(items))) => {
                format!("{{ {} }}", items.iter().map(render).collect::<Vec<_>>().join(", "))
            }
            Some(("set", other)) => render(other),
            Some(("range", Value::Array(ends))) if ends.len() == 2 => {
                format!("{}-{}", render(&ends[0]), render(&ends[1]))
            }
            Some(("prefix", body)) => match serde_json::from_value::<Prefix>(body.clone()) {
                Ok(p) => format!("{}/{}", p.addr, p.len),
                Err(_) => body.to_string(),
            },
            Some(("elem", body)) => body.get("val").map_or_else(|| body.to_string(), render),
            _ => v.to_string(),
        },
    }
}

/// Whether the packet's `value` is among `atoms`; `None` when an atom
/// cannot be compared.
fn contains_num(atoms: &[Atom], value: u64) -> Option<bool> {
    let mut found = false;
    for a in atoms {
        match a {
            Atom::Num(n) => found |= *n == value,
            Atom::Range(lo, hi) => found |= (*lo..=*hi).contains(&value),
            _ => return None,
        }
    }
    Some(found)
}

/// A comparison of a known number of the packet.
fn compare_num(op: &str, atoms: &[Atom], value: u64, what: &str) -> Test {
    let single = match atoms {
        [Atom::Num(n)] => Some(*n),
        _ => None,
    };
    match (op, single) {
        ("==" | "in", _) => contains_num(atoms, value).map_or_else(|| Test::Unknown(format!("{what} value")), test),
        ("!=", _) => contains_num(atoms, value).map_or_else(|| Test::Unknown(format!("{what} value")), |c| test(!c)),
        ("<", Some(n)) => test(value < n),
        (">", Some(n)) => test(value > n),
        ("<=", Some(n)) => test(value <= n),
        (">=", Some(n)) => test(value >= n),
        _ => Test::Unknown(format!("{what} {op}")),
    }
}

fn proto_name(proto: Proto) -> (&'static str, u64) {
    match proto {
        Proto::Tcp => ("tcp", 6),
        Proto::Udp => ("udp", 17),
    }
}

/// Whether the packet's protocol is among `atoms`.
fn test_proto(op: &str, atoms: &[Atom], proto: Proto) -> Test {
    let (name, number) = proto_name(proto);
    let mut found = false;
    for a in atoms {
        match a {
            Atom::Str(s) => found |= s == name,
            Atom::Num(n) => found |= *n == number,
            _ => return Test::Unknown("protocol value".to_owned()),
        }
    }
    match op {
        "==" | "in" => test(found),
        "!=" => test(!found),
        _ => Test::Unknown(format!("protocol {op}")),
    }
}

fn test_match(ruleset: &Ruleset, rule: &Rule, packet: Packet, m: &Match) -> Test {
    let (atoms, right) = atoms(ruleset, rule, &m.right);
    let op = m.op.as_str();
    match tagged(&m.left) {
        Some(("payload", body)) => {
            let Ok(p) = serde_json::from_value::<Payload>(body.clone()) else {
                return Test::Unknown("payload expression".to_owned());
            };
            test_payload(packet, &p, op, &atoms, right)
        }
        Some(("meta", body)) => {
            let Ok(k) = serde_json::from_value::<Key>(body.clone()) else {
                return Test::Unknown("meta expression".to_owned());
            };
            match k.key.as_str() {
                "l4proto" => test_proto(op, &atoms, packet.proto),
                "nfproto" => {
                    let name = match packet.family {
                        Family::Ipv4 => "ipv4",
                        Family::Ipv6 => "ipv6",
                    };
                    let found = atoms.iter().any(|a| matches!(a, Atom::Str(s) if s == name));
                    match op {
                        "==" | "in" => test(found),
                        "!=" => test(!found),
                        _ => Test::Unknown(format!("meta nfproto {op}")),
                    }
                }
                "iifname" | "iif" => test_interface(&k.key, op, &atoms, right),
                other => Test::Unknown(format!("meta {other}")),
            }
        }
        Some(("ct", body)) => {
            let Ok(k) = serde_json::from_value::<Key>(body.clone()) else {
                return Test::Unknown("ct expression".to_owned());
            };
            if k.key != "state" {
                return Test::Unknown(format!("ct {}", k.key));
            }
            test_ct_state(op, &atoms)
        }
        Some((other, _)) => Test::Unknown(format!("match on {other}")),
        None => Test::Unknown("match".to_owned()),
    }
}

fn test_payload(packet: Packet, p: &Payload, op: &str, atoms: &[Atom], right: String) -> Test {
    let (l4, _) = proto_name(packet.proto);
    match (p.protocol.as_str(), p.field.as_str()) {
        ("tcp" | "udp", "dport") if p.protocol != l4 => Test::False,
        ("tcp" | "udp" | "th", "dport") => compare_num(op, atoms, u64::from(packet.port), "dport"),
        ("ip", _) if packet.family != Family::Ipv4 => Test::False,
        ("ip6", _) if packet.family != Family::Ipv6 => Test::False,
        ("ip", "protocol") | ("ip6", "nexthdr") => test_proto(op, atoms, packet.proto),
        ("ip" | "ip6", "saddr") => {
            // A /0 prefix is every source of the family.
            if let [Atom::Prefix(0)] = atoms {
                return match op {
                    "==" => Test::True,
                    "!=" => Test::False,
                    _ => Test::Unknown(format!("{} saddr {op}", p.protocol)),
                };
            }
            if atoms
                .iter()
                .any(|a| matches!(a, Atom::Other | Atom::Num(_) | Atom::Range(..)))
            {
                return Test::Unknown(format!("{} saddr value", p.protocol));
            }
            match op {
                "==" | "!=" => Test::Source(Cond {
                    left: format!("{} saddr", p.protocol),
                    right,
                    negated: op == "!=",
                }),
                _ => Test::Unknown(format!("{} saddr {op}", p.protocol)),
            }
        }
        (proto, field) => Test::Unknown(format!("{proto} {field}")),
    }
}

/// The packet arrived on an interface other than `lo`: a match naming `lo`
/// alone is false, one naming other interfaces depends on where it came from.
fn test_interface(key: &str, op: &str, atoms: &[Atom], right: String) -> Test {
    let mut others = false;
    for a in atoms {
        match a {
            Atom::Str(s) if s == "lo" => {}
            Atom::Str(_) => others = true,
            _ => return Test::Unknown(format!("meta {key} value")),
        }
    }
    match (op, others) {
        ("==" | "in", false) => Test::False,
        ("!=", false) => Test::True,
        ("==" | "in" | "!=", true) => Test::Source(Cond {
            left: key.to_owned(),
            right,
            negated: op == "!=",
        }),
        _ => Test::Unknown(format!("meta {key} {op}")),
    }
}

/// A new connection is in `ct state new`.
fn test_ct_state(op: &str, atoms: &[Atom]) -> Test {
    let mut found = false;
    for a in atoms {
        match a {
            Atom::Str(s) => found |= s == "new",
            _ => return Test::Unknown("ct state value".to_owned()),
        }
    }
    match op {
        "==" | "in" => test(found),
        "!=" => test(!found),
        _ => Test::Unknown(format!("ct state {op}")),
    }
}

/// The verdict a `vmap` gives the packet (`None`: no entry matches), for
/// maps keyed by `ct state` or the destination port.
fn vmap_verdict(ruleset: &Ruleset, rule: &Rule, packet: Packet, body: &Value) -> Result<Option<Verdict>, String> {
    let vmap: Vmap = serde_json::from_value(body.clone()).map_err(|_| "vmap".to_owned())?;
    enum Lookup {
        CtState,
        Port,
    }
    let lookup = match tagged(&vmap.key) {
        Some(("ct", k)) if k.get("key").and_then(Value::as_str) == Some("state") => Lookup::CtState,
        Some(("payload", p)) => {
            let p: Payload = serde_json::from_value(p.clone()).map_err(|_| "vmap key".to_owned())?;
            let (l4, _) = proto_name(packet.proto);
            match (p.protocol.as_str(), p.field.as_str()) {
                ("tcp" | "udp", "dport") if p.protocol != l4 => return Ok(None),
                ("tcp" | "udp" | "th", "dport") => Lookup::Port,
                (proto, field) => return Err(format!("vmap on {proto} {field}")),
            }
        }
        _ => return Err(format!("vmap on {}", render(&vmap.key))),
    };
    let entries: Vec<Value> = match &vmap.data {
        Value::String(s) if s.starts_with('@') => {
            let set = ruleset
                .set(&rule.family, &rule.table, &s[1..])
                .ok_or_else(|| format!("vmap {s}"))?;
            set.elem.clone()
        }
        data => match tagged(data) {
            Some(("set", Value::Array(items))) => items.clone(),
            _ => return Err("vmap data".to_owned()),
        },
    };
    for entry in &entries {
        let Some([key, verdict]) = entry.as_array().map(Vec::as_slice) else {
            return Err("vmap entry".to_owned());
        };
        let mut key_atoms = Vec::new();
        collect_atoms(ruleset, rule, key, &mut key_atoms, 0);
        let hit = match lookup {
            Lookup::CtState => match test_ct_state("==", &key_atoms) {
                Test::True => true,
                Test::False => false,
                _ => return Err("vmap ct state key".to_owned()),
            },
            Lookup::Port => contains_num(&key_atoms, u64::from(packet.port)).ok_or("vmap port key")?,
        };
        if !hit {
            continue;
        }
        return match tagged(verdict) {
            Some(("accept", _)) => Ok(Some(Verdict::Accept)),
            Some(("drop" | "reject", _)) => Ok(Some(Verdict::Drop)),
            Some(("return", _)) => Ok(Some(Verdict::Return)),
            Some(("jump", t)) => Ok(Some(Verdict::Jump(target_of(t)?))),
            Some(("goto", t)) => Ok(Some(Verdict::Goto(target_of(t)?))),
            _ => Err(format!("vmap verdict {}", render(verdict))),
        };
    }
    Ok(None)
}

fn target_of(body: &Value) -> Result<String, String> {
    serde_json::from_value::<Target>(body.clone())
        .map(|t| t.target)
        .map_err(|_| "vmap jump".to_owned())
}
