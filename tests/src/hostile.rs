//! The hostile-fleet benchmark (`pw-hostile`, run by
//! `bash collector/benches/hostile.sh`): a real `portwatch-collector serve`
//! on loopback, an honest fleet of simulated agents heartbeating every
//! second, and one attack at a time against the same collector. For each
//! attack it reports the collector's peak resident memory, the honest
//! hosts' request latency (p50, p99, max, failures) and what the attack got
//! stored or refused.
//!
//! The attacks are those of issue 10: uploads without a token stalled just
//! before their end, unfinished request headers (slowloris), one host
//! sending many huge snapshots at once, one host opening tens of thousands
//! of alerts while another host's one critical alert waits at a webhook,
//! expensive reads by a read token, and garbage from a host's own token.
//! Every connection goes to 127.0.0.1; every loop is bounded by the phase's
//! time.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use flate2::write::GzEncoder;
use http_body_util::{BodyExt, Full};
use jiff::Timestamp;
use portwatch_collector::store::sqlite::SqliteStore;
use portwatch_collector::store::TokenRow;
use portwatch_collector::token;
use portwatch_common::wire::{Batch, HostFacts, Report, ReportBody};
use portwatch_common::{Exposure, Family, Listener, Process, Proto};
use portwatch_model::Role;
use tokio::io::AsyncWriteExt;

/// One attack (or none: the baseline).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Attack {
    /// No attack: the honest fleet alone.
    Baseline,
    /// 1,000 connections without a token, each stalling a gzip upload
    /// (32 MiB once decompressed) just before its end.
    StalledUploads,
    /// 1,100 connections sending their request headers a byte at a time.
    Slowloris,
    /// One host sending 8 snapshots of 60,000 listeners at once, again and again.
    SnapshotFlood,
    /// One host opening 20,000 risky-port alerts; another host's one
    /// critical alert must still reach the webhook.
    AlertFlood,
    /// A read token asking, four at a time, for a long history, fleet-wide
    /// trends, and an export it reads slowly.
    HeavyReads,
    /// A host's own token posting garbage: random bytes, broken gzip, wrong
    /// JSON, huge strings.
    Garbage,
}

impl Attack {
    /// Every attack, in the order they run.
    pub const ALL: [Attack; 7] = [
        Attack::Baseline,
        Attack::StalledUploads,
        Attack::Slowloris,
        Attack::SnapshotFlood,
        Attack::AlertFlood,
        Attack::HeavyReads,
        Attack::Garbage,
    ];

    fn name(self) -> &'static str {
        match self {
            Attack::Baseline => "none (baseline)",
            Attack::StalledUploads => "1,000 stalled uploads, no token",
            Attack::Slowloris => "1,100 unfinished headers",
            Attack::SnapshotFlood => "8 concurrent 60k-listener snapshots, one host",
            Attack::AlertFlood => "20,000 alerts from one host",
            Attack::HeavyReads => "4 heavy readers + slow export",
            Attack::Garbage => "garbage from a host's token",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The collector binary.
    pub collector: PathBuf,
    /// An empty directory for the database and config.
    pub dir: PathBuf,
    /// Honest hosts, each heartbeating every second.
    pub hosts: usize,
    /// How long each attack lasts.
    pub phase: Duration,
    /// The attacks, in order.
    pub attacks: Vec<Attack>,
}

/// The honest fleet's requests during one phase.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    /// Requests answered 200.
    pub ok: usize,
    /// Requests that failed (no answer, or not 200).
    pub failed: usize,
    /// Median latency of all requests.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Slowest.
    pub max: Duration,
}

/// One attack's figures.
#[derive(Debug, Clone)]
pub struct PhaseResult {
    /// The attack.
    pub attack: Attack,
    /// The collector's largest resident set seen during the phase, in MiB.
    pub peak_rss_mib: f64,
    /// The honest fleet's requests.
    pub honest: Latency,
    /// Heartbeats due in the phase (hosts x seconds): fewer answered means
    /// honest hosts were starved.
    pub due: usize,
    /// What the attack got: stored, refused, delays.
    pub outcome: String,
}

