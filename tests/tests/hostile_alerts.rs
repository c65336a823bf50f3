//! Hostile hosts against the alert pipeline, end to end: a real collector
//! (`portwatch-collector serve` with a config file), batches made by hand
//! and posted over HTTP with agent tokens, a real webhook receiver and a
//! syslog socket of our own. One host floods the collector with findings
//! (20,000 risky listeners, 1,000 flapping ones) or names its process with
//! 300 KB; the test asserts that the flood opens a bounded number of
//! alerts, that another host's alert still gets through, and that syslog
//! takes a message it can hold and the events after it.
// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use portwatch_common::wire::{Batch, HostFacts, Report, ReportBody, PROTOCOL_VERSION};
use portwatch_common::{Exposure, Family, Listener, Process, Proto};
use portwatch_tests::*;
use serde_json::Value;

/// A generous bound for what is asserted to happen (not a timing
/// assertion: the delay itself is printed).
const SETTLE: Duration = Duration::from_secs(60);

/// The collector's default `[alerts] max_open_per_kind`.
const CAP: usize = 100;

fn facts() -> HostFacts {
    HostFacts {
        detection: None,
        host_netns: None,
        addresses: Vec::new(),
        os: Some("Debian GNU/Linux 12".into()),
        kernel: None,
        boot_time: None,
        agent_version: "0.1.0".into(),
        interval_ms: 10_000,
        tags: Default::default(),
    }
}

/// A listener on `addr`:`port`, held by one process named `name`.
fn listener(addr: std::net::IpAddr, port: u16, inode: u64, name: &str) -> Listener {
    Listener {
        netns: 4_026_531_840,
        proto: Proto::Tcp,
        family: Family::Ipv4,
        local_addr: addr,
        local_port: port,
        inode,
        uid: 0,
        user: Some("root".into()),
        exposure: Exposure::of(addr),
        dual_stack: false,
        processes: vec![Process {
            pid: 600,
            name: name.into(),
            cmdline: None,
            exe: None,
            uid: Some(0),
            user: Some("root".into()),
            container: None,
            unit: None,
        }],
        firewall: None,
    }
}

fn batch(host: &str, reports: Vec<Report>) -> Batch {
    Batch {
        version: PROTOCOL_VERSION,
        host: host.into(),
        session: format!("{host}-run-1"),
        dropped: 0,
        peers: Vec::new(),
        peers_dropped: 0,
        alive_at: None,
        reports,
    }
}

fn post(url: &str, token: &str, batch: &Batch) {
    let ack: Value = ureq::post(format!("{url}/api/v1/ingest"))
        .header("Authorization", format!("Bearer {token}"))
        .send_json(batch)
        .expect("the collector takes the batch")
        .body_mut()
        .read_json()
        .unwrap();
    assert_eq!(ack["resync"], false, "{ack}");
}

/// A webhook receiver on loopback that keeps every body with when it came.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<(Instant, Value)>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    fn start() -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let got: Arc<Mutex<Vec<(Instant, Value)>>> = Arc::default();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let keep = got.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let keep = keep.clone();
                async move {
                    keep.lock().unwrap().push((Instant::now(), body));
                    axum::http::StatusCode::OK
                }
            }),
        );
        runtime.spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url,
            got,
            _runtime: runtime,
        }
    }

    fn bodies(&self) -> Vec<(Instant, Value)> {
        self.got.lock().unwrap().clone()
    }
}

/// The unresolved alerts of `host`.
fn open_alerts(url: &str, token: &str, host: &str) -> Vec<Value> {
    let v = portwatch_json(url, token, &["alerts", "--host", host, "--limit", "10000"]).unwrap();
    v.as_array().cloned().unwrap()
}

fn of_kind<'a>(alerts: &'a [Value], kind: &str) -> Vec<&'a Value> {
    alerts.iter().filter(|a| a["kind"] == kind).collect()
}

fn is_summary(alert: &Value) -> bool {
    alert["key"].as_str().is_some_and(|k| k.ends_with(":overflow"))
}

