//! Tables for people (local times), JSON for scripts (UTC).

use std::borrow::Cow;
use std::io::{self, Write};

use jiff::tz::TimeZone;
use jiff::Timestamp;
use portwatch_common::process::summary;
use portwatch_common::text::{self, Escaped};
use portwatch_model::baseline::BaselineView;
use portwatch_model::time::human_skew;
use portwatch_model::{
    AlertRow, AlertState, BaselineLogRow, HostRow, HostStatus, ListenerRow, PeerPoint, Place, ProbeVerdict,
};
use portwatch_model::{Finding, Kind};
use serde::Serialize;

/// How a query command prints its answer (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people, local times.
    Table,
    /// The collector's answer as JSON, times in UTC.
    Json,
    /// CSV for spreadsheets: a header, then a row per (listener, process); times in UTC.
    Csv,
}

/// Pretty JSON and a newline.
pub fn json<T: Serialize>(out: &mut impl Write, value: &T) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)
}

/// Aligned columns, two spaces apart, the last one unpadded. Every cell is
/// [escaped](text::escape): cells hold what agents report, which must show
/// as text (no escape sequence reaches the terminal) and keep a row on one line.
fn table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let rows: Vec<Vec<Cow<'_, str>>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| text::escape(cell)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = String::new();
    let header: Vec<Cow<'_, str>> = header.iter().map(|&h| Cow::Borrowed(h)).collect();
    for cells in std::iter::once(&header).chain(&rows) {
        line.clear();
        for (cell, width) in cells.iter().zip(&widths) {
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', width - cell.chars().count() + 2));
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

pub fn local(t: Timestamp, tz: &TimeZone) -> String {
    t.to_zoned_datetime(tz.clone())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// `hosts` as a table. SKEW is the host's clock's offset from the
/// collector's (`+2h03m`: ahead) when it is beyond the collector's tolerance,
/// `-` when within it or not measured.
pub fn hosts(out: &mut impl Write, hosts: &[HostRow], tz: &TimeZone) -> io::Result<()> {
    let rows: Vec<Vec<String>> = hosts
        .iter()
        .map(|h| {
            vec![
                h.host.clone(),
                match h.status {
                    HostStatus::Up => "up".to_owned(),
                    HostStatus::Silent => "SILENT".to_owned(),
                },
                local(h.last_seen, tz),
                match h.clock_skew_ms {
                    Some(skew) if h.clock_skewed => human_skew(skew),
                    _ => "-".to_owned(),
                },
                h.listeners.to_string(),
                h.dropped_reports.to_string(),
                h.agent_version.clone().unwrap_or_else(|| "-".to_owned()),
                h.detection.clone().unwrap_or_else(|| "-".to_owned()),
                h.os.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    table(
        out,
        &[
            "HOST",
            "STATUS",
            "LAST SEEN",
            "SKEW",
            "LISTENERS",
            "DROPPED",
            "AGENT",
            "DETECTION",
            "OS",
        ],
        &rows,
    )
}

/// A host's listeners now (`ports`) as a table, with VERIFIED after
/// FIREWALL: what the latest probe from the collector found at the
/// listener's place and when (`reachable 2026-12-03 12:03:04`), `-` where it
/// was never probed.
pub fn ports(out: &mut impl Write, rows: &[ListenerRow], verdicts: &[ProbeVerdict], tz: &TimeZone) -> io::Result<()> {
    let by_place: std::collections::HashMap<Place, &ProbeVerdict> = verdicts.iter().map(|v| (v.place, v)).collect();
    let header = [
        "HOST",
        "PROTO",
        "LOCAL ADDRESS",
        "PORT",
        "EXPOSURE",
        "FIREWALL",
        "VERIFIED",
        "PROCESSES",
        "OPENED",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let l = &r.listener;
            let place = Place {
                netns: l.netns,
                proto: l.proto,
                addr: l.local_addr,
                port: l.local_port,
            };
            let mut row = listener_cells(r, summary(&l.processes), tz);
            let verified = by_place
                .get(&place)
                .map_or_else(|| "-".to_owned(), |v| format!("{} {}", v.state, local(v.at, tz)));
            row.insert(6, verified);
            row
        })
        .collect();
    table(out, &header, &cells)
}

/// Probe verdicts (`portwatch probe`) as a table.
pub fn probe(out: &mut impl Write, verdicts: &[ProbeVerdict], tz: &TimeZone) -> io::Result<()> {
    let cells: Vec<Vec<String>> = verdicts
        .iter()
        .map(|v| {
            vec![
                v.place.proto.as_str().to_owned(),
                v.place.addr.to_string(),
                v.place.port.to_string(),
                v.state.as_str().to_owned(),
                local(v.at, tz),
                v.detail.clone(),
            ]
        })
        .collect();
    table(
        out,
        &["PROTO", "LOCAL ADDRESS", "PORT", "VERIFIED", "AT", "DETAIL"],
        &cells,
    )
}

/// Inbound peers points (`portwatch peers`) as a table: a row per point.
pub fn peers(out: &mut impl Write, points: &[PeerPoint], tz: &TimeZone) -> io::Result<()> {
    let cells: Vec<Vec<String>> = points
        .iter()
        .map(|p| {
            let s = &p.summary;
            let top = match s.top.is_empty() {
                true => "-".to_owned(),
                false => s
                    .top
                    .iter()
                    .map(|t| format!("{} ({})", t.addr, t.connections))
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            vec![
                std::net::SocketAddr::new(p.place.addr, p.place.port).to_string(),
                local(p.at, tz),
                s.connections.to_string(),
                s.distinct_remotes.to_string(),
                s.classes.loopback.to_string(),
                s.classes.private.to_string(),
                s.classes.public.to_string(),
                top,
            ]
        })
        .collect();
    table(
        out,
        &[
            "LISTENER",
            "AT",
            "CONNECTIONS",
            "DISTINCT",
            "LOOPBACK",
            "PRIVATE",
            "PUBLIC",
            "TOP REMOTES",
        ],
        &cells,
    )
}

/// Listener intervals as a table (with CLOSED for history).
pub fn listeners(out: &mut impl Write, rows: &[ListenerRow], tz: &TimeZone, with_closed: bool) -> io::Result<()> {
    let mut header = vec![
        "HOST",
        "PROTO",
        "LOCAL ADDRESS",
        "PORT",
        "EXPOSURE",
        "FIREWALL",
        "PROCESSES",
        "OPENED",
    ];
    if with_closed {
        header.push("CLOSED");
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut row = listener_cells(r, summary(&r.listener.processes), tz);
            if with_closed {
                row.push(r.closed_at.map_or_else(|| "open".to_owned(), |t| local(t, tz)));
            }
            row
        })
        .collect();
    table(out, &header, &cells)
}

/// HOST, PROTO, LOCAL ADDRESS, PORT, EXPOSURE, FIREWALL, PROCESSES (`who`), OPENED.
fn listener_cells(r: &ListenerRow, who: String, tz: &TimeZone) -> Vec<String> {
    let l = &r.listener;
    vec![
        r.host.to_string(),
        l.proto_label().to_owned(),
        l.local_addr.to_string(),
        l.local_port.to_string(),
        l.exposure.as_str().to_owned(),
        firewall(l),
        who,
        local(r.opened_at, tz),
    ]
}

/// The firewall's answer (`open`, `restricted`, ...), `-` where not evaluated.
fn firewall(l: &portwatch_common::Listener) -> String {
    l.firewall
        .as_ref()
        .map_or_else(|| "-".to_owned(), |f| f.reach.as_str().to_owned())
}

/// A diff as a table: `+` opened, `-` closed, `~` changed: its owners or its
/// firewall answer (old -> new).
pub fn diff(out: &mut impl Write, diff: &portwatch_model::diff::Diff, tz: &TimeZone) -> io::Result<()> {
    let mut marked: Vec<(&str, &ListenerRow, String)> = Vec::new();
    marked.extend(diff.opened.iter().map(|r| ("+", r, summary(&r.listener.processes))));
    marked.extend(diff.closed.iter().map(|r| ("-", r, summary(&r.listener.processes))));
    let mut firewall_changes = Vec::new();
    marked.extend(diff.changed.iter().map(|c| {
        let (was, is) = (
            summary(&c.before.listener.processes),
            summary(&c.after.listener.processes),
        );
        let who = if was == is { is } else { format!("{was} -> {is}") };
        let (was, is) = (firewall(&c.before.listener), firewall(&c.after.listener));
        if was != is {
            firewall_changes.push((c.after.listener.place(), format!("{was} -> {is}")));
        }
        ("~", &c.after, who)
    }));
    if marked.is_empty() {
        return writeln!(out, "no difference");
    }
    marked.sort_by_key(|(_, r, _)| (r.listener.local_port, r.listener.proto));
    let rows: Vec<Vec<String>> = marked
        .into_iter()
        .map(|(mark, r, who)| {
            let mut row = vec![mark.to_owned()];
            row.extend(listener_cells(r, who, tz));
            if mark == "~" {
                if let Some((_, change)) = firewall_changes.iter().find(|(p, _)| *p == r.listener.place()) {
                    row[6] = change.clone();
                }
            }
            row
        })
        .collect();
    table(
        out,
        &[
            "",
            "HOST",
            "PROTO",
            "LOCAL ADDRESS",
            "PORT",
            "EXPOSURE",
            "FIREWALL",
            "PROCESSES",
            "OPENED",
        ],
        &rows,
    )
}

/// `findings`, most serious first, then by host and kind: the order of every output of `drift`.
pub fn most_serious_first(findings: &[Finding]) -> Vec<&Finding> {
    let mut sorted: Vec<&Finding> = findings.iter().collect();
    sorted.sort_by(|a, b| (b.severity, &a.host, a.kind).cmp(&(a.severity, &b.host, b.kind)));
    sorted
}

/// Drift findings as a table, most serious first; `baselines_applied`:
/// whether the collector has any baseline at all.
pub fn findings(out: &mut impl Write, findings: &[Finding], baselines_applied: bool) -> io::Result<()> {
    if findings.is_empty() {
        return match baselines_applied {
            true => writeln!(out, "no drift: every host is as its baselines say"),
            false => writeln!(
                out,
                "no drift (no baseline applied yet: `portwatch baseline learn --host GLOB` proposes one)"
            ),
        };
    }
    let rows: Vec<Vec<String>> = most_serious_first(findings)
        .iter()
        .map(|f| {
            vec![
                f.severity.as_str().to_owned(),
                f.kind.as_str().to_owned(),
                f.host.clone(),
                match (f.proto, f.local_port) {
                    (Some(proto), Some(port)) => format!("{}/{port}", proto.as_str()),
                    _ => "-".to_owned(),
                },
                f.message.clone(),
            ]
        })
        .collect();
    table(out, &["SEVERITY", "KIND", "HOST", "PORT", "WHAT"], &rows)?;
    let mut unbaselined: Vec<&str> = findings
        .iter()
        .filter(|f| f.kind == Kind::Unbaselined)
        .map(|f| f.host.as_str())
        .collect();
    unbaselined.sort_unstable();
    unbaselined.dedup();
    if !unbaselined.is_empty() {
        let none = match baselines_applied {
            true => "no baseline covers",
            false => "no baseline is applied yet, so none covers",
        };
        writeln!(
            out,
            "\n{none} {}: their listeners are listed, not judged; `portwatch baseline learn --host GLOB` proposes one",
            Escaped(&unbaselined.join(", "))
        )?;
    }
    Ok(())
}

/// Alerts as a table.
pub fn alerts(out: &mut impl Write, alerts: &[AlertRow], tz: &TimeZone) -> io::Result<()> {
    if alerts.is_empty() {
        return writeln!(out, "no alert");
    }
    let rows: Vec<Vec<String>> = alerts
        .iter()
        .map(|a| {
            let state = match (a.state, &a.acked_by) {
                (AlertState::Acknowledged, Some(by)) => format!("acknowledged by {by}"),
                (s, _) => s.as_str().to_owned(),
            };
            vec![
                a.id.to_string(),
                state,
                a.severity.as_str().to_owned(),
                a.kind.as_str().to_owned(),
                a.host.clone(),
                local(a.opened_at, tz),
                a.message.clone(),
            ]
        })
        .collect();
    table(
        out,
        &["ID", "STATE", "SEVERITY", "KIND", "HOST", "OPENED", "WHAT"],
        &rows,
    )
}

/// Baselines as a table.
pub fn baselines(out: &mut impl Write, list: &[BaselineView], tz: &TimeZone) -> io::Result<()> {
    if list.is_empty() {
        return writeln!(out, "no baseline; `portwatch baseline learn --host GLOB` proposes one");
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|b| {
            let (selects, entries) = match &b.baseline {
                Some(p) => {
                    let mut sel: Vec<String> = p.hosts.clone();
                    sel.extend(p.tags.iter().map(|(k, v)| format!("{k}={v}")));
                    (sel.join(" "), p.listeners.len().to_string())
                }
                None => ("(does not parse)".to_owned(), "-".to_owned()),
            };
            vec![
                b.stored.name.clone(),
                selects,
                entries,
                local(b.stored.applied_at, tz),
                b.stored.applied_by.clone(),
            ]
        })
        .collect();
    table(out, &["NAME", "SELECTS", "ENTRIES", "APPLIED", "BY"], &rows)
}

/// The baseline log as a table.
pub fn baseline_log(out: &mut impl Write, log: &[BaselineLogRow], tz: &TimeZone) -> io::Result<()> {
    if log.is_empty() {
        return writeln!(out, "no change to any baseline yet");
    }
    let rows: Vec<Vec<String>> = log
        .iter()
        .map(|r| {
            vec![
                local(r.at, tz),
                r.name.clone(),
                r.action.as_str().to_owned(),
                r.actor.clone(),
                r.comment.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(out, &["WHEN", "BASELINE", "ACTION", "BY", "WHY"], &rows)
}

/// Trends as a few short tables.
pub fn trends(out: &mut impl Write, t: &portwatch_model::trend::Trends, tz: &TimeZone) -> io::Result<()> {
    let scope = t.host.as_deref().unwrap_or("fleet-wide");
    let every = match t.bucket_secs {
        3600 => "hour".to_owned(),
        86_400 => "day".to_owned(),
        s => humantime::format_duration(std::time::Duration::from_secs(s)).to_string(),
    };
    writeln!(out, "Open listeners ({scope}), every {every}:")?;
    let max = t.open_listeners.iter().map(|p| p.listeners).max().unwrap_or(0).max(1);
    let rows: Vec<Vec<String>> = t
        .open_listeners
        .iter()
        .map(|p| {
            let bar = (p.listeners * 40).div_ceil(max) as usize;
            vec![local(p.at, tz), p.listeners.to_string(), "#".repeat(bar)]
        })
        .collect();
    table(out, &["TIME", "LISTENERS", ""], &rows)?;

    let first = |list: &[portwatch_model::trend::FirstSeen]| -> Vec<Vec<String>> {
        list.iter()
            .map(|f| {
                vec![
                    format!("{}/{}", f.proto.as_str(), f.port),
                    f.host.clone(),
                    local(f.first_seen, tz),
                ]
            })
            .collect()
    };
    writeln!(out, "\nPorts first seen in the last 24 h:")?;
    match t.new_ports_24h.is_empty() {
        true => writeln!(out, "none")?,
        false => table(out, &["PORT", "FIRST ON", "AT"], &first(&t.new_ports_24h))?,
    }
    writeln!(out, "\nPorts first seen in the last 7 days:")?;
    match t.new_ports_7d.is_empty() {
        true => writeln!(out, "none")?,
        false => table(out, &["PORT", "FIRST ON", "AT"], &first(&t.new_ports_7d))?,
    }

    writeln!(out, "\nShort-lived listeners (open less than a minute):")?;
    if t.short_lived.is_empty() {
        writeln!(out, "none")?;
    } else {
        let rows: Vec<Vec<String>> = t
            .short_lived
            .iter()
            .map(|s| {
                vec![
                    s.host.clone(),
                    format!("{}/{}", s.proto.as_str(), s.port),
                    s.process.clone().unwrap_or_else(|| "-".to_owned()),
                    s.count.to_string(),
                    format!("{} ms", s.shortest_ms),
                    local(s.last_opened_at, tz),
                ]
            })
            .collect();
        table(
            out,
            &["HOST", "PORT", "PROCESS", "TIMES", "SHORTEST", "LAST OPENED"],
            &rows,
        )?;
    }

    writeln!(out, "\nListeners opening at the same hour on several days:")?;
    if t.recurring.is_empty() {
        writeln!(out, "none")?;
    } else {
        let rows: Vec<Vec<String>> = t
            .recurring
            .iter()
            .map(|r| {
                vec![
                    r.host.clone(),
                    format!("{}/{}", r.proto.as_str(), r.port),
                    format!("{:02}:00 UTC", r.hour_utc),
                    r.days.to_string(),
                ]
            })
            .collect();
        table(out, &["HOST", "PORT", "HOUR", "DAYS"], &rows)?;
    }

    writeln!(out, "\nTop ports by number of hosts:")?;
    let rows: Vec<Vec<String>> = t
        .top_ports
        .iter()
        .map(|p| vec![format!("{}/{}", p.proto.as_str(), p.port), p.hosts.to_string()])
        .collect();
    table(out, &["PORT", "HOSTS"], &rows)
}

#[cfg(test)]
mod tests {
    use jiff::tz::TimeZone;
    use portwatch_common::{Exposure, Family, Listener, Process, Proto};
    use portwatch_model::{Finding, Kind};
    use portwatch_model::{HostRow, HostStatus, ListenerRow};

    /// A process name any local user can pick (`prctl`, `argv`): an OSC 52
    /// clipboard write, a bell, and a carriage return and newline that would
    /// start a forged row.
    const HOSTILE: &str = "\x1b]52;c;ZXZpbA==\x07evil\r\nroot";

    /// Whether `text` holds a byte or character a terminal would act on
    /// (the newlines that end lines aside).
    fn raw_controls(text: &str) -> Vec<char> {
        text.chars()
            .filter(|&c| c != '\n' && portwatch_common::text::needs_escape(c))
            .collect()
    }

    fn hostile_row() -> ListenerRow {
        let process = Process {
            pid: 4242,
            name: HOSTILE.into(),
            cmdline: Some(HOSTILE.into()),
            exe: None,
            uid: Some(0),
            user: Some("root\u{202e}toor".into()),
            container: None,
            unit: Some("x\u{9b}2J.service".into()),
        };
        ListenerRow {
            host: "web-3".into(),
            listener: Listener {
                netns: 1,
                proto: Proto::Tcp,
                family: Family::Ipv4,
                local_addr: "0.0.0.0".parse().unwrap(),
                local_port: 22,
                inode: 9,
                uid: 0,
                user: Some("root\x1b[8m".into()),
                exposure: Exposure::Wildcard,
                dual_stack: false,
                processes: vec![process],
                firewall: None,
            },
            opened_at: "2026-11-24T03:00:00Z".parse().unwrap(),
            closed_at: None,
        }
    }

    #[test]
    fn the_firewall_column_shows_the_answer_and_a_diff_shows_its_change() {
        let mut filtered = hostile_row();
        filtered.listener.processes[0].name = "sshd".into();
        filtered.listener.processes[0].cmdline = None;
        filtered.listener.processes[0].unit = None;
        filtered.listener.firewall = Some(portwatch_common::Firewall {
            reach: portwatch_common::Reach::Filtered,
            rule: "inet filter input policy drop".into(),
            sources: Vec::new(),
        });
        let mut open = filtered.clone();
        open.listener.firewall = Some(portwatch_common::Firewall {
            reach: portwatch_common::Reach::Open,
            rule: "inet filter input handle 4".into(),
            sources: Vec::new(),
        });
        let mut unevaluated = filtered.clone();
        unevaluated.listener.firewall = None;
        let mut out = Vec::new();
        super::listeners(&mut out, &[filtered.clone(), unevaluated], &TimeZone::UTC, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        let column = |line: &str| line.split_whitespace().nth(5).map(str::to_owned);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().nth(6),
            Some("FIREWALL"),
            "LOCAL ADDRESS is two words: {text}"
        );
        assert_eq!(column(lines[1]).as_deref(), Some("filtered"), "{text}");
        assert_eq!(column(lines[2]).as_deref(), Some("-"), "{text}");

        let d = portwatch_model::diff::between_moments(std::slice::from_ref(&filtered), std::slice::from_ref(&open));
        let mut out = Vec::new();
        super::diff(&mut out, &d, &TimeZone::UTC).unwrap();
        let text = String::from_utf8(out).unwrap();
        let row = text.lines().nth(1).unwrap_or_default();
        assert!(row.starts_with('~') && row.contains("filtered -> open"), "{text}");
        assert!(!row.contains("->  "), "the owners did not change: {text}");
    }

    #[test]
    fn a_hostile_process_name_is_text_in_the_ports_and_who_table_and_exact_in_json() {
        let mut out = Vec::new();
        super::listeners(&mut out, &[hostile_row()], &TimeZone::UTC, true).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(raw_controls(&text), Vec::<char>::new(), "{text:?}");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "a header and one row: {text}");
        assert!(
            lines[1].contains("\\x1b]52;c;ZXZpbA==\\x07evil\\r\\nroot[4242] (x\\u{9b}2J.service)"),
            "{text}"
        );

        let mut out = Vec::new();
        super::json(&mut out, &[hostile_row()]).unwrap();
        assert!(!out.contains(&0x1b), "serde_json escapes C0 controls");
        let back: Vec<ListenerRow> = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, vec![hostile_row()]);
    }

    #[test]
    fn reported_host_facts_and_alert_texts_render_as_text() {
        let host = HostRow {
            host: "web-3".into(),
            status: HostStatus::Up,
            first_seen: "2026-11-24T03:00:00Z".parse().unwrap(),
            last_seen: "2026-11-24T03:00:00Z".parse().unwrap(),
            agent_version: Some("0.1.0\x1b[2J".into()),
            interval_ms: 10_000,
            os: Some(format!("Debian {HOSTILE}")),
            kernel: None,
            boot_time: None,
            tags: Default::default(),
            listeners: 1,
            dropped_reports: 0,
            clock_skew_ms: None,
            clock_skew_at: None,
            clock_skewed: false,
            detection: None,
            host_netns: None,
            addresses: Vec::new(),
        };
        let mut out = Vec::new();
        super::hosts(&mut out, &[host], &TimeZone::UTC).unwrap();
        let finding = Finding {
            message: format!("web-3: tcp/22 held by {HOSTILE}[4242]"),
            ..Finding::new(Kind::Unbaselined, "web-3", "unbaselined:tcp:22".to_owned())
        };
        super::findings(&mut out, &[finding], true).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(raw_controls(&text), Vec::<char>::new(), "{text:?}");
        assert!(text.contains("Debian \\x1b]52;c;"), "{text}");
        assert!(text.contains("held by \\x1b]52;c;"), "{text}");
    }

    fn unbaselined(host: &str, port: u16) -> Finding {
        Finding {
            message: format!("{host}: tcp/{port} held by sshd[1] (no baseline covers this host)"),
            proto: Some(portwatch_common::Proto::Tcp),
            local_port: Some(port),
            ..Finding::new(Kind::Unbaselined, host, format!("unbaselined:tcp:{port}"))
        }
    }

    fn render(findings: &[Finding], baselines_applied: bool) -> String {
        let mut out = Vec::new();
        super::findings(&mut out, findings, baselines_applied).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn no_drift_without_any_baseline_does_not_claim_the_hosts_match_their_baselines() {
        assert_eq!(render(&[], true), "no drift: every host is as its baselines say\n");
        let none = render(&[], false);
        assert!(
            none.starts_with("no drift (no baseline applied yet") && !none.contains("every host"),
            "{none}"
        );
    }

    #[test]
    fn unbaselined_findings_name_the_hosts_no_baseline_covers() {
        let text = render(
            &[
                unbaselined("web-3", 22),
                unbaselined("web-3", 80),
                unbaselined("db-1", 5432),
            ],
            true,
        );
        assert!(
            text.contains("no baseline covers db-1, web-3: their listeners are listed, not judged"),
            "{text}"
        );
        let text = render(&[unbaselined("web-3", 22)], false);
        assert!(
            text.contains("no baseline is applied yet, so none covers web-3"),
            "{text}"
        );
    }

    #[test]
    fn the_skew_column_shows_a_clock_beyond_the_tolerance_and_a_dash_otherwise() {
        use portwatch_model::{HostRow, HostStatus};
        let at = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let host = |name: &str, skew: Option<i64>, skewed: bool| HostRow {
            host: name.to_owned(),
            status: HostStatus::Up,
            first_seen: at,
            last_seen: at,
            agent_version: Some("0.1.0".into()),
            interval_ms: 10_000,
            os: None,
            kernel: None,
            boot_time: None,
            tags: Default::default(),
            listeners: 3,
            dropped_reports: 0,
            clock_skew_ms: skew,
            clock_skew_at: skew.map(|_| at),
            clock_skewed: skewed,
            detection: None,
            host_netns: None,
            addresses: Vec::new(),
        };
        let hosts = [
            host("ahead", Some(7_380_000), true),
            host("behind", Some(-45_000), true),
            host("fine", Some(-12), false),
            host("unknown", None, false),
        ];
        let mut out = Vec::new();
        super::hosts(&mut out, &hosts, &jiff::tz::TimeZone::UTC).unwrap();
        let text = String::from_utf8(out).unwrap();
        let skew: Vec<(&str, &str)> = text
            .lines()
            .map(|l| {
                let cells: Vec<&str> = l.split_whitespace().collect();
                (cells[0], cells[4])
            })
            .collect();
        assert_eq!(
            skew,
            vec![
                ("HOST", "SKEW"),
                ("ahead", "+2h03m"),
                ("behind", "-45s"),
                ("fine", "-"),
                ("unknown", "-")
            ],
            "{text}"
        );
    }
}
