//! Tables for people (local times), JSON for scripts (UTC).

use std::collections::BTreeMap;
use std::io::{self, Write};

use jiff::tz::TimeZone;
use jiff::Timestamp;
use portwatch_collector::store::{HostRow, HostStatus, ListenerRow};
use serde::Serialize;

/// Pretty JSON and a newline.
pub fn json<T: Serialize>(out: &mut impl Write, value: &T) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)
}

/// Aligned columns, two spaces apart, the last one unpadded.
fn table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = String::new();
    for cells in std::iter::once(header.iter().map(|h| h.to_string()).collect::<Vec<_>>()).chain(rows.iter().cloned()) {
        line.clear();
        for (cell, width) in cells.iter().zip(&widths) {
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', width - cell.chars().count() + 2));
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn local(t: Timestamp, tz: &TimeZone) -> String {
    t.to_zoned_datetime(tz.clone())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// `hosts` as a table.
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
                h.listeners.to_string(),
                h.agent_version.clone().unwrap_or_else(|| "-".to_owned()),
                h.os.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    table(out, &["HOST", "STATUS", "LAST SEEN", "LISTENERS", "AGENT", "OS"], &rows)
}

/// Listener intervals as a table (with CLOSED for history) or JSON.
pub fn listeners(
    out: &mut impl Write,
    rows: &[ListenerRow],
    as_json: bool,
    tz: &TimeZone,
    with_closed: bool,
) -> io::Result<()> {
    if as_json {
        return json(out, &rows);
    }
    let mut header = vec![
        "HOST",
        "PROTO",
        "LOCAL ADDRESS",
        "PORT",
        "EXPOSURE",
        "PROCESSES",
        "OPENED",
    ];
    if with_closed {
        header.push("CLOSED");
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut row = vec![
                r.host.clone(),
                proto_label(r),
                r.local_addr.to_string(),
                r.local_port.to_string(),
                r.exposure.as_str().to_owned(),
                processes(r),
                local(r.opened_at, tz),
            ];
            if with_closed {
                row.push(r.closed_at.map_or_else(|| "open".to_owned(), |t| local(t, tz)));
            }
            row
        })
        .collect();
    table(out, &header, &cells)
}

/// A diff as a table: `+` opened, `-` closed, `~` changed owner (old -> new).
pub fn diff(out: &mut impl Write, diff: &portwatch_collector::diff::Diff, tz: &TimeZone) -> io::Result<()> {
    let row = |mark: &str, r: &ListenerRow, who: String| {
        vec![
            mark.to_owned(),
            r.host.clone(),
            proto_label(r),
            r.local_addr.to_string(),
            r.local_port.to_string(),
            r.exposure.as_str().to_owned(),
            who,
            local(r.opened_at, tz),
        ]
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    rows.extend(diff.opened.iter().map(|r| row("+", r, processes(r))));
    rows.extend(diff.closed.iter().map(|r| row("-", r, processes(r))));
    rows.extend(diff.changed.iter().map(|c| {
        row(
            "~",
            &c.after,
            format!("{} -> {}", processes(&c.before), processes(&c.after)),
        )
    }));
    rows.sort_by(|a, b| (a[4].parse::<u32>().ok(), &a[2]).cmp(&(b[4].parse::<u32>().ok(), &b[2])));
    if rows.is_empty() {
        return writeln!(out, "no difference");
    }
    table(
        out,
        &[
            "",
            "HOST",
            "PROTO",
            "LOCAL ADDRESS",
            "PORT",
            "EXPOSURE",
            "PROCESSES",
            "OPENED",
        ],
        &rows,
    )
}

fn proto_label(r: &ListenerRow) -> String {
    use portwatch_common::Family;
    let suffix = match (r.family, r.dual_stack) {
        (Family::Ipv4, _) => "",
        (Family::Ipv6, false) => "6",
        (Family::Ipv6, true) => "46",
    };
    format!("{}{suffix}", r.proto.as_str())
}

/// `nginx[900,901] (nginx.service)`, or `-`.
fn processes(r: &ListenerRow) -> String {
    if r.processes.is_empty() {
        return "-".to_owned();
    }
    let mut groups: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for p in &r.processes {
        let place = match (&p.container, &p.unit) {
            (Some(id), _) => format!(" (container {})", &id[..id.len().min(12)]),
            (None, Some(unit)) => format!(" ({unit})"),
            (None, None) => String::new(),
        };
        groups
            .entry((p.name.clone(), place))
            .or_default()
            .push(p.pid.to_string());
    }
    groups
        .into_iter()
        .map(|((name, place), pids)| format!("{name}[{}]{place}", pids.join(",")))
        .collect::<Vec<_>>()
        .join(", ")
}
