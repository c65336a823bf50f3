//! How a scan is printed: an aligned table like `ss` (default), JSON, or CSV.
//! The JSON and CSV field names are a public contract (see README).
//!
//! Process names, command lines and units are whatever the processes say:
//! table cells are [escaped](text::escape), CSV cells [guarded against
//! formulas](text::csv_cell), and JSON is exact.

use std::borrow::Cow;
use std::io::{self, Write};

use portwatch_common::{text, Process, Socket};
use serde::Serialize;

use crate::firewall::{Answer, Reach};
use crate::peers::{PeerSummary, Peers};

/// Output format of `scan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people, one row per socket.
    Table,
    /// A JSON array of sockets, each with its `processes`.
    Json,
    /// CSV with a header, one row per (socket, process) pair.
    Csv,
}

/// The order every format prints sockets in: by port, then protocol,
/// address, namespace and inode, so two runs of an unchanged host compare
/// equal line by line.
pub fn sort(sockets: &mut [Socket]) {
    sockets.sort_by(|a, b| {
        (
            a.local_port,
            a.proto,
            a.family,
            a.local_addr,
            a.netns,
            a.peer_addr,
            a.peer_port,
            a.inode,
        )
            .cmp(&(
                b.local_port,
                b.proto,
                b.family,
                b.local_addr,
                b.netns,
                b.peer_addr,
                b.peer_port,
                b.inode,
            ))
    });
}

/// One socket of the JSON output: its fields and the firewall's answer.
#[derive(Serialize)]
struct JsonRow<'a> {
    #[serde(flatten)]
    socket: &'a Socket,
    /// `open`, `restricted`, `filtered`, `unknown`; null when not evaluated
    /// (loopback, not listening).
    firewall: Option<Reach>,
    /// The rule that decided, with the sources of a restricted answer, or
    /// why the answer is unknown.
    firewall_rule: Option<String>,
    /// The sources a restricted listener accepts; empty otherwise.
    firewall_sources: &'a [String],
    /// A TCP listener's established connections, summarized; null when not
    /// asked (`--peers`), not a TCP listener, or its namespace not counted.
    peers: Option<&'a PeerSummary>,
}

/// Writes `sockets` in `format`, with the firewall's answer for each
/// (`firewall[i]` for `sockets[i]`; a shorter slice: not evaluated) and,
/// when counted, each TCP listener's inbound peers (the table then has a
/// PEERS column).
pub fn write(
    out: &mut impl Write,
    format: Format,
    sockets: &[Socket],
    firewall: &[Option<Answer>],
    with_peer: bool,
    peers: Option<&Peers>,
) -> io::Result<()> {
    let answer = |i: usize| firewall.get(i).and_then(Option::as_ref);
    let summary = |s: &Socket| peers.and_then(|p| p.of(s));
    match format {
        Format::Table => table(out, sockets, &answer, with_peer, peers.map(|_| &summary as _)),
        Format::Json => {
            let rows: Vec<JsonRow<'_>> = sockets
                .iter()
                .enumerate()
                .map(|(i, socket)| JsonRow {
                    socket,
                    firewall: answer(i).map(|a| a.reach),
                    firewall_rule: answer(i).map(Answer::describe),
                    firewall_sources: answer(i).map_or(&[], |a| a.sources.as_slice()),
                    peers: summary(socket),
                })
                .collect();
            serde_json::to_writer_pretty(&mut *out, &rows)?;
            writeln!(out)
        }
        Format::Csv => csv(out, sockets, &answer, &summary),
    }
}

/// The summary of a socket's inbound peers, when counted.
type PeersOf<'p> = &'p dyn Fn(&Socket) -> Option<&'p PeerSummary>;

