//! `portwatch-collector`'s command line: config file, tokens; and what the `portwatch` CLI makes of a hostile report.
// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::expect_used)]

use std::process::Command;

use portwatch_tests::*;

fn collector(args: &[&str]) -> std::process::Output {
    Command::new(binary("portwatch-collector"))
        .args(args)
        .output()
        .expect("portwatch-collector runs")
}

#[test]
fn tokens_are_made_listed_and_revoked_through_the_config_files_database() {
    let dir = TempDir::new("cli-tokens").unwrap();
    let config = dir.path.join("collector.toml");
    let db = dir.path.join("history.db");
    std::fs::write(&config, format!("db = {:?}\n", db.to_str().unwrap())).unwrap();
    let config = config.to_str().unwrap();

    let made = collector(&["token", "create", "--host", "web-3", "--config", config]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let secret = String::from_utf8(made.stdout).unwrap();
    assert!(
        secret.trim().starts_with("pw_") && secret.trim().len() == 67,
        "{secret}"
    );
    assert!(db.exists(), "the database named in the config was used");

    let listed = collector(&["token", "list", "--json", "--config", config]);
    let tokens: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(tokens[0]["name"], "agent:web-3");
    assert_eq!(tokens[0]["role"], "agent");
    assert!(tokens[0].get("hash").is_none(), "the hash is never printed");
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(secret.trim()));

    let again = collector(&["token", "create", "--host", "web-3", "--config", config]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    assert!(collector(&["token", "revoke", "agent:web-3", "--config", config])
        .status
        .success());
    let twice = collector(&["token", "revoke", "agent:web-3", "--config", config]);
    assert_eq!(twice.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&twice.stderr).contains("no active token"));

    let vague = collector(&["token", "create", "--config", config]);
    assert_eq!(vague.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&vague.stderr).contains("--host NAME"));
}

#[test]
fn a_broken_config_stops_serve_with_its_line_and_key() {
    let dir = TempDir::new("cli-config").unwrap();
    let config = dir.path.join("collector.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\ndatabase = \"x.db\"\n").unwrap();
    let out = collector(&["serve", "--config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("line 2") && stderr.contains("database"), "{stderr}");
}

#[test]
fn serve_listens_where_the_config_says_unless_a_flag_overrides() {
    let dir = TempDir::new("cli-listen").unwrap();
    let config = dir.path.join("collector.toml");
    let db = dir.path.join("c.db");
    std::fs::write(
        &config,
        format!("listen = \"127.0.0.1:0\"\ndb = {:?}\n", db.to_str().unwrap()),
    )
    .unwrap();
    // Collector::start passes --listen and --db flags; here only the config speaks.
    let mut child = Command::new(binary("portwatch-collector"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        line.starts_with("portwatch-collector listening on http://127.0.0.1:"),
        "{line}"
    );
    assert!(db.exists());
}

/// A process name a compromised (or any) host can report: an OSC 52
/// clipboard write, a bell, and a carriage return and newline.
const HOSTILE: &str = "\x1b]52;c;ZXZpbA==\x07evil\r\nroot";

/// A snapshot of `host` with one listener on `port`, held by a process named `name`
/// whose command line would run as a spreadsheet formula.
fn hostile_snapshot(host: &str, port: u16, name: &str) -> portwatch_common::wire::Batch {
    use portwatch_common::wire::{Batch, HostFacts, Report, ReportBody, PROTOCOL_VERSION};
    use portwatch_common::{Exposure, Family, Listener, Process, Proto};
    let process = Process {
        pid: 4242,
        name: name.into(),
        cmdline: Some("=HYPERLINK(\"http://x\")".into()),
        exe: None,
        uid: Some(0),
        user: Some("root".into()),
        container: None,
        unit: None,
    };
    Batch {
        version: PROTOCOL_VERSION,
        host: host.to_owned(),
        session: "hostile-1".to_owned(),
        dropped: 0,
        peers: Vec::new(),
        peers_dropped: 0,
        alive_at: None,
        reports: vec![Report {
            seq: 1,
            observed_at: jiff::Timestamp::now(),
            body: ReportBody::Snapshot {
                facts: HostFacts {
                    detection: None,
                    host_netns: None,
                    addresses: Vec::new(),
                    os: Some(format!("Debian {name}")),
                    kernel: None,
                    boot_time: None,
                    agent_version: "0.1.0".to_owned(),
                    interval_ms: 10_000,
                    tags: Default::default(),
                },
                listeners: vec![Listener {
                    netns: 1,
                    proto: Proto::Tcp,
                    family: Family::Ipv4,
                    local_addr: "0.0.0.0".parse().expect("an address"),
                    local_port: port,
                    inode: 9,
                    uid: 0,
                    user: Some("root".into()),
                    exposure: Exposure::Wildcard,
                    dual_stack: false,
                    processes: vec![process],
                    firewall: None,
                }],
            },
        }],
    }
}

#[test]
fn a_hostile_process_name_reaches_the_cli_as_text_and_csv_as_no_formula() {
    let dir = TempDir::new("cli-hostile").unwrap();
    let db = dir.path.join("c.db");
    let agent = create_token(&db, &["--host", "web-3"]).unwrap();
    let read = create_token(&db, &["--role", "read", "--name", "ops"]).unwrap();
    let collector = Collector::start(&db, 0).unwrap();
    ureq::post(format!("{}/api/v1/ingest", collector.url))
        .header("Authorization", format!("Bearer {agent}"))
        .send_json(hostile_snapshot("web-3", 2222, HOSTILE))
        .expect("the collector takes the batch");

    let portwatch = |args: &[&str]| -> String {
        let out = Command::new(binary("portwatch"))
            .args(["--collector", &collector.url, "--token", &read])
            .args(args)
            .output()
            .expect("portwatch runs");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8")
    };
    for args in [
        &["who", "--port", "2222"][..],
        &["ports", "--host", "web-3"],
        &["hosts"],
    ] {
        let text = portwatch(args);
        let raw: Vec<char> = text
            .chars()
            .filter(|&c| c != '\n' && portwatch_common::text::needs_escape(c))
            .collect();
        assert_eq!(raw, Vec::<char>::new(), "{args:?}: {text:?}");
        assert_eq!(text.lines().count(), 2, "{args:?}: a header and one row: {text}");
        assert!(
            text.contains("\\x1b]52;c;ZXZpbA==\\x07evil\\r\\nroot"),
            "{args:?}: {text}"
        );
    }

    let json = portwatch(&["--json", "who", "--port", "2222"]);
    let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(rows[0]["processes"][0]["name"], HOSTILE, "JSON is exact");

    let csv = portwatch(&["export", "--format", "csv"]);
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let header = reader.headers().unwrap().clone();
    let row = reader.records().next().expect("one row").unwrap();
    let cell = |name: &str| {
        let at = header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no {name} column"));
        row[at].to_owned()
    };
    assert_eq!(
        (cell("local_port"), cell("name")),
        ("2222".to_owned(), HOSTILE.to_owned())
    );
    assert_eq!(cell("cmdline"), "'=HYPERLINK(\"http://x\")");
}
