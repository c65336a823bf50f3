//! The history benchmark: a month of a fleet's history loaded through the
//! store, then `who` and `ports --at` asked over HTTP of a real collector
//! (see `portwatch_tests::history`). Run it with
//! `bash collector/benches/history.sh [HOSTS]`, which builds the release
//! binaries first.
//!
//! ```text
//! pw-history [--hosts 10000] [--listeners 20] [--days 30] [--restarts 5] [--queries 200]
//!            [--collector PATH] [--db FILE]
//! ```
//! With `--db FILE`, a database that exists is asked as it is (not loaded
//! again) and one that does not is loaded and kept; without it, a temporary
//! one is loaded and removed.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use portwatch_tests::history::{self, Plan};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pw-history: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let temp = std::env::temp_dir().join(format!("pw-history-{}", std::process::id()));
    let mut plan = Plan {
        hosts: 10_000,
        listeners: 20,
        days: 30,
        restarts_per_day: 5,
        queries: 200,
        collector: exe.with_file_name("portwatch-collector"),
        db: temp.join("collector.db"),
    };
    let mut kept = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            println!("{}", usage());
            return Ok(());
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
            "--hosts" => plan.hosts = number()?.max(1),
            "--listeners" => plan.listeners = number()?,
            "--days" => plan.days = u32::try_from(number()?.max(1))?,
            "--restarts" => plan.restarts_per_day = u32::try_from(number()?.max(1))?,
            "--queries" => plan.queries = number()?.max(1),
            "--collector" => plan.collector = PathBuf::from(&value),
            "--db" => {
                plan.db = PathBuf::from(&value);
                kept = true;
            }
            _ => bail!("unknown option {flag}\n{}", usage()),
        }
    }
    if !plan.collector.exists() {
        bail!(
            "{} is missing: build it (cargo build --release -p portwatch-collector) or give --collector PATH",
            plan.collector.display()
        );
    }
    if !kept {
        std::fs::create_dir_all(&temp).with_context(|| format!("cannot create {}", temp.display()))?;
    }
    let outcome = history::run(&plan, &mut |line| eprintln!("pw-history: {line}"));
    if !kept {
        let _ = std::fs::remove_dir_all(&temp);
    }
    print!("{}", history::report(&plan, &outcome?));
    Ok(())
}

fn usage() -> &'static str {
    "usage: pw-history [--hosts 10000] [--listeners 20] [--days 30] [--restarts 5] [--queries 200] \
     [--collector PATH] [--db FILE]"
}
