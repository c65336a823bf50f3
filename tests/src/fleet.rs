//! The fleet simulator: many agents' traffic from one process against a real
//! `portwatch-collector serve` over HTTP on loopback, then checks of what
//! the collector stored.
//!
//! `pw-fleet` runs it at size and prints the figures (`collector/benches/fleet.sh`);
//! the `fleet` test runs it small and asserts the counts. It never asserts a time.
//!
//! What is sent is what a real agent sends (`agent/src/ship.rs`): one gzip
//! JSON [`Batch`] per request, `POST /api/v1/ingest` with the host's bearer
//! token, `alive_at` set. Phases, each timed between two barriers of all
//! client threads:
//!
//! 1. **snapshots**: every host's first snapshot (its listeners, with
//!    realistic owners: sshd, a pre-fork nginx, postgres, containers, ...);
//! 2. **mixed**: `intervals` rounds; in each, every host sends one batch: one
//!    host in `change_every` a delta (a listener opens or closes, next seq),
//!    the others a heartbeat (no report);
//! 3. **quiet**: `quiet_intervals` rounds of heartbeats only, with the
//!    database's row counts and page count taken before and after.
//!
//! A host's requests are sent in order by one client thread (a host waits
//! for its acknowledgement before its next report, as an agent does); the
//! hosts are spread over `clients` threads, each with one keep-alive
//! connection. Every body is encoded (JSON, gzip) before the timed phases
//! start, so the figures are the collector's plus the HTTP client's on the
//! same machine, not the encoder's. Simulated time advances 10 s per round
//! (observed_at, alive_at) however fast the rounds are sent.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use flate2::write::GzEncoder;
use jiff::{SignedDuration, Timestamp};
use portwatch_collector::store::sqlite::SqliteStore;
use portwatch_collector::store::TokenRow;
use portwatch_collector::token;
use portwatch_common::wire::{Ack, Batch, HostFacts, Report, ReportBody, PROTOCOL_VERSION};
use portwatch_common::{Exposure, Family, Listener, Process, Proto};
use portwatch_model::Role;

/// The agents' interval, as simulated time per round.
const INTERVAL: Duration = Duration::from_secs(10);

/// How long one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The port every host listens on (sshd), asked with `who`.
pub const WHO_PORT: u16 = 22;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Hosts (agents), each with its own token.
    pub hosts: usize,
    /// Listeners per host in its first snapshot.
    pub listeners: usize,
    /// Rounds of the mixed phase (deltas and heartbeats).
    pub intervals: usize,
    /// Rounds of the heartbeat-only phase.
    pub quiet_intervals: usize,
    /// One host in this many sends a delta per mixed round (100: 1 %).
    pub change_every: usize,
    /// Client threads, one keep-alive connection each.
    pub clients: usize,
    /// `who` queries timed after the load (also one every 100 ms during the mixed phase).
    pub who_queries: usize,
    /// No request is started after this much time from the first snapshot.
    pub time_limit: Duration,
    /// The `portwatch-collector` binary.
    pub collector: PathBuf,
    /// An empty directory for the database (and the tokens' SQLite file, with PostgreSQL: none).
    pub dir: PathBuf,
    /// Where the history goes.
    pub database: Database,
    /// Collectors serving it, the hosts spread over them (several need PostgreSQL).
    pub collectors: usize,
}

/// The store a run goes through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file in the plan's directory.
    Sqlite,
    /// A fresh schema on this PostgreSQL server (a `postgresql://` URL or
    /// libpq key=value pairs), dropped afterwards.
    Postgres(String),
}

/// The store of one run, opened.
enum Backend {
    Sqlite(PathBuf),
    Postgres(portwatch_fixtures::PostgresSchema),
}

impl Backend {
    fn open(plan: &Plan) -> anyhow::Result<Backend> {
        Ok(match &plan.database {
            Database::Sqlite => {
                if plan.collectors > 1 {
                    bail!(
                        "several collectors share a PostgreSQL database, not a SQLite file: give --db postgresql://..."
                    );
                }
                Backend::Sqlite(plan.dir.join("collector.db"))
            }
            Database::Postgres(server) => Backend::Postgres(portwatch_fixtures::PostgresSchema::on(server)),
        })
    }

    /// What `serve --db` is given.
    fn setting(&self) -> std::ffi::OsString {
        match self {
            Backend::Sqlite(path) => path.clone().into_os_string(),
            Backend::Postgres(schema) => schema.url.clone().into(),
        }
    }

    fn create_tokens(&self, rows: &[TokenRow]) -> anyhow::Result<()> {
        match self {
            Backend::Sqlite(path) => SqliteStore::open(path)?.create_tokens(rows)?,
            Backend::Postgres(schema) => {
                use portwatch_collector::store::Tokens;
                let options = portwatch_collector::store::postgres::PostgresOptions::new(schema.url.clone());
                let store = portwatch_collector::store::postgres::PostgresStore::open(&options, Default::default())?;
                // One transaction each (this store has no batch of them): some minutes at 100,000 hosts.
                for row in rows {
                    store.create_token(row)?;
                }
            }
        }
        Ok(())
    }

    /// Row and page counts (read-only; the collectors may be running).
    fn rows(&self) -> anyhow::Result<Rows> {
        match self {
            Backend::Sqlite(path) => rows(path),
            Backend::Postgres(schema) => {
                let out = schema.psql(
                    "SELECT (SELECT count(*) FROM hosts), (SELECT count(*) FROM programs), \
                     (SELECT count(*) FROM intervals), (SELECT count(*) FROM intervals WHERE closed_at IS NOT NULL), \
                     (SELECT count(*) FROM tokens), \
                     (SELECT (coalesce(sum(pg_relation_size(c.oid)), 0) / 8192)::bigint FROM pg_class c \
                      JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema())",
                );
                let n: Vec<i64> = out.split('|').map(|v| v.trim().parse()).collect::<Result<_, _>>()?;
                let [hosts, programs, intervals, closed, tokens, pages] = n[..] else {
                    bail!("unexpected counts from PostgreSQL: {out:?}");
                };
                Ok(Rows {
                    hosts,
                    programs,
                    intervals,
                    closed,
                    tokens,
                    pages,
                })
            }
        }
    }

