//! A process that holds a socket.

use serde::{Deserialize, Serialize};

/// One process holding a socket open (it has a file descriptor on it).
///
/// Every field but `pid` and `name` may be unknown, and is then `None`
/// (`null` in JSON): unknown is never spelled as 0, -1 or "".
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Process {
    /// Process id, as seen from the scanner's pid namespace.
    pub pid: u32,
    /// Command name (`/proc/<pid>/comm`), at most 15 bytes as the kernel keeps it.
    pub name: String,
    /// Full command line, arguments joined by single spaces; `None` for kernel
    /// threads and zombies, which have none.
    pub cmdline: Option<String>,
    /// Path of the executable (`/proc/<pid>/exe`); `None` when unreadable.
    pub exe: Option<String>,
    /// Effective user id of the process.
    pub uid: Option<u32>,
    /// User name for `uid`, when the system knows one.
    pub user: Option<String>,
    /// Container id (docker, containerd, CRI-O, podman, kubepods), from the cgroup path.
    pub container: Option<String>,
    /// systemd unit (`nginx.service`, `session-3.scope`), from the cgroup path.
    pub unit: Option<String>,
}
