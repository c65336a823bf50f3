//! End to end: the `portwatch` CLI as a user types it, against a real collector and agent: every
//! query command in CSV (a row per listener and process), relative times written as separate
//! arguments (`--since -5m`), shell completions of every binary, and one piece of advice when the
//! collector refuses a token.
// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};
use std::time::Duration;

use portwatch_tests::*;

/// Generous bound for an agent at a 200 ms interval to get a change stored.
const SETTLE: Duration = Duration::from_secs(20);

struct Setup {
    _dir: TempDir,
    collector: Collector,
    agent_token: String,
    read_token: String,
    dir: std::path::PathBuf,
}

fn setup(tag: &str, host: &str) -> Setup {
    let dir = TempDir::new(tag).unwrap();
    let db = dir.path.join("collector.db");
    let agent_token = create_token(&db, &["--host", host]).unwrap();
    let read_token = create_token(&db, &["--role", "read", "--name", "ops"]).unwrap();
    let collector = Collector::start(&db, 0).unwrap();
    Setup {
        dir: dir.path.clone(),
        _dir: dir,
        collector,
        agent_token,
        read_token,
    }
}

/// `portwatch --collector URL --token T ARGS`, as typed (no `--json` added).
fn portwatch(s: &Setup, args: &[&str]) -> Output {
    Command::new(binary("portwatch"))
        .args(["--collector", &s.collector.url, "--token", &s.read_token])
        .args(args)
        .env_remove("PORTWATCH_TOKEN_FILE")
        .output()
        .unwrap()
}

/// Its stdout; panics with stderr when it fails.
fn stdout(s: &Setup, args: &[&str]) -> String {
    let out = portwatch(s, args);
    assert!(
        out.status.success(),
        "portwatch {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Its stdout, or `None` when it fails (a host not heard from yet).
fn try_stdout(s: &Setup, args: &[&str]) -> Option<String> {
    let out = portwatch(s, args);
    out.status.success().then(|| String::from_utf8(out.stdout).unwrap())
}

/// A CSV text's header and rows (each as long as the header, or the read fails).
fn read_csv(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let header = r.headers().unwrap().iter().map(str::to_owned).collect();
    let rows = r
        .records()
        .map(|rec| rec.unwrap().iter().map(str::to_owned).collect())
        .collect();
    (header, rows)
}

fn cell<'a>(header: &[String], row: &'a [String], name: &str) -> &'a str {
    &row[header.iter().position(|h| h == name).unwrap()]
}

