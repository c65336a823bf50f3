//! `portwatch baseline learn`: a proposed baseline file from what listens
//! now, for a person to review. Every entry's `owner` and `reason` are left
//! empty, and `apply` refuses empty ones: nothing is accepted silently.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use portwatch_common::text::{self, Escaped};
use portwatch_common::{Exposure, Proto};

use portwatch_model::ListenerRow;

/// What one proposed entry says.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    port: u16,
    proto: Proto,
    bind: Exposure,
    process: Option<String>,
    user: Option<String>,
}

/// A baseline file named `name`, for hosts matching `hosts`, expecting
/// what `rows` (the listeners open now on those hosts) show; `at` is the
/// moment described, for the header.
pub fn learn(name: &str, hosts: &str, rows: &[ListenerRow], at: jiff::Timestamp) -> String {
    let mut seen: BTreeMap<Key, (BTreeSet<&str>, BTreeSet<String>)> = BTreeMap::new();
    for row in rows {
        let l = &row.listener;
        let key = Key {
            port: l.local_port,
            proto: l.proto,
            bind: l.exposure,
            process: l.processes.first().map(process_name),
            user: l.user.as_deref().map(str::to_owned),
        };
        let (on, units) = seen.entry(key).or_default();
        on.insert(&*row.host);
        units.extend(l.processes.iter().filter_map(|p| p.unit.as_deref().map(str::to_owned)));
    }
    let host_count = rows.iter().map(|r| &*r.host).collect::<BTreeSet<_>>().len();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Proposed by `portwatch baseline learn` from what listened on {host_count} host(s) matching {hosts:?} at {at}.\n\
         # Review every entry: say who owns it and why it is there (apply refuses an empty owner or reason),\n\
         # delete what should not be listening, and widen `process`/`user`/`bind` only on purpose.\n"
    );
    let _ = writeln!(out, "name = {}", quote(name));
    let _ = writeln!(out, "hosts = [{}]", quote(hosts));
    let _ = writeln!(out, "# missing_grace = \"2m\"");
    for (key, (on, units)) in &seen {
        let _ = writeln!(out);
        let mut seen_on: Vec<&str> = on.iter().copied().take(5).collect();
        if on.len() > 5 {
            seen_on.push("...");
        }
        // Units are as agents report them: escaped, so that one cannot end
        // the comment and write entries of its own into the proposal.
        let _ = write!(
            out,
            "# seen on {} of {host_count}: {}",
            on.len(),
            Escaped(&seen_on.join(", "))
        );
        if !units.is_empty() {
            let units = units.iter().cloned().collect::<Vec<_>>().join(", ");
            let _ = write!(out, " ({})", Escaped(&units));
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "[[listener]]");
        let _ = writeln!(out, "proto = {}", quote(key.proto.as_str()));
        let _ = writeln!(out, "port = {}", key.port);
        let _ = writeln!(out, "bind = {}", quote(key.bind.as_str()));
        match &key.process {
            Some(p) => {
                let _ = writeln!(out, "process = {}", quote(p));
            }
            None => {
                let _ = writeln!(out, "# process = \"\"   # no holder could be attributed");
            }
        }
        if let Some(u) = &key.user {
            let _ = writeln!(out, "user = {}", quote(u));
        }
        let _ = writeln!(out, "owner = \"\"");
        let _ = writeln!(out, "reason = \"\"");
    }
    out
}

/// The name to expect: the kernel's `comm` is cut at 15 bytes, so where it is
/// the start of the executable's file name, that file name (both match).
fn process_name(p: &portwatch_common::Process) -> String {
    let file = p.exe.as_deref().and_then(|e| e.rsplit('/').next());
    match file {
        Some(f) if p.name.len() >= 15 && f.starts_with(&*p.name) => f.to_owned(),
        _ => p.name.to_string(),
    }
}

