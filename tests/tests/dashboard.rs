//! The dashboard in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`), served by a real collector that a real agent reports
//! to: what a person sees and may do. Screenshots of each view go to
//! `target/dashboard-screenshots/`.
//!
//! No root needed: the agent attributes the test's own listeners (same
//! user). Chromium is required; without it the tests fail and say how to
//! install it (`tests/run.sh` does, as root).
// Test helpers panic on failure like the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;
use portwatch_tests::browser::Browser;
use portwatch_tests::{binary, create_token, eventually, portwatch_json, Agent, Collector, Listeners, TempDir};
use serde_json::{json, Value};

/// How long the page may take to show what the collector has.
const PAGE: Duration = Duration::from_secs(20);
/// How long the agent may take to report a change (its interval is 200 ms).
const SETTLE: Duration = Duration::from_secs(30);
const HOST: &str = "dash-1";
/// A process name a page would run, were it markup.
const HOSTILE: &str = "<img src=x onerror=alert(1)>";

/// One browser at a time: the machine has 2 cores.
static BROWSERS: Mutex<()> = Mutex::new(());

fn screenshots() -> PathBuf {
    // target/debug/deps/dashboard-HASH -> target/dashboard-screenshots
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().join("dashboard-screenshots")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A collector (alerts swept every second, `risky` a risky port), an agent
/// reporting this machine as [`HOST`] every 200 ms, and tokens.
struct Fleet {
    // Dropped in this order: the agent, the collector, then their files.
    _agent: Agent,
    collector: Collector,
    dir: TempDir,
    read: String,
    admin: String,
    agent_token: String,
}

fn fleet(tag: &str, risky: u16) -> Fleet {
    fleet_with(tag, risky, "")
}

/// [`fleet`], with more of the collector's config (whole tables, such as `[dashboard]`).
fn fleet_with(tag: &str, risky: u16, more_config: &str) -> Fleet {
    let dir = TempDir::new(tag).unwrap();
    let db = dir.path.join("collector.db");
    let config = dir.path.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndb = {:?}\n[alerts]\nsweep_every = \"1s\"\nstartup_grace = \"1s\"\n\
             risky_ports = [\"tcp/{risky}=test-db\"]\n{more_config}",
            db.to_str().unwrap()
        ),
    )
    .unwrap();
    let agent_token = create_token(&db, &["--host", HOST]).unwrap();
    let read = create_token(&db, &["--role", "read", "--name", "ops-read"]).unwrap();
    let admin = create_token(&db, &["--role", "admin", "--name", "ops-admin"]).unwrap();
    let collector = Collector::serve(&db, &[OsStr::new("--config"), config.as_os_str()]).unwrap();
    let agent = Agent::start(&collector.url, &agent_token, HOST, "200ms", &dir.path.join("spool")).unwrap();
    eventually(SETTLE, || {
        let hosts = portwatch_json(&collector.url, &read, &["hosts"]).ok()?;
        hosts.as_array()?.iter().any(|h| h["host"] == HOST).then_some(())
    })
    .expect("the agent reports");
    Fleet {
        dir,
        collector,
        _agent: agent,
        read,
        admin,
        agent_token,
    }
}

/// Whether the agent has reported a listener on `port` (open now).
fn reported(f: &Fleet, port: u16) -> bool {
    portwatch_json(&f.collector.url, &f.read, &["ports", "--host", HOST])
        .ok()
        .and_then(|v| v.as_array().map(|a| a.iter().any(|r| r["local_port"] == port)))
        .unwrap_or(false)
}

/// A copy of the `pw-listen` helper whose file is named `name`, listening
/// on loopback: the kernel names the process after the file (its first 15
/// bytes), and its command line starts with the whole name.
struct Named {
    child: Child,
    stdin: Option<ChildStdin>,
    pid: u32,
    port: u16,
}

