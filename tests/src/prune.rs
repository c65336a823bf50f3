//! The pruning benchmark: a real `portwatch-collector serve` on a history
//! database (the month benchmark's, `pw-history --db FILE`), with a fleet of
//! honest agents heartbeating every second (`pw-hostile`'s), first without
//! pruning, then while the collector's background pruner deletes what
//! `[retention] history` lets go. Compares the heartbeats' latency in the
//! two windows. The database is pruned in place: load a copy.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use jiff::Timestamp;
use portwatch_collector::store::sqlite::SqliteStore;
use portwatch_collector::store::{TokenRow, Tokens};
use portwatch_collector::token;
use portwatch_model::Role;

use crate::hostile::{self, Latency};

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The collector binary.
    pub collector: PathBuf,
    /// The history database, pruned in place.
    pub db: PathBuf,
    /// Honest hosts, each heartbeating every second.
    pub hosts: usize,
    /// How long the heartbeats are measured without pruning.
    pub baseline: Duration,
    /// `[retention] history` for the run (`"30d"`).
    pub history: String,
}

/// What was measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Heartbeats without pruning.
    pub before: Latency,
    /// Heartbeats while the pass ran.
    pub during: Latency,
    /// How long the pass took.
    pub pass: Duration,
    /// Intervals before and after.
    pub intervals: (i64, i64),
    /// The database file's size before and after, in bytes.
    pub bytes: (u64, u64),
    /// The pruner's counters from `/metrics`.
    pub counters: Vec<String>,
}

/// How long the honest fleet's first snapshots are given before measuring.
const WARM_UP: Duration = Duration::from_secs(5);

/// Runs the benchmark; `progress` gets a line per phase.
pub fn run(plan: &Plan, progress: &mut dyn FnMut(&str)) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::default();
    let count = || -> anyhow::Result<i64> {
        Ok(rusqlite::Connection::open(&plan.db)?.query_row("SELECT count(*) FROM intervals", [], |r| r.get(0))?)
    };
    outcome.intervals.0 = count()?;
    outcome.bytes.0 = std::fs::metadata(&plan.db)?.len();
    honest_tokens(plan)?;
    let dir = plan.db.parent().context("the database has no directory")?;
    let config = dir.join("pw-prune.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndb = {:?}\n[metrics]\npublic = true\n[retention]\nhistory = {:?}\n",
            plan.db.display().to_string(),
            plan.history
        ),
    )?;
    // The pass starts once the window without pruning is over (a test-only setting).
    let prune_after = WARM_UP + plan.baseline;
    std::env::set_var(
        portwatch_collector::pruner::TEST_FIRST_PASS_ENV,
        format!("{}ms", prune_after.as_millis()),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the benchmark's runtime")?;
    let server = hostile::Server::start(&plan.collector, &config)?;
    let started = Instant::now();
    progress(&format!(
        "collector on {}; {} hosts heartbeating",
        server.addr, plan.hosts
    ));
    let record: hostile::Record = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let fleet = runtime.spawn(hostile::honest_fleet(
        server.addr,
        plan.hosts,
        record.clone(),
        stop.clone(),
    ));
    let agent = crate::fleet::http_agent();
    let metrics_url = format!("http://{}/metrics", server.addr);
    let passes = |agent: &ureq::Agent| -> anyhow::Result<(u64, Vec<String>)> {
        let mut response = agent.get(&metrics_url).call()?;
        let text = portwatch_fixtures::without_collector_label(&response.body_mut().read_to_string()?);
        let lines: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("portwatch_retention_") && !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        let n = lines
            .iter()
            .find_map(|l| l.strip_prefix("portwatch_retention_passes_total "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        Ok((n, lines))
    };
    std::thread::sleep(prune_after);
    progress("pruning");
    let pass_start = started + prune_after;
    let pass_end = loop {
        std::thread::sleep(Duration::from_millis(200));
        let (n, lines) = passes(&agent)?;
        if n > 0 {
            outcome.counters = lines;
            break Instant::now();
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(3600),
            "the pass took more than an hour"
        );
    };
    stop.store(true, Ordering::Relaxed);
    let _ = runtime.block_on(fleet);
    drop(server);
    outcome.before = hostile::latency(&record, started + WARM_UP, pass_start);
    outcome.during = hostile::latency(&record, pass_start, pass_end);
    outcome.pass = pass_end - pass_start;
    outcome.intervals.1 = count()?;
    outcome.bytes.1 = std::fs::metadata(&plan.db)?.len();
    let _ = std::fs::remove_file(&config);
    Ok(outcome)
}

/// Agent tokens of the honest hosts, unless an earlier run made them.
fn honest_tokens(plan: &Plan) -> anyhow::Result<()> {
    let store = SqliteStore::open(&plan.db)?;
    let now = Timestamp::now();
    let rows: Vec<TokenRow> = (0..plan.hosts)
        .map(hostile::host_name)
        .filter(|name| !matches!(store.token_by_hash(&token::hash(&hostile::secret(name))), Ok(Some(_))))
        .map(|name| TokenRow {
            name: format!("agent:{name}"),
            role: Role::Agent,
            hash: token::hash(&hostile::secret(&name)),
            host: Some(name),
            created_at: now,
            revoked_at: None,
        })
        .collect();
    store.create_tokens(&rows)?;
    Ok(())
}

/// The report: a table of the two windows, and what was pruned.
pub fn report(plan: &Plan, o: &Outcome) -> String {
    let ms = hostile::ms;
    let row = |what: &str, l: &Latency| {
        format!(
            "| {what} | {} | {:.1} ms | {:.1} ms | {:.0} ms |\n",
            l.ok + l.failed,
            ms(l.p50),
            ms(l.p99),
            ms(l.max)
        )
    };
    let mut text = format!(
        "pw-prune: {} honest hosts heartbeating every second; [retention] history = {}\n\n\
         | window | heartbeats | p50 | p99 | max |\n|---|---:|---:|---:|---:|\n",
        plan.hosts, plan.history
    );
    text.push_str(&row(&format!("{:.0?} without pruning", plan.baseline), &o.before));
    text.push_str(&row(&format!("{:.1?} of the pruning pass", o.pass), &o.during));
    text.push_str(&format!(
        "\nintervals {} -> {}; file {:.1} -> {:.1} MiB; p99 during / before = {:.2}\n",
        o.intervals.0,
        o.intervals.1,
        o.bytes.0 as f64 / 1048576.0,
        o.bytes.1 as f64 / 1048576.0,
        ms(o.during.p99) / ms(o.before.p99).max(0.001)
    ));
    for line in &o.counters {
        text.push_str(line);
        text.push('\n');
    }
    text
}
