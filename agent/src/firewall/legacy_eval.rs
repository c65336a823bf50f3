//! The legacy iptables evaluator: what the x_tables chains on the input
//! path do with a new inbound connection to one listener, from any source.
//!
//! The same walk as the nftables evaluator (`eval`): the packet is fixed in
//! what the listener decides (family, protocol, destination port, and its
//! address when it is bound to one), arrives on an interface other than
//! `lo` and is the first packet of a new connection; a match on its source
//! (`-s`, `-i`, `--sport`, or `-d` for a wildcard listener) forks the walk
//! into the packets it matches and those it does not. An option or target
//! the evaluator does not know ends its path in `unknown`, never a guess.
//!
//! The chains the packet meets, in the kernel's order: `raw PREROUTING`,
//! `mangle PREROUTING`, `mangle INPUT`, `filter INPUT`, `security INPUT`;
//! a drop in any is final. The `nat` table translates, it does not filter,
//! and is not read (as `nat` chains are not in nftables).

use std::net::IpAddr;

use ipnet::IpNet;
use portwatch_common::{Family, Proto};

use super::combine::both;
use super::eval::{settle, PathEnd};
use super::legacy::{Chain, Rule, Saved, Table};
use super::{Answer, Reach};

/// How many paths one chain may fork into before the answer is `unknown`.
const MAX_PATHS: usize = 4096;

/// How deep jumps may nest.
const MAX_DEPTH: usize = 32;

/// The chains a new inbound packet meets, in the order the kernel runs them.
const INPUT_PATH: [(&str, &str); 5] = [
    ("raw", "PREROUTING"),
    ("mangle", "PREROUTING"),
    ("mangle", "INPUT"),
    ("filter", "INPUT"),
    ("security", "INPUT"),
];

/// The packet being evaluated: all but its source.
#[derive(Debug, Clone, Copy)]
pub struct Packet {
    /// IPv4 for `iptables`, IPv6 for `ip6tables`.
    pub family: Family,
    /// Transport protocol.
    pub proto: Proto,
    /// Destination port.
    pub port: u16,
    /// Destination address, when the listener is bound to one (`None`: a
    /// wildcard, reached through any of the host's addresses).
    pub dest: Option<IpAddr>,
}

/// Evaluates the tables of one family (`saved`, from `iptables-save` for
/// IPv4 or `ip6tables-save` for IPv6) for a new inbound connection.
/// `command` names the tool in the answer's rule (`iptables-legacy`).
pub fn evaluate(saved: &Saved, command: &str, packet: Packet) -> Answer {
    let mut answer: Option<Answer> = None;
    for (table_name, chain_name) in INPUT_PATH {
        let Some(table) = saved.table(table_name) else {
            continue;
        };
        let Some(chain) = table.chain(chain_name) else {
            continue;
        };
        let this = evaluate_base_chain(command, table, chain, packet);
        answer = Some(match answer {
            None => this,
            Some(before) => both(before, this),
        });
    }
    answer.unwrap_or_else(|| Answer {
        reach: Reach::Open,
        sources: Vec::new(),
        rule: format!("{command}: no chain on the input path"),
    })
}

/// What a source condition is about.
#[derive(Debug, Clone, PartialEq, Eq)]
enum About {
    Source(IpNet),
    Dest(IpNet),
    Other,
}

/// A condition on the packet's source (or, for a wildcard listener, its
/// destination address) that a path assumed true (or, when `negated`, false).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cond {
    about: About,
    /// As the rule says it (`-s 10.0.0.0/8`, `-i eth1`).
    text: String,
    negated: bool,
}

impl Cond {
    fn negate(&self) -> Cond {
        Cond {
            negated: !self.negated,
            ..self.clone()
        }
    }

    fn show(&self) -> String {
        if self.negated {
            format!("! {}", self.text)
        } else {
            self.text.clone()
        }
    }