/// Two passes over the sockets: one to measure the columns, one to write each
/// row as it is formatted, so memory does not grow with a copy of the table.
/// `peers`: the PEERS column, when counted.
fn table<'a>(
    out: &mut impl Write,
    sockets: &[Socket],
    answer: &dyn Fn(usize) -> Option<&'a Answer>,
    with_peer: bool,
    peers: Option<PeersOf<'_>>,
) -> io::Result<()> {
    let mut header = vec!["PROTO", "STATE", "LOCAL ADDRESS", "PORT"];
    if with_peer {
        header.push("PEER");
    }
    header.extend(["EXPOSURE", "FIREWALL"]);
    if peers.is_some() {
        header.push("PEERS");
    }
    header.extend(["NETNS", "USER", "PROCESSES"]);
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    let mut row = Vec::with_capacity(header.len());
    for (i, s) in sockets.iter().enumerate() {
        table_row(s, answer(i), with_peer, peers.map(|p| p(s)), &mut row);
        for (w, cell) in widths.iter_mut().zip(&row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = String::new();
    let mut write_line = |cells: &mut dyn Iterator<Item = &str>| -> io::Result<()> {
        line.clear();
        for (cell, width) in cells.zip(&widths) {
            line.push_str(cell);
            let pad = width - cell.chars().count() + 2;
            line.extend(std::iter::repeat_n(' ', pad));
        }
        writeln!(out, "{}", line.trim_end())
    };
    write_line(&mut header.iter().copied())?;
    for (i, s) in sockets.iter().enumerate() {
        table_row(s, answer(i), with_peer, peers.map(|p| p(s)), &mut row);
        write_line(&mut row.iter().map(String::as_str))?;
    }
    Ok(())
}

/// One row's cells; `peers`: `None` without a PEERS column, `Some(None)`
/// for a socket without a summary.
fn table_row(
    s: &Socket,
    firewall: Option<&Answer>,
    with_peer: bool,
    peers: Option<Option<&PeerSummary>>,
    row: &mut Vec<String>,
) {
    row.clear();
    row.push(s.proto_label().to_owned());
    row.push(s.state.as_str().to_owned());
    row.push(s.local_addr.to_string());
    row.push(s.local_port.to_string());
    if with_peer {
        row.push(match (s.peer_addr, s.peer_port) {
            (Some(addr), Some(port)) if addr.is_ipv6() => format!("[{addr}]:{port}"),
            (Some(addr), Some(port)) => format!("{addr}:{port}"),
            _ => "-".to_owned(),
        });
    }
    row.push(s.exposure.as_str().to_owned());
    row.push(firewall.map_or("-", |a| a.reach.as_str()).to_owned());
    if let Some(summary) = peers {
        row.push(summary.map_or_else(|| "-".to_owned(), peers_cell));
    }
    row.push(s.netns.to_string());
    row.push(s.user.as_deref().map_or_else(|| s.uid.to_string(), str::to_owned));
    row.push(portwatch_common::process::summary(s.processes.iter().map(|p| &**p)));
    // Any local user names its processes as it likes: every cell shows as
    // text, so no escape sequence reaches the terminal and a row stays one line.
    for cell in row.iter_mut() {
        if let Cow::Owned(escaped) = text::escape(cell) {
            *cell = escaped;
        }
    }
}

/// The PEERS cell: `12 conn / 3 remotes`.
fn peers_cell(p: &PeerSummary) -> String {
    format!(
        "{} conn / {} {}",
        p.connections,
        p.distinct_remotes,
        if p.distinct_remotes == 1 { "remote" } else { "remotes" }
    )
}

/// The socket's CSV columns; the process's ([`portwatch_common::process::CSV_COLUMNS`]) follow.
const SOCKET_COLUMNS: [&str; 13] = [
    "proto",
    "family",
    "local_addr",
    "local_port",
    "peer_addr",
    "peer_port",
    "state",
    "inode",
    "uid",
    "user",
    "netns",
    "exposure",
    "dual_stack",
];

/// The firewall's columns, after the process's (appended, so that the
/// older columns keep their positions).
const FIREWALL_COLUMNS: [&str; 2] = ["firewall", "firewall_rule"];

/// The inbound peers' columns, after the firewall's (empty when not counted).
const PEERS_COLUMNS: [&str; 2] = ["peers_connections", "peers_distinct_remotes"];

fn csv<'a>(
    out: &mut impl Write,
    sockets: &[Socket],
    answer: &dyn Fn(usize) -> Option<&'a Answer>,
    peers: PeersOf<'_>,
) -> io::Result<()> {
    let mut w = ::csv::Writer::from_writer(out);
    w.write_record(
        SOCKET_COLUMNS
            .iter()
            .chain(&portwatch_common::process::CSV_COLUMNS)
            .chain(&FIREWALL_COLUMNS)
            .chain(&PEERS_COLUMNS),
    )?;
    for (i, s) in sockets.iter().enumerate() {
        let appended_fields = [
            answer(i).map(|a| a.reach.as_str().to_owned()).unwrap_or_default(),
            answer(i).map(Answer::describe).unwrap_or_default(),
            peers(s).map(|p| p.connections.to_string()).unwrap_or_default(),
            peers(s).map(|p| p.distinct_remotes.to_string()).unwrap_or_default(),
        ];
        let socket_fields = [
            s.proto.as_str().to_owned(),
            s.family.as_str().to_owned(),
            s.local_addr.to_string(),
            s.local_port.to_string(),
            s.peer_addr.map(|a| a.to_string()).unwrap_or_default(),
            s.peer_port.map(|p| p.to_string()).unwrap_or_default(),
            s.state.as_str().to_owned(),
            s.inode.to_string(),
            s.uid.to_string(),
            s.user.as_deref().unwrap_or_default().to_owned(),
            s.netns.to_string(),
            s.exposure.as_str().to_owned(),
            s.dual_stack.to_string(),
        ];
        let owners: Vec<Option<&Process>> = if s.processes.is_empty() {
            vec![None]
        } else {
            s.processes.iter().map(|p| Some(&**p)).collect()
        };
        for p in owners {
            let process_fields = match p {
                Some(p) => p.csv_fields(),
                None => Default::default(),
            };
            let cells = socket_fields
                .iter()
                .chain(process_fields.iter())
                .chain(appended_fields.iter());
            w.write_record(cells.map(|cell| text::csv_cell(cell).into_owned()))?;
        }
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use portwatch_common::{Exposure, Family, Proto, State};

    fn nginx() -> Socket {
        let proc = |pid| Process {
            pid,
            name: "nginx".into(),
            cmdline: Some("nginx: worker process, \"quoted\"".into()),
            exe: Some("/usr/sbin/nginx".into()),
            uid: Some(33),
            user: Some("www-data".into()),
            container: None,
            unit: Some("nginx.service".into()),
        };
        Socket {
            proto: Proto::Tcp,
            family: Family::Ipv6,
            local_addr: "::".parse().unwrap(),
            local_port: 80,
            peer_addr: None,
            peer_port: None,
            state: State::Listen,
            inode: 555,
            uid: 0,
            user: Some("root".into()),
            netns: 4026531840,
            exposure: Exposure::Wildcard,
            dual_stack: true,
            processes: vec![std::sync::Arc::new(proc(900)), std::sync::Arc::new(proc(901))],
        }
    }

    fn render(format: Format, sockets: &[Socket]) -> String {
        let mut out = Vec::new();
        write(&mut out, format, sockets, &[], false, None).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn table_aligns_columns_and_groups_processes() {
        let mut lonely = nginx();
        lonely.local_port = 5;
        lonely.local_addr = "127.0.0.1".parse().unwrap();
        lonely.family = Family::Ipv4;
        lonely.dual_stack = false;
        lonely.exposure = Exposure::Loopback;
        lonely.processes.clear();
        let text = render(Format::Table, &[lonely, nginx()]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].starts_with("PROTO  STATE   LOCAL ADDRESS  PORT  EXPOSURE  FIREWALL  NETNS       USER  PROCESSES"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("tcp    LISTEN  127.0.0.1      5     loopback"),
            "{text}"
        );
        assert!(lines[1].ends_with(" -"), "{text}");
        assert!(
            lines[2].starts_with(
                "tcp46  LISTEN  ::             80    wildcard  -         4026531840  root  nginx[900,901] (nginx.service)"
            ),
            "{text}"
        );
    }

    #[test]
    fn csv_has_one_row_per_owner_and_quotes_what_needs_it() {
        let text = render(Format::Csv, &[nginx()]);
        let mut reader = ::csv::Reader::from_reader(text.as_bytes());
        assert_eq!(
            reader.headers().unwrap().iter().collect::<Vec<_>>(),
            "proto,family,local_addr,local_port,peer_addr,peer_port,state,inode,uid,user,netns,exposure,dual_stack,\
             pid,name,cmdline,exe,process_uid,process_user,container,unit,firewall,firewall_rule,\
             peers_connections,peers_distinct_remotes"
                .split(',')
                .collect::<Vec<_>>()
        );
        let rows: Vec<::csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(&rows[0][13], "900");
        assert_eq!(&rows[1][13], "901");
        assert_eq!(&rows[0][15], "nginx: worker process, \"quoted\"");
        assert_eq!(&rows[0][12], "true");
        assert_eq!(&rows[0][4], "");
    }

    #[test]
    fn json_is_an_array_of_the_contract_objects() {
        let v: serde_json::Value = serde_json::from_str(&render(Format::Json, &[nginx()])).unwrap();
        assert_eq!(v[0]["local_port"], 80);
        assert_eq!(v[0]["processes"][1]["pid"], 901);
        assert_eq!(v[0]["processes"][0]["container"], serde_json::Value::Null);
    }

    /// What a local process can name itself: an OSC 52 clipboard write, a
    /// bell, and a carriage return and newline that would start a forged row.
    const HOSTILE: &str = "\x1b]52;c;ZXZpbA==\x07evil\r\nroot";

    fn hostile() -> Socket {
        let mut s = nginx();
        let mut p = (*s.processes[0]).clone();
        p.name = HOSTILE.into();
        p.unit = Some("a\u{202e}b.service".into());
        s.processes = vec![std::sync::Arc::new(p)];
        s.user = Some("root\u{9b}2J".into());
        s
    }

    #[test]
    fn a_hostile_process_name_is_text_in_the_table_and_exact_in_json() {
        let text = render(Format::Table, &[hostile(), nginx()]);
        let raw: Vec<char> = text
            .chars()
            .filter(|&c| c != '\n' && portwatch_common::text::needs_escape(c))
            .collect();
        assert_eq!(raw, Vec::<char>::new(), "{text:?}");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "a header and two rows: {text}");
        assert!(
            lines[1].ends_with("root\\u{9b}2J  \\x1b]52;c;ZXZpbA==\\x07evil\\r\\nroot[900] (a\\u{202e}b.service)"),
            "{text}"
        );
        // The columns are measured on what is shown.
        assert_eq!(lines[1].find("root\\u{9b}2J"), lines[2].find("root"), "{text}");

        let text = render(Format::Json, &[hostile()]);
        assert!(!text.contains('\x1b'), "serde_json escapes C0 controls");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v[0]["processes"][0]["name"], HOSTILE);
        assert_eq!(v[0]["processes"][0]["unit"], "a\u{202e}b.service");
    }

    #[test]
    fn csv_guards_cells_a_spreadsheet_would_run_and_leaves_numbers_alone() {
        let mut s = nginx();
        let mut p = (*s.processes[0]).clone();
        p.name = "-bash".into();
        p.cmdline = Some("=HYPERLINK(\"http://x\", \"click\")".into());
        p.exe = Some("@SUM(A1)".into());
        p.unit = Some("+x.service".into());
        s.processes = vec![std::sync::Arc::new(p)];
        s.local_port = 8080;
        let text = render(Format::Csv, &[s]);
        let row = &text.lines().nth(1).unwrap();
        // The guard comes first, inside the quotes the csv writer adds.
        assert!(
            row.contains(",\"'=HYPERLINK(\"\"http://x\"\", \"\"click\"\")\","),
            "{row}"
        );
        let mut reader = ::csv::Reader::from_reader(text.as_bytes());
        let rows: Vec<::csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(&rows[0][3], "8080");
        assert_eq!(&rows[0][13], "900");
        assert_eq!(&rows[0][14], "'-bash");
        assert_eq!(&rows[0][15], "'=HYPERLINK(\"http://x\", \"click\")");
        assert_eq!(&rows[0][16], "'@SUM(A1)");
        assert_eq!(&rows[0][20], "'+x.service");
        assert_eq!(&rows[0][2], "::", "an address is left alone");
    }

    #[test]
    fn the_firewall_answer_is_a_column_and_json_fields_and_loopback_shows_a_dash() {
        let mut lo = nginx();
        lo.local_port = 5;
        lo.local_addr = "127.0.0.1".parse().unwrap();
        lo.exposure = Exposure::Loopback;
        let sockets = [lo, nginx()];
        let answers = [
            None,
            Some(Answer {
                reach: Reach::Restricted,
                sources: vec!["ip saddr 10.0.0.0/8".to_owned()],
                rule: "inet filter input handle 11".to_owned(),
            }),
        ];
        let mut out = Vec::new();
        write(&mut out, Format::Table, &sockets, &answers, false, None).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].contains("loopback  -           4026531840"), "{text}");
        assert!(lines[2].contains("wildcard  restricted  4026531840"), "{text}");

        let mut out = Vec::new();
        write(&mut out, Format::Json, &sockets, &answers, false, None).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v[0]["firewall"], serde_json::Value::Null);
        assert_eq!(v[0]["firewall_rule"], serde_json::Value::Null);
        assert_eq!(v[1]["firewall"], "restricted");
        assert_eq!(
            v[1]["firewall_rule"],
            "inet filter input handle 11 (from ip saddr 10.0.0.0/8)"
        );
        assert_eq!(v[1]["firewall_sources"][0], "ip saddr 10.0.0.0/8");
        assert_eq!(v[1]["local_port"], 80, "the socket's fields are still there");

        let mut out = Vec::new();
        write(&mut out, Format::Csv, &sockets, &answers, false, None).unwrap();
        let mut reader = ::csv::Reader::from_reader(out.as_slice());
        let rows: Vec<::csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(&rows[0][21], "");
        // Two owners each: two rows per socket.
        assert_eq!(&rows[1][21], "");
        assert_eq!(&rows[2][21], "restricted");
        assert_eq!(&rows[3][22], "inet filter input handle 11 (from ip saddr 10.0.0.0/8)");
    }

    #[test]
    fn peers_are_a_column_and_a_json_object_on_tcp_listeners_and_null_when_not_asked() {
        use crate::peers::{Classes, NamespacePeers, TopRemote};
        let mut udp = nginx();
        udp.proto = Proto::Udp;
        udp.state = State::Unconn;
        udp.local_port = 53;
        let mut peers = Peers::default();
        let summary = PeerSummary {
            connections: 12,
            distinct_remotes: 3,
            top: vec![TopRemote {
                addr: "10.0.0.7".parse().unwrap(),
                connections: 10,
            }],
            classes: Classes {
                loopback: 1,
                private: 11,
                public: 0,
            },
        };
        peers.by_netns.insert(
            4026531840,
            NamespacePeers {
                listeners: [(("::".parse().unwrap(), 80), summary)].into_iter().collect(),
                other: 0,
            },
        );
        let sockets = [udp, nginx()];
        let render = |format, peers| {
            let mut out = Vec::new();
            write(&mut out, format, &sockets, &[], false, peers).unwrap();
            String::from_utf8(out).unwrap()
        };

        let text = render(Format::Table, Some(&peers));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("FIREWALL  PEERS                NETNS"), "{text}");
        assert!(lines[1].contains("  -                    4026531840"), "{text}");
        assert!(lines[2].contains("  12 conn / 3 remotes  4026531840"), "{text}");
        assert!(!render(Format::Table, None).contains("PEERS"));

        let v: serde_json::Value = serde_json::from_str(&render(Format::Json, Some(&peers))).unwrap();
        assert_eq!(v[0]["peers"], serde_json::Value::Null, "UDP has no peers");
        assert_eq!(
            v[1]["peers"],
            serde_json::json!({
                "connections": 12,
                "distinct_remotes": 3,
                "top": [{"addr": "10.0.0.7", "connections": 10}],
                "classes": {"loopback": 1, "private": 11, "public": 0},
            })
        );
        let v: serde_json::Value = serde_json::from_str(&render(Format::Json, None)).unwrap();
        assert_eq!(v[1]["peers"], serde_json::Value::Null, "not asked");
        assert_eq!(v[1]["local_port"], 80);

        let text = render(Format::Csv, Some(&peers));
        let mut reader = ::csv::Reader::from_reader(text.as_bytes());
        let rows: Vec<::csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        // Two owners each: two rows per socket.
        assert_eq!((&rows[1][23], &rows[1][24]), ("", ""));
        assert_eq!((&rows[2][23], &rows[2][24]), ("12", "3"));
    }

    #[test]
    fn sort_is_by_port_first() {
        let mut a = nginx();
        a.local_port = 443;
        let mut sockets = vec![a, nginx()];
        sort(&mut sockets);
        assert_eq!(sockets[0].local_port, 80);
    }
}
