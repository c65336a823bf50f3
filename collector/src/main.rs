//! `portwatch-collector`: the central history service and its token admin.

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use axum_server::tls_rustls::RustlsConfig;
use clap::{Parser, Subcommand};
use jiff::Timestamp;
use portwatch_collector::alert::evaluate::Notifier;
use portwatch_collector::alert::sink;
use portwatch_collector::api::{self, AppState};
use portwatch_collector::config::{self, Config, Database};
use portwatch_collector::edge;
use portwatch_collector::lease::{self, Keeper};
use portwatch_collector::metrics::{self, Metrics};
use portwatch_collector::store::postgres::PostgresStore;
use portwatch_collector::store::sqlite::SqliteStore;
use portwatch_collector::store::{Store, StoreError, TokenRow};
use portwatch_collector::threat::{self, Lists};
use portwatch_collector::token;
use portwatch_collector::{probe, pruner, retention};
use portwatch_common::wire::valid_host_name;
use portwatch_model::Role;

/// Keep every host's listener history and answer questions about it.
#[derive(Debug, Parser)]
#[command(name = "portwatch-collector", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Serve(ServeArgs),
    /// Manage the tokens agents and operators authenticate with.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Delete now what `[retention]` lets go (a running collector does it every hour by itself).
    ///
    /// Closed listener intervals, resolved alerts with their outbox events (once every sink has delivered them),
    /// old baseline log entries if `baseline_log` is set, and process identities no interval names any more. In
    /// small batches, so a collector serving the same database goes on taking reports meanwhile.
    Prune {
        /// Only say what would be deleted.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        where_: Where,
    },
    /// The view from outside: connect from here to the TCP listeners hosts reported, and record what answered.
    ///
    /// An active scan: it runs only with `[probe] enabled = true` in the config, to be set once the security team
    /// responsible for the hosts has authorized it (`--dry-run` only prints the plan and always works). Exactly
    /// the listeners beyond loopback in each host's own network namespace are tried, at the addresses its agent
    /// reported as its own (a wildcard listener at each of them), never a range; paced by `[probe] rate`,
    /// `concurrency` and `timeout`. Each place's verdict (reachable, unreachable, not-probed) replaces the
    /// host's previous ones in the store; drift judges them at its next evaluation.
    Probe {
        /// Print what would be tried (and what not, with why), connect to nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only hosts matching this glob (`*`, `?`); repeatable, any may match (default: every host `[probe]
        /// hosts` selects).
        #[arg(long = "host", value_name = "GLOB")]
        hosts: Vec<String>,
        /// Print JSON: one object per host.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        where_: Where,
    },
    /// Hosts in the history.
    #[command(subcommand)]
    Host(HostCommand),
    /// The lists of suspicious addresses ([[threat.list]] in the config).
    #[command(subcommand)]
    Threat(ThreatCommand),
}

#[derive(Debug, Subcommand)]
enum ThreatCommand {
    /// Load the configured lists and say, for each address, which lists hold it and by which entry.
    ///
    /// An address is checked against `[threat] allow` first: an allowed one is reported as such (with the
    /// entries it hides). IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are looked up as IPv4. The lists' load
    /// (entries, bad lines with their numbers) is said on stderr. Exits 1 when a list cannot be loaded.
    Check {
        /// Addresses to look up (IPv4 or IPv6).
        #[arg(required = true, value_name = "ADDR")]
        addrs: Vec<std::net::IpAddr>,
        /// Print JSON: one object per address.
        #[arg(long)]
        json: bool,
        /// Configuration file (default: /etc/portwatch/collector.toml if it exists).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum HostCommand {
    /// Remove a decommissioned host for good: its history, staged snapshot parts, alerts (and their outbox
    /// events), its agent tokens; the ports it saw first fleet-wide are credited to the next host that has them.
    ///
    /// Prefer `DELETE /api/v1/hosts/NAME` (an admin token) while a collector serves the database: it forgets
    /// the host's name at once. Run from here, stop the collector first, or restart it after. If the host's
    /// agent still reports, its next batch starts a new, empty host (and is refused once its token, deleted
    /// here, is no longer trusted).
    Forget {
        /// The host's name, as `portwatch hosts` shows it.
        name: String,
        #[command(flatten)]
        where_: Where,
    },
}

/// Serve the HTTP API (ingest from agents, queries from operators) until SIGINT or SIGTERM.
#[derive(Debug, clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    where_: Where,
    /// Address to listen on (default 127.0.0.1:7878; use 0.0.0.0:7878 to accept remote agents).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Also run a portwatch-agent on this machine reporting to this collector (the quick start): its agent token
    /// and a read token for you are kept next to the database (local-agent.token, local-read.token).
    #[arg(long)]
    local_agent: bool,
    /// Scan interval of the local agent.
    #[arg(long, default_value = "10s", requires = "local_agent")]
    local_agent_interval: String,
}

