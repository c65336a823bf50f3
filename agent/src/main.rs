//! `portwatch-agent`: the command line of the portwatch agent.

use std::io::{self, Write};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use portwatch_agent::config::Config;
use portwatch_agent::filter::Filter;
use portwatch_agent::peers;
use portwatch_agent::report::{self, Format};
use portwatch_agent::scan::{ScanOptions, Scanner};
use portwatch_common::Proto;

/// See every listening socket on this host and the processes that own it.
#[derive(Debug, Parser)]
#[command(name = "portwatch-agent", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Scan(ScanArgs),
    Run(RunArgs),
    Validate(ValidateArgs),
    /// Loads the kernel program for `run` and hands it over; started by `run` itself, not for people to run.
    #[command(name = portwatch_agent::events::LOADER_COMMAND, hide = true)]
    LoadKernelEvents(LoaderArgs),
}

/// The loader's arguments, as `run` passes them.
#[derive(Debug, clap::Args)]
struct LoaderArgs {
    /// Load the program with the connections' events, for the peers.
    #[arg(long = "peers")]
    peers: bool,
}

/// Run the agent: scan every interval and ship what changed to the collector, until SIGTERM or SIGINT.
///
/// Reads the config file, then applies the flags. While the collector is unreachable the agent keeps scanning and
/// keeps reports in its spool, and replays them in order, with their original times, when the collector is back.
/// Logs go to stderr (the journal, under systemd); PORTWATCH_LOG=debug says more.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Configuration file (TOML; see packaging/config/agent.toml). Default: /etc/portwatch/agent.toml if it exists.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Collector base URL, e.g. https://collector.example:7878. Repeat it for several collectors (they replace the
    /// config's list): the agent stays with the one that last answered, and sends the same batch to the next one at
    /// once when it cannot be reached, times out or answers 5xx; a 4xx is the same answer everywhere and is not
    /// sent elsewhere. One URL for a load balancer in front of several collectors.
    #[arg(long, value_name = "URL")]
    collector: Vec<String>,
    /// Agent token (default: PORTWATCH_TOKEN, then the config's token_file; --token-file wins over both). Other
    /// users of the host can read it in `ps`: prefer --token-file.
    #[arg(long, env = "PORTWATCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the agent token (wins over --token, PORTWATCH_TOKEN and the config's token_file). It is read
    /// again when the collector refuses the token, so a rotated token only needs to be written there. Warned about
    /// when other users may read it.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Scan interval, e.g. 500ms, 10s, 5m.
    #[arg(long, value_parser = parse_duration_arg)]
    interval: Option<Duration>,
    /// PEM certificate(s) to verify an https:// collector with (a private CA, or its self-signed certificate).
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Spool directory.
    #[arg(long, value_name = "DIR")]
    spool_dir: Option<PathBuf>,
    /// Host name to report as (default: the system's).
    #[arg(long, value_name = "NAME")]
    host_name: Option<String>,
    /// Do not use kernel events: scan every interval (the config's `events = false`).
    #[arg(long)]
    no_events: bool,
    /// With kernel events on, how often a full scan checks them, e.g. 5m (the config's safety_scan_interval).
    #[arg(long, value_parser = parse_duration_arg)]
    safety_scan_interval: Option<Duration>,
    /// Do not read the firewall: listeners are reported without its answer (the config's `firewall = false`).
    #[arg(long)]
    no_firewall: bool,
    /// Ship inbound peers per TCP listener (the config's `peers = true`): every interval the established
    /// connections of each listener are summarized (connections, distinct remote addresses, the busiest remotes,
    /// loopback/private/public classes; never a row per connection), and a listener's summary is shipped when it
    /// changed, at most once a minute (its first one at once). Best-effort: not spooled, dropped (and counted)
    /// when the collector is away too long or older than protocol version 3. `portwatch peers` reads them.
    #[arg(long)]
    peers: bool,
    /// How many of the busiest remote addresses each listener's summary names, 1 to 100 (the config's peers_top).
    #[arg(long, value_name = "N", value_parser = parse_peers_top)]
    peers_top: Option<usize>,
}

fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    portwatch_agent::config::parse_duration(text)
}

/// Check a configuration file and exit: 0 when it is usable, 1 with the line and key that are wrong.
///
/// Checks every key and value of the file, and that the token and CA files it names can be read. Run it before
/// restarting the agent (the systemd unit runs it as ExecStartPre).
#[derive(Debug, clap::Args)]
struct ValidateArgs {
    /// The configuration file.
    #[arg(long, short, value_name = "FILE", default_value = "/etc/portwatch/agent.toml")]
    config: PathBuf,
}