    /// The database's size once the collectors stopped: the SQLite file with
    /// its WAL checkpointed, or the schema's tables, indexes and TOAST.
    fn bytes(&self) -> anyhow::Result<i64> {
        match self {
            Backend::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path)?;
                conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
                Ok(conn.query_row(
                    "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
                    [],
                    |r| r.get(0),
                )?)
            }
            Backend::Postgres(schema) => Ok(schema
                .psql(
                    "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c \
                     JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r'",
                )
                .trim()
                .parse()?),
        }
    }

    /// The PostgreSQL server's main process, when it runs on this machine
    /// (its CPU and its backends' are the database's).
    fn postmaster(&self) -> Option<u32> {
        let Backend::Postgres(schema) = self else {
            return None;
        };
        let dir = schema.psql("SHOW data_directory");
        let pid = std::fs::read_to_string(Path::new(dir.trim()).join("postmaster.pid")).ok()?;
        pid.lines().next()?.trim().parse().ok()
    }
}

/// Request latencies of a phase, and its rate.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    /// Requests answered 200 with the expected acknowledgement.
    pub ok: u64,
    /// Requests that failed or were answered otherwise.
    pub failed: u64,
    /// Wall time between the phase's barriers.
    pub elapsed: Duration,
    /// Median request latency.
    pub p50: Duration,
    /// 99th percentile request latency.
    pub p99: Duration,
    /// Largest request latency.
    pub max: Duration,
    /// CPU time the collector, this process and the whole machine used during the phase.
    pub cpu: Cpu,
}

/// CPU time used during a phase (user + system), in seconds of one core.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    /// By the collector processes.
    pub collector: f64,
    /// By the PostgreSQL server and its backends (when it runs on this machine).
    pub database: f64,
    /// By this process (the simulated agents).
    pub simulator: f64,
    /// By the whole machine (others included: a shared machine shows here).
    pub machine: f64,
}

impl Cpu {
    /// CPU time used so far by the processes `pids` (the collectors), by
    /// `postmaster` and its children, by this process and by the machine.
    fn now(pids: &[u32], postmaster: Option<u32>) -> Cpu {
        Cpu {
            collector: pids.iter().map(|pid| process_cpu(&format!("/proc/{pid}/stat"))).sum(),
            database: postmaster.map_or(0.0, family_cpu),
            simulator: process_cpu("/proc/self/stat"),
            machine: machine_cpu(),
        }
    }

    /// What was used from `self` to `later`.
    fn until(self, later: Cpu) -> Cpu {
        Cpu {
            collector: later.collector - self.collector,
            database: later.database - self.database,
            simulator: later.simulator - self.simulator,
            machine: later.machine - self.machine,
        }
    }
}

/// Clock ticks per second of /proc's CPU times (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

/// CPU of process `parent` and its live children, in seconds (a PostgreSQL
/// server: its backends are its children; those that exited are not counted).
fn family_cpu(parent: u32) -> f64 {
    let mut total = process_cpu(&format!("/proc/{parent}/stat"));
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let stat = entry.path().join("stat");
        let Ok(text) = std::fs::read_to_string(&stat) else {
            continue;
        };
        // The parent pid is the second field after the command name.
        let ppid = text
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            total += process_cpu(&stat.to_string_lossy());
        }
    }
    total
}

/// utime + stime of a /proc/PID/stat file, in seconds; 0 when unreadable.
fn process_cpu(path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at field 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / TICKS
}

/// Busy time of every CPU of the machine (all but idle and iowait), in seconds.
fn machine_cpu() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let Some(line) = stat.lines().next() else {
        return 0.0;
    };
    let ticks: Vec<f64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let busy: f64 = ticks.iter().take(8).sum::<f64>() - ticks.get(3).unwrap_or(&0.0) - ticks.get(4).unwrap_or(&0.0);
    busy / TICKS
}

impl Phase {
    /// Acknowledged requests per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn of(latencies: &mut [Duration], ok: u64, failed: u64, elapsed: Duration) -> Phase {
        latencies.sort_unstable();
        Phase {
            ok,
            failed,
            elapsed,
            cpu: Cpu::default(),
            p50: percentile(latencies, 50.0),
            p99: percentile(latencies, 99.0),
            max: latencies.last().copied().unwrap_or_default(),
        }
    }
}

/// Latencies of `who` queries.
#[derive(Debug, Clone, Default)]
pub struct Queries {
    /// How many.
    pub count: usize,
    /// Rows in the last answer.
    pub rows: usize,
    /// Bytes of the last answer.
    pub bytes: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

/// Row counts of the tables, and the file's page count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rows {
    /// `hosts` rows.
    pub hosts: i64,
    /// `programs` rows.
    pub programs: i64,
    /// `intervals` rows.
    pub intervals: i64,
    /// `intervals` rows with `closed_at` set.
    pub closed: i64,
    /// `tokens` rows.
    pub tokens: i64,
    /// Pages of the database (WAL included).
    pub pages: i64,
}

impl Rows {
    /// Every row of every table.
    pub fn total(&self) -> i64 {
        self.hosts + self.programs + self.intervals + self.tokens
    }
}