    /// What `assumed` already says of this condition: `Some(true)` when it
    /// holds on every packet of the path, `Some(false)` when on none.
    fn given(&self, assumed: &[Cond]) -> Option<bool> {
        if assumed.contains(self) {
            return Some(true);
        }
        if assumed.contains(&self.negate()) {
            return Some(false);
        }
        let (net, source) = match &self.about {
            About::Source(n) => (n, true),
            About::Dest(n) => (n, false),
            About::Other => return None,
        };
        for a in assumed {
            let known = match (&a.about, source) {
                (About::Source(known), true) | (About::Dest(known), false) => known,
                _ => continue,
            };
            // Prefixes are nested or disjoint.
            let inside = net.contains(known);
            let disjoint = !inside && !known.contains(net);
            let holds = match (a.negated, inside, disjoint) {
                // The address is in `known`, which is in `net`.
                (false, true, _) => Some(true),
                // The address is in `known`, which `net` does not meet.
                (false, _, true) => Some(false),
                // The address is not in `known`, which holds all of `net`.
                (true, _, _) if known.contains(net) => Some(false),
                _ => None,
            };
            if let Some(holds) = holds {
                return Some(holds != self.negated);
            }
        }
        None
    }
}

/// What one match says of the packet.
enum Test {
    True,
    False,
    Cond(Cond),
    Unknown(String),
}

fn test(yes: bool) -> Test {
    if yes {
        Test::True
    } else {
        Test::False
    }
}

/// What a rule does when it matches.
enum Target {
    Accept,
    Drop,
    Return,
    Jump(String),
    Goto(String),
    /// Leaves the verdict alone (`LOG`, `NFLOG`, no target).
    Continue,
    /// A user chain of the table, or else an extension not evaluated.
    Named(String),
    Unknown(String),
}

/// A rule read: its matches and its target.
struct Spec {
    tests: Vec<Test>,
    target: Target,
}

/// Reads a rule's arguments as iptables-save prints them, testing each
/// match on `packet`.
fn read_rule(rule: &Rule, packet: Packet) -> Spec {
    let mut tests = Vec::new();
    let mut target = Target::Continue;
    let mut negate = false;
    let mut args = rule.args.iter().map(String::as_str);
    let unknown = |what: String| Test::Unknown(what);
    while let Some(arg) = args.next() {
        if arg == "!" {
            negate = !negate;
            continue;
        }
        let neg = std::mem::take(&mut negate);
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} without a value"));
        let t = match arg {
            "-p" | "--protocol" => match value(arg) {
                Ok(p) => test_proto(p, packet.proto, neg),
                Err(e) => unknown(e),
            },
            "-s" | "--source" | "-d" | "--destination" => match value(arg) {
                Ok(v) => test_address(arg, v, packet, neg),
                Err(e) => unknown(e),
            },
            "-i" | "--in-interface" => match value(arg) {
                Ok(v) => test_interface(v, neg),
                Err(e) => unknown(e),
            },
            "-m" | "--match" => match value(arg) {
                Ok("tcp" | "udp" | "multiport" | "state" | "conntrack" | "comment") => continue,
                Ok(other) => unknown(format!("-m {other}")),
                Err(e) => unknown(e),
            },
            "--dport" | "--destination-port" | "--dports" | "--destination-ports" => match value(arg) {
                Ok(v) => match ports(v) {
                    Some(list) => test(list.iter().any(|&(lo, hi)| (lo..=hi).contains(&packet.port)) != neg),
                    None => unknown(format!("{arg} {v}")),
                },
                Err(e) => unknown(e),
            },
            "--sport" | "--source-port" | "--sports" | "--source-ports" => match value(arg) {
                Ok(v) if ports(v).is_some() => Test::Cond(Cond {
                    about: About::Other,
                    text: format!("{arg} {v}"),
                    negated: neg,
                }),
                Ok(v) => unknown(format!("{arg} {v}")),
                Err(e) => unknown(e),
            },
            "--state" | "--ctstate" => match value(arg) {
                // The first packet of a new connection is in state NEW.
                Ok(v) => test(v.split(',').any(|s| s == "NEW") != neg),
                Err(e) => unknown(e),
            },
            "--comment" => match value(arg) {
                Ok(_) => continue,
                Err(e) => unknown(e),
            },
            "--syn" => syn(packet, neg),
            "--tcp-flags" => match (value(arg), value(arg)) {
                (Ok("FIN,SYN,RST,ACK"), Ok("SYN")) => syn(packet, neg),
                (Ok(mask), Ok(set)) => unknown(format!("--tcp-flags {mask} {set}")),
                _ => unknown("--tcp-flags without its values".to_owned()),
            },
            "-j" | "--jump" | "-g" | "--goto" => {
                let Ok(name) = value(arg) else {
                    target = Target::Unknown(format!("{arg} without a target"));
                    break;
                };
                // Target options follow the target, last on the line.
                target = match (arg, name) {
                    ("-g" | "--goto", chain) => Target::Goto(chain.to_owned()),
                    (_, "ACCEPT") => Target::Accept,
                    (_, "DROP" | "REJECT") => Target::Drop,
                    (_, "RETURN") => Target::Return,
                    (_, "LOG" | "NFLOG") => Target::Continue,
                    (_, name) => Target::Named(name.to_owned()),
                };
                break;
            }
            other => unknown(format!("option {other}")),
        };
        tests.push(t);
    }
    Spec { tests, target }
}

