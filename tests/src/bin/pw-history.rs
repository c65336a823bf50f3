//! The history benchmark: a month of a fleet's history loaded through the
//! store, then `who` and `ports --at` asked over HTTP of a real collector
//! (see `portwatch_tests::history`). Run it with
//! `bash collector/benches/history.sh [HOSTS]`, which builds the release
//! binaries first.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use portwatch_tests::history::{self, Plan};

/// A month of a fleet's listener changes loaded through the store, then
/// `who --port 22` (now and at past instants) and `ports --host H --at T`
/// asked over HTTP of a real collector on loopback; p50 and p99 of each.
#[derive(Parser)]
#[command(name = "pw-history")]
struct Args {
    /// Hosts.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    hosts: u64,
    /// Listeners per host.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=50))]
    listeners: u64,
    /// Days of history, ending now.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    days: u32,
    /// Listener restarts per host per day.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    restarts: u32,
    /// Queries of each kind.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    queries: u64,
    /// The collector binary (default: beside this one).
    #[arg(long)]
    collector: Option<PathBuf>,
    /// The database: one that exists is asked as it is (not loaded again),
    /// one that does not is loaded and kept (default: a temporary one, removed).
    #[arg(long)]
    db: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pw-history: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let temp = std::env::temp_dir().join(format!("pw-history-{}", std::process::id()));
    let plan = Plan {
        hosts: args.hosts as usize,
        listeners: args.listeners as usize,
        days: args.days,
        restarts_per_day: args.restarts,
        queries: args.queries as usize,
        collector: portwatch_tests::beside_me(args.collector, "portwatch-collector")?,
        db: args.db.clone().unwrap_or_else(|| temp.join("collector.db")),
    };
    if args.db.is_none() {
        std::fs::create_dir_all(&temp).with_context(|| format!("cannot create {}", temp.display()))?;
    }
    let outcome = history::run(&plan, &mut |line| eprintln!("pw-history: {line}"));
    if args.db.is_none() {
        let _ = std::fs::remove_dir_all(&temp);
    }
    print!("{}", history::report(&plan, &outcome?));
    Ok(())
}
