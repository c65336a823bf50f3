//! Firewall-aware reachability: what the host's packet filter does with a
//! new inbound connection to a listener, per network namespace.
//!
//! Parsing and evaluation are pure: [`ruleset`] and `eval` take the JSON
//! `nft -j list ruleset` prints, [`legacy`] and `legacy_eval` the text
//! `iptables-save` prints, and both are tested on captured rulesets
//! (`agent/tests/firewall/`). Reading a namespace's rules ([`read_here`])
//! runs `nft`, and `iptables-legacy-save`/`ip6tables-legacy-save` where
//! legacy tables exist, in the calling thread's network namespace; the
//! scanner's namespace thread calls it in each namespace it enters.
//!
//! What is read and what is not:
//! - nftables, including iptables-nft (whose rules are nftables rules), on
//!   the `prerouting` (type filter) and `input` hooks of the `ip`, `ip6` and
//!   `inet` families;
//! - legacy iptables (x_tables), for each family with tables in
//!   `/proc/net/ip_tables_names` (`ip6_tables_names`): `raw` and `mangle`
//!   PREROUTING, `mangle` INPUT, `filter` INPUT and `security` INPUT, not
//!   `nat`. Both filters run on the kernel's path, so a packet must pass
//!   both ([`both`]): filtered by either is filtered, unknown by either
//!   (and filtered by neither) is unknown, restricted by either is
//!   restricted, open only when both are open;
//! - no `nft` binary, or no permission (`CAP_NET_ADMIN`) to list the
//!   ruleset: nftables' answers of that namespace are `unknown`, with the
//!   reason (and so is every answer legacy iptables does not filter); the
//!   same for `iptables-legacy-save` where legacy tables exist.
//!
//! A failure here never fails a scan: it degrades the answers to `unknown`.

mod combine;
mod eval;
pub mod legacy;
mod legacy_eval;
pub mod ruleset;
pub mod watch;

use std::io;
use std::path::Path;
use std::process::Command;

use portwatch_common::{Exposure, Family, Socket, State};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use crate::scan::{Linux, Scanner};

pub use combine::both;
pub use eval::{evaluate, Answer, Query, Reach};
pub use legacy::Saved;
pub use ruleset::Ruleset;

/// Where a program run here (`nft`, `iptables-legacy-save`) is looked for
/// when it is not on `PATH` (a service's `PATH` often lacks the sbin
/// directories).
const SBIN: [&str; 2] = ["/usr/sbin", "/sbin"];

/// The packet filter of one network namespace, as far as it could be read.
#[derive(Debug, Clone)]
pub struct NamespaceRules {
    /// The nftables ruleset, or why it could not be read.
    pub ruleset: Result<Ruleset, String>,
    /// The legacy iptables tables, when there are any.
    pub legacy: Option<Legacy>,
}

/// The legacy iptables (x_tables) tables of one namespace.
#[derive(Debug, Clone)]
pub struct Legacy {
    /// The tables present (`ip filter, ip6 filter`).
    pub tables: String,
    /// The IPv4 tables (`iptables-legacy-save`), or why they could not be
    /// read; `None` when there is no IPv4 table.
    pub ipv4: Option<Result<Saved, String>>,
    /// The IPv6 tables (`ip6tables-legacy-save`), likewise.
    pub ipv6: Option<Result<Saved, String>>,
}

impl Legacy {
    /// The answer of the legacy tables of `family` for `query`; `None` when
    /// that family has none (nothing of x_tables on its path).
    pub fn answer(&self, family: Family, query: Query) -> Option<Answer> {
        let (saved, command) = match family {
            Family::Ipv4 => (self.ipv4.as_ref()?, "iptables-legacy"),
            Family::Ipv6 => (self.ipv6.as_ref()?, "ip6tables-legacy"),
        };
        Some(match saved {
            Ok(saved) => legacy_eval::evaluate(
                saved,
                command,
                legacy_eval::Packet {
                    family,
                    proto: query.proto,
                    port: query.port,
                    dest: query.dest,
                },
            ),
            Err(reason) => Answer::unknown(reason.clone()),
        })
    }
}

impl NamespaceRules {
    /// The answer for a listener, from the rules already read: per family,
    /// what nftables and the legacy tables say together ([`both`]: a packet
    /// must pass both), and the listener reachable when either family is.
    pub fn answer(&self, query: Query) -> Answer {
        let nft = |query: Query| match &self.ruleset {
            Ok(ruleset) => evaluate(ruleset, query),
            Err(reason) => Answer::unknown(reason.clone()),
        };
        let Some(legacy) = &self.legacy else {
            return nft(query);
        };
        let per_family = query
            .families()
            .map(|family| {
                let nft = nft(query.only(family));
                let answer = match legacy.answer(family, query) {
                    Some(legacy) => both(nft, legacy),
                    None => nft,
                };
                (family, answer)
            })
            .collect();
        eval::either_family(per_family)
    }

    /// Why the rules of this namespace could not be read, when that is so:
    /// the nftables ruleset, else legacy tables (its answers are then
    /// `unknown` where they are not `filtered` by what could be read).
    pub fn unavailable(&self) -> Option<&str> {
        let legacy = self.legacy.iter().flat_map(|l| [&l.ipv4, &l.ipv6]).flatten();
        self.ruleset
            .as_ref()
            .err()
            .or_else(|| legacy.filter_map(|r| r.as_ref().err()).next())
            .map(String::as_str)
    }
}

