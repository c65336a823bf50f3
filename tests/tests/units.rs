//! The packaged units' system call filters, as systemd combines their
//! `SystemCallFilter=` lines (the first line's kind, allow or deny, sets the
//! default; each later line adds to or removes from its set), with the groups
//! expanded by `systemd-analyze syscall-filter`: what the collector and the
//! agent call is allowed, what they must not call is not.
// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;

/// Every group `systemd-analyze syscall-filter` knows, by name, with its members (groups unexpanded).
fn groups() -> Option<HashMap<String, Vec<String>>> {
    let out = Command::new("systemd-analyze").arg("syscall-filter").output().ok()?;
    if !out.status.success() {
        return None;
    }
    let mut groups: HashMap<String, Vec<String>> = HashMap::new();
    let mut current = None;
    for line in String::from_utf8(out.stdout).ok()?.lines() {
        let word = line.trim();
        if word.is_empty() || word.starts_with('#') {
            continue;
        }
        if !line.starts_with(' ') && word.starts_with('@') {
            current = Some(word.to_owned());
            groups.entry(word.to_owned()).or_default();
        } else if let Some(group) = &current {
            groups.get_mut(group)?.push(word.to_owned());
        }
    }
    Some(groups)
}

fn expand(name: &str, groups: &HashMap<String, Vec<String>>, out: &mut BTreeSet<String>) {
    match groups.get(name) {
        Some(members) => members.iter().for_each(|m| expand(m, groups, out)),
        None => {
            out.insert(name.to_owned());
        }
    }
}

/// The system calls `unit` allows (its filter must begin with an allow list).
fn allowed(unit: &str, groups: &HashMap<String, Vec<String>>) -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging/systemd")
        .join(unit);
    let text = std::fs::read_to_string(path).unwrap();
    let mut allowed = BTreeSet::new();
    let mut first = true;
    for value in text.lines().filter_map(|l| l.strip_prefix("SystemCallFilter=")) {
        let (deny, list) = match value.strip_prefix('~') {
            Some(list) => (true, list),
            None => (false, value),
        };
        assert!(
            !(first && deny),
            "{unit}: the filter is expected to begin with an allow list"
        );
        first = false;
        let mut named = BTreeSet::new();
        list.split_whitespace().for_each(|n| expand(n, groups, &mut named));
        if deny {
            allowed.retain(|c| !named.contains(c));
        } else {
            allowed.extend(named);
        }
    }
    allowed
}

#[test]
fn the_units_allow_what_the_binaries_call_and_deny_what_they_must_not() {
    let groups = groups().expect(
        "systemd-analyze syscall-filter did not run: install systemd (apt-get install systemd; tests/run.sh does)",
    );
    let collector = allowed("portwatch-collector.service", &groups);
    // The drift evaluator lowers its thread's priority; the soft open-files limit is raised with prlimit64.
    for call in ["setpriority", "prlimit64", "read", "accept4", "fsync"] {
        assert!(collector.contains(call), "the collector's unit denies {call}");
    }
    for call in [
        "setrlimit",
        "sched_setscheduler",
        "sched_setattr",
        "mount",
        "ptrace",
        "reboot",
    ] {
        assert!(!collector.contains(call), "the collector's unit allows {call}");
    }
    let agent = allowed("portwatch-agent.service", &groups);
    // bpf: the kernel-event program (CAP_BPF); the ring buffer is read with mmap and poll. The program
    // is loaded by the agent started again (execve), which hands it over a socket pair (recvmsg).
    for call in [
        "setns",
        "prlimit64",
        "pidfd_open",
        "readlinkat",
        "sendmsg",
        "bpf",
        "mmap",
        "ppoll",
        "execve",
        "socketpair",
        "recvmsg",
    ] {
        assert!(agent.contains(call), "the agent's unit denies {call}");
    }
    // With CAP_SYS_PTRACE these would read or write any process's memory or take its files.
    for call in [
        "process_vm_readv",
        "process_vm_writev",
        "ptrace",
        "pidfd_getfd",
        "open_by_handle_at",
        "setpriority",
        "mount",
    ] {
        assert!(!agent.contains(call), "the agent's unit allows {call}");
    }
}
