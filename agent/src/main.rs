//! `portwatch-agent`: the command line of the portwatch agent.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use portwatch_agent::config::Config;
use portwatch_agent::filter::Filter;
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
    Validate(ValidateArgs),
}

/// Check a configuration file and exit: 0 when it is usable, 1 with the line and key that are wrong.
///
/// Checks every key and value of the file, and that the token file it names can be read. Run it before
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
  portwatch-agent scan --all --format csv    every TCP/UDP socket in any state, as CSV")]
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
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ProtoArg {
    Tcp,
    Udp,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    }
}

fn validate(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    if let Some(token_file) = &config.token_file {
        std::fs::read_to_string(token_file).with_context(|| {
            format!(
                "{}: token_file {} cannot be read; create it with the token printed by \
                 `portwatch-collector token create --host NAME`",
                args.config.display(),
                token_file.display()
            )
        })?;
    }
    println!(
        "{}: OK (collector {}, every {}, spool {} up to {} MiB)",
        args.config.display(),
        config.collector.as_deref().unwrap_or("not set"),
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
    scan.retain(|s| filter.matches(s));
    report::sort(&mut scan.sockets);

    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    report::write(&mut out, format, &scan.sockets, args.all)?;
    out.flush()?;
    if let Some(warning) = scan.partial_warning() {
        eprintln!("portwatch-agent: warning: {warning}");
    }
    Ok(ExitCode::SUCCESS)
}
