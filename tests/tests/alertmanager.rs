//! End to end against a real Alertmanager (Debian's `prometheus-alertmanager`,
//! started here on 127.0.0.1 with a throwaway config and storage): a real
//! collector with an `[[alerts.alertmanager]]` sink, a real agent, and real
//! listeners on a risky port of this host. The alert shows in
//! Alertmanager's own API with portwatch's labels; a collector restart
//! makes no second alert; an alert raised while Alertmanager is down
//! arrives once it is up (and the ones it lost come back with the resend);
//! closing the port resolves the alert there.
//!
//! Needs `prometheus-alertmanager` (tests/run.sh installs it); no root.
// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::str::FromStr;
use std::time::Duration;

use jiff::Timestamp;

use portwatch_tests::prometheus::{free_port, Alertmanager};
use portwatch_tests::*;
use serde_json::Value;

const HOST: &str = "am-web-1";
/// A bound for what is awaited (not a timing assertion).
const SETTLE: Duration = Duration::from_secs(60);

/// Alertmanager's unresolved alerts of `HOST`'s risky port `port`.
fn am_alerts(am: &Alertmanager, port: u16) -> Vec<Value> {
    am.alerts()
        .unwrap()
        .into_iter()
        .filter(|a| {
            a["labels"]["host"] == HOST
                && a["labels"]["alertname"] == "risky-port-exposed"
                && a["labels"]["port"].as_str() == Some(port.to_string().as_str())
        })
        .collect()
}

/// When Alertmanager last took `alert`.
fn updated(alert: &Value) -> Timestamp {
    Timestamp::from_str(alert["updatedAt"].as_str().unwrap()).unwrap()
}

/// portwatch's alerts of `HOST` on `port`, any state.
fn pw_alerts(url: &str, token: &str, port: u16) -> Vec<Value> {
    let all = portwatch_json(url, token, &["alerts", "--state", "all", "--host", HOST]).unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "risky-port-exposed" && a["finding"]["local_port"] == port)
        .cloned()
        .collect()
}

