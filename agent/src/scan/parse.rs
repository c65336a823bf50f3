//! Pure parsers for the text the kernel exposes under `/proc`.
//!
//! Nothing here touches the file system: each function takes the bytes or
//! text that was read and is unit-tested on captured samples.

use procfs::ProcessCGroup;

/// The socket inode a `/proc/<pid>/fd/N` link points to (`socket:[12345]`),
/// or `None` for any other kind of file.
pub fn socket_inode(link: &[u8]) -> Option<u64> {
    let digits = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    parse_u64(digits)
}

/// The namespace inode a `/proc/<pid>/ns/net` link points to (`net:[4026531840]`).
pub fn netns_inode(link: &[u8]) -> Option<u64> {
    let digits = link.strip_prefix(b"net:[")?.strip_suffix(b"]")?;
    parse_u64(digits)
}

/// Decimal digits only: no sign, no space, no overflow.
fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(n)
}

/// The start time of a process (field 22 of `/proc/<pid>/stat`, in clock
/// ticks after boot). With the pid it names one process for good: a reused
/// pid gets a new start time. The command name (field 2) may hold spaces
/// and parentheses, so fields are counted from the last `)`.
pub fn stat_start_time(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let fields = std::str::from_utf8(&stat[close + 1..]).ok()?;
    // After the comm comes field 3 (state); starttime is field 22.
    fields.split_ascii_whitespace().nth(22 - 3)?.parse().ok()
}

/// What a process's cgroup path says about where it runs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CgroupFacts {
    /// Container id (64 hex digits) of docker, containerd, CRI-O, podman or kubepods.
    pub container: Option<String>,
    /// The innermost systemd unit (`*.service` or `*.scope`).
    pub unit: Option<String>,
}

/// Derives container and unit from a process's cgroups (`/proc/<pid>/cgroup`).
///
/// The path used is the v2 one (`0::/path`) when it is set, else the
/// `name=systemd` one, else the first non-root one. Container ids are
/// recognised in the forms docker, containerd, CRI-O, podman and kubelet
/// write: `/docker/<id>`, `/system.slice/docker-<id>.scope`,
/// `/kubepods/burstable/pod<uid>/<id>`,
/// `/kubepods.slice/.../cri-containerd-<id>.scope`, `crio-<id>.scope`,
/// `/machine.slice/libpod-<id>.scope/container`.
pub fn cgroup(groups: &[ProcessCGroup]) -> CgroupFacts {
    let set = |g: &&ProcessCGroup| !g.pathname.is_empty() && g.pathname != "/";
    let v2 = groups
        .iter()
        .filter(set)
        .find(|g| g.hierarchy == 0 && g.controllers.is_empty());
    let systemd = || {
        groups
            .iter()
            .filter(set)
            .find(|g| g.controllers.iter().any(|c| c == "name=systemd"))
    };
    let Some(group) = v2.or_else(systemd).or_else(|| groups.iter().find(set)) else {
        return CgroupFacts::default();
    };
    CgroupFacts {
        container: container_id(&group.pathname),
        unit: systemd_unit(&group.pathname),
    }
}