fn test_proto(p: &str, proto: Proto, neg: bool) -> Test {
    let yes = match (p, proto) {
        ("all" | "0", _) => true,
        ("tcp" | "6", Proto::Tcp) | ("udp" | "17", Proto::Udp) => true,
        ("tcp" | "6" | "udp" | "17" | "icmp" | "1" | "ipv6-icmp" | "icmpv6" | "58" | "sctp" | "132", _) => false,
        _ => return Test::Unknown(format!("-p {p}")),
    };
    test(yes != neg)
}

/// `-s`/`-d`: a prefix of the packet's family (iptables-save prints one per
/// rule, `10.0.0.0/8` or `10.0.0.1/32`).
fn test_address(arg: &str, v: &str, packet: Packet, neg: bool) -> Test {
    let short = if arg.starts_with("--s") || arg == "-s" {
        "-s"
    } else {
        "-d"
    };
    let net: IpNet = match v.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => match v.parse::<IpAddr>() {
            Ok(addr) => IpNet::from(addr),
            Err(_) => return Test::Unknown(format!("{short} {v}")),
        },
    };
    match (net, packet.family) {
        (IpNet::V4(_), Family::Ipv4) | (IpNet::V6(_), Family::Ipv6) => {}
        _ => return Test::Unknown(format!("{short} {v} in another family's table")),
    }
    if net.prefix_len() == 0 {
        return test(!neg);
    }
    if short == "-d" {
        if let Some(dest) = packet.dest {
            return test(net.contains(&dest) != neg);
        }
    }
    Test::Cond(Cond {
        about: if short == "-s" {
            About::Source(net)
        } else {
            About::Dest(net)
        },
        text: format!("{short} {net}"),
        negated: neg,
    })
}

/// The packet arrived on an interface other than `lo` (as in the nftables
/// evaluator): `-i lo` is false, another interface depends on the way in.
fn test_interface(name: &str, neg: bool) -> Test {
    if name == "lo" {
        return test(neg);
    }
    if name == "+" {
        return test(!neg);
    }
    Test::Cond(Cond {
        about: About::Other,
        text: format!("-i {name}"),
        negated: neg,
    })
}

/// `--syn`: the first packet of a new TCP connection has SYN set and FIN,
/// RST and ACK clear.
fn syn(packet: Packet, neg: bool) -> Test {
    match packet.proto {
        Proto::Tcp => test(!neg),
        Proto::Udp => Test::Unknown("--syn on UDP".to_owned()),
    }
}

/// A port list (`22`, `1000:2000`, `:1023`, `80,443,8000:8100`) as ranges.
fn ports(v: &str) -> Option<Vec<(u16, u16)>> {
    v.split(',')
        .map(|p| match p.split_once(':') {
            Some((lo, hi)) => {
                let lo = if lo.is_empty() { 0 } else { lo.parse().ok()? };
                let hi = if hi.is_empty() { u16::MAX } else { hi.parse().ok()? };
                Some((lo, hi))
            }
            None => p.parse().ok().map(|n| (n, n)),
        })
        .collect()
}

