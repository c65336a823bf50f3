//! Has a known owner exited? Asked of every known owner on every repeated
//! scan, so it must cost far less than re-reading each `/proc/<pid>/stat`.
//!
//! Each watched process gets a pidfd (`pidfd_open(2)`, Linux 5.3+), which
//! names that very process, never a later one that reuses its pid; one
//! `poll(2)` over all of them then reports which exited. Right after opening
//! a pidfd, the process's start time is compared with the one recorded when
//! it was found, so a pid reused in between is not mistaken for the owner.
//! Where pidfds are not available (old kernel, descriptor limit reached),
//! that process is checked by its start time on every scan instead.

use std::os::fd::OwnedFd;

use rustc_hash::FxHashMap as HashMap;
use rustix::event::{poll, PollFd, PollFlags};
use rustix::process::{pidfd_open, Pid, PidfdFlags};

use super::owners;

/// At most this many pidfds are held; further processes are checked by start time.
const MAX_PIDFDS: usize = 8192;

/// The pidfds of the watched processes.
#[derive(Debug, Default)]
pub struct Liveness {
    pidfds: HashMap<u32, OwnedFd>,
}

impl Liveness {
    /// Of `known` (pid, start time) pairs, the pids whose process has exited
    /// (or whose pid now names another process). Stops watching pids not in `known`.
    pub fn exited(&mut self, proc_dir: &OwnedFd, known: &[(u32, u64)]) -> Vec<u32> {
        let mut gone = Vec::new();
        let wanted: HashMap<u32, u64> = known.iter().copied().collect();
        self.pidfds.retain(|pid, _| wanted.contains_key(pid));
        for &(pid, start_time) in known {
            if self.pidfds.contains_key(&pid) {
                continue;
            }
            let opened = match (
                self.pidfds.len() < MAX_PIDFDS,
                i32::try_from(pid).ok().and_then(Pid::from_raw),
            ) {
                (true, Some(p)) => pidfd_open(p, PidfdFlags::empty()).ok(),
                _ => None,
            };
            // Whether or not a pidfd could be had, the start time says whether it is still the same process.
            if owners::start_time(proc_dir, pid) != Some(start_time) {
                gone.push(pid);
            } else if let Some(fd) = opened {
                self.pidfds.insert(pid, fd);
            }
        }
        let watched: Vec<(u32, &OwnedFd)> = self.pidfds.iter().map(|(&pid, fd)| (pid, fd)).collect();
        let mut polls: Vec<PollFd<'_>> = watched.iter().map(|(_, fd)| PollFd::new(*fd, PollFlags::IN)).collect();
        let zero = rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 };
        let exited: Vec<u32> = match poll(&mut polls, Some(&zero)) {
            Ok(0) => Vec::new(),
            Ok(_) => watched
                .iter()
                .zip(&polls)
                .filter(|(_, p)| !p.revents().is_empty())
                .map(|((pid, _), _)| *pid)
                .collect(),
            // poll cannot fail on valid descriptors short of ENOMEM: then ask each by start time.
            Err(_) => watched
                .iter()
                .filter(|(pid, _)| wanted.get(pid).copied() != owners::start_time(proc_dir, *pid))
                .map(|(pid, _)| *pid)
                .collect(),
        };
        drop(polls);
        for pid in &exited {
            self.pidfds.remove(pid);
        }
        gone.extend(exited);
        gone
    }

    /// How many processes are watched through a pidfd.
    #[cfg(test)]
    pub fn watched(&self) -> usize {
        self.pidfds.len()
    }
}

/// Raises the soft limit on open files to the hard limit, so that pidfds and
/// the fd walk have room; a failure only means fewer pidfds.
pub fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            rustix::process::Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn an_exited_child_is_reported_and_a_live_one_is_not() {
        let proc_dir = owners::open_proc().unwrap();
        let mut live = Command::new("sleep").arg("30").spawn().unwrap();
        let mut dying = Command::new("sleep").arg("30").spawn().unwrap();
        let start = |pid| owners::start_time(&proc_dir, pid).unwrap();
        let known = [(live.id(), start(live.id())), (dying.id(), start(dying.id()))];
        let mut liveness = Liveness::default();
        assert!(liveness.exited(&proc_dir, &known).is_empty());
        assert_eq!(liveness.watched(), 2);

        dying.kill().unwrap();
        dying.wait().unwrap();
        assert_eq!(liveness.exited(&proc_dir, &known), vec![dying.id()]);
        assert_eq!(liveness.watched(), 1);

        live.kill().unwrap();
        live.wait().unwrap();
    }

    #[test]
    fn a_pid_with_another_start_time_is_another_process() {
        let proc_dir = owners::open_proc().unwrap();
        let me = std::process::id();
        let real = owners::start_time(&proc_dir, me).unwrap();
        let mut liveness = Liveness::default();
        assert_eq!(liveness.exited(&proc_dir, &[(me, real + 1)]), vec![me]);
        assert!(liveness.exited(&proc_dir, &[(me, real)]).is_empty());
    }

    #[test]
    fn pids_no_longer_asked_about_are_no_longer_watched() {
        let proc_dir = owners::open_proc().unwrap();
        let me = std::process::id();
        let mut liveness = Liveness::default();
        liveness.exited(&proc_dir, &[(me, owners::start_time(&proc_dir, me).unwrap())]);
        assert_eq!(liveness.watched(), 1);
        liveness.exited(&proc_dir, &[]);
        assert_eq!(liveness.watched(), 0);
    }
}