/// What a run measured and found.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Time to make the tokens (in process, one transaction).
    pub tokens_elapsed: Duration,
    /// Phase 1.
    pub snapshots: Phase,
    /// Phase 2.
    pub mixed: Phase,
    /// Phase 3.
    pub quiet: Phase,
    /// Listeners in the acknowledged snapshots.
    pub snapshot_listeners: u64,
    /// Listeners opened by acknowledged deltas.
    pub opened: u64,
    /// Listeners closed by acknowledged deltas.
    pub closed: u64,
    /// Deltas acknowledged.
    pub deltas: u64,
    /// Heartbeats acknowledged (mixed and quiet phases).
    pub heartbeats: u64,
    /// Gzip bytes sent per heartbeat, snapshot.
    pub heartbeat_body: usize,
    /// Gzip bytes of one snapshot.
    pub snapshot_body: usize,
    /// Counts before the quiet phase.
    pub before_quiet: Rows,
    /// Counts after the quiet phase.
    pub after_quiet: Rows,
    /// Counts once the collector stopped.
    pub end: Rows,
    /// File size once the collector stopped and the WAL was checkpointed.
    pub file_bytes: i64,
    /// `who --port 22` during the mixed phase.
    pub who_loaded: Queries,
    /// `who --port 22` after the load.
    pub who_idle: Queries,
    /// Hosts `GET /api/v1/hosts` lists as up, and the open listeners it counts.
    pub hosts_up: usize,
    /// Sum of `listeners` over `GET /api/v1/hosts`.
    pub hosts_listeners: u64,
    /// The time limit stopped a phase before it was done.
    pub cut_short: bool,
    /// The first few failures, for the report.
    pub errors: Vec<String>,
}

impl Outcome {
    /// Listener changes stored: every snapshot listener (an open), every open and close.
    pub fn changes(&self) -> u64 {
        self.snapshot_listeners + self.opened + self.closed
    }

    /// Database bytes per stored change.
    pub fn bytes_per_change(&self) -> f64 {
        self.file_bytes as f64 / self.changes().max(1) as f64
    }

