//! `portwatch`: ask the collector which ports are open where, and who owns them.

mod client;
mod render;
mod when;

use std::io::Write;
use std::ops::ControlFlow;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use jiff::tz::TimeZone;
use jiff::Timestamp;

use client::Client;

/// Ask the portwatch collector which ports are (or were) open on which host, and which process owns each.
///
/// Times (--at, --since, --until) may be RFC 3339 (2026-11-25T03:00:00Z), a local time (2026-11-25 03:00,
/// yesterday 03:00, 03:00) or an age (-2h, 2h ago). Tables show local times; --json shows UTC.
#[derive(Debug, Parser)]
#[command(
    name = "portwatch",
    version,
    propagate_version = true,
    after_help = "Examples:
  portwatch who --port 22                      which hosts and processes hold :22 now
  portwatch who --port 8080 --at 'yesterday 03:00'
  portwatch ports --host web-3 --at -2h        what listened on web-3 two hours ago
  portwatch history --host web-3 --port 8080   every open and close of :8080 on web-3
  portwatch diff --host web-3 --from 'yesterday 00:00'   what changed on web-3 since yesterday
  portwatch diff --host web-3 --vs-host web-4  how two hosts differ now
  portwatch hosts --json"
)]
struct Cli {
    /// Collector base URL.
    #[arg(
        long,
        env = "PORTWATCH_COLLECTOR",
        default_value = "http://127.0.0.1:7878",
        global = true
    )]
    collector: String,
    /// A read (or admin) token; see `portwatch-collector token create --role read --name NAME`.
    #[arg(long, env = "PORTWATCH_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// PEM certificate(s) to verify an https:// collector with (a private CA, or its self-signed certificate).
    #[arg(long, env = "PORTWATCH_CA_FILE", value_name = "FILE", global = true)]
    ca_file: Option<std::path::PathBuf>,
    /// Print JSON (times in UTC) instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every host: up or silent, when last heard from, how many listeners.
    Hosts,
    /// What was listening on a host, now or at a past moment.
    Ports {
        /// The host.
        #[arg(long)]
        host: String,
        /// The moment (default: now).
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
    },
    /// Fleet-wide: which hosts and processes hold a port, now or at a past moment.
    Who {
        /// The port.
        #[arg(long, short)]
        port: u16,
        /// Only this protocol.
        #[arg(long, value_parser = ["tcp", "udp"])]
        proto: Option<String>,
        /// The moment (default: now).
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
    },
    /// What opened, closed and changed owner on a host between two moments, or between two hosts now.
    Diff {
        /// The host.
        #[arg(long)]
        host: String,
        /// The earlier moment.
        #[arg(
            long,
            value_name = "TIME",
            required_unless_present = "vs_host",
            conflicts_with = "vs_host"
        )]
        from: Option<String>,
        /// The later moment (default: now).
        #[arg(long, value_name = "TIME", requires = "from")]
        to: Option<String>,
        /// Compare with this host instead (now).
        #[arg(long, value_name = "HOST")]
        vs_host: Option<String>,
    },
    /// Every listener interval of the fleet in a window, streamed as CSV (a row per process) or NDJSON.
    Export {
        /// Output format.
        #[arg(long, value_parser = ["csv", "ndjson"], default_value = "ndjson")]
        format: String,
        /// From this moment.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Until this moment.
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
    },
    /// The timeline of a host's listeners: when each opened and closed.
    History {
        /// The host.
        #[arg(long)]
        host: String,
        /// Only this port.
        #[arg(long, short)]
        port: Option<u16>,
        /// From this moment.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Until this moment.
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = match portwatch_common::cli::parse::<Cli>() {
        ControlFlow::Continue(cli) => cli,
        ControlFlow::Break(code) => return code,
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("portwatch: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let client = Client::new(&cli.collector, cli.token.as_deref(), cli.ca_file.as_deref())?;
    let tz = TimeZone::system();
    let now = Timestamp::now();
    let time = |t: Option<&str>| -> anyhow::Result<Option<Timestamp>> {
        t.map(|t| when::parse(t, now, &tz).map_err(anyhow::Error::msg))
            .transpose()
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match &cli.command {
        Command::Hosts => {
            let hosts = client.hosts()?;
            if cli.json {
                render::json(&mut out, &hosts)?;
            } else {
                render::hosts(&mut out, &hosts, &tz)?;
            }
        }
        Command::Ports { host, at } => {
            let at = time(at.as_deref())?;
            let rows = client.listeners(host, at)?;
            render::listeners(&mut out, &rows, cli.json, &tz, false)?;
        }
        Command::Who { port, proto, at } => {
            let at = time(at.as_deref())?;
            let rows = client.who(*port, proto.as_deref(), at)?;
            render::listeners(&mut out, &rows, cli.json, &tz, false)?;
        }
        Command::Export { format, since, until } => {
            let (since, until) = (time(since.as_deref())?, time(until.as_deref())?);
            client.export(format, since, until, &mut out)?;
        }
        Command::Diff {
            host,
            from,
            to,
            vs_host,
        } => {
            let (from, to) = (time(from.as_deref())?, time(to.as_deref())?);
            let diff = client.diff(host, from, to, vs_host.as_deref())?;
            if cli.json {
                render::json(&mut out, &diff)?;
            } else {
                render::diff(&mut out, &diff, &tz)?;
            }
        }
        Command::History {
            host,
            port,
            since,
            until,
        } => {
            let (since, until) = (time(since.as_deref())?, time(until.as_deref())?);
            let rows = client.history(host, *port, since, until)?;
            render::listeners(&mut out, &rows, cli.json, &tz, true)?;
        }
    }
    out.flush()?;
    Ok(())
}
