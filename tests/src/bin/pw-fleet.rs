//! The fleet benchmark: many agents' traffic from one process against a real
//! `portwatch-collector serve` on loopback (see `portwatch_tests::fleet`).
//! Run it with `bash collector/benches/fleet.sh [HOSTS]`, which builds the
//! release binaries first.
//!
//! ```text
//! pw-fleet [--hosts 10000] [--listeners 50] [--intervals 20] [--quiet 5] [--change-every 100]
//!          [--clients 32] [--who 200] [--time-limit 240] [--collector PATH] [--dir DIR] [--keep]
//! ```
//! Exit status: 0 when every check passed, 1 when one failed or the run could not be made.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use portwatch_tests::fleet::{self, Plan};

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pw-fleet: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe()?;
    let mut plan = Plan {
        hosts: 10_000,
        listeners: 50,
        intervals: 20,
        quiet_intervals: 5,
        change_every: 100,
        clients: 32,
        who_queries: 200,
        time_limit: Duration::from_secs(240),
        collector: exe.with_file_name("portwatch-collector"),
        dir: std::env::temp_dir().join(format!("pw-fleet-{}", std::process::id())),
    };
    let mut keep = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--keep" {
            keep = true;
            continue;
        }
        if flag == "--help" || flag == "-h" {
            println!("{}", usage());
            return Ok(ExitCode::SUCCESS);
        }
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value\n{}", usage()))?;
        let number = || {
            value
                .parse::<usize>()
                .with_context(|| format!("{flag} {value:?}: not a number"))
        };
        match flag.as_str() {
            "--hosts" => plan.hosts = number()?,
            "--listeners" => plan.listeners = number()?,
            "--intervals" => plan.intervals = number()?,
            "--quiet" => plan.quiet_intervals = number()?,
            "--change-every" => plan.change_every = number()?.max(1),
            "--clients" => plan.clients = number()?.max(1),
            "--who" => plan.who_queries = number()?,
            "--time-limit" => plan.time_limit = Duration::from_secs(number()? as u64),
            "--collector" => plan.collector = PathBuf::from(&value),
            "--dir" => plan.dir = PathBuf::from(&value),
            _ => bail!("unknown option {flag}\n{}", usage()),
        }
    }
    if !plan.collector.exists() {
        bail!(
            "{} is missing: build it (cargo build --release -p portwatch-collector) or give --collector PATH",
            plan.collector.display()
        );
    }
    if plan.dir.exists() && std::fs::read_dir(&plan.dir)?.next().is_some() {
        bail!("{} is not empty: give an empty or new --dir", plan.dir.display());
    }
    std::fs::create_dir_all(&plan.dir).with_context(|| format!("cannot create {}", plan.dir.display()))?;
    let outcome = fleet::run(&plan, &mut |line| eprintln!("pw-fleet: {line}"));
    if !keep {
        let _ = std::fs::remove_dir_all(&plan.dir);
    }
    let outcome = outcome?;
    print!("{}", fleet::report(&plan, &outcome));
    Ok(match outcome.problems().is_empty() {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    })
}

fn usage() -> &'static str {
    "usage: pw-fleet [--hosts 10000] [--listeners 50] [--intervals 20] [--quiet 5] [--change-every 100] \
     [--clients 32] [--who 200] [--time-limit 240] [--collector PATH] [--dir DIR] [--keep]"
}
