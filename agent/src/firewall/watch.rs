//! The daemon's firewall answers: each namespace's ruleset read once and
//! read again only when it changed, so that every listener the daemon
//! reports carries the firewall's answer ([`Listener::firewall`]) and a rule
//! change is reported as a change of the listeners it decides, at the time
//! the daemon saw it.
//!
//! Whether a ruleset changed is asked of the kernel, not of `nft`: nftables
//! keeps a generation number per network namespace, bumped by every
//! committed change, and one netlink request (`NFT_MSG_GETGEN`) reads it in
//! microseconds, where running `nft -j list ruleset` costs a process and
//! about a millisecond of CPU. Where the generation cannot be read (no
//! `CAP_NET_ADMIN`, a kernel without nf_tables), the ruleset is read again
//! every [`REREAD_UNCHANGED`] instead. Legacy iptables (x_tables) has no
//! generation: where a namespace has legacy tables, its rules are read again
//! every [`REREAD_UNCHANGED`] too, and at once when tables are made or
//! removed there (its `ip_tables_names`, read at every check).

use std::io;
use std::time::{Duration, Instant};

use netlink_packet_core::{NLMSG_ERROR, NLM_F_REQUEST};
use netlink_sys::protocols::NETLINK_NETFILTER;
use netlink_sys::{Socket, SocketAddr};
use portwatch_common::{Exposure, Firewall, Listener, Snapshot};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use super::{legacy_tables, read_here, NamespaceRules, Query};
use crate::scan::{Linux, Scanner};

/// How often a namespace's ruleset is read again when its generation
/// cannot be read (or says nothing changed but legacy iptables tables,
/// which it does not count, exist).
pub const REREAD_UNCHANGED: Duration = Duration::from_secs(60);

/// `NFNL_SUBSYS_NFTABLES`: the nftables subsystem of nfnetlink.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFT_MSG_GETGEN`.
const NFT_MSG_GETGEN: u16 = 16;
/// `NFT_MSG_NEWGEN`: the answer to it.
const NFT_MSG_NEWGEN: u16 = 15;
/// `NFTA_GEN_ID`: the generation attribute (a big-endian u32).
const NFTA_GEN_ID: u16 = 1;

/// Why a generation could not be read from a reply.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GenerationError {
    /// The kernel refused the request (`EPERM` without `CAP_NET_ADMIN`).
    #[error("the kernel refused: {0}")]
    Refused(String),
    /// The reply is not what the request asks for.
    #[error("unreadable nftables generation reply: {0}")]
    Unreadable(&'static str),
}

/// The `NFT_MSG_GETGEN` request, numbered `seq`: a netlink header and an
/// `nfgenmsg` (family `AF_UNSPEC`, version 0, resource 0).
pub fn generation_request(seq: u32) -> [u8; 20] {
    let mut msg = [0u8; 20];
    msg[0..4].copy_from_slice(&20u32.to_ne_bytes());
    msg[4..6].copy_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN).to_ne_bytes());
    msg[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    msg[8..12].copy_from_slice(&seq.to_ne_bytes());
    // pid 0 (the kernel), then nfgenmsg: family 0, version 0, res_id 0.
    msg
}