const SESSION: &str = "honest";
/// Connections the honest fleet shares.
const HONEST_CONNECTIONS: usize = 8;
/// An honest request that takes longer counts as failed.
const HONEST_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn host_name(h: usize) -> String {
    format!("honest-{h:05}")
}

pub(crate) fn secret(name: &str) -> String {
    format!("{}hostile{name:0>58}", token::PREFIX)
}

fn facts() -> HostFacts {
    HostFacts {
        detection: None,
        host_netns: None,
        addresses: Vec::new(),
        os: Some("Debian GNU/Linux 12".into()),
        kernel: Some("6.1.0".into()),
        boot_time: None,
        agent_version: "bench".into(),
        interval_ms: 1000,
        tags: Default::default(),
    }
}

fn listener(port: u16, addr: std::net::IpAddr, inode: u64) -> Listener {
    Listener {
        netns: 4_026_531_840,
        proto: Proto::Tcp,
        family: if addr.is_ipv4() { Family::Ipv4 } else { Family::Ipv6 },
        local_addr: addr,
        local_port: port,
        inode,
        uid: 0,
        user: Some("root".into()),
        exposure: if addr.is_unspecified() {
            Exposure::Wildcard
        } else if addr.is_loopback() {
            Exposure::Loopback
        } else {
            Exposure::Specific
        },
        dual_stack: false,
        processes: vec![Process {
            pid: 1000 + (inode % 30_000) as u32,
            name: "svc".into(),
            cmdline: Some("/usr/sbin/svc --foreground".into()),
            exe: Some("/usr/sbin/svc".into()),
            uid: Some(0),
            user: Some("root".into()),
            container: None,
            unit: Some("svc.service".into()),
        }],
        firewall: None,
    }
}

fn batch(host: &str, session: &str, reports: Vec<Report>) -> Batch {
    Batch {
        version: Batch::required_version(&reports),
        host: host.into(),
        session: session.into(),
        dropped: 0,
        peers: Vec::new(),
        peers_dropped: 0,
        alive_at: Some(Timestamp::now()),
        reports,
    }
}

fn snapshot(listeners: Vec<Listener>) -> Report {
    Report {
        seq: 1,
        observed_at: Timestamp::now(),
        body: ReportBody::Snapshot {
            facts: facts(),
            listeners,
        },
    }
}

fn gzip(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes)?;
    Ok(gz.finish()?)
}

fn gzip_json(batch: &Batch) -> anyhow::Result<Vec<u8>> {
    gzip(&serde_json::to_vec(batch)?)
}

/// An HTTP/1.1 keep-alive connection to the collector (hyper's client).
struct Conn {
    addr: SocketAddr,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl Conn {
    fn new(addr: SocketAddr) -> Conn {
        Conn { addr, sender: None }
    }

    /// One request; its status and body, or why there was none.
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        token: &str,
        gzip: bool,
        body: Bytes,
    ) -> Result<(u16, Bytes), String> {
        let result = self.exchange(method, path, token, gzip, body).await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        token: &str,
        gzip: bool,
        body: Bytes,
    ) -> Result<(u16, Bytes), String> {
        let mut sender = match self.sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => {
                let stream = tokio::net::TcpStream::connect(self.addr)
                    .await
                    .map_err(|e| e.to_string())?;
                stream.set_nodelay(true).map_err(|e| e.to_string())?;
                let (sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(connection);
                sender
            }
        };
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json");
        if gzip {
            request = request.header("content-encoding", "gzip");
        }
        let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
        sender.ready().await.map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        self.sender = Some(sender);
        Ok((status, body))
    }
}

/// The honest fleet's record: (when sent, latency, ok).
pub(crate) type Record = Arc<Mutex<Vec<(Instant, Duration, bool)>>>;

