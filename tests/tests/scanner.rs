//! The reusable `Scanner` (what the daemon calls every few seconds) on the
//! real OS: its owner cache follows real processes opening, sharing and
//! closing real sockets.
// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::os::fd::AsFd;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::Duration;

use portwatch_agent::scan::{Scan, ScanOptions, Scanner};

/// The scanners see the whole host: tests here run one at a time so that
/// one test's sockets are not another's "change".
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn pids_on(scan: &Scan, port: u16) -> Option<Vec<u32>> {
    let s = scan.sockets.iter().find(|s| s.local_port == port)?;
    let mut pids: Vec<u32> = s.processes.iter().map(|p| p.pid).collect();
    pids.sort_unstable();
    Some(pids)
}

/// A `sleep` that inherits `listener`, as a forked worker of a pre-fork server does.
fn child_sharing(listener: &TcpListener) -> Child {
    let fd = listener.as_fd();
    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty()).unwrap();
    let child = Command::new("sleep").arg("60").spawn().unwrap();
    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC).unwrap();
    child
}

#[test]
fn repeated_scans_follow_sockets_and_owners_through_the_cache() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let me = std::process::id();
    let mut scanner = Scanner::new(ScanOptions {
        rewalk_every: Duration::from_secs(3600),
        ..ScanOptions::default()
    })
    .unwrap();
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let a_port = a.local_addr().unwrap().port();

    let first = scanner.scan().unwrap();
    assert!(first.walked);
    assert_eq!(pids_on(&first, a_port), Some(vec![me]));

    // Another process on the machine may open a socket between two scans
    // (and so cause a walk); a scanner that walks every time fails every try.
    let unchanged = (0..5).find_map(|_| {
        let again = scanner.scan().unwrap();
        (!again.walked).then_some(again)
    });
    let again = unchanged.expect("a scan with nothing changed should not walk the fd tables");
    assert_eq!(pids_on(&again, a_port), Some(vec![me]));

    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    let b_port = b.local_addr().unwrap().port();
    let with_b = scanner.scan().unwrap();
    assert!(with_b.walked, "a new socket inode triggers a walk");
    assert_eq!(pids_on(&with_b, b_port), Some(vec![me]));

    drop(b);
    let without_b = scanner.scan().unwrap();
    assert_eq!(pids_on(&without_b, b_port), None);
    assert_eq!(pids_on(&without_b, a_port), Some(vec![me]));
}

#[test]
fn owners_added_by_fork_appear_at_the_periodic_rewalk_and_leave_when_they_exit() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let me = std::process::id();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();

    // Rewalk on every scan: the forked owner is found at once.
    let mut eager = Scanner::new(ScanOptions {
        rewalk_every: Duration::ZERO,
        ..ScanOptions::default()
    })
    .unwrap();
    eager.scan().unwrap();
    let mut child = child_sharing(&listener);
    let mut both = vec![me, child.id()];
    both.sort_unstable();
    assert_eq!(pids_on(&eager.scan().unwrap(), port), Some(both));

    // A cached scanner drops the owner that exits, without a walk.
    let mut cached = Scanner::new(ScanOptions {
        rewalk_every: Duration::from_secs(3600),
        ..ScanOptions::default()
    })
    .unwrap();
    assert_eq!(
        cached
            .scan()
            .unwrap()
            .sockets
            .iter()
            .filter(|s| s.local_port == port)
            .count(),
        1
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let after = cached.scan().unwrap();
    assert_eq!(pids_on(&after, port), Some(vec![me]));
}
