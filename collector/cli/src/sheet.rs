//! CSV for spreadsheets (`--format csv`): a header row, then rows; times in UTC (RFC 3339), as in
//! JSON. The columns of each command are defined once here, as constants (README: CLI lists them).
//!
//! Listener answers (`ports`, `who`, `history`, `diff`) give one row per (listener, process): a
//! listener held by three processes is three rows, one held by none is one row with empty process
//! columns. Their columns are those of `portwatch export --format csv`, so a sheet made from either
//! reads the same. Every cell is [guarded](text::csv_cell) against formulas (a process may name
//! itself `=HYPERLINK(...)`), and the `csv` crate quotes.

use std::io::{self, Write};

use portwatch_common::process::CSV_COLUMNS as PROCESS_COLUMNS;
use portwatch_common::text;
use portwatch_model::baseline::BaselineView;
use portwatch_model::diff::Diff;
use portwatch_model::trend::Trends;
use portwatch_model::{AlertRow, BaselineLogRow, Finding, HostRow, HostStatus, ListenerRow};

/// A listener interval's columns, the same as the collector's export; [`PROCESS_COLUMNS`] follow
/// (`pid` ... `unit`).
pub use portwatch_model::history::INTERVAL_CSV_COLUMNS as LISTENER_COLUMNS;

/// `diff`: what happened to the listener (`opened`, `closed`, `changed`: its owners), and which
/// side the row shows (`after` for opened, `before` for closed, both for changed); then the
/// listener's and process's columns.
pub const DIFF_COLUMNS: [&str; 2] = ["change", "side"];

/// `hosts`: one row per host. `tags` is `key=value` pairs separated by spaces.
pub const HOST_COLUMNS: [&str; 15] = [
    "host",
    "status",
    "first_seen",
    "last_seen",
    "clock_skew_ms",
    "clock_skewed",
    "listeners",
    "dropped_reports",
    "interval_ms",
    "agent_version",
    "detection",
    "os",
    "kernel",
    "boot_time",
    "tags",
];

/// `drift`: one row per finding, most serious first; `processes` holds its owners as one cell
/// (`sshd[812]`), as the collector reports them.
pub const FINDING_COLUMNS: [&str; 14] = [
    "severity",
    "kind",
    "host",
    "proto",
    "local_addr",
    "local_port",
    "processes",
    "baseline",
    "expected",
    "owner",
    "reason",
    "more",
    "key",
    "message",
];

/// `alerts`: one row per alert, newest first; the finding that opened it in `proto` ... `processes`.
pub const ALERT_COLUMNS: [&str; 15] = [
    "id",
    "state",
    "severity",
    "kind",
    "host",
    "proto",
    "local_addr",
    "local_port",
    "processes",
    "opened_at",
    "acked_at",
    "acked_by",
    "ack_comment",
    "resolved_at",
    "message",
];

/// `trends`: one table in long form, a row per point of each section, so a filter on `section`
/// gives each of the table output's parts:
///
/// - `open_listeners`: `at`, `count` (listeners open at that instant);
/// - `new_ports_24h`, `new_ports_7d`: `proto`, `port`, `host` (where first seen), `at` (when);
/// - `short_lived`: `host`, `proto`, `port`, `process`, `count` (times), `shortest_ms`, `at` (last opened);
/// - `recurring`: `host`, `proto`, `port`, `hour_utc`, `count` (days);
/// - `top_ports`: `proto`, `port`, `count` (hosts).
pub const TREND_COLUMNS: [&str; 9] = [
    "section",
    "at",
    "host",
    "proto",
    "port",
    "process",
    "count",
    "shortest_ms",
    "hour_utc",
];

/// `baseline list`: one row per baseline; `hosts` and `tags` (`key=value`) separated by spaces,
/// `entries` empty for a stored baseline that no longer parses.
pub const BASELINE_COLUMNS: [&str; 6] = ["name", "hosts", "tags", "entries", "applied_at", "applied_by"];

/// `baseline log`: one row per change, oldest first as the collector gives them.
pub const BASELINE_LOG_COLUMNS: [&str; 5] = ["at", "name", "action", "actor", "comment"];

/// A CSV writer on `out` whose header row is written.
fn sheet<W: Write>(out: W, header: impl IntoIterator<Item = &'static str>) -> io::Result<csv::Writer<W>> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(header)?;
    Ok(w)
}