/// The generation a `NFT_MSG_NEWGEN` reply carries.
pub fn parse_generation(reply: &[u8]) -> Result<u32, GenerationError> {
    let u16_at = |at: usize| reply.get(at..at + 2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let u32_at = |at: usize| {
        reply
            .get(at..at + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    let len = u32_at(0).ok_or(GenerationError::Unreadable("shorter than a netlink header"))? as usize;
    let kind = u16_at(4).ok_or(GenerationError::Unreadable("shorter than a netlink header"))?;
    let message = reply
        .get(..len)
        .filter(|_| len >= 16)
        .ok_or(GenerationError::Unreadable("a length beyond the reply"))?;
    if kind == NLMSG_ERROR {
        let errno = u32_at(16).ok_or(GenerationError::Unreadable("an error without its number"))? as i32;
        return Err(GenerationError::Refused(
            io::Error::from_raw_os_error(-errno).to_string(),
        ));
    }
    if kind != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN {
        return Err(GenerationError::Unreadable("not a generation message"));
    }
    // Attributes follow the 16-byte header and the 4-byte nfgenmsg, each 4-aligned.
    let mut at = 20;
    while at + 4 <= message.len() {
        let attr_len = usize::from(u16::from_ne_bytes([message[at], message[at + 1]]));
        let attr_kind = u16::from_ne_bytes([message[at + 2], message[at + 3]]) & 0x3fff;
        if attr_len < 4 || at + attr_len > message.len() {
            return Err(GenerationError::Unreadable("an attribute beyond its message"));
        }
        if attr_kind == NFTA_GEN_ID && attr_len >= 8 {
            let b = &message[at + 4..at + 8];
            return Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        }
        at += (attr_len + 3) & !3;
    }
    Err(GenerationError::Unreadable("no generation attribute"))
}

/// Reads the nftables generation of the calling thread's network namespace.
pub fn generation_here() -> Result<u32, String> {
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(|e| format!("cannot open a netfilter socket: {e}"))?;
    socket
        .bind_auto()
        .map_err(|e| format!("cannot bind a netfilter socket: {e}"))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(|e| format!("cannot connect a netfilter socket: {e}"))?;
    socket
        .send(&generation_request(1), 0)
        .map_err(|e| format!("cannot ask the nftables generation: {e}"))?;
    let mut buf = vec![0u8; 4096];
    let n = socket
        .recv(&mut &mut buf[..], 0)
        .map_err(|e| format!("cannot read the nftables generation: {e}"))?;
    parse_generation(&buf[..n]).map_err(|e| e.to_string())
}

/// What is checked of a namespace at every refresh, cheaply: its nftables
/// generation (where it can be read) and its legacy iptables tables (which
/// the generation does not count).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Probe {
    generation: Option<u32>,
    legacy_tables: Option<String>,
}

/// The probe of each namespace of `wanted`, where it could be entered.
fn probes(scanner: &Scanner<Linux>, wanted: &HashSet<u64>) -> HashMap<u64, Probe> {
    scanner
        .os()
        .in_namespaces(wanted, |_| Probe {
            generation: generation_here().ok(),
            legacy_tables: legacy_tables(std::path::Path::new("/proc/thread-self/net")),
        })
        .into_iter()
        .filter_map(|(netns, p)| Some((netns, p.ok()?)))
        .collect()
}

/// Whether a namespace's rules must be read again: never read; legacy
/// tables made or removed since; else, with a generation, when it moved or
/// (legacy tables' rules having no generation) every [`REREAD_UNCHANGED`]
/// where legacy tables exist; without one, every [`REREAD_UNCHANGED`].
fn must_read(known: Option<&Known>, probe: &Probe, now: Instant) -> bool {
    let Some(k) = known else {
        return true;
    };
    let due = now.duration_since(k.read_at) >= REREAD_UNCHANGED;
    let legacy_then = k.rules.legacy.as_ref().map(|l| l.tables.as_str());
    if legacy_then != probe.legacy_tables.as_deref() {
        return true;
    }
    match probe.generation {
        None => due,
        Some(g) => k.generation != Some(g) || (legacy_then.is_some() && due),
    }
}

/// What is known of one namespace's packet filter.
struct Known {
    /// The generation its ruleset was read at, when it could be read.
    generation: Option<u32>,
    /// When it was read.
    read_at: Instant,
    rules: NamespaceRules,
}

/// The firewall answers the daemon gives its listeners.
pub struct Watch {
    known: HashMap<u64, Known>,
    /// Answers given since the rulesets were last read, by namespace and
    /// query: a burst of events costs a lookup per listener, not an evaluation.
    answers: HashMap<(u64, Query), Firewall>,
}

impl Default for Watch {
    fn default() -> Self {
        Watch::new()
    }
}

impl Watch {
    /// Nothing read yet.
    pub fn new() -> Watch {
        Watch {
            known: HashMap::default(),
            answers: HashMap::default(),
        }
    }

    /// The namespaces whose rulesets `listeners` need.
    pub fn namespaces_of<'a>(listeners: impl IntoIterator<Item = &'a Listener>) -> HashSet<u64> {
        listeners
            .into_iter()
            .filter(|l| evaluated(l))
            .map(|l| l.netns)
            .collect()
    }

    /// Reads again the rulesets of the namespaces `wanted` that changed
    /// since they were read (or were never read), and forgets the others.
    /// Returns whether any was read again: the answers of its listeners may
    /// have changed.
    pub fn refresh(&mut self, scanner: &Scanner<Linux>, wanted: &HashSet<u64>) -> bool {
        self.known.retain(|netns, _| wanted.contains(netns));
        self.answers.retain(|(netns, _), _| wanted.contains(netns));
        if wanted.is_empty() {
            return false;
        }
        let now = Instant::now();
        let probes = probes(scanner, wanted);
        let stale: HashSet<u64> = wanted
            .iter()
            .copied()
            .filter(|netns| {
                let known = self.known.get(netns);
                // Not entered to be probed: as if nothing could be read of it.
                let probe = probes.get(netns).cloned().unwrap_or_else(|| Probe {
                    generation: None,
                    legacy_tables: known.and_then(|k| k.rules.legacy.as_ref()).map(|l| l.tables.clone()),
                });
                must_read(known, &probe, now)
            })
            .collect();
        if stale.is_empty() {
            return false;
        }
        self.read(scanner, &stale, &probes, now);
        true
    }

    /// Reads the rulesets of the namespaces `stale`, at the generations `probes` read.
    fn read(&mut self, scanner: &Scanner<Linux>, stale: &HashSet<u64>, probes: &HashMap<u64, Probe>, now: Instant) {
        self.answers.retain(|(netns, _), _| !stale.contains(netns));
        for (netns, read) in scanner.os().in_namespaces(stale, |_| read_here()) {
            let rules = read.unwrap_or_else(|reason| NamespaceRules {
                ruleset: Err(reason),
                legacy: None,
            });
            if let Some(reason) = rules.unavailable() {
                let was = self
                    .known
                    .get(&netns)
                    .and_then(|k| k.rules.unavailable().map(str::to_owned));
                if was.as_deref() != Some(reason) {
                    tracing::warn!(netns, %reason, "firewall not evaluated in this network namespace: its listeners are reported unknown");
                }
            }
            self.known.insert(
                netns,
                Known {
                    generation: probes.get(&netns).and_then(|p| p.generation),
                    read_at: now,
                    rules,
                },
            );
        }
    }

    /// The answer for `listener`, which an event says process `pid` just
    /// opened: its namespace's ruleset is read first when no listener
    /// needed it before (entered through `pid` when the last scan did not
    /// find the namespace), so that the listener carries its real answer
    /// from its first report, not `unknown` until the next refresh, which
    /// would then record a change.
    pub fn firewall_of_new(&mut self, scanner: &mut Scanner<Linux>, listener: &Listener, pid: u32) -> Option<Firewall> {
        if evaluated(listener) && !self.known.contains_key(&listener.netns) {
            scanner.os_mut().note_namespace(listener.netns, pid);
            let wanted = HashSet::from_iter([listener.netns]);
            self.read(scanner, &wanted, &probes(scanner, &wanted), Instant::now());
        }
        self.firewall_of(listener)
    }

    /// The firewall's answer for `listener` from the rulesets last read
    /// (`unknown` for a namespace not read); `None` for one not evaluated.
    pub fn firewall_of(&mut self, listener: &Listener) -> Option<Firewall> {
        if !evaluated(listener) {
            return None;
        }
        let query = Query::for_listener(
            listener.proto,
            listener.local_addr,
            listener.local_port,
            listener.dual_stack,
        );
        let known = &self.known;
        let answer = self
            .answers
            .entry((listener.netns, query))
            .or_insert_with(|| match known.get(&listener.netns) {
                Some(k) => k.rules.answer(query).to_firewall(),
                None => super::Answer::unknown("network namespace not read yet").to_firewall(),
            });
        Some(answer.clone())
    }

    /// `snapshot` with the firewall's answer on every listener (see [`Watch::firewall_of`]).
    pub fn annotate(&mut self, snapshot: Snapshot) -> Snapshot {
        let listeners = snapshot
            .into_listeners()
            .into_iter()
            .map(|mut l| {
                l.firewall = self.firewall_of(&l);
                l
            })
            .collect();
        Snapshot::new(listeners)
    }
}

/// Whether a listener's reachability is evaluated: bound beyond loopback.
fn evaluated(listener: &Listener) -> bool {
    listener.exposure != Exposure::Loopback
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(kind: u16, payload: &[u8]) -> Vec<u8> {
        let len = 16 + payload.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&0u16.to_ne_bytes());
        msg.extend_from_slice(&1u32.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(payload);
        msg
    }

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    #[test]
    fn the_generation_is_read_from_its_attribute_after_others() {
        let mut payload = vec![0, 0, 0, 0];
        payload.extend(attr(3, b"nft\0\0"));
        payload.extend(attr(NFTA_GEN_ID, &77u32.to_be_bytes()));
        let r = reply((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN, &payload);
        assert_eq!(parse_generation(&r), Ok(77));
    }

    #[test]
    fn a_refusal_and_garbage_are_errors_that_say_which() {
        let mut err = (-libc::EPERM).to_ne_bytes().to_vec();
        err.extend_from_slice(&generation_request(1));
        let refused = parse_generation(&reply(NLMSG_ERROR, &err)).unwrap_err();
        assert!(
            matches!(refused, GenerationError::Refused(ref m) if m.contains("not permitted")),
            "{refused}"
        );
        assert!(matches!(parse_generation(&[1, 2]), Err(GenerationError::Unreadable(_))));
        let no_attr = reply((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN, &[0, 0, 0, 0]);
        assert_eq!(
            parse_generation(&no_attr),
            Err(GenerationError::Unreadable("no generation attribute"))
        );
        let mut long = reply((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN, &[0, 0, 0, 0]);
        long.extend(attr(NFTA_GEN_ID, &[0, 0, 0, 1]));
        long[20] = 200; // an attribute length past the message
        assert!(matches!(parse_generation(&long), Err(GenerationError::Unreadable(_))));
    }

    fn known(generation: Option<u32>, legacy: Option<&str>, read_at: Instant) -> Known {
        Known {
            generation,
            read_at,
            rules: NamespaceRules {
                ruleset: Err("not read in this test".to_owned()),
                legacy: legacy.map(|tables| super::super::Legacy {
                    tables: tables.to_owned(),
                    ipv4: None,
                    ipv6: None,
                }),
            },
        }
    }

    fn probe(generation: Option<u32>, legacy: Option<&str>) -> Probe {
        Probe {
            generation,
            legacy_tables: legacy.map(str::to_owned),
        }
    }

    #[test]
    fn legacy_rules_are_read_again_every_minute_and_new_tables_at_once() {
        let now = Instant::now();
        let fresh = now;
        let old = now - REREAD_UNCHANGED;
        assert!(must_read(None, &probe(Some(1), None), now), "never read");
        // nftables alone, generation unchanged: not again, however old.
        assert!(!must_read(Some(&known(Some(1), None, old)), &probe(Some(1), None), now));
        assert!(
            must_read(Some(&known(Some(1), None, fresh)), &probe(Some(2), None), now),
            "moved"
        );
        // Legacy tables, generation unchanged: again once a minute.
        let legacy = Some("ip filter");
        assert!(!must_read(
            Some(&known(Some(1), legacy, fresh)),
            &probe(Some(1), legacy),
            now
        ));
        assert!(must_read(
            Some(&known(Some(1), legacy, old)),
            &probe(Some(1), legacy),
            now
        ));
        assert!(must_read(Some(&known(None, legacy, old)), &probe(None, legacy), now));
        // Legacy tables made (or removed) since the last read: at once.
        assert!(must_read(
            Some(&known(Some(1), None, fresh)),
            &probe(Some(1), legacy),
            now
        ));
        assert!(must_read(
            Some(&known(Some(1), legacy, fresh)),
            &probe(Some(1), None),
            now
        ));
        // No generation to go by: once a minute.
        assert!(!must_read(Some(&known(None, None, fresh)), &probe(None, None), now));
        assert!(must_read(Some(&known(None, None, old)), &probe(None, None), now));
    }

    #[test]
    fn the_request_is_a_getgen_of_twenty_bytes() {
        let r = generation_request(9);
        assert_eq!(u32::from_ne_bytes([r[0], r[1], r[2], r[3]]), 20);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), (10 << 8) | 16);
        assert_eq!(u32::from_ne_bytes([r[8], r[9], r[10], r[11]]), 9);
    }

    /// As root (CI runs as root): the kernel answers a namespace's
    /// generation, and a change committed there moves it (in a namespace of
    /// the test's own, so the host's ruleset is never touched).
    #[test]
    fn a_committed_ruleset_change_moves_the_generation_of_its_namespace() {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test needs root (ip netns add, CAP_NET_ADMIN for nftables): run it as root"
        );
        let name = format!("pwgen{}", std::process::id());
        let run = |cmd: &str, args: &[&str]| {
            let status = std::process::Command::new(cmd).args(args).status().expect("runs");
            assert!(status.success(), "{cmd} {args:?}");
        };
        run("ip", &["netns", "add", &name]);
        struct Gone(String);
        impl Drop for Gone {
            fn drop(&mut self) {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "delete", &self.0])
                    .status();
            }
        }
        let _gone = Gone(name.clone());
        let in_it = || {
            let path = format!("/run/netns/{name}");
            std::thread::scope(|s| {
                s.spawn(|| {
                    let ns = std::fs::File::open(&path).expect("the namespace's mount");
                    rustix::thread::move_into_link_name_space(
                        std::os::fd::AsFd::as_fd(&ns),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .expect("setns");
                    generation_here()
                })
                .join()
                .expect("the namespace thread")
            })
        };
        let before = in_it().expect("the generation of the namespace");
        run("ip", &["netns", "exec", &name, "nft", "add", "table", "inet", "t"]);
        let after = in_it().expect("the generation after a change");
        assert_ne!(before, after, "a committed change moves the generation");
    }
}
