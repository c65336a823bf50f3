//! `portwatch`: ask the collector which ports are open where, and who owns them.

mod client;
mod render;
mod sheet;
mod when;

use std::io::Write;
use std::ops::ControlFlow;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use portwatch_common::text::Escaped;
use portwatch_model::BaselineAction;
use portwatch_model::Kind;

use client::Client;
use render::Format;

/// Ask the portwatch collector which ports are (or were) open on which host, and which process owns each.
///
/// Times (--at, --since, --until, --from, --to) may be RFC 3339 (2026-11-25T03:00:00Z), a local time
/// (2026-11-25 03:00, yesterday 03:00, 03:00) or an age (-5m, -1h30m, -2d, 2h ago). Every query command takes
/// --format table|json|csv: tables show local times, JSON and CSV UTC.
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
  portwatch history --host web-3 --since -5m   what opened or closed on web-3 in the last five minutes
  portwatch peers --host db-2 --port 5432 --at 03:00   who was connected to :5432 on db-2 around 03:00
  portwatch diff --host web-3 --from 'yesterday 00:00'   what changed on web-3 since yesterday
  portwatch diff --host web-3 --vs-host web-4  how two hosts differ now
  portwatch hosts --json
  portwatch ports --host web-3 --format csv > web-3.csv    a row per listener and process, for a spreadsheet
  portwatch baseline learn --host 'web-*' > web.toml    propose a baseline from what listens now
  portwatch baseline apply web.toml -m 'web tier inventory'   (admin token)
  portwatch drift --host web-3                 how web-3 departs from its baselines now
  portwatch alerts                             open and acknowledged alerts
  portwatch alerts ack 12 -m 'rolling back the deploy'   (admin token)
  portwatch trends --bucket day                the last week: listeners, new ports, short-lived, top ports"
)]
struct Cli {
    /// Collector base URL.
    #[arg(
        long,
        env = "PORTWATCH_COLLECTOR",
        hide_env_values = true,
        default_value = "http://127.0.0.1:7878",
        global = true
    )]
    collector: String,
    /// A read (or admin) token; see `portwatch-collector token create --role read --name NAME`. Other users of the
    /// host can read it in `ps`: prefer --token-file.
    #[arg(long, env = "PORTWATCH_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// File holding the token (wins over --token and PORTWATCH_TOKEN); warned about when other users may read it.
    #[arg(
        long,
        env = "PORTWATCH_TOKEN_FILE",
        hide_env_values = true,
        value_name = "FILE",
        global = true
    )]
    token_file: Option<std::path::PathBuf>,
    /// PEM certificate(s) to verify an https:// collector with (a private CA, or its self-signed certificate).
    #[arg(
        long,
        env = "PORTWATCH_CA_FILE",
        hide_env_values = true,
        value_name = "FILE",
        global = true
    )]
    ca_file: Option<std::path::PathBuf>,
    /// Print JSON (times in UTC) instead of a table: the same as --format json (the two together are an error).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// The output format of a query command.
#[derive(Debug, Args)]
struct Output {
    /// Output format: table (for people, local times), json (times in UTC) or csv (for spreadsheets: a header,
    /// a row per listener and process, times in UTC). --json is the same as --format json.
    #[arg(long, value_enum, value_name = "FORMAT", conflicts_with = "json")]
    format: Option<render::Format>,
}