/// List listening sockets and their owners, in every network namespace (like `ss -tulpn`, containers included).
///
/// Reports every listening TCP socket and every bound, unconnected UDP socket, IPv4 and IPv6, in every network
/// namespace on the host (containers and `ip netns` namespaces too), with every process holding each one: pid,
/// name, command line, executable, user, container id and systemd unit.
///
/// Full results need root (or CAP_SYS_PTRACE + CAP_DAC_READ_SEARCH to see other users' processes, and
/// CAP_SYS_ADMIN to enter other network namespaces). Without them the scan still lists every socket it can see,
/// with `processes: []` where the owner is unknown, and ends with one line on stderr saying what is missing.
///
/// PROTO in the table is tcp/udp (IPv4), tcp6/udp6 (IPv6), tcp46/udp46 (IPv6 wildcard that also accepts IPv4).
///
/// Exit status: 0 success (also when the result is partial, see stderr), 1 the scan failed, 2 bad usage.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  portwatch-agent scan                       table of every listener, sorted by port
  portwatch-agent scan --exposed             only what is reachable beyond loopback
  portwatch-agent scan --port 8080 --json    who holds :8080, as JSON
  portwatch-agent scan --process nginx       everything nginx listens on
  portwatch-agent scan --all --format csv    every TCP/UDP socket in any state, as CSV
  portwatch-agent scan --peers --port 5432   who is connected to :5432 (connections, remotes, classes)")]
struct ScanArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Shorthand for `--format json`.
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// Also show sockets in other states (established, time-wait, connected UDP...).
    #[arg(short, long)]
    all: bool,
    /// Only sockets on this local port (repeatable).
    #[arg(short, long = "port", value_name = "PORT")]
    ports: Vec<u16>,
    /// Only this protocol.
    #[arg(long, value_enum)]
    proto: Option<ProtoArg>,
    /// Only sockets held by this pid.
    #[arg(long)]
    pid: Option<u32>,
    /// Only sockets held by a process of this name (`comm`) or executable file name.
    #[arg(long, value_name = "NAME")]
    process: Option<String>,
    /// Only sockets reachable beyond loopback (wildcard or specific addresses).
    #[arg(long)]
    exposed: bool,
    /// Only sockets of the network namespace with this inode (the NETNS column).
    #[arg(long, value_name = "INODE")]
    netns: Option<u64>,
    /// Read sockets from /proc/<pid>/net instead of netlink sock_diag (slower; to cross-check, or where
    /// sock_diag misbehaves). IPv6 dual-stack is then inferred from net.ipv6.bindv6only.
    #[arg(long)]
    proc_net: bool,
    /// Do not read the firewall: no `nft` or `iptables-legacy-save` is run, and the FIREWALL column shows `-` (JSON: null).
    #[arg(long)]
    no_firewall: bool,
    /// Also summarize each TCP listener's established connections: how many, from how many distinct remote
    /// addresses, the busiest remotes and their loopback/private/public classes (a PEERS column; JSON: `peers`).
    /// One sock_diag dump of established sockets per network namespace, counted as it is read.
    #[arg(long)]
    peers: bool,
    /// With --peers, how many of the busiest remote addresses each listener names (JSON `peers.top`).
    #[arg(long, value_name = "N", requires = "peers", default_value_t = portwatch_agent::peers::DEFAULT_TOP,
          value_parser = parse_peers_top)]
    peers_top: usize,
}

fn parse_peers_top(text: &str) -> Result<usize, String> {
    let max = portwatch_agent::peers::MAX_TOP;
    match text.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("write a number from 1 to {max}")),
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ProtoArg {
    Tcp,
    Udp,
}