impl Named {
    fn start(dir: &Path, name: &str) -> Named {
        let exe = dir.join(name);
        std::fs::copy(binary("pw-listen"), &exe).unwrap();
        let mut child = Command::new(&exe)
            .arg("tcp4:127.0.0.1:0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let opened: Value = serde_json::from_str(&line).unwrap();
        Named {
            child,
            stdin,
            pid: opened["pid"].as_u64().unwrap() as u32,
            port: opened["sockets"][0]["port"].as_u64().unwrap() as u16,
        }
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// Opens the dashboard and signs in by pasting `token`, as a person does.
fn sign_in(b: &Browser, url: &str, token: &str) {
    b.goto(&format!("{url}/")).unwrap();
    type_in(b, "#token", token);
    click(b, "#signin-button");
    b.wait_for("#hosts", PAGE).expect("the fleet view after sign-in");
}

/// The text of the first element matching `css` once `ok` holds for it.
fn wait_text(b: &Browser, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
    b.wait(what, PAGE, |b| {
        for e in b.find_all(css)? {
            let text = b.text(&e)?;
            if ok(&text) {
                return Ok(Some(text));
            }
        }
        Ok(None)
    })
    .unwrap()
}

/// Clicks the first element matching `css` once there is one (again if the
/// page replaced it meanwhile, as a refresh does).
fn click(b: &Browser, css: &str) {
    b.wait(&format!("clicking {css}"), PAGE, |b| match b.find_all(css)?.first() {
        Some(e) => b.click(e).map(Some),
        None => Ok(None),
    })
    .unwrap()
}

/// Empties the first input matching `css` and types `text` into it.
fn type_in(b: &Browser, css: &str, text: &str) {
    b.wait(&format!("typing into {css}"), PAGE, |b| {
        match b.find_all(css)?.first() {
            Some(e) => b.type_into(e, text).map(Some),
            None => Ok(None),
        }
    })
    .unwrap()
}

/// Calls the API from inside the page, as its own script (or an injected
/// one) would: the status and body.
fn page_fetch(b: &Browser, method: &str, path: &str, headers: Value, body: Value) -> (u64, Value) {
    let answer = b
        .execute_async(
            "const [method, path, headers, body, done] = arguments;
             fetch(path, { method, headers, credentials: 'same-origin',
                           body: body === null ? undefined : JSON.stringify(body) })
               .then(async (r) => done([r.status, await r.text()]))
               .catch((e) => done([0, String(e)]));",
            json!([method, path, headers, body]),
        )
        .unwrap();
    let text = answer[1].as_str().unwrap_or_default();
    (
        answer[0].as_u64().unwrap(),
        serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())),
    )
}

#[test]
fn a_read_session_sees_a_real_listener_with_its_pid_and_the_host_as_it_was_before_it_opened() {
    let _one = BROWSERS.lock().unwrap_or_else(|e| e.into_inner());
    let f = fleet("dash-views", free_port());
    let shots = screenshots();
    let b = Browser::start(&f.dir.path.join("chromium"), 1280, 800).unwrap();
    // An agent token is not a way in.
    b.goto(&format!("{}/", f.collector.url)).unwrap();
    type_in(&b, "#token", &f.agent_token);
    click(&b, "#signin-button");
    wait_text(&b, "#signin-status", "the refusal of an agent token", |t| {
        t.contains("agent tokens cannot sign in")
    });
    b.screenshot(&shots.join("signin-refused.png")).unwrap();

    sign_in(&b, &f.collector.url, &f.read);
    let cookie = b.cookies().unwrap();
    let session = cookie
        .iter()
        .find(|c| c["name"] == "portwatch_session")
        .expect("a session cookie");
    assert_eq!(session["httpOnly"], true, "{session}");
    assert_eq!(session["sameSite"], "Strict", "{session}");
    let visible = b.execute("return document.cookie + JSON.stringify(Object.entries(localStorage)) + JSON.stringify(Object.entries(sessionStorage));", json!([])).unwrap();
    assert!(
        !visible.as_str().unwrap().contains("portwatch_session") && !visible.as_str().unwrap().contains(&f.read),
        "the page's script sees no session and no token: {visible}"
    );
    assert!(!b.url().unwrap().contains(&f.read), "no token in the URL");
    wait_text(&b, "#hosts", "the host in the fleet table", |t| t.contains(HOST));
    b.screenshot(&shots.join("fleet.png")).unwrap();
    // The collector filters: a glob that matches no host, then one that does.
    b.goto(&format!("{}/#/fleet?q=no-such-*", f.collector.url)).unwrap();
    wait_text(&b, "main", "no host matching the glob", |t| {
        t.contains("No host matches.")
    });
    b.goto(&format!("{}/#/fleet?q={}&status=up", f.collector.url, HOST))
        .unwrap();
    wait_text(&b, "main", "the host kept by the filters", |t| {
        t.contains("1 of 1 hosts that match") && t.contains(HOST)
    });

    // A moment before the listener exists, then the listener, and a process with a hostile name.
    let before = Timestamp::now();
    let opened = Listeners::start(&[], &["tcp4:127.0.0.1:0"]).unwrap();
    let (port, pid) = (opened.port(0), opened.opened.pid);
    let hostile = Named::start(&f.dir.path, HOSTILE);
    assert!(
        eventually(SETTLE, || (reported(&f, port) && reported(&f, hostile.port))
            .then_some(()))
        .is_some(),
        "the agent reports both listeners"
    );

    click(&b, &format!("#hosts a[href=\"#/host/{HOST}\"]"));
    let row = format!("#listeners tr[data-port=\"{port}\"]");
    let text = wait_text(&b, &row, "the new listener with its pid", |t| {
        t.contains(&format!("[{pid}]"))
    });
    assert!(text.contains("pw-listen") && text.contains("loopback"), "{text}");
    let firewall = b.text(&b.wait_for(&format!("{row} .fw"), PAGE).unwrap()).unwrap();
    assert_eq!(firewall, "-", "a loopback listener's firewall is not evaluated");
    b.screenshot(&shots.join("host.png")).unwrap();

    // The hostile name is text: its characters are on the page, no <img> is, no script ran.
    let hostile_row = format!("#listeners tr[data-port=\"{}\"]", hostile.port);
    let text = wait_text(&b, &hostile_row, "the hostile process", |t| t.contains(HOSTILE));
    assert!(text.contains(&format!("[{}]", hostile.pid)), "{text}");
    let name = b
        .text(&b.wait_for(&format!("{hostile_row} .pname"), PAGE).unwrap())
        .unwrap();
    assert_eq!(name, &HOSTILE[..15], "the kernel keeps 15 bytes of the file's name");
    assert_eq!(
        b.execute("return document.querySelectorAll('main img').length", json!([]))
            .unwrap(),
        0
    );
    assert_eq!(b.dialog(), None, "no alert() ran");
    // The timeline has a bar for it, its owner in the hover text.
    let tips = b
        .execute(
            "return [...document.querySelectorAll('#timeline rect.bar title')].map(t => t.textContent).join('\\n')",
            json!([]),
        )
        .unwrap();
    assert!(tips.as_str().unwrap().contains(&format!("pw-listen[{pid}]")), "{tips}");
    // The view's export: this host's intervals as CSV, over the session.
    let csv = b
        .execute(
            "return fetch(document.querySelector('a.export-csv').href, {credentials: 'same-origin'}).then(r => r.text())",
            json!([]),
        )
        .unwrap();
    let csv = csv.as_str().unwrap();
    assert!(csv.starts_with("host,proto,"), "{csv}");
    assert!(
        csv.lines()
            .any(|l| l.starts_with(&format!("{HOST},tcp,ipv4,127.0.0.1,{port},"))),
        "the listener's row: {csv}"
    );
    assert!(
        csv.lines().skip(1).all(|l| l.starts_with(&format!("{HOST},"))),
        "this host's only: {csv}"
    );

    // As it was before it opened: absent; the state is in the URL.
    type_in(&b, "#at", &before.to_string());
    click(&b, "#at-show");
    wait_text(&b, "#listeners-title", "the host as it was", |t| {
        t.contains("as it was at")
    });
    assert!(b.find_all(&row).unwrap().is_empty(), "the listener was not open then");
    let url = b.url().unwrap();
    assert!(url.contains("#/host/dash-1?at="), "{url}");
    b.screenshot(&shots.join("host-as-it-was.png")).unwrap();
    // The same URL, opened afresh, shows the same moment.
    b.goto(&url).unwrap();
    wait_text(&b, "#listeners-title", "the pasted link's moment", |t| {
        t.contains("as it was at")
    });
    assert!(b.find_all(&row).unwrap().is_empty());
    // The diff from then to now lists it as opened.
    type_in(&b, "#from", &before.to_string());
    click(&b, "#diff-show");
    wait_text(&b, "#diff-opened", "the diff", |t| t.contains(&format!("[{pid}]")));

    // The port view finds it, now and in its history.
    click(&b, "nav a[data-view=\"port\"]");
    type_in(&b, "#port", &port.to_string());
    click(&b, "#port-show");
    let text = wait_text(&b, "#who", "the holder of the port", |t| t.contains(HOST));
    assert!(text.contains(&format!("[{pid}]")), "{text}");
    wait_text(&b, "#port-history", "the port's history", |t| t.contains(HOST));
    b.screenshot(&shots.join("port.png")).unwrap();

    // Sign-out ends the session on the collector: the old cookie, sent again, is refused.
    click(&b, "#signout");
    b.wait_for("#token", PAGE).unwrap();
    let old = format!("portwatch_session={}", session["value"].as_str().unwrap());
    let status = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
        .get(format!("{}/api/v1/hosts", f.collector.url))
        .header("Cookie", &old)
        .call()
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 401, "the session is gone on the collector");
    let (status, _) = page_fetch(&b, "GET", "/api/v1/hosts", json!({}), Value::Null);
    assert_eq!(status, 401);
    b.screenshot(&shots.join("signed-out.png")).unwrap();
}