impl Output {
    /// The format asked for: `--format`, or JSON with `--json` (clap refuses both together).
    fn resolve(&self, json: bool) -> render::Format {
        match (self.format, json) {
            (Some(format), _) => format,
            (None, true) => render::Format::Json,
            (None, false) => render::Format::Table,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every host: up or silent, when last heard from, how many listeners.
    Hosts {
        #[command(flatten)]
        output: Output,
    },
    /// What was listening on a host, now or at a past moment.
    Ports {
        /// The host.
        #[arg(long)]
        host: String,
        /// The moment (default: now).
        #[arg(long, value_name = "TIME", allow_hyphen_values = true, value_parser = when::arg)]
        at: Option<String>,
        #[command(flatten)]
        output: Output,
    },
    /// The view from outside: what the latest probe from the collector found at each listener of a host.
    ///
    /// reachable (a connect from the collector was accepted), unreachable (none was), or not-probed (UDP, a
    /// container's namespace, no reported address; DETAIL says why), with when and what each connect answered.
    /// Probes run only where the collector's `[probe]` is enabled.
    Probe {
        /// The host.
        #[arg(long)]
        host: String,
    },
    /// Who was connected to a host's TCP listeners, now, around a past moment, or over a window.
    ///
    /// Agents with `peers = true` summarize each TCP listener's established connections every interval (never a
    /// row per connection) and ship a listener's summary when it changed, at most once a minute; the collector
    /// keeps them as a time series, one point per listener per minute at most, as long as the history. Without
    /// --since/--until: each listener's latest point at or before --at (default now), so "who was connected to
    /// :5432 around 03:00" is `portwatch peers --host db-2 --port 5432 --at 03:00`; a listener whose latest point is
    /// older than the moment shows that older one (AT says when). With --since/--until: every point of the window,
    /// oldest first.
    ///
    /// Columns: LISTENER (address:port), AT (when the agent counted), CONNECTIONS (established), DISTINCT (distinct
    /// remote addresses), TOP REMOTES (the busiest, with their connections), LOOPBACK/PRIVATE/PUBLIC (connections
    /// by the class of their remote address).
    #[command(after_help = "Examples:
  portwatch peers --host db-2                           who is connected to each listener of db-2 now
  portwatch peers --host db-2 --port 5432 --at 03:00    who was connected to :5432 around 03:00
  portwatch peers --host db-2 --port 5432 --since -1h   every change in the last hour
  portwatch peers --host db-2 --json")]
    Peers {
        /// The host.
        #[arg(long)]
        host: String,
        /// Only listeners on this port.
        #[arg(long, short)]
        port: Option<u16>,
        /// The moment (default: now): each listener's latest point at or before it.
        #[arg(long, value_name = "TIME", allow_hyphen_values = true, value_parser = when::arg,
              conflicts_with_all = ["since", "until"])]
        at: Option<String>,
        /// Every point from this moment on, instead of one per listener.
        #[arg(long, value_name = "TIME", allow_hyphen_values = true, value_parser = when::arg)]
        since: Option<String>,
        /// Every point up to this moment (default with --since: now).
        #[arg(long, value_name = "TIME", allow_hyphen_values = true, value_parser = when::arg)]
        until: Option<String>,
        /// With --since/--until, at most this many points (1,000 by default, 10,000 at most); when there are
        /// more, stderr says how to ask for the next ones.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// With --since/--until, the page after this cursor, as the previous page's note on stderr gave it.
        #[arg(long, value_name = "CURSOR")]
        after: Option<String>,
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
        #[arg(long, value_name = "TIME", allow_hyphen_values = true, value_parser = when::arg)]
        at: Option<String>,
        #[command(flatten)]
        output: Output,
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
            allow_hyphen_values = true,
            value_parser = when::arg,
            required_unless_present = "vs_host",
            conflicts_with = "vs_host"
        )]
        from: Option<String>,
        /// The later moment (default: now).
        #[arg(long, value_name = "TIME", allow_hyphen_values = true, value_parser = when::arg, requires = "from")]
        to: Option<String>,
        /// Compare with this host instead (now).
        #[arg(long, value_name = "HOST")]
        vs_host: Option<String>,
        #[command(flatten)]
        output: Output,
    },
    /// Every listener interval of the fleet in a window, streamed as CSV (a row per process) or NDJSON.
    Export {
        /// Output format.
        #[arg(long, value_parser = ["csv", "ndjson"], default_value = "ndjson")]
        format: String,
        /// From this moment.
        #[arg(long, value_name = "TIME", allow_hyphen_values = true, value_parser = when::arg)]
        since: Option<String>,
        /// Until this moment.
        #[arg(long, value_name = "TIME", allow_hyphen_values = true, value_parser = when::arg)]
        until: Option<String>,
    },
    /// Baselines: the documented inventory of legitimate listeners, per group of hosts.
    Baseline {
        #[command(subcommand)]
        action: BaselineCommand,
    },
    /// How hosts depart from their baselines now.
    ///
    /// Kinds: unexpected-listener, missing-listener, owner-mismatch, exposure-widened, risky-port-exposed,
    /// host-silent, clock-skew, flapping, firewall-opened, outside-view-disagrees, suspicious-peer. Hosts without a
    /// baseline list their listeners as `unbaselined`.
    Drift {
        /// Only this host.
        #[arg(long)]
        host: Option<String>,
        /// Only these kinds (repeatable, or comma-separated), e.g. risky-port-exposed,owner-mismatch.
        #[arg(long, value_delimiter = ',')]
        kind: Vec<String>,
        /// At most this many findings, most serious first.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        limit: u32,
        #[command(flatten)]
        output: Output,
    },
    /// Alerts raised from drift (default: open and acknowledged ones), or `alerts ack ID -m TEXT`.
    #[command(args_conflicts_with_subcommands = true)]
    Alerts {
        #[command(subcommand)]
        action: Option<AlertsCommand>,
        /// Which alerts: active (open and acknowledged), open, acknowledged, resolved, all.
        #[arg(long, default_value = "active", value_parser = ["active", "open", "acknowledged", "resolved", "all"])]
        state: String,
        /// Only this host's.
        #[arg(long)]
        host: Option<String>,
        /// At most this many, newest first (the collector gives at most 10000).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
        #[command(flatten)]
        output: Output,
    },
    /// Trends: listeners over time, new ports, short-lived and recurring listeners, top ports.
    ///
    /// Open listeners at each hour or day (fleet-wide or one host), ports first seen in the last 24 h / 7 d,
    /// listeners open less than a minute, listeners opening at the same hour on 3+ days, top ports by host count.
    Trends {
        /// Only this host.
        #[arg(long)]
        host: Option<String>,
        /// Bucket width.
        #[arg(long, value_parser = ["hour", "day"], default_value = "hour")]
        bucket: String,
        /// From this moment (default: 24 hours, or 7 days with --bucket day, before --until).
        #[arg(long, value_name = "TIME", allow_hyphen_values = true, value_parser = when::arg)]
        since: Option<String>,
        /// Until this moment (default: now).
        #[arg(long, value_name = "TIME", allow_hyphen_values = true, value_parser = when::arg)]
        until: Option<String>,
        #[command(flatten)]
        output: Output,
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
        #[arg(long, value_name = "TIME", allow_hyphen_values = true, value_parser = when::arg)]
        since: Option<String>,
        /// Until this moment.
        #[arg(long, value_name = "TIME", allow_hyphen_values = true, value_parser = when::arg)]
        until: Option<String>,
        /// At most this many intervals (the oldest first; 10,000 by default, 100,000 at most); when there are
        /// more, stderr says how to ask for the next ones.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// The page after this cursor, as the previous page's note on stderr gave it.
        #[arg(long, value_name = "CURSOR")]
        after: Option<String>,
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
enum BaselineCommand {
    /// Apply a baseline file: create it, or replace the baseline of the same name (admin token).
    Apply {
        /// The TOML file (see README: Baselines).
        file: std::path::PathBuf,
        /// Why: kept in the baseline log with your token's name and the time.
        #[arg(long, short = 'm')]
        comment: String,
    },
    /// Check a baseline file without applying it: exit 1 with the line that is wrong (no collector needed).
    Check {
        /// The TOML file.
        file: std::path::PathBuf,
    },
    /// Propose a baseline file from what listens now on the matching hosts, to review and then apply.
    /// Its owner and reason fields are empty: `apply` refuses it until a person fills them in.
    Learn {
        /// A host name or glob (web-*, db-?).
        #[arg(long)]
        host: String,
        /// The baseline's name (default: from the glob).
        #[arg(long)]
        name: Option<String>,
    },
    /// Every baseline: the hosts it selects, its entries, when and by whom it was applied.
    List {
        #[command(flatten)]
        output: Output,
    },
    /// Print a baseline's file, as applied.
    Show {
        /// The baseline's name.
        name: String,
    },
    /// Every change to the baselines: what, who (token name), when and why.
    Log {
        /// Only this baseline's changes.
        name: Option<String>,
        #[command(flatten)]
        output: Output,
    },
    /// Remove a baseline (admin token).
    Remove {
        /// The baseline's name.
        name: String,
        /// Why: kept in the baseline log.
        #[arg(long, short = 'm')]
        comment: String,
    },
}

#[derive(Debug, Subcommand)]
enum AlertsCommand {
    /// Acknowledge an open alert: you are on it (admin token). It resolves by itself when the condition clears.
    Ack {
        /// The alert's number (the ID column).
        id: i64,
        /// What you are doing about it: the next person reads it.
        #[arg(long, short = 'm')]
        comment: String,
    },
}

impl Command {
    /// The output options of a query command.
    fn output(&self) -> Option<&Output> {
        match self {
            Command::Hosts { output }
            | Command::Ports { output, .. }
            | Command::Who { output, .. }
            | Command::Diff { output, .. }
            | Command::Drift { output, .. }
            | Command::Alerts { output, .. }
            | Command::Trends { output, .. }
            | Command::History { output, .. } => Some(output),
            Command::Baseline {
                action: BaselineCommand::List { output } | BaselineCommand::Log { output, .. },
            } => Some(output),
            Command::Export { .. } | Command::Baseline { .. } | Command::Probe { .. } | Command::Peers { .. } => None,
        }
    }
}

fn main() -> ExitCode {
    let cli = match portwatch_common::cli::parse::<Cli>() {
        ControlFlow::Continue(cli) => cli,
        ControlFlow::Break(code) => return code,
    };
    // clap refuses `hosts --json --format csv`, but not `--json hosts --format csv`
    // (a global flag given before the subcommand): the same refusal, here.
    if cli.json && cli.command.output().is_some_and(|o| o.format.is_some()) {
        portwatch_common::cli::command::<Cli>()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "the argument '--json' cannot be used with '--format <FORMAT>' (--json is --format json)",
            )
            .exit();
    }
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
    let token = match &cli.token_file {
        Some(file) => {
            let read = portwatch_common::client::read_token_file(file)?;
            if let Some(warning) = &read.warning {
                eprintln!("portwatch: warning: {warning}");
            }
            Some(read.secret)
        }
        None => cli.token.clone(),
    };
    let client = Client::new(&cli.collector, token.as_deref(), cli.ca_file.as_deref())?;
    let tz = TimeZone::system();
    let now = Timestamp::now();
    let time = |t: Option<&str>| -> anyhow::Result<Option<Timestamp>> {
        t.map(|t| when::parse(t, now, &tz).map_err(anyhow::Error::msg))
            .transpose()
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match &cli.command {
        Command::Hosts { output } => {
            let hosts = client.hosts()?;
            match output.resolve(cli.json) {
                Format::Table => render::hosts(&mut out, &hosts, &tz)?,
                Format::Json => render::json(&mut out, &hosts)?,
                Format::Csv => sheet::hosts(&mut out, &hosts)?,
            }
        }
        Command::Ports { host, at, output } => {
            let at = time(at.as_deref())?;
            let rows = client.listeners(host, at)?;
            match output.resolve(cli.json) {
                // The verdicts are the latest probe's: beside the listeners of now only.
                Format::Table if at.is_none() => {
                    // A collector older than the view from outside has no verdicts to show.
                    let verdicts = client.probe(host).unwrap_or_else(|e| {
                        eprintln!("portwatch: no probe verdicts ({e:#}); VERIFIED shows -");
                        Vec::new()
                    });
                    render::ports(&mut out, &rows, &verdicts, &tz)?;
                }
                format => listeners(&mut out, &rows, format, &tz, false)?,
            }
        }
        Command::Probe { host } => {
            let verdicts = client.probe(host)?;
            match cli.json {
                true => render::json(&mut out, &verdicts)?,
                false => render::probe(&mut out, &verdicts, &tz)?,
            }
        }
        Command::Peers {
            host,
            port,
            at,
            since,
            until,
            limit,
            after,
        } => {
            let window = client::PeersWindow {
                at: time(at.as_deref())?,
                since: time(since.as_deref())?,
                until: time(until.as_deref())?,
            };
            let page = client::Page {
                limit: *limit,
                after: after.as_deref(),
            };
            let (points, next) = client.peers(host, *port, window, page)?;
            match cli.json {
                true => render::json(&mut out, &points)?,
                false => render::peers(&mut out, &points, &tz)?,
            }
            if let Some(next) = next {
                eprintln!(
                    "portwatch: showing {} points, the oldest first; there are more: add --after {next} for the next ones",
                    points.len()
                );
            }
        }
        Command::Who {
            port,
            proto,
            at,
            output,
        } => {
            let at = time(at.as_deref())?;
            let rows = client.who(*port, proto.as_deref(), at)?;
            listeners(&mut out, &rows, output.resolve(cli.json), &tz, false)?;
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
            output,
        } => {
            let (from, to) = (time(from.as_deref())?, time(to.as_deref())?);
            let diff = client.diff(host, from, to, vs_host.as_deref())?;
            match output.resolve(cli.json) {
                Format::Table => render::diff(&mut out, &diff, &tz)?,
                Format::Json => render::json(&mut out, &diff)?,
                Format::Csv => sheet::diff(&mut out, &diff)?,
            }
        }
        Command::Baseline { action } => baseline(&client, action, cli.json, &tz, &mut out)?,
        Command::Drift {
            host,
            kind,
            limit,
            output,
        } => {
            let limit = *limit as usize;
            let findings = client.drift(host.as_deref(), kind, limit)?;
            if findings.len() == limit {
                eprintln!(
                    "portwatch: showing the {limit} most serious findings; --limit, --kind or --host to see others"
                );
            }
            match output.resolve(cli.json) {
                Format::Table => {
                    // "No drift" means something only if some baseline is applied.
                    let only_unbaselined = findings.iter().all(|f| f.kind == Kind::Unbaselined);
                    let baselines_applied = !only_unbaselined || !client.baselines()?.is_empty();
                    render::findings(&mut out, &findings, baselines_applied)?;
                }
                Format::Json => render::json(&mut out, &findings)?,
                Format::Csv => sheet::findings(&mut out, &findings)?,
            }
        }
        Command::Alerts {
            action,
            state,
            host,
            limit,
            output,
        } => match action {
            Some(AlertsCommand::Ack { id, comment }) => {
                let alert = client.ack(*id, comment)?;
                if cli.json {
                    render::json(&mut out, &alert)?;
                } else {
                    writeln!(out, "alert {} acknowledged: {}", alert.id, Escaped(&alert.message))?;
                }
            }
            None => {
                let limit = *limit as usize;
                let alerts = client.alerts(state, host.as_deref(), limit)?;
                if alerts.len() == limit {
                    let more = match limit < 10_000 {
                        true => "--limit to see more",
                        false => "--state or --host to see others",
                    };
                    eprintln!("portwatch: showing the newest {limit} alerts; {more}");
                }
                match output.resolve(cli.json) {
                    Format::Table => render::alerts(&mut out, &alerts, &tz)?,
                    Format::Json => render::json(&mut out, &alerts)?,
                    Format::Csv => sheet::alerts(&mut out, &alerts)?,
                }
            }
        },
        Command::Trends {
            host,
            bucket,
            since,
            until,
            output,
        } => {
            let (since, until) = (time(since.as_deref())?, time(until.as_deref())?);
            let trends = client.trends(host.as_deref(), bucket, since, until)?;
            match output.resolve(cli.json) {
                Format::Table => render::trends(&mut out, &trends, &tz)?,
                Format::Json => render::json(&mut out, &trends)?,
                Format::Csv => sheet::trends(&mut out, &trends)?,
            }
        }
        Command::History {
            host,
            port,
            since,
            until,
            limit,
            after,
            output,
        } => {
            let (since, until) = (time(since.as_deref())?, time(until.as_deref())?);
            let page = client::Page {
                limit: *limit,
                after: after.as_deref(),
            };
            let client::History { rows, next, kept_since } = client.history(host, *port, since, until, page)?;
            listeners(&mut out, &rows, output.resolve(cli.json), &tz, true)?;
            if let Some(start) = kept_since {
                eprintln!(
                    "portwatch: the collector keeps history from {} on ([retention] history): listeners that closed \
                     before it are not shown",
                    render::local(start, &tz)
                );
            }
            if let Some(next) = next {
                eprintln!(
                    "portwatch: showing {} intervals, the oldest first; there are more: add --after {next} for the next ones",
                    rows.len()
                );
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// Listener intervals (`ports`, `who`, `history`: `with_closed`) in `format`.
fn listeners(
    out: &mut impl Write,
    rows: &[portwatch_model::ListenerRow],
    format: Format,
    tz: &TimeZone,
    with_closed: bool,
) -> std::io::Result<()> {
    match format {
        Format::Table => render::listeners(out, rows, tz, with_closed),
        Format::Json => render::json(out, &rows),
        Format::Csv => sheet::listeners(out, rows),
    }
}

/// `portwatch baseline ...`
fn baseline(
    client: &Client,
    action: &BaselineCommand,
    json: bool,
    tz: &TimeZone,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let read = |file: &std::path::Path| -> anyhow::Result<(String, portwatch_model::baseline::Baseline)> {
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        let parsed = portwatch_model::baseline::parse(&text).with_context(|| file.display().to_string())?;
        Ok((text, parsed))
    };
    match action {
        BaselineCommand::Check { file } => {
            let (_, b) = read(file)?;
            writeln!(
                out,
                "{}: OK (baseline {:?}, {} expected listener(s))",
                file.display(),
                b.name,
                b.listeners.len()
            )?;
        }
        BaselineCommand::Apply { file, comment } => {
            let (text, _) = read(file)?;
            let applied = client.apply_baseline(&text, Some(comment))?;
            if json {
                render::json(out, &applied)?;
            } else {
                writeln!(
                    out,
                    "baseline {:?}: {} ({} expected listener(s))",
                    applied.name,
                    match applied.action {
                        BaselineAction::Create => "created",
                        BaselineAction::Update => "updated",
                        BaselineAction::Unchanged => "unchanged (the same file is applied already)",
                        BaselineAction::Remove => "removed",
                    },
                    applied.listeners
                )?;
            }
        }
        BaselineCommand::Learn { host, name } => {
            write!(out, "{}", client.learn(host, name.as_deref())?)?;
        }
        BaselineCommand::List { output } => {
            let list = client.baselines()?;
            match output.resolve(json) {
                Format::Table => render::baselines(out, &list, tz)?,
                Format::Json => render::json(out, &list)?,
                Format::Csv => sheet::baselines(out, &list)?,
            }
        }
        BaselineCommand::Show { name } => {
            let list = client.baselines()?;
            let Some(b) = list.into_iter().find(|b| &b.stored.name == name) else {
                anyhow::bail!("no baseline {name:?}; `portwatch baseline list` shows them");
            };
            if json {
                render::json(out, &b)?;
            } else {
                write!(out, "{}", b.stored.source)?;
            }
        }
        BaselineCommand::Log { name, output } => {
            let log = client.baseline_log(name.as_deref())?;
            match output.resolve(json) {
                Format::Table => render::baseline_log(out, &log, tz)?,
                Format::Json => render::json(out, &log)?,
                Format::Csv => sheet::baseline_log(out, &log)?,
            }
        }
        BaselineCommand::Remove { name, comment } => {
            client.remove_baseline(name, Some(comment))?;
            if json {
                render::json(out, &serde_json::json!({ "name": name, "action": "remove" }))?;
            } else {
                writeln!(out, "baseline {name:?} removed")?;
            }
        }
    }
    Ok(())
}
