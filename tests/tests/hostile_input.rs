//! Hostile reported text and impossible listeners, end to end: a real
//! collector on a temp SQLite file, batches posted over HTTP with agent
//! tokens as an agent would (gzip JSON), answers read with the `portwatch`
//! CLI and `/metrics`.
// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::unwrap_used)]

use jiff::Timestamp;
use portwatch_common::wire::{
    Batch, HostFacts, Report, ReportBody, MAX_CMDLINE_BYTES, MAX_FACT_BYTES, MAX_TAGS, PROTOCOL_VERSION,
};
use portwatch_common::{Exposure, Family, Listener, Process, Proto};
use portwatch_tests::*;
use serde_json::Value;

fn facts() -> HostFacts {
    HostFacts {
        detection: None,
        host_netns: None,
        addresses: Vec::new(),
        os: Some("Debian GNU/Linux 12".into()),
        kernel: Some("6.1.0-18-amd64".into()),
        boot_time: None,
        agent_version: "0.1.0".into(),
        interval_ms: 10_000,
        tags: [("role".to_owned(), "web".to_owned())].into(),
    }
}

fn listener(addr: &str, port: u16, cmdline: &str) -> Listener {
    let local_addr = addr.parse().unwrap();
    Listener {
        netns: 4_026_531_840,
        proto: Proto::Tcp,
        family: portwatch_common::family_of(local_addr),
        local_addr,
        local_port: port,
        inode: u64::from(port) + 9_000_000,
        uid: 1000,
        user: Some("app".into()),
        exposure: Exposure::of(local_addr),
        dual_stack: false,
        processes: vec![Process {
            pid: u32::from(port),
            name: "java".into(),
            cmdline: Some(cmdline.into()),
            exe: Some("/usr/bin/java".into()),
            uid: Some(1000),
            user: Some("app".into()),
            container: None,
            unit: Some("app.service".into()),
        }],
        firewall: None,
    }
}

fn snapshot(host: &str, session: &str, facts: HostFacts, listeners: Vec<Listener>) -> Batch {
    Batch {
        version: PROTOCOL_VERSION,
        host: host.into(),
        session: session.into(),
        dropped: 0,
        peers: Vec::new(),
        peers_dropped: 0,
        alive_at: None,
        reports: vec![Report {
            seq: 1,
            observed_at: Timestamp::now(),
            body: ReportBody::Snapshot { facts, listeners },
        }],
    }
}

/// Posts `batch` gzipped with `token`, as an agent does: the status and the answer.
fn post(url: &str, token: &str, batch: &Batch) -> (u16, Value) {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    serde_json::to_writer(&mut gz, batch).unwrap();
    let body = gz.finish().unwrap();
    let mut answer = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
        .post(format!("{url}/api/v1/ingest"))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .header("Content-Encoding", "gzip")
        .send(&body[..])
        .unwrap();
    let status = answer.status().as_u16();
    (status, answer.body_mut().read_json().unwrap())
}

fn get(url: &str, token: &str, path: &str) -> String {
    ureq::get(format!("{url}{path}"))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .unwrap()
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .unwrap()
}

