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
    /// Where to write a screenshot of each view after its last load
    /// (`fleet.png`, `host-timeline.png`), and of the port, alerts, drift and
    /// trends views (`port.png`, `alerts.png`, `drift.png`, `trends.png`) after
    /// one load each.
    pub screenshots: Option<PathBuf>,
}

/// One view's first renders.
#[derive(Debug, Clone, Default)]
pub struct Renders {
    /// Milliseconds from navigation start to the view's rows in the document, sorted.
    pub ms: Vec<f64>,
    /// Rows (hosts) or bars (intervals) the view drew, at the last load.
    pub drawn: u64,
    /// The API requests of the slowest load: path and milliseconds from its
    /// start to its answer's end, and when it started (from navigation start).
    pub slowest: Requests,
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
    /// Loaded once each (name, its first render): the fleet view to its chart,
    /// and with screenshots the other views.
    pub others: Vec<(String, Renders)>,
}

/// Watches, in the page, on every animation frame, until `css` matches at
/// least one element, then keeps `[performance.now(), matches]` in
/// `window.pwFirst`: milliseconds since the page's navigation started; or
/// `[null, 0, text]` when the view shows an error instead. Returns at once
/// (the wait is the caller's: the WebDriver script timeout is 30 s, and a
/// fleet-wide trends answer takes longer on a month of 10,000 hosts).
const FIRST_RENDER: &str = "const css = arguments[0];
window.pwFirst = null;
const look = () => {
  const n = document.querySelectorAll(css).length;
  const error = document.querySelector('main .note.error');
  if (n > 0) window.pwFirst = [performance.now(), n];
  else if (error) window.pwFirst = [null, 0, error.textContent];
  else requestAnimationFrame(look);
};
look();
return true;";

/// The page's requests to the API: `[path, duration, start]` (ms).
const API_TIMINGS: &str = "return performance.getEntriesByType('resource')
  .filter((e) => e.name.includes('/api/v1/'))
  .map((e) => [new URL(e.name).pathname + new URL(e.name).search, e.responseEnd - e.startTime, e.startTime]);";

/// API requests of a page: path, milliseconds to its answer's end, start (from navigation start).
pub type Requests = Vec<(String, f64, f64)>;

