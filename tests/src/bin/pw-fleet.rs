//! The fleet benchmark: many agents' traffic from one process against a real
//! `portwatch-collector serve` on loopback (see `portwatch_tests::fleet`).
//! Run it with `bash collector/benches/fleet.sh [HOSTS]`, which builds the
//! release binaries first. Exit status: 0 when every check passed, 1 when
//! one failed or the run could not be made.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use portwatch_tests::fleet::{self, Plan};

/// Many agents' traffic from one process against a real collector on
/// loopback: every host's snapshot, rounds of heartbeats with 1 % deltas,
/// rounds of heartbeats only; then `who --port 22` latency and checks of what
/// was stored.
#[derive(Parser)]
#[command(name = "pw-fleet")]
struct Args {
    /// Hosts (agents), each with its own token.
    #[arg(long, default_value_t = 10_000)]
    hosts: usize,
    /// Listeners per host.
    #[arg(long, default_value_t = 50)]
    listeners: usize,
    /// Rounds in which 1 host in `--change-every` sends a delta and the rest heartbeats.
    #[arg(long, default_value_t = 20)]
    intervals: usize,
    /// Rounds of heartbeats only.
    #[arg(long, default_value_t = 5)]
    quiet: usize,
    /// One host in this many changes a listener per mixed round.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    change_every: u64,
    /// Client threads, one keep-alive HTTP connection each.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    clients: u64,
    /// `who` queries timed after the load (also one every 100 ms during the mixed rounds).
    #[arg(long, default_value_t = 200)]
    who: usize,
    /// Seconds from the first snapshot after which no request is started (the run is cut short).
    #[arg(long, default_value_t = 240)]
    time_limit: u64,
    /// The collector binary (default: beside this one).
    #[arg(long)]
    collector: Option<PathBuf>,
    /// An empty or new directory for the database (default: a temporary one).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the directory afterwards.
    #[arg(long)]
    keep: bool,
    /// A PostgreSQL server to run against (a postgresql:// URL or libpq key=value pairs) instead of a SQLite
    /// file: the run makes a schema of its own there and drops it afterwards.
    #[arg(long, value_name = "URL")]
    db: Option<String>,
    /// Collectors serving the database, the simulated hosts spread over them (more than one needs --db).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    collectors: u64,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pw-fleet: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let plan = Plan {
        hosts: args.hosts,
        listeners: args.listeners,
        intervals: args.intervals,
        quiet_intervals: args.quiet,
        change_every: args.change_every as usize,
        clients: args.clients as usize,
        who_queries: args.who,
        time_limit: Duration::from_secs(args.time_limit),
        collector: portwatch_tests::beside_me(args.collector, "portwatch-collector")?,
        dir: args
            .dir
            .unwrap_or_else(|| std::env::temp_dir().join(format!("pw-fleet-{}", std::process::id()))),
        database: match args.db {
            Some(url) => fleet::Database::Postgres(url),
            None => fleet::Database::Sqlite,
        },
        collectors: args.collectors as usize,
    };
    if plan.collectors > 1 && plan.database == fleet::Database::Sqlite {
        bail!(
            "--collectors {} needs --db postgresql://...: several collectors share one PostgreSQL database",
            plan.collectors
        );
    }
    if plan.dir.exists() && std::fs::read_dir(&plan.dir)?.next().is_some() {
        bail!("{} is not empty: give an empty or new --dir", plan.dir.display());
    }
    std::fs::create_dir_all(&plan.dir).with_context(|| format!("cannot create {}", plan.dir.display()))?;
    let outcome = fleet::run(&plan, &mut |line| eprintln!("pw-fleet: {line}"));
    if !args.keep {
        let _ = std::fs::remove_dir_all(&plan.dir);
    }
    let outcome = outcome?;
    print!("{}", fleet::report(&plan, &outcome));
    Ok(match outcome.problems().is_empty() {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    })
}