fn main() -> ExitCode {
    let cli = match portwatch_common::cli::parse::<Cli>() {
        ControlFlow::Continue(cli) => cli,
        ControlFlow::Break(code) => return code,
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // A closed pipe (`| head`) is the reader's choice, not a failure.
            if e.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("portwatch-agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Scan(args) => scan(args),
        Command::Validate(args) => validate(args),
        Command::Run(args) => run_daemon(args),
        Command::LoadKernelEvents(args) => {
            let stdin = io::stdin();
            portwatch_agent::events::loader(std::os::fd::AsFd::as_fd(&stdin), args.peers).context(
                "cannot hand the kernel program over (this command is started by `run`, its stdin a socket)",
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Default config file, read by `run` when it exists and no --config is given.
const DEFAULT_CONFIG: &str = "/etc/portwatch/agent.toml";

fn run_daemon(args: RunArgs) -> anyhow::Result<ExitCode> {
    portwatch_common::log::init()?;
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None if std::path::Path::new(DEFAULT_CONFIG).exists() => Config::load(std::path::Path::new(DEFAULT_CONFIG))?,
        None => Config::default(),
    };
    if !args.collector.is_empty() {
        config.collector = args.collector;
    }
    if let Some(i) = args.interval {
        config.interval = i;
        config.rewalk_interval = config.rewalk_interval.max(i);
        config.safety_scan_interval = config.safety_scan_interval.max(i);
    }
    if args.no_events {
        config.events = false;
    }
    if args.no_firewall {
        config.firewall = false;
    }
    if let Some(i) = args.safety_scan_interval {
        config.safety_scan_interval = i;
    }
    if let Some(d) = args.spool_dir {
        config.spool_dir = d;
    }
    if let Some(h) = args.host_name {
        config.host_name = Some(h);
    }
    if let Some(ca) = args.ca_file {
        config.ca_file = Some(ca);
    }
    if args.peers {
        config.peers = true;
    }
    if let Some(top) = args.peers_top {
        config.peers_top = top;
    }
    config.check().map_err(|m| anyhow::anyhow!("flags: {m}"))?;
    if config.collector.is_empty() {
        anyhow::bail!("no collector: pass --collector URL or set `collector` in the config");
    }
    let from_flag = args.token_file.is_some();
    if let Some(file) = args.token_file {
        config.token_file = Some(file);
    }
    let (token, token_file) = match (args.token.filter(|_| !from_flag), &config.token_file) {
        (Some(t), _) => (t, None),
        (None, Some(file)) => {
            let read = portwatch_common::client::read_token_file(file)?;
            if let Some(warning) = &read.warning {
                tracing::warn!(file = %file.display(), "{warning}");
            }
            (read.secret, Some(file.clone()))
        }
        (None, None) => anyhow::bail!(
            "no token: pass --token-file FILE (or --token, or set PORTWATCH_TOKEN), or set token_file in the \
             config (make one with `portwatch-collector token create --host NAME`)"
        ),
    };
    let host = portwatch_agent::facts::host_name(config.host_name.as_deref()).map_err(anyhow::Error::msg)?;
    portwatch_agent::daemon::run(portwatch_agent::daemon::Settings {
        collectors: config.collector.clone(),
        token,
        token_file,
        ca_file: config.ca_file.clone(),
        host,
        interval: config.interval,
        rewalk_interval: config.rewalk_interval,
        events: config.events,
        safety_scan_interval: config.safety_scan_interval,
        spool_dir: config.spool_dir.clone(),
        spool_max_bytes: config.spool_max_mb.saturating_mul(1024 * 1024),
        tags: config.tags.clone(),
        firewall: config.firewall,
        peers_top: config.peers.then_some(config.peers_top),
    })?;
    Ok(ExitCode::SUCCESS)
}

fn validate(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    if let Some(token_file) = &config.token_file {
        let read = portwatch_common::client::read_token_file(token_file).with_context(|| {
            format!(
                "{}: token_file {} cannot be read; create it with the token printed by \
                 `portwatch-collector token create --host NAME`",
                args.config.display(),
                token_file.display()
            )
        })?;
        if let Some(warning) = read.warning {
            eprintln!("portwatch-agent: warning: {warning}");
        }
    }
    if let Some(ca_file) = &config.ca_file {
        portwatch_common::client::http_agent(Some(ca_file), std::time::Duration::from_secs(1))
            .with_context(|| args.config.display().to_string())?;
    }
    println!(
        "{}: OK (collector {}, every {}, spool {} up to {} MiB)",
        args.config.display(),
        if config.collector.is_empty() {
            "not set".to_owned()
        } else {
            config.collector.join(", then ")
        },
        humantime::format_duration(config.interval),
        config.spool_dir.display(),
        config.spool_max_mb
    );
    Ok(ExitCode::SUCCESS)
}

fn scan(args: ScanArgs) -> anyhow::Result<ExitCode> {
    let format = if args.json { Format::Json } else { args.format };
    let filter = Filter {
        ports: args.ports,
        proto: args.proto.map(|p| match p {
            ProtoArg::Tcp => Proto::Tcp,
            ProtoArg::Udp => Proto::Udp,
        }),
        pid: args.pid,
        process: args.process,
        exposed: args.exposed,
        netns: args.netns,
    };
    let options = ScanOptions {
        all_states: args.all,
        proc_net: args.proc_net,
        ..ScanOptions::default()
    };
    let mut scanner = Scanner::new(options).context("cannot start the scanner")?;
    let mut scan = scanner.scan().context("scan failed")?;
    // Every listener takes part in attribution, the filtered-out ones too.
    let mut listeners = args.peers.then(|| peers::Listeners::of(&scan.sockets));
    scan.retain(|s| filter.matches(s));
    report::sort(&mut scan.sockets);
    let peers = listeners.as_mut().map(|listeners| {
        listeners.keep_namespaces_of(&scan.sockets);
        peers::count(&scanner, listeners, args.peers_top)
    });

    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let (firewall, unavailable) = if args.no_firewall {
        (Vec::new(), Vec::new())
    } else {
        portwatch_agent::firewall::answers(&scanner, &scan.sockets)
    };
    report::write(&mut out, format, &scan.sockets, &firewall, args.all, peers.as_ref())?;
    out.flush()?;
    // A partial result is told in one line, the firewall's and the peers' parts included.
    let mut warning: Vec<String> = scan.partial_warning().into_iter().collect();
    warning.extend(
        unavailable
            .into_iter()
            .map(|(netns, reason)| format!("firewall not evaluated in network namespace {netns}: {reason}")),
    );
    warning.extend(peers.iter().flat_map(|p| &p.not_counted).map(|(netns, reason)| {
        format!("peers not counted in network namespace {netns} (its listeners show none): {reason}")
    }));
    if !warning.is_empty() {
        eprintln!("portwatch-agent: warning: {}", warning.join("; "));
    }
    Ok(ExitCode::SUCCESS)
}
