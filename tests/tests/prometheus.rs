//! The collector in Prometheus' toolchain, with Prometheus' own tools
//! (Debian's `prometheus` package: `promtool` and the server; tests/run.sh
//! installs it): `/metrics` in the Prometheus text format passes
//! `promtool check metrics` with no complaint; a real Prometheus 2.42,
//! which asks for OpenMetrics first, scrapes it with no error and gets
//! OpenMetrics; the example alerting rules pass `promtool check rules`,
//! name only metrics the collector serves, and evaluate in that Prometheus
//! without error.
//!
//! A real collector with a real agent (so ingest has been timed) and alert
//! sinks of each kind (so the per-sink series exist); no root.
// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use portwatch_tests::prometheus::{free_port, promtool, Prometheus};
use portwatch_tests::*;

/// A bound for what is awaited (not a timing assertion).
const SETTLE: Duration = Duration::from_secs(60);

/// The example rules, as packaged.
fn rules_file() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/prometheus/portwatch-rules.yml")
}

/// `/metrics` as a client sending `accept` (none if `None`) gets it: content type and text.
fn scrape(url: &str, token: &str, accept: Option<&str>) -> (String, String) {
    let mut request = ureq::get(format!("{url}/metrics")).header("Authorization", format!("Bearer {token}"));
    if let Some(accept) = accept {
        request = request.header("Accept", accept);
    }
    let mut response = request.call().unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    (content_type, response.body_mut().read_to_string().unwrap())
}

#[test]
fn promtool_and_a_real_prometheus_take_the_metrics_and_the_example_rules() {
    let dir = TempDir::new("prometheus").unwrap();
    let db = dir.path.join("collector.db");
    let config = dir.path.join("collector.toml");
    // Sinks whose receivers are not there: their series exist, and count failures.
    let nowhere = free_port().unwrap();
    // A threat list, with a bad line: its series are labelled by the list's name.
    let list = dir.path.join("level1.netset");
    std::fs::write(&list, "185.220.101.0/24\nbad line\n").unwrap();
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndb = {db:?}\n[alerts]\nsweep_every = \"1s\"\n\
             [[alerts.webhook]]\nname = \"ops\"\nurl = \"http://127.0.0.1:{nowhere}/hook\"\n\
             [[alerts.alertmanager]]\nname = \"am\"\nurls = [\"http://127.0.0.1:{nowhere}\"]\n\
             [[threat.list]]\nname = \"level1\"\npath = {list:?}\nformat = \"netset\"\nseverity = \"critical\"\n"
        ),
    )
    .unwrap();
    let agent_token = create_token(&db, &["--host", "prom-web-1"]).unwrap();
    let read = create_token(&db, &["--role", "read", "--name", "prometheus"]).unwrap();
    let collector = Collector::serve(&db, &[OsStr::new("--config"), config.as_os_str()]).unwrap();
    let url = collector.url.clone();
    let _agent = Agent::start(&url, &agent_token, "prom-web-1", "200ms", &dir.path.join("spool")).unwrap();
    eventually(SETTLE, || {
        let (_, text) = scrape(&url, &read, None);
        text.lines()
            .any(|l| l.starts_with("portwatch_ingest_duration_seconds_count ") && !l.ends_with(" 0"))
            .then_some(())
    })
    .expect("the agent's batches are stored and timed");

    // Prometheus text, asked for or by default: promtool has nothing to say about it.
    for accept in [Some("text/plain;version=0.0.4"), None] {
        let (content_type, text) = scrape(&url, &read, accept);
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        for series in [
            "portwatch_ingest_duration_seconds_bucket{le=\"+Inf\"}",
            "portwatch_ingest_batches_queued",
            "portwatch_alert_sink_lag_seconds{sink=\"webhook:ops\"}",
            "portwatch_threat_list_entries{list=\"level1\"}",
            "portwatch_threat_list_bad_lines{list=\"level1\"}",
            "portwatch_threat_list_reload_failures_total{list=\"level1\"}",
            &format!("portwatch_alert_sink_failures_total{{sink=\"alertmanager:am@127.0.0.1:{nowhere}\"}}"),
            "process_resident_memory_bytes",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(&format!("{series} "))),
                "{series} missing from:\n{text}"
            );
        }
        let (clean, said) = promtool(&["check", "metrics"], text.as_bytes()).unwrap();
        assert!(
            clean && said.trim().is_empty(),
            "promtool check metrics ({accept:?}): {said}\n{text}"
        );
    }
    // OpenMetrics to a client that asks for it.
    let (content_type, open) = scrape(&url, &read, Some("application/openmetrics-text;version=1.0.0"));
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(open.ends_with("# EOF\n"), "{open}");

    // The rules: valid, and about metrics the collector serves.
    let (valid, said) = promtool(&["check", "rules", rules_file().to_str().unwrap()], b"").unwrap();
    assert!(valid && said.contains("SUCCESS: 6 rules found"), "{said}");
    let (_, served) = scrape(&url, &read, None);
    let rules = std::fs::read_to_string(rules_file()).unwrap();
    let named: std::collections::BTreeSet<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("portwatch_"))
        .collect();
    assert!(named.len() >= 4, "{named:?}");
    for metric in named {
        assert!(
            served
                .lines()
                .any(|l| l.starts_with(&format!("{metric}{{")) || l.starts_with(&format!("{metric} "))),
            "the rules name {metric}, which /metrics does not serve"
        );
    }

    // A real Prometheus scrapes it (as the job the rules name), asking for OpenMetrics first.
    let token_file = dir.path.join("read.token");
    write_token_file(&token_file, &read, 0o600).unwrap();
    let target = url.trim_start_matches("http://");
    let prometheus = Prometheus::start(
        &dir.path.join("prometheus"),
        "portwatch-collector",
        target,
        &token_file,
        &rules_file(),
    )
    .unwrap();
    let scraped = eventually(SETTLE, || {
        prometheus
            .query("portwatch_metrics_scrapes_total{format=\"openmetrics\"} > 0")
            .ok()
            .filter(|r| !r.is_empty())
    })
    .expect("Prometheus scrapes the collector, in OpenMetrics");
    assert_eq!(scraped[0]["metric"]["job"], "portwatch-collector", "{scraped:?}");
    let targets = prometheus.targets().unwrap();
    assert_eq!(targets.len(), 1, "{targets:?}");
    assert_eq!(
        (&targets[0]["health"], &targets[0]["lastError"]),
        (&"up".into(), &"".into()),
        "{targets:?}"
    );
    let stored = prometheus
        .query("portwatch_ingest_requests_total{outcome=\"stored\"}")
        .unwrap();
    assert_eq!(stored.len(), 1, "counters keep their names: {stored:?}");
    // Every rule evaluates without error; once the collector is scraped, it is not down (the first
    // evaluation may have come before the first scrape, when `up` was absent).
    let rules = eventually(SETTLE, || {
        let rules = prometheus.rules().ok()?;
        let down = rules.iter().find(|r| r["name"] == "PortwatchCollectorDown")?;
        (rules.len() == 6 && rules.iter().all(|r| r["health"] == "ok") && down["state"] == "inactive").then_some(rules)
    })
    .unwrap_or_else(|| panic!("every rule evaluates, the collector is up: {:#?}", prometheus.rules()));
    assert!(
        rules.iter().all(|r| r["state"] == "inactive"),
        "nothing is wrong with this collector: {rules:#?}"
    );
}