    /// What does not add up, if anything: stored rows against what was acknowledged,
    /// rows written by heartbeats, failed requests.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let expect_intervals = (self.snapshot_listeners + self.opened) as i64;
        if self.end.intervals != expect_intervals {
            problems.push(format!(
                "{} interval rows stored, {expect_intervals} expected (snapshot listeners + opens)",
                self.end.intervals
            ));
        }
        if self.end.closed != self.closed as i64 {
            problems.push(format!(
                "{} closed intervals, {} closes sent",
                self.end.closed, self.closed
            ));
        }
        if self.after_quiet.total() != self.before_quiet.total() {
            problems.push(format!(
                "heartbeats wrote rows: {:?} before the quiet phase, {:?} after",
                self.before_quiet, self.after_quiet
            ));
        }
        let open = self.snapshot_listeners + self.opened - self.closed;
        if self.hosts_listeners != open {
            problems.push(format!(
                "hosts lists {} open listeners, {open} expected",
                self.hosts_listeners
            ));
        }
        let failed = self.snapshots.failed + self.mixed.failed + self.quiet.failed;
        if failed > 0 {
            problems.push(format!("{failed} requests failed: {:?}", self.errors));
        }
        problems
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A running collector, stopped with SIGTERM (or killed on drop).
pub(crate) struct Server {
    child: Child,
    pub(crate) url: String,
}

impl Server {
    pub(crate) fn start(binary: &Path, db: impl AsRef<std::ffi::OsStr>) -> anyhow::Result<Server> {
        let mut child = Command::new(binary)
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(db)
            .env("PORTWATCH_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Some(url) = line.trim().strip_prefix("portwatch-collector listening on ") else {
            let status = child.wait()?;
            bail!("the collector did not start ({status}): {line:?}");
        };
        Ok(Server {
            url: url.to_owned(),
            child,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait (the store closes: its WAL is checkpointed).
    pub(crate) fn stop(mut self) -> anyhow::Result<()> {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("the collector exited with {status}");
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One well-known service: its port and the process holding it.
struct Service {
    port: u16,
    proto: Proto,
    addr: &'static str,
    name: &'static str,
    exe: &'static str,
    cmdline: &'static str,
    user: &'static str,
    uid: u32,
    unit: &'static str,
    /// Processes sharing the socket (a pre-fork server: master and workers).
    holders: u32,
}

const SERVICES: &[Service] = &[
    Service {
        port: 22,
        proto: Proto::Tcp,
        addr: "0.0.0.0",
        name: "sshd",
        exe: "/usr/sbin/sshd",
        cmdline: "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups",
        user: "root",
        uid: 0,
        unit: "ssh.service",
        holders: 1,
    },
    Service {
        port: 80,
        proto: Proto::Tcp,
        addr: "0.0.0.0",
        name: "nginx",
        exe: "/usr/sbin/nginx",
        cmdline: "nginx: worker process",
        user: "www-data",
        uid: 33,
        unit: "nginx.service",
        holders: 4,
    },
    Service {
        port: 443,
        proto: Proto::Tcp,
        addr: "0.0.0.0",
        name: "nginx",
        exe: "/usr/sbin/nginx",
        cmdline: "nginx: worker process",
        user: "www-data",
        uid: 33,
        unit: "nginx.service",
        holders: 4,
    },
    Service {
        port: 5432,
        proto: Proto::Tcp,
        addr: "127.0.0.1",
        name: "postgres",
        exe: "/usr/lib/postgresql/15/bin/postgres",
        cmdline: "/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main \
                  -c config_file=/etc/postgresql/15/main/postgresql.conf",
        user: "postgres",
        uid: 105,
        unit: "postgresql@15-main.service",
        holders: 1,
    },
    Service {
        port: 6379,
        proto: Proto::Tcp,
        addr: "127.0.0.1",
        name: "redis-server",
        exe: "/usr/bin/redis-check-rdb",
        cmdline: "/usr/bin/redis-server 127.0.0.1:6379",
        user: "redis",
        uid: 106,
        unit: "redis-server.service",
        holders: 1,
    },
    Service {
        port: 9100,
        proto: Proto::Tcp,
        addr: "::",
        name: "prometheus-node",
        exe: "/usr/bin/prometheus-node-exporter",
        cmdline: "/usr/bin/prometheus-node-exporter --collector.systemd",
        user: "prometheus",
        uid: 107,
        unit: "prometheus-node-exporter.service",
        holders: 1,
    },
    Service {
        port: 53,
        proto: Proto::Udp,
        addr: "127.0.0.53",
        name: "systemd-resolve",
        exe: "/usr/lib/systemd/systemd-resolved",
        cmdline: "/lib/systemd/systemd-resolved",
        user: "systemd-resolve",
        uid: 991,
        unit: "systemd-resolved.service",
        holders: 1,
    },
    Service {
        port: 323,
        proto: Proto::Udp,
        addr: "127.0.0.1",
        name: "chronyd",
        exe: "/usr/sbin/chronyd",
        cmdline: "/usr/sbin/chronyd -F 1",
        user: "_chrony",
        uid: 108,
        unit: "chrony.service",
        holders: 1,
    },
    Service {
        port: 25,
        proto: Proto::Tcp,
        addr: "127.0.0.1",
        name: "master",
        exe: "/usr/lib/postfix/sbin/master",
        cmdline: "/usr/lib/postfix/sbin/master -w",
        user: "root",
        uid: 0,
        unit: "postfix@-.service",
        holders: 1,
    },
    Service {
        port: 8080,
        proto: Proto::Tcp,
        addr: "::",
        name: "java",
        exe: "/usr/lib/jvm/java-17-openjdk-amd64/bin/java",
        cmdline: "/usr/bin/java -Xmx2g -jar /opt/app/app.jar --server.port=8080",
        user: "app",
        uid: 1001,
        unit: "app.service",
        holders: 1,
    },
];

/// Listener `i` of host `h` (`i` past the snapshot's listeners: opened later).
/// The first ones are [`SERVICES`]; the rest are application ports, one in
/// five of them in a container of the host's own.
pub fn listener(h: usize, i: usize) -> Listener {
    let inode = 1_000_000 + (h as u64) * 10_000 + i as u64;
    let pid = 1000 + (i as u32) * 7;
    let process = |pid: u32, name: &str, exe: &str, cmdline: String, user: &str, uid: u32| Process {
        pid,
        name: name.into(),
        cmdline: Some(cmdline.into()),
        exe: Some(exe.into()),
        uid: Some(uid),
        user: Some(user.into()),
        container: None,
        unit: None,
    };
    let (port, proto, addr, processes) = match SERVICES.get(i) {
        Some(s) => {
            let processes = (0..s.holders)
                .map(|n| {
                    let mut p = process(pid + n, s.name, s.exe, s.cmdline.to_owned(), s.user, s.uid);
                    if n == 0 && s.holders > 1 {
                        p.cmdline =
                            Some("nginx: master process /usr/sbin/nginx -g daemon on; master_process on;".into());
                        (p.user, p.uid) = (Some("root".into()), Some(0));
                    }
                    p.unit = Some(s.unit.into());
                    p
                })
                .collect();
            (s.port, s.proto, s.addr, processes)
        }
        None => {
            let port = 10_000 + i as u16;
            let name = format!("svc-{i}");
            let mut p = process(
                pid,
                &name,
                &format!("/opt/{name}/bin/{name}"),
                format!("/opt/{name}/bin/{name} --config /etc/{name}/config.yaml --listen 0.0.0.0:{port}"),
                "app",
                1001,
            );
            if i.is_multiple_of(5) {
                p.container = Some(format!("{:016x}{:048x}", h, i).into());
            } else {
                p.unit = Some(format!("{name}.service").into());
            }
            (
                port,
                if i % 7 == 3 { Proto::Udp } else { Proto::Tcp },
                "0.0.0.0",
                vec![p],
            )
        }
    };
    let local_addr: IpAddr = addr.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let exposure = match local_addr {
        a if a.is_loopback() => Exposure::Loopback,
        a if a.is_unspecified() => Exposure::Wildcard,
        _ => Exposure::Specific,
    };
    Listener {
        netns: 4_026_531_840,
        proto,
        family: if local_addr.is_ipv4() {
            Family::Ipv4
        } else {
            Family::Ipv6
        },
        dual_stack: local_addr == IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        local_addr,
        local_port: port,
        inode,
        uid: processes.first().and_then(|p: &Process| p.uid).unwrap_or(0),
        user: processes.first().and_then(|p| p.user.clone()),
        exposure,
        processes,
        firewall: None,
    }
}

pub(crate) fn host_name(h: usize) -> String {
    format!("host-{h:05}.fleet.example")
}

pub(crate) fn facts() -> HostFacts {
    HostFacts {
        detection: None,
        host_netns: None,
        addresses: Vec::new(),
        os: Some("Debian GNU/Linux 12 (bookworm)".into()),
        kernel: Some("6.1.0-27-amd64".into()),
        boot_time: None,
        agent_version: env!("CARGO_PKG_VERSION").into(),
        interval_ms: INTERVAL.as_millis() as u64,
        tags: BTreeMap::from([("role".into(), "web".into()), ("dc".into(), "fra1".into())]),
    }
}

fn gzip_json(batch: &Batch) -> anyhow::Result<Vec<u8>> {
    let json = serde_json::to_vec(batch)?;
    let mut gz = GzEncoder::new(Vec::with_capacity(json.len() / 4), flate2::Compression::fast());
    gz.write_all(&json)?;
    Ok(gz.finish()?)
}

/// One request to send and the acknowledgement it must get.
struct Request {
    body: Vec<u8>,
    expect: Ack,
}

/// What a host changes in a round, if anything: `Some(true)` opens a listener, `Some(false)` closes one.
fn change(plan: &Plan, h: usize, round: usize) -> Option<bool> {
    let every = plan.change_every.max(1);
    (h + round)
        .is_multiple_of(every)
        .then_some((h / every + round).is_multiple_of(2))
}

/// A host's whole script: its snapshot, its mixed rounds, its quiet rounds.
struct Script {
    token: String,
    snapshot: Request,
    snapshot_listeners: u64,
    rounds: Vec<Request>,
    /// Per mixed round: (opened, closed) by this host's request.
    changes: Vec<(u64, u64)>,
}

fn script(plan: &Plan, h: usize, token: String, start: Timestamp) -> anyhow::Result<Script> {
    let host = host_name(h);
    let session = format!("fleet-{h}-{}", std::process::id());
    let at = |round: usize| start + SignedDuration::from_secs(INTERVAL.as_secs() as i64 * round as i64);
    let batch = |round: usize, reports: Vec<Report>| Batch {
        version: PROTOCOL_VERSION,
        host: host.clone(),
        session: session.clone(),
        dropped: 0,
        peers: Vec::new(),
        peers_dropped: 0,
        alive_at: Some(at(round)),
        reports,
    };
    let mut open: Vec<usize> = (0..plan.listeners).collect();
    let snapshot = batch(
        0,
        vec![Report {
            seq: 1,
            observed_at: at(0),
            body: ReportBody::Snapshot {
                facts: facts(),
                listeners: open.iter().map(|&i| listener(h, i)).collect(),
            },
        }],
    );
    let snapshot = Request {
        body: gzip_json(&snapshot)?,
        expect: Ack {
            acked: 1,
            resync: false,
            limits: None,
        },
    };
    let mut seq = 1;
    let mut next = plan.listeners;
    let mut rounds = Vec::new();
    let mut changes = Vec::new();
    for round in 1..=plan.intervals + plan.quiet_intervals {
        let what = if round <= plan.intervals {
            change(plan, h, round)
        } else {
            None
        };
        let (reports, counted) = match what {
            None => (Vec::new(), (0, 0)),
            Some(opening) => {
                seq += 1;
                let (opened, closed) = if opening || open.len() <= 1 {
                    open.push(next);
                    next += 1;
                    (vec![Arc::new(listener(h, next - 1))], Vec::new())
                } else {
                    // Close the newest listener (a service stops).
                    let i = open.pop().unwrap_or_default();
                    (Vec::new(), vec![Arc::new(listener(h, i))])
                };
                let counted = (opened.len() as u64, closed.len() as u64);
                let report = Report {
                    seq,
                    observed_at: at(round),
                    body: ReportBody::Delta { opened, closed },
                };
                (vec![report], counted)
            }
        };
        rounds.push(Request {
            body: gzip_json(&batch(round, reports))?,
            expect: Ack {
                acked: seq,
                resync: false,
                limits: None,
            },
        });
        if round <= plan.intervals {
            changes.push(counted);
        }
    }
    Ok(Script {
        token,
        snapshot,
        snapshot_listeners: plan.listeners as u64,
        rounds,
        changes,
    })
}

/// What one client thread did in one phase.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    ok: u64,
    failed: u64,
    errors: Vec<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.ok += other.ok;
        self.failed += other.failed;
        for e in other.errors {
            if self.errors.len() < 5 {
                self.errors.push(e);
            }
        }
    }
}

/// What one client thread reports back.
#[derive(Default)]
struct ClientResult {
    snapshots: Tally,
    mixed: Tally,
    quiet: Tally,
    snapshot_listeners: u64,
    opened: u64,
    closed: u64,
    deltas: u64,
    heartbeats: u64,
    cut_short: bool,
}

pub(crate) fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(REQUEST_TIMEOUT))
        .build()
        .new_agent()
}

/// The ingest client: one HTTP/1.1 keep-alive connection of hyper's, driven
/// by a single-threaded runtime of its own. A general-purpose blocking client
/// (ureq) cost more CPU per request than the collector itself does here, and
/// both share the machine: the load generator must be the cheap side. (`who`
/// and `hosts` are asked with ureq, like the CLI.)
struct Connection {
    addr: std::net::SocketAddr,
    runtime: tokio::runtime::Runtime,
    sender: Option<hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>>,
    answer: bytes::Bytes,
}

impl Connection {
    fn new(url: &str) -> anyhow::Result<Connection> {
        let addr = url
            .strip_prefix("http://")
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("{url} is not http://IP:PORT"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .context("cannot start a client runtime")?;
        Ok(Connection {
            addr,
            runtime,
            sender: None,
            answer: bytes::Bytes::new(),
        })
    }

    /// Posts `body` (gzip JSON) to the ingest endpoint; the status and the answer's body.
    fn ingest(&mut self, token: &str, body: &[u8]) -> Result<(u16, &[u8]), String> {
        let result = self.exchange(token, body);
        if result.is_err() {
            self.sender = None;
        }
        let status = result?;
        Ok((status, &self.answer[..]))
    }

    fn exchange(&mut self, token: &str, body: &[u8]) -> Result<u16, String> {
        use http_body_util::BodyExt;
        let addr = self.addr;
        let request = hyper::Request::post("/api/v1/ingest")
            .header("host", addr.to_string())
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(body)))
            .map_err(|e| e.to_string())?;
        let sender = self.sender.take();
        let (status, answer, sender) = self.runtime.block_on(async move {
            let within = |what: &'static str| move |_| format!("no {what} within {REQUEST_TIMEOUT:?}");
            let mut sender = match sender {
                Some(s) if !s.is_closed() => s,
                _ => {
                    let stream = tokio::time::timeout(REQUEST_TIMEOUT, tokio::net::TcpStream::connect(addr))
                        .await
                        .map_err(within("connection"))?
                        .map_err(|e| e.to_string())?;
                    stream.set_nodelay(true).map_err(|e| e.to_string())?;
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let (sender, connection) = hyper::client::conn::http1::handshake(io)
                        .await
                        .map_err(|e| e.to_string())?;
                    tokio::spawn(connection);
                    sender
                }
            };
            let exchange = async {
                sender.ready().await?;
                let response = sender.send_request(request).await?;
                let status = response.status().as_u16();
                let answer = response.into_body().collect().await?.to_bytes();
                Ok::<_, hyper::Error>((status, answer))
            };
            let (status, answer) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
                .await
                .map_err(within("answer"))?
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((status, answer, sender))
        })?;
        self.sender = Some(sender);
        self.answer = answer;
        Ok(status)
    }
}

/// Sends one request; `Err` says what went wrong.
fn send(connection: &mut Connection, token: &str, request: &Request) -> Result<(), String> {
    let (status, body) = connection.ingest(token, &request.body)?;
    if status != 200 {
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(body)));
    }
    let ack: Ack = serde_json::from_slice(body).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(body)))?;
    if (ack.acked, ack.resync) != (request.expect.acked, request.expect.resync) {
        return Err(format!("acknowledged {ack:?}, expected {:?}", request.expect));
    }
    Ok(())
}

