//! `portwatch-agent validate`: the shipped example passes, broken files fail
//! with the line and key, and the exit status tells a unit file which is which.

use portwatch_tests::*;

#[test]
fn the_shipped_example_validates_once_its_token_file_exists() {
    let dir = TempDir::new("validate-ok").unwrap();
    let token = dir.path.join("agent.token");
    std::fs::write(&token, "pwa_example\n").unwrap();
    let config = dir.path.join("agent.toml");
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/config/agent.toml")).unwrap();
    let text = example.replace("/etc/portwatch/agent.token", token.to_str().unwrap());
    std::fs::write(&config, text).unwrap();
    let out = run_agent(&["validate", "--config", config.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("OK") && stdout.contains("every 10s"), "{stdout}");
}

#[test]
fn a_broken_config_fails_with_its_line_and_key() {
    let dir = TempDir::new("validate-bad").unwrap();
    let config = dir.path.join("agent.toml");
    std::fs::write(&config, "interval = \"10s\"\nspool_max_mbytes = 5\n").unwrap();
    let out = run_agent(&["validate", "--config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("line 2") && stderr.contains("spool_max_mbytes"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
}

#[test]
fn an_unreadable_token_file_says_how_to_make_one() {
    let dir = TempDir::new("validate-token").unwrap();
    let config = dir.path.join("agent.toml");
    std::fs::write(&config, "token_file = \"/nonexistent/agent.token\"\n").unwrap();
    let out = run_agent(&["validate", "--config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("portwatch-collector token create --host"), "{stderr}");
}

#[test]
fn a_missing_config_file_is_named() {
    let out = run_agent(&["validate", "--config", "/nonexistent/portwatch.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("/nonexistent/portwatch.toml"), "{stderr}");
}
