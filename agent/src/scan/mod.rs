//! The scanner: every listening socket in every network namespace, with
//! every process holding it.
//!
//! [`Scanner`] is the one entry point. A one-shot scan (`portwatch-agent
//! scan`) makes one and calls [`Scanner::scan`] once; the daemon keeps one
//! and calls it every few seconds, and then the scanner's inode -> owners
//! cache makes a scan with no new listening socket cost about one netlink
//! dump per namespace plus a liveness check of the known owners:
//!
//! - a socket inode not seen before triggers a walk of every fd table;
//! - known owners are checked for liveness (pid alive with the same start
//!   time); a socket whose every known owner is gone triggers a walk (the
//!   socket is held by someone, maybe a child forked after the last walk);
//! - a full walk also runs every [`ScanOptions::rewalk_every`], to catch
//!   owners added by fork to sockets that kept their old owners too.
//!
//! The operating system sits behind the [`Os`] trait: [`Linux`] is the real
//! one, tests substitute their own to drive the cache through its cases.

mod diag;
mod liveness;
mod netns;
mod owners;
mod parse;
mod procnet;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::io;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use portwatch_common::socket::is_dual_stack;
use portwatch_common::{Exposure, Family, Process, Proto, Socket, State};

pub use netns::Namespace;
pub use owners::ProcessFacts;

/// Default period of the full fd re-walk of a repeated scan.
pub const DEFAULT_REWALK_EVERY: Duration = Duration::from_secs(60);

/// What to scan and how.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Report sockets in every state (established, time-wait, connected
    /// UDP...), not only TCP listeners and unconnected UDP.
    pub all_states: bool,
    /// Read `/proc/<pid>/net/*` instead of asking the kernel through
    /// sock_diag (which is used when available). Slower; for cross-checking
    /// and for kernels whose sock_diag misbehaves.
    pub proc_net: bool,
    /// How often a repeated scan walks every fd table even when no new
    /// socket appeared, to find owners added by fork, and re-reads every
    /// process's network namespace, to find a process that changed
    /// namespace after it was first seen.
    pub rewalk_every: Duration,
    /// Threads for the fd walk; 0 means one per available core.
    pub walk_threads: usize,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            all_states: false,
            proc_net: false,
            rewalk_every: DEFAULT_REWALK_EVERY,
            walk_threads: 0,
        }
    }
}

/// A socket as the kernel reports it, before its owners are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSocket {
    /// Transport protocol.
    pub proto: Proto,
    /// Address family.
    pub family: Family,
    /// Local address.
    pub local_addr: IpAddr,
    /// Local port.
    pub local_port: u16,
    /// Remote end, for connected sockets only.
    pub peer: Option<(IpAddr, u16)>,
    /// State.
    pub state: State,
    /// Socket inode; 0 when it has none (TIME-WAIT).
    pub inode: u64,
    /// Uid that created the socket.
    pub uid: u32,
    /// `IPV6_V6ONLY` is set.
    pub v6only: bool,
    /// Network namespace inode.
    pub netns: u64,
}

/// An established TCP connection as the kernel reports it: what inbound
/// peers are counted from (see [`established_here`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    /// Local address (IPv4-mapped on an IPv6 socket that speaks IPv4).
    pub local_addr: IpAddr,
    /// Local port.
    pub local_port: u16,
    /// Remote address.
    pub remote_addr: IpAddr,
    /// Remote port.
    pub remote_port: u16,
}

/// Gives every established TCP connection (IPv4 and IPv6) of the calling
/// thread's network namespace to `each`, as the kernel's replies are read:
/// one sock_diag dump of both families (or one per family, on a kernel
/// without the request for both) with the kernel-side state filter
/// ESTABLISHED, no owners looked for, nothing kept. Run it in another
/// namespace through [`Linux::in_namespaces`]. Fails where the kernel has
/// no sock_diag for TCP (there is no `/proc/net` fallback for this).
///
/// The kernel is asked for connections on `local_ports` only where it can
/// filter them; `each` may still be given connections on other ports.
pub fn established_here(local_ports: &[u16], each: &mut dyn FnMut(Connection)) -> io::Result<()> {
    diag::Diag::open()?.established(local_ports, each)
}