/// A metric's value in the collector's `/metrics` (0 when absent).
fn metric(url: &str, token: &str, series: &str) -> f64 {
    let text = ureq::get(format!("{url}/metrics"))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    portwatch_fixtures::without_collector_label(&text)
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_risky_port_is_an_alert_in_alertmanager_until_it_closes_across_restarts_and_outages() {
    let dir = TempDir::new("alertmanager").unwrap();
    // A resolve_timeout far beyond the test: an alert that leaves Alertmanager's list was resolved by
    // portwatch's endsAt, not timed out.
    let am = Alertmanager::start(&dir.path.join("am"), 0, "1h").unwrap();
    let am_port = am.port;
    let (risky, risky2) = (free_port().unwrap(), free_port().unwrap());
    let db = dir.path.join("collector.db");
    let collector_port = free_port().unwrap();
    let config = dir.path.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{collector_port}\"\ndb = {db:?}\n\
             [alerts]\nsweep_every = \"1s\"\nstartup_grace = \"1s\"\n\
             risky_ports = [\"tcp/{risky}=test-db\", \"tcp/{risky2}=test-cache\"]\n\
             [[alerts.alertmanager]]\nname = \"am\"\nurls = [\"{}\"]\nresend_every = \"2s\"\n\
             external_url = \"https://portwatch.example.com\"\n",
            am.url
        ),
    )
    .unwrap();
    let agent_token = create_token(&db, &["--host", HOST]).unwrap();
    let read = create_token(&db, &["--role", "read", "--name", "am-read"]).unwrap();
    let serve = || Collector::serve(&db, &[OsStr::new("--config"), config.as_os_str()]).unwrap();
    let collector = serve();
    let url = collector.url.clone();
    let _agent = Agent::start(&url, &agent_token, HOST, "200ms", &dir.path.join("spool")).unwrap();

    // A "database" on 0.0.0.0 of this host: an active alert in Alertmanager, with portwatch's labels.
    let database = Listeners::start(&[], &[&format!("tcp4:0.0.0.0:{risky}")]).unwrap();
    let first = eventually(SETTLE, || am_alerts(&am, risky).pop()).expect("the alert reaches Alertmanager");
    let ours = pw_alerts(&url, &read, risky);
    assert_eq!(ours.len(), 1, "{ours:#?}");
    let id = ours[0]["id"].as_i64().unwrap();
    assert_eq!(
        first["labels"],
        serde_json::json!({
            "alertname": "risky-port-exposed",
            "host": HOST,
            "severity": "critical",
            "proto": "tcp",
            "port": risky.to_string(),
            "portwatch_alert": id.to_string(),
        }),
        "{first:#}"
    );
    assert_eq!(first["status"]["state"], "active", "{first:#}");
    let summary = first["annotations"]["summary"].as_str().unwrap();
    assert!(summary.contains(&format!("0.0.0.0:{risky} (test-db)")), "{summary}");
    assert!(
        first["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains("pw-listen"),
        "{first:#}"
    );
    let link = format!("https://portwatch.example.com/api/v1/alerts?state=all&host={HOST}#alert-{id}");
    assert_eq!(first["annotations"]["url"], link.as_str());
    assert_eq!(first["generatorURL"], link.as_str());
    let opened = Timestamp::from_str(ours[0]["opened_at"].as_str().unwrap()).unwrap();
    let starts = Timestamp::from_str(first["startsAt"].as_str().unwrap()).unwrap();
    assert_eq!(starts, opened, "startsAt is when the alert opened");

    // The collector killed and started again: the alert is sent again (updatedAt moves), still one.
    let before = updated(&first);
    collector.kill();
    let collector = serve();
    assert_eq!(collector.url, url);
    let again = eventually(SETTLE, || {
        let alerts = am_alerts(&am, risky);
        alerts.iter().any(|a| updated(a) > before).then_some(alerts)
    })
    .expect("the restarted collector sends the active alert again");
    assert_eq!(again.len(), 1, "no second alert: {again:#?}");
    assert_eq!(again[0]["labels"], first["labels"]);
    assert_eq!(pw_alerts(&url, &read, risky).len(), 1);

    // Alertmanager down: a second risky port opens meanwhile, and its delivery fails.
    let sink = format!("portwatch_alert_sink_failures_total{{sink=\"alertmanager:am@127.0.0.1:{am_port}\"}}");
    let failures = metric(&url, &read, &sink);
    am.kill();
    let cache = Listeners::start(&[], &[&format!("tcp4:0.0.0.0:{risky2}")]).unwrap();
    let second = eventually(SETTLE, || pw_alerts(&url, &read, risky2).pop()).expect("portwatch raises the alert");
    eventually(SETTLE, || (metric(&url, &read, &sink) > failures).then_some(()))
        .expect("the delivery to the Alertmanager that is down fails and is counted");
    // Up again, empty (Alertmanager keeps no alert across a restart): both alerts arrive, the new one
    // from the outbox, the one it had before from the resend.
    let am = Alertmanager::start(&dir.path.join("am"), am_port, "1h").unwrap();
    let arrived = eventually(SETTLE, || {
        let (a, b) = (am_alerts(&am, risky), am_alerts(&am, risky2));
        (a.len() == 1 && b.len() == 1).then_some(b)
    })
    .expect("both alerts reach the Alertmanager that came back");
    assert_eq!(
        arrived[0]["labels"]["portwatch_alert"],
        second["id"].as_i64().unwrap().to_string()
    );

    // The database closes: resolved in Alertmanager (gone from its unresolved alerts), the other stays.
    drop(database);
    eventually(SETTLE, || am_alerts(&am, risky).is_empty().then_some(()))
        .expect("closing the port resolves the alert in Alertmanager");
    assert_eq!(pw_alerts(&url, &read, risky)[0]["state"], "resolved");
    assert_eq!(am_alerts(&am, risky2).len(), 1, "the other alert is still active");
    // The resend goes on (every 2 s) and does not bring the resolved alert back.
    let seen = updated(&am_alerts(&am, risky2)[0]);
    eventually(SETTLE, || {
        am_alerts(&am, risky2).iter().any(|a| updated(a) > seen).then_some(())
    })
    .expect("the active alert is sent again");
    assert!(am_alerts(&am, risky).is_empty(), "a resolved alert is not sent again");
    drop(cache);
    drop(collector);
}
