//! End to end: a real collector and agent, a baseline applied with the
//! `portwatch` CLI, real listeners that depart from it, and the findings
//! and alerts that follow: raised once, acknowledged, resolved when the
//! condition clears. Each test runs on SQLite and on PostgreSQL.
// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::process::{Command, Output};
use std::time::Duration;

use portwatch_tests::*;
use serde_json::Value;

const HOST: &str = "drift-web-1";
/// Generous bound for a change to be stored and evaluated (agent 200 ms, sweep 1 s).
const SETTLE: Duration = Duration::from_secs(30);

/// A port nothing listens on now (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn portwatch(url: &str, token: &str, args: &[&str]) -> Output {
    Command::new(binary("portwatch"))
        .args(["--collector", url, "--token", token])
        .args(args)
        .output()
        .unwrap()
}

fn alerts(url: &str, token: &str) -> Vec<Value> {
    let v = portwatch_json(url, token, &["alerts", "--state", "all", "--host", HOST]).unwrap();
    v.as_array().cloned().unwrap()
}

fn alert_of<'a>(all: &'a [Value], kind: &str, port: Option<u16>) -> Vec<&'a Value> {
    all.iter()
        .filter(|a| a["kind"] == kind && port.is_none_or(|p| a["finding"]["local_port"] == p))
        .collect()
}