/// Which sockets to ask the OS for, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketQuery {
    /// Only TCP listeners and unconnected UDP sockets.
    pub listening_only: bool,
    /// Read `/proc/<pid>/net` rather than sock_diag.
    pub proc_net: bool,
}

/// A network namespace whose sockets could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedNamespace {
    /// Its inode.
    pub inode: u64,
    /// Why, in words for the operator.
    pub reason: String,
}

/// The result of one fd walk.
pub use owners::FdWalk;

/// The operating system as the scanner sees it: the seam tests substitute.
pub trait Os {
    /// Appends every socket of interest in every network namespace to `out`
    /// (empty on entry); returns the namespaces that could not be read.
    fn sockets(&mut self, query: SocketQuery, out: &mut Vec<RawSocket>) -> Result<Vec<SkippedNamespace>, ScanError>;
    /// The processes holding each of the `wanted` socket inodes.
    fn owners(&mut self, wanted: &HashSet<u64>) -> Result<FdWalk, ScanError>;
    /// What is reported of a process; `None` once it has exited.
    fn process(&mut self, pid: u32) -> Option<ProcessFacts>;
    /// Of the `known` (pid, start time) pairs, the pids whose process has
    /// exited or whose pid now names another process.
    fn exited(&mut self, known: &[(u32, u64)]) -> Vec<u32>;
    /// The name of a user, when the system knows one.
    fn user_name(&mut self, uid: u32) -> Option<String>;
}