/// One client thread: its hosts' scripts, phase by phase, meeting the others at each barrier.
fn client(
    url: String,
    scripts: Vec<Script>,
    barrier: Arc<Barrier>,
    deadline: Arc<std::sync::OnceLock<Instant>>,
    plan: Plan,
) -> ClientResult {
    let mut result = ClientResult::default();
    let mut connection = match Connection::new(&url) {
        Ok(c) => c,
        Err(e) => {
            result.snapshots.failed += 1;
            result.snapshots.errors.push(e.to_string());
            // Still meet the others at every barrier.
            for _ in 0..6 {
                barrier.wait();
            }
            return result;
        }
    };
    let late = |result: &mut ClientResult| {
        let late = deadline.get().is_some_and(|d| Instant::now() > *d);
        result.cut_short |= late;
        late
    };
    // Phase 1: snapshots.
    barrier.wait();
    let mut acked_snapshot = vec![false; scripts.len()];
    for (n, s) in scripts.iter().enumerate() {
        if late(&mut result) {
            break;
        }
        if timed(&mut connection, &mut result.snapshots, &s.token, &s.snapshot) {
            acked_snapshot[n] = true;
            result.snapshot_listeners += s.snapshot_listeners;
        }
    }
    barrier.wait();
    // Phases 2 and 3: a host whose request failed sends nothing more (its
    // next seq would be a gap); the counts follow what was acknowledged.
    let mut alive = acked_snapshot;
    for phase in 0..2 {
        barrier.wait();
        let rounds = match phase {
            0 => 0..plan.intervals,
            _ => plan.intervals..plan.intervals + plan.quiet_intervals,
        };
        'rounds: for round in rounds {
            for (n, s) in scripts.iter().enumerate() {
                if !alive[n] {
                    continue;
                }
                if late(&mut result) {
                    break 'rounds;
                }
                let tally = if phase == 0 {
                    &mut result.mixed
                } else {
                    &mut result.quiet
                };
                if !timed(&mut connection, tally, &s.token, &s.rounds[round]) {
                    alive[n] = false;
                    continue;
                }
                match s.changes.get(round) {
                    Some(&(opened, closed)) if opened + closed > 0 => {
                        result.opened += opened;
                        result.closed += closed;
                        result.deltas += 1;
                    }
                    _ => result.heartbeats += 1,
                }
            }
        }
        barrier.wait();
    }
    result
}