/// Whether a socket's reachability is evaluated: a listener (TCP LISTEN,
/// unconnected UDP) bound beyond loopback.
pub fn evaluated(socket: &Socket) -> bool {
    matches!(socket.state, State::Listen | State::Unconn) && socket.exposure != Exposure::Loopback
}

/// The firewall's answers for `sockets` (in the same order; `None` where
/// not [`evaluated`]), reading each namespace's packet filter once, in that
/// namespace, through the scanner that found them; and, per namespace whose
/// filter could not be read at all, why (for one warning each).
pub fn answers(scanner: &Scanner<Linux>, sockets: &[Socket]) -> (Vec<Option<Answer>>, Vec<(u64, String)>) {
    let wanted: HashSet<u64> = sockets.iter().filter(|s| evaluated(s)).map(|s| s.netns).collect();
    if wanted.is_empty() {
        return (vec![None; sockets.len()], Vec::new());
    }
    let mut rules: HashMap<u64, NamespaceRules> = HashMap::default();
    let mut unavailable = Vec::new();
    for (netns, read) in scanner.os().in_namespaces(&wanted, |_| read_here()) {
        let read = read.unwrap_or_else(|reason| NamespaceRules {
            ruleset: Err(reason),
            legacy: None,
        });
        if let Some(reason) = read.unavailable() {
            unavailable.push((netns, reason.to_owned()));
        }
        rules.insert(netns, read);
    }
    let answers = sockets
        .iter()
        .map(|s| {
            if !evaluated(s) {
                return None;
            }
            let query = Query::for_listener(s.proto, s.local_addr, s.local_port, s.dual_stack);
            Some(match rules.get(&s.netns) {
                Some(r) => r.answer(query),
                None => Answer::unknown("network namespace not found again to read its firewall"),
            })
        })
        .collect();
    unavailable.sort();
    (answers, unavailable)
}

/// Reads the packet filter of the calling thread's network namespace.
pub fn read_here() -> NamespaceRules {
    NamespaceRules {
        ruleset: list_ruleset().and_then(|json| Ruleset::parse(&json).map_err(|e| e.to_string())),
        legacy: read_legacy(Path::new("/proc/thread-self/net")),
    }
}

/// The legacy tables of the calling thread's namespace (whose
/// `/proc/.../net` is `net_dir`), read with `iptables-legacy-save` and
/// `ip6tables-legacy-save` for the families that have tables: a family
/// without tables is not asked, since the tools would load x_tables modules
/// (and make tables) where there were none.
fn read_legacy(net_dir: &Path) -> Option<Legacy> {
    let tables = legacy_tables(net_dir)?;
    let read = |names: &str, program: &str| match std::fs::read_to_string(net_dir.join(names)) {
        Ok(present) if !present.trim().is_empty() => Some(
            run_here(program, &[])
                .and_then(|text| Saved::parse(&String::from_utf8_lossy(&text)).map_err(|e| format!("{program}: {e}"))),
        ),
        Ok(_) => None,
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        // Not known to be empty: its answers cannot be had.
        Err(e) => Some(Err(format!("cannot read {names}: {e}"))),
    };
    Some(Legacy {
        tables,
        ipv4: read("ip_tables_names", "iptables-legacy-save"),
        ipv6: read("ip6_tables_names", "ip6tables-legacy-save"),
    })
}

/// Runs `program args` in the calling thread's namespace (found on `PATH`
/// or in the sbin directories) and returns its standard output, or why it
/// failed.
fn run_here(program: &str, args: &[&str]) -> Result<Vec<u8>, String> {
    let run = |path: &str| Command::new(path).args(args).output();
    let mut output = run(program);
    for dir in SBIN {
        match &output {
            Err(e) if e.kind() == io::ErrorKind::NotFound => output = run(&format!("{dir}/{program}")),
            _ => break,
        }
    }
    let output = match output {
        Ok(output) => output,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!(
                "{program} not found: install {} to evaluate the firewall",
                if program == "nft" { "nftables" } else { "iptables" }
            ))
        }
        Err(e) => return Err(format!("cannot run {program}: {e}")),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("no message");
        let command = std::iter::once(program)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        return Err(format!(
            "{command} failed ({}): {}",
            output.status,
            portwatch_common::text::escape(first.trim())
        ));
    }
    Ok(output.stdout)
}

/// `nft -j list ruleset`, run in the calling thread's namespace (a child
/// process inherits the namespaces of the thread that forks it).
fn list_ruleset() -> Result<Vec<u8>, String> {
    run_here("nft", &["-j", "list", "ruleset"])
}

/// The legacy iptables tables of a namespace (`ip_tables_names`,
/// `ip6_tables_names` under its `/proc/<...>/net`), joined; `None` when
/// there is none (or the kernel has no x_tables loaded). A names file that
/// exists but cannot be read (no `CAP_DAC_READ_SEARCH` for a non-root
/// agent: it is root's, mode 0440) is not taken for an empty one: it is
/// named as unreadable, and [`read_here`] answers its family `unknown`.
pub fn legacy_tables(net_dir: &Path) -> Option<String> {
    let mut tables = Vec::new();
    for (file, family) in [("ip_tables_names", "ip"), ("ip6_tables_names", "ip6")] {
        match std::fs::read_to_string(net_dir.join(file)) {
            Ok(text) => tables.extend(text.split_whitespace().map(|t| format!("{family} {t}"))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tables.push(format!("{family} (unreadable: {})", e.kind())),
        }
    }
    (!tables.is_empty()).then(|| tables.join(", "))
}

#[cfg(test)]
mod tests;
