//! Listener intervals as CSV or NDJSON lines, for `portwatch export`: one
//! interval (NDJSON) or one (interval, process) pair (CSV) at a time, so an
//! export of any size streams.
//!
//! CSV is opened in spreadsheets, and its text columns carry what agents
//! report (a process can name itself `=HYPERLINK(...)`): every cell that a
//! spreadsheet would run as a formula, one beginning with `=`, `+`, `-`,
//! `@`, a tab or a carriage return and not a plain number, gets a leading
//! `'` ([`portwatch_common::text::csv_cell`]). Ports, pids and the other
//! numeric columns never begin so and are never changed. NDJSON is exact.

use portwatch_model::ListenerRow;

/// An export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Comma-separated, with a header; one row per (interval, process).
    Csv,
    /// One JSON object per interval and line, as the query API returns them.
    Ndjson,
}

impl Format {
    /// The HTTP content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Ndjson => "application/x-ndjson",
        }
    }
}

/// The interval's CSV columns; the process's ([`portwatch_common::process::CSV_COLUMNS`]) follow.
pub use portwatch_model::history::INTERVAL_CSV_COLUMNS as INTERVAL_COLUMNS;

/// What comes before the first row (the CSV header).
pub fn preamble(format: Format) -> Vec<u8> {
    match format {
        Format::Csv => csv_line(
            INTERVAL_COLUMNS
                .iter()
                .chain(&portwatch_common::process::CSV_COLUMNS)
                .map(|s| s.to_string()),
        ),
        Format::Ndjson => Vec::new(),
    }
}

/// One interval, formatted.
pub fn row(format: Format, r: &ListenerRow) -> Vec<u8> {
    match format {
        Format::Ndjson => {
            let mut line = serde_json::to_vec(r).unwrap_or_default();
            line.push(b'\n');
            line
        }
        Format::Csv => {
            let l = &r.listener;
            let socket = r.csv_cells();
            let mut out = Vec::new();
            if l.processes.is_empty() {
                out.extend(csv_line(
                    socket.iter().cloned().chain(std::iter::repeat_n(String::new(), 8)),
                ));
            }
            for p in &l.processes {
                out.extend(csv_line(socket.iter().cloned().chain(p.csv_fields())));
            }
            out
        }
    }
}

/// One CSV line, every cell [guarded](portwatch_common::text::csv_cell).
fn csv_line(fields: impl IntoIterator<Item = String>) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let cells = fields
        .into_iter()
        .map(|cell| match portwatch_common::text::csv_cell(&cell) {
            std::borrow::Cow::Borrowed(_) => cell,
            std::borrow::Cow::Owned(guarded) => guarded,
        });
    // Writing to a Vec cannot fail.
    let _ = w.write_record(cells.collect::<Vec<_>>());
    w.into_inner().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use portwatch_common::{Exposure, Family, Listener, Process, Proto};

    fn interval(processes: Vec<Process>) -> ListenerRow {
        ListenerRow {
            host: "web-3".into(),
            listener: Listener {
                netns: 1,
                proto: Proto::Tcp,
                family: Family::Ipv4,
                local_addr: "0.0.0.0".parse().unwrap(),
                local_port: 8080,
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

    fn java(pid: u32) -> Process {
        Process {
            pid,
            name: "java".into(),
            cmdline: Some("java -jar app.jar --name=\"a, b\"".into()),
            exe: None,
            uid: Some(1000),
            user: Some("app".into()),
            container: None,
            unit: None,
        }
    }

    #[test]
    fn csv_has_a_row_per_process_and_one_for_an_ownerless_interval() {
        let mut text = preamble(Format::Csv);
        text.extend(row(Format::Csv, &interval(vec![java(1), java(2)])));
        text.extend(row(Format::Csv, &interval(vec![])));
        let mut reader = csv::Reader::from_reader(text.as_slice());
        assert_eq!(
            reader.headers().unwrap().iter().collect::<Vec<_>>().join(","),
            "host,proto,family,local_addr,local_port,netns,inode,uid,user,exposure,dual_stack,firewall,firewall_rule,\
             opened_at,closed_at,pid,name,cmdline,exe,process_uid,process_user,container,unit"
        );
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 3);
        assert_eq!((&rows[0][15], &rows[1][15], &rows[2][15]), ("1", "2", ""));
        assert_eq!(&rows[0][17], "java -jar app.jar --name=\"a, b\"");
        assert_eq!(&rows[0][13], "2026-11-24T03:00:00Z");
        assert_eq!((&rows[0][11], &rows[0][12]), ("", ""), "no firewall answer");
    }

    #[test]
    fn csv_guards_cells_a_spreadsheet_would_run_and_leaves_numbers_and_ndjson_alone() {
        let mut p = java(4242);
        p.name = "-bash".into();
        p.cmdline = Some("=HYPERLINK(\"http://x\")".into());
        p.user = Some("@evil".into());
        p.unit = Some("+x.service\r\n=1+1".into());
        let text = row(Format::Csv, &interval(vec![p.clone()]));
        let line = String::from_utf8(text.clone()).unwrap();
        // The guard comes first, inside the quotes the csv writer adds.
        assert!(line.contains(",\"'=HYPERLINK(\"\"http://x\"\")\","), "{line}");
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(text.as_slice());
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 1, "a newline inside a cell stays inside its quotes: {line}");
        let r = &rows[0];
        assert_eq!((&r[4], &r[15]), ("8080", "4242"), "numbers are left alone");
        assert_eq!(&r[16], "'-bash");
        assert_eq!(&r[17], "'=HYPERLINK(\"http://x\")");
        assert_eq!(&r[20], "'@evil");
        assert_eq!(&r[22], "'+x.service\r\n=1+1");
        assert_eq!(&r[13], "2026-11-24T03:00:00Z");

        let line = row(Format::Ndjson, &interval(vec![p.clone()]));
        let back: ListenerRow = serde_json::from_slice(&line).unwrap();
        assert_eq!(back.listener.processes, vec![p], "NDJSON is exact");
    }

    #[test]
    fn ndjson_is_one_api_object_per_line() {
        let line = row(Format::Ndjson, &interval(vec![java(1)]));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let back: ListenerRow = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, interval(vec![java(1)]));
    }
}