#[test]
fn an_admin_acknowledges_an_alert_with_a_comment_and_a_read_session_cannot() {
    let _one = BROWSERS.lock().unwrap_or_else(|e| e.into_inner());
    let risky = free_port();
    let f = fleet("dash-alerts", risky);
    let _exposed = Listeners::start(&[], &[&format!("tcp4:0.0.0.0:{risky}")]).unwrap();
    let alert = eventually(SETTLE, || {
        let all = portwatch_json(&f.collector.url, &f.read, &["alerts"]).ok()?;
        all.as_array()?
            .iter()
            .find(|a| a["kind"] == "risky-port-exposed" && a["finding"]["local_port"] == risky)
            .cloned()
    })
    .expect("a risky-port-exposed alert opens");
    let id = alert["id"].as_u64().unwrap();
    let shots = screenshots();
    let b = Browser::start(&f.dir.path.join("chromium"), 1280, 800).unwrap();

    // A read session sees the alert without an acknowledge form, and the API refuses it.
    sign_in(&b, &f.collector.url, &f.read);
    click(&b, "nav a[data-view=\"alerts\"]");
    let row = format!("#alerts tr[data-id=\"{id}\"]");
    wait_text(&b, &row, "the alert", |t| t.contains("risky-port-exposed"));
    assert!(
        b.find_all(&format!("#ack-{id}")).unwrap().is_empty(),
        "no form for a reader"
    );
    let (_, session) = page_fetch(&b, "GET", "/api/v1/session", json!({}), Value::Null);
    let csrf = session["csrf_token"].as_str().unwrap().to_owned();
    let (status, body) = page_fetch(
        &b,
        "POST",
        &format!("/api/v1/alerts/{id}/ack"),
        json!({"Content-Type": "application/json", "X-CSRF-Token": csrf}),
        json!({"comment": "not mine to ack"}),
    );
    assert_eq!(status, 403, "{body}");
    click(&b, "#signout");
    b.wait_for("#token", PAGE).unwrap();

    // An admin session without the CSRF token is refused too.
    sign_in(&b, &f.collector.url, &f.admin);
    let (status, body) = page_fetch(
        &b,
        "POST",
        &format!("/api/v1/alerts/{id}/ack"),
        json!({"Content-Type": "application/json"}),
        json!({"comment": "forged"}),
    );
    assert_eq!(status, 403, "{body}");
    // Through the form, with a comment, it is acknowledged.
    b.goto(&format!("{}/#/alerts", f.collector.url)).unwrap();
    b.wait_for(&format!("#ack-comment-{id}"), PAGE).unwrap();
    b.screenshot(&shots.join("alerts.png")).unwrap();
    type_in(&b, &format!("#ack-comment-{id}"), "looking into it");
    click(&b, &format!("#ack-button-{id}"));
    let text = wait_text(&b, &row, "the acknowledged alert", |t| t.contains("looking into it"));
    assert!(text.contains("ops-admin") && text.contains("acknowledged"), "{text}");
    b.screenshot(&shots.join("alerts-acknowledged.png")).unwrap();
    let all = portwatch_json(&f.collector.url, &f.read, &["alerts", "--state", "all"]).unwrap();
    let stored = all.as_array().unwrap().iter().find(|a| a["id"] == id).unwrap().clone();
    assert_eq!(
        (
            stored["state"].as_str(),
            stored["acked_by"].as_str(),
            stored["ack_comment"].as_str()
        ),
        (Some("acknowledged"), Some("ops-admin"), Some("looking into it"))
    );
    // The alert links to its host's timeline at its time.
    let link = b
        .execute(
            &format!("return document.querySelector('#alerts tr[data-id=\"{id}\"] a').getAttribute('href')"),
            json!([]),
        )
        .unwrap();
    assert!(link.as_str().unwrap().starts_with("#/host/dash-1?at="), "{link}");

    // An admin applies a baseline from the drift view; the change log says who and why.
    click(&b, "nav a[data-view=\"drift\"]");
    let source = format!(
        "name = \"dash\"\nhosts = [\"dash-*\"]\n\n[[listener]]\nproto = \"tcp\"\nport = {risky}\n\
         owner = \"team test\"\nreason = \"the test's database\"\naccept_risk = true\n"
    );
    type_in(&b, "#b-source", &source);
    type_in(&b, "#b-comment", "accepted for the test");
    click(&b, "#baseline-apply button[type=submit]");
    let text = wait_text(&b, "#baseline-log", "the change log", |t| {
        t.contains("accepted for the test")
    });
    assert!(text.contains("ops-admin") && text.contains("create"), "{text}");
    b.wait_for("details.baseline[data-name=\"dash\"]", PAGE).unwrap();
    b.screenshot(&shots.join("drift.png")).unwrap();
    let stored = portwatch_json(&f.collector.url, &f.read, &["baseline", "list"]).unwrap();
    assert!(stored.to_string().contains("\"dash\""), "{stored}");
}

