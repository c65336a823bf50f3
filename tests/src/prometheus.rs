//! Prometheus' own tools for the tests: a real Alertmanager and a real
//! Prometheus server (Debian's `prometheus-alertmanager` and `prometheus`
//! packages, which `tests/run.sh` installs when missing), each started on
//! 127.0.0.1 on a free port with a throwaway config and storage directory,
//! and killed on drop; and `promtool`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

/// The path of `program`, or an error naming the Debian package to install.
pub fn require(program: &str, package: &str) -> anyhow::Result<PathBuf> {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let path = Path::new(dir).join(program);
        if path.is_file() {
            return Ok(path);
        }
    }
    bail!("{program} is missing: install it (apt-get install {package}; tests/run.sh does when run as root)")
}

/// A TCP port on 127.0.0.1 nothing listens on now (bound, then released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A GET of `url`, its JSON.
fn get_json(url: &str) -> anyhow::Result<Value> {
    let mut response = ureq::get(url).call().with_context(|| format!("GET {url}"))?;
    Ok(response.body_mut().read_json()?)
}

/// Waits until `url` answers 200, or `child` exits (an error with what it said), for at most a minute.
fn wait_ready(child: &mut Child, url: &str, what: &str) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited at start ({status}); its output is above");
        }
        if ureq::get(url).call().is_ok_and(|r| r.status() == 200) {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("{what} did not get ready at {url} within a minute");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running `prometheus-alertmanager`, killed on drop.
pub struct Alertmanager {
    child: Child,
    /// Its base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    /// Its port.
    pub port: u16,
}

impl Alertmanager {
    /// Starts one on `port` (0: a free one) with its config and storage under `dir`, clustering off,
    /// `resolve_timeout` as given; waits until it is ready.
    pub fn start(dir: &Path, port: u16, resolve_timeout: &str) -> anyhow::Result<Alertmanager> {
        let program = require("prometheus-alertmanager", "prometheus-alertmanager")?;
        let port = match port {
            0 => free_port()?,
            port => port,
        };
        std::fs::create_dir_all(dir.join("data"))?;
        let config = dir.join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  resolve_timeout: {resolve_timeout}\nroute:\n  receiver: nobody\n  group_wait: 1s\n\
                 receivers:\n  - name: nobody\n"
            ),
        )?;
        let mut child = Command::new(program)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // No gossip: it would listen on 0.0.0.0:9094.
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start prometheus-alertmanager")?;
        let url = format!("http://127.0.0.1:{port}");
        if let Err(e) = wait_ready(&mut child, &format!("{url}/-/ready"), "prometheus-alertmanager") {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        Ok(Alertmanager { child, url, port })
    }

    /// Its unresolved alerts (`GET /api/v2/alerts`: active, silenced, inhibited; never resolved ones).
    pub fn alerts(&self) -> anyhow::Result<Vec<Value>> {
        let alerts = get_json(&format!("{}/api/v2/alerts", self.url))?;
        Ok(alerts.as_array().cloned().unwrap_or_default())
    }

    /// Kills it (SIGKILL: it keeps no alert across a restart anyway) and waits for it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `prometheus` server scraping one target every second, killed on drop.
pub struct Prometheus {
    child: Child,
    /// Its base URL.
    pub url: String,
}

impl Prometheus {
    /// Starts one under `dir` scraping `target` (`127.0.0.1:PORT`, path `/metrics`) as job `job`, with
    /// the bearer token in `token_file`, evaluating the alerting rules in `rules`; waits until it is ready.
    pub fn start(dir: &Path, job: &str, target: &str, token_file: &Path, rules: &Path) -> anyhow::Result<Prometheus> {
        let program = require("prometheus", "prometheus")?;
        let port = free_port()?;
        std::fs::create_dir_all(dir.join("data"))?;
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: {job}\n    authorization:\n      credentials_file: {}\n    \
                 static_configs:\n      - targets: ['{target}']\n",
                rules.display(),
                token_file.display()
            ),
        )?;
        let mut child = Command::new(program)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start prometheus")?;
        let url = format!("http://127.0.0.1:{port}");
        if let Err(e) = wait_ready(&mut child, &format!("{url}/-/ready"), "prometheus") {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        Ok(Prometheus { child, url })
    }

    /// Its scrape targets (`GET /api/v1/targets`: `data.activeTargets`).
    pub fn targets(&self) -> anyhow::Result<Vec<Value>> {
        let v = get_json(&format!("{}/api/v1/targets", self.url))?;
        Ok(v["data"]["activeTargets"].as_array().cloned().unwrap_or_default())
    }

    /// Its alerting rules (`GET /api/v1/rules`: every group's `rules`).
    pub fn rules(&self) -> anyhow::Result<Vec<Value>> {
        let v = get_json(&format!("{}/api/v1/rules", self.url))?;
        let groups = v["data"]["groups"].as_array().cloned().unwrap_or_default();
        Ok(groups
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect())
    }

    /// The instant vector `query` evaluates to now (`data.result`).
    pub fn query(&self, query: &str) -> anyhow::Result<Vec<Value>> {
        let mut response = ureq::get(format!("{}/api/v1/query", self.url))
            .query("query", query)
            .call()
            .with_context(|| format!("query {query}"))?;
        let v: Value = response.body_mut().read_json()?;
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `promtool ARGS` with `stdin` as its input: its exit status and what it printed (stdout and stderr).
pub fn promtool(args: &[&str], stdin: &[u8]) -> anyhow::Result<(bool, String)> {
    let program = require("promtool", "prometheus")?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start promtool")?;
    let mut input = child.stdin.take().context("no stdin")?;
    input.write_all(stdin)?;
    drop(input);
    let out = child.wait_with_output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), said))
}