/// The honest fleet: every host a snapshot, then a heartbeat every second,
/// until `stop`.
pub(crate) async fn honest_fleet(addr: SocketAddr, hosts: usize, record: Record, stop: Arc<AtomicBool>) {
    let mut tasks = Vec::new();
    for c in 0..HONEST_CONNECTIONS {
        let (record, stop) = (record.clone(), stop.clone());
        let mine: Vec<usize> = (c..hosts).step_by(HONEST_CONNECTIONS).collect();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr);
            for &h in &mine {
                let name = host_name(h);
                let first = batch(
                    &name,
                    SESSION,
                    vec![snapshot(vec![listener(
                        22,
                        "0.0.0.0".parse().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into()),
                        h as u64 + 1,
                    )])],
                );
                if let Ok(body) = gzip_json(&first) {
                    let _ = conn
                        .send("POST", "/api/v1/ingest", &secret(&name), true, body.into())
                        .await;
                }
            }
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                for &h in &mine {
                    let name = host_name(h);
                    let beat = batch(&name, SESSION, Vec::new());
                    let Ok(body) = gzip_json(&beat) else { continue };
                    let sent = Instant::now();
                    let answer = tokio::time::timeout(
                        HONEST_TIMEOUT,
                        conn.send("POST", "/api/v1/ingest", &secret(&name), true, body.into()),
                    )
                    .await;
                    let ok = matches!(answer, Ok(Ok((200, _))));
                    if answer.is_err() {
                        conn = Conn::new(addr);
                    }
                    if let Ok(mut r) = record.lock() {
                        r.push((sent, sent.elapsed(), ok));
                    }
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// The collector's resident set, sampled every 100 ms: (when, KiB).
async fn sample_rss(pid: u32, samples: Arc<Mutex<Vec<(Instant, u64)>>>, stop: Arc<AtomicBool>) {
    let path = format!("/proc/{pid}/status");
    while !stop.load(Ordering::Relaxed) {
        if let Ok(status) = std::fs::read_to_string(&path) {
            let kib = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
            if let (Some(kib), Ok(mut s)) = (kib, samples.lock()) {
                s.push((Instant::now(), kib));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The webhook receiver: when each alert event about host `victim` arrived.
async fn webhook(listener: tokio::net::TcpListener, arrivals: Arc<Mutex<Vec<Instant>>>, events: Arc<AtomicU64>) {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: Bytes| {
            let (arrivals, events) = (arrivals.clone(), events.clone());
            async move {
                let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                // One event, or a batch of them.
                let list = match value {
                    serde_json::Value::Array(list) => list,
                    one => vec![one],
                };
                for event in list {
                    events.fetch_add(1, Ordering::Relaxed);
                    if event["alert"]["host"] == "victim" && event["event"] == "opened" {
                        if let Ok(mut a) = arrivals.lock() {
                            a.push(Instant::now());
                        }
                    }
                }
                "ok"
            }
        }),
    );
    let _ = axum::serve(listener, app).await;
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(crate) fn latency(record: &Record, from: Instant, to: Instant) -> Latency {
    let Ok(all) = record.lock() else {
        return Latency::default();
    };
    let mut times: Vec<Duration> = Vec::new();
    let mut l = Latency::default();
    for &(at, took, ok) in all.iter().filter(|(at, _, _)| *at >= from && *at < to) {
        let _ = at;
        times.push(took);
        match ok {
            true => l.ok += 1,
            false => l.failed += 1,
        }
    }
    times.sort_unstable();
    l.p50 = percentile(&times, 50.0);
    l.p99 = percentile(&times, 99.0);
    l.max = times.last().copied().unwrap_or_default();
    l
}

fn peak_rss(samples: &Mutex<Vec<(Instant, u64)>>, from: Instant, to: Instant) -> f64 {
    samples.lock().map_or(0.0, |s| {
        s.iter()
            .filter(|(at, _)| *at >= from && *at <= to)
            .map(|&(_, kib)| kib)
            .max()
            .unwrap_or(0) as f64
            / 1024.0
    })
}

/// A running collector.
pub(crate) struct Server {
    child: Child,
    pub(crate) addr: SocketAddr,
}

impl Server {
    pub(crate) fn start(binary: &Path, config: &Path) -> anyhow::Result<Server> {
        use std::io::BufRead;
        let mut child = Command::new(binary)
            .args(["serve", "--config"])
            .arg(config)
            .env("PORTWATCH_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let Some(url) = line.trim().strip_prefix("portwatch-collector listening on ") else {
            let status = child.wait()?;
            bail!("the collector did not start ({status}): {line:?}");
        };
        let addr = url
            .strip_prefix("http://")
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("{url} is not http://IP:PORT"))?;
        Ok(Server { child, addr })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs every attack of `plan` in turn against one collector; the results in order.
pub fn run(plan: &Plan, progress: &mut dyn FnMut(&str)) -> anyhow::Result<Vec<PhaseResult>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the benchmark's runtime")?;
    runtime.block_on(run_async(plan, progress))
}

async fn run_async(plan: &Plan, progress: &mut dyn FnMut(&str)) -> anyhow::Result<Vec<PhaseResult>> {
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook_url = format!("http://{}/hook", hook.local_addr()?);
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let events = Arc::new(AtomicU64::new(0));
    tokio::spawn(webhook(hook, arrivals.clone(), events.clone()));
    let mut results = Vec::new();
    for (i, &attack) in plan.attacks.iter().enumerate() {
        // Each attack meets a collector of its own, fresh, so that what one
        // attack left (memory, connections, alerts) is not the next one's.
        let dir = plan.dir.join(format!("{i}"));
        std::fs::create_dir_all(&dir)?;
        arrivals.lock().map(|mut a| a.clear()).ok();
        progress(&format!("attack: {}", attack.name()));
        let result = phase(plan, attack, &dir, &hook_url, &arrivals).await?;
        progress(&format!(
            "  peak RSS {:.0} MiB, honest p50 {:.1} ms p99 {:.1} ms, {} ok {} failed of {} due; {}",
            result.peak_rss_mib,
            ms(result.honest.p50),
            ms(result.honest.p99),
            result.honest.ok,
            result.honest.failed,
            result.due,
            result.outcome
        ));
        results.push(result);
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(results)
}

/// Tokens for every honest host, the attackers and a reader.
pub(crate) fn tokens(db: &Path, hosts: usize) -> anyhow::Result<()> {
    let mut names: Vec<String> = (0..hosts).map(host_name).collect();
    names.extend(["flood", "noisy", "victim", "big", "junk"].map(str::to_owned));
    let store = SqliteStore::open(db)?;
    let now = Timestamp::now();
    let mut rows: Vec<TokenRow> = names
        .iter()
        .map(|name| TokenRow {
            name: format!("agent:{name}"),
            role: Role::Agent,
            host: Some(name.clone()),
            hash: token::hash(&secret(name)),
            created_at: now,
            revoked_at: None,
        })
        .collect();
    rows.push(TokenRow {
        name: "reader".into(),
        role: Role::Read,
        host: None,
        hash: token::hash(&secret("reader")),
        created_at: now,
        revoked_at: None,
    });
    store.create_tokens(&rows)?;
    Ok(())
}

/// One attack against a fresh collector while the honest fleet reports.
async fn phase(
    plan: &Plan,
    attack: Attack,
    dir: &Path,
    hook_url: &str,
    arrivals: &Mutex<Vec<Instant>>,
) -> anyhow::Result<PhaseResult> {
    let db = dir.join("collector.db");
    tokens(&db, plan.hosts)?;
    let config = dir.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndb = {:?}\n\n[alerts]\nsweep_every = \"5s\"\n\n[[alerts.webhook]]\nname = \"bench\"\nurl = {hook_url:?}\n",
            db.display().to_string()
        ),
    )?;
    let server = Server::start(&plan.collector, &config)?;
    let addr = server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let record: Record = Arc::default();
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = tokio::spawn(sample_rss(server.child.id(), samples.clone(), stop.clone()));
    let fleet = tokio::spawn(honest_fleet(addr, plan.hosts, record.clone(), stop.clone()));
    // The fleet's first snapshots, then heartbeats settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let from = Instant::now();
    let until = from + plan.phase;
    let outcome = match attack {
        Attack::Baseline => {
            tokio::time::sleep_until(until.into()).await;
            "-".to_owned()
        }
        Attack::StalledUploads => stalled_uploads(addr, until).await?,
        Attack::Slowloris => slowloris(addr, until).await?,
        Attack::SnapshotFlood => snapshot_flood(addr, until).await?,
        Attack::AlertFlood => alert_flood(addr, until, plan.phase, arrivals).await?,
        Attack::HeavyReads => heavy_reads(addr, until).await?,
        Attack::Garbage => garbage(addr, until).await?,
    };
    let to = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(HONEST_TIMEOUT + Duration::from_secs(5), fleet).await;
    let _ = sampler.await;
    drop(server);
    Ok(PhaseResult {
        attack,
        peak_rss_mib: peak_rss(&samples, from, to),
        honest: latency(&record, from, to),
        due: (plan.hosts as f64 * to.duration_since(from).as_secs_f64()) as usize,
        outcome,
    })
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Counts of answers by status, as text.
#[derive(Default)]
struct Statuses(std::collections::BTreeMap<String, u64>);

impl Statuses {
    fn add(&mut self, answer: &Result<(u16, Bytes), String>) {
        let key = match answer {
            Ok((status, _)) => status.to_string(),
            Err(_) => "no answer".to_owned(),
        };
        *self.0.entry(key).or_default() += 1;
    }

    fn merge(&mut self, other: Statuses) {
        for (k, v) in other.0 {
            *self.0.entry(k).or_default() += v;
        }
    }
}

impl std::fmt::Display for Statuses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{v}× {k}")).collect();
        write!(f, "{}", parts.join(", "))
    }
}

/// 1,000 connections without a token, each sending all but the last bytes
/// of a gzip body that decompresses to 32 MiB, then waiting.
async fn stalled_uploads(addr: SocketAddr, until: Instant) -> anyhow::Result<String> {
    let json = vec![b' '; 32 << 20];
    let body = gzip(&json)?;
    let head = format!(
        "POST /api/v1/ingest HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let stalled = Arc::new(body[..body.len() - 8].to_vec());
    let (held, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = Vec::new();
    for _ in 0..1_000 {
        let (head, stalled, held, refused) = (head.clone(), stalled.clone(), held.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(Ok(mut stream)) = tokio::time::timeout_at(until.into(), tokio::net::TcpStream::connect(addr)).await
            else {
                refused.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let sent = async {
                stream.write_all(head.as_bytes()).await?;
                stream.write_all(&stalled).await
            };
            match tokio::time::timeout_at(until.into(), sent).await {
                Ok(Ok(())) => {
                    held.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
            tokio::time::sleep_until(until.into()).await;
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(format!(
        "{} uploads sent all but their end, {} cut off or refused",
        held.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed)
    ))
}

/// 1,100 connections sending a request head a byte every 2 s.
async fn slowloris(addr: SocketAddr, until: Instant) -> anyhow::Result<String> {
    let cut = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..1_100 {
        let cut = cut.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(Ok(mut stream)) = tokio::time::timeout_at(until.into(), tokio::net::TcpStream::connect(addr)).await
            else {
                cut.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let head = format!("POST /api/v1/ingest HTTP/1.1\r\nhost: {addr}\r\nx-slow: ");
            if stream.write_all(head.as_bytes()).await.is_err() {
                cut.fetch_add(1, Ordering::Relaxed);
                return;
            }
            while Instant::now() < until {
                tokio::time::sleep(Duration::from_secs(2)).await;
                if stream.write_all(b"a").await.is_err() {
                    cut.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(format!(
        "{} of 1,100 connections cut by the collector",
        cut.load(Ordering::Relaxed)
    ))
}

/// One host, 8 senders at once, each sending a 60,000-listener snapshot
/// again and again.
async fn snapshot_flood(addr: SocketAddr, until: Instant) -> anyhow::Result<String> {
    let listeners: Vec<Listener> = (0..60_000u64)
        .map(|i| {
            let addr = std::net::Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8);
            listener(8000 + (i % 1000) as u16, addr.into(), i + 1)
        })
        .collect();
    let mut statuses = Statuses::default();
    let mut tasks = Vec::new();
    for s in 0..8 {
        let body = Bytes::from(gzip_json(&batch(
            "flood",
            &format!("flood-{s}"),
            vec![snapshot(listeners.clone())],
        ))?);
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr);
            let mut statuses = Statuses::default();
            while Instant::now() < until {
                let answer = match tokio::time::timeout_at(
                    until.into(),
                    conn.send("POST", "/api/v1/ingest", &secret("flood"), true, body.clone()),
                )
                .await
                {
                    Ok(answer) => answer,
                    Err(_) => break,
                };
                if matches!(answer, Ok((503, _))) {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                statuses.add(&answer);
            }
            statuses
        }));
    }
    for t in tasks {
        statuses.merge(t.await.unwrap_or_default());
    }
    Ok(format!("snapshots: {statuses}"))
}

/// `noisy` posts 20,000 risky listeners (telnet on 20,000 addresses); then
/// `victim` opens telnet on 0.0.0.0: how long its alert takes to reach the webhook.
async fn alert_flood(
    addr: SocketAddr,
    until: Instant,
    phase: Duration,
    arrivals: &Mutex<Vec<Instant>>,
) -> anyhow::Result<String> {
    let noisy: Vec<Listener> = (0..20_000u64)
        .map(|i| {
            let addr = std::net::Ipv4Addr::new(10, 200, (i >> 8) as u8, i as u8);
            listener(23, addr.into(), i + 1)
        })
        .collect();
    let mut conn = Conn::new(addr);
    let body = Bytes::from(gzip_json(&batch("noisy", "noisy", vec![snapshot(noisy)]))?);
    let noisy_answer = conn.send("POST", "/api/v1/ingest", &secret("noisy"), true, body).await;
    // The evaluation of the noisy host's change (and its outbox) is under way now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let victim = vec![listener(23, "0.0.0.0".parse()?, 1)];
    let body = Bytes::from(gzip_json(&batch("victim", "victim", vec![snapshot(victim)]))?);
    let sent = Instant::now();
    let victim_answer = conn.send("POST", "/api/v1/ingest", &secret("victim"), true, body).await;
    let mut delay = None;
    while Instant::now() < until {
        if let Some(&at) = arrivals.lock().ok().and_then(|a| a.first().copied()).as_ref() {
            delay = Some(at.saturating_duration_since(sent));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep_until(until.into()).await;
    let (status, _) = (&noisy_answer, &victim_answer);
    let alerts = Conn::new(addr)
        .send(
            "GET",
            "/api/v1/alerts?host=noisy&limit=10000",
            &secret("reader"),
            false,
            Bytes::new(),
        )
        .await
        .ok()
        .and_then(|(_, body)| serde_json::from_slice::<Vec<serde_json::Value>>(&body).ok())
        .map_or(0, |a| a.len());
    Ok(format!(
        "noisy snapshot {}, {alerts} alerts open on it; the other host's alert at the webhook after {}",
        status.as_ref().map_or_else(|e| e.clone(), |(s, _)| s.to_string()),
        delay.map_or_else(
            || format!("more than {:.0} s (not seen)", phase.as_secs_f64()),
            |d| format!("{:.2} s", d.as_secs_f64())
        )
    ))
}

/// `big` gets 50,000 intervals; then a read token asks, four at a time, for
/// its whole history and fleet-wide trends, while a fifth reads an export
/// a few kilobytes a second.
async fn heavy_reads(addr: SocketAddr, until: Instant) -> anyhow::Result<String> {
    let listeners: Vec<Listener> = (0..50_000u64)
        .map(|i| {
            let addr = std::net::Ipv4Addr::new(10, 100, (i >> 8) as u8, i as u8);
            listener(9000 + (i % 500) as u16, addr.into(), i + 1)
        })
        .collect();
    let mut conn = Conn::new(addr);
    let body = Bytes::from(gzip_json(&batch("big", "big", vec![snapshot(listeners)]))?);
    let loaded = conn.send("POST", "/api/v1/ingest", &secret("big"), true, body).await;
    if !matches!(loaded, Ok((200, _))) {
        return Ok(format!("could not load the big host: {:?}", loaded.map(|(s, _)| s)));
    }
    let bytes = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for r in 0..4 {
        let bytes = bytes.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr);
            let mut statuses = Statuses::default();
            let path = match r % 2 {
                0 => "/api/v1/hosts/big/history",
                _ => "/api/v1/trends?bucket=hour",
            };
            while Instant::now() < until {
                let Ok(answer) = tokio::time::timeout_at(
                    until.into(),
                    conn.send("GET", path, &secret("reader"), false, Bytes::new()),
                )
                .await
                else {
                    break;
                };
                if let Ok((_, body)) = &answer {
                    bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                }
                if matches!(answer, Ok((503, _))) {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                statuses.add(&answer);
            }
            statuses
        }));
    }
    // The slow export: a raw connection whose reads come a little at a time.
    let slow = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
            return 0;
        };
        let head = format!(
            "GET /api/v1/export?format=ndjson HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\n\r\n",
            secret("reader")
        );
        if stream.write_all(head.as_bytes()).await.is_err() {
            return 0;
        }
        let mut read = 0u64;
        let mut buf = [0u8; 4096];
        while Instant::now() < until {
            match tokio::time::timeout_at(until.into(), stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => read += n as u64,
                _ => break,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        read
    });
    let mut statuses = Statuses::default();
    for t in tasks {
        statuses.merge(t.await.unwrap_or_default());
    }
    let exported = slow.await.unwrap_or(0);
    Ok(format!(
        "reads: {statuses}, {:.0} MiB answered; slow export read {:.1} MiB",
        bytes.load(Ordering::Relaxed) as f64 / 1048576.0,
        exported as f64 / 1048576.0
    ))
}

/// A host's own token, posting broken bodies as fast as they are answered.
async fn garbage(addr: SocketAddr, until: Instant) -> anyhow::Result<String> {
    let mut hostile = batch(
        "junk",
        "junk",
        vec![snapshot(vec![listener(22, "0.0.0.0".parse()?, 1)])],
    );
    if let ReportBody::Snapshot { facts, listeners } = &mut hostile.reports[0].body {
        facts.os = Some("x".repeat(1 << 20));
        facts.tags = (0..20_000).map(|i| (format!("tag{i}"), "v".repeat(10))).collect();
        listeners[0].processes[0].cmdline = Some("c".repeat(4 << 20).into());
        listeners[0].local_addr = "::1".parse()?;
    }
    let bodies: Vec<(bool, Bytes)> = vec![
        (false, Bytes::from_static(b"\x00\x01garbage\xff")),
        (true, Bytes::from_static(b"\x1f\x8b\x08\x00broken gzip")),
        (
            false,
            Bytes::from_static(br#"{"version":1,"host":"junk","session":"s","reports":[{"seq":"x"}]}"#),
        ),
        (
            false,
            Bytes::from(serde_json::to_vec(&batch("honest-00000", "s", Vec::new()))?),
        ),
        (true, Bytes::from(gzip_json(&hostile)?)),
    ];
    let mut statuses = Statuses::default();
    let mut conn = Conn::new(addr);
    let mut i = 0;
    while Instant::now() < until {
        let (gz, body) = bodies[i % bodies.len()].clone();
        i += 1;
        let Ok(answer) = tokio::time::timeout_at(
            until.into(),
            conn.send("POST", "/api/v1/ingest", &secret("junk"), gz, body),
        )
        .await
        else {
            break;
        };
        statuses.add(&answer);
    }
    Ok(format!("{statuses}"))
}

/// The results as a Markdown table.
pub fn report(plan: &Plan, results: &[PhaseResult]) -> String {
    let mut out = format!(
        "{} honest hosts heartbeating every second over {HONEST_CONNECTIONS} connections; each attack {} s against a fresh collector\n\n",
        plan.hosts,
        plan.phase.as_secs()
    );
    out.push_str(
        "| attack | collector peak RSS | honest p50 | honest p99 | honest max | honest answered / due (failed) | what the attack got |\n",
    );
    out.push_str("|---|---:|---:|---:|---:|---:|---|\n");
    for r in results {
        out.push_str(&format!(
            "| {} | {:.0} MiB | {:.1} ms | {:.1} ms | {:.0} ms | {} / {} ({}) | {} |\n",
            r.attack.name(),
            r.peak_rss_mib,
            ms(r.honest.p50),
            ms(r.honest.p99),
            ms(r.honest.max),
            r.honest.ok,
            r.due,
            r.honest.failed,
            r.outcome
        ));
    }
    out
}
