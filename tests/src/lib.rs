//! Support for the end-to-end tests: the real binaries, real listeners in
//! helper processes, real network namespaces, and `ss` to compare with.
//!
//! The binaries are built before the tests run (`tests/run.sh` does it; a
//! test never builds). A test that needs root says so and, when not root,
//! prints why it does not run that part.

pub mod browser;
pub mod fleet;
pub mod history;
pub mod hostile;
pub mod prometheus;
pub mod prune;
pub mod render;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};

use anyhow::{bail, Context};
use portwatch_common::Socket;
use serde::Deserialize;

/// Path of a workspace binary, next to the test executable's directory.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`, which tests/run.sh does)",
        path.display()
    );
    path
}

/// `given`, or the binary `name` beside this process's own; an error that
/// says how to get it when it is missing.
pub fn beside_me(given: Option<PathBuf>, name: &str) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name(name),
    };
    if !path.exists() {
        bail!(
            "{} is missing: build it (cargo build --release --bins) or give its path",
            path.display()
        );
    }
    Ok(path)
}

/// The agent binary.
pub fn agent() -> Command {
    Command::new(binary("portwatch-agent"))
}

/// Whether the tests run as root (CI does).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The inode of this process's network namespace (the host's, in CI).
pub fn own_netns() -> anyhow::Result<u64> {
    Ok(rustix::fs::stat("/proc/self/ns/net")?.st_ino)
}

/// What `pw-listen` reports once its sockets are open.
#[derive(Debug, Deserialize)]
pub struct Opened {
    /// The helper's pid.
    pub pid: u32,
    /// Pids of children sharing its sockets.
    pub children: Vec<u32>,
    /// One entry per spec, in order.
    pub sockets: Vec<OpenedSocket>,
}

/// One opened socket.
#[derive(Debug, Deserialize)]
pub struct OpenedSocket {
    /// The spec kind (`tcp4`, `udp6`, ...).
    pub spec: String,
    /// The bound port.
    pub port: u16,
}

/// A `pw-listen` process holding real sockets; closing it (drop) ends it and
/// its children.
pub struct Listeners {
    child: Child,
    stdin: Option<ChildStdin>,
    /// What it opened.
    pub opened: Opened,
}

impl Listeners {
    /// Starts `pw-listen` with `args`, optionally under a command prefix
    /// (`ip netns exec NAME`, `setpriv ...`).
    pub fn start(prefix: &[&str], args: &[&str]) -> anyhow::Result<Listeners> {
        let helper = binary("pw-listen");
        let mut command = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&helper);
                c
            }
            None => Command::new(helper),
        };
        let mut child = command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start pw-listen")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if line.is_empty() {
            let status = child.wait()?;
            bail!("pw-listen {args:?} exited before reporting ({status})");
        }
        let opened = serde_json::from_str(&line).with_context(|| format!("pw-listen said {line:?}"))?;
        Ok(Listeners { child, stdin, opened })
    }

    /// Port of the i-th socket.
    pub fn port(&self, i: usize) -> u16 {
        self.opened.sockets[i].port
    }

    /// The helper and its children, ascending.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = std::iter::once(self.opened.pid)
            .chain(self.opened.children.iter().copied())
            .collect();
        pids.sort_unstable();
        pids
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// Runs the agent with `args` and returns its output; panics with both
/// streams when it cannot be run.
pub fn run_agent(args: &[&str]) -> Output {
    agent()
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run portwatch-agent {args:?}: {e}"))
}