/// axe-core (tests/vendor/axe-core, updated by tests/vendor/axe-core.sh).
const AXE: &str = include_str!("../vendor/axe-core/axe.min.js");

/// The serious and critical WCAG 2 A/AA violations axe-core finds on the page now.
fn serious_violations(b: &Browser) -> Vec<String> {
    // Injected over WebDriver, which the page's CSP does not govern.
    b.execute(&format!("{AXE}\nreturn true;"), json!([])).unwrap();
    let found = b
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa'] } })
               .then((r) => done(r.violations
                 .filter((v) => v.impact === 'serious' || v.impact === 'critical')
                 .map((v) => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`)))
               .catch((e) => done([`axe failed: ${e}`]));",
            json!([]),
        )
        .unwrap();
    found
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn every_view_passes_an_accessibility_check_with_no_serious_violation() {
    let _one = BROWSERS.lock().unwrap_or_else(|e| e.into_inner());
    let f = fleet("dash-a11y", free_port());
    let _opened = Listeners::start(&[], &["tcp4:127.0.0.1:0"]).unwrap();
    let b = Browser::start(&f.dir.path.join("chromium"), 1280, 800).unwrap();
    b.goto(&format!("{}/", f.collector.url)).unwrap();
    b.wait_for("#token", PAGE).unwrap();
    // The check sees what it must: an input without a label, planted and removed.
    b.execute(
        "const i = document.createElement('input'); i.id = 'planted'; document.body.appendChild(i); return true;",
        json!([]),
    )
    .unwrap();
    let planted = serious_violations(&b);
    assert!(planted.iter().any(|v| v.contains("#planted")), "{planted:?}");
    b.execute("document.getElementById('planted').remove(); return true;", json!([]))
        .unwrap();
    let mut all = Vec::new();
    all.extend(serious_violations(&b).into_iter().map(|v| format!("sign-in: {v}")));
    sign_in(&b, &f.collector.url, &f.admin);
    for (view, ready) in [
        ("#/fleet", "#hosts"),
        (&format!("#/host/{HOST}")[..], "#listeners"),
        ("#/port/22", "#port-form"),
        ("#/alerts?state=all", "#alert-filters"),
        ("#/drift", "#drift-filters"),
        ("#/trends", "#trend-filters"),
    ] {
        b.goto(&format!("{}/{view}", f.collector.url)).unwrap();
        b.wait_for(ready, PAGE).unwrap();
        all.extend(serious_violations(&b).into_iter().map(|v| format!("{view}: {v}")));
    }
    assert!(all.is_empty(), "serious accessibility violations:\n{}", all.join("\n"));
}

/// What the "as of" line says now: the time of the view's last load (by
/// the page's clock), or its text (with a refresh that failed).
fn as_of(b: &Browser) -> String {
    b.execute(
        "const p = document.getElementById('asof');
         const t = p && p.querySelector('time');
         return p ? `${t ? t.dateTime : ''} ${p.textContent}` : '';",
        json!([]),
    )
    .unwrap()
    .as_str()
    .unwrap()
    .to_owned()
}

/// Waits for the view to be loaded again by itself (its "as of" time moves
/// on from `seen`), then for `ready` (a part it draws later) to be there.
fn refreshed(b: &Browser, seen: &str, ready: &str) -> String {
    // Twice the refresh period and more: a loaded CI machine answers late.
    b.wait("an automatic refresh", Duration::from_secs(60), |b| {
        let now = as_of(b);
        Ok((now != seen && !now.trim().is_empty() && !b.find_all(ready)?.is_empty()).then_some(now))
    })
    .unwrap()
}

/// A number the page's `script` returns.
fn number(b: &Browser, script: &str) -> f64 {
    b.execute(script, json!([])).unwrap().as_f64().unwrap()
}

#[test]
fn an_automatic_refresh_keeps_the_scroll_what_is_typed_the_focus_and_the_timeline_zoom() {
    let _one = BROWSERS.lock().unwrap_or_else(|e| e.into_inner());
    let started = Timestamp::now();
    let f = fleet_with("dash-refresh", free_port(), "[dashboard]\nrefresh = \"1s\"\n");
    let _opened = Listeners::start(&[], &["tcp4:127.0.0.1:0"]).unwrap();
    let shots = screenshots();
    // Narrow and short: the page scrolls, and so does the timeline in its box.
    let b = Browser::start(&f.dir.path.join("chromium"), 600, 480).unwrap();
    sign_in(&b, &f.collector.url, &f.read);
    let session = page_fetch(&b, "GET", "/api/v1/session", json!({}), Value::Null).1;
    assert_eq!(session["refresh_seconds"], 1, "{session}");

    // The fleet view: a filter typed and left unsent, another being typed
    // (focused, its caret inside the text), the page scrolled to its bottom,
    // the chart (drawn after the table) in view.
    b.wait_for("#fleet-chart canvas", PAGE).unwrap();
    let fleet_url = b.url().unwrap();
    type_in(&b, "#f-q", "dash-*");
    type_in(&b, "#f-tag", "env=pr");
    let y = number(
        &b,
        "document.getElementById('f-tag').setSelectionRange(4, 4);
         window.scrollTo(0, document.documentElement.scrollHeight);
         return window.scrollY;",
    );
    assert!(y > 0.0, "the fleet view scrolls at 600x480");
    let seen = as_of(&b);
    refreshed(&b, &seen, "#fleet-chart canvas");
    let kept = b
        .execute(
            "const a = document.activeElement;
             return [document.getElementById('f-q').value, document.getElementById('f-tag').value,
                     a.id, a.selectionStart, a.selectionEnd, window.scrollY];",
            json!([]),
        )
        .unwrap();
    assert_eq!(kept[0], "dash-*", "the field typed and left: {kept}");
    assert_eq!(kept[1], "env=pr", "the field being typed: {kept}");
    assert_eq!(
        (kept[2].as_str(), kept[3].as_u64(), kept[4].as_u64()),
        (Some("f-tag"), Some(4), Some(4)),
        "its focus and caret: {kept}"
    );
    assert!(
        (kept[5].as_f64().unwrap() - y).abs() <= 1.0,
        "the page's scroll: {kept}, was {y}"
    );
    assert_eq!(b.url().unwrap(), fleet_url, "nothing typed was sent");

    let label = |b: &Browser| {
        b.execute(
            "const s = document.querySelector('#timeline svg.timeline'); return s ? s.getAttribute('aria-label') : '';",
            json!([]),
        )
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
    };
    // A host's timeline: zoomed by dragging across it, scrolled inside its
    // box, a time typed in the picker and not sent, the page scrolled.
    // A window whose second half holds the test's history: the drag below zooms across its middle.
    let since = started - Timestamp::now().duration_since(started);
    b.goto(&format!("{}/#/host/{HOST}?since={since}", f.collector.url))
        .unwrap();
    b.wait_for("#timeline rect.bar", PAGE).unwrap();
    b.execute(
        "document.getElementById('timeline').scrollIntoView({block: 'center'}); return true;",
        json!([]),
    )
    .unwrap();
    let day = label(&b);
    // (Again if a refresh replaced the timeline just before the press.)
    b.wait("dragging across the timeline", PAGE, |b| {
        match b.find_all("#timeline svg.timeline")?.first() {
            Some(svg) => b.drag(svg, -80, 200).map(Some),
            None => Ok(None),
        }
    })
    .unwrap();
    let zoomed = b
        .wait("the zoomed window in the URL", PAGE, |b| {
            let url = b.url()?;
            Ok((url.contains("since=") && url.contains("until=")).then_some(url))
        })
        .unwrap();
    let window = b
        .wait("the zoomed timeline", PAGE, |b| {
            let l = label(b);
            Ok((!l.is_empty() && l != day).then_some(l))
        })
        .unwrap();
    type_in(&b, "#at", "-1h");
    let (left, y) = {
        let v = b
            .execute(
                "document.activeElement.blur();
                 const box = document.getElementById('timeline');
                 box.scrollLeft = 60;
                 window.scrollTo(0, 120);
                 return [box.scrollLeft, window.scrollY];",
                json!([]),
            )
            .unwrap();
        (v[0].as_f64().unwrap(), v[1].as_f64().unwrap())
    };
    assert!(
        left > 0.0 && y > 0.0,
        "the timeline and the page scroll at 600x480: {left}, {y}"
    );
    let seen = as_of(&b);
    refreshed(&b, &seen, "#timeline rect.bar");
    let kept = b
        .execute(
            "return [document.getElementById('at').value, document.getElementById('listeners-title').textContent,
                     document.getElementById('timeline').scrollLeft, window.scrollY];",
            json!([]),
        )
        .unwrap();
    assert_eq!(b.url().unwrap(), zoomed, "the zoom is kept");
    assert_eq!(label(&b), window, "the same window is drawn");
    assert_eq!(kept[0], "-1h", "the time typed in the picker: {kept}");
    assert!(
        kept[1].as_str().unwrap().starts_with("Listeners now"),
        "and not applied: {kept}"
    );
    assert!(
        (kept[2].as_f64().unwrap() - left).abs() <= 1.0,
        "the timeline's scroll: {kept}, was {left}"
    );
    assert!(
        (kept[3].as_f64().unwrap() - y).abs() <= 1.0,
        "the page's scroll: {kept}, was {y}"
    );
    b.screenshot(&shots.join("host-refreshed.png")).unwrap();

    // The collector goes away: a refresh that fails leaves the view as it
    // was, typing included, and says so.
    f.collector.kill();
    let text = wait_text(&b, "#asof", "the failed refresh", |t| t.contains("Refresh failed"));
    assert!(text.contains("showing the view as of"), "{text}");
    assert!(!b.find_all("#timeline rect.bar").unwrap().is_empty(), "the view stays");
    let typed = b
        .execute("return document.getElementById('at').value", json!([]))
        .unwrap();
    assert_eq!(typed, "-1h");
}

/// Every view of the dashboard with what shows it is drawn: its hash, an
/// element it has once loaded, and a name for its screenshot.
fn views(port: u16) -> Vec<(String, &'static str, &'static str)> {
    let hour_ago = Timestamp::now() - jiff::SignedDuration::from_hours(1);
    vec![
        ("#/fleet".to_owned(), "#fleet-chart canvas", "fleet"),
        (format!("#/host/{HOST}"), "#timeline rect.bar", "host"),
        (format!("#/host/{HOST}?from={hour_ago}"), "#diff-opened", "host-diff"),
        (format!("#/port/{port}"), "#port-history", "port"),
        ("#/alerts?state=all".to_owned(), "#alerts", "alerts"),
        ("#/drift".to_owned(), "#findings", "drift"),
        ("#/trends".to_owned(), "#trend-chart canvas", "trends"),
    ]
}

/// What sticks out of the page's width: `[scrollWidth, clientWidth,
/// innerWidth, the first elements past the right edge that no box of theirs
/// scrolls or clips]`.
const OVERFLOW: &str = "const root = document.documentElement;
const width = root.clientWidth;
const out = [];
for (const el of document.body.querySelectorAll('*')) {
  const r = el.getBoundingClientRect();
  if (r.width === 0 || r.right <= width) continue;
  let held = false;
  for (let a = el.parentElement; a && a !== document.body && !held; a = a.parentElement) {
    held = getComputedStyle(a).overflowX !== 'visible';
  }
  if (!held && out.length < 5) {
    out.push(`${el.tagName.toLowerCase()}${el.id ? `#${el.id}` : ''}${el.className && typeof el.className === 'string' ? `.${el.className.split(' ').join('.')}` : ''} right=${r.right}`);
  }
}
return [root.scrollWidth, width, window.innerWidth, out];";

/// A fleet with something on every view: an alert and a drift finding (a
/// risky port open on every address), a listener of the test's on loopback.
fn busy_fleet(tag: &str) -> (Fleet, Listeners, Listeners, u16) {
    let risky = free_port();
    let f = fleet(tag, risky);
    let exposed = Listeners::start(&[], &[&format!("tcp4:0.0.0.0:{risky}")]).unwrap();
    let local = Listeners::start(&[], &["tcp4:127.0.0.1:0"]).unwrap();
    let port = local.port(0);
    eventually(SETTLE, || {
        let all = portwatch_json(&f.collector.url, &f.read, &["alerts"]).ok()?;
        let alerted = all.as_array()?.iter().any(|a| a["finding"]["local_port"] == risky);
        (alerted && reported(&f, port)).then_some(())
    })
    .expect("the risky port is an alert, the listener reported");
    (f, exposed, local, port)
}

#[test]
fn every_view_fits_the_width_of_a_phone_and_of_a_1280x800_screen() {
    let _one = BROWSERS.lock().unwrap_or_else(|e| e.into_inner());
    let (f, _exposed, _local, port) = busy_fleet("dash-widths");
    let shots = screenshots();
    let b = Browser::start(&f.dir.path.join("chromium"), 1280, 800).unwrap();
    let mut wide = Vec::new();
    for (width, height) in [(390, 844), (1280, 800)] {
        b.viewport(width, height).unwrap();
        b.goto(&format!("{}/", f.collector.url)).unwrap();
        b.wait_for("#token", PAGE).unwrap();
        let mut check = |what: &str| {
            let v = b.execute(OVERFLOW, json!([])).unwrap();
            assert_eq!(v[2], width, "the viewport is {width} wide");
            if v[0].as_u64() > v[1].as_u64() {
                wide.push(format!("{what} at {width}x{height}: {v}"));
            }
            // A chart is drawn as wide as the view, not scrolled in its box.
            let charts = b
                .execute(
                    "return [...document.querySelectorAll('.chart')].filter((c) => c.scrollWidth > c.clientWidth)
                       .map((c) => `${c.id}: ${c.scrollWidth} in ${c.clientWidth}`)",
                    json!([]),
                )
                .unwrap();
            if charts.as_array().is_some_and(|a| !a.is_empty()) {
                wide.push(format!(
                    "{what} at {width}x{height}: charts wider than their box: {charts}"
                ));
            }
        };
        check("sign-in");
        if width == 390 {
            b.screenshot(&shots.join("phone-signin.png")).unwrap();
        }
        // An admin sees every form (the baseline's, the acknowledgement's).
        sign_in(&b, &f.collector.url, &f.admin);
        for (view, ready, name) in views(port) {
            b.goto(&format!("{}/{view}", f.collector.url)).unwrap();
            b.wait_for(ready, PAGE).unwrap();
            check(&view);
            if width == 390 {
                b.screenshot(&shots.join(format!("phone-{name}.png"))).unwrap();
            }
        }
        click(&b, "#signout");
    }
    assert!(wide.is_empty(), "wider than the screen:\n{}", wide.join("\n"));
}

#[test]
fn every_view_in_dark_mode_passes_the_accessibility_check_contrast_included() {
    let _one = BROWSERS.lock().unwrap_or_else(|e| e.into_inner());
    let (f, _exposed, _local, port) = busy_fleet("dash-dark");
    let shots = screenshots();
    let b = Browser::start(&f.dir.path.join("chromium"), 1280, 800).unwrap();
    b.viewport(1280, 800).unwrap();
    b.dark(true).unwrap();
    b.goto(&format!("{}/", f.collector.url)).unwrap();
    b.wait_for("#token", PAGE).unwrap();
    let background = b
        .execute("return getComputedStyle(document.body).backgroundColor", json!([]))
        .unwrap();
    assert_eq!(background, "rgb(20, 23, 27)", "the dark palette is in use");
    let mut all: Vec<String> = serious_violations(&b)
        .into_iter()
        .map(|v| format!("sign-in: {v}"))
        .collect();
    b.screenshot(&shots.join("dark-signin.png")).unwrap();
    sign_in(&b, &f.collector.url, &f.admin);
    for (view, ready, name) in views(port) {
        b.goto(&format!("{}/{view}", f.collector.url)).unwrap();
        b.wait_for(ready, PAGE).unwrap();
        all.extend(serious_violations(&b).into_iter().map(|v| format!("{view}: {v}")));
        b.screenshot(&shots.join(format!("dark-{name}.png"))).unwrap();
    }
    assert!(
        all.is_empty(),
        "serious accessibility violations in dark mode:\n{}",
        all.join("\n")
    );
}
