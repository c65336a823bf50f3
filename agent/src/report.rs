//! How a scan is printed: an aligned table like `ss` (default), JSON, or CSV.
//! The JSON and CSV field names are a public contract (see README).

use std::io::{self, Write};

use portwatch_common::{Process, Socket};

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
            w.write_record(socket_fields.iter().chain(process_fields.iter()))?;
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

    #[test]
    fn sort_is_by_port_first() {
        let mut a = nginx();
        a.local_port = 443;
        let mut sockets = vec![a, nginx()];
        sort(&mut sockets);
        assert_eq!(sockets[0].local_port, 80);
    }
}
