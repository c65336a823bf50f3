//! Firewall-aware reachability: what the host's packet filter does with a
//! new inbound connection to a listener, per network namespace.
//!
//! Parsing and evaluation ([`ruleset`], [`evaluate`]) are pure: they take
//! the JSON `nft -j list ruleset` prints, and are tested on captured
//! rulesets (`agent/tests/firewall/`). Reading a namespace's ruleset
//! ([`read_here`]) runs `nft` in the calling thread's network namespace; the
//! scanner's namespace thread calls it in each namespace it enters.
//!
//! What is read and what is not:
//! - nftables, including iptables-nft (whose rules are nftables rules), on
//!   the `prerouting` (type filter) and `input` hooks of the `ip`, `ip6` and
//!   `inet` families;
//! - legacy iptables (x_tables, `/proc/net/ip_tables_names`) is not
//!   evaluated: where legacy tables exist, an answer that nftables does not
//!   already make `filtered` is `unknown` ("iptables-legacy not evaluated");
//! - no `nft` binary, or no permission (`CAP_NET_ADMIN`) to list the
//!   ruleset: every answer of that namespace is `unknown`, with the reason.
//!
//! A failure here never fails a scan: it degrades the answers to `unknown`.

mod eval;
pub mod ruleset;
pub mod watch;

use std::io;
use std::path::Path;
use std::process::Command;

use portwatch_common::{Exposure, Socket, State};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use crate::scan::{Linux, Scanner};

pub use eval::{evaluate, Answer, Query, Reach};
pub use ruleset::Ruleset;

/// Where `nft` is looked for when it is not on `PATH` (a service's `PATH`
/// often lacks the sbin directories).
const NFT_FALLBACKS: [&str; 2] = ["/usr/sbin/nft", "/sbin/nft"];

/// The packet filter of one network namespace, as far as it could be read.
#[derive(Debug, Clone)]
pub struct NamespaceRules {
    /// The nftables ruleset, or why it could not be read.
    pub ruleset: Result<Ruleset, String>,
    /// The legacy iptables tables present, when there are any.
    pub legacy: Option<String>,
}

impl NamespaceRules {
    /// The answer for a listener, from a ruleset already read.
    pub fn answer(&self, query: Query) -> Answer {
        let answer = match &self.ruleset {
            Ok(ruleset) => evaluate(ruleset, query),
            Err(reason) => return Answer::unknown(reason.clone()),
        };
        match &self.legacy {
            // A drop in nftables is final whatever iptables-legacy says.
            Some(tables) if answer.reach != Reach::Filtered => Answer::unknown(format!(
                "iptables-legacy not evaluated (tables {tables}); nftables alone says {}: {}",
                answer.reach,
                answer.describe()
            )),
            _ => answer,
        }
    }

    /// Why nothing of this namespace could be decided, when that is so.
    pub fn unavailable(&self) -> Option<&str> {
        self.ruleset.as_ref().err().map(String::as_str)
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
        legacy: legacy_tables(Path::new("/proc/thread-self/net")),
    }
}

/// `nft -j list ruleset`, run in the calling thread's namespace (a child
/// process inherits the namespaces of the thread that forks it).
fn list_ruleset() -> Result<Vec<u8>, String> {
    let run = |program: &str| Command::new(program).args(["-j", "list", "ruleset"]).output();
    let mut output = run("nft");
    for fallback in NFT_FALLBACKS {
        match &output {
            Err(e) if e.kind() == io::ErrorKind::NotFound => output = run(fallback),
            _ => break,
        }
    }
    let output = match output {
        Ok(output) => output,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err("nft not found: install nftables to evaluate the firewall".to_owned())
        }
        Err(e) => return Err(format!("cannot run nft: {e}")),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("no message");
        return Err(format!(
            "nft -j list ruleset failed ({}): {}",
            output.status,
            portwatch_common::text::escape(first.trim())
        ));
    }
    Ok(output.stdout)
}

/// The legacy iptables tables of a namespace (`ip_tables_names`,
/// `ip6_tables_names` under its `/proc/<...>/net`), joined; `None` when
/// there is none (or the kernel has no x_tables loaded).
pub fn legacy_tables(net_dir: &Path) -> Option<String> {
    let mut tables = Vec::new();
    for (file, family) in [("ip_tables_names", "ip"), ("ip6_tables_names", "ip6")] {
        if let Ok(text) = std::fs::read_to_string(net_dir.join(file)) {
            tables.extend(text.split_whitespace().map(|t| format!("{family} {t}")));
        }
    }
    (!tables.is_empty()).then(|| tables.join(", "))
}

#[cfg(test)]
mod tests;