/// Sends `request`, recording its latency and outcome in `tally`; whether it was acknowledged as expected.
fn timed(connection: &mut Connection, tally: &mut Tally, token: &str, request: &Request) -> bool {
    let t = Instant::now();
    let sent = send(connection, token, request);
    tally.latencies.push(t.elapsed());
    match sent {
        Ok(()) => {
            tally.ok += 1;
            true
        }
        Err(e) => {
            tally.failed += 1;
            if tally.errors.len() < 5 {
                tally.errors.push(e);
            }
            false
        }
    }
}

/// `who --port 22` over HTTP with a read token: the time until the whole answer
/// is received (not parsed), its rows and bytes.
fn who(agent: &ureq::Agent, url: &str, token: &str) -> anyhow::Result<(Duration, usize, usize)> {
    timed_get(agent, &format!("{url}/api/v1/who?port={WHO_PORT}"), token)
}

/// GET `url` with a read token: the time until the whole answer is received
/// (not parsed), then its rows (a JSON array) and bytes.
pub(crate) fn timed_get(agent: &ureq::Agent, url: &str, token: &str) -> anyhow::Result<(Duration, usize, usize)> {
    let t = Instant::now();
    let mut response = agent
        .get(url)
        .header("Authorization", &format!("Bearer {token}"))
        .call()?;
    let mut body = Vec::new();
    response.body_mut().as_reader().read_to_end(&mut body)?;
    let elapsed = t.elapsed();
    if response.status() != 200 {
        bail!("{url}: HTTP {}: {}", response.status(), String::from_utf8_lossy(&body));
    }
    let rows = serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(&body)?.len();
    Ok((elapsed, rows, body.len()))
}

pub(crate) fn queries(mut samples: Vec<(Duration, usize, usize)>) -> Queries {
    let (rows, bytes) = samples.last().map_or((0, 0), |s| (s.1, s.2));
    samples.sort_unstable();
    let times: Vec<Duration> = samples.iter().map(|s| s.0).collect();
    Queries {
        count: times.len(),
        rows,
        bytes,
        p50: percentile(&times, 50.0),
        p99: percentile(&times, 99.0),
    }
}

/// Row and page counts of the database at `db` (read-only; the collector may be running).
pub fn rows(db: &Path) -> anyhow::Result<Rows> {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let count = |sql: &str| -> anyhow::Result<i64> { Ok(conn.query_row(sql, [], |r| r.get(0))?) };
    Ok(Rows {
        hosts: count("SELECT count(*) FROM hosts")?,
        programs: count("SELECT count(*) FROM programs")?,
        intervals: count("SELECT count(*) FROM intervals")?,
        closed: count("SELECT count(*) FROM intervals WHERE closed_at IS NOT NULL")?,
        tokens: count("SELECT count(*) FROM tokens")?,
        pages: count("PRAGMA page_count")?,
    })
}

