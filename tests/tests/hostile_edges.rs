//! The collector's edges under attack, end to end: a real `portwatch-collector
//! serve` on loopback, clients that never authenticate, never finish their
//! headers, or flood from one host, and an honest agent that must still be
//! answered. Assertions are on what the collector holds (memory, open
//! files) and on what clients are told, never on how fast.
// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use portwatch_common::wire::{Batch, HostFacts, Report, ReportBody, PROTOCOL_VERSION};
use portwatch_common::{Exposure, Family, Listener, Process, Proto};
use portwatch_tests::*;

/// One test at a time: each pushes the machine (sockets, memory, CPU), and
/// the slowloris test changes this process's limit of open files.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A collector on a temp database, with `config` (TOML) as its config file,
/// and an agent token for each of `hosts` and a read token.
struct Setup {
    dir: TempDir,
    collector: Collector,
    agents: Vec<String>,
    reader: String,
}

fn setup(tag: &str, config: &str, hosts: &[&str]) -> Setup {
    let dir = TempDir::new(tag).unwrap();
    let db = dir.path.join("collector.db");
    let agents = hosts
        .iter()
        .map(|host| create_token(&db, &["--host", host]).unwrap())
        .collect();
    let reader = create_token(&db, &["--role", "read", "--name", "ops"]).unwrap();
    let config_file = dir.path.join("collector.toml");
    std::fs::write(&config_file, config).unwrap();
    let collector = Collector::serve(
        &db,
        &[
            "--config".as_ref(),
            config_file.as_os_str(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--db".as_ref(),
            db.as_os_str(),
        ],
    )
    .unwrap();
    Setup {
        dir,
        collector,
        agents,
        reader,
    }
}

/// An HTTP client that hands back every status (not only 2xx), giving up after `timeout`.
fn client(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .new_agent()
}

fn heartbeat(host: &str) -> Batch {
    Batch {
        version: PROTOCOL_VERSION,
        host: host.into(),
        session: "s1".into(),
        dropped: 0,
        peers: Vec::new(),
        peers_dropped: 0,
        alive_at: Some(Timestamp::now()),
        reports: Vec::new(),
    }
}

/// Posts `batch` as an agent would (gzip is not needed here); the status.
fn send(client: &ureq::Agent, url: &str, token: &str, batch: &Batch) -> Result<u16, ureq::Error> {
    let response = client
        .post(&format!("{url}/api/v1/ingest"))
        .header("Authorization", &format!("Bearer {token}"))
        .send_json(batch)?;
    Ok(response.status().as_u16())
}

/// The collector's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The collector's open files.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A metric's value in the collector's `/metrics` (the first line starting `name`).
fn metric(s: &Setup, name: &str) -> f64 {
    let text = client(Duration::from_secs(30))
        .get(&format!("{}/metrics", s.collector.url))
        .header("Authorization", &format!("Bearer {}", s.reader))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let text = portwatch_fixtures::without_collector_label(&text);
    let line = text
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Sets this process's soft limit of open files (at most the hard one); the hard limit.
fn set_soft_fd_limit(soft: u64) -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let hard = getrlimit(Resource::Nofile).maximum;
    let soft = hard.map_or(soft, |hard| soft.min(hard));
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(soft),
            maximum: hard,
        },
    )
    .unwrap();
    hard.unwrap_or(u64::MAX)
}

#[test]
fn unauthenticated_uploads_stalled_before_their_end_cost_the_collector_no_memory() {
    let _one = one_at_a_time();
    let s = setup("edges-memory", "", &["honest-1"]);
    let pid = s.collector.pid();
    let http = client(Duration::from_secs(30));
    assert_eq!(
        send(&http, &s.collector.url, &s.agents[0], &heartbeat("honest-1")).unwrap(),
        200
    );
    let before = rss_kib(pid);

    // 30 MiB once decompressed, 30 KiB as sent: all of it but the gzip
    // trailer, under headers that promise 8 MiB, and no token. A collector
    // that decompresses before it checks the token holds ~30 MiB for each.
    let gzip = {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![b' '; 30 << 20]).unwrap();
        gz.finish().unwrap()
    };
    let sent = &gzip[..gzip.len() - 8];
    let head = format!(
        "POST /api/v1/ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        8 * 1024 * 1024 - 1
    );
    let address = s.collector.url.trim_start_matches("http://").to_owned();
    let mut stalled = Vec::new();
    for _ in 0..40 {
        let mut conn = TcpStream::connect(&address).unwrap();
        // The collector may answer and close before everything is written.
        let _ = conn.write_all(head.as_bytes()).and_then(|()| conn.write_all(sent));
        stalled.push(conn);
    }
    // The most it held over the next seconds, the connections still open on our side.
    let mut peak = rss_kib(pid);
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    let grew_mib = peak.saturating_sub(before) / 1024;
    println!(
        "collector RSS: {} MiB before, {} MiB at most with 40 stalled unauthenticated uploads (+{grew_mib} MiB)",
        before / 1024,
        peak / 1024
    );
    assert!(
        grew_mib < 64,
        "40 unauthenticated uploads made the collector grow by {grew_mib} MiB (from {} MiB)",
        before / 1024
    );
    // Each was told why, from its headers alone.
    let mut answer = String::new();
    let _ = stalled[0].set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stalled[0].read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer:?}");
    // And the honest agent is answered meanwhile.
    assert_eq!(
        send(&http, &s.collector.url, &s.agents[0], &heartbeat("honest-1")).unwrap(),
        200
    );
    drop(stalled);
}