/// Writes one row, every cell [guarded](text::csv_cell).
fn row<W: Write>(w: &mut csv::Writer<W>, cells: impl IntoIterator<Item = String>) -> io::Result<()> {
    let cells: Vec<String> = cells
        .into_iter()
        .map(|cell| match text::csv_cell(&cell) {
            std::borrow::Cow::Borrowed(_) => cell,
            std::borrow::Cow::Owned(guarded) => guarded,
        })
        .collect();
    Ok(w.write_record(&cells)?)
}

fn opt<T: ToString>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

/// The [`LISTENER_COLUMNS`] of `r`.
fn listener_cells(r: &ListenerRow) -> [String; 15] {
    r.csv_cells()
}

/// One row per (listener, process) of `r`, each after the cells in `lead`.
fn listener_rows<W: Write>(w: &mut csv::Writer<W>, lead: &[&str], r: &ListenerRow) -> io::Result<()> {
    let lead = lead.iter().map(|s| (*s).to_owned());
    let socket = listener_cells(r);
    if r.listener.processes.is_empty() {
        let empty = std::iter::repeat_n(String::new(), PROCESS_COLUMNS.len());
        return row(w, lead.chain(socket).chain(empty));
    }
    for p in &r.listener.processes {
        row(w, lead.clone().chain(socket.iter().cloned()).chain(p.csv_fields()))?;
    }
    Ok(())
}

/// `ports`, `who`, `history`.
pub fn listeners(out: &mut impl Write, rows: &[ListenerRow]) -> io::Result<()> {
    let mut w = sheet(out, LISTENER_COLUMNS.into_iter().chain(PROCESS_COLUMNS))?;
    for r in rows {
        listener_rows(&mut w, &[], r)?;
    }
    w.flush()
}

/// `diff`, in the table's order (by port, then protocol).
pub fn diff(out: &mut impl Write, diff: &Diff) -> io::Result<()> {
    let header = DIFF_COLUMNS.into_iter().chain(LISTENER_COLUMNS).chain(PROCESS_COLUMNS);
    let mut w = sheet(out, header)?;
    let mut marked: Vec<(&str, &str, &ListenerRow)> = Vec::new();
    marked.extend(diff.opened.iter().map(|r| ("opened", "after", r)));
    marked.extend(diff.closed.iter().map(|r| ("closed", "before", r)));
    for c in &diff.changed {
        marked.push(("changed", "before", &c.before));
        marked.push(("changed", "after", &c.after));
    }
    // Stable: a change's before row stays ahead of its after row.
    marked.sort_by_key(|(_, _, r)| (r.listener.local_port, r.listener.proto));
    for (change, side, r) in marked {
        listener_rows(&mut w, &[change, side], r)?;
    }
    w.flush()
}

/// `hosts`.
pub fn hosts(out: &mut impl Write, hosts: &[HostRow]) -> io::Result<()> {
    let mut w = sheet(out, HOST_COLUMNS)?;
    for h in hosts {
        let tags: Vec<String> = h.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        row(
            &mut w,
            [
                h.host.clone(),
                match h.status {
                    HostStatus::Up => "up",
                    HostStatus::Silent => "silent",
                }
                .to_owned(),
                h.first_seen.to_string(),
                h.last_seen.to_string(),
                opt(h.clock_skew_ms),
                h.clock_skewed.to_string(),
                h.listeners.to_string(),
                h.dropped_reports.to_string(),
                h.interval_ms.to_string(),
                opt(h.agent_version.as_deref()),
                opt(h.detection.as_deref()),
                opt(h.os.as_deref()),
                opt(h.kernel.as_deref()),
                opt(h.boot_time),
                tags.join(" "),
            ],
        )?;
    }
    w.flush()
}

/// `drift`, most serious first (as the table).
pub fn findings(out: &mut impl Write, findings: &[Finding]) -> io::Result<()> {
    let mut w = sheet(out, FINDING_COLUMNS)?;
    for f in crate::render::most_serious_first(findings) {
        row(
            &mut w,
            [
                f.severity.as_str().to_owned(),
                f.kind.as_str().to_owned(),
                f.host.clone(),
                opt(f.proto.map(|p| p.as_str())),
                opt(f.local_addr),
                opt(f.local_port),
                opt(f.processes.as_deref()),
                opt(f.baseline.as_deref()),
                opt(f.expected.as_deref()),
                opt(f.owner.as_deref()),
                opt(f.reason.as_deref()),
                opt(f.more),
                f.key.clone(),
                f.message.clone(),
            ],
        )?;
    }
    w.flush()
}

