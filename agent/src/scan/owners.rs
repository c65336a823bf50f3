//! Which processes hold which sockets: the walk of every `/proc/<pid>/fd`.
//!
//! This is where `ss -p` spends 96-98 % of its time. The walk does the least
//! the kernel allows: per process one `openat` of its fd directory and
//! `getdents64` into a reused buffer, per fd one `readlinkat` relative to that
//! directory into a reused buffer (no allocation, no path building), and it
//! records only the socket inodes asked for, in one `HashMap`. Processes are
//! shared among threads through an atomic cursor, so a few large processes
//! do not leave a core idle.
//!
//! Failure policy: a process that exits during the walk is skipped (its
//! sockets went with it); a process whose fd table may not be read is counted
//! in [`FdWalk::unreadable`], so the caller can say the result is partial;
//! only a `/proc` that cannot be listed at all is an error.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use portwatch_common::Process;
use rustix::fs::{openat, readlinkat_raw, Mode, OFlags, RawDir};
use rustix::io::Errno;

use super::parse;

/// The result of one walk.
#[derive(Debug, Default)]
pub struct FdWalk {
    /// Socket inode -> pids holding it (each pid once, ascending).
    pub owners: HashMap<u64, Vec<u32>>,
    /// Processes whose fd table could not be read (no privilege).
    pub unreadable: usize,
}

/// Opens `/proc` as a directory, for the `*at` calls below.
pub fn open_proc() -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        "/proc",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Every pid listed in `/proc` (thread-group leaders), ascending.
pub fn pids(proc_dir: &OwnedFd) -> io::Result<Vec<u32>> {
    let dir = openat(
        proc_dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut buf = [MaybeUninit::<u8>::uninit(); 16 * 1024];
    let mut entries = RawDir::new(&dir, &mut buf);
    let mut pids = Vec::new();
    while let Some(entry) = entries.next() {
        if let Some(pid) = parse_pid(entry?.file_name().to_bytes()) {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    Ok(pids)
}

/// `<pid>/<rest>` in `buf`, a path relative to `/proc`, built without allocating.
pub fn pid_path<'a>(buf: &'a mut [u8; 48], pid: u32, rest: &str) -> &'a [u8] {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    // 10 digits, a slash and the longest `rest` used here fit in 48 bytes.
    let _ = write!(cursor, "{pid}/{rest}");
    let len = usize::try_from(cursor.position()).unwrap_or(0);
    &buf[..len]
}

fn parse_pid(name: &[u8]) -> Option<u32> {
    if name.is_empty() || !name.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(name).ok()?.parse().ok()
}

/// Walks every process's fd table on `threads` threads and returns the owners
/// of the `wanted` socket inodes.
pub fn walk(proc_dir: &OwnedFd, wanted: &HashSet<u64>, threads: usize) -> io::Result<FdWalk> {
    let pids = pids(proc_dir)?;
    if wanted.is_empty() {
        return Ok(FdWalk::default());
    }
    let cursor = AtomicUsize::new(0);
    let threads = threads.clamp(1, pids.len().max(1));
    let parts: Vec<FdWalk> = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads)
            .map(|_| scope.spawn(|| walk_share(proc_dir, &pids, &cursor, wanted)))
            .collect();
        let mut parts = vec![walk_share(proc_dir, &pids, &cursor, wanted)];
        for helper in helpers {
            // A helper only panics on a bug; its share is then missing, so fail loudly.
            parts.push(helper.join().map_err(|_| io::Error::other("fd walk thread panicked"))?);
        }
        Ok::<_, io::Error>(parts)
    })?;
    let mut total = FdWalk::default();
    for part in parts {
        total.unreadable += part.unreadable;
        for (inode, pids) in part.owners {
            total.owners.entry(inode).or_default().extend(pids);
        }
    }
    for pids in total.owners.values_mut() {
        pids.sort_unstable();
        pids.dedup();
    }
    Ok(total)
}

/// One thread's part of the walk: takes pids from the shared cursor until none is left.
fn walk_share(proc_dir: &OwnedFd, pids: &[u32], cursor: &AtomicUsize, wanted: &HashSet<u64>) -> FdWalk {
    let mut out = FdWalk::default();
    let mut dirent_buf = [MaybeUninit::<u8>::uninit(); 32 * 1024];
    let mut link_buf = [MaybeUninit::<u8>::uninit(); 64];
    let mut path = [0u8; 48];
    loop {
        let Some(&pid) = pids.get(cursor.fetch_add(1, Ordering::Relaxed)) else {
            return out;
        };
        let fd_dir = match openat(
            proc_dir,
            pid_path(&mut path, pid, "fd"),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ACCESS | Errno::PERM) => {
                out.unreadable += 1;
                continue;
            }
            // Gone since it was listed (ENOENT, ESRCH): nothing to attribute.
            Err(_) => continue,
        };
        let mut entries = RawDir::new(fd_dir.as_fd(), &mut dirent_buf);
        while let Some(entry) = entries.next() {
            let Ok(entry) = entry else { break };
            let name = entry.file_name();
            if name.to_bytes().first() == Some(&b'.') {
                continue;
            }
            // "socket:[" + 20 digits + "]" fits in 64 bytes; a longer link is not a socket.
            let Ok((link, _)) = readlinkat_raw(&fd_dir, name, &mut link_buf) else {
                continue;
            };
            if let Some(inode) = parse::socket_inode(link) {
                if wanted.contains(&inode) {
                    let holders = out.owners.entry(inode).or_default();
                    if holders.last() != Some(&pid) {
                        holders.push(pid);
                    }
                }
            }
        }
    }
}