/// Where the configuration and the database are (shared by every subcommand).
#[derive(Debug, Clone, clap::Args)]
struct Where {
    /// Configuration file (default: /etc/portwatch/collector.toml if it exists).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the history is: a SQLite file (default /var/lib/portwatch/collector.db), or a PostgreSQL
    /// database, postgres://USER@HOST/DB (its password in [postgres] password_file); created or
    /// migrated at start.
    #[arg(long, value_name = "PATH|URL")]
    db: Option<String>,
}

impl Where {
    /// The configuration, with `--db` applied.
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(db) = &self.db {
            config.db = Database::parse(db);
        }
        Ok(config)
    }
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print its secret on stdout (shown once; only a hash is kept).
    ///
    /// `--host NAME` makes an agent token that may write NAME's reports and read nothing;
    /// `--role read|admin --name NAME` makes an operator token.
    Create {
        /// The host an agent token writes for.
        #[arg(long, conflicts_with_all = ["role", "name"])]
        host: Option<String>,
        /// Role of an operator token.
        #[arg(long, value_enum, requires = "name")]
        role: Option<RoleArg>,
        /// Name of an operator token (unique; used to revoke it).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        where_: Where,
    },
    /// List tokens (never their secrets).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        where_: Where,
    },
    /// Replace a token by a new one, printing its secret on stdout (shown once), and let the old one work on for
    /// a while.
    ///
    /// The new token has the old one's name, role and host. The token(s) it replaces keep working for the
    /// overlap (default 24h), so that the new secret can be put in place (an agent's token_file, say) without a
    /// gap; from then on they are refused. The end is stored on the old token and checked at every request (no
    /// timer): a running collector refuses it from that time on, or at most 2 seconds after the rotation when the
    /// overlap is shorter. `token revoke NAME` ends the old and the new at once.
    Rotate {
        /// The host whose agent token is replaced (the token `agent:HOST`).
        #[arg(long, conflicts_with = "name", required_unless_present = "name")]
        host: Option<String>,
        /// The name of the token to replace (an operator token, or `agent:HOST`).
        #[arg(long)]
        name: Option<String>,
        /// How long the replaced token(s) keep working, e.g. 24h, 30m, 2s; 0s ends them now.
        #[arg(long, value_name = "DURATION", default_value = DEFAULT_OVERLAP, value_parser = parse_overlap)]
        overlap: std::time::Duration,
        #[command(flatten)]
        where_: Where,
    },
    /// Revoke a token by name (`agent:HOST` for agent tokens), with any it replaced that still work; a running
    /// collector refuses it within 2 seconds.
    Revoke {
        /// The token's name.
        name: String,
        #[command(flatten)]
        where_: Where,
    },
}

/// How long the tokens a rotation replaces keep working, unless `--overlap` says otherwise.
const DEFAULT_OVERLAP: &str = "24h";

fn parse_overlap(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration {text:?} ({e}); write it like \"24h\", \"30m\" or \"2s\""))
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    Read,
    Admin,
}