/// The innermost container id in a cgroup path.
fn container_id(path: &str) -> Option<String> {
    path.split('/').rev().find_map(|part| {
        let trimmed = part.strip_suffix(".scope").unwrap_or(part);
        let id = ["docker-", "cri-containerd-", "crio-", "libpod-", "containerd-"]
            .iter()
            .find_map(|prefix| trimmed.strip_prefix(prefix))
            .unwrap_or(trimmed);
        is_container_id(id).then(|| id.to_owned())
    })
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The innermost systemd unit in a cgroup path.
fn systemd_unit(path: &str) -> Option<String> {
    path.split('/')
        .rev()
        .find(|part| part.ends_with(".service") || part.ends_with(".scope"))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_links_to_sockets_give_their_inode_and_others_none() {
        assert_eq!(socket_inode(b"socket:[123456]"), Some(123456));
        assert_eq!(socket_inode(b"socket:[0]"), Some(0));
        assert_eq!(socket_inode(b"pipe:[123456]"), None);
        assert_eq!(socket_inode(b"/dev/null"), None);
        assert_eq!(socket_inode(b"anon_inode:[eventpoll]"), None);
        assert_eq!(socket_inode(b"socket:[]"), None);
        assert_eq!(socket_inode(b"socket:[12a]"), None);
        assert_eq!(socket_inode(b"socket:[99999999999999999999999]"), None);
    }

    #[test]
    fn netns_links_give_the_namespace_inode() {
        assert_eq!(netns_inode(b"net:[4026531840]"), Some(4026531840));
        assert_eq!(netns_inode(b"mnt:[4026531840]"), None);
    }

    #[test]
    fn start_time_is_read_past_a_comm_with_spaces_and_parens() {
        let stat = b"4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 300 0 0 0 \
                    5 3 0 0 20 0 1 0 987654 12345678 200 18446744073709551615 \
                    1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(stat_start_time(stat), Some(987654));
        assert_eq!(stat_start_time(b"12 (x) S 1"), None);
        assert_eq!(stat_start_time(b"garbage"), None);
    }

    fn cgroup(text: &str) -> CgroupFacts {
        use procfs::FromBufRead;
        let groups = procfs::ProcessCGroups::from_buf_read(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e}"));
        super::cgroup(&groups.0)
    }

    #[test]
    fn docker_container_under_cgroup_v1() {
        let text = "12:pids:/docker/3f4e1b2c9d8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e\n\
                    1:name=systemd:/docker/3f4e1b2c9d8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e\n";
        let f = cgroup(text);
        assert_eq!(
            f.container.as_deref(),
            Some("3f4e1b2c9d8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e")
        );
        assert_eq!(f.unit, None);
    }

    #[test]
    fn docker_scope_under_systemd_cgroup_v2() {
        let id = "a".repeat(64);
        let f = cgroup(&format!("0::/system.slice/docker-{id}.scope\n"));
        assert_eq!(f.container.as_deref(), Some(id.as_str()));
        assert_eq!(f.unit, Some(format!("docker-{id}.scope")));
    }

    #[test]
    fn kubepods_containerd_crio_and_podman_ids_are_found() {
        let id = "0123456789abcdef".repeat(4);
        for path in [
            format!("/kubepods/burstable/pod8e1c-44/{id}"),
            format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1_2.slice/cri-containerd-{id}.scope"
            ),
            format!("/kubepods.slice/kubepods-pod9.slice/crio-{id}.scope"),
            format!("/machine.slice/libpod-{id}.scope/container"),
        ] {
            let f = cgroup(&format!("0::{path}\n"));
            assert_eq!(f.container.as_deref(), Some(id.as_str()), "{path}");
        }
    }

    #[test]
    fn services_and_sessions_give_their_unit_and_no_container() {
        let f = cgroup("0::/system.slice/nginx.service\n");
        assert_eq!(
            f,
            CgroupFacts {
                container: None,
                unit: Some("nginx.service".into())
            }
        );
        let f = cgroup("0::/user.slice/user-1000.slice/session-3.scope\n");
        assert_eq!(f.unit.as_deref(), Some("session-3.scope"));
        let f = cgroup("0::/\n");
        assert_eq!(f, CgroupFacts::default());
        let f = cgroup("3:cpu,cpuacct:/\n1:name=systemd:/system.slice/ssh.service\n0::/\n");
        assert_eq!(f.unit.as_deref(), Some("ssh.service"));
    }

    mod properties {
        //! The parsers take whatever the kernel (or a process naming
        //! itself) wrote: they never panic, and they find what is there.
        use super::super::*;
        use proptest::prelude::*;

        /// Text shaped like a `/proc/<pid>/cgroup` line, or not at all.
        fn cgroup_text() -> impl Strategy<Value = String> {
            let part = prop_oneof![
                Just("docker-".to_owned()),
                Just("cri-containerd-".to_owned()),
                Just(".scope".to_owned()),
                Just(".service".to_owned()),
                Just("/".to_owned()),
                Just(":".to_owned()),
                Just("\n".to_owned()),
                "[0-9a-f]{60,68}",
                "[a-z0-9@._-]{0,12}",
                any::<String>(),
            ];
            prop::collection::vec(part, 0..24).prop_map(|parts| parts.concat())
        }

        proptest! {
            #[test]
            fn fd_and_namespace_links_never_panic_and_read_back_what_was_written(
                bytes in prop::collection::vec(any::<u8>(), 0..64),
                inode in any::<u64>(),
            ) {
                let _ = socket_inode(&bytes);
                let _ = netns_inode(&bytes);
                prop_assert_eq!(socket_inode(format!("socket:[{inode}]").as_bytes()), Some(inode));
                prop_assert_eq!(netns_inode(format!("net:[{inode}]").as_bytes()), Some(inode));
                prop_assert_eq!(socket_inode(format!("socket:[{inode}0]").as_bytes()), inode.checked_mul(10));
            }

            #[test]
            fn a_stat_line_never_panics_and_gives_the_start_time_whatever_the_comm(
                bytes in prop::collection::vec(any::<u8>(), 0..600),
                comm in prop::collection::vec(any::<u8>(), 0..16),
                start in any::<u64>(),
            ) {
                let _ = stat_start_time(&bytes);
                let mut stat = b"4242 (".to_vec();
                stat.extend(&comm);
                stat.extend(format!(") S 1 4242 4242 0 -1 4194560 300 0 0 0 5 3 0 0 20 0 1 0 {start} 1234 200 1 1").as_bytes());
                prop_assert_eq!(stat_start_time(&stat), Some(start));
            }

            #[test]
            fn any_cgroup_file_parses_without_panicking_into_a_real_id_and_unit(text in cgroup_text()) {
                use procfs::FromBufRead;
                let Ok(groups) = procfs::ProcessCGroups::from_buf_read(text.as_bytes()) else {
                    return Ok(());
                };
                let facts = cgroup(&groups.0);
                if let Some(id) = &facts.container {
                    prop_assert!(id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
                }
                if let Some(unit) = &facts.unit {
                    prop_assert!(unit.ends_with(".service") || unit.ends_with(".scope"), "{unit}");
                    prop_assert!(!unit.contains('/'), "{unit}");
                }
            }

            #[test]
            fn any_cgroup_list_gives_a_real_id_and_unit(
                groups in prop::collection::vec(
                    (any::<u32>(), prop::collection::vec("[a-z=,]{0,10}", 0..3), cgroup_text()),
                    0..5,
                ),
            ) {
                let groups: Vec<ProcessCGroup> = groups
                    .into_iter()
                    .map(|(hierarchy, controllers, pathname)| ProcessCGroup { hierarchy, controllers, pathname })
                    .collect();
                let facts = cgroup(&groups);
                if let Some(id) = &facts.container {
                    prop_assert!(id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
                }
                if let Some(unit) = &facts.unit {
                    prop_assert!(!unit.contains('/'), "{unit}");
                }
            }
        }
    }
}
