//! The dashboard's first-render benchmark: a real `portwatch-collector
//! serve` on a month-benchmark database (`pw-history --db FILE`), Debian's
//! headless Chromium signed in with a read token, and the time from the
//! start of a page load to the first render of a view, as the page itself
//! measures it (`performance.now()`, from navigation start, once the view's
//! rows are in the document): the fleet view (a page of hosts out of all of
//! them) and a host's timeline over 30 days.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use jiff::{SignedDuration, Timestamp};
use portwatch_collector::store::sqlite::SqliteStore;
use portwatch_collector::store::TokenRow;
use portwatch_collector::token;
use portwatch_model::Role;
use serde_json::json;

use crate::browser::Browser;
use crate::fleet;

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The collector binary.
    pub collector: PathBuf,
    /// The month benchmark's database (read only: a token is added).
    pub db: PathBuf,
    /// Page loads timed for each view.
    pub runs: usize,
    /// The host whose timeline is drawn.
    pub host: String,
    /// The timeline's window, in days back from now.
    pub days: u32,
    /// Where to write a screenshot of each view after its last load (`fleet.png`, `host-timeline.png`).
    pub screenshots: Option<PathBuf>,
}

/// One view's first renders.
#[derive(Debug, Clone, Default)]
pub struct Renders {
    /// Milliseconds from navigation start to the view's rows in the document, sorted.
    pub ms: Vec<f64>,
    /// Rows (hosts) or bars (intervals) the view drew, at the last load.
    pub drawn: u64,
}

impl Renders {
    /// The `q` quantile (0 to 1) of the times.
    pub fn quantile(&self, q: f64) -> f64 {
        match self.ms.len() {
            0 => f64::NAN,
            n => self.ms[((n - 1) as f64 * q).round() as usize],
        }
    }
}

/// What was measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The fleet view.
    pub fleet: Renders,
    /// The host's timeline.
    pub timeline: Renders,
    /// Hosts in the database.
    pub hosts: u64,
}

/// Waits, in the page, until `css` matches at least one element, then
/// answers `[performance.now(), matches]`: milliseconds since the page's
/// navigation started; or `[null, 0, text]` when the view shows an error
/// instead. Polls on every animation frame.
const FIRST_RENDER: &str = "const [css, done] = [arguments[0], arguments[arguments.length - 1]];
const look = () => {
  const n = document.querySelectorAll(css).length;
  const error = document.querySelector('main .note.error');
  if (n > 0) done([performance.now(), n]);
  else if (error) done([null, 0, error.textContent]);
  else requestAnimationFrame(look);
};
look();";

/// Runs the benchmark; `progress` gets a line per phase.
pub fn run(plan: &Plan, progress: &mut dyn FnMut(&str)) -> anyhow::Result<Outcome> {
    let name = format!("render-reader-{}", Timestamp::now().as_nanosecond());
    let reader = format!("{}{name}", token::PREFIX);
    let hosts = {
        let store = SqliteStore::open(&plan.db).with_context(|| format!("cannot open {}", plan.db.display()))?;
        store.create_tokens(&[TokenRow {
            name,
            role: Role::Read,
            host: None,
            hash: token::hash(&reader),
            created_at: Timestamp::now(),
            revoked_at: None,
        }])?;
        rusqlite::Connection::open(&plan.db)?.query_row("SELECT count(*) FROM hosts", [], |r| r.get::<_, i64>(0))?
            as u64
    };
    let server = fleet::Server::start(&plan.collector, &plan.db)?;
    let url = server.url.clone();
    progress(&format!("collector listening on {url}; {hosts} hosts"));
    let profile = std::env::temp_dir().join(format!("pw-render-{}", std::process::id()));
    let b = Browser::start(&profile, 1280, 800)?;
    b.goto(&format!("{url}/"))?;
    let field = b.wait_for("#token", Duration::from_secs(20))?;
    b.type_into(&field, &reader)?;
    b.click(&b.wait_for("#signin-button", Duration::from_secs(5))?)?;
    b.wait_for("#hosts", Duration::from_secs(60))
        .context("the fleet view after sign-in")?;
    let since = (Timestamp::now() - SignedDuration::from_hours(24 * i64::from(plan.days))).to_string();
    let views = [
        (format!("{url}/#/fleet"), "#hosts tr", "fleet.png"),
        (
            format!("{url}/#/host/{}?since={since}", plan.host),
            "#timeline rect.bar",
            "host-timeline.png",
        ),
    ];
    let mut measured = Vec::new();
    for (view, css, shot) in &views {
        let mut renders = Renders::default();
        for _ in 0..plan.runs {
            // A page load each time (the session cookie stays).
            b.goto("about:blank")?;
            b.goto(view)?;
            let answer = b.execute_async(FIRST_RENDER, json!([css]))?;
            let (Some(ms), Some(n)) = (answer[0].as_f64(), answer[1].as_u64()) else {
                bail!("{view}: the view shows an error instead of its rows: {answer}");
            };
            renders.ms.push(ms);
            renders.drawn = n;
        }
        renders.ms.sort_by(f64::total_cmp);
        if let Some(dir) = &plan.screenshots {
            std::fs::create_dir_all(dir)?;
            b.screenshot(&dir.join(shot))?;
        }
        progress(&format!("{view}: {} loads", renders.ms.len()));
        measured.push(renders);
    }
    drop(b);
    let _ = std::fs::remove_dir_all(&profile);
    server.stop()?;
    let timeline = measured.pop().unwrap_or_default();
    let fleet = measured.pop().unwrap_or_default();
    Ok(Outcome { fleet, timeline, hosts })
}

/// The outcome as the report's lines.
pub fn report(plan: &Plan, o: &Outcome) -> String {
    let line = |what: &str, r: &Renders, unit: &str| {
        format!(
            "{what:<34} p50 {:>6.0} ms, max {:>6.0} ms ({} loads, {} {unit} drawn)\n",
            r.quantile(0.5),
            r.quantile(1.0),
            r.ms.len(),
            r.drawn
        )
    };
    format!(
        "dashboard first render: {} hosts, headless Chromium 1280x800, time from navigation start to the view's rows\n{}{}",
        o.hosts,
        line("fleet view (a page of hosts)", &o.fleet, "host rows"),
        line(&format!("host timeline, {} days", plan.days), &o.timeline, "interval bars"),
    )
}
