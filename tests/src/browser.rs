//! A real headless Chromium, driven over the W3C WebDriver protocol through
//! Debian's `chromedriver` (packages `chromium` and `chromium-driver`, which
//! `tests/run.sh` installs).
//!
//! The protocol is a dozen JSON calls over HTTP; they go through ureq, which
//! the tests use already, rather than a WebDriver crate: fantoccini brings
//! the `webdriver` crate with ICU's segmenter and its data, http 0.2 and a
//! second HTTP stack, a long build on a 2-core CI for what is used here.
//!
//! Waiting is always for a condition, with a deadline ([`Browser::wait`]):
//! never a sleep that guesses how long the page takes.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;
use serde_json::{json, Value};

/// The key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where Debian puts the browser and its driver.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's chromedriver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// What is missing to run a browser here, if anything (the message says how to get it).
pub fn missing() -> Option<String> {
    let absent: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    (!absent.is_empty()).then(|| {
        format!(
            "{} missing: install Debian's chromium and chromium-driver (tests/run.sh does, as root)",
            absent.join(" and ")
        )
    })
}

/// How long a script run in the page may take before WebDriver gives up on it.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

/// A chromedriver process and one headless Chromium session in it; both
/// end on drop.
pub struct Browser {
    driver: Child,
    http: ureq::Agent,
    base: String,
    session: String,
    profile: PathBuf,
}