/// Why a scan failed. A failure is only ever about the host as a whole
/// (`/proc` or the agent's own namespace unreadable); a single process or a
/// foreign namespace that cannot be read degrades the result instead, and
/// the [`Scan`] says so.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// `/proc` could not be opened or listed.
    #[error("cannot read /proc ({0}); is procfs mounted at /proc?")]
    Proc(#[source] io::Error),
    /// The agent's own network namespace could not be dumped.
    #[error("cannot list the sockets of this network namespace: {0}")]
    Sockets(#[source] io::Error),
    /// The fd walk could not run.
    #[error("cannot walk process file descriptors: {0}")]
    Walk(#[source] io::Error),
}

/// The result of one scan.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Every socket found, in no particular order.
    pub sockets: Vec<Socket>,
    /// Sockets with no owner found while some fd tables were unreadable: the
    /// owner may be one of those processes. (When every fd table was read, a
    /// socket without owner belongs to the kernel, and is not counted.)
    pub unattributed: usize,
    /// Processes whose fd table could not be read at the last walk.
    pub unreadable_processes: usize,
    /// Namespaces whose sockets could not be read.
    pub skipped_namespaces: Vec<SkippedNamespace>,
    /// Whether this scan walked the fd tables (false: owners came from the cache).
    pub walked: bool,
}

impl Scan {
    /// Keeps only the sockets `keep` accepts; the unattributed count then
    /// speaks of those alone.
    pub fn retain(&mut self, keep: impl Fn(&Socket) -> bool) {
        self.sockets.retain(keep);
        self.unattributed = if self.unreadable_processes > 0 {
            self.sockets
                .iter()
                .filter(|s| s.processes.is_empty() && s.inode != 0)
                .count()
        } else {
            0
        };
    }

    /// The one line an operator needs when the result is partial, saying
    /// what is missing and which privilege would fix it; `None` when complete.
    pub fn partial_warning(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.unattributed > 0 {
            parts.push(format!(
                "{} of {} {} could not be attributed to a process ({} {} file descriptors were unreadable)",
                self.unattributed,
                self.sockets.len(),
                plural(self.sockets.len(), "socket", "sockets"),
                self.unreadable_processes,
                plural(self.unreadable_processes, "process's", "processes'"),
            ));
        }
        if !self.skipped_namespaces.is_empty() {
            let list: Vec<String> = self
                .skipped_namespaces
                .iter()
                .map(|s| format!("{} ({})", s.inode, s.reason))
                .collect();
            parts.push(format!(
                "{} {} not scanned: {}",
                self.skipped_namespaces.len(),
                plural(
                    self.skipped_namespaces.len(),
                    "network namespace was",
                    "network namespaces were"
                ),
                list.join(", ")
            ));
        }
        if parts.is_empty() {
            return None;
        }
        Some(format!(
            "{}; run as root, or grant CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (owners) and CAP_SYS_ADMIN (other namespaces)",
            parts.join("; ")
        ))
    }
}

fn plural(n: usize, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// The real operating system: Linux, through `/proc` and netlink.
pub struct Linux {
    proc_dir: OwnedFd,
    walk_threads: usize,
    /// The sock_diag socket of the scanner's own namespace, kept between
    /// scans (`None` until first used, or where the kernel has none).
    own_diag: Option<diag::Diag>,
    liveness: liveness::Liveness,
    discovery: netns::Discovery,
    /// The namespaces the last socket dump found.
    namespaces: Vec<Namespace>,
}

impl Linux {
    /// Opens `/proc`, with the walk threads and the full re-read period of
    /// `options`.
    pub fn new(options: &ScanOptions) -> Result<Linux, ScanError> {
        liveness::raise_fd_limit();
        let walk_threads = match options.walk_threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        Ok(Linux {
            proc_dir: owners::open_proc().map_err(ScanError::Proc)?,
            walk_threads,
            own_diag: None,
            liveness: liveness::Liveness::default(),
            discovery: netns::Discovery::new(options.rewalk_every),
            namespaces: Vec::new(),
        })
    }

    /// Makes namespace `inode` enterable through process `pid` when the last
    /// scan did not find it (a namespace made since, where a kernel event
    /// says `pid` just opened a listener). Entering it checks the inode, so
    /// a `pid` elsewhere by then leads nowhere, not into another namespace.
    pub fn note_namespace(&mut self, inode: u64, pid: u32) {
        if !self.namespaces.iter().any(|ns| ns.inode == inode) {
            self.namespaces.push(Namespace {
                inode,
                own: false,
                pids: vec![pid],
                mount: None,
            });
        }
    }

    /// Runs `f` in each network namespace of `wanted` that the last scan
    /// found (see [`netns::in_each`]), with the namespace's inode; a
    /// namespace it could not enter comes back with the reason.
    pub fn in_namespaces<T: Send>(
        &self,
        wanted: &HashSet<u64>,
        f: impl Fn(u64) -> T + Sync,
    ) -> Vec<(u64, Result<T, String>)> {
        let chosen: Vec<Namespace> = self
            .namespaces
            .iter()
            .filter(|ns| wanted.contains(&ns.inode))
            .cloned()
            .collect();
        netns::in_each(&chosen, f)
    }
}

impl Os for Linux {
    fn sockets(&mut self, query: SocketQuery, out: &mut Vec<RawSocket>) -> Result<Vec<SkippedNamespace>, ScanError> {
        let namespaces = self.discovery.discover(&self.proc_dir).map_err(ScanError::Proc)?;
        let skipped = netns::sockets(&namespaces, query, &mut self.own_diag, out).map_err(ScanError::Sockets);
        self.namespaces = namespaces;
        skipped
    }

    fn owners(&mut self, wanted: &HashSet<u64>) -> Result<FdWalk, ScanError> {
        owners::walk(&self.proc_dir, wanted, self.walk_threads).map_err(ScanError::Walk)
    }

    fn process(&mut self, pid: u32) -> Option<ProcessFacts> {
        owners::process_facts(pid)
    }

    fn exited(&mut self, known: &[(u32, u64)]) -> Vec<u32> {
        self.liveness.exited(&self.proc_dir, known)
    }

    fn user_name(&mut self, uid: u32) -> Option<String> {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name)
    }
}

/// Scans sockets and their owners, once or repeatedly (see the module docs).
pub struct Scanner<O: Os = Linux> {
    os: O,
    options: ScanOptions,
    /// Socket inode -> pids, for every inode looked for (empty: none found).
    owners: HashMap<u64, Vec<u32>>,
    /// Every owning process and its start time, by pid.
    processes: HashMap<u32, (Arc<Process>, u64)>,
    /// User names by uid (`None`: the system knows none).
    users: HashMap<u32, Option<Arc<str>>>,
    /// The sockets of the last dump, kept to reuse the allocation.
    raw: Vec<RawSocket>,
    last_walk: Option<Instant>,
    unreadable: usize,
}

impl Scanner<Linux> {
    /// A scanner of this host.
    pub fn new(options: ScanOptions) -> Result<Scanner<Linux>, ScanError> {
        let os = Linux::new(&options)?;
        Ok(Scanner::with_os(os, options))
    }
}

impl<O: Os> Scanner<O> {
    /// A scanner over any [`Os`].
    pub fn with_os(os: O, options: ScanOptions) -> Scanner<O> {
        Scanner {
            os,
            options,
            owners: HashMap::default(),
            processes: HashMap::default(),
            users: HashMap::default(),
            raw: Vec::new(),
            last_walk: None,
            unreadable: 0,
        }
    }

    /// The OS behind this scanner.
    pub fn os_mut(&mut self) -> &mut O {
        &mut self.os
    }

    /// The OS behind this scanner.
    pub fn os(&self) -> &O {
        &self.os
    }

    /// Scans once.
    pub fn scan(&mut self) -> Result<Scan, ScanError> {
        let mut raw = std::mem::take(&mut self.raw);
        raw.clear();
        let query = SocketQuery {
            listening_only: !self.options.all_states,
            proc_net: self.options.proc_net,
        };
        let skipped = self.os.sockets(query, &mut raw)?;
        let mut wanted: HashSet<u64> = HashSet::with_capacity_and_hasher(raw.len(), Default::default());
        wanted.extend(raw.iter().map(|s| s.inode).filter(|&i| i != 0));
        self.owners.retain(|inode, _| wanted.contains(inode));
        let lost_owner = self.forget_dead_owners();
        let new_inode = wanted.iter().any(|inode| !self.owners.contains_key(inode));
        let due = self.last_walk.is_none_or(|t| t.elapsed() >= self.options.rewalk_every);
        let walked = new_inode || lost_owner || due;
        if walked {
            self.walk(&wanted, due)?;
        }

        let mut sockets = Vec::with_capacity(raw.len());
        let mut unattributed = 0;
        for raw in &raw {
            let processes: Vec<Arc<Process>> = self
                .owners
                .get(&raw.inode)
                .into_iter()
                .flatten()
                .filter_map(|pid| self.processes.get(pid))
                .map(|(process, _)| Arc::clone(process))
                .collect();
            if processes.is_empty() && raw.inode != 0 && self.unreadable > 0 {
                unattributed += 1;
            }
            let user = self.user(raw.uid);
            sockets.push(Socket {
                proto: raw.proto,
                family: raw.family,
                local_addr: raw.local_addr,
                local_port: raw.local_port,
                peer_addr: raw.peer.map(|p| p.0),
                peer_port: raw.peer.map(|p| p.1),
                state: raw.state,
                inode: raw.inode,
                uid: raw.uid,
                user,
                netns: raw.netns,
                exposure: Exposure::of(raw.local_addr),
                dual_stack: is_dual_stack(raw.local_addr, raw.v6only),
                processes,
            });
        }
        self.raw = raw;
        Ok(Scan {
            sockets,
            unattributed,
            unreadable_processes: self.unreadable,
            skipped_namespaces: skipped,
            walked,
        })
    }

    /// Drops cached owners that exited (or whose pid now names another
    /// process). Returns whether a socket lost its last known owner.
    fn forget_dead_owners(&mut self) -> bool {
        let known: Vec<(u32, u64)> = self.processes.iter().map(|(&pid, (_, start))| (pid, *start)).collect();
        let dead: HashSet<u32> = self.os.exited(&known).into_iter().collect();
        if dead.is_empty() {
            return false;
        }
        self.processes.retain(|pid, _| !dead.contains(pid));
        let mut orphaned = false;
        for pids in self.owners.values_mut() {
            let had = !pids.is_empty();
            pids.retain(|pid| !dead.contains(pid));
            orphaned |= had && pids.is_empty();
        }
        orphaned
    }

    /// Walks every fd table and rebuilds the owner cache. Process facts
    /// already known are kept unless `refresh` (a process may have exec'd).
    fn walk(&mut self, wanted: &HashSet<u64>, refresh: bool) -> Result<(), ScanError> {
        let walk = self.os.owners(wanted)?;
        self.unreadable = walk.unreadable;
        self.last_walk = Some(Instant::now());
        self.owners = walk.owners;
        for &inode in wanted {
            self.owners.entry(inode).or_default();
        }
        let pids: HashSet<u32> = self.owners.values().flatten().copied().collect();
        if refresh {
            self.processes.clear();
        }
        self.processes.retain(|pid, _| pids.contains(pid));
        for &pid in &pids {
            if self.processes.contains_key(&pid) {
                continue;
            }
            match self.os.process(pid) {
                Some(mut facts) => {
                    facts.process.user = facts.process.uid.and_then(|uid| self.user(uid));
                    self.processes.insert(pid, (Arc::new(facts.process), facts.start_time));
                }
                // Exited since the walk saw it: it no longer holds anything.
                None => {
                    for pids in self.owners.values_mut() {
                        pids.retain(|&p| p != pid);
                    }
                }
            }
        }
        Ok(())
    }

    /// What is reported of process `pid` (from the cache of owners, else
    /// read now); `None` once it has exited. Kernel events name their task
    /// this way.
    pub fn process(&mut self, pid: u32) -> Option<Arc<Process>> {
        if let Some((process, _)) = self.processes.get(&pid) {
            return Some(Arc::clone(process));
        }
        let mut facts = self.os.process(pid)?;
        facts.process.user = facts.process.uid.and_then(|uid| self.user(uid));
        Some(Arc::new(facts.process))
    }

    /// The (network namespace, inode) of every listening socket now, from
    /// one socket dump without the fd walk: how a release that the kernel
    /// only hinted at is confirmed.
    pub fn listening_now(&mut self) -> Result<HashSet<(u64, u64)>, ScanError> {
        let mut raw = std::mem::take(&mut self.raw);
        raw.clear();
        let query = SocketQuery {
            listening_only: true,
            proc_net: self.options.proc_net,
        };
        self.os.sockets(query, &mut raw)?;
        let present = raw.iter().map(|s| (s.netns, s.inode)).collect();
        self.raw = raw;
        Ok(present)
    }

    /// The name of user `uid`, when the system knows one (cached).
    pub fn user(&mut self, uid: u32) -> Option<Arc<str>> {
        if let Some(name) = self.users.get(&uid) {
            return name.clone();
        }
        let name: Option<Arc<str>> = self.os.user_name(uid).map(Arc::from);
        self.users.insert(uid, name.clone());
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A scripted OS: sockets, who holds them, and which processes live.
    #[derive(Default)]
    struct FakeOs {
        sockets: Vec<RawSocket>,
        holders: HashMap<u64, Vec<u32>>,
        /// pid -> start time of the live processes.
        live: HashMap<u32, u64>,
        unreadable: usize,
        walks: Rc<Cell<usize>>,
    }

    impl FakeOs {
        fn listen(&mut self, port: u16, inode: u64, pids: &[u32]) {
            self.sockets.push(RawSocket {
                proto: Proto::Tcp,
                family: Family::Ipv4,
                local_addr: "0.0.0.0".parse().unwrap(),
                local_port: port,
                peer: None,
                state: State::Listen,
                inode,
                uid: 0,
                v6only: false,
                netns: 1,
            });
            self.holders.insert(inode, pids.to_vec());
            for &pid in pids {
                self.live.entry(pid).or_insert(100 + u64::from(pid));
            }
        }
    }

    impl Os for FakeOs {
        fn sockets(
            &mut self,
            _query: SocketQuery,
            out: &mut Vec<RawSocket>,
        ) -> Result<Vec<SkippedNamespace>, ScanError> {
            out.extend(self.sockets.iter().cloned());
            Ok(Vec::new())
        }
        fn owners(&mut self, wanted: &HashSet<u64>) -> Result<FdWalk, ScanError> {
            self.walks.set(self.walks.get() + 1);
            let owners = self
                .holders
                .iter()
                .filter(|(inode, _)| wanted.contains(inode))
                .map(|(&inode, pids)| {
                    (
                        inode,
                        pids.iter().copied().filter(|p| self.live.contains_key(p)).collect(),
                    )
                })
                .collect();
            Ok(FdWalk {
                owners,
                unreadable: self.unreadable,
            })
        }
        fn process(&mut self, pid: u32) -> Option<ProcessFacts> {
            let start_time = *self.live.get(&pid)?;
            Some(ProcessFacts {
                process: Process {
                    pid,
                    name: format!("p{pid}").into(),
                    cmdline: None,
                    exe: None,
                    uid: Some(0),
                    user: None,
                    container: None,
                    unit: None,
                },
                start_time,
            })
        }
        fn exited(&mut self, known: &[(u32, u64)]) -> Vec<u32> {
            known
                .iter()
                .filter(|(pid, start)| self.live.get(pid) != Some(start))
                .map(|(pid, _)| *pid)
                .collect()
        }
        fn user_name(&mut self, uid: u32) -> Option<String> {
            (uid == 0).then(|| "root".to_owned())
        }
    }

    fn scanner(os: FakeOs) -> (Scanner<FakeOs>, Rc<Cell<usize>>) {
        let walks = os.walks.clone();
        let options = ScanOptions {
            rewalk_every: Duration::from_secs(3600),
            ..ScanOptions::default()
        };
        (Scanner::with_os(os, options), walks)
    }

    fn pids(scan: &Scan, port: u16) -> Vec<u32> {
        let s = scan.sockets.iter().find(|s| s.local_port == port).unwrap();
        s.processes.iter().map(|p| p.pid).collect()
    }

    #[test]
    fn repeated_scan_without_change_does_not_walk_again() {
        let mut os = FakeOs::default();
        os.listen(80, 1000, &[10, 11]);
        let (mut scanner, walks) = scanner(os);
        let first = scanner.scan().unwrap();
        assert!(first.walked);
        assert_eq!(pids(&first, 80), vec![10, 11]);
        for _ in 0..3 {
            let again = scanner.scan().unwrap();
            assert!(!again.walked);
            assert_eq!(pids(&again, 80), vec![10, 11]);
        }
        assert_eq!(walks.get(), 1);
    }

    #[test]
    fn a_new_socket_inode_triggers_a_walk() {
        let mut os = FakeOs::default();
        os.listen(80, 1000, &[10]);
        let (mut scanner, walks) = scanner(os);
        scanner.scan().unwrap();
        scanner.os.listen(443, 1001, &[12]);
        let scan = scanner.scan().unwrap();
        assert!(scan.walked);
        assert_eq!(walks.get(), 2);
        assert_eq!(pids(&scan, 443), vec![12]);
        assert_eq!(pids(&scan, 80), vec![10]);
    }

    #[test]
    fn an_exited_owner_is_dropped_without_a_walk_while_others_remain() {
        let mut os = FakeOs::default();
        os.listen(80, 1000, &[10, 11]);
        let (mut scanner, walks) = scanner(os);
        scanner.scan().unwrap();
        scanner.os.live.remove(&11);
        let scan = scanner.scan().unwrap();
        assert_eq!(pids(&scan, 80), vec![10]);
        assert_eq!(walks.get(), 1);
    }

    #[test]
    fn a_recycled_pid_is_not_taken_for_the_old_owner() {
        let mut os = FakeOs::default();
        os.listen(80, 1000, &[10, 11]);
        let (mut scanner, _) = scanner(os);
        scanner.scan().unwrap();
        // pid 11 exits and the pid is reused by an unrelated process.
        scanner.os.live.insert(11, 999_999);
        scanner.os.holders.insert(1000, vec![10]);
        let scan = scanner.scan().unwrap();
        assert_eq!(pids(&scan, 80), vec![10]);
    }

    #[test]
    fn a_socket_losing_every_known_owner_is_walked_again_to_find_the_new_one() {
        let mut os = FakeOs::default();
        os.listen(80, 1000, &[10]);
        let (mut scanner, walks) = scanner(os);
        scanner.scan().unwrap();
        // 10 forked 20 (after the walk) and exited: the socket lives on in 20.
        scanner.os.live.remove(&10);
        scanner.os.live.insert(20, 5);
        scanner.os.holders.insert(1000, vec![20]);
        let scan = scanner.scan().unwrap();
        assert!(scan.walked);
        assert_eq!(walks.get(), 2);
        assert_eq!(pids(&scan, 80), vec![20]);
    }

    #[test]
    fn the_periodic_rewalk_finds_owners_added_by_fork() {
        let mut os = FakeOs::default();
        os.listen(80, 1000, &[10]);
        let walks = os.walks.clone();
        let mut scanner = Scanner::with_os(
            os,
            ScanOptions {
                rewalk_every: Duration::ZERO,
                ..ScanOptions::default()
            },
        );
        scanner.scan().unwrap();
        scanner.os.live.insert(21, 7);
        scanner.os.holders.insert(1000, vec![10, 21]);
        let scan = scanner.scan().unwrap();
        assert_eq!(walks.get(), 2);
        assert_eq!(pids(&scan, 80), vec![10, 21]);
    }

    #[test]
    fn closed_sockets_leave_the_cache() {
        let mut os = FakeOs::default();
        os.listen(80, 1000, &[10]);
        os.listen(81, 1001, &[11]);
        let (mut scanner, _) = scanner(os);
        scanner.scan().unwrap();
        scanner.os.sockets.retain(|s| s.inode != 1001);
        let scan = scanner.scan().unwrap();
        assert_eq!(scan.sockets.len(), 1);
        assert!(!scanner.owners.contains_key(&1001));
    }

    #[test]
    fn ownerless_sockets_count_as_unattributed_only_when_fd_tables_were_unreadable() {
        let mut os = FakeOs::default();
        os.listen(80, 1000, &[]);
        os.listen(81, 1001, &[11]);
        os.listen(82, 0, &[]); // TIME-WAIT-like: no inode, never attributable
        let (mut scanner, walks) = scanner(os);
        let complete = scanner.scan().unwrap();
        assert_eq!(complete.unattributed, 0);
        assert_eq!(complete.partial_warning(), None);

        scanner.os.unreadable = 3;
        scanner.last_walk = None;
        let partial = scanner.scan().unwrap();
        assert_eq!(partial.unattributed, 1);
        let warning = partial.partial_warning().unwrap();
        assert!(warning.contains("1 of 3 sockets could not be attributed"), "{warning}");
        assert!(warning.contains("CAP_SYS_PTRACE"), "{warning}");
        // An ownerless socket is looked for once, not on every scan.
        let before = walks.get();
        scanner.scan().unwrap();
        assert_eq!(walks.get(), before);
    }

    #[test]
    fn socket_and_process_users_are_named() {
        let mut os = FakeOs::default();
        os.listen(80, 1000, &[10]);
        let (mut scanner, _) = scanner(os);
        let scan = scanner.scan().unwrap();
        assert_eq!(scan.sockets[0].user.as_deref(), Some("root"));
        assert_eq!(scan.sockets[0].processes[0].user.as_deref(), Some("root"));
    }
}