#[test]
fn a_host_flooding_findings_opens_at_most_the_cap_and_another_host_s_alert_still_gets_through() {
    const FLOOD: &str = "flood-a";
    const QUIET: &str = "quiet-b";
    let receiver = Receiver::start();
    let dir = TempDir::new("hostile-alerts-flood").unwrap();
    let db = dir.path.join("collector.db");
    let config = dir.path.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndb = {:?}\n[alerts]\nsweep_every = \"5s\"\n\n\
             [[alerts.webhook]]\nname = \"ops\"\nurl = {:?}\n",
            db.to_str().unwrap(),
            receiver.url
        ),
    )
    .unwrap();
    let flood_token = create_token(&db, &["--host", FLOOD]).unwrap();
    let quiet_token = create_token(&db, &["--host", QUIET]).unwrap();
    let read = create_token(&db, &["--role", "read", "--name", "ops-read"]).unwrap();
    let collector = Collector::serve(&db, &[OsStr::new("--config"), config.as_os_str()]).unwrap();
    let url = collector.url.clone();

    // The flood: 1,000 listeners that open and close 6 times (more than
    // flap_max, 5), then telnet on 20,000 addresses (only strings in a
    // batch), sent as a snapshot in 8 parts as an agent sends a large one.
    let started = Instant::now();
    let base = Timestamp::now() - SignedDuration::from_secs(60);
    let at = |s: i64| base + SignedDuration::from_secs(s);
    let addr = |net: u8, i: u32| std::net::IpAddr::from([10, net, (i >> 8) as u8, i as u8]);
    let snapshot = |seq, listeners| Report {
        seq,
        observed_at: at(0),
        body: ReportBody::Snapshot {
            facts: facts(),
            listeners,
        },
    };
    post(&url, &flood_token, &batch(FLOOD, vec![snapshot(1, Vec::new())]));
    let flappers: Vec<Arc<Listener>> = (0..1_000u32)
        .map(|i| Arc::new(listener(addr(200, i), 8080, 100_000 + u64::from(i), "worker")))
        .collect();
    let mut seq = 1;
    for round in 0..6 {
        let open = Report {
            seq: seq + 1,
            observed_at: at(1 + 2 * round),
            body: ReportBody::Delta {
                opened: flappers.clone(),
                closed: Vec::new(),
            },
        };
        let close = Report {
            seq: seq + 2,
            observed_at: at(2 + 2 * round),
            body: ReportBody::Delta {
                opened: Vec::new(),
                closed: flappers.clone(),
            },
        };
        seq += 2;
        post(&url, &flood_token, &batch(FLOOD, vec![open, close]));
    }
    eprintln!("{FLOOD}: 6 rounds of 1,000 flaps stored in {:.2?}", started.elapsed());
    let telnet: Vec<Listener> = (0..20_000u32)
        .map(|i| listener(addr((i >> 16) as u8, i), 23, u64::from(i) + 1, "in.telnetd"))
        .collect();
    let parts = 8;
    for (part, listeners) in telnet.chunks(20_000 / parts).enumerate() {
        seq += 1;
        let body = ReportBody::SnapshotPart {
            part: part as u32,
            parts: parts as u32,
            facts: (part + 1 == parts).then(facts),
            listeners: listeners.to_vec(),
        };
        let report = Report {
            seq,
            observed_at: at(20),
            body,
        };
        post(&url, &flood_token, &batch(FLOOD, vec![report]));
    }
    eprintln!(
        "{FLOOD}: and a snapshot of 20,000 listeners stored in {:.2?}",
        started.elapsed()
    );

    // Right behind the flood, another host opens telnet on 0.0.0.0.
    let posted = Instant::now();
    post(
        &url,
        &quiet_token,
        &batch(
            QUIET,
            vec![Report {
                seq: 1,
                observed_at: Timestamp::now(),
                body: ReportBody::Snapshot {
                    facts: facts(),
                    listeners: vec![listener("0.0.0.0".parse().unwrap(), 23, 7, "in.telnetd")],
                },
            }],
        ),
    );
    let arrived = eventually(SETTLE, || {
        receiver
            .bodies()
            .into_iter()
            .find(|(_, b)| b["event"] == "opened" && b["alert"]["host"] == QUIET)
    });
    let Some((when, body)) = arrived else {
        panic!(
            "{QUIET}'s alert did not reach the webhook within {SETTLE:?} ({} events from {FLOOD} did)",
            receiver.bodies().len()
        )
    };
    eprintln!(
        "{QUIET}'s alert reached the webhook {:.2?} after its batch was posted, behind a flood of 21,000 findings",
        when - posted
    );
    assert_eq!(
        (&body["alert"]["kind"], &body["alert"]["severity"]),
        (&Value::from("risky-port-exposed"), &Value::from("critical"))
    );

    // The flood opened at most the cap, and one summary, of each kind.
    let flood = eventually(SETTLE, || {
        let open = open_alerts(&url, &read, FLOOD);
        let done = ["risky-port-exposed", "flapping"]
            .iter()
            .all(|k| of_kind(&open, k).iter().any(|a| is_summary(a)));
        done.then_some(open)
    })
    .unwrap_or_else(|| panic!("no summaries: {} alerts", open_alerts(&url, &read, FLOOD).len()));
    for (kind, findings) in [("risky-port-exposed", 20_000), ("flapping", 1_000)] {
        let alerts = of_kind(&flood, kind);
        assert_eq!(alerts.len(), CAP + 1, "{kind}: the cap and one summary");
        let summary = alerts.iter().find(|a| is_summary(a)).unwrap();
        assert_eq!(summary["key"], format!("{kind}:{FLOOD}:overflow"));
        assert_eq!(summary["finding"]["more"], findings - CAP, "{summary:#}");
        let message = summary["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("more {kind} findings on {FLOOD}"))
                && message.contains(&format!("portwatch drift --host {FLOOD} --kind {kind}")),
            "{message}"
        );
    }
    assert_eq!(flood.len(), 2 * (CAP + 1), "no other alert: {:#?}", &flood[..3]);
    // Drift still lists every finding.
    let drift = portwatch_json(
        &url,
        &read,
        &[
            "drift",
            "--host",
            FLOOD,
            "--kind",
            "risky-port-exposed",
            "--limit",
            "100000",
        ],
    )
    .unwrap();
    assert_eq!(drift.as_array().unwrap().len(), 20_000);

    // The webhook got each of those once, and nothing more from the flood.
    std::thread::sleep(Duration::from_secs(2));
    let bodies = receiver.bodies();
    let mut ids: Vec<i64> = bodies.iter().map(|(_, b)| b["event_id"].as_i64().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), bodies.len(), "no event delivered twice");
    let from_flood = bodies.iter().filter(|(_, b)| b["alert"]["host"] == FLOOD).count();
    assert_eq!(from_flood, 2 * (CAP + 1));
}