/// `portwatch-agent scan --json ARGS`, parsed; panics with stderr on failure.
pub fn scan_json(args: &[&str]) -> Vec<Socket> {
    let mut all = vec!["scan", "--json"];
    all.extend_from_slice(args);
    let out = run_agent(&all);
    assert!(
        out.status.success(),
        "scan {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("scan --json output does not parse: {e}"))
}

/// The sockets in `sockets` on `port`.
pub fn on_port(sockets: &[Socket], port: u16) -> Vec<&Socket> {
    sockets.iter().filter(|s| s.local_port == port).collect()
}

/// The pids holding a socket, ascending.
pub fn pids_of(socket: &Socket) -> Vec<u32> {
    let mut pids: Vec<u32> = socket.processes.iter().map(|p| p.pid).collect();
    pids.sort_unstable();
    pids
}

/// A socket as both `ss -Htulpn` and the agent can describe it:
/// (proto, address, port, pids).
pub type Key = (String, String, u16, Vec<u32>);

/// The agent's sockets as comparison keys. `ss` prints an IPv6 wildcard that
/// also accepts IPv4 as `*`, so such sockets are keyed `*` here too.
pub fn keys_of_scan(sockets: &[Socket]) -> BTreeSet<Key> {
    sockets
        .iter()
        .map(|s| {
            let addr = if s.dual_stack {
                "*".to_owned()
            } else {
                s.local_addr.to_string()
            };
            (s.proto.as_str().to_owned(), addr, s.local_port, pids_of(s))
        })
        .collect()
}

/// Parses `ss -Htulpn` output into comparison keys. Lines look like
/// `tcp LISTEN 0 128 [::ffff:127.0.0.1]%lo:22 [::]:* users:(("sshd",pid=812,fd=3),...)`.
pub fn keys_of_ss(text: &str) -> anyhow::Result<BTreeSet<Key>> {
    let mut keys = BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(proto), Some(local)) = (fields.first(), fields.get(4)) else {
            bail!("unexpected ss line: {line}");
        };
        let (addr, port) = local.rsplit_once(':').with_context(|| format!("no port in {local}"))?;
        let addr = addr.split('%').next().unwrap_or(addr);
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port.parse().with_context(|| format!("bad port in {line}"))?;
        let mut pids: Vec<u32> = line
            .split("pid=")
            .skip(1)
            .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
            .collect();
        pids.sort_unstable();
        pids.dedup();
        keys.insert(((*proto).to_owned(), addr.to_owned(), port, pids));
    }
    Ok(keys)
}

/// Where a test's collector keeps its history: the end-to-end history,
/// outage, kill -9 and alert tests run on each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in the test's directory.
    Sqlite,
    /// A schema of its own on the PostgreSQL server `tests/run.sh` starts.
    Postgres,
}

/// A test's database, kept (and, for PostgreSQL, dropped) with the test.
pub struct TestDb {
    /// What `--db` is given: the file, or the `postgresql://` URL.
    pub db: PathBuf,
    _schema: Option<portwatch_fixtures::PostgresSchema>,
}

impl TestDb {
    /// A new, empty database of `backend` (a SQLite file in `dir`).
    pub fn new(backend: Backend, dir: &Path) -> TestDb {
        match backend {
            Backend::Sqlite => TestDb {
                db: dir.join("collector.db"),
                _schema: None,
            },
            Backend::Postgres => {
                let schema = portwatch_fixtures::PostgresSchema::fresh();
                TestDb {
                    db: PathBuf::from(&schema.url),
                    _schema: Some(schema),
                }
            }
        }
    }
}

impl TestDb {
    /// What `sql` prints (`psql`, unaligned), on a PostgreSQL database; `None` on SQLite.
    pub fn psql(&self, sql: &str) -> Option<String> {
        self._schema.as_ref().map(|schema| schema.psql(sql))
    }
}

/// One `#[test]` per backend for each `fn name(backend: Backend)` listed:
/// `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn sqlite() {
                    super::$name($crate::Backend::Sqlite)
                }
                #[test]
                fn postgres() {
                    super::$name($crate::Backend::Postgres)
                }
            }
        )*
    };
}

/// A running `portwatch-collector serve` on loopback, killed on drop.
pub struct Collector {
    child: Child,
    /// Its base URL.
    pub url: String,
    /// Its database file.
    pub db: PathBuf,
}

impl Collector {
    /// Starts a collector on `db`, on `port` (0: any free port), and waits
    /// for it to say where it listens.
    pub fn start(db: &std::path::Path, port: u16) -> anyhow::Result<Collector> {
        let listen = format!("127.0.0.1:{port}");
        Collector::serve(
            db,
            &["--listen".as_ref(), listen.as_ref(), "--db".as_ref(), db.as_os_str()],
        )
    }

    /// Starts `portwatch-collector serve ARGS` (whose database is `db`) and
    /// waits for it to say where it listens.
    pub fn serve(db: &std::path::Path, args: &[&std::ffi::OsStr]) -> anyhow::Result<Collector> {
        Collector::serve_in(&[], db, args)
    }

