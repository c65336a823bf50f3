//! How a scan is printed: an aligned table like `ss` (default), JSON, or CSV.
//! The JSON and CSV field names are a public contract (see README).
//!
//! Process names, command lines and units are whatever the processes say:
//! table cells are [escaped](text::escape), CSV cells [guarded against
//! formulas](text::csv_cell), and JSON is exact.

use std::borrow::Cow;
use std::io::{self, Write};

use portwatch_common::{text, Process, Socket};

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

/// Writes `sockets` in `format`.
pub fn write(out: &mut impl Write, format: Format, sockets: &[Socket], with_peer: bool) -> io::Result<()> {
    match format {
        Format::Table => table(out, sockets, with_peer),
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, sockets)?;
            writeln!(out)
        }
        Format::Csv => csv(out, sockets),
    }
}

/// Two passes over the sockets: one to measure the columns, one to write each
/// row as it is formatted, so memory does not grow with a copy of the table.
fn table(out: &mut impl Write, sockets: &[Socket], with_peer: bool) -> io::Result<()> {
    let mut header = vec!["PROTO", "STATE", "LOCAL ADDRESS", "PORT"];
    if with_peer {
        header.push("PEER");
    }
    header.extend(["EXPOSURE", "NETNS", "USER", "PROCESSES"]);
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    let mut row = Vec::with_capacity(header.len());
    for s in sockets {
        table_row(s, with_peer, &mut row);
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
    for s in sockets {
        table_row(s, with_peer, &mut row);
        write_line(&mut row.iter().map(String::as_str))?;
    }
    Ok(())
}

fn table_row(s: &Socket, with_peer: bool, row: &mut Vec<String>) {
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

fn csv(out: &mut impl Write, sockets: &[Socket]) -> io::Result<()> {
    let mut w = ::csv::Writer::from_writer(out);
    w.write_record(SOCKET_COLUMNS.iter().chain(&portwatch_common::process::CSV_COLUMNS))?;
    for s in sockets {
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
            let cells = socket_fields.iter().chain(process_fields.iter());
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
        write(&mut out, format, sockets, false).unwrap();
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
            lines[0].starts_with("PROTO  STATE   LOCAL ADDRESS  PORT  EXPOSURE  NETNS       USER  PROCESSES"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("tcp    LISTEN  127.0.0.1      5     loopback"),
            "{text}"
        );
        assert!(lines[1].ends_with(" -"), "{text}");
        assert!(
            lines[2].starts_with(
                "tcp46  LISTEN  ::             80    wildcard  4026531840  root  nginx[900,901] (nginx.service)"
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
             pid,name,cmdline,exe,process_uid,process_user,container,unit"
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
    fn sort_is_by_port_first() {
        let mut a = nginx();
        a.local_port = 443;
        let mut sockets = vec![a, nginx()];
        sort(&mut sockets);
        assert_eq!(sockets[0].local_port, 80);
    }
}
