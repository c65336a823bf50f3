//! End to end, as root: kernel events catch listeners that live between two
//! scans. A real collector on a temp SQLite file, a real agent at a 10 s
//! interval (so no scan can be what caught them), real sockets; the
//! `portwatch` CLI answers from history. Each test needs root (BPF programs,
//! network namespaces) and fails, saying so, without it.
// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::unwrap_used)]

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Stdio};
use std::time::Duration;

use jiff::Timestamp;
use portwatch_tests::*;
use serde_json::Value;

/// Generous bound for a change to be stored (a bound against hanging).
const SETTLE: Duration = Duration::from_secs(30);
/// The same for the burst's 20,000 reports.
const BURST_SETTLE: Duration = Duration::from_secs(240);

fn require_root() {
    assert!(
        is_root(),
        "this test needs root (it loads BPF programs and makes network namespaces): run it as root, as CI does"
    );
}

struct Setup {
    dir: TempDir,
    collector: Collector,
    agent_token: String,
    read_token: String,
    host: String,
}

/// A `portwatch-agent run` whose log goes to a file, killed on drop.
struct LoggedAgent {
    child: Child,
    log: std::path::PathBuf,
}

impl LoggedAgent {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for LoggedAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn setup(tag: &str) -> Setup {
    require_root();
    let dir = TempDir::new(tag).unwrap();
    let db = dir.path.join("collector.db");
    let host = tag.to_owned();
    let agent_token = create_token(&db, &["--host", &host]).unwrap();
    let read_token = create_token(&db, &["--role", "read", "--name", "ops"]).unwrap();
    let collector = Collector::start(&db, 0).unwrap();
    Setup {
        dir,
        collector,
        agent_token,
        read_token,
        host,
    }
}

impl Setup {
    /// Starts the agent and waits until its first snapshot is stored (kernel
    /// events are attached before that scan).
    fn agent(&self, interval: &str, extra: &[&str]) -> LoggedAgent {
        let log = self.dir.path.join("agent.log");
        let child = agent()
            .args(["run", "--collector", &self.collector.url, "--token", &self.agent_token])
            .args(["--host-name", &self.host, "--interval", interval, "--spool-dir"])
            .arg(self.dir.path.join("spool"))
            .args(extra)
            .env_remove("PORTWATCH_TOKEN")
            .env("PORTWATCH_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let agent = LoggedAgent { child, log };
        eventually(SETTLE, || {
            let hosts = portwatch_json(&self.collector.url, &self.read_token, &["hosts"]).ok()?;
            hosts
                .as_array()?
                .iter()
                .any(|h| h["host"] == self.host.as_str())
                .then_some(())
        })
        .unwrap_or_else(|| panic!("the agent's first snapshot never arrived; its log:\n{}", agent.log()));
        agent
    }

    /// What `portwatch hosts` says of this host's detection.
    fn detection(&self) -> Value {
        let hosts = portwatch_json(&self.collector.url, &self.read_token, &["hosts"]).unwrap();
        let host = hosts
            .as_array()
            .into_iter()
            .flatten()
            .find(|h| h["host"] == self.host.as_str());
        host.map_or(Value::Null, |h| h["detection"].clone())
    }

    fn history(&self, port: Option<u16>) -> Vec<Value> {
        let mut args = vec!["history".to_owned(), "--host".into(), self.host.clone()];
        args.extend(["--limit".into(), "100000".into()]);
        if let Some(port) = port {
            args.extend(["--port".into(), port.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let v = portwatch_json(&self.collector.url, &self.read_token, &args).unwrap();
        v.as_array().cloned().unwrap_or_default()
    }

    /// The closed interval of `port` in history, once there.
    /// The closed interval of `port` owned by `pid`. The agents of the tests
    /// running beside this one see the whole machine, so a port of another
    /// test (the same number in another namespace, or of the other protocol)
    /// may be in this history too.
    fn closed_interval(&self, port: u16, pid: u32, agent: &LoggedAgent) -> Value {
        eventually(SETTLE, || {
            self.history(Some(port))
                .into_iter()
                .find(|r| !r["closed_at"].is_null() && r["processes"][0]["pid"] == pid)
        })
        .unwrap_or_else(|| {
            panic!(
                "port {port} never reached history opened and closed; history {:?}; agent log:\n{}",
                self.history(Some(port)),
                agent.log()
            )
        })
    }
}

fn at(v: &Value) -> Timestamp {
    v.as_str().unwrap().parse().unwrap()
}

/// Asserts the interval was opened and closed by this process, within `[before, after]`.
fn assert_ours(row: &Value, before: Timestamp, after: Timestamp) {
    assert_eq!(row["processes"][0]["pid"], std::process::id(), "{row}");
    let (opened, closed) = (at(&row["opened_at"]), at(&row["closed_at"]));
    // History keeps milliseconds.
    let ms = jiff::SignedDuration::from_millis(1);
    let (before, after) = (before - ms, after + ms);
    assert!(
        before <= opened && opened <= closed && closed <= after,
        "{before} {row} {after}"
    );
}

#[test]
fn as_root_a_tcp_listener_living_50ms_reaches_history_with_its_pid_and_times() {
    let s = setup("ev-tcp");
    let agent = s.agent("10s", &[]);
    assert!(agent.log().contains("detection: kernel events"), "{}", agent.log());
    assert_eq!(
        s.detection(),
        "events",
        "portwatch hosts shows how the agent sees listeners"
    );
    let before = Timestamp::now();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::sleep(Duration::from_millis(50));
    drop(l);
    let after = Timestamp::now();
    let row = s.closed_interval(port, std::process::id(), &agent);
    assert_ours(&row, before, after);
    assert_eq!(row["proto"], "tcp");
}

#[test]
fn as_root_a_udp_socket_bound_for_50ms_reaches_history_with_its_pid_and_times() {
    let s = setup("ev-udp");
    let agent = s.agent("10s", &[]);
    let before = Timestamp::now();
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = u.local_addr().unwrap().port();
    std::thread::sleep(Duration::from_millis(50));
    drop(u);
    let after = Timestamp::now();
    let row = s.closed_interval(port, std::process::id(), &agent);
    assert_ours(&row, before, after);
    assert_eq!(row["proto"], "udp");
}

#[test]
fn as_root_with_events_forced_off_the_agent_polls_every_interval() {
    let s = setup("ev-off");
    let agent = s.agent("200ms", &["--no-events"]);
    let log = agent.log();
    assert!(
        log.contains("detection: polling every interval, because kernel events are turned off"),
        "{log}"
    );
    assert_eq!(
        s.detection(),
        "polling",
        "portwatch hosts shows how the agent sees listeners"
    );
    // The documented polling behaviour: a listener that outlives a few intervals is recorded.
    let before = Timestamp::now();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    eventually(SETTLE, || (!s.history(Some(port)).is_empty()).then_some(()))
        .expect("a polling agent records a listener that lives several intervals");
    drop(l);
    let row = s.closed_interval(port, std::process::id(), &agent);
    assert_ours(&row, before, Timestamp::now());
}

#[test]
fn as_root_a_short_listener_in_another_network_namespace_is_caught() {
    let s = setup("ev-netns");
    let agent = s.agent("10s", &[]);
    let ns = Netns::create("ev").unwrap();
    let l = Listeners::start(&["ip", "netns", "exec", &ns.name], &["tcp4:127.0.0.1:0"]).unwrap();
    let (port, pid) = (l.port(0), l.opened.pid);
    drop(l);
    let row = s.closed_interval(port, pid, &agent);
    assert_eq!(row["processes"][0]["pid"], pid, "{row}");
    assert_eq!(row["netns"], ns.inode().unwrap(), "{row}");
}

/// A TCP listener bound to one address (here 127.0.0.1) stays open while it
/// accepts connections. Each accepted connection's socket is cloned from its
/// listener, LISTEN state included, and leaves it for SYN_RECV with the
/// listener's own address and port: the kernel program once took that as the
/// listener closing, and the agent then closed the listener it found at that
/// address (a wildcard listener escaped only because a connection's address
/// is never 0.0.0.0).
#[test]
fn as_root_a_listener_on_one_address_stays_open_while_it_accepts_connections() {
    let s = setup("ev-accept");
    let agent = s.agent("10s", &[]);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    // Other tests of this process open and close listeners on 127.0.0.1 (the
    // burst, thousands): this one is told by its socket's inode.
    let inode = rustix::fs::fstat(&l).unwrap().st_ino;
    let clients: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let accepted: Vec<TcpStream> = (0..3).map(|_| l.accept().unwrap().0).collect();
    // Events reach history in order: once a listener opened after the
    // connections is there, so is anything the connections made the agent say.
    let marker = TcpListener::bind("127.0.0.1:0").unwrap();
    let marker_port = marker.local_addr().unwrap().port();
    let marker_inode = rustix::fs::fstat(&marker).unwrap().st_ino;
    let ours = |port: u16, inode: u64| {
        s.history(Some(port))
            .into_iter()
            .filter(|r| r["inode"] == inode)
            .collect::<Vec<Value>>()
    };
    eventually(SETTLE, || (!ours(marker_port, marker_inode).is_empty()).then_some(()))
        .unwrap_or_else(|| panic!("the marker listener never reached history; agent log:\n{}", agent.log()));
    let rows = ours(port, inode);
    assert_eq!(
        rows.len(),
        1,
        "one interval, still open: {rows:?}; all of port {port}: {:?}; agent log:\n{}",
        s.history(Some(port)),
        agent.log()
    );
    assert!(rows[0]["closed_at"].is_null(), "{:?}", rows[0]);
    drop((clients, accepted));
    drop(l);
    eventually(SETTLE, || {
        ours(port, inode)
            .first()
            .is_some_and(|r| !r["closed_at"].is_null())
            .then_some(())
    })
    .unwrap_or_else(|| panic!("its close never reached history; agent log:\n{}", agent.log()));
}

/// A listener that an event opens in a namespace where no listener needed
/// the firewall before carries the firewall's answer from its first report:
/// its namespace's ruleset is read then, not at the next heartbeat, which
/// would record it `unknown` first and then close and reopen it as `open`.
#[test]
fn as_root_a_listener_opened_in_a_new_namespace_carries_its_firewall_answer_from_the_start() {
    let s = setup("ev-fwnew");
    let agent = s.agent("1s", &[]);
    let ns = Netns::create("evfw").unwrap();
    let ok = std::process::Command::new("ip")
        .args(["-n", &ns.name, "addr", "add", "10.203.0.1/32", "dev", "lo"])
        .status()
        .unwrap()
        .success();
    assert!(ok, "ip addr add in {}", ns.name);
    let l = Listeners::start(&["ip", "netns", "exec", &ns.name], &["tcp4:10.203.0.1:0"]).unwrap();
    let (port, pid) = (l.port(0), l.opened.pid);
    let ours = || {
        s.history(Some(port))
            .into_iter()
            .filter(|r| r["processes"][0]["pid"] == pid)
            .collect::<Vec<Value>>()
    };
    eventually(SETTLE, || (!ours().is_empty()).then_some(()))
        .unwrap_or_else(|| panic!("port {port} never reached history; agent log:\n{}", agent.log()));
    // Two heartbeats later, the refresh they run has had its say.
    let seen = Timestamp::now() + jiff::SignedDuration::from_millis(2500);
    eventually(SETTLE, || {
        let hosts = portwatch_json(&s.collector.url, &s.read_token, &["hosts"]).unwrap();
        hosts
            .as_array()
            .into_iter()
            .flatten()
            .find(|h| h["host"] == s.host.as_str() && at(&h["last_seen"]) > seen)
            .map(|_| ())
    })
    .expect("the agent keeps heartbeating");
    let rows = ours();
    assert_eq!(rows.len(), 1, "one interval, its firewall answer unchanged: {rows:?}");
    assert_eq!(
        rows[0]["firewall"]["reach"], "open",
        "a namespace without rules accepts: {:?}",
        rows[0]
    );
    assert!(rows[0]["closed_at"].is_null(), "{:?}", rows[0]);
}

/// Lost events, as the agent's log states them.
fn lost_events(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("kernel events lost"))
        .filter_map(|l| l.split(" lost=").nth(1)?.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn as_root_a_burst_of_10000_listen_close_pairs_loses_nothing_or_counts_its_losses_and_resyncs() {
    const PAIRS: usize = 10_000;
    let s = setup("ev-burst");
    let agent = s.agent("10s", &[]);
    for _ in 0..PAIRS {
        // listen(2), then close(2).
        drop(TcpListener::bind("127.0.0.1:0").unwrap());
    }
    let pid = std::process::id();
    let ours = |rows: &[Value]| {
        rows.iter()
            .filter(|r| r["processes"][0]["pid"] == pid && !r["closed_at"].is_null())
            .count()
    };
    // 20,000 reports through a debug-built collector take a while: a bound against hanging.
    let seen = eventually(BURST_SETTLE, || {
        let rows = s.history(None);
        let n = ours(&rows);
        let lost = lost_events(&agent.log());
        // Each pair is two events: all pairs recorded (other tests of this process may add
        // some), or every missing one accounted for.
        (n >= PAIRS || (lost > 0 && n + usize::try_from(lost).unwrap() >= PAIRS)).then_some((n, lost))
    })
    .unwrap_or_else(|| {
        panic!(
            "history has {} of {PAIRS} pairs and the agent counted {} lost events; its log:\n{}",
            ours(&s.history(None)),
            lost_events(&agent.log()),
            agent.log()
        )
    });
    if seen.1 > 0 {
        assert!(agent.log().contains("running a full scan to resync"), "{}", agent.log());
    }
    assert!(!agent.log().contains("disagrees with kernel events"), "{}", agent.log());
}
