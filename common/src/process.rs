//! A process that holds a socket.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// One process holding a socket open (it has a file descriptor on it).
///
/// Every field but `pid` and `name` may be unknown, and is then `None`
/// (`null` in JSON): unknown is never spelled as 0, -1 or "".
///
/// The strings are shared (`Arc<str>`): the same program holds sockets on
/// many hosts and in many snapshots, and a copy of a process is a copy of
/// its pid and five pointers, not of five strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Process {
    /// Process id, as seen from the scanner's pid namespace.
    pub pid: u32,
    /// Command name (`/proc/<pid>/comm`), at most 15 bytes as the kernel keeps it.
    pub name: Arc<str>,
    /// Full command line, arguments joined by single spaces; `None` for kernel
    /// threads and zombies, which have none.
    pub cmdline: Option<Arc<str>>,
    /// Path of the executable (`/proc/<pid>/exe`); `None` when unreadable.
    pub exe: Option<Arc<str>>,
    /// Effective user id of the process.
    pub uid: Option<u32>,
    /// User name for `uid`, when the system knows one.
    pub user: Option<Arc<str>>,
    /// Container id (docker, containerd, CRI-O, podman, kubepods), from the cgroup path.
    pub container: Option<Arc<str>>,
    /// systemd unit (`nginx.service`, `session-3.scope`), from the cgroup path.
    pub unit: Option<Arc<str>>,
}

/// The CSV columns of a process, as every portwatch CSV names them.
pub const CSV_COLUMNS: [&str; 8] = [
    "pid",
    "name",
    "cmdline",
    "exe",
    "process_uid",
    "process_user",
    "container",
    "unit",
];

impl Process {
    /// The values of [`CSV_COLUMNS`], unknown ones empty.
    pub fn csv_fields(&self) -> [String; 8] {
        let text = |o: &Option<Arc<str>>| o.as_deref().unwrap_or_default().to_owned();
        [
            self.pid.to_string(),
            self.name.to_string(),
            text(&self.cmdline),
            text(&self.exe),
            self.uid.map(|u| u.to_string()).unwrap_or_default(),
            text(&self.user),
            text(&self.container),
            text(&self.unit),
        ]
    }
}

/// The holders of a socket in one short line for tables, grouped by name and
/// where they run: `nginx[900,901] (nginx.service), sshd[12] (container
/// 3f4e1b2c9d8a)`; `-` when there are none.
pub fn summary<'a>(processes: impl IntoIterator<Item = &'a Process>) -> String {
    let mut groups: BTreeMap<(&str, String), Vec<String>> = BTreeMap::new();
    for p in processes {
        let place = match (&p.container, &p.unit) {
            // The short id, as docker prints it (cut by characters: the id comes from the network).
            (Some(id), _) => format!(" (container {})", id.chars().take(12).collect::<String>()),
            (None, Some(unit)) => format!(" ({unit})"),
            (None, None) => String::new(),
        };
        groups.entry((&*p.name, place)).or_default().push(p.pid.to_string());
    }
    if groups.is_empty() {
        return "-".to_owned();
    }
    let parts: Vec<String> = groups
        .into_iter()
        .map(|((name, place), pids)| format!("{name}[{}]{place}", pids.join(",")))
        .collect();
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: u32, name: &str, container: Option<&str>, unit: Option<&str>) -> Process {
        Process {
            pid,
            name: name.into(),
            cmdline: None,
            exe: None,
            uid: None,
            user: None,
            container: container.map(Arc::from),
            unit: unit.map(Arc::from),
        }
    }

    #[test]
    fn summary_groups_by_name_and_place() {
        let id = "3f4e1b2c9d8a".to_owned() + &"0".repeat(52);
        let ps = [
            p(901, "nginx", None, Some("nginx.service")),
            p(900, "nginx", None, Some("nginx.service")),
            p(12, "sshd", Some(&id), None),
            p(7, "x", None, None),
        ];
        assert_eq!(
            summary(&ps),
            "nginx[901,900] (nginx.service), sshd[12] (container 3f4e1b2c9d8a), x[7]"
        );
        assert_eq!(summary(&[]), "-");
    }

    #[test]
    fn a_container_id_with_multibyte_characters_is_cut_without_panicking() {
        // Any agent token can send one: the id is not trusted to be hex.
        let ps = [p(1, "x", Some("aaaaaaaaaaaé-and-more"), None)];
        assert_eq!(summary(&ps), "x[1] (container aaaaaaaaaaaé)");
    }
}