/// How one path ended.
enum End {
    Accept { assumed: Vec<Cond>, rule: String },
    Drop { assumed: Vec<Cond>, rule: String },
    Unknown(String),
}

#[derive(Clone)]
struct Path<'a> {
    stack: Vec<(&'a Chain, usize)>,
    assumed: Vec<Cond>,
}

fn evaluate_base_chain(command: &str, table: &Table, base: &Chain, packet: Packet) -> Answer {
    let chain_ref = format!("{command} {} {}", table.name, base.name);
    let mut ends = Vec::new();
    let mut work = vec![Path {
        stack: vec![(base, 0)],
        assumed: Vec::new(),
    }];
    while let Some(path) = work.pop() {
        if ends.len() + work.len() > MAX_PATHS {
            return Answer::unknown(format!("{chain_ref}: too many source-dependent branches to evaluate"));
        }
        ends.push(walk(&chain_ref, table, base, packet, path, &mut work));
    }
    decide(&chain_ref, ends)
}

/// Walks one path to its end, pushing the paths it forks into `work`.
fn walk<'a>(
    chain_ref: &str,
    table: &'a Table,
    base: &'a Chain,
    packet: Packet,
    mut path: Path<'a>,
    work: &mut Vec<Path<'a>>,
) -> End {
    let policy_end = |assumed: Vec<Cond>| {
        let policy = base.policy.as_deref().unwrap_or("ACCEPT");
        let rule = format!("{chain_ref} policy {policy}");
        match policy {
            "ACCEPT" => End::Accept { assumed, rule },
            "DROP" => End::Drop { assumed, rule },
            other => End::Unknown(format!("{rule}: unknown policy {other}")),
        }
    };
    'rules: loop {
        let Some(&mut (chain, ref mut next)) = path.stack.last_mut() else {
            return policy_end(path.assumed);
        };
        let Some(rule) = chain.rules.get(*next) else {
            path.stack.pop();
            if path.stack.is_empty() {
                return policy_end(path.assumed);
            }
            continue;
        };
        *next += 1;
        let here = format!("{} rule {}: {}", chain_ref_of(chain_ref, chain), *next, rule.text);
        let spec = read_rule(rule, packet);
        // A match false for this packet (or for every packet of this path)
        // skips the rule, whatever else it holds.
        let never = spec.tests.iter().any(|t| match t {
            Test::False => true,
            Test::Cond(c) => c.given(&path.assumed) == Some(false),
            Test::True | Test::Unknown(_) => false,
        });
        if never {
            continue;
        }
        if let Some(Test::Unknown(what)) = spec.tests.iter().find(|t| matches!(t, Test::Unknown(_))) {
            return End::Unknown(format!("{here}: {what} not evaluated"));
        }
        for t in spec.tests {
            let Test::Cond(cond) = t else { continue };
            if cond.given(&path.assumed) == Some(true) {
                continue;
            }
            // Fork: the packets it does not match go on to the next rule.
            let mut other = path.clone();
            other.assumed.push(cond.negate());
            work.push(other);
            path.assumed.push(cond);
        }
        let target = match spec.target {
            // A chain of the table (`DOCKER`, `svc`), else an extension (`MARK`, `CT`).
            Target::Named(name) if table.chain(&name).is_some() => Target::Jump(name),
            Target::Named(name) => Target::Unknown(format!("target {name}")),
            target => target,
        };
        match target {
            Target::Continue => continue 'rules,
            Target::Named(name) => return End::Unknown(format!("{here}: target {name} not evaluated")),
            Target::Unknown(what) => return End::Unknown(format!("{here}: {what} not evaluated")),
            Target::Accept => {
                return End::Accept {
                    assumed: path.assumed,
                    rule: here,
                }
            }
            Target::Drop => {
                return End::Drop {
                    assumed: path.assumed,
                    rule: here,
                }
            }
            Target::Return => {
                path.stack.pop();
            }
            Target::Jump(to) | Target::Goto(to) if path.stack.len() >= MAX_DEPTH => {
                return End::Unknown(format!("{here}: jumps nest too deep (to {to})"));
            }
            Target::Jump(to) => match table.chain(&to) {
                Some(c) => path.stack.push((c, 0)),
                None => return End::Unknown(format!("{here}: jump to a missing chain {to}")),
            },
            // A goto does not come back here: the target returns to our caller.
            Target::Goto(to) => match table.chain(&to) {
                Some(c) => {
                    path.stack.pop();
                    path.stack.push((c, 0));
                }
                None => return End::Unknown(format!("{here}: goto to a missing chain {to}")),
            },
        }
    }
}

