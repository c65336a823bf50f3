//! The pruning benchmark (see `portwatch_tests::prune`): heartbeats' latency
//! without pruning and while the collector's pruner deletes expired history
//! from a month-benchmark database. Load one first, then prune a copy:
//!
//! ```sh
//! bash collector/benches/history.sh 10000 --days 60 --db /var/tmp/pw-60d.db
//! cp /var/tmp/pw-60d.db /var/tmp/pw-prune.db
//! target/release/pw-prune --db /var/tmp/pw-prune.db
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use portwatch_tests::prune::{self, Plan};

/// Heartbeats' latency without pruning, then while the collector's
/// background pruner deletes what `[retention] history` lets go.
#[derive(Parser)]
#[command(name = "pw-prune")]
struct Args {
    /// The history database (pruned in place: give a copy).
    #[arg(long)]
    db: PathBuf,
    /// Honest hosts, each heartbeating every second.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    hosts: u64,
    /// Seconds of heartbeats measured before pruning starts.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    baseline: u64,
    /// `[retention] history` for the run.
    #[arg(long, default_value = "30d")]
    history: String,
    /// The collector binary (default: beside this one).
    #[arg(long)]
    collector: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let plan = match portwatch_tests::beside_me(args.collector, "portwatch-collector") {
        Ok(collector) => Plan {
            collector,
            db: args.db,
            hosts: args.hosts as usize,
            baseline: Duration::from_secs(args.baseline),
            history: args.history,
        },
        Err(e) => {
            eprintln!("pw-prune: error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match prune::run(&plan, &mut |line| eprintln!("pw-prune: {line}")) {
        Ok(outcome) => {
            print!("{}", prune::report(&plan, &outcome));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pw-prune: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