#[test]
fn unfinished_headers_time_out_and_an_honest_agent_still_gets_through() {
    let _one = one_at_a_time();
    const LIMIT: usize = 256;
    const ATTACKERS: usize = 1_100;
    // The collector starts with the soft limit of open files a service gets
    // from systemd unless told otherwise (1024), as in production without
    // LimitNOFILE; this process then needs more for its attackers.
    let hard = set_soft_fd_limit(1024);
    let s = setup(
        "edges-slowloris",
        &format!("[http]\nmax_connections = {LIMIT}\nheader_timeout = \"2s\"\nidle_timeout = \"5s\"\n"),
        &["honest-1"],
    );
    set_soft_fd_limit(hard.min(65_536));
    let pid = s.collector.pid();
    let address: std::net::SocketAddr = s.collector.url.trim_start_matches("http://").parse().unwrap();

    // 1,100 connections, each with a request's headers begun and never ended.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let attackers: Vec<tokio::net::TcpStream> = runtime.block_on(async {
        let mut tries = tokio::task::JoinSet::new();
        for _ in 0..ATTACKERS {
            tries.spawn(async move {
                let connect = tokio::net::TcpStream::connect(address);
                let mut conn = tokio::time::timeout(Duration::from_secs(5), connect).await.ok()?.ok()?;
                let head = b"POST /api/v1/ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n";
                tokio::io::AsyncWriteExt::write_all(&mut conn, head).await.ok()?;
                Some(conn)
            });
        }
        tries.join_all().await.into_iter().flatten().collect()
    });
    println!("{} of {ATTACKERS} attacking connections open", attackers.len());
    assert!(attackers.len() > LIMIT, "only {} attackers connected", attackers.len());

    // The honest agent, queued behind them, is answered once their headers time out.
    let started = Instant::now();
    let mut most_files = open_files(pid);
    let mut most_rss = rss_kib(pid);
    let http = client(Duration::from_secs(20));
    let answered = eventually(Duration::from_secs(90), || {
        most_files = most_files.max(open_files(pid));
        most_rss = most_rss.max(rss_kib(pid));
        match send(&http, &s.collector.url, &s.agents[0], &heartbeat("honest-1")) {
            Ok(200) => Some(()),
            _ => None,
        }
    });
    most_files = most_files.max(open_files(pid));
    println!(
        "honest heartbeat answered after {:.1} s; the collector had {most_files} files open at most (limit {LIMIT}), \
         {} MiB resident at most",
        started.elapsed().as_secs_f64(),
        most_rss / 1024
    );
    assert!(answered.is_some(), "the honest agent never got through");
    assert!(
        most_files <= LIMIT + 64,
        "{most_files} files open: more connections than [http] max_connections = {LIMIT}"
    );
    assert!(metric(&s, "portwatch_http_connection_limit_waits_total") >= 1.0);
    drop(attackers);
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout_and_http2_is_not_spoken() {
    let _one = one_at_a_time();
    let s = setup(
        "edges-idle",
        "[http]\nheader_timeout = \"2s\"\nidle_timeout = \"3s\"\n",
        &["honest-1"],
    );
    let address = s.collector.url.trim_start_matches("http://").to_owned();
    // One request and its answer, then nothing: the collector closes the connection.
    let mut conn = TcpStream::connect(&address).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match conn.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(closed, "the idle connection was still open after 30 s");

    // Cleartext HTTP/2 (prior knowledge): not spoken, the answer is HTTP/1.1's.
    let mut conn = TcpStream::connect(&address).unwrap();
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 "),
        "an HTTP/2 preface was answered with {:?}",
        &answer[..answer.len().min(32)]
    );
}