/// Runs the plan; `progress` hears what is going on.
pub fn run(plan: &Plan, progress: &mut dyn FnMut(&str)) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::default();
    let backend = Backend::open(plan)?;
    let clients = plan.clients.clamp(1, plan.hosts.max(1));

    // Tokens, in process: one per host and a read token.
    let t = Instant::now();
    let secrets: Vec<String> = (0..plan.hosts)
        .map(|h| format!("{}fleet{h:059}", token::PREFIX))
        .collect();
    let reader_secret = format!("{}fleet-reader", token::PREFIX);
    {
        let now = Timestamp::now();
        let mut rows: Vec<TokenRow> = secrets
            .iter()
            .enumerate()
            .map(|(h, secret)| TokenRow {
                name: format!("agent:{}", host_name(h)),
                role: Role::Agent,
                host: Some(host_name(h)),
                hash: token::hash(secret),
                created_at: now,
                revoked_at: None,
            })
            .collect();
        rows.push(TokenRow {
            name: "fleet-reader".into(),
            role: Role::Read,
            host: None,
            hash: token::hash(&reader_secret),
            created_at: now,
            revoked_at: None,
        });
        backend.create_tokens(&rows)?;
    }
    outcome.tokens_elapsed = t.elapsed();
    progress(&format!(
        "{} tokens made in {:.1} s",
        plan.hosts + 1,
        outcome.tokens_elapsed.as_secs_f64()
    ));

    let servers = (0..plan.collectors.max(1))
        .map(|_| Server::start(&plan.collector, backend.setting()))
        .collect::<anyhow::Result<Vec<Server>>>()?;
    let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    let pids: Vec<u32> = servers.iter().map(Server::pid).collect();
    let postmaster = backend.postmaster();
    progress(&format!(
        "collector {} listening on {}",
        plan.collector.display(),
        urls.join(", ")
    ));

    // Simulated time: the rounds end a little before now.
    let rounds = plan.intervals + plan.quiet_intervals;
    let start = Timestamp::now() - SignedDuration::from_secs(INTERVAL.as_secs() as i64 * (rounds as i64 + 1));
    let barrier = Arc::new(Barrier::new(clients + 1));
    let deadline = Arc::new(std::sync::OnceLock::new());
    let mut threads = Vec::new();
    let mut sizes = (0, 0);
    let t = Instant::now();
    let mut by_client: Vec<Vec<Script>> = (0..clients).map(|_| Vec::new()).collect();
    for (h, secret) in secrets.into_iter().enumerate() {
        let s = script(plan, h, secret, start)?;
        if h == 0 {
            sizes = (s.snapshot.body.len(), s.rounds.last().map_or(0, |r| r.body.len()));
        }
        by_client[h % clients].push(s);
    }
    (outcome.snapshot_body, outcome.heartbeat_body) = sizes;
    progress(&format!("bodies encoded in {:.1} s", t.elapsed().as_secs_f64()));
    for (i, scripts) in by_client.into_iter().enumerate() {
        // Hosts spread over the collectors, a client's hosts all on one.
        let url = urls[i % urls.len()].clone();
        let (barrier, deadline, plan) = (barrier.clone(), deadline.clone(), plan.clone());
        threads.push(std::thread::spawn(move || {
            client(url, scripts, barrier, deadline, plan)
        }));
    }

    // Phase 1.
    let mut cpu = [Cpu::default(); 3];
    barrier.wait();
    let t = Instant::now();
    let _ = deadline.set(t + plan.time_limit);
    let c = Cpu::now(&pids, postmaster);
    barrier.wait();
    outcome.snapshots.elapsed = t.elapsed();
    cpu[0] = c.until(Cpu::now(&pids, postmaster));
    progress(&format!(
        "snapshots sent in {:.1} s",
        outcome.snapshots.elapsed.as_secs_f64()
    ));

    // Phase 2, with `who` asked every 100 ms meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (url, token, stop) = (urls[0].clone(), reader_secret.clone(), stop.clone());
        std::thread::spawn(move || -> anyhow::Result<Vec<(Duration, usize, usize)>> {
            let agent = http_agent();
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                samples.push(who(&agent, &url, &token)?);
                std::thread::sleep(Duration::from_secs(1));
            }
            Ok(samples)
        })
    };
    barrier.wait();
    let t = Instant::now();
    let c = Cpu::now(&pids, postmaster);
    barrier.wait();
    outcome.mixed.elapsed = t.elapsed();
    cpu[1] = c.until(Cpu::now(&pids, postmaster));
    stop.store(true, Ordering::Relaxed);
    let loaded = watcher
        .join()
        .map_err(|_| anyhow::anyhow!("the who thread panicked"))??;
    outcome.who_loaded = queries(loaded);
    progress(&format!(
        "mixed rounds sent in {:.1} s",
        outcome.mixed.elapsed.as_secs_f64()
    ));

    // Phase 3, between two counts.
    outcome.before_quiet = backend.rows()?;
    barrier.wait();
    let t = Instant::now();
    let c = Cpu::now(&pids, postmaster);
    barrier.wait();
    outcome.quiet.elapsed = t.elapsed();
    cpu[2] = c.until(Cpu::now(&pids, postmaster));
    outcome.after_quiet = backend.rows()?;
    progress(&format!(
        "quiet rounds sent in {:.1} s",
        outcome.quiet.elapsed.as_secs_f64()
    ));

    let mut tallies = (Tally::default(), Tally::default(), Tally::default());
    for thread in threads {
        let r = thread.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
        tallies.0.merge(r.snapshots);
        tallies.1.merge(r.mixed);
        tallies.2.merge(r.quiet);
        outcome.snapshot_listeners += r.snapshot_listeners;
        outcome.opened += r.opened;
        outcome.closed += r.closed;
        outcome.deltas += r.deltas;
        outcome.heartbeats += r.heartbeats;
        outcome.cut_short |= r.cut_short;
    }
    for ((tally, phase), cpu) in [
        (&mut tallies.0, &mut outcome.snapshots),
        (&mut tallies.1, &mut outcome.mixed),
        (&mut tallies.2, &mut outcome.quiet),
    ]
    .into_iter()
    .zip(cpu)
    {
        *phase = Phase::of(&mut tally.latencies, tally.ok, tally.failed, phase.elapsed);
        phase.cpu = cpu;
        for e in tally.errors.drain(..) {
            if outcome.errors.len() < 5 {
                outcome.errors.push(e);
            }
        }
    }

    // Queries against the loaded collector.
    let agent = http_agent();
    let idle = (0..plan.who_queries)
        .map(|_| who(&agent, &urls[0], &reader_secret))
        .collect::<anyhow::Result<Vec<_>>>()?;
    outcome.who_idle = queries(idle);
    let mut response = agent
        .get(&format!("{}/api/v1/hosts", urls[0]))
        .header("Authorization", &format!("Bearer {reader_secret}"))
        .call()?;
    let hosts: Vec<serde_json::Value> = serde_json::from_reader(response.body_mut().as_reader())?;
    outcome.hosts_up = hosts.iter().filter(|h| h["status"] == "up").count();
    outcome.hosts_listeners = hosts.iter().filter_map(|h| h["listeners"].as_u64()).sum();

    for server in servers {
        server.stop()?;
    }
    outcome.end = backend.rows()?;
    outcome.file_bytes = backend.bytes()?;
    Ok(outcome)
}