fn main() -> ExitCode {
    let cli = match portwatch_common::cli::parse::<Cli>() {
        ControlFlow::Continue(cli) => cli,
        ControlFlow::Break(code) => return code,
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portwatch-collector: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Token(command) => token_command(command),
        Command::Prune { dry_run, where_ } => prune(dry_run, &where_),
        Command::Probe {
            dry_run,
            hosts,
            json,
            where_,
        } => probe_command(dry_run, &hosts, json, &where_),
        Command::Threat(ThreatCommand::Check { addrs, json, config }) => threat_check(&addrs, json, config.as_deref()),
        Command::Host(HostCommand::Forget { name, where_ }) => {
            let store = open_store(&where_.config()?)?;
            let Some(f) = store.forget_host(&name)? else {
                bail!("no host {name:?} (see `portwatch hosts`)");
            };
            println!(
                "forgot host {name:?}: {} intervals, {} alerts ({} outbox events), {} tokens, {} snapshot parts, \
                 {} peers points; first sightings of {} ports moved to other hosts, {} dropped",
                f.intervals,
                f.alerts,
                f.alert_events,
                f.tokens,
                f.snapshot_parts,
                f.peer_points,
                f.first_seen_moved,
                f.first_seen_dropped
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `prune [--dry-run]`: what the configured retention lets go, counted or deleted now.
fn prune(dry_run: bool, where_: &Where) -> anyhow::Result<ExitCode> {
    let config = where_.config()?;
    let retention = config.retention.retention();
    let store = open_store(&config)?;
    let plan = retention::plan(Timestamp::now(), &retention);
    let show = |t: Option<Timestamp>| t.map_or_else(|| "kept forever".to_owned(), |t| format!("before {t}"));
    println!("history closed {}", show(plan.intervals_closed_before));
    println!("alerts resolved {}", show(plan.alerts_resolved_before));
    println!("baseline log {}", show(plan.baseline_log_before));
    let (verb, p) = if dry_run {
        ("would delete", store.prune_count(&plan)?)
    } else {
        let pass = pruner::prune_pass(store.as_ref(), &plan, pruner::BATCH_ROWS, pruner::BATCH_PAUSE)?;
        ("deleted", pass.pruned)
    };
    println!(
        "{verb}: {} intervals, {} programs, {} alerts, {} alert events, {} baseline log entries",
        p.intervals, p.programs, p.alerts, p.alert_events, p.baseline_log
    );
    if p.alerts_held > 0 {
        println!(
            "kept: {} expired alerts whose changes a sink has not delivered yet (a sink down, or one removed from the \
             config that still has a place in the outbox)",
            p.alerts_held
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `probe [--dry-run] [--host GLOB] [--json]`: the plan, or one probe of the fleet and its verdicts.
fn probe_command(dry_run: bool, only: &[String], json: bool, where_: &Where) -> anyhow::Result<ExitCode> {
    let config = where_.config()?;
    if !dry_run && !config.probe.enabled {
        bail!(
            "probing is off: it is an active scan of the fleet, run only with [probe] enabled = true in the config, \
             once the security team responsible for the hosts has authorized it (--dry-run shows what it would try)"
        );
    }
    let settings = config.probe.settings();
    let store = open_store(&config)?;
    if dry_run {
        let plans = probe::fleet_plans(store.as_ref(), &settings, only, Timestamp::now())?;
        if json {
            for p in &plans {
                println!("{}", serde_json::to_string(p)?);
            }
        } else {
            print!("{}", probe_plan_text(&plans));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let results = runtime.block_on(probe::probe_fleet(store, &settings, only))?.hosts;
    if json {
        for (p, verdicts) in &results {
            println!("{}", serde_json::json!({ "host": p.host, "verdicts": verdicts }));
        }
    } else {
        for (p, verdicts) in &results {
            for v in verdicts {
                println!(
                    "{}\t{} {}\t{}\t{}",
                    p.host,
                    v.place.proto,
                    std::net::SocketAddr::new(v.place.addr, v.place.port),
                    v.state,
                    v.detail
                );
            }
        }
        let connects: usize = results.iter().map(|(p, _)| p.connects()).sum();
        eprintln!("probed {} hosts: {connects} connects", results.len());
    }
    Ok(ExitCode::SUCCESS)
}

/// The plan as text: each place to try and where, then each not tried and why.
fn probe_plan_text(plans: &[probe::HostPlan]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for p in plans {
        for t in &p.probes {
            let to: Vec<String> = t.targets.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                out,
                "{}\t{} {}\ttry {}",
                p.host,
                t.place.proto,
                std::net::SocketAddr::new(t.place.addr, t.place.port),
                to.join(" ")
            );
        }
        for s in &p.skipped {
            let _ = writeln!(
                out,
                "{}\t{} {}\tnot probed: {}",
                p.host,
                s.place.proto,
                std::net::SocketAddr::new(s.place.addr, s.place.port),
                s.why
            );
        }
    }
    out
}

/// The store of `config`'s database, judging agents' clocks by its `[clock]`.
fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    match &config.db {
        Database::Sqlite(db) => {
            if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            }
            Ok(Arc::new(SqliteStore::open_with_clock(db, config.clock.limits())?))
        }
        Database::Postgres(url) => Ok(Arc::new(PostgresStore::open(
            &config.postgres.options(url),
            config.clock.limits(),
        )?)),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    portwatch_common::log::init()?;
    let mut config = args.where_.config()?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if args.local_agent && config.tls.is_some() {
        bail!(
            "--local-agent speaks plain HTTP over loopback, but the config has [tls]: serve without [tls] for the \
             quick start, or run a separate `portwatch-agent run` with ca_file set"
        );
    }
    let mut edges = config.http.limits();
    match edge::raise_fd_limit() {
        Ok(fds) => {
            let show = |n: Option<u64>| n.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
            match fds.raised_from {
                Some(from) => {
                    tracing::info!(soft = %show(fds.soft), from, "raised the limit of open files to the hard limit")
                }
                None => tracing::info!(soft = %show(fds.soft), hard = %show(fds.hard), "limit of open files"),
            }
            let allowed = fds.connections(edges.max_connections);
            if allowed < edges.max_connections {
                tracing::warn!(
                    max_connections = edges.max_connections,
                    allowed,
                    open_files = %show(fds.soft),
                    "[http] max_connections is over what the limit of open files leaves; raise LimitNOFILE"
                );
                edges.max_connections = allowed;
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot raise the limit of open files"),
    }
    let threat_metrics = metrics::ThreatMetrics::default();
    let lists = Arc::new(Lists::load(
        &config.threat.allow,
        &config.threat.list,
        threat_metrics.clone(),
    )?);
    let store = open_store(&config)?;
    // Startup grace is the fleet's: none when another collector serves the
    // database. Judged before this collector says it listens: one that served
    // until after that line (a supervisor's or a test's cue) counts as serving.
    let mut policy = config.policy();
    let holders = store.live_holders(Timestamp::now())?;
    if lease::others_serving(&holders, &lease::this_host(), |pid| {
        Path::new(&format!("/proc/{pid}")).exists()
    }) {
        tracing::info!(
            ?holders,
            "another collector serves the database: hosts get no startup grace"
        );
        policy.startup_grace = std::time::Duration::ZERO;
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Before the collector says it listens: a SIGHUP from then on reloads, never kills.
        if !lists.is_empty() {
            let hangup = lists
                .watch(config.threat.check_every)
                .context("cannot start the thread that reloads threat lists")?;
            let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
            tokio::spawn(reload_threat_lists_on_sighup(hangup, hangups));
        }
        let tls = match &config.tls {
            Some(tls) => Some(load_tls(tls).await?),
            None => None,
        };
        let listener = edge::bind(config.listen)
            .with_context(|| format!("cannot listen on {} (in use? try another --listen)", config.listen))?;
        let local = listener.local_addr()?;
        let url = format!("{}://{local}", if tls.is_some() { "https" } else { "http" });
        // Named once the port is known (`--listen 127.0.0.1:0` takes any).
        let collector = config
            .metrics
            .collector
            .clone()
            .unwrap_or_else(|| metrics::default_collector_name(local.port()));
        let metrics = Arc::new(Metrics::named(&collector, threat_metrics));
        tracing::info!(%url, db = %config.db, %collector, "collector listening");
        println!("portwatch-collector listening on {url}");
        let local_agent = match args.local_agent {
            true => Some(start_local_agent(store.as_ref(), &args, &config, local)?),
            false => None,
        };
        let handle = axum_server::Handle::new();
        let stopping = handle.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            // The local agent goes first, so its last shipment still finds the collector.
            if let Some(mut agent) = local_agent {
                let _ = tokio::task::spawn_blocking(move || stop_child(&mut agent)).await;
            }
            stopping.graceful_shutdown(Some(SHUTDOWN_GRACE));
        });
        let sinks = sink::Sinks {
            webhooks: &config.alerts.webhook,
            syslog: config.alerts.syslog.as_ref(),
            alertmanagers: &config.alerts.alertmanager,
        };
        // What must run once among collectors sharing the database runs under a lease (lease.rs).
        let keeper = Keeper::new(store.clone(), lease::holder_name());
        let wakers = sink::start(store.clone(), sinks, &metrics.sinks(), &|name| keeper.lease(name))
            .map_err(anyhow::Error::msg)?;
        let (state, alerts) = AppState::with_alerts(
            store,
            policy,
            config.alerts.sweep_every,
            Notifier::new(wakers),
            keeper.lease(lease::SWEEP),
            lists.clone(),
        );
        tokio::spawn(alerts);
        let state = state
            .metrics(metrics)
            .metrics_public(config.metrics.public)
            .ingest_limits(config.ingest_limits())
            .dashboard(config.dashboard.settings(tls.is_some()))
            .retention(config.retention.retention());
        let metrics = state.metrics.clone();
        if config.probe.enabled {
            tokio::spawn(probe::every(
                state.store.clone(),
                config.probe.settings(),
                config.probe.every,
                keeper.lease(lease::PROBE),
                metrics.clone(),
            ));
        }
        tokio::spawn(pruner::run(
            state.store.clone(),
            config.retention.retention(),
            metrics.clone(),
            keeper.lease(lease::PRUNE),
        ));
        keeper.start().context("cannot start the thread that renews leases")?;
        if let Some(rustls) = &tls {
            tokio::spawn(reload_tls_on_sighup(rustls.clone(), config.tls.clone()));
        }
        let store = state.store.clone();
        let served = edge::serve(listener, tls, api::router(state), &edges, metrics, handle).await;
        // No batch comes any more: what the store keeps of heartbeats is written before the process ends.
        match tokio::task::spawn_blocking(move || store.flush_heartbeats()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot write the heartbeats kept in memory before stopping"),
            Err(e) => tracing::warn!(error = %e, "the last flush of heartbeats failed"),
        }
        // Another collector sharing the database takes over at once.
        let releasing = keeper.clone();
        let _ = tokio::task::spawn_blocking(move || releasing.release_all()).await;
        served.context("server failed")?;
        tracing::info!("collector stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The token in `file` if it is still valid, else a new one (saved there, mode 0600).
fn local_token(store: &dyn Store, file: &Path, name: &str, role: Role, host: Option<&str>) -> anyhow::Result<String> {
    if let Ok(secret) = std::fs::read_to_string(file) {
        let secret = secret.trim().to_owned();
        if matches!(store.token_by_hash(&token::hash(&secret))?, Some(t) if t.revoked_at.is_none() && t.role == role) {
            return Ok(secret);
        }
    }
    let secret = token::generate().context("cannot read the system's random source")?;
    let now = Timestamp::now();
    store.create_token(&TokenRow {
        name: format!("{name}-{}", now.as_second()),
        role,
        host: host.map(str::to_owned),
        hash: token::hash(&secret),
        created_at: now,
        revoked_at: None,
    })?;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("cannot write {}", file.display()))?;
    std::io::Write::write_all(&mut f, format!("{secret}\n").as_bytes())?;
    Ok(secret)
}

/// Starts `portwatch-agent run` (the binary beside this one) reporting to `url` as this machine.
/// It connects over loopback, in plain HTTP.
fn start_local_agent(
    store: &dyn Store,
    args: &ServeArgs,
    config: &Config,
    local: SocketAddr,
) -> anyhow::Result<std::process::Child> {
    let url = match local.is_ipv6() {
        true => format!("http://[::1]:{}", local.port()),
        false => format!("http://127.0.0.1:{}", local.port()),
    };
    let url = url.as_str();
    // Beside the SQLite file; in the working directory for a PostgreSQL database.
    let dir = config
        .db
        .sqlite_file()
        .and_then(Path::parent)
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| valid_host_name(h))
        .unwrap_or_else(|| "localhost".to_owned());
    let agent_token = local_token(
        store,
        &dir.join("local-agent.token"),
        "local-agent",
        Role::Agent,
        Some(&host),
    )?;
    let read_file = dir.join("local-read.token");
    local_token(store, &read_file, "local-read", Role::Read, None)?;
    let exe = std::env::current_exe()?.with_file_name("portwatch-agent");
    let child = std::process::Command::new(&exe)
        .args([
            "run",
            "--collector",
            url,
            "--host-name",
            &host,
            "--interval",
            &args.local_agent_interval,
        ])
        .arg("--spool-dir")
        .arg(dir.join("local-spool"))
        .env("PORTWATCH_TOKEN", agent_token)
        .spawn()
        .with_context(|| {
            format!(
                "cannot start the local agent {} (build it: cargo build --release --workspace)",
                exe.display()
            )
        })?;
    println!(
        "local agent (pid {}) reports this machine as {host:?}; ask it, for example:",
        child.id()
    );
    println!(
        "  PORTWATCH_TOKEN=$(cat {}) portwatch --collector {url} who --port 22",
        read_file.display()
    );
    if config.dashboard.enabled {
        println!(
            "  or open the dashboard, {url}/, and sign in with the token in {}",
            read_file.display()
        );
    }
    Ok(child)
}

/// SIGTERM, then wait.
fn stop_child(child: &mut std::process::Child) {
    let pid = rustix::process::Pid::from_child(child);
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let _ = child.wait();
}

/// How long requests in flight may take to finish once a stop is asked.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The TLS configuration from the certificate and key files, or an error naming the one that is wrong.
async fn load_tls(tls: &config::Tls) -> anyhow::Result<RustlsConfig> {
    RustlsConfig::from_pem_file(&tls.cert, &tls.key).await.with_context(|| {
        format!(
            "cannot use the TLS certificate {} with the key {} ([tls] in the config): \
             both must be readable PEM files and the key must be the certificate's",
            tls.cert.display(),
            tls.key.display()
        )
    })
}

/// Re-reads the certificate and key on every SIGHUP; a bad pair is logged and the old one kept.
async fn reload_tls_on_sighup(rustls: RustlsConfig, tls: Option<config::Tls>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Some(tls), Ok(mut hangup)) = (tls, signal(SignalKind::hangup())) else {
        return;
    };
    while hangup.recv().await.is_some() {
        match rustls.reload_from_pem_file(&tls.cert, &tls.key).await {
            Ok(()) => {
                edge::offer_http1_only(&rustls);
                tracing::info!(cert = %tls.cert.display(), "reloaded the TLS certificate");
            }
            Err(e) => tracing::error!(cert = %tls.cert.display(), error = %e,
                "cannot reload the TLS certificate; still serving the previous one"),
        }
    }
}

/// Tells the threat lists' thread to reload every list on each SIGHUP.
async fn reload_threat_lists_on_sighup(
    hangup: std::sync::mpsc::Sender<()>,
    hangups: std::io::Result<tokio::signal::unix::Signal>,
) {
    match hangups {
        Ok(mut hangups) => {
            while hangups.recv().await.is_some() {
                if hangup.send(()).is_err() {
                    return;
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot take SIGHUP: threat lists reload only when their files change");
            // The lists' thread ends with the last sender: keep it for the periodic checks.
            std::future::pending::<()>().await;
        }
    }
}

/// `threat check ADDR...`: what the configured lists say of each address.
fn threat_check(addrs: &[std::net::IpAddr], json: bool, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = Config::load(config)?;
    let lists = Lists::load(
        &config.threat.allow,
        &config.threat.list,
        portwatch_collector::metrics::ThreatMetrics::default(),
    )?;
    let table = lists.table();
    if table.lists().is_empty() {
        eprintln!("no [[threat.list]] in the config: no address is listed");
    }
    for list in table.lists() {
        let count = |n: usize, one: &str, many: &str| match n {
            1 => format!("1 {one}"),
            n => format!("{n} {many}"),
        };
        eprintln!(
            "list {:?} ({}): {}, {}, from {}",
            list.name,
            list.severity.as_str(),
            count(list.entries(), "entry", "entries"),
            count(list.bad_lines, "bad line", "bad lines"),
            list.path.display()
        );
        for bad in list.bad.iter().take(threat::reload::BAD_LINES_LOGGED) {
            eprintln!("  {bad}");
        }
    }
    let mut answers = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        let verdict = table.verdict(addr);
        if json {
            answers.push(verdict_json(addr, &verdict));
            continue;
        }
        let shown = match verdict.addr == addr {
            true => addr.to_string(),
            false => format!("{addr} (as {})", verdict.addr),
        };
        let entries: Vec<String> = verdict
            .matches
            .iter()
            .map(|m| {
                let id = m.id.map(|id| format!(" {id}")).unwrap_or_default();
                format!("{} ({}): {}{id}", m.list, m.severity.as_str(), m.net)
            })
            .collect();
        match (verdict.allowed_by, entries.is_empty()) {
            (Some(by), true) => println!("{shown}: allowed by {by} ([threat] allow); no list"),
            (Some(by), false) => println!(
                "{shown}: allowed by {by} ([threat] allow), which hides {}",
                entries.join(", ")
            ),
            (None, true) => println!("{shown}: no list"),
            (None, false) => println!("{shown}: {}", entries.join(", ")),
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&answers)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// One address's verdict as `threat check --json` prints it.
fn verdict_json(addr: std::net::IpAddr, verdict: &threat::Verdict<'_>) -> serde_json::Value {
    let matches: Vec<serde_json::Value> = verdict
        .matches
        .iter()
        .map(|m| {
            serde_json::json!({
                "list": m.list,
                "severity": m.severity,
                "entry": m.net.to_string(),
                "id": m.id,
            })
        })
        .collect();
    serde_json::json!({
        "address": addr.to_string(),
        "looked_up_as": verdict.addr.to_string(),
        "suspicious": verdict.is_suspicious(),
        "allowed_by": verdict.allowed_by.map(|n| n.to_string()),
        "matches": matches,
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn token_command(command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create {
            host,
            role,
            name,
            where_,
        } => {
            let (name, role, host) = match (host, role, name) {
                (Some(host), None, None) => {
                    if !valid_host_name(&host) {
                        bail!("invalid host name {host:?}: use 1 to 253 letters, digits, '.', '-' or '_'");
                    }
                    (format!("agent:{host}"), Role::Agent, Some(host))
                }
                (None, Some(role), Some(name)) => {
                    if name.is_empty() || name.starts_with("agent:") {
                        bail!("invalid token name {name:?}: names starting with `agent:` are for agent tokens");
                    }
                    let role = match role {
                        RoleArg::Read => Role::Read,
                        RoleArg::Admin => Role::Admin,
                    };
                    (name, role, None)
                }
                _ => bail!("say what the token is for: `--host NAME` (an agent) or `--role read|admin --name NAME`"),
            };
            let store = open_store(&where_.config()?)?;
            let secret = token::generate().context("cannot read the system's random source")?;
            let created = store.create_token(&TokenRow {
                name: name.clone(),
                role,
                host,
                hash: token::hash(&secret),
                created_at: Timestamp::now(),
                revoked_at: None,
            });
            if let Err(StoreError::Exists(what)) = &created {
                if what.starts_with("token ") {
                    bail!(
                        "a token named {name:?} already exists and is still valid: replace it with \
                         `portwatch-collector token rotate --name {name}`, or revoke it first (`token revoke {name}`)"
                    );
                }
            }
            created?;
            println!("{secret}");
            eprintln!(
                "created {} token {name:?}; the secret above is shown once",
                role.as_str()
            );
        }
        TokenCommand::List { json, where_ } => {
            let tokens = open_store(&where_.config()?)?.tokens()?;
            let now = Timestamp::now();
            if json {
                let listed: Vec<_> = tokens
                    .iter()
                    .map(|t| {
                        let mut value = serde_json::to_value(t)?;
                        value["state"] = t.state(now).name().into();
                        Ok(value)
                    })
                    .collect::<Result<_, serde_json::Error>>()?;
                println!("{}", serde_json::to_string_pretty(&listed)?);
            } else {
                println!("{:<32} {:<6} {:<26} STATE", "NAME", "ROLE", "CREATED");
                for t in tokens {
                    println!(
                        "{:<32} {:<6} {:<26} {}",
                        t.name,
                        t.role.as_str(),
                        t.created_at.to_string(),
                        t.state(now)
                    );
                }
            }
        }
        TokenCommand::Rotate {
            host,
            name,
            overlap,
            where_,
        } => {
            let name = match (host, name) {
                (Some(host), _) => format!("agent:{host}"),
                (None, Some(name)) => name,
                (None, None) => bail!("say which token: `--host NAME` (an agent's) or `--name NAME`"),
            };
            let store = open_store(&where_.config()?)?;
            let secret = token::generate().context("cannot read the system's random source")?;
            let now = Timestamp::now();
            let overlap = jiff::SignedDuration::try_from(overlap).context("--overlap is too long")?;
            let until = now.checked_add(overlap).context("--overlap is too long")?;
            let Some(rotated) = store.rotate_token(&name, &token::hash(&secret), now, until)? else {
                bail!(
                    "no valid token named {name:?} to rotate (see `portwatch-collector token list`); \
                     make one with `token create`"
                );
            };
            println!("{secret}");
            let ends: Vec<String> = rotated
                .replaced
                .iter()
                .filter_map(|t| t.revoked_at)
                .map(|t| t.to_string())
                .collect();
            eprintln!(
                "rotated {} token {name:?}; the new secret above is shown once. The {} it replaces \
                 keep{} working until {}, then {} refused",
                rotated.new.role.as_str(),
                match ends.len() {
                    1 => "token".to_owned(),
                    n => format!("{n} tokens"),
                },
                if ends.len() == 1 { "s" } else { "" },
                ends.join(", "),
                if ends.len() == 1 { "is" } else { "are" },
            );
        }
        TokenCommand::Revoke { name, where_ } => {
            if !open_store(&where_.config()?)?.revoke_token(&name, Timestamp::now())? {
                bail!("no active token named {name:?} (see `portwatch-collector token list`)");
            }
            eprintln!("revoked {name:?}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