/// A TOML basic string. JSON's string escapes (as serde_json writes them:
/// `\"`, `\\`, `\n`, `\uXXXX`, ...) are all valid in TOML basic strings;
/// what serde_json leaves as it is but a terminal would act on, or TOML
/// refuses (DEL), is written as `\uXXXX` too (every such character is in
/// the BMP), so the file reads the same value back and shows as text.
fn quote(s: &str) -> String {
    let json = serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned());
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match text::needs_escape(c) {
            true => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            false => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(host: &str, port: u16, exposure: Exposure, name: &str) -> ListenerRow {
        ListenerRow {
            host: host.into(),
            listener: portwatch_common::Listener {
                netns: 1,
                proto: Proto::Tcp,
                family: portwatch_common::Family::Ipv4,
                local_addr: "0.0.0.0".parse().unwrap(),
                local_port: port,
                inode: 9,
                uid: 0,
                user: Some("root".into()),
                exposure,
                dual_stack: false,
                processes: vec![portwatch_common::Process {
                    pid: 1,
                    name: name.into(),
                    cmdline: None,
                    exe: None,
                    uid: Some(0),
                    user: Some("root".into()),
                    container: None,
                    unit: Some(format!("{name}.service").into()),
                }],
                firewall: None,
            },
            opened_at: jiff::Timestamp::UNIX_EPOCH,
            closed_at: None,
        }
    }

    #[test]
    fn a_learned_file_parses_but_is_refused_until_reviewed() {
        let mut long = row("web-1", 7878, Exposure::Loopback, "portwatch-colle");
        long.listener.processes[0].exe = Some("/usr/bin/portwatch-collector".into());
        let rows = [
            long,
            row("web-1", 443, Exposure::Wildcard, "nginx"),
            row("web-2", 443, Exposure::Wildcard, "nginx"),
            row("web-1", 22, Exposure::Wildcard, "sshd"),
        ];
        let text = learn("web", "web-*", &rows, jiff::Timestamp::UNIX_EPOCH);
        assert!(
            text.contains("# seen on 2 of 2: web-1, web-2 (nginx.service)"),
            "{text}"
        );
        let e = portwatch_model::baseline::parse(&text).unwrap_err().0;
        assert!(e.contains("owner is empty"), "{e}");
        let reviewed = text
            .replace("owner = \"\"", "owner = \"team web\"")
            .replace("reason = \"\"", "reason = \"serves the site\"");
        let b = portwatch_model::baseline::parse(&reviewed).unwrap();
        assert_eq!(b.hosts, vec!["web-*"]);
        let ports: Vec<u16> = b.listeners.iter().map(|e| e.port_from).collect();
        assert_eq!(ports, vec![22, 443, 7878]);
        assert_eq!(
            b.listeners[2].process.as_deref(),
            Some("portwatch-collector"),
            "the whole name, not comm's 15 bytes"
        );
        assert_eq!(b.listeners[1].process.as_deref(), Some("nginx"));
        assert_eq!(b.listeners[1].bind, Some(Exposure::Wildcard));
    }

    #[test]
    fn reported_names_and_units_cannot_write_entries_or_escape_sequences_into_a_proposal() {
        let mut hostile = row("web-1", 22, Exposure::Wildcard, "sshd\u{7f}\u{9b}2J\u{202e}");
        hostile.listener.processes[0].unit =
            Some("x.service)\n[[listener]]\nproto = \"tcp\"\nport = 4444\nowner = \"a\"\nreason = \"b\"\n#".into());
        let text = learn("web", "web-*", &[hostile], jiff::Timestamp::UNIX_EPOCH);
        assert!(!text.chars().any(|c| c != '\n' && text::needs_escape(c)), "{text:?}");
        assert_eq!(text.matches("[[listener]]\n").count(), 1, "{text}");
        let reviewed = text
            .replace("owner = \"\"", "owner = \"team web\"")
            .replace("reason = \"\"", "reason = \"serves the site\"");
        let b = portwatch_model::baseline::parse(&reviewed).unwrap();
        let ports: Vec<u16> = b.listeners.iter().map(|e| e.port_from).collect();
        assert_eq!(ports, vec![22]);
        assert_eq!(
            b.listeners[0].process.as_deref(),
            Some("sshd\u{7f}\u{9b}2J\u{202e}"),
            "the name reads back exactly"
        );
    }
}