#[test]
fn every_query_command_prints_csv_with_a_row_per_listener_and_process() {
    let s = setup("cli-csv", "cli-csv");
    let spool = s.dir.join("spool");
    let _agent = Agent::start(&s.collector.url, &s.agent_token, "cli-csv", "200ms", &spool).unwrap();
    // One listener held by three processes (a pre-fork server), one by one.
    let shared = Listeners::start(&[], &["--children", "2", "tcp4:127.0.0.1:0"]).unwrap();
    let single = Listeners::start(&[], &["tcp4:127.0.0.1:0"]).unwrap();
    let (shared_port, single_port) = (shared.port(0).to_string(), single.port(0).to_string());
    let rows_on = |text: &str, port: &str| -> Vec<Vec<String>> {
        let (header, rows) = read_csv(text);
        rows.into_iter()
            .filter(|r| cell(&header, r, "local_port") == port)
            .collect()
    };
    eventually(SETTLE, || {
        let text = try_stdout(&s, &["ports", "--host", "cli-csv", "--format", "csv"])?;
        (rows_on(&text, &shared_port).len() == 3 && rows_on(&text, &single_port).len() == 1).then_some(())
    })
    .expect("both listeners, with every owner, reach the collector");

    // ports, who, history: the columns of `export --format csv`, a row per (listener, process).
    let export = stdout(&s, &["export", "--format", "csv"]);
    let export_header = export.lines().next().unwrap();
    for args in [
        &["ports", "--host", "cli-csv", "--format", "csv"][..],
        &["who", "--port", &shared_port, "--format", "csv"],
        &["history", "--host", "cli-csv", "--format", "csv"],
    ] {
        let text = stdout(&s, args);
        assert_eq!(text.lines().next().unwrap(), export_header, "{args:?}");
        let (header, _) = read_csv(&text);
        let shared_rows = rows_on(&text, &shared_port);
        let mut pids: Vec<u32> = shared_rows
            .iter()
            .map(|r| cell(&header, r, "pid").parse().unwrap())
            .collect();
        pids.sort_unstable();
        assert_eq!(pids, shared.pids(), "{args:?}: {text}");
        assert!(
            shared_rows
                .iter()
                .all(|r| cell(&header, r, "name") == "pw-listen" && cell(&header, r, "host") == "cli-csv"),
            "{text}"
        );
    }

    // diff, from an age typed as users type it: both listeners opened, every owner a row.
    let text = stdout(&s, &["diff", "--host", "cli-csv", "--from", "-1h", "--format", "csv"]);
    let (header, _) = read_csv(&text);
    assert_eq!(&header[..3], ["change", "side", "host"]);
    let opened = rows_on(&text, &shared_port);
    assert_eq!(opened.len(), 3, "{text}");
    assert!(opened.iter().all(|r| r[0] == "opened" && r[1] == "after"), "{text}");

    // The other read commands: a header, then rows as wide as it.
    for (args, first) in [
        (&["hosts", "--format", "csv"][..], "host,status,first_seen,last_seen,"),
        (&["drift", "--format", "csv"], "severity,kind,host,proto,"),
        (&["alerts", "--format", "csv"], "id,state,severity,kind,host,"),
        (&["trends", "--format", "csv"], "section,at,host,proto,port,"),
        (&["baseline", "list", "--format", "csv"], "name,hosts,tags,entries,"),
        (&["baseline", "log", "--format", "csv"], "at,name,action,actor,comment"),
    ] {
        let text = stdout(&s, args);
        assert!(text.starts_with(first), "{args:?}: {text}");
        read_csv(&text);
    }
    let (header, rows) = read_csv(&stdout(&s, &["hosts", "--format", "csv"]));
    assert_eq!(cell(&header, &rows[0], "host"), "cli-csv");
    let trends = stdout(&s, &["trends", "--host", "cli-csv", "--format", "csv"]);
    assert!(trends.lines().any(|l| l.starts_with("open_listeners,")), "{trends}");

    // --format json is --json; the two together are a usage error, wherever --json is written.
    let json = stdout(&s, &["hosts", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v[0]["host"], "cli-csv");
    // The same answer either way (read twice from a live host: its last_seen and
    // listener count may move between the two reads, its shape may not).
    let again: serde_json::Value = serde_json::from_str(&stdout(&s, &["--json", "hosts"])).unwrap();
    let shape = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .flat_map(|h| h.as_object().into_iter().flatten().map(|(k, _)| k.clone()))
            .collect()
    };
    assert_eq!(shape(&v), shape(&again));
    assert_eq!(again[0]["host"], "cli-csv");
    for args in [
        &["--json", "hosts", "--format", "csv"][..],
        &["hosts", "--json", "--format", "csv"],
        &["--json", "ports", "--host", "cli-csv", "--format", "json"],
    ] {
        let out = portwatch(&s, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("'--json' cannot be used with '--format"),
            "{args:?}: {err}"
        );
    }
    drop((shared, single));
}

