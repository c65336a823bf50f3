//! What changed between two moments of a host, or between two hosts: the
//! answer to "diff this host between Monday and now" (like nmap's ndiff,
//! with processes).

use std::collections::BTreeMap;

use portwatch_common::{Exposure, Family, Place, Proto};
use serde::{Deserialize, Serialize};

use crate::history::ListenerRow;

/// The listeners that opened, closed and changed (owners, or the firewall's answer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Diff {
    /// Present after only.
    pub opened: Vec<ListenerRow>,
    /// Present before only.
    pub closed: Vec<ListenerRow>,
    /// The same place (namespace, protocol, address, port) held by other
    /// processes or a new socket (a restart).
    pub changed: Vec<Change>,
}

/// A listener place whose holder (or firewall answer) changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Change {
    /// The listener before.
    pub before: ListenerRow,
    /// The listener after.
    pub after: ListenerRow,
}

/// The difference between the listeners of one host at two moments.
pub fn between_moments(before: &[ListenerRow], after: &[ListenerRow]) -> Diff {
    pair(
        before,
        after,
        |r| -> Place { r.listener.place() },
        // The same listener: place, socket and owners (a `Listener` is all of that).
        |a, b| a.listener == b.listener,
    )
}

/// Where a listener sits, comparable across hosts: protocol, family, port
/// and exposure (addresses and namespaces are each host's own).
type Role = (Proto, Family, u16, Exposure);

/// The difference between two hosts' listeners: `opened` are on `other`
/// only, `closed` on `host` only, `changed` on both but held by programs of
/// other names.
pub fn between_hosts(host: &[ListenerRow], other: &[ListenerRow]) -> Diff {
    fn names(r: &ListenerRow) -> Vec<&str> {
        let mut n: Vec<&str> = r.listener.processes.iter().map(|p| &*p.name).collect();
        n.sort_unstable();
        n.dedup();
        n
    }
    pair(
        host,
        other,
        |r| -> Role {
            let l = &r.listener;
            (l.proto, l.family, l.local_port, l.exposure)
        },
        |a, b| names(a) == names(b),
    )
}

/// Groups both sides by `place`; within a place, equal rows cancel out,
/// leftovers pair up as changes, and the rest opened or closed.
fn pair<K: Ord>(
    before: &[ListenerRow],
    after: &[ListenerRow],
    place: impl Fn(&ListenerRow) -> K,
    same: impl Fn(&ListenerRow, &ListenerRow) -> bool,
) -> Diff {
    let mut places: BTreeMap<K, (Vec<&ListenerRow>, Vec<&ListenerRow>)> = BTreeMap::new();
    for r in before {
        places.entry(place(r)).or_default().0.push(r);
    }
    for r in after {
        places.entry(place(r)).or_default().1.push(r);
    }
    let mut diff = Diff::default();
    for (_, (mut old, mut new)) in places {
        old.retain(|o| match new.iter().position(|n| same(o, n)) {
            Some(i) => {
                new.remove(i);
                false
            }
            None => true,
        });
        let paired = old.len().min(new.len());
        for (o, n) in old.iter().zip(&new).take(paired) {
            diff.changed.push(Change {
                before: (*o).clone(),
                after: (*n).clone(),
            });
        }
        diff.closed.extend(old.iter().skip(paired).map(|r| (*r).clone()));
        diff.opened.extend(new.iter().skip(paired).map(|r| (*r).clone()));
    }
    diff
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;
    use portwatch_common::{Listener, Process};

    fn row(host: &str, port: u16, inode: u64, name: &str, pid: u32) -> ListenerRow {
        ListenerRow {
            host: host.into(),
            listener: Listener {
                netns: 1,
                proto: Proto::Tcp,
                family: Family::Ipv4,
                local_addr: "0.0.0.0".parse().unwrap(),
                local_port: port,
                inode,
                uid: 0,
                user: None,
                exposure: Exposure::Wildcard,
                dual_stack: false,
                processes: vec![Process {
                    pid,
                    name: name.into(),
                    cmdline: None,
                    exe: None,
                    uid: Some(0),
                    user: None,
                    container: None,
                    unit: None,
                }],
                firewall: None,
            },
            opened_at: Timestamp::from_second(1_700_000_000).unwrap(),
            closed_at: None,
        }
    }

    fn ports(rows: &[ListenerRow]) -> Vec<u16> {
        rows.iter().map(|r| r.listener.local_port).collect()
    }

    #[test]
    fn unchanged_listeners_do_not_appear() {
        let a = vec![row("h", 22, 1, "sshd", 10), row("h", 80, 2, "nginx", 11)];
        assert_eq!(between_moments(&a, &a.clone()), Diff::default());
    }

    #[test]
    fn opened_closed_and_changed_owner_are_told_apart() {
        let before = vec![
            row("h", 22, 1, "sshd", 10),
            row("h", 80, 2, "nginx", 11),
            row("h", 23, 3, "telnetd", 12),
        ];
        let after = vec![
            row("h", 22, 1, "sshd", 10),
            row("h", 80, 9, "apache2", 40),
            row("h", 8080, 4, "java", 50),
        ];
        let d = between_moments(&before, &after);
        assert_eq!(ports(&d.opened), vec![8080]);
        assert_eq!(ports(&d.closed), vec![23]);
        assert_eq!(d.changed.len(), 1);
        assert_eq!(
            (
                &*d.changed[0].before.listener.processes[0].name,
                &*d.changed[0].after.listener.processes[0].name
            ),
            ("nginx", "apache2")
        );
    }

    #[test]
    fn two_hosts_compare_by_port_and_program_name_not_pid() {
        let web1 = vec![
            row("web-1", 22, 1, "sshd", 10),
            row("web-1", 80, 2, "nginx", 11),
            row("web-1", 9100, 3, "node_exporter", 12),
        ];
        let web2 = vec![
            row("web-2", 22, 7, "sshd", 99),
            row("web-2", 80, 8, "apache2", 98),
            row("web-2", 6379, 9, "redis-server", 97),
        ];
        let d = between_hosts(&web1, &web2);
        assert_eq!(ports(&d.opened), vec![6379], "only on web-2");
        assert_eq!(ports(&d.closed), vec![9100], "only on web-1");
        assert_eq!(d.changed.len(), 1);
        assert_eq!(&*d.changed[0].after.host, "web-2");
    }
}
