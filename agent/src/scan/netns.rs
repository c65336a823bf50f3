//! Network namespaces: finding every one on the host and reading the
//! sockets of each.
//!
//! Namespaces are found through `/proc/<pid>/ns/net` (every namespace a
//! process lives in: containers included) and `/run/netns/*` (those made by
//! `ip netns add`, which may hold no process), deduplicated by inode.
//!
//! sock_diag answers for the caller's own namespace only, so the agent's
//! namespace is dumped on the calling thread and every other one on a
//! dedicated OS thread that enters each in turn with `setns(2)` and then
//! exits: no thread that might run anything else (a tokio worker, say) ever
//! changes namespace. Entering needs `CAP_SYS_ADMIN`; without it the
//! namespace is read through `/proc/<pid>/net` of a process inside it,
//! and a namespace with no readable process is reported as skipped.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use portwatch_common::{Family, Proto};
use rustix::fs::{readlinkat_raw, statat, AtFlags};
use rustix::io::Errno;
use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};

use super::{diag::Diag, owners, parse, procnet, RawSocket, SkippedNamespace, SocketQuery};

/// Where `ip netns add` keeps its namespaces.
const NAMED_NETNS_DIR: &str = "/run/netns";

/// How many pids of a namespace are kept as ways into it (one may exit
/// between discovery and use).
const ENTRY_PIDS: usize = 3;

/// A network namespace and the ways into it.
#[derive(Debug, Clone)]
pub struct Namespace {
    /// The namespace's inode (the number in `net:[...]`).
    pub inode: u64,
    /// Whether it is the scanner's own namespace.
    pub own: bool,
    /// A few processes living in it.
    pub pids: Vec<u32>,
    /// A bind mount of it (`/run/netns/NAME`), when there is one.
    pub mount: Option<PathBuf>,
}

/// Finds every network namespace, remembering which namespace each process
/// is in between scans.
///
/// A process changes namespace only by calling `setns(2)` or `unshare(2)`
/// itself, which in practice happens between `fork` and `exec` (`ip netns
/// exec`, `unshare -n`, container runtimes): microseconds after the pid
/// appears. So a pid's namespace is read when the pid is first seen, and
/// every pid is read again on a full pass every `full_every`, which bounds
/// how late such a change is noticed. Named namespaces (`/run/netns`) are
/// listed on every scan.
#[derive(Debug)]
pub struct Discovery {
    /// pid -> its namespace inode (`None`: not readable).
    by_pid: HashMap<u32, Option<u64>>,
    last_full: Option<Instant>,
    full_every: Duration,
}

impl Discovery {
    /// A discovery that re-reads every pid's namespace every `full_every`.
    pub fn new(full_every: Duration) -> Discovery {
        Discovery {
            by_pid: HashMap::default(),
            last_full: None,
            full_every,
        }
    }

    /// Every network namespace on the host, the scanner's own first.
    pub fn discover(&mut self, proc_dir: &OwnedFd) -> io::Result<Vec<Namespace>> {
        let own = own_inode(proc_dir)?;
        let mut found: Vec<Namespace> = vec![Namespace {
            inode: own,
            own: true,
            pids: Vec::new(),
            mount: None,
        }];
        let mut index: HashMap<u64, usize> = HashMap::from_iter([(own, 0)]);
        let full = self.last_full.is_none_or(|t| t.elapsed() >= self.full_every);
        if full {
            self.by_pid.clear();
            self.last_full = Some(Instant::now());
        }
        let pids = owners::pids(proc_dir)?;
        let live: HashSet<u32> = pids.iter().copied().collect();
        self.by_pid.retain(|pid, _| live.contains(pid));
        let mut buf = [MaybeUninit::<u8>::uninit(); 64];
        let mut path = [0u8; 48];
        for pid in pids {
            // Unreadable (another user's process, no privilege) or gone: the
            // namespace, if it holds sockets, is then found through another
            // way or reported by the fd walk's unreadable count.
            let inode = *self.by_pid.entry(pid).or_insert_with(|| {
                readlinkat_raw(proc_dir, owners::pid_path(&mut path, pid, "ns/net"), &mut buf)
                    .ok()
                    .and_then(|(link, _)| parse::netns_inode(link))
            });
            let Some(inode) = inode else { continue };
            let i = *index.entry(inode).or_insert_with(|| {
                found.push(Namespace {
                    inode,
                    own: false,
                    pids: Vec::new(),
                    mount: None,
                });
                found.len() - 1
            });
            if found[i].pids.len() < ENTRY_PIDS {
                found[i].pids.push(pid);
            }
        }
        if let Ok(dir) = std::fs::read_dir(NAMED_NETNS_DIR) {
            for entry in dir.flatten() {
                let mount = entry.path();
                let Ok(stat) = rustix::fs::stat(&mount) else { continue };
                let i = *index.entry(stat.st_ino).or_insert_with(|| {
                    found.push(Namespace {
                        inode: stat.st_ino,
                        own: false,
                        pids: Vec::new(),
                        mount: None,
                    });
                    found.len() - 1
                });
                found[i].mount.get_or_insert(mount);
            }
        }
        Ok(found)
    }
}