fn a_baseline_turns_departures_into_findings_and_alerts_with_a_lifecycle(backend: Backend) {
    let dir = TempDir::new("drift").unwrap();
    let test_db = TestDb::new(backend, &dir.path);
    let db = test_db.db.clone();
    let risky = free_port();
    let config = dir.path.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndb = {:?}\n[alerts]\nsweep_every = \"1s\"\nstartup_grace = \"1s\"\nflap_max = 2\nrisky_ports = [\"tcp/{risky}=test-db\"]\n",
            db.to_str().unwrap()
        ),
    )
    .unwrap();
    let agent_token = create_token(&db, &["--host", HOST]).unwrap();
    let read = create_token(&db, &["--role", "read", "--name", "ops-read"]).unwrap();
    let admin = create_token(&db, &["--role", "admin", "--name", "ops-admin"]).unwrap();
    let collector = Collector::serve(&db, &[OsStr::new("--config"), config.as_os_str()]).unwrap();
    let url = collector.url.clone();
    let spool = dir.path.join("spool");
    let agent = Agent::start(&url, &agent_token, HOST, "200ms", &spool).unwrap();

    let expected = Listeners::start(&[], &["tcp4:127.0.0.1:0"]).unwrap();
    let expected_port = expected.port(0);
    let missing_port = free_port();
    let (owner_port, wide_port, flap_port) = (free_port(), free_port(), free_port());
    eventually(SETTLE, || {
        let v = portwatch_json(&url, &read, &["ports", "--host", HOST]).ok()?;
        v.as_array()?
            .iter()
            .any(|r| r["local_port"] == expected_port)
            .then_some(())
    })
    .expect("the agent reports the expected listener");

    // Before any baseline, the host's listeners are listed as unbaselined, not alerted.
    let drift = portwatch_json(&url, &read, &["drift", "--host", HOST]).unwrap();
    assert!(
        drift
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "unbaselined" && f["local_port"] == expected_port),
        "{drift:#}"
    );
    assert!(alerts(&url, &read).is_empty());
    let out = portwatch(&url, &read, &["drift", "--host", HOST]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&format!("no baseline is applied yet, so none covers {HOST}")),
        "{table}"
    );
    // A mistyped host is not an all-clear.
    let out = portwatch(&url, &read, &["drift", "--host", "drift-web-typo"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("404") && stderr.contains("no host \"drift-web-typo\"; `portwatch hosts` lists them"),
        "{stderr}"
    );

    // A proposal from what listens now: refused until a person says who owns what.
    let out = portwatch(&url, &read, &["baseline", "learn", "--host", "drift-web-*"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let proposal = String::from_utf8(out.stdout).unwrap();
    assert!(proposal.contains(&format!("port = {expected_port}")), "{proposal}");
    let proposal_file = dir.path.join("proposal.toml");
    std::fs::write(&proposal_file, &proposal).unwrap();
    let out = portwatch(&url, &read, &["baseline", "check", proposal_file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("proposal.toml") && stderr.contains("owner is empty"),
        "{stderr}"
    );

    // The reviewed baseline: the listener we run, and one that is not there.
    let file = dir.path.join("web.toml");
    let baseline = format!(
        "name = \"web\"\nhosts = [\"drift-web-*\"]\nmissing_grace = \"1s\"\n\n\
         [[listener]]\nproto = \"tcp\"\nport = {expected_port}\nbind = \"loopback\"\nprocess = \"pw-listen\"\n\
         owner = \"team test\"\nreason = \"the test's service\"\n\n\
         [[listener]]\nproto = \"tcp\"\nport = {missing_port}\nowner = \"team test\"\nreason = \"a service that is down\"\n\n\
         [[listener]]\nproto = \"tcp\"\nport = {owner_port}\nprocess = \"sshd\"\nowner = \"team sre\"\nreason = \"ssh\"\n\n\
         [[listener]]\nproto = \"tcp\"\nport = {wide_port}\nbind = \"loopback\"\nprocess = \"pw-listen\"\n\
         owner = \"team test\"\nreason = \"local only\"\n\n\
         [[listener]]\nproto = \"tcp\"\nport = {flap_port}\nrequired = false\nowner = \"team test\"\nreason = \"flaps\"\n"
    );
    std::fs::write(&file, &baseline).unwrap();
    let file_arg = file.to_str().unwrap();

    // A read token may not apply it; a broken file names its line.
    let out = portwatch(&url, &read, &["baseline", "apply", file_arg, "-m", "x"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("403") && stderr.contains("admin token"), "{stderr}");
    let broken = dir.path.join("broken.toml");
    std::fs::write(&broken, baseline.replace("port = ", "prot = ")).unwrap();
    let out = portwatch(
        &url,
        &admin,
        &["baseline", "apply", broken.to_str().unwrap(), "-m", "x"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("broken.toml") && stderr.contains("line 7") && stderr.contains("prot"),
        "{stderr}"
    );

    let out = portwatch(
        &url,
        &admin,
        &["baseline", "apply", file_arg, "-m", "inventory of the web tier"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("created"));
    let out = portwatch(&url, &admin, &["baseline", "apply", file_arg, "-m", "again"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("unchanged"));
    let log = portwatch_json(&url, &read, &["baseline", "log", "web"]).unwrap();
    assert_eq!(
        log.as_array().unwrap().len(),
        1,
        "an unchanged file is no change: {log:#}"
    );
    assert_eq!(log[0]["actor"], "ops-admin");
    assert_eq!(log[0]["comment"], "inventory of the web tier");
    assert_eq!(log[0]["action"], "create");

    // Departures: an unexpected listener, a "database" on 0.0.0.0, sshd's port held by
    // something else, a loopback service on 0.0.0.0, and a listener that keeps restarting.
    let unexpected = Listeners::start(&[], &["tcp4:127.0.0.1:0"]).unwrap();
    let unexpected_port = unexpected.port(0);
    let database = Listeners::start(&[], &[&format!("tcp4:0.0.0.0:{risky}")]).unwrap();
    let impostor = Listeners::start(&[], &[&format!("tcp4:127.0.0.1:{owner_port}")]).unwrap();
    let widened = Listeners::start(&[], &[&format!("tcp4:0.0.0.0:{wide_port}")]).unwrap();
    for _ in 0..3 {
        let l = Listeners::start(&[], &[&format!("tcp4:127.0.0.1:{flap_port}")]).unwrap();
        let pid = l.pids()[0];
        eventually(SETTLE, || {
            let v = portwatch_json(&url, &read, &["ports", "--host", HOST]).ok()?;
            v.as_array()?
                .iter()
                .any(|r| r["local_port"] == flap_port && r["processes"][0]["pid"] == pid)
                .then_some(())
        })
        .expect("each start of the flapping listener is seen");
        drop(l);
        eventually(SETTLE, || {
            let v = portwatch_json(&url, &read, &["ports", "--host", HOST]).ok()?;
            (!v.as_array()?.iter().any(|r| r["local_port"] == flap_port)).then_some(())
        })
        .expect("each stop of the flapping listener is seen");
    }
    let all = eventually(SETTLE, || {
        let all = alerts(&url, &read);
        let ready = alert_of(&all, "unexpected-listener", Some(unexpected_port)).len() == 1
            && alert_of(&all, "risky-port-exposed", Some(risky)).len() == 1
            && alert_of(&all, "missing-listener", Some(missing_port)).len() == 1
            && alert_of(&all, "owner-mismatch", Some(owner_port)).len() == 1
            && alert_of(&all, "exposure-widened", Some(wide_port)).len() == 1
            && alert_of(&all, "flapping", Some(flap_port)).len() == 1;
        ready.then_some(all)
    })
    .unwrap_or_else(|| panic!("alerts raised: {:#?}", alerts(&url, &read)));
    assert!(
        alert_of(&all, "unexpected-listener", Some(expected_port)).is_empty(),
        "{all:#?}"
    );
    assert!(
        alert_of(&all, "missing-listener", Some(expected_port)).is_empty(),
        "{all:#?}"
    );
    let mismatch = alert_of(&all, "owner-mismatch", Some(owner_port))[0];
    assert!(
        mismatch["message"].as_str().unwrap().contains("by sshd") && mismatch["finding"]["owner"] == "team sre",
        "{mismatch:#}"
    );
    assert_eq!(
        alert_of(&all, "exposure-widened", Some(wide_port))[0]["severity"],
        "critical"
    );
    assert!(
        alert_of(&all, "unexpected-listener", Some(owner_port)).is_empty(),
        "{all:#?}"
    );
    assert!(
        alert_of(&all, "unexpected-listener", Some(flap_port)).is_empty(),
        "{all:#?}"
    );
    drop((impostor, widened));
    let risky_alert = alert_of(&all, "risky-port-exposed", Some(risky))[0];
    assert_eq!(risky_alert["severity"], "critical");
    assert!(
        risky_alert["message"].as_str().unwrap().contains("test-db"),
        "{risky_alert:#}"
    );
    let unexpected_alert = alert_of(&all, "unexpected-listener", Some(unexpected_port))[0].clone();
    let id = unexpected_alert["id"].as_i64().unwrap().to_string();

    // Drift says the same, now.
    let drift = portwatch_json(&url, &read, &["drift", "--host", HOST]).unwrap();
    let kinds: Vec<(String, Value)> = drift
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["kind"].as_str().unwrap().to_owned(), f["local_port"].clone()))
        .collect();
    assert!(
        kinds.contains(&("unexpected-listener".to_owned(), unexpected_port.into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("missing-listener".to_owned(), missing_port.into())),
        "{kinds:?}"
    );
    assert!(!kinds.iter().any(|(k, _)| k == "unbaselined"), "{kinds:?}");

    // Acknowledged by an admin, with a comment; not by a reader, not twice.
    let out = portwatch(&url, &read, &["alerts", "ack", &id, "-m", "mine"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"));
    let acked = portwatch_json(&url, &admin, &["alerts", "ack", &id, "-m", "a test listener"]).unwrap();
    assert_eq!(acked["state"], "acknowledged");
    assert_eq!(acked["acked_by"], "ops-admin");
    let out = portwatch(&url, &admin, &["alerts", "ack", &id, "-m", "again"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("409") && stderr.contains("acknowledged already"),
        "{stderr}"
    );

    // Still departing after more sweeps: still one alert per condition.
    std::thread::sleep(Duration::from_millis(2500));
    let all = alerts(&url, &read);
    assert_eq!(
        alert_of(&all, "unexpected-listener", Some(unexpected_port)).len(),
        1,
        "{all:#?}"
    );
    assert_eq!(alert_of(&all, "risky-port-exposed", Some(risky)).len(), 1, "{all:#?}");

    // The condition clears: resolved.
    drop(unexpected);
    drop(database);
    eventually(SETTLE, || {
        let all = alerts(&url, &read);
        let a = alert_of(&all, "unexpected-listener", Some(unexpected_port));
        let r = alert_of(&all, "risky-port-exposed", Some(risky));
        (a.len() == 1 && a[0]["state"] == "resolved" && r[0]["state"] == "resolved").then_some(())
    })
    .expect("closing the listeners resolves their alerts");

    // The agent dies: the host goes silent, and an alert says so; it comes back: resolved.
    agent.kill();
    let silent = eventually(SETTLE, || {
        let all = alerts(&url, &read);
        alert_of(&all, "host-silent", None).first().map(|a| (*a).clone())
    })
    .expect("a killed agent is noticed");
    assert_eq!(silent["state"], "open");
    let _agent = Agent::start(&url, &agent_token, HOST, "200ms", &spool).unwrap();
    eventually(SETTLE, || {
        let all = alerts(&url, &read);
        let s = alert_of(&all, "host-silent", None);
        (s.len() == 1 && s[0]["state"] == "resolved").then_some(())
    })
    .expect("the agent's return resolves host-silent");

    // The table form for people.
    let out = portwatch(&url, &read, &["alerts", "--state", "all", "--host", HOST]);
    let table = String::from_utf8_lossy(&out.stdout);
    let header = table.lines().next().unwrap_or_default();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["ID", "STATE", "SEVERITY", "KIND", "HOST", "OPENED", "WHAT"],
        "{table}"
    );
    let row = |id: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .unwrap_or_default()
    };
    assert!(
        row(&id).contains("resolved") && row(&id).contains("unexpected-listener"),
        "{table}"
    );
    let missing_id = alert_of(&alerts(&url, &read), "missing-listener", Some(missing_port))[0]["id"].to_string();
    assert!(row(&missing_id).contains("open"), "{table}");
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    // A full listing says that there may be more.
    let out = portwatch(&url, &read, &["alerts", "--state", "all", "--limit", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    assert!(
        stderr.contains("showing the newest 1 alerts; --limit to see more"),
        "{stderr}"
    );
    drop(expected);
}

/// A webhook receiver on loopback that answers `refusal` to its first
/// `fail_first` requests, then 200; it keeps every body it accepted, and
/// every body it refused.
struct Receiver {
    url: String,
    accepted: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    refused: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    fn start(fail_first: usize, refusal: axum::http::StatusCode) -> Receiver {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let accepted: Arc<Mutex<Vec<Value>>> = Arc::default();
        let refused: Arc<Mutex<Vec<Value>>> = Arc::default();
        let count = Arc::new(AtomicUsize::new(0));
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let (acc, refs) = (accepted.clone(), refused.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let (acc, refs, count) = (acc.clone(), refs.clone(), count.clone());
                async move {
                    if count.fetch_add(1, Ordering::SeqCst) < fail_first {
                        refs.lock().unwrap().push(body);
                        return refusal;
                    }
                    acc.lock().unwrap().push(body);
                    axum::http::StatusCode::OK
                }
            }),
        );
        runtime.spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url,
            accepted,
            refused,
            _runtime: runtime,
        }
    }

    fn bodies(&self) -> Vec<Value> {
        self.accepted.lock().unwrap().clone()
    }
}

fn a_webhook_that_fails_first_still_gets_each_alert_change_once_and_a_dead_one_blocks_nothing(backend: Backend) {
    const HOOK_HOST: &str = "hook-web-1";
    let receiver = Receiver::start(2, axum::http::StatusCode::SERVICE_UNAVAILABLE);
    // A receiver that refuses everything for good (a deleted Slack channel): each event is
    // tried once, then skipped, not retried forever.
    let gone = Receiver::start(usize::MAX, axum::http::StatusCode::GONE);
    let dead = format!("http://127.0.0.1:{}/hook", free_port());
    let dir = TempDir::new("drift-hook").unwrap();
    // A syslog socket of our own, standing in for /dev/log.
    let syslog_path = dir.path.join("log.sock");
    let syslog = std::os::unix::net::UnixDatagram::bind(&syslog_path).unwrap();
    syslog.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let test_db = TestDb::new(backend, &dir.path);
    let db = test_db.db.clone();
    let config = dir.path.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndb = {:?}\n[alerts]\nsweep_every = \"1s\"\nstartup_grace = \"1s\"\n\n\
             [[alerts.webhook]]\nname = \"dead\"\nurl = {dead:?}\n\n\
             [[alerts.webhook]]\nname = \"ops\"\nurl = {:?}\nmin_severity = \"warning\"\n\n\
             [[alerts.webhook]]\nname = \"gone\"\nurl = {:?}\nformat = \"slack\"\n\n\
             [alerts.syslog]\nsocket = {:?}\nfacility = \"local3\"\n",
            db.to_str().unwrap(),
            receiver.url,
            gone.url,
            syslog_path.to_str().unwrap()
        ),
    )
    .unwrap();
    let agent_token = create_token(&db, &["--host", HOOK_HOST]).unwrap();
    let read = create_token(&db, &["--role", "read", "--name", "ops-read"]).unwrap();
    let admin = create_token(&db, &["--role", "admin", "--name", "ops-admin"]).unwrap();
    let collector = Collector::serve(&db, &[OsStr::new("--config"), config.as_os_str()]).unwrap();
    let url = collector.url.clone();
    let _agent = Agent::start(&url, &agent_token, HOOK_HOST, "200ms", &dir.path.join("spool")).unwrap();
    let file = dir.path.join("hook.toml");
    std::fs::write(
        &file,
        "name = \"hook\"\nhosts = [\"hook-web-*\"]\n\n[[listener]]\nproto = \"udp\"\nport = \"1-65535\"\n\
         owner = \"team test\"\nreason = \"any UDP is fine here\"\n",
    )
    .unwrap();
    let out = portwatch(
        &url,
        &admin,
        &["baseline", "apply", file.to_str().unwrap(), "-m", "hook test"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let unexpected = Listeners::start(&[], &["tcp4:127.0.0.1:0"]).unwrap();
    let port = unexpected.port(0);
    let of_port = |bodies: &[Value], event: &str| -> Vec<Value> {
        bodies
            .iter()
            .filter(|b| b["event"] == event && b["alert"]["finding"]["local_port"] == port)
            .cloned()
            .collect()
    };
    let opened = eventually(SETTLE, || {
        let o = of_port(&receiver.bodies(), "opened");
        (!o.is_empty()).then_some(o)
    })
    .expect("the alert reaches the webhook once it recovers");
    assert!(receiver.refused.lock().unwrap().len() >= 2, "the receiver failed first");
    assert_eq!(opened[0]["alert"]["kind"], "unexpected-listener");
    assert_eq!(opened[0]["alert"]["host"], HOOK_HOST);

    drop(unexpected);
    eventually(SETTLE, || {
        (!of_port(&receiver.bodies(), "resolved").is_empty()).then_some(())
    })
    .expect("the resolution reaches the webhook");
    // Let more sweeps run: nothing is delivered twice.
    std::thread::sleep(Duration::from_millis(2500));
    let bodies = receiver.bodies();
    assert_eq!(of_port(&bodies, "opened").len(), 1, "{bodies:#?}");
    assert_eq!(of_port(&bodies, "resolved").len(), 1, "{bodies:#?}");
    let ids: Vec<i64> = bodies.iter().map(|b| b["event_id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order, no repeat: {ids:?}");
    let alerts = portwatch_json(&url, &read, &["alerts", "--state", "all", "--host", HOOK_HOST]).unwrap();
    assert!(!alerts.as_array().unwrap().is_empty());

    // The refusing receiver was asked once per event (Slack format), never twice.
    let refused = gone.refused.lock().unwrap().clone();
    let texts: Vec<&str> = refused.iter().filter_map(|b| b["text"].as_str()).collect();
    assert_eq!(texts.len(), refused.len(), "slack bodies: {refused:#?}");
    let mut unique = texts.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        unique.len(),
        texts.len(),
        "no event retried after a permanent refusal: {texts:#?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains(&format!("opened alert {}", opened[0]["alert"]["id"]))),
        "{texts:#?}"
    );

    // Syslog got the same changes, as lines with a priority.
    let id = opened[0]["alert"]["id"].as_i64().unwrap();
    let mut lines = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = syslog.recv(&mut buf) {
        lines.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let opened_line = format!("alert {id} opened [warning] unexpected-listener on {HOOK_HOST}");
    let resolved_line = format!("alert {id} resolved [warning] unexpected-listener on {HOOK_HOST}");
    // local3 (19) * 8 + warning (4) = 156; notice (5) for a resolution = 157.
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("<156>") && l.contains(&opened_line))
            .count(),
        1,
        "{lines:#?}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("<157>") && l.contains(&resolved_line))
            .count(),
        1,
        "{lines:#?}"
    );
}

on_every_backend!(
    a_baseline_turns_departures_into_findings_and_alerts_with_a_lifecycle,
    a_webhook_that_fails_first_still_gets_each_alert_change_once_and_a_dead_one_blocks_nothing,
);

/// Two collectors on one PostgreSQL database with one webhook: the one
/// holding the sink's lease is killed (kill -9) while alerts open and
/// resolve; the other takes the lease over and delivers what followed, and
/// every alert change reaches the receiver (at least once: repeats carry
/// the same `event_id`).
#[test]
fn when_the_collector_delivering_alerts_dies_another_takes_over_and_no_alert_change_is_lost() {
    const LEASED_HOST: &str = "lease-web-1";
    let receiver = Receiver::start(0, axum::http::StatusCode::OK);
    let dir = TempDir::new("drift-lease").unwrap();
    let test_db = TestDb::new(Backend::Postgres, &dir.path);
    let db = test_db.db.clone();
    let config = dir.path.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndb = {:?}\n[alerts]\nsweep_every = \"1s\"\nstartup_grace = \"1s\"\n\n\
             [[alerts.webhook]]\nname = \"ops\"\nurl = {:?}\nmin_severity = \"info\"\n",
            db.to_str().unwrap(),
            receiver.url
        ),
    )
    .unwrap();
    let agent_token = create_token(&db, &["--host", LEASED_HOST]).unwrap();
    let admin = create_token(&db, &["--role", "admin", "--name", "ops-admin"]).unwrap();
    let serve = || Collector::serve(&db, &[OsStr::new("--config"), config.as_os_str()]).unwrap();
    let mut collectors = vec![serve(), serve()];
    let holder = |test_db: &TestDb| -> Option<u32> {
        let holder = test_db.psql("SELECT holder FROM leases WHERE name = 'sink:webhook:ops'")?;
        holder.split(':').nth(1)?.parse().ok()
    };
    let pid = eventually(SETTLE, || holder(&test_db)).expect("one collector takes the sink's lease");
    let at = collectors
        .iter()
        .position(|c| c.pid() == pid)
        .expect("the holder is one of the two");
    let (survivor_url, holder_url) = (collectors[1 - at].url.clone(), collectors[at].url.clone());
    let _agent = Agent::start_with(
        &holder_url,
        &agent_token,
        LEASED_HOST,
        "200ms",
        &dir.path.join("spool"),
        &["--collector", survivor_url.as_str()],
    )
    .unwrap();
    let file = dir.path.join("lease.toml");
    std::fs::write(
        &file,
        "name = \"lease\"\nhosts = [\"lease-web-*\"]\n\n[[listener]]\nproto = \"udp\"\nport = \"1-65535\"\n\
         owner = \"team test\"\nreason = \"any UDP is fine here\"\n",
    )
    .unwrap();
    let out = portwatch(
        &survivor_url,
        &admin,
        &["baseline", "apply", file.to_str().unwrap(), "-m", "lease test"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let of_port = |event: &str, port: u16| -> usize {
        receiver
            .bodies()
            .iter()
            .filter(|b| b["event"] == event && b["alert"]["finding"]["local_port"] == port)
            .count()
    };
    let before = Listeners::start(&[], &["tcp4:127.0.0.1:0"]).unwrap();
    let before_port = before.port(0);
    eventually(SETTLE, || (of_port("opened", before_port) > 0).then_some(()))
        .expect("the holder delivers the first alert");

    collectors.remove(at).kill();
    let after = Listeners::start(&[], &["tcp4:127.0.0.1:0"]).unwrap();
    let after_port = after.port(0);
    drop(before);
    // Within the lease's 15 s and a renewal (5 s), then a sweep: a minute is generous.
    let takeover = Duration::from_secs(60);
    eventually(takeover, || (of_port("opened", after_port) > 0).then_some(()))
        .expect("the other collector takes the lease over and delivers the alert that opened after the kill");
    eventually(takeover, || (of_port("resolved", before_port) > 0).then_some(()))
        .expect("and the resolution of the first");
    let survivor = holder(&test_db).expect("a holder");
    assert_eq!(survivor, collectors[0].pid(), "the survivor holds the lease");
    // Every alert change the store has is delivered: none lost across the takeover.
    let stored = test_db
        .psql("SELECT string_agg(id::text, ',' ORDER BY id) FROM alert_events")
        .unwrap();
    let stored: std::collections::BTreeSet<i64> = stored.split(',').filter_map(|id| id.parse().ok()).collect();
    assert!(stored.len() >= 3, "opened, opened, resolved at least: {stored:?}");
    let delivered = || -> std::collections::BTreeSet<i64> {
        receiver
            .bodies()
            .iter()
            .filter_map(|b| b["event_id"].as_i64())
            .collect()
    };
    eventually(takeover, || stored.is_subset(&delivered()).then_some(()))
        .unwrap_or_else(|| panic!("delivered {:?}, stored {stored:?}", delivered()));
}

/// Startup grace is the fleet's: a collector started while another serves
/// the database gives its hosts none, so when it takes the sweep over from a
/// dead one, a host whose agent stopped is reported silent at once, not an
/// hour later.
#[test]
fn a_collector_started_beside_a_live_one_gives_no_startup_grace() {
    const QUIET_HOST: &str = "grace-web-1";
    let dir = TempDir::new("drift-grace").unwrap();
    let test_db = TestDb::new(Backend::Postgres, &dir.path);
    let db = test_db.db.clone();
    let config = dir.path.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndb = {:?}\n[alerts]\nsweep_every = \"1s\"\nstartup_grace = \"1h\"\n",
            db.to_str().unwrap()
        ),
    )
    .unwrap();
    let agent_token = create_token(&db, &["--host", QUIET_HOST]).unwrap();
    let read = create_token(&db, &["--role", "read", "--name", "ops-read"]).unwrap();
    let serve = || Collector::serve(&db, &[OsStr::new("--config"), config.as_os_str()]).unwrap();
    let first = serve();
    let agent = Agent::start(&first.url, &agent_token, QUIET_HOST, "200ms", &dir.path.join("spool")).unwrap();
    eventually(SETTLE, || {
        let hosts = portwatch_json(&first.url, &read, &["hosts"]).ok()?;
        hosts.as_array()?.iter().any(|h| h["host"] == QUIET_HOST).then_some(())
    })
    .expect("the host reports");
    assert!(agent.terminate().unwrap().success());
    // Started while the first serves the database: no grace of its own.
    let second = serve();
    first.kill();
    let silent = eventually(Duration::from_secs(90), || {
        let all = portwatch_json(&second.url, &read, &["alerts", "--host", QUIET_HOST]).ok()?;
        let silent: Vec<Value> = all
            .as_array()?
            .iter()
            .filter(|a| a["kind"] == "host-silent")
            .cloned()
            .collect();
        (!silent.is_empty()).then_some(silent)
    })
    .expect("the second collector takes the sweep over and reports the host silent, with no grace of an hour");
    assert_eq!(silent.len(), 1, "{silent:?}");
}