/// `alerts`.
pub fn alerts(out: &mut impl Write, alerts: &[AlertRow]) -> io::Result<()> {
    let mut w = sheet(out, ALERT_COLUMNS)?;
    for a in alerts {
        let f = &a.finding;
        row(
            &mut w,
            [
                a.id.to_string(),
                a.state.as_str().to_owned(),
                a.severity.as_str().to_owned(),
                a.kind.as_str().to_owned(),
                a.host.clone(),
                opt(f.proto.map(|p| p.as_str())),
                opt(f.local_addr),
                opt(f.local_port),
                opt(f.processes.as_deref()),
                a.opened_at.to_string(),
                opt(a.acked_at),
                opt(a.acked_by.as_deref()),
                opt(a.ack_comment.as_deref()),
                opt(a.resolved_at),
                a.message.clone(),
            ],
        )?;
    }
    w.flush()
}

/// `trends`, in the sections' order of the table output.
pub fn trends(out: &mut impl Write, t: &Trends) -> io::Result<()> {
    let mut w = sheet(out, TREND_COLUMNS)?;
    // section, at, host, proto, port, process, count, shortest_ms, hour_utc
    let mut put = |cells: [String; 9]| row(&mut w, cells);
    let none = String::new;
    for p in &t.open_listeners {
        put([
            "open_listeners".into(),
            p.at.to_string(),
            none(),
            none(),
            none(),
            none(),
            p.listeners.to_string(),
            none(),
            none(),
        ])?;
    }
    for (section, list) in [("new_ports_24h", &t.new_ports_24h), ("new_ports_7d", &t.new_ports_7d)] {
        for f in list {
            put([
                section.into(),
                f.first_seen.to_string(),
                f.host.clone(),
                f.proto.as_str().into(),
                f.port.to_string(),
                none(),
                none(),
                none(),
                none(),
            ])?;
        }
    }
    for s in &t.short_lived {
        put([
            "short_lived".into(),
            s.last_opened_at.to_string(),
            s.host.clone(),
            s.proto.as_str().into(),
            s.port.to_string(),
            opt(s.process.as_deref()),
            s.count.to_string(),
            s.shortest_ms.to_string(),
            none(),
        ])?;
    }
    for r in &t.recurring {
        put([
            "recurring".into(),
            none(),
            r.host.clone(),
            r.proto.as_str().into(),
            r.port.to_string(),
            none(),
            r.days.to_string(),
            none(),
            r.hour_utc.to_string(),
        ])?;
    }
    for p in &t.top_ports {
        put([
            "top_ports".into(),
            none(),
            none(),
            p.proto.as_str().into(),
            p.port.to_string(),
            none(),
            p.hosts.to_string(),
            none(),
            none(),
        ])?;
    }
    w.flush()
}

/// `baseline list`.
pub fn baselines(out: &mut impl Write, list: &[BaselineView]) -> io::Result<()> {
    let mut w = sheet(out, BASELINE_COLUMNS)?;
    for b in list {
        let (hosts, tags, entries) = match &b.baseline {
            Some(p) => {
                let tags: Vec<String> = p.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                (p.hosts.join(" "), tags.join(" "), p.listeners.len().to_string())
            }
            None => (String::new(), String::new(), String::new()),
        };
        row(
            &mut w,
            [
                b.stored.name.clone(),
                hosts,
                tags,
                entries,
                b.stored.applied_at.to_string(),
                b.stored.applied_by.clone(),
            ],
        )?;
    }
    w.flush()
}