fn own_inode(proc_dir: &OwnedFd) -> io::Result<u64> {
    Ok(statat(proc_dir, "thread-self/ns/net", AtFlags::empty())?.st_ino)
}

/// Appends the sockets of every namespace to `sockets`; returns the
/// namespaces that could not be read. `own_diag` is the sock_diag socket of
/// the calling thread's namespace, opened on first use and kept by the caller.
pub fn sockets(
    namespaces: &[Namespace],
    query: SocketQuery,
    own_diag: &mut Option<Diag>,
    sockets: &mut Vec<RawSocket>,
) -> io::Result<Vec<SkippedNamespace>> {
    let mut skipped = Vec::new();
    let (own, others): (Vec<&Namespace>, Vec<&Namespace>) = namespaces.iter().partition(|ns| ns.own);
    for ns in own {
        // The agent's own namespace must be readable: failing it is a failed scan.
        if own_diag.is_none() && !query.proc_net {
            *own_diag = open_diag()?;
        }
        let diag = if query.proc_net { None } else { own_diag.as_mut() };
        dump_here(ns.inode, query, diag, sockets)?;
    }
    if others.is_empty() {
        return Ok(skipped);
    }
    // One thread visits every other namespace, then exits with its changed namespace.
    let visited = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let mut sockets = Vec::new();
                let mut skipped = Vec::new();
                for ns in &others {
                    if let Err(reason) = visit(ns, query, &mut sockets) {
                        skipped.push(SkippedNamespace {
                            inode: ns.inode,
                            reason,
                        });
                    }
                }
                (sockets, skipped)
            })
            .join()
    });
    match visited {
        Ok((mut s, mut k)) => {
            sockets.append(&mut s);
            skipped.append(&mut k);
        }
        Err(_) => return Err(io::Error::other("namespace thread panicked")),
    }
    Ok(skipped)
}

/// Runs `f` in each of `namespaces`, given the namespace's inode, and says what it returned, or why the
/// namespace could not be entered: the agent's own on the calling thread,
/// every other one on a dedicated OS thread that enters each in turn (as
/// [`sockets`] does) and then exits. Needs `CAP_SYS_ADMIN` for other
/// namespaces; there is no `/proc/<pid>/net` fallback for what `f` does.
pub fn in_each<T: Send>(namespaces: &[Namespace], f: impl Fn(u64) -> T + Sync) -> Vec<(u64, Result<T, String>)> {
    let (own, others): (Vec<&Namespace>, Vec<&Namespace>) = namespaces.iter().partition(|ns| ns.own);
    let mut out: Vec<(u64, Result<T, String>)> = own.iter().map(|ns| (ns.inode, Ok(f(ns.inode)))).collect();
    if others.is_empty() {
        return out;
    }
    let visited = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                others
                    .iter()
                    .map(|ns| (ns.inode, enter(ns).map(|()| f(ns.inode))))
                    .collect::<Vec<_>>()
            })
            .join()
    });
    match visited {
        Ok(mut v) => out.append(&mut v),
        Err(_) => out.extend(
            others
                .iter()
                .map(|ns| (ns.inode, Err("namespace thread panicked".to_owned()))),
        ),
    }
    out
}

/// Moves the calling thread into `ns`, through its mount or a member's link,
/// and checks that it is there: a member may have exited and its pid been
/// taken by a process of another namespace.
fn enter(ns: &Namespace) -> Result<(), String> {
    let mut last_error = None;
    let mounts = ns.mount.iter().cloned();
    let pid_links = ns.pids.iter().map(|pid| PathBuf::from(format!("/proc/{pid}/ns/net")));
    for link in mounts.chain(pid_links) {
        let entered = File::open(&link).and_then(|file| {
            if rustix::fs::fstat(&file)?.st_ino != ns.inode {
                return Err(io::Error::other(format!("{} leads elsewhere now", link.display())));
            }
            move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network)).map_err(io::Error::from)
        });
        match entered {
            Ok(()) => return Ok(()),
            Err(e) => last_error = Some(e),
        }
    }
    Err(match last_error {
        Some(e) => format!("cannot enter the network namespace: {e}"),
        None => "no process or mount leads into the network namespace".to_owned(),
    })
}

