//! Threat lists through the real binary: `portwatch-collector threat check` on the lists a config
//! names (the collector's fixtures), a list that cannot be loaded stopping `check` and `serve`,
//! and a serving collector reloading a changed list on SIGHUP while /metrics counts entries, bad
//! lines and failed reloads.
// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::expect_used)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use portwatch_tests::*;

fn collector(args: &[&OsStr]) -> Output {
    Command::new(binary("portwatch-collector"))
        .args(args)
        .output()
        .expect("portwatch-collector runs")
}

/// A fixture of `collector/tests/threat/`.
fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../collector/tests/threat")
        .join(name)
}

/// A `[[threat.list]]` table.
fn list(name: &str, path: &Path, format: &str, severity: &str) -> String {
    format!("[[threat.list]]\nname = {name:?}\npath = {path:?}\nformat = {format:?}\nseverity = {severity:?}\n")
}

fn check(config: &Path, args: &[&str]) -> Output {
    let mut all: Vec<&OsStr> = vec![
        "threat".as_ref(),
        "check".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
    ];
    all.extend(args.iter().map(OsStr::new));
    collector(&all)
}

#[test]
fn threat_check_names_each_list_and_entry_an_address_is_in_or_what_allows_it() {
    let dir = TempDir::new("threat-check").unwrap();
    let config = dir.path.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "{}{}{}",
            list(
                "firehol-level1",
                &fixture("firehol_level1.netset"),
                "netset",
                "critical"
            ),
            list("spamhaus-drop", &fixture("drop.txt"), "spamhaus-drop", "warning"),
            list("spamhaus-v6", &fixture("drop_v6.json"), "spamhaus-json", "warning"),
        ),
    )
    .unwrap();

    let out = check(
        &config,
        &[
            "--json",
            "185.220.101.7",
            "::ffff:1.10.17.1",
            "10.9.8.7",
            "8.8.8.8",
            "2001:db8:bad:1::5",
            "2a06:e480::1",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The load is said on stderr, bad lines by number.
    assert!(
        stderr.contains("list \"firehol-level1\" (critical): 9 entries, 2 bad lines")
            && stderr.contains("line 15: /33 is longer than an IPv4 address")
            && stderr.contains("line 18:"),
        "{stderr}"
    );
    let answers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lists_of = |i: usize| -> Vec<(String, String)> {
        answers[i]["matches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["list"].as_str().unwrap().to_owned(),
                    m["entry"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    // Both lists that hold it, each with its own longest entry.
    assert_eq!(answers[0]["suspicious"], true);
    assert_eq!(
        lists_of(0),
        [
            ("firehol-level1".to_owned(), "185.220.101.7/32".to_owned()),
            ("spamhaus-drop".to_owned(), "185.220.101.0/24".to_owned())
        ]
    );
    assert_eq!(answers[0]["matches"][1]["id"], "SBL777777");
    assert_eq!(answers[0]["matches"][0]["severity"], "critical");
    // A mapped address is looked up as IPv4.
    assert_eq!(answers[1]["looked_up_as"], "1.10.17.1");
    assert_eq!(answers[1]["matches"][1]["id"], "SBL256894");
    // FireHOL lists 10.0.0.0/8 as a bogon; the default allowlist wins.
    assert_eq!(answers[2]["suspicious"], false);
    assert_eq!(answers[2]["allowed_by"], "10.0.0.0/8");
    assert_eq!(lists_of(2), [("firehol-level1".to_owned(), "10.0.0.0/8".to_owned())]);
    assert_eq!(answers[3]["matches"], serde_json::json!([]));
    assert_eq!(answers[3]["allowed_by"], serde_json::Value::Null);
    // 2001:db8::/32 is documentation, allowed by default; 2a06:e480::/29 is not.
    assert_eq!(answers[4]["allowed_by"], "2001:db8::/32");
    assert_eq!(lists_of(5), [("spamhaus-v6".to_owned(), "2a06:e480::/29".to_owned())]);

    let text = check(&config, &["185.220.101.7", "10.9.8.7", "8.8.8.8"]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "185.220.101.7: firehol-level1 (critical): 185.220.101.7/32, spamhaus-drop (warning): 185.220.101.0/24 SBL777777",
            "10.9.8.7: allowed by 10.0.0.0/8 ([threat] allow), which hides firehol-level1 (critical): 10.0.0.0/8",
            "8.8.8.8: no list",
        ],
        "{stdout}"
    );

    let bad = check(&config, &["not-an-address"]);
    assert_eq!(bad.status.code(), Some(2), "clap refuses it");
}

#[test]
fn a_list_that_cannot_be_loaded_stops_check_and_serve_naming_its_file() {
    let dir = TempDir::new("threat-missing").unwrap();
    let config = dir.path.join("collector.toml");
    let missing = dir.path.join("gone.netset");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndb = {:?}\n{}",
            dir.path.join("c.db"),
            list("level1", &missing, "netset", "critical")
        ),
    )
    .unwrap();
    let out = check(&config, &["8.8.8.8"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("threat list \"level1\"") && stderr.contains(missing.to_str().unwrap()),
        "{stderr}"
    );
    let serve = collector(&["serve".as_ref(), "--config".as_ref(), config.as_os_str()]);
    let stderr = String::from_utf8_lossy(&serve.stderr);
    assert_eq!(serve.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(missing.to_str().unwrap()) && stderr.contains("[[threat.list]]"),
        "{stderr}"
    );
}

/// `/metrics`' line for `series`, if it has one.
fn metric(url: &str, series: &str) -> Option<String> {
    let text = ureq::get(format!("{url}/metrics"))
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()?;
    portwatch_fixtures::without_collector_label(&text)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{series} ")).map(str::to_owned))
}

/// Writes `text` to `path` by renaming a complete file into place.
fn replace(path: &Path, text: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, text).expect("the new list is written");
    std::fs::rename(&next, path).expect("the new list is renamed into place");
}

#[test]
fn a_serving_collector_reloads_a_list_on_sighup_and_keeps_it_when_the_new_file_is_broken() {
    let dir = TempDir::new("threat-serve").unwrap();
    let path = dir.path.join("level1.netset");
    replace(&path, "185.220.101.0/24\n45.155.205.0/24\nbad line\n");
    let db = dir.path.join("c.db");
    let config = dir.path.join("collector.toml");
    // check_every is long: only SIGHUP can make the collector read the file again in this test.
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndb = {db:?}\n[metrics]\npublic = true\n[threat]\ncheck_every = \"1h\"\n{}",
            list("level1", &path, "netset", "critical")
        ),
    )
    .unwrap();
    let served = Collector::serve(&db, &[OsStr::new("--config"), config.as_os_str()]).unwrap();
    let entries = "portwatch_threat_list_entries{list=\"level1\"}";
    let bad = "portwatch_threat_list_bad_lines{list=\"level1\"}";
    let failures = "portwatch_threat_list_reload_failures_total{list=\"level1\"}";
    assert_eq!(metric(&served.url, entries).as_deref(), Some("2"));
    assert_eq!(metric(&served.url, bad).as_deref(), Some("1"));
    assert_eq!(metric(&served.url, failures).as_deref(), Some("0"));

    replace(&path, "185.220.101.0/24\n45.155.205.0/24\n5.188.10.0/23\n");
    served.signal(rustix::process::Signal::HUP).unwrap();
    let reloaded = eventually(Duration::from_secs(10), || {
        (metric(&served.url, entries).as_deref() == Some("3")).then_some(())
    });
    assert!(reloaded.is_some(), "the changed list was reloaded on SIGHUP");
    assert_eq!(metric(&served.url, bad).as_deref(), Some("0"));

    replace(&path, "<html><body>502 Bad Gateway</body></html>\n");
    served.signal(rustix::process::Signal::HUP).unwrap();
    let failed = eventually(Duration::from_secs(10), || {
        (metric(&served.url, failures).as_deref() == Some("1")).then_some(())
    });
    assert!(failed.is_some(), "the broken file's reload was counted as failed");
    assert_eq!(
        metric(&served.url, entries).as_deref(),
        Some("3"),
        "the previous list is kept"
    );
}
