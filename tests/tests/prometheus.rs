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
    // The collector's own series are labelled with its name: by default this machine's and its port.
    let me = format!(
        "collector=\"{}\"",
        portwatch_collector::metrics::default_collector_name(collector.port())
    );
    let _agent = Agent::start(&url, &agent_token, "prom-web-1", "200ms", &dir.path.join("spool")).unwrap();
    eventually(SETTLE, || {
        let (_, text) = scrape(&url, &read, None);
        text.lines()
            .any(|l| l.starts_with(&format!("portwatch_ingest_duration_seconds_count{{{me}}} ")) && !l.ends_with(" 0"))
            .then_some(())
    })
    .expect("the agent's batches are stored and timed");

    // Prometheus text, asked for or by default: promtool has nothing to say about it.
    for accept in [Some("text/plain;version=0.0.4"), None] {
        let (content_type, text) = scrape(&url, &read, accept);
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        for series in [
            format!("portwatch_ingest_duration_seconds_bucket{{{me},le=\"+Inf\"}}"),
            format!("portwatch_ingest_batches_queued{{{me}}}"),
            format!("portwatch_alert_sink_lag_seconds{{{me},sink=\"webhook:ops\"}}"),
            format!("portwatch_threat_list_entries{{{me},list=\"level1\"}}"),
            format!("portwatch_threat_list_bad_lines{{{me},list=\"level1\"}}"),
            format!("portwatch_threat_list_reload_failures_total{{{me},list=\"level1\"}}"),
            format!("portwatch_alert_sink_failures_total{{{me},sink=\"alertmanager:am@127.0.0.1:{nowhere}\"}}"),
            format!("process_resident_memory_bytes{{{me}}}"),
            format!("portwatch_store_heartbeats_kept_total{{{me}}}"),
            "portwatch_hosts{status=\"up\"}".to_owned(),
            "portwatch_listeners_open".to_owned(),
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

/// The fleet's series of a `/metrics` text, by series (name and labels),
/// but the database's size, which grows between two scrapes.
fn fleet_series(text: &str) -> std::collections::BTreeMap<String, String> {
    const FLEET: [&str; 5] = [
        "portwatch_hosts",
        "portwatch_listeners_open",
        "portwatch_agent_reports_dropped",
        "portwatch_alerts_active",
        "portwatch_baselines",
    ];
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| FLEET.contains(&series.split('{').next().unwrap_or(series)))
        .map(|(series, value)| (series.to_owned(), value.to_owned()))
        .collect()
}

/// Two collectors on one PostgreSQL database, each with an agent of its
/// own: each labels its own series with its name (one named in its config,
/// one by default), and both serve the same fleet, read from the database,
/// with no such label; promtool has nothing to say about either.
#[test]
fn two_collectors_on_one_database_name_their_own_series_and_serve_the_same_fleet() {
    let dir = TempDir::new("prometheus-two").unwrap();
    let db = TestDb::new(Backend::Postgres, &dir.path);
    let read = create_token(&db.db, &["--role", "read", "--name", "prometheus"]).unwrap();
    let named = dir.path.join("named.toml");
    std::fs::write(
        &named,
        "[metrics]\ncollector = \"collector-two\"\n[postgres]\nheartbeat_flush = \"500ms\"\n",
    )
    .unwrap();
    let plain = dir.path.join("plain.toml");
    std::fs::write(&plain, "[postgres]\nheartbeat_flush = \"500ms\"\n").unwrap();
    let serve = |config: &Path| {
        Collector::serve(
            &db.db,
            &[
                OsStr::new("--listen"),
                OsStr::new("127.0.0.1:0"),
                OsStr::new("--db"),
                db.db.as_os_str(),
                OsStr::new("--config"),
                config.as_os_str(),
            ],
        )
        .unwrap()
    };
    let collectors = [serve(&plain), serve(&named)];
    let names = [
        portwatch_collector::metrics::default_collector_name(collectors[0].port()),
        "collector-two".to_owned(),
    ];
    let _agents: Vec<Agent> = collectors
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let host = format!("prom-two-{i}");
            let token = create_token(&db.db, &["--host", &host]).unwrap();
            Agent::start(&c.url, &token, &host, "200ms", &dir.path.join(format!("spool-{i}"))).unwrap()
        })
        .collect();
    let stored = |text: &str, name: &str| -> u64 {
        let series = format!("portwatch_ingest_requests_total{{collector=\"{name}\",outcome=\"stored\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let texts = eventually(SETTLE, || {
        let texts = collectors.each_ref().map(|c| scrape(&c.url, &read, None).1);
        let fleets = texts.each_ref().map(|t| fleet_series(t));
        let both_up = fleets[0].get("portwatch_hosts{status=\"up\"}").map(String::as_str) == Some("2");
        let each_stored = (0..2).all(|i| stored(&texts[i], &names[i]) > 0);
        (both_up && each_stored && fleets[0] == fleets[1]).then_some(texts)
    })
    .unwrap_or_else(|| {
        let texts = collectors.each_ref().map(|c| scrape(&c.url, &read, None).1);
        panic!(
            "both agents stored, the same fleet on both:\n{}\n---\n{}",
            texts[0], texts[1]
        )
    });
    for (i, text) in texts.iter().enumerate() {
        let (mine, other) = (&names[i], &names[1 - i]);
        assert!(
            !text.contains(&format!("collector=\"{other}\"")),
            "{mine} serves none of {other}'s series:\n{text}"
        );
        // Every series but the fleet's (and the database's size) is this collector's.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or(line);
            let fleet = fleet_series(line).len() == 1 || name == "portwatch_store_size_bytes";
            assert_eq!(
                line.contains(&format!("collector=\"{mine}\"")),
                !fleet,
                "{line} (served by {mine})"
            );
        }
        let (clean, said) = promtool(&["check", "metrics"], text.as_bytes()).unwrap();
        assert!(
            clean && said.trim().is_empty(),
            "promtool check metrics: {said}\n{text}"
        );
    }
    assert_ne!(names[0], names[1]);
}