/// One element of the page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium
    /// with a fresh profile in `profile` (emptied first), `width`×`height`.
    pub fn start(profile: &Path, width: u32, height: u32) -> anyhow::Result<Browser> {
        if let Some(why) = missing() {
            bail!("{why}");
        }
        let _ = std::fs::remove_dir_all(profile);
        std::fs::create_dir_all(profile)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start chromedriver")?;
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(SCRIPT_TIMEOUT + Duration::from_secs(30)))
            .build()
            .new_agent();
        let mut browser = Browser {
            driver,
            http,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            profile: profile.to_owned(),
        };
        browser.wait_for_driver()?;
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.display()),
        ];
        let answer = browser.call(
            "POST",
            "/session",
            Some(json!({
                "capabilities": { "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
                    "goog:loggingPrefs": { "browser": "ALL" },
                    // A script's bound (WebDriver's default: 30 s). axe-core's run over a view
                    // took longer than that on a machine loaded by other work; a bound against
                    // hanging, not a time the test asserts.
                    "timeouts": { "script": SCRIPT_TIMEOUT.as_millis() as u64 },
                }}
            })),
        )?;
        browser.session = answer["sessionId"]
            .as_str()
            .context("no sessionId in the new session's answer")?
            .to_owned();
        Ok(browser)
    }

    fn wait_for_driver(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut r) = self.http.get(format!("{}/status", self.base)).call() {
                if r.body_mut()
                    .read_json::<Value>()
                    .is_ok_and(|v| v["value"]["ready"] == true)
                {
                    return Ok(());
                }
            }
            if let Some(status) = self.driver.try_wait()? {
                bail!("chromedriver exited ({status}) before it was ready");
            }
            if Instant::now() > deadline {
                bail!("chromedriver was not ready within 20 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One WebDriver command: its `value`, or the driver's error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut response = match (method, body) {
            ("GET", _) => self.http.get(&url).call(),
            ("DELETE", _) => self.http.delete(&url).call(),
            (_, body) => self.http.post(&url).send_json(body.unwrap_or_else(|| json!({}))),
        }
        .with_context(|| format!("WebDriver {method} {path}"))?;
        let status = response.status().as_u16();
        let answer: Value = response.body_mut().with_config().limit(64 << 20).read_json()?;
        if status != 200 {
            bail!(
                "WebDriver {method} {path}: {status} {} {}",
                answer["value"]["error"],
                answer["value"]["message"]
            );
        }
        Ok(answer["value"].clone())
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Opens `url` (returns once the page has loaded).
    pub fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.call("POST", &self.session_path("/url"), Some(json!({ "url": url })))?;
        Ok(())
    }

    /// The page's URL now.
    pub fn url(&self) -> anyhow::Result<String> {
        Ok(self
            .call("GET", &self.session_path("/url"), None)?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// The elements matching a CSS selector now (perhaps none).
    pub fn find_all(&self, css: &str) -> anyhow::Result<Vec<Element>> {
        let found = self.call(
            "POST",
            &self.session_path("/elements"),
            Some(json!({ "using": "css selector", "value": css })),
        )?;
        Ok(found
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(|id| Element(id.to_owned())))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Polls `check` every 100 ms until it gives `Some`, for at most `limit`;
    /// an error that says what was awaited otherwise.
    pub fn wait<T>(
        &self,
        what: &str,
        limit: Duration,
        mut check: impl FnMut(&Browser) -> anyhow::Result<Option<T>>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + limit;
        let mut last = None;
        loop {
            match check(self) {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                // An element replaced while it was read: look again.
                Err(e) => last = Some(e),
            }
            if Instant::now() > deadline {
                let url = self.url().unwrap_or_default();
                bail!(
                    "waited {limit:?} for {what} at {url}{}",
                    last.map(|e| format!(" (last error: {e:#})")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The first element matching `css`, once there is one.
    pub fn wait_for(&self, css: &str, limit: Duration) -> anyhow::Result<Element> {
        self.wait(&format!("an element {css}"), limit, |b| {
            Ok(b.find_all(css)?.into_iter().next())
        })
    }

    /// The element's rendered text.
    pub fn text(&self, e: &Element) -> anyhow::Result<String> {
        Ok(self
            .call("GET", &self.session_path(&format!("/element/{}/text", e.0)), None)?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// Clicks the element.
    pub fn click(&self, e: &Element) -> anyhow::Result<()> {
        self.call("POST", &self.session_path(&format!("/element/{}/click", e.0)), None)?;
        Ok(())
    }

    /// Empties an input, then types `text` into it.
    pub fn type_into(&self, e: &Element, text: &str) -> anyhow::Result<()> {
        self.call("POST", &self.session_path(&format!("/element/{}/clear", e.0)), None)?;
        self.call(
            "POST",
            &self.session_path(&format!("/element/{}/value", e.0)),
            Some(json!({ "text": text })),
        )?;
        Ok(())
    }

    /// Drags the mouse across `e` as a person does (W3C actions): pressed at
    /// `from` CSS pixels right of its centre (negative: left), moved to `to`
    /// in a few steps, released. The element's centre must be in view.
    pub fn drag(&self, e: &Element, from: i64, to: i64) -> anyhow::Result<()> {
        // Moves after the press are relative to the pointer: the element is not looked up again.
        let by = |x: i64| json!({ "type": "pointerMove", "duration": 150, "origin": "pointer", "x": x, "y": 0 });
        self.call(
            "POST",
            &self.session_path("/actions"),
            Some(json!({ "actions": [{
                "type": "pointer", "id": "mouse", "parameters": { "pointerType": "mouse" },
                "actions": [
                    { "type": "pointerMove", "duration": 0, "origin": { ELEMENT: e.0 }, "x": from, "y": 0 },
                    { "type": "pointerDown", "button": 0 },
                    by((to - from) / 2),
                    by(to - from - (to - from) / 2),
                    { "type": "pointerUp", "button": 0 },
                ],
            }]})),
        )?;
        self.call("DELETE", &self.session_path("/actions"), None)?;
        Ok(())
    }

    /// One Chrome DevTools protocol command, through chromedriver
    /// (`goog/cdp/execute`): its result.
    pub fn cdp(&self, cmd: &str, params: Value) -> anyhow::Result<Value> {
        self.call(
            "POST",
            &self.session_path("/goog/cdp/execute"),
            Some(json!({ "cmd": cmd, "params": params })),
        )
    }

    /// Makes the page's viewport exactly `width`×`height` CSS pixels (at
    /// one device pixel each), as a screen of that size shows it; the
    /// window's own size leaves out what its frame takes.
    pub fn viewport(&self, width: u32, height: u32) -> anyhow::Result<()> {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        )?;
        Ok(())
    }

    /// Tells the page the system prefers a dark (or light) colour scheme
    /// (`prefers-color-scheme`).
    pub fn dark(&self, dark: bool) -> anyhow::Result<()> {
        self.cdp(
            "Emulation.setEmulatedMedia",
            json!({ "features": [{ "name": "prefers-color-scheme", "value": if dark { "dark" } else { "light" } }] }),
        )?;
        Ok(())
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page: what it returns.
    pub fn execute(&self, script: &str, args: Value) -> anyhow::Result<Value> {
        self.call(
            "POST",
            &self.session_path("/execute/sync"),
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Runs `script` in the page; it ends by calling `arguments[arguments.length - 1](result)`.
    pub fn execute_async(&self, script: &str, args: Value) -> anyhow::Result<Value> {
        self.call(
            "POST",
            &self.session_path("/execute/async"),
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// The text of an open `alert()` dialog, if there is one.
    pub fn dialog(&self) -> Option<String> {
        self.call("GET", &self.session_path("/alert/text"), None)
            .ok()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
    }

    /// The browser's cookies for the page (names and flags; the values are
    /// what the browser holds, readable here as they are not to the page).
    pub fn cookies(&self) -> anyhow::Result<Vec<Value>> {
        Ok(self
            .call("GET", &self.session_path("/cookie"), None)?
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Writes a PNG of the window to `file` (its folder is created).
    pub fn screenshot(&self, file: &Path) -> anyhow::Result<()> {
        let data = self.call("GET", &self.session_path("/screenshot"), None)?;
        let png = base64::engine::general_purpose::STANDARD.decode(data.as_str().unwrap_or_default())?;
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(file, png)?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &self.session_path(""), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