#[test]
fn a_300_kb_process_name_reaches_syslog_cut_and_the_events_after_it_still_arrive() {
    const HOST: &str = "hostile-c";
    let dir = TempDir::new("hostile-alerts-syslog").unwrap();
    let syslog_path = dir.path.join("log.sock");
    let syslog = std::os::unix::net::UnixDatagram::bind(&syslog_path).unwrap();
    syslog.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let db = dir.path.join("collector.db");
    let config = dir.path.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndb = {:?}\n[alerts]\nsweep_every = \"1s\"\n\n\
             [alerts.syslog]\nsocket = {:?}\n",
            db.to_str().unwrap(),
            syslog_path.to_str().unwrap()
        ),
    )
    .unwrap();
    let agent = create_token(&db, &["--host", HOST]).unwrap();
    let read = create_token(&db, &["--role", "read", "--name", "ops-read"]).unwrap();
    let collector = Collector::serve(&db, &[OsStr::new("--config"), config.as_os_str()]).unwrap();
    let url = collector.url.clone();

    let wildcard: std::net::IpAddr = "0.0.0.0".parse().unwrap();
    let name = format!("evil{}", "x".repeat(300_000));
    post(
        &url,
        &agent,
        &batch(
            HOST,
            vec![Report {
                seq: 1,
                observed_at: Timestamp::now(),
                body: ReportBody::Snapshot {
                    facts: facts(),
                    listeners: vec![listener(wildcard, 23, 7, &name)],
                },
            }],
        ),
    );
    let mut datagrams: Vec<Vec<u8>> = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut receive = |datagrams: &mut Vec<Vec<u8>>, wanted: &str| {
        eventually(SETTLE, || {
            while let Ok(n) = syslog.recv(&mut buf) {
                datagrams.push(buf[..n].to_vec());
            }
            datagrams
                .iter()
                .find(|d| String::from_utf8_lossy(d).contains(wanted))
                .cloned()
        })
    };
    let telnet = receive(
        &mut datagrams,
        "risky-port-exposed on hostile-c: hostile-c: tcp 0.0.0.0:23",
    )
    .expect("the alert of the 300 KB name reaches syslog");
    assert!(telnet.len() <= 2048, "one datagram of at most 2 KiB: {}", telnet.len());
    let line = String::from_utf8(telnet).unwrap();
    assert!(
        line.contains("held by evilxxxx") && line.contains(" bytes]"),
        "cut with a marker: {line}"
    );
    let alerts = open_alerts(&url, &read, HOST);
    assert!(
        alerts[0]["message"].as_str().unwrap().len() <= 1024,
        "the alert's message is bounded too"
    );

    // A later alert of the host still arrives: syslog delivery did not stop.
    post(
        &url,
        &agent,
        &batch(
            HOST,
            vec![Report {
                seq: 2,
                observed_at: Timestamp::now(),
                body: ReportBody::Delta {
                    opened: vec![Arc::new(listener(wildcard, 21, 8, "vsftpd"))],
                    closed: Vec::new(),
                },
            }],
        ),
    );
    let ftp = receive(
        &mut datagrams,
        "tcp 0.0.0.0:21 (FTP) is reachable beyond loopback, held by vsftpd[600]",
    )
    .expect("a later alert reaches syslog");
    assert!(String::from_utf8_lossy(&ftp).contains("opened [critical]"));
}