fn facts() -> HostFacts {
    HostFacts {
        detection: None,
        host_netns: None,
        addresses: Vec::new(),
        os: None,
        kernel: None,
        boot_time: None,
        agent_version: "test".into(),
        interval_ms: 10_000,
        tags: Default::default(),
    }
}

/// A snapshot of `count` listeners on distinct ports and inodes.
fn big_snapshot(host: &str, count: u32) -> Batch {
    let listeners = (0..count)
        .map(|i| Listener {
            netns: 4_026_531_840,
            proto: if i % 2 == 0 { Proto::Tcp } else { Proto::Udp },
            family: Family::Ipv4,
            local_addr: std::net::Ipv4Addr::from(0x7f00_0001 + (i >> 16)).into(),
            local_port: (i & 0xffff) as u16,
            inode: u64::from(i) + 1_000_000,
            uid: 1000,
            user: Some("app".into()),
            exposure: Exposure::Loopback,
            dual_stack: false,
            processes: vec![Process {
                pid: 4000 + i % 500,
                name: "app".into(),
                cmdline: Some(format!("/opt/app/bin/app --worker {}", i % 500).into()),
                exe: Some("/opt/app/bin/app".into()),
                uid: Some(1000),
                user: Some("app".into()),
                container: None,
                unit: Some("app.service".into()),
            }],
            firewall: None,
        })
        .collect();
    Batch {
        version: PROTOCOL_VERSION,
        host: host.into(),
        session: "flood".into(),
        dropped: 0,
        peers: Vec::new(),
        peers_dropped: 0,
        alive_at: Some(Timestamp::now()),
        reports: vec![Report {
            seq: 1,
            observed_at: Timestamp::now(),
            body: ReportBody::Snapshot {
                facts: facts(),
                listeners,
            },
        }],
    }
}

#[test]
fn a_host_flooding_concurrent_snapshots_gets_503_and_others_keep_reporting() {
    let _one = one_at_a_time();
    let s = setup("edges-flood", "", &["flood-1", "calm-1"]);
    let url = s.collector.url.clone();
    let body = {
        let json = serde_json::to_vec(&big_snapshot("flood-1", 60_000)).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&json).unwrap();
        std::sync::Arc::new(gz.finish().unwrap())
    };
    let start = std::sync::Arc::new(std::sync::Barrier::new(9));
    let floods: Vec<_> = (0..8)
        .map(|_| {
            let (url, token, body, start) = (url.clone(), s.agents[0].clone(), body.clone(), start.clone());
            std::thread::spawn(move || {
                let http = client(Duration::from_secs(300));
                start.wait();
                let response = http
                    .post(&format!("{url}/api/v1/ingest"))
                    .header("Authorization", &format!("Bearer {token}"))
                    .header("Content-Type", "application/json")
                    .header("Content-Encoding", "gzip")
                    .send(&body[..]);
                // A refusal is answered before the body is read, and the
                // connection closed: a client still sending may see the
                // close (a broken pipe) before the 503. Status 0 is that.
                let Ok(response) = response else {
                    return (0, None);
                };
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned());
                (response.status().as_u16(), retry_after)
            })
        })
        .collect();
    start.wait();
    // Meanwhile another host reports, heartbeat after heartbeat.
    let http = client(Duration::from_secs(60));
    let mut latencies = Vec::new();
    while !floods.iter().all(|t| t.is_finished()) {
        let sent = Instant::now();
        assert_eq!(send(&http, &url, &s.agents[1], &heartbeat("calm-1")).unwrap(), 200);
        latencies.push(sent.elapsed());
        std::thread::sleep(Duration::from_millis(200));
    }
    let answers: Vec<(u16, Option<String>)> = floods.into_iter().map(|t| t.join().unwrap()).collect();
    let slowest = latencies.iter().max().copied().unwrap_or_default();
    println!(
        "flood answers {:?}; {} heartbeats of another host meanwhile, the slowest answered in {:.2} s",
        answers.iter().map(|a| a.0).collect::<Vec<_>>(),
        latencies.len(),
        slowest.as_secs_f64()
    );
    assert!(answers.iter().any(|a| a.0 == 200), "{answers:?}");
    assert!(answers.iter().any(|a| matches!(a.0, 503 | 0)), "{answers:?}");
    for (status, retry_after) in &answers {
        assert!(matches!(status, 200 | 503 | 0), "{answers:?}");
        if *status == 503 {
            assert_eq!(retry_after.as_deref(), Some("5"), "{answers:?}");
        }
    }
    assert!(!latencies.is_empty());
    let busy = answers.iter().filter(|a| matches!(a.0, 503 | 0)).count() as f64;
    assert_eq!(metric(&s, "portwatch_ingest_requests_total{outcome=\"busy\"}"), busy);
    let _ = &s.dir;
}