    /// [`Collector::serve`] run by the command `prefix` (`ip netns exec NS`:
    /// a collector in a network namespace; `ip` execs it, so the child is the
    /// collector itself).
    pub fn serve_in(prefix: &[&str], db: &std::path::Path, args: &[&std::ffi::OsStr]) -> anyhow::Result<Collector> {
        let mut child = prefixed(prefix, binary("portwatch-collector"))
            .arg("serve")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start portwatch-collector")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Some(url) = line.trim().strip_prefix("portwatch-collector listening on ") else {
            let status = child.wait()?;
            bail!("collector did not start ({status}): {line:?}");
        };
        Ok(Collector {
            child,
            url: url.to_owned(),
            db: db.to_owned(),
        })
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0)
    }

    /// Its process id (for /proc/PID/status and /proc/PID/fd).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends it `signal` (SIGHUP to reload, say).
    pub fn signal(&self, signal: rustix::process::Signal) -> anyhow::Result<()> {
        Ok(rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            signal,
        )?)
    }

    /// Kills it with SIGKILL (no chance to clean up) and waits for it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops it with SIGTERM (a clean stop, as systemd does) and waits for it; its exit status.
    pub fn terminate(mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.signal(rustix::process::Signal::TERM)?;
        Ok(self.child.wait()?)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `program` run by the command `prefix` (itself when `prefix` is empty).
pub fn prefixed(prefix: &[&str], program: PathBuf) -> Command {
    match prefix.split_first() {
        None => Command::new(program),
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
    }
}

/// `portwatch-collector token create ARGS --db DB`: the secret.
pub fn create_token(db: &std::path::Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(binary("portwatch-collector"))
        .args(["token", "create"])
        .args(args)
        .arg("--db")
        .arg(db)
        .output()?;
    if !out.status.success() {
        bail!("token create {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// Writes `secret` to `file` with `mode` (a token file, as an operator makes one).
pub fn write_token_file(file: &std::path::Path, secret: &str, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(file, format!("{secret}\n"))?;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// A running `portwatch-agent run`, killed on drop.
pub struct Agent {
    child: Child,
    /// Its log so far, when it was started with [`Agent::start_logged`].
    log: Option<std::sync::Arc<std::sync::Mutex<String>>>,
}

impl Agent {
    /// Starts an agent reporting as `host` to `collector` every `interval`, spooling in `spool`.
    pub fn start(
        collector: &str,
        token: &str,
        host: &str,
        interval: &str,
        spool: &std::path::Path,
    ) -> anyhow::Result<Agent> {
        Agent::start_with(collector, token, host, interval, spool, &[])
    }

    /// [`Agent::start`] with more `run` flags.
    pub fn start_with(
        collector: &str,
        token: &str,
        host: &str,
        interval: &str,
        spool: &std::path::Path,
        extra: &[&str],
    ) -> anyhow::Result<Agent> {
        Agent::spawn(
            &["--token".as_ref(), token.as_ref()],
            collector,
            host,
            interval,
            spool,
            extra,
        )
    }

    /// [`Agent::start_with`], keeping what it logs (still copied to the
    /// test's stderr) for [`Agent::log`].
    pub fn start_logged(
        collector: &str,
        token: &str,
        host: &str,
        interval: &str,
        spool: &std::path::Path,
        extra: &[&str],
    ) -> anyhow::Result<Agent> {
        Agent::start_logged_at(None, collector, token, host, interval, spool, extra)
    }

    /// [`Agent::start_logged`], logging at `level` (`PORTWATCH_LOG`, e.g.
    /// `portwatch_agent=debug`) rather than the tests' default.
    pub fn start_logged_at(
        level: Option<&str>,
        collector: &str,
        token: &str,
        host: &str,
        interval: &str,
        spool: &std::path::Path,
        extra: &[&str],
    ) -> anyhow::Result<Agent> {
        let env = level.map(|l| format!("PORTWATCH_LOG={l}"));
        let prefix: Vec<&str> = match &env {
            Some(e) => vec!["env", e],
            None => Vec::new(),
        };
        let mut agent = Agent::spawn_with(
            &prefix,
            &["--token".as_ref(), token.as_ref()],
            collector,
            host,
            interval,
            spool,
            extra,
            Stdio::piped(),
        )?;
        let stderr = agent.child.stderr.take().context("no stderr")?;
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("{line}");
                if let Ok(mut log) = kept.lock() {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
        agent.log = Some(log);
        Ok(agent)
    }

    /// What it logged so far (empty unless started with [`Agent::start_logged`]).
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|log| log.lock().ok().map(|log| log.clone()))
            .unwrap_or_default()
    }

    /// [`Agent::start_with`] reading its token from `token_file` (`--token-file`).
    pub fn start_with_token_file(
        collector: &str,
        token_file: &std::path::Path,
        host: &str,
        interval: &str,
        spool: &std::path::Path,
        extra: &[&str],
    ) -> anyhow::Result<Agent> {
        Agent::spawn(
            &["--token-file".as_ref(), token_file.as_os_str()],
            collector,
            host,
            interval,
            spool,
            extra,
        )
    }

    /// [`Agent::start_with`] run by the command `prefix` (`ip netns exec NS`:
    /// an agent whose own network namespace, its host's, is NS).
    pub fn start_in(
        prefix: &[&str],
        collector: &str,
        token: &str,
        host: &str,
        interval: &str,
        spool: &std::path::Path,
        extra: &[&str],
    ) -> anyhow::Result<Agent> {
        Agent::spawn_with(
            prefix,
            &["--token".as_ref(), token.as_ref()],
            collector,
            host,
            interval,
            spool,
            extra,
            Stdio::inherit(),
        )
    }

    fn spawn(
        token: &[&std::ffi::OsStr],
        collector: &str,
        host: &str,
        interval: &str,
        spool: &std::path::Path,
        extra: &[&str],
    ) -> anyhow::Result<Agent> {
        Agent::spawn_with(&[], token, collector, host, interval, spool, extra, Stdio::inherit())
    }

    /// `portwatch-agent run`, run by the command `prefix` (none: itself).
    #[allow(clippy::too_many_arguments)]
    fn spawn_with(
        prefix: &[&str],
        token: &[&std::ffi::OsStr],
        collector: &str,
        host: &str,
        interval: &str,
        spool: &std::path::Path,
        extra: &[&str],
        stderr: Stdio,
    ) -> anyhow::Result<Agent> {
        let child = prefixed(prefix, binary("portwatch-agent"))
            .args(["run", "--collector", collector])
            .args(token)
            .args(["--host-name", host, "--interval", interval])
            .env_remove("PORTWATCH_TOKEN")
            .arg("--spool-dir")
            .arg(spool)
            .args(extra)
            .env(
                "PORTWATCH_LOG",
                std::env::var("PW_TEST_AGENT_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("cannot start portwatch-agent run")?;
        Ok(Agent { child, log: None })
    }

    /// Kills it with SIGKILL and waits for it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for it to exit; its exit status.
    pub fn terminate(mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
        Ok(self.child.wait()?)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `portwatch --collector URL --token T --json ARGS`, parsed.
pub fn portwatch_json(collector: &str, token: &str, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(binary("portwatch"))
        .args(["--collector", collector, "--token", token, "--json"])
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!("portwatch {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `limit`
/// (a bound against hanging, not a timing assertion).
pub fn eventually<T>(limit: std::time::Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A directory for one test under the system's temp dir, removed on drop.
pub struct TempDir {
    /// Its path.
    pub path: PathBuf,
}

impl TempDir {
    /// Creates `pw-<tag>-<pid>-<n>`, empty: `n` counts the directories this
    /// process made, so that tests of one tag running at once (a test on each
    /// backend) get one each.
    pub fn new(tag: &str) -> anyhow::Result<TempDir> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("pw-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A network namespace made with `ip netns add` for one test, deleted on drop.
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
}

impl Netns {
    /// Creates it with its loopback up. Needs root.
    pub fn create(tag: &str) -> anyhow::Result<Netns> {
        let name = format!("pwtest-{tag}-{}", std::process::id());
        let ok = Command::new("ip").args(["netns", "add", &name]).status()?.success();
        if !ok {
            bail!("ip netns add {name} failed");
        }
        let ns = Netns { name };
        let ok = Command::new("ip")
            .args(["-n", &ns.name, "link", "set", "lo", "up"])
            .status()?
            .success();
        if !ok {
            bail!("cannot bring lo up in {}", ns.name);
        }
        Ok(ns)
    }

    /// The namespace inode, as the agent reports it in `netns`.
    pub fn inode(&self) -> anyhow::Result<u64> {
        Ok(rustix::fs::stat(format!("/run/netns/{}", self.name))?.st_ino)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ss_lines_parse_into_keys() {
        let text = "tcp   LISTEN 0      128          0.0.0.0:22        0.0.0.0:*    users:((\"sshd\",pid=812,fd=3))\n\
                    tcp   LISTEN 0      128                *:8080            *:*    users:((\"nginx\",pid=9,fd=6),(\"nginx\",pid=8,fd=6))\n\
                    udp   UNCONN 0      0      127.0.0.53%lo:53        0.0.0.0:*    users:((\"resolved\",pid=77,fd=13))\n\
                    tcp   LISTEN 0      4096           [::1]:631          [::]:*\n";
        let keys = keys_of_ss(text).unwrap();
        assert!(keys.contains(&("tcp".into(), "0.0.0.0".into(), 22, vec![812])));
        assert!(keys.contains(&("tcp".into(), "*".into(), 8080, vec![8, 9])));
        assert!(keys.contains(&("udp".into(), "127.0.0.53".into(), 53, vec![77])));
        assert!(keys.contains(&("tcp".into(), "::1".into(), 631, vec![])));
        assert_eq!(keys.len(), 4);
    }
}
