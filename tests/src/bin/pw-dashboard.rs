//! The dashboard's first-render benchmark (see `portwatch_tests::render`):
//! the fleet view and a host's 30-day timeline on a month-benchmark
//! database, in Debian's headless Chromium. Load a database first:
//!
//! ```sh
//! bash collector/benches/history.sh 10000 --db /var/tmp/pw-month.db
//! target/release/pw-dashboard --db /var/tmp/pw-month.db
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use portwatch_tests::render::{self, Plan};

/// Time to the first render of the dashboard's fleet view and of a host's
/// timeline, on a month of a fleet's history.
#[derive(Parser)]
#[command(name = "pw-dashboard")]
struct Args {
    /// The month benchmark's database (`pw-history --db FILE`); a read token is added to it.
    #[arg(long)]
    db: PathBuf,
    /// Page loads timed for each view.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
    runs: u64,
    /// The host whose timeline is drawn.
    #[arg(long, default_value = "host-00042.fleet.example")]
    host: String,
    /// The timeline's window, in days back from now.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=400))]
    days: u32,
    /// The collector binary (default: beside this one).
    #[arg(long)]
    collector: Option<PathBuf>,
    /// Writes a screenshot of each view into this directory: fleet.png and host-timeline.png after
    /// their last timed load, port.png (port 22), alerts.png, drift.png and trends.png after one load each.
    #[arg(long)]
    screenshots: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let collector = args.collector.unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("portwatch-collector")))
            .unwrap_or_else(|| PathBuf::from("portwatch-collector"))
    });
    let plan = Plan {
        collector,
        db: args.db,
        runs: args.runs as usize,
        host: args.host,
        days: args.days,
        screenshots: args.screenshots,
    };
    match render::run(&plan, &mut |line| eprintln!("pw-dashboard: {line}")) {
        Ok(outcome) => {
            print!("{}", render::report(&plan, &outcome));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pw-dashboard: {e:#}");
            ExitCode::FAILURE
        }
    }
}