/// A process as reported, with the start time that tells it apart from a
/// later process that reuses its pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessFacts {
    /// The reported process.
    pub process: Process,
    /// Start time in clock ticks after boot (`/proc/<pid>/stat` field 22).
    pub start_time: u64,
}

/// Reads what is reported of a process. `None` when it has exited. Each
/// field that cannot be read (no privilege) is left `None`, never guessed.
pub fn process_facts(pid: u32) -> Option<ProcessFacts> {
    let proc = procfs::process::Process::new(i32::try_from(pid).ok()?).ok()?;
    let stat = proc.stat().ok()?;
    let uid = proc.status().ok().map(|s| s.euid);
    let cmdline = proc
        .cmdline()
        .ok()
        .filter(|args| !args.is_empty())
        .map(|args| args.join(" "));
    let exe = proc.exe().ok().map(|p| p.to_string_lossy().into_owned());
    let cgroup = proc.cgroups().map(|g| parse::cgroup(&g.0)).unwrap_or_default();
    Some(ProcessFacts {
        process: Process {
            pid,
            name: stat.comm.into(),
            cmdline: cmdline.map(Arc::from),
            exe: exe.map(Arc::from),
            uid,
            user: None,
            container: cgroup.container.map(Arc::from),
            unit: cgroup.unit.map(Arc::from),
        },
        start_time: stat.starttime,
    })
}

/// The start time of a live process, `None` once it has exited.
///
/// A repeated scan asks this of every known owner, so it reads
/// `/proc/<pid>/stat` with one `openat` and one `read` into a stack buffer
/// and parses only the one field (`procfs` builds paths and parses all 52).
pub fn start_time(proc_dir: &OwnedFd, pid: u32) -> Option<u64> {
    let mut path = [0u8; 48];
    let file = openat(
        proc_dir,
        pid_path(&mut path, pid, "stat"),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    // 52 fields of at most 20 digits and a 15-byte comm: under 1.2 KiB.
    let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
    let (stat, _) = rustix::io::read(&file, &mut buf).ok()?;
    parse::stat_start_time(stat)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::os::fd::AsRawFd;

    fn inode_of(fd: &impl AsRawFd) -> u64 {
        let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        parse::socket_inode(link.as_os_str().as_encoded_bytes()).unwrap()
    }

    #[test]
    fn walk_finds_this_process_holding_its_own_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let inode = inode_of(&listener);
        let proc_dir = open_proc().unwrap();
        for threads in [1, 2, 5] {
            let walk = walk(&proc_dir, &HashSet::from_iter([inode]), threads).unwrap();
            assert_eq!(
                walk.owners.get(&inode),
                Some(&vec![std::process::id()]),
                "threads={threads}"
            );
        }
    }

    #[test]
    fn walk_records_only_the_inodes_asked_for() {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let b = TcpListener::bind("127.0.0.1:0").unwrap();
        let proc_dir = open_proc().unwrap();
        let walk = walk(&proc_dir, &HashSet::from_iter([inode_of(&a)]), 2).unwrap();
        assert!(walk.owners.contains_key(&inode_of(&a)));
        assert!(!walk.owners.contains_key(&inode_of(&b)));
        assert_eq!(walk.owners.len(), 1);
    }

    #[test]
    fn own_process_facts_are_complete_and_start_time_is_stable() {
        let me = std::process::id();
        let facts = process_facts(me).unwrap();
        assert_eq!(facts.process.pid, me);
        assert!(!facts.process.name.is_empty());
        assert!(facts.process.exe.is_some());
        assert!(facts.process.cmdline.is_some());
        assert_eq!(start_time(&open_proc().unwrap(), me), Some(facts.start_time));
        assert_eq!(start_time(&open_proc().unwrap(), u32::MAX), None);
    }

    #[test]
    fn pid_paths_are_relative_to_proc() {
        let mut buf = [0u8; 48];
        assert_eq!(pid_path(&mut buf, 4242, "ns/net"), b"4242/ns/net");
        assert_eq!(pid_path(&mut buf, u32::MAX, "stat"), b"4294967295/stat");
    }

    #[test]
    fn pid_names_parse_and_other_proc_entries_do_not() {
        assert_eq!(parse_pid(b"4242"), Some(4242));
        assert_eq!(parse_pid(b"self"), None);
        assert_eq!(parse_pid(b""), None);
        assert_eq!(parse_pid(b"99999999999"), None);
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_proc_entry_name_never_panics_and_a_pid_reads_back(
                name in prop::collection::vec(any::<u8>(), 0..24),
                pid in any::<u32>(),
            ) {
                let _ = parse_pid(&name);
                prop_assert_eq!(parse_pid(pid.to_string().as_bytes()), Some(pid));
                let mut buf = [0u8; 48];
                let expected = format!("{pid}/fd");
                prop_assert_eq!(pid_path(&mut buf, pid, "fd"), expected.as_bytes());
            }
        }
    }
}
