//! End to end, with the real binaries: a host's token rotated while its agent
//! runs with the old one from a `--token-file`. The agent keeps shipping
//! through the overlap; after it the old token is refused, and an agent with
//! the new token file ships, as does the running agent once the new secret is
//! written into its file. The database `token create` makes is private, and
//! the `portwatch` CLI reads its token from a file, warning about one others
//! may read.
// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use portwatch_tests::*;

/// Generous bound for something an agent at a 200 ms interval does.
const SETTLE: Duration = Duration::from_secs(20);

/// The rotation's overlap: long enough for a few intervals, short for a test.
const OVERLAP: Duration = Duration::from_secs(3);

fn collector_cli(db: &Path, args: &[&str]) -> std::process::Output {
    Command::new(binary("portwatch-collector"))
        .args(args)
        .arg("--db")
        .arg(db)
        .output()
        .unwrap()
}

/// `token rotate --host HOST --overlap OVERLAP`: the new secret, and what it said on stderr.
fn rotate(db: &Path, host: &str) -> (String, String) {
    let overlap = format!("{}s", OVERLAP.as_secs());
    let out = collector_cli(db, &["token", "rotate", "--host", host, "--overlap", &overlap]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (String::from_utf8(out.stdout).unwrap().trim().to_owned(), stderr)
}

/// When the collector last heard from `host` (`None` before it did).
fn last_seen(collector: &Collector, read: &str, host: &str) -> Option<Timestamp> {
    let hosts = portwatch_json(&collector.url, read, &["hosts"]).ok()?;
    let host = hosts.as_array()?.iter().find(|h| h["host"] == host)?;
    host["last_seen"].as_str()?.parse().ok()
}

/// Waits until the collector hears from `host` after `after`; when it did.
fn heard_after(collector: &Collector, read: &str, host: &str, after: Timestamp) -> Option<Timestamp> {
    eventually(SETTLE, || last_seen(collector, read, host).filter(|&t| t > after))
}

/// A POST of a heartbeat of `host` with `token`: the status.
fn post_heartbeat(collector: &Collector, token: &str, host: &str) -> u16 {
    let body = serde_json::json!({
        "version": 1, "host": host, "session": "probe", "dropped": 0,
        "alive_at": Timestamp::now().to_string(), "reports": [],
    });
    let agent = portwatch_common::client::http_agent(None, Duration::from_secs(10)).unwrap();
    let response = agent
        .post(&format!("{}/api/v1/ingest", collector.url))
        .header("Authorization", &format!("Bearer {token}"))
        .send_json(&body)
        .unwrap();
    response.status().as_u16()
}

fn mode(file: &Path) -> u32 {
    std::fs::metadata(file).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_rotated_hosts_agent_ships_through_the_overlap_and_only_the_new_token_works_after_it() {
    let dir = TempDir::new("tokens-rotate").unwrap();
    let db = dir.path.join("collector.db");
    let old = create_token(&db, &["--host", "web-3"]).unwrap();
    let read = create_token(&db, &["--role", "read", "--name", "ops"]).unwrap();
    // The database `token create` made is not readable by others, nor are its WAL files.
    for file in ["collector.db", "collector.db-wal", "collector.db-shm"] {
        let path = dir.path.join(file);
        if path.exists() {
            assert_eq!(mode(&path) & 0o007, 0, "{file} has mode {:o}", mode(&path));
        }
    }
    let collector = Collector::start(&db, 0).unwrap();
    let old_file = dir.path.join("old.token");
    write_token_file(&old_file, &old, 0o600).unwrap();
    let agent = Agent::start_with_token_file(
        &collector.url,
        &old_file,
        "web-3",
        "200ms",
        &dir.path.join("spool-old"),
        &[],
    )
    .unwrap();
    heard_after(&collector, &read, "web-3", Timestamp::UNIX_EPOCH).expect("the agent never shipped");

    let (new, said) = rotate(&db, "web-3");
    let rotated = Instant::now();
    let rotated_at = Timestamp::now();
    assert!(new.starts_with("pw_") && new != old);
    assert!(said.contains("keeps working until"), "{said}");
    let listed: serde_json::Value =
        serde_json::from_slice(&collector_cli(&db, &["token", "list", "--json"]).stdout).unwrap();
    let states: Vec<_> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"] == "agent:web-3")
        .map(|t| t["state"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(states, ["expiring", "active"]);
    let table = String::from_utf8(collector_cli(&db, &["token", "list"]).stdout).unwrap();
    assert!(table.contains("expires 20") && table.contains("active"), "{table}");

    // Through the overlap the agent, still on the old token, keeps shipping.
    let during = heard_after(&collector, &read, "web-3", rotated_at).expect("no shipment after the rotation");
    assert!(rotated.elapsed() < OVERLAP, "the check itself outlasted the overlap");
    assert!(during > rotated_at);

    // After it the old token is refused, and the agent that has only it ships no more.
    std::thread::sleep(OVERLAP.saturating_sub(rotated.elapsed()) + Duration::from_millis(500));
    assert_eq!(post_heartbeat(&collector, &old, "web-3"), 401);
    let stalled = last_seen(&collector, &read, "web-3").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        last_seen(&collector, &read, "web-3"),
        Some(stalled),
        "the old token still ships"
    );
    drop(agent);

    // An agent with the new token file ships.
    let new_file = dir.path.join("new.token");
    write_token_file(&new_file, &new, 0o600).unwrap();
    let _agent = Agent::start_with_token_file(
        &collector.url,
        &new_file,
        "web-3",
        "200ms",
        &dir.path.join("spool-new"),
        &[],
    )
    .unwrap();
    heard_after(&collector, &read, "web-3", stalled).expect("the agent with the new token never shipped");
    assert_eq!(post_heartbeat(&collector, &old, "web-3"), 401, "refused for good");
}

#[test]
fn a_running_agent_takes_the_rotated_token_written_into_its_token_file() {
    let dir = TempDir::new("tokens-reread").unwrap();
    let db = dir.path.join("collector.db");
    let old = create_token(&db, &["--host", "web-4"]).unwrap();
    let read = create_token(&db, &["--role", "read", "--name", "ops"]).unwrap();
    let collector = Collector::start(&db, 0).unwrap();
    let file = dir.path.join("agent.token");
    write_token_file(&file, &old, 0o600).unwrap();
    let _agent =
        Agent::start_with_token_file(&collector.url, &file, "web-4", "200ms", &dir.path.join("spool"), &[]).unwrap();
    heard_after(&collector, &read, "web-4", Timestamp::UNIX_EPOCH).expect("the agent never shipped");

    let (new, _) = rotate(&db, "web-4");
    write_token_file(&file, &new, 0o600).unwrap();
    std::thread::sleep(OVERLAP + Duration::from_millis(500));
    assert_eq!(post_heartbeat(&collector, &old, "web-4"), 401);
    let after = Timestamp::now();
    // Refused with the old token, the agent reads its file again and ships with the new one.
    heard_after(&collector, &read, "web-4", after).expect("the running agent did not take the new token");
}

#[test]
fn the_cli_and_the_agent_read_their_tokens_from_files_and_warn_when_others_may_read_them() {
    let dir = TempDir::new("tokens-cli").unwrap();
    let db = dir.path.join("collector.db");
    let read = create_token(&db, &["--role", "read", "--name", "ops"]).unwrap();
    let collector = Collector::start(&db, 0).unwrap();
    let file = dir.path.join("read.token");
    let hosts = |file: &Path| {
        Command::new(binary("portwatch"))
            .args(["--collector", &collector.url, "--json", "--token-file"])
            .arg(file)
            .arg("hosts")
            .env_remove("PORTWATCH_TOKEN")
            .output()
            .unwrap()
    };
    write_token_file(&file, &read, 0o600).unwrap();
    let private = hosts(&file);
    assert!(private.status.success(), "{}", String::from_utf8_lossy(&private.stderr));
    assert_eq!(String::from_utf8_lossy(&private.stdout).trim(), "[]");
    assert!(
        private.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&private.stderr)
    );

    write_token_file(&file, &read, 0o644).unwrap();
    let shared = hosts(&file);
    let stderr = String::from_utf8_lossy(&shared.stderr);
    assert!(shared.status.success(), "a warning, not a refusal: {stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("readable by every user"),
        "{stderr}"
    );
    assert!(stderr.contains("chmod o-rwx"), "{stderr}");

    let missing = hosts(&dir.path.join("missing.token"));
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("missing.token"));

    // The agent's token_file, as `validate` (the unit's ExecStartPre) checks it.
    let config = dir.path.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "collector = \"{}\"\ntoken_file = \"{}\"\n",
            collector.url,
            file.display()
        ),
    )
    .unwrap();
    let validate = || agent().arg("validate").arg("--config").arg(&config).output().unwrap();
    let shared = validate();
    let stderr = String::from_utf8_lossy(&shared.stderr);
    assert!(shared.status.success(), "{stderr}");
    assert!(stderr.contains("readable by every user"), "{stderr}");
    write_token_file(&file, &read, 0o640).unwrap();
    let private = validate();
    assert!(
        private.status.success() && private.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&private.stderr)
    );
}