/// The report `pw-fleet` prints: one line per figure, then the checks.
pub fn report(plan: &Plan, o: &Outcome) -> String {
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    let phase = |name: &str, p: &Phase, what: &str| {
        let wall = p.elapsed.as_secs_f64().max(1e-9);
        let per = |seconds: f64| seconds * 1e6 / p.ok.max(1) as f64;
        format!(
            "{name:<28} {:>10.0} {what}/s  ({} in {:.1} s; latency p50 {}, p99 {}, max {}; {} failed)\n\
             {:<28} collector {:.0} us CPU per request ({:.2} cores), database {:.0} us ({:.2} cores), \
             simulator {:.0} us ({:.2} cores), machine busy {:.2} of {} cores\n",
            p.rate(),
            p.ok,
            p.elapsed.as_secs_f64(),
            ms(p.p50),
            ms(p.p99),
            ms(p.max),
            p.failed,
            "",
            per(p.cpu.collector),
            p.cpu.collector / wall,
            per(p.cpu.database),
            p.cpu.database / wall,
            per(p.cpu.simulator),
            p.cpu.simulator / wall,
            p.cpu.machine / wall,
            std::thread::available_parallelism().map_or(0, |n| n.get()),
        )
    };
    let store = match &plan.database {
        Database::Sqlite => "SQLite".to_owned(),
        Database::Postgres(_) => "PostgreSQL (the database's CPU: its server and live backends)".to_owned(),
    };
    let mut out = format!(
        "fleet: {} hosts x {} listeners, {} mixed rounds (1 host in {} changes per round) + {} heartbeat-only rounds, \
         {} client connections, {} collector(s) on {store}\n",
        plan.hosts,
        plan.listeners,
        plan.intervals,
        plan.change_every,
        plan.quiet_intervals,
        plan.clients,
        plan.collectors.max(1)
    );
    out += &format!(
        "bodies (gzip JSON): snapshot {} bytes, heartbeat {} bytes\n",
        o.snapshot_body, o.heartbeat_body
    );
    out += &phase("snapshots", &o.snapshots, "snapshots");
    out += &format!(
        "{:<28} {:>10.0} listeners/s\n",
        "  snapshot listeners",
        o.snapshot_listeners as f64 / o.snapshots.elapsed.as_secs_f64().max(1e-9)
    );
    out += &phase("mixed rounds (1 % deltas)", &o.mixed, "host reports");
    out += &phase("heartbeat-only rounds", &o.quiet, "host reports");
    out += &format!(
        "who --port {WHO_PORT} under ingest        p50 {}, p99 {} ({} queries, {} rows, {} bytes)\n",
        ms(o.who_loaded.p50),
        ms(o.who_loaded.p99),
        o.who_loaded.count,
        o.who_loaded.rows,
        o.who_loaded.bytes
    );
    out += &format!(
        "who --port {WHO_PORT} after the load      p50 {}, p99 {} ({} queries, {} rows)\n",
        ms(o.who_idle.p50),
        ms(o.who_idle.p99),
        o.who_idle.count,
        o.who_idle.rows
    );
    out += &format!(
        "stored: {} intervals ({} closed), {} programs, {} hosts ({} up); changes: {} snapshot listeners + {} opens + {} closes\n",
        o.end.intervals,
        o.end.closed,
        o.end.programs,
        o.end.hosts,
        o.hosts_up,
        o.snapshot_listeners,
        o.opened,
        o.closed
    );
    out += &format!(
        "database: {} bytes, {:.0} bytes per stored change\n",
        o.file_bytes,
        o.bytes_per_change()
    );
    out += &format!(
        "heartbeat-only rounds: {} rows written ({} -> {}), {} pages added ({} -> {})\n",
        o.after_quiet.total() - o.before_quiet.total(),
        o.before_quiet.total(),
        o.after_quiet.total(),
        o.after_quiet.pages - o.before_quiet.pages,
        o.before_quiet.pages,
        o.after_quiet.pages
    );
    if o.cut_short {
        out += "note: the time limit cut a phase short; the figures cover what was sent\n";
    }
    let problems = o.problems();
    if problems.is_empty() {
        out += "checks: stored rows match what was acknowledged; heartbeats wrote no row\n";
    } else {
        for p in problems {
            out += &format!("CHECK FAILED: {p}\n");
        }
    }
    out
}