/// `iptables-legacy filter svc` for a rule of the user chain `svc`, reached
/// from `iptables-legacy filter INPUT`.
fn chain_ref_of(base_ref: &str, chain: &Chain) -> String {
    match base_ref.rsplit_once(' ') {
        Some((table_ref, _)) => format!("{table_ref} {}", chain.name),
        None => chain.name.clone(),
    }
}

/// What a chain's paths say together (as in the nftables evaluator).
fn decide(chain_ref: &str, ends: Vec<End>) -> Answer {
    let mut accepts = Vec::new();
    let mut drops = Vec::new();
    for end in ends {
        match end {
            End::Unknown(reason) => return Answer::unknown(reason),
            End::Accept { assumed, rule } => {
                accepts.push(PathEnd::new(assumed.iter().map(|c| (c.negated, c.show())), rule))
            }
            End::Drop { assumed, rule } => {
                drops.push(PathEnd::new(assumed.iter().map(|c| (c.negated, c.show())), rule))
            }
        }
    }
    settle(chain_ref, &accepts, &drops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(net: &str, negated: bool) -> Cond {
        let net: IpNet = net.parse().unwrap();
        Cond {
            about: About::Source(net),
            text: format!("-s {net}"),
            negated,
        }
    }

    #[test]
    fn what_a_path_assumed_of_its_source_decides_nested_and_disjoint_prefixes() {
        let in_10 = [source("10.0.0.0/8", false)];
        assert_eq!(source("10.0.0.0/8", false).given(&in_10), Some(true));
        assert_eq!(source("10.0.0.0/8", true).given(&in_10), Some(false));
        // Inside a wider prefix: true; beside it: false; narrower: not known.
        assert_eq!(source("10.0.0.0/7", false).given(&in_10), Some(true));
        assert_eq!(source("192.168.0.0/16", false).given(&in_10), Some(false));
        assert_eq!(source("192.168.0.0/16", true).given(&in_10), Some(true));
        assert_eq!(source("10.1.0.0/16", false).given(&in_10), None);
        // Outside 10.0.0.0/8: outside every prefix within it, else not known.
        let not_10 = [source("10.0.0.0/8", true)];
        assert_eq!(source("10.1.0.0/16", false).given(&not_10), Some(false));
        assert_eq!(source("10.1.0.0/16", true).given(&not_10), Some(true));
        assert_eq!(source("172.16.0.0/12", false).given(&not_10), None);
        // A destination assumed says nothing of the source.
        let dest = [Cond {
            about: About::Dest("10.0.0.0/8".parse().unwrap()),
            text: "-d 10.0.0.0/8".to_owned(),
            negated: false,
        }];
        assert_eq!(source("10.0.0.0/8", false).given(&dest), None);
    }

    #[test]
    fn port_lists_read_ranges_and_open_ends() {
        assert_eq!(ports("22"), Some(vec![(22, 22)]));
        assert_eq!(
            ports("80,443,8000:8100"),
            Some(vec![(80, 80), (443, 443), (8000, 8100)])
        );
        assert_eq!(ports(":1023"), Some(vec![(0, 1023)]));
        assert_eq!(ports("1024:"), Some(vec![(1024, u16::MAX)]));
        assert_eq!(ports("ssh"), None);
    }
}