#[test]
fn an_impossible_listener_is_refused_and_over_long_text_is_stored_cut_and_counted_while_an_honest_host_is_stored() {
    let dir = TempDir::new("hostile-input").unwrap();
    let db = dir.path.join("collector.db");
    let hostile = create_token(&db, &["--host", "hostile-1"]).unwrap();
    let honest = create_token(&db, &["--host", "honest-1"]).unwrap();
    let read = create_token(&db, &["--role", "read", "--name", "ops"]).unwrap();
    let collector = Collector::start(&db, 0).unwrap();
    let url = &collector.url;

    // An ipv4 socket on ::1 cannot be: refused whole, naming the report and the field.
    let mut impossible = listener("127.0.0.1", 8081, "/usr/bin/java -jar a.jar");
    impossible.local_addr = "::1".parse().unwrap();
    assert_eq!(impossible.family, Family::Ipv4);
    let wrong = snapshot(
        "hostile-1",
        "run-1",
        facts(),
        vec![listener("0.0.0.0", 8080, "/usr/bin/java -jar a.jar"), impossible],
    );
    let (status, answer) = post(url, &hostile, &wrong);
    assert_eq!(status, 400, "{answer}");
    let message = answer["error"].as_str().unwrap();
    assert!(
        message.starts_with("report 1: listeners[1]: family ipv4 with address ::1"),
        "{message}"
    );

    // An honest host, in between, is stored as sent.
    let (status, answer) = post(
        url,
        &honest,
        &snapshot(
            "honest-1",
            "run-1",
            facts(),
            vec![listener("0.0.0.0", 22, "/usr/sbin/sshd -D")],
        ),
    );
    assert_eq!((status, answer["acked"].as_u64()), (200, Some(1)), "{answer}");

    // A 10 MiB command line, 200,000 tags and a 1 MB os: stored cut.
    let huge_cmdline = format!("/usr/bin/java -cp {}", "/opt/app/lib/dependency.jar:".repeat(380_000));
    assert!(huge_cmdline.len() > 10 << 20);
    let mut big = facts();
    big.os = Some("Debian GNU/Linux 12 ".repeat(50_000));
    big.tags = (0..200_000)
        .map(|i| (format!("tag{i:06}"), format!("value {i}")))
        .collect();
    let over_long = snapshot(
        "hostile-1",
        "run-1",
        big,
        vec![listener("127.0.0.1", 8080, &huge_cmdline)],
    );
    let (status, answer) = post(url, &hostile, &over_long);
    assert_eq!((status, answer["acked"].as_u64()), (200, Some(1)), "{answer}");

    // The hosts answer stays small, and says what was cut.
    let hosts_json = get(url, &read, "/api/v1/hosts");
    assert!(hosts_json.len() < 32 * 1024, "/hosts is {} bytes", hosts_json.len());
    let hosts = portwatch_json(url, &read, &["hosts"]).unwrap();
    let row = |name: &str| {
        hosts
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["host"] == name)
            .unwrap()
            .clone()
    };
    let hostile_row = row("hostile-1");
    let os = hostile_row["os"].as_str().unwrap();
    assert!(
        os.len() <= MAX_FACT_BYTES && os.starts_with("Debian GNU/Linux 12 Debian"),
        "{os}"
    );
    assert!(os.contains("…[cut ") && os.ends_with(" bytes]"), "{os}");
    let tags = hostile_row["tags"].as_object().unwrap();
    assert_eq!(tags.len(), MAX_TAGS);
    assert_eq!(tags["tag000000"], "value 0");
    assert_eq!(row("honest-1")["os"], "Debian GNU/Linux 12");
    assert_eq!(row("honest-1")["tags"]["role"], "web");

    let ports = portwatch_json(url, &read, &["ports", "--host", "hostile-1"]).unwrap();
    let cmdline = ports[0]["processes"][0]["cmdline"].as_str().unwrap();
    assert!(
        cmdline.len() <= MAX_CMDLINE_BYTES && cmdline.starts_with("/usr/bin/java -cp /opt/app/lib/dependency.jar:"),
        "{} bytes",
        cmdline.len()
    );
    let (kept, marker) = cmdline.rsplit_once("…[cut ").unwrap();
    let gone: usize = marker.strip_suffix(" bytes]").unwrap().parse().unwrap();
    assert_eq!(kept.len() + gone, huge_cmdline.len(), "the marker counts what is gone");
    assert_eq!(ports[0]["local_port"], 8080);
    assert_eq!(
        ports.as_array().unwrap().len(),
        1,
        "nothing of the refused batch was stored"
    );
    let honest_ports = portwatch_json(url, &read, &["ports", "--host", "honest-1"]).unwrap();
    assert_eq!(honest_ports[0]["processes"][0]["cmdline"], "/usr/sbin/sshd -D");

    // The cuts are counted.
    let metrics = portwatch_fixtures::without_collector_label(&get(url, &read, "/metrics"));
    for line in [
        "portwatch_ingest_strings_cut_total 2".to_owned(),
        format!("portwatch_ingest_tags_dropped_total {}", 200_000 - MAX_TAGS),
        "portwatch_ingest_requests_total{outcome=\"refused\"} 1".to_owned(),
        "portwatch_ingest_requests_total{outcome=\"stored\"} 2".to_owned(),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} missing from:\n{metrics}");
    }

    // And the table a person reads is as small.
    let out = std::process::Command::new(binary("portwatch"))
        .args(["--collector", url, "--token", &read, "hosts"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout.len() < 4096, "{} bytes", out.stdout.len());
}

#[test]
fn a_dual_stack_claim_off_the_ipv6_wildcard_is_refused_and_a_wrong_exposure_is_corrected() {
    let dir = TempDir::new("hostile-exposure").unwrap();
    let db = dir.path.join("collector.db");
    let agent = create_token(&db, &["--host", "liar-1"]).unwrap();
    let read = create_token(&db, &["--role", "read", "--name", "ops"]).unwrap();
    let collector = Collector::start(&db, 0).unwrap();

    let mut dual = listener("0.0.0.0", 23, "telnetd");
    dual.dual_stack = true;
    let (status, answer) = post(
        &collector.url,
        &agent,
        &snapshot("liar-1", "run-1", facts(), vec![dual]),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .starts_with("report 1: listeners[0]: dual_stack with address 0.0.0.0"),
        "{answer}"
    );

    // telnet on every interface, said to be loopback-only: stored as what its address says.
    let mut telnet = listener("0.0.0.0", 23, "telnetd");
    telnet.exposure = Exposure::Loopback;
    let (status, answer) = post(
        &collector.url,
        &agent,
        &snapshot("liar-1", "run-1", facts(), vec![telnet]),
    );
    assert_eq!(status, 200, "{answer}");
    let ports = portwatch_json(&collector.url, &read, &["ports", "--host", "liar-1"]).unwrap();
    assert_eq!(ports[0]["exposure"], "wildcard", "{ports}");
}