#[test]
fn relative_times_work_as_the_help_and_readme_write_them() {
    let s = setup("cli-ages", "vm");
    let spool = s.dir.join("spool");
    let _agent = Agent::start(&s.collector.url, &s.agent_token, "vm", "200ms", &spool).unwrap();
    let l = Listeners::start(&[], &["tcp4:127.0.0.1:0"]).unwrap();
    let port = l.port(0).to_string();
    eventually(SETTLE, || {
        try_stdout(&s, &["--json", "ports", "--host", "vm"])?
            .contains(&format!("\"local_port\": {port}"))
            .then_some(())
    })
    .expect("the listener reaches the collector");

    // The forms of issue 16, `--help` and README, each a separate argument as a shell passes it.
    let history = stdout(&s, &["--json", "history", "--host", "vm", "--since", "-5m"]);
    assert!(history.contains(&format!("\"local_port\": {port}")), "{history}");
    let diff = stdout(&s, &["--json", "diff", "--host", "vm", "--from", "-1h"]);
    let diff: serde_json::Value = serde_json::from_str(&diff).unwrap();
    assert!(
        diff["opened"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["local_port"] == l.port(0)),
        "{diff}"
    );
    for args in [
        &["history", "--host", "vm", "--since", "-1h30m", "--until", "-0s"][..],
        &["history", "--host", "vm", "--since", "-2d"],
        &["diff", "--host", "vm", "--from", "-2d", "--to", "-1h"],
        &["ports", "--host", "vm", "--at", "-2h"],
        &["who", "--port", "22", "--at", "-2h"],
        &["who", "--port", "8080", "--at", "yesterday 03:00"],
        &["trends", "--since", "-2d", "--until", "-1h"],
        &["trends", "--bucket", "day"],
        &["export", "--format", "csv", "--since", "-1h"],
        &["diff", "--host", "vm", "--from", "yesterday 00:00"],
        &["history", "--host", "vm", "--since", "2h ago"],
    ] {
        stdout(&s, args);
    }

    // A time option whose value was forgotten says so, instead of taking the next option for a time.
    let out = portwatch(&s, &["history", "--host", "vm", "--since", "--json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("is an option, not a time"), "{err}");
    drop(l);
}

#[test]
fn a_read_token_refused_an_admin_command_gets_one_piece_of_advice() {
    let s = setup("cli-refusal", "cli-refusal");
    let file = s.dir.join("web.toml");
    std::fs::write(&file, "name = \"web\"\nhosts = [\"web-*\"]\n").unwrap();
    for args in [
        &["alerts", "ack", "1", "-m", "on it"][..],
        &["baseline", "remove", "web", "-m", "gone"],
    ] {
        let out = portwatch(&s, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("(403 Forbidden)"), "{err}");
        assert_eq!(err.matches("use an admin token").count(), 1, "{err}");
        assert_eq!(err.matches("use ").count(), 1, "one piece of advice, not two: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }

    // No token at all: the CLI's way to give one, alone.
    let out = Command::new(binary("portwatch"))
        .args(["--collector", &s.collector.url, "hosts"])
        .env_remove("PORTWATCH_TOKEN")
        .env_remove("PORTWATCH_TOKEN_FILE")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("(401 Unauthorized): no token given; set --token-file"),
        "{err}"
    );
    assert!(
        !err.contains("Authorization: Bearer"),
        "the API's advice is for other clients: {err}"
    );
}

#[test]
fn every_binary_prints_its_completions_for_every_shell() {
    let binaries: [(&str, &[&str]); 3] = [
        ("portwatch", &["hosts", "history", "completions"]),
        ("portwatch-agent", &["scan", "run", "completions"]),
        ("portwatch-collector", &["serve", "token", "completions"]),
    ];
    for (name, subcommands) in binaries {
        for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
            let out = Command::new(binary(name))
                .args(["completions", shell])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{name} completions {shell}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            for sub in subcommands {
                assert!(text.contains(sub), "{name} completions {shell} lacks {sub}");
            }
            assert!(
                !text.contains("generate"),
                "{name} {shell}: the packagers' subcommand stays hidden"
            );
        }
        let out = Command::new(binary(name))
            .args(["completions", "bash"])
            .output()
            .unwrap();
        let script = std::env::temp_dir().join(format!("pw-completions-{name}-{}.bash", std::process::id()));
        std::fs::write(&script, &out.stdout).unwrap();
        let check = Command::new("bash").arg("-n").arg(&script).output().unwrap();
        let _ = std::fs::remove_file(&script);
        assert!(
            check.status.success(),
            "bash -n {name}: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let help = Command::new(binary(name)).arg("--help").output().unwrap();
        assert!(
            String::from_utf8_lossy(&help.stdout).contains("completions"),
            "{name} --help"
        );
        let bad = Command::new(binary(name))
            .args(["completions", "tcsh"])
            .output()
            .unwrap();
        assert_eq!(bad.status.code(), Some(2), "{name}: an unknown shell is a usage error");
    }
}
