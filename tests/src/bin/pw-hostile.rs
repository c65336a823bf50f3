//! The hostile-fleet benchmark: an honest simulated fleet heartbeating every
//! second while one attack at a time hits a real `portwatch-collector serve`
//! on loopback (see `portwatch_tests::hostile`). Run it with
//! `bash collector/benches/hostile.sh [HOSTS]`, which builds the release
//! binaries first.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use portwatch_tests::hostile::{self, Attack, Plan};

/// Replays the attacks of a hostile or broken fleet against a release
/// collector while honest hosts report, and prints what each cost them.
#[derive(Parser)]
#[command(name = "pw-hostile")]
struct Args {
    /// Honest hosts, each sending a heartbeat every second.
    #[arg(long, default_value_t = 1_000)]
    hosts: usize,
    /// Seconds each attack lasts.
    #[arg(long, default_value_t = 20)]
    phase: u64,
    /// Only these attacks (comma-separated; default: all, in order).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Attack>,
    /// The collector binary (default: the one beside this program).
    #[arg(long)]
    collector: Option<PathBuf>,
    /// An empty directory for the database (default: a new one under the temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pw-hostile: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let plan = Plan {
        collector: portwatch_tests::beside_me(args.collector, "portwatch-collector")?,
        dir: args
            .dir
            .unwrap_or_else(|| std::env::temp_dir().join(format!("pw-hostile-{}", std::process::id()))),
        hosts: args.hosts,
        phase: Duration::from_secs(args.phase.max(5)),
        attacks: match args.only.is_empty() {
            true => Attack::ALL.to_vec(),
            false => args.only,
        },
    };
    if plan.dir.exists() && std::fs::read_dir(&plan.dir)?.next().is_some() {
        bail!("{} is not empty: give an empty or new --dir", plan.dir.display());
    }
    std::fs::create_dir_all(&plan.dir).with_context(|| format!("cannot create {}", plan.dir.display()))?;
    let results = hostile::run(&plan, &mut |line| eprintln!("{line}"));
    let _ = std::fs::remove_dir_all(&plan.dir);
    println!("{}", hostile::report(&plan, &results?));
    Ok(())
}