/// Loads `view` afresh and waits for `css` in it: what [`FIRST_RENDER`]
/// answers (milliseconds, elements matched) and the API requests made.
/// When the page does not get there (the script's 30 s timeout), the error
/// says what it shows and what it asked the API meanwhile.
fn load(b: &Browser, view: &str, css: &str) -> anyhow::Result<(f64, u64, Requests)> {
    // A page load each time (the session cookie stays).
    b.goto("about:blank")?;
    b.goto(view)?;
    let timings = |b: &Browser| -> Requests {
        b.execute(API_TIMINGS, json!([]))
            .ok()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default()
    };
    b.execute(FIRST_RENDER, json!([css]))?;
    let first = b.wait(&format!("{css} in {view}"), Duration::from_secs(900), |b| {
        let v = b.execute("return window.pwFirst", json!([]))?;
        Ok((!v.is_null()).then_some(v))
    });
    let answer = match first {
        Ok(answer) => answer,
        Err(e) => {
            let shown = b
                .execute("return document.body.innerText.slice(0, 300)", json!([]))
                .unwrap_or_default();
            bail!(
                "{view}: no {css} ({e:#}); the page shows {shown}; its API requests: {:?}",
                timings(b)
            );
        }
    };
    let (Some(ms), Some(n)) = (answer[0].as_f64(), answer[1].as_u64()) else {
        bail!("{view}: the view shows an error instead of its rows: {answer}");
    };
    Ok((ms, n, timings(b)))
}

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
    // The page itself 1280x800 (a window of that size shows less).
    b.viewport(1280, 800)?;
    b.goto(&format!("{url}/"))?;
    let field = b.wait_for("#token", Duration::from_secs(20))?;
    b.type_into(&field, &reader)?;
    b.click(&b.wait_for("#signin-button", Duration::from_secs(5))?)?;
    b.wait_for("#hosts", Duration::from_secs(60))
        .context("the fleet view after sign-in")?;
    let since = (Timestamp::now() - SignedDuration::from_hours(24 * i64::from(plan.days))).to_string();
    // Timed views: the hash, what shows it is drawn, its screenshot.
    let views = [
        (format!("{url}/#/fleet"), "#hosts tr", "fleet.png"),
        (
            format!("{url}/#/host/{}?since={since}", plan.host),
            "#timeline rect.bar",
            "host-timeline.png",
        ),
    ];
    let mut measured = Vec::new();
    let mut chart = None;
    for (i, (view, css, shot)) in views.iter().enumerate() {
        let mut renders = Renders::default();
        let mut worst = f64::MIN;
        for _ in 0..plan.runs {
            let (ms, n, requests) = load(&b, view, css)?;
            if ms > worst {
                worst = ms;
                renders.slowest = requests;
            }
            renders.ms.push(ms);
            renders.drawn = n;
        }
        renders.ms.sort_by(f64::total_cmp);
        progress(&format!("{view}: {} loads", renders.ms.len()));
        if i == 0 {
            // Every load of the fleet view asked the collector for the fleet's
            // trends (its chart, drawn after the table), a heavy read that goes
            // on after the page has moved on and holds one of the collector's
            // 4 turns for heavy reads (history, trends) until it ends: while
            // 4 run, the next is refused (503). Loads are made again until the
            // chart is drawn, so that the next view starts on an idle
            // collector; the last one's time to its chart is reported.
            let drained = std::time::Instant::now();
            let mut refused = 0;
            let drawn = loop {
                match load(&b, view, "#fleet-chart canvas") {
                    Ok(drawn) => break drawn,
                    Err(e) if format!("{e:#}").contains("must wait its turn") && refused < 200 => {
                        refused += 1;
                        std::thread::sleep(Duration::from_secs(5));
                    }
                    Err(e) => return Err(e),
                }
            };
            progress(&format!(
                "the fleet chart drawn {:.0} s after the timed loads ({refused} loads refused by the heavy-read gate first)",
                drained.elapsed().as_secs_f64()
            ));
            let (ms, n, requests) = drawn;
            chart = Some(Renders {
                ms: vec![ms],
                drawn: n,
                slowest: requests,
            });
        }
        if let Some(dir) = &plan.screenshots {
            std::fs::create_dir_all(dir)?;
            if css.starts_with("#timeline") {
                // The timeline itself, below the listeners table.
                b.execute(
                    "[...document.querySelectorAll('h2')].find((h) => h.textContent === 'Timeline').scrollIntoView(); return true;",
                    json!([]),
                )?;
            }
            b.screenshot(&dir.join(shot))?;
        }
        measured.push(renders);
    }
    let mut others: Vec<(String, Renders)> = chart
        .into_iter()
        .map(|r| ("fleet view's chart (GET /trends)".to_owned(), r))
        .collect();
    if let Some(dir) = &plan.screenshots {
        for (name, view, css) in [
            ("port 22 (every host)", format!("{url}/#/port/22"), "#port-history tr"),
            ("alerts", format!("{url}/#/alerts?state=all"), "#alert-filters"),
            ("drift", format!("{url}/#/drift"), "#drift-filters"),
            ("trends", format!("{url}/#/trends?bucket=day"), "#trend-chart canvas"),
        ] {
            let (ms, n, requests) = load(&b, &view, css)?;
            let shot = name.split(' ').next().unwrap_or(name);
            b.screenshot(&dir.join(format!("{shot}.png")))?;
            progress(&format!("{view}: loaded once for its screenshot ({ms:.0} ms)"));
            others.push((
                name.to_owned(),
                Renders {
                    ms: vec![ms],
                    drawn: n,
                    slowest: requests,
                },
            ));
        }
    }
    drop(b);
    let _ = std::fs::remove_dir_all(&profile);
    server.stop()?;
    let timeline = measured.pop().unwrap_or_default();
    let fleet = measured.pop().unwrap_or_default();
    Ok(Outcome {
        fleet,
        timeline,
        hosts,
        others,
    })
}

/// The outcome as the report's lines.
pub fn report(plan: &Plan, o: &Outcome) -> String {
    let line = |what: &str, r: &Renders, unit: &str| {
        let slowest = r
            .slowest
            .iter()
            .map(|(path, ms, at)| format!("{path} {ms:.0} ms from {at:.0} ms"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "{what:<34} p50 {:>6.0} ms, p95 {:>6.0} ms, max {:>6.0} ms ({} loads, {} {unit} drawn)\n{:<34} slowest load's API requests: {slowest}\n",
            r.quantile(0.5),
            r.quantile(0.95),
            r.quantile(1.0),
            r.ms.len(),
            r.drawn,
            ""
        )
    };
    let mut out = format!(
        "dashboard first render: {} hosts, headless Chromium 1280x800, time from navigation start to the view's rows\n{}{}",
        o.hosts,
        line("fleet view (a page of hosts)", &o.fleet, "host rows"),
        line(&format!("host timeline, {} days", plan.days), &o.timeline, "interval bars"),
    );
    for (name, r) in &o.others {
        out.push_str(&line(&format!("{name}, once"), r, "elements"));
    }
    out
}
