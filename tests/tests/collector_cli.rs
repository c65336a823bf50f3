//! `portwatch-collector`'s command line: config file, tokens.
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