/// `baseline log`.
pub fn baseline_log(out: &mut impl Write, log: &[BaselineLogRow]) -> io::Result<()> {
    let mut w = sheet(out, BASELINE_LOG_COLUMNS)?;
    for r in log {
        row(
            &mut w,
            [
                r.at.to_string(),
                r.name.clone(),
                r.action.as_str().to_owned(),
                r.actor.clone(),
                opt(r.comment.as_deref()),
            ],
        )?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use portwatch_common::{Exposure, Family, Listener, Process, Proto};
    use portwatch_model::diff::{Change, Diff};
    use portwatch_model::trend::{FirstSeen, Point, Recurring, ShortLived, TopPort, Trends};
    use portwatch_model::{Finding, HostRow, HostStatus, Kind, ListenerRow};

    fn process(pid: u32, name: &str) -> Process {
        Process {
            pid,
            name: name.into(),
            cmdline: Some(format!("{name} -D").into()),
            exe: None,
            uid: Some(0),
            user: Some("root".into()),
            container: None,
            unit: Some("nginx.service".into()),
        }
    }

    fn row(port: u16, processes: Vec<Process>) -> ListenerRow {
        ListenerRow {
            host: "web-3".into(),
            listener: Listener {
                netns: 4026531840,
                proto: Proto::Tcp,
                family: Family::Ipv4,
                local_addr: "0.0.0.0".parse().unwrap(),
                local_port: port,
                inode: 9,
                uid: 0,
                user: None,
                exposure: Exposure::Wildcard,
                dual_stack: false,
                processes,
                firewall: None,
            },
            opened_at: "2026-11-24T03:00:00Z".parse().unwrap(),
            closed_at: None,
        }
    }

    /// `text` read back as CSV (every row as long as the header, or the read fails): the header and the rows.
    fn read(text: &[u8]) -> (Vec<String>, Vec<Vec<String>>) {
        let mut r = csv::Reader::from_reader(text);
        let header = r.headers().unwrap().iter().map(str::to_owned).collect();
        let rows = r
            .records()
            .map(|rec| rec.unwrap().iter().map(str::to_owned).collect())
            .collect();
        (header, rows)
    }

    fn column<'a>(header: &[String], row: &'a [String], name: &str) -> &'a str {
        let i = header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name}"));
        &row[i]
    }

    #[test]
    fn a_listener_gives_a_row_per_process_and_one_without_any() {
        let three = row(
            80,
            vec![process(900, "nginx"), process(901, "nginx"), process(902, "nginx")],
        );
        let mut closed = row(8080, vec![]);
        closed.closed_at = Some("2026-11-24T04:00:00Z".parse().unwrap());
        let mut out = Vec::new();
        super::listeners(&mut out, &[three, closed]).unwrap();
        let (header, rows) = read(&out);
        let expected: Vec<&str> = super::LISTENER_COLUMNS
            .into_iter()
            .chain(super::PROCESS_COLUMNS)
            .collect();
        assert_eq!(header, expected);
        assert_eq!(
            header.join(","),
            "host,proto,family,local_addr,local_port,netns,inode,uid,user,exposure,dual_stack,firewall,firewall_rule,\
             opened_at,closed_at,pid,name,cmdline,exe,process_uid,process_user,container,unit"
        );
        assert_eq!(
            rows.len(),
            4,
            "three owners, then one row for the listener with none: {rows:?}"
        );
        let pids: Vec<&str> = rows.iter().map(|r| column(&header, r, "pid")).collect();
        assert_eq!(pids, ["900", "901", "902", ""]);
        assert_eq!(column(&header, &rows[0], "local_port"), "80");
        assert_eq!(column(&header, &rows[0], "opened_at"), "2026-11-24T03:00:00Z");
        assert_eq!(column(&header, &rows[0], "closed_at"), "");
        assert_eq!(column(&header, &rows[0], "unit"), "nginx.service");
        assert_eq!(column(&header, &rows[3], "closed_at"), "2026-11-24T04:00:00Z");
        assert!(rows[3][15..].iter().all(String::is_empty), "{:?}", rows[3]);
    }

    #[test]
    fn a_process_named_as_a_formula_is_text_in_every_listener_sheet() {
        let mut evil = process(4242, "=HYPERLINK(\"http://x\",\"y\")");
        evil.cmdline = Some("-bash\r\n=1+1,\"quoted\"".into());
        let mut out = Vec::new();
        super::listeners(&mut out, &[row(22, vec![evil.clone()])]).unwrap();
        let (header, rows) = read(&out);
        assert_eq!(rows.len(), 1, "the newline stays inside its quoted cell: {rows:?}");
        assert_eq!(column(&header, &rows[0], "name"), "'=HYPERLINK(\"http://x\",\"y\")");
        assert_eq!(column(&header, &rows[0], "cmdline"), "'-bash\r\n=1+1,\"quoted\"");
        assert_eq!(column(&header, &rows[0], "pid"), "4242");

        let diff = Diff {
            opened: vec![row(22, vec![evil])],
            ..Diff::default()
        };
        let mut out = Vec::new();
        super::diff(&mut out, &diff).unwrap();
        let (header, rows) = read(&out);
        assert_eq!(column(&header, &rows[0], "name"), "'=HYPERLINK(\"http://x\",\"y\")");
    }

    #[test]
    fn a_diff_says_what_changed_and_shows_both_sides_of_an_owner_change() {
        let diff = Diff {
            opened: vec![row(443, vec![process(1, "nginx")])],
            closed: vec![row(80, vec![])],
            changed: vec![Change {
                before: row(22, vec![process(10, "sshd")]),
                after: row(22, vec![process(11, "sshd"), process(12, "sshd")]),
            }],
        };
        let mut out = Vec::new();
        super::diff(&mut out, &diff).unwrap();
        let (header, rows) = read(&out);
        assert_eq!(&header[..3], ["change", "side", "host"]);
        let got: Vec<(&str, &str, &str, &str)> = rows
            .iter()
            .map(|r| {
                (
                    column(&header, r, "change"),
                    column(&header, r, "side"),
                    column(&header, r, "local_port"),
                    column(&header, r, "pid"),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("changed", "before", "22", "10"),
                ("changed", "after", "22", "11"),
                ("changed", "after", "22", "12"),
                ("closed", "before", "80", ""),
                ("opened", "after", "443", "1"),
            ]
        );
    }

    #[test]
    fn hosts_findings_and_trends_have_their_columns_and_utc_times() {
        let at: jiff::Timestamp = "2026-11-24T03:00:00Z".parse().unwrap();
        let host = HostRow {
            host: "web-3".into(),
            status: HostStatus::Silent,
            first_seen: at,
            last_seen: at,
            agent_version: Some("0.1.0".into()),
            interval_ms: 10_000,
            os: Some("@SUM(A1)".into()),
            kernel: None,
            boot_time: None,
            tags: [
                ("env".to_owned(), "prod".to_owned()),
                ("role".to_owned(), "web".to_owned()),
            ]
            .into(),
            listeners: 3,
            dropped_reports: 0,
            clock_skew_ms: Some(-45_000),
            clock_skew_at: Some(at),
            clock_skewed: true,
            detection: Some("events".into()),
            host_netns: None,
            addresses: Vec::new(),
        };
        let mut out = Vec::new();
        super::hosts(&mut out, &[host]).unwrap();
        let (header, rows) = read(&out);
        assert_eq!(header, super::HOST_COLUMNS);
        assert_eq!(
            rows[0],
            [
                "web-3",
                "silent",
                "2026-11-24T03:00:00Z",
                "2026-11-24T03:00:00Z",
                "-45000",
                "true",
                "3",
                "0",
                "10000",
                "0.1.0",
                "events",
                "'@SUM(A1)",
                "",
                "",
                "env=prod role=web"
            ]
        );

        let info = Finding::new(Kind::Unbaselined, "web-3", "unbaselined:tcp:22".to_owned());
        let critical = Finding {
            proto: Some(Proto::Tcp),
            local_port: Some(23),
            ..Finding::new(Kind::RiskyPortExposed, "web-3", "risky:tcp:23".to_owned())
        };
        let mut out = Vec::new();
        super::findings(&mut out, &[info, critical]).unwrap();
        let (header, rows) = read(&out);
        assert_eq!(header, super::FINDING_COLUMNS);
        let kinds: Vec<&str> = rows.iter().map(|r| column(&header, r, "kind")).collect();
        assert_eq!(kinds, ["risky-port-exposed", "unbaselined"], "most serious first");
        assert_eq!(column(&header, &rows[0], "local_port"), "23");

        let t = Trends {
            host: None,
            since: at,
            until: at,
            bucket_secs: 3600,
            open_listeners: vec![Point { at, listeners: 7 }],
            new_ports_24h: vec![FirstSeen {
                proto: Proto::Udp,
                port: 53,
                first_seen: at,
                host: "dns-1".into(),
            }],
            new_ports_7d: vec![],
            short_lived: vec![ShortLived {
                host: "web-3".into(),
                proto: Proto::Tcp,
                port: 4444,
                process: Some("nc".into()),
                count: 2,
                shortest_ms: 120,
                last_opened_at: at,
            }],
            recurring: vec![Recurring {
                host: "web-3".into(),
                proto: Proto::Tcp,
                port: 9000,
                hour_utc: 3,
                days: 4,
            }],
            top_ports: vec![TopPort {
                proto: Proto::Tcp,
                port: 22,
                hosts: 12,
            }],
        };
        let mut out = Vec::new();
        super::trends(&mut out, &t).unwrap();
        let (header, rows) = read(&out);
        assert_eq!(header, super::TREND_COLUMNS);
        let lines: Vec<String> = rows.iter().map(|r| r.join(",")).collect();
        assert_eq!(
            lines,
            [
                "open_listeners,2026-11-24T03:00:00Z,,,,,7,,",
                "new_ports_24h,2026-11-24T03:00:00Z,dns-1,udp,53,,,,",
                "short_lived,2026-11-24T03:00:00Z,web-3,tcp,4444,nc,2,120,",
                "recurring,,web-3,tcp,9000,,4,,3",
                "top_ports,,,tcp,22,,12,,",
            ]
        );
    }

    #[test]
    fn an_empty_answer_is_the_header_alone() {
        let mut out = Vec::new();
        super::alerts(&mut out, &[]).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), super::ALERT_COLUMNS.join(",") + "\n");
    }
}