/// Reads one foreign namespace: enter it, else read a member's `/proc/<pid>/net`.
/// Runs on the dedicated namespace thread.
fn visit(ns: &Namespace, query: SocketQuery, out: &mut Vec<RawSocket>) -> Result<(), String> {
    let mut last_error = None;
    let mounts = ns.mount.iter().cloned();
    let pid_links = ns.pids.iter().map(|pid| PathBuf::from(format!("/proc/{pid}/ns/net")));
    for link in mounts.chain(pid_links) {
        let entered = File::open(&link).and_then(|file| {
            move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network)).map_err(io::Error::from)
        });
        match entered {
            Ok(()) => {
                let before = out.len();
                let mut diag = if query.proc_net {
                    None
                } else {
                    open_diag().map_err(|e| format!("cannot open sock_diag in it: {e}"))?
                };
                return dump_here(ns.inode, query, diag.as_mut(), out).map_err(|e| {
                    out.truncate(before);
                    format!("cannot read its sockets: {e}")
                });
            }
            Err(e)
                if e.kind() == io::ErrorKind::PermissionDenied
                    || e.raw_os_error() == Some(Errno::PERM.raw_os_error()) =>
            {
                last_error = Some(e);
                break;
            }
            // The process exited or the mount went away: try the next way in.
            Err(e) => last_error = Some(e),
        }
    }
    // Not allowed to enter (no CAP_SYS_ADMIN): read a member's /proc/<pid>/net.
    for pid in &ns.pids {
        let before = out.len();
        match read_proc_net(
            &PathBuf::from(format!("/proc/{pid}/net")),
            ns.inode,
            query.listening_only,
            false,
            out,
        ) {
            Ok(()) => return Ok(()),
            Err(e) => {
                out.truncate(before);
                last_error = Some(e);
            }
        }
    }
    Err(match last_error {
        Some(e)
            if e.kind() == io::ErrorKind::PermissionDenied || e.raw_os_error() == Some(Errno::PERM.raw_os_error()) =>
        {
            "not permitted to enter it or to read its processes' /proc/<pid>/net".to_owned()
        }
        Some(e) => format!("no way into it: {e}"),
        None => "no process or mount leads into it".to_owned(),
    })
}

/// A sock_diag socket in the calling thread's namespace; `None` where the
/// kernel has no sock_diag (then `/proc/net` is read).
fn open_diag() -> io::Result<Option<Diag>> {
    match Diag::open() {
        Ok(diag) => Ok(Some(diag)),
        Err(e) if is_unsupported(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Dumps the calling thread's namespace with `diag` (sock_diag), falling
/// back to `/proc/thread-self/net` per table when there is none or the
/// kernel lacks a protocol's diag module.
fn dump_here(netns: u64, query: SocketQuery, mut diag: Option<&mut Diag>, out: &mut Vec<RawSocket>) -> io::Result<()> {
    let listening_only = query.listening_only;
    let net_dir = Path::new("/proc/thread-self/net");
    let mut v6only_default = None;
    for (proto, family) in TABLES {
        if let Some(d) = diag.as_mut() {
            let before = out.len();
            match d.dump(proto, family, listening_only, netns, out) {
                Ok(()) => continue,
                Err(e) if is_unsupported(&e) => out.truncate(before),
                Err(e) => return Err(e),
            }
        }
        let bindv6only = *v6only_default.get_or_insert_with(procnet::bindv6only);
        procnet::read(net_dir, proto, family, listening_only, bindv6only, netns, out)?;
    }
    Ok(())
}

fn read_proc_net(
    net_dir: &Path,
    netns: u64,
    listening_only: bool,
    bindv6only: bool,
    out: &mut Vec<RawSocket>,
) -> io::Result<()> {
    for (proto, family) in TABLES {
        procnet::read(net_dir, proto, family, listening_only, bindv6only, netns, out)?;
    }
    Ok(())
}

const TABLES: [(Proto, Family); 4] = [
    (Proto::Tcp, Family::Ipv4),
    (Proto::Tcp, Family::Ipv6),
    (Proto::Udp, Family::Ipv4),
    (Proto::Udp, Family::Ipv6),
];

/// Errors by which a kernel says it has no sock_diag (or no diag module for a
/// protocol): the `/proc/net` fallback applies.
fn is_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw_os_error),
        Some(Errno::NOENT | Errno::PROTONOSUPPORT | Errno::OPNOTSUPP | Errno::AFNOSUPPORT)
    )
}
