//! The collector's HTTP API as function calls, with errors that say what to do.

use anyhow::{bail, Context};
use jiff::Timestamp;
use portwatch_model::Finding;
use portwatch_model::{AlertRow, BaselineLogRow, HostRow, ListenerRow, PeerPoint, ProbeVerdict};
use serde::de::DeserializeOwned;

/// The longest answer read (a fleet-wide `who` is about 450 bytes a host:
/// 4.5 MB for 10,000 hosts). `export` streams and has no bound.
const MAX_ANSWER_BYTES: u64 = 1 << 30;

/// A connection to one collector.
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    /// A client of the collector at `base` (`http(s)://host:port`), verifying an
    /// https collector against `ca_file` when given.
    pub fn new(base: &str, token: Option<&str>, ca_file: Option<&std::path::Path>) -> anyhow::Result<Client> {
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--collector {base:?}: write a URL such as http://127.0.0.1:7878");
        }
        // Quick to say the collector is unreachable, patient with a slow
        // answer, and no bound on a body that keeps coming (an export).
        let agent = portwatch_common::client::http_agent_with(ca_file, portwatch_common::client::Timeouts::QUERY)?;
        Ok(Client {
            base: base.trim_end_matches('/').to_owned(),
            token: token.map(str::to_owned),
            agent,
        })
    }

    fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<T> {
        let mut response = self.call(path, query)?;
        read_json(&mut response, path)
    }

    /// `GET /api/v1/export`, copied to `out` as it arrives.
    pub fn export(
        &self,
        format: &str,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
        out: &mut impl std::io::Write,
    ) -> anyhow::Result<u64> {
        let mut query = vec![("format", format.to_owned())];
        query.extend(since.map(|t| ("since", t.to_string())));
        query.extend(until.map(|t| ("until", t.to_string())));
        let mut response = self.call("/api/v1/export", &query)?;
        let mut body = response.body_mut().as_reader();
        std::io::copy(&mut body, out).map_err(|e| {
            let why = match e.get_ref().and_then(|inner| inner.downcast_ref::<ureq::Error>()) {
                Some(u @ ureq::Error::Timeout(_)) => portwatch_common::client::advice(u),
                _ => "the collector's log says why",
            };
            anyhow::Error::new(e).context(format!(
                "the export was cut short ({why}); do not use the partial output"
            ))
        })
    }

    /// A successful response to `GET path?query`, or an error saying what to do.
    fn call(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        for (key, value) in query {
            request = request.query(key, value);
        }
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        self.answer(request.call())
    }

    /// `POST path` with a JSON `body`; the JSON answer.
    fn post<T: DeserializeOwned>(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<T> {
        let mut request = self.agent.post(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let mut response = self.answer(request.send_json(body))?;
        response
            .body_mut()
            .read_json::<T>()
            .with_context(|| format!("the collector's answer to {path} is not what this portwatch expects"))
    }

    /// `DELETE path?query`.
    fn delete(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<()> {
        let mut request = self.agent.delete(format!("{}{path}", self.base));
        for (key, value) in query {
            request = request.query(key, value);
        }
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        self.answer(request.call()).map(drop)
    }

    /// A successful response, or an error saying what to do.
    fn answer(
        &self,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        let mut response = result.map_err(|e| {
            let advice = portwatch_common::client::advice(&e);
            let what = match portwatch_common::client::reached(&e) {
                true => "no answer in time from the collector at",
                false => "cannot reach the collector at",
            };
            anyhow::Error::new(e).context(format!("{what} {} ({advice})", self.base))
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let message = response
            .body_mut()
            .read_json::<serde_json::Value>()
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned));
        let refused = refusal(status.as_u16(), message.as_deref(), self.token.is_some());
        bail!("the collector refused ({status}): {refused}")
    }

    /// `GET /api/v1/hosts`
    pub fn hosts(&self) -> anyhow::Result<Vec<HostRow>> {
        self.get("/api/v1/hosts", &[])
    }

    /// `GET /api/v1/hosts/{host}/listeners`
    pub fn listeners(&self, host: &str, at: Option<Timestamp>) -> anyhow::Result<Vec<ListenerRow>> {
        let query: Vec<(&str, String)> = at.map(|t| ("at", t.to_string())).into_iter().collect();
        self.get(&format!("/api/v1/hosts/{}/listeners", path_segment(host)?), &query)
    }

    /// `GET /api/v1/hosts/{host}/probe`
    pub fn probe(&self, host: &str) -> anyhow::Result<Vec<ProbeVerdict>> {
        self.get(&format!("/api/v1/hosts/{}/probe", path_segment(host)?), &[])
    }

    /// `GET /api/v1/hosts/{host}/peers`: the points, and the `after` of the
    /// next page when a window has more.
    pub fn peers(
        &self,
        host: &str,
        port: Option<u16>,
        window: PeersWindow,
        page: Page<'_>,
    ) -> anyhow::Result<(Vec<PeerPoint>, Option<String>)> {
        let mut query = Vec::new();
        query.extend(port.map(|p| ("port", p.to_string())));
        query.extend(window.at.map(|t| ("at", t.to_string())));
        query.extend(window.since.map(|t| ("since", t.to_string())));
        query.extend(window.until.map(|t| ("until", t.to_string())));
        query.extend(page.limit.map(|n| ("limit", n.to_string())));
        query.extend(page.after.map(|a| ("after", a.to_owned())));
        let path = format!("/api/v1/hosts/{}/peers", path_segment(host)?);
        let mut response = self.call(&path, &query)?;
        let next = response
            .headers()
            .get("link")
            .and_then(|v| v.to_str().ok())
            .and_then(next_after)
            .map(str::to_owned);
        Ok((read_json(&mut response, &path)?, next))
    }

    /// `GET /api/v1/who`
    pub fn who(&self, port: u16, proto: Option<&str>, at: Option<Timestamp>) -> anyhow::Result<Vec<ListenerRow>> {
        let mut query = vec![("port", port.to_string())];
        query.extend(proto.map(|p| ("proto", p.to_owned())));
        query.extend(at.map(|t| ("at", t.to_string())));
        self.get("/api/v1/who", &query)
    }

    /// `GET /api/v1/hosts/{host}/history`
    pub fn history(
        &self,
        host: &str,
        port: Option<u16>,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
        page: Page<'_>,
    ) -> anyhow::Result<History> {
        let mut query = Vec::new();
        query.extend(port.map(|p| ("port", p.to_string())));
        query.extend(since.map(|t| ("since", t.to_string())));
        query.extend(until.map(|t| ("until", t.to_string())));
        query.extend(page.limit.map(|n| ("limit", n.to_string())));
        query.extend(page.after.map(|a| ("after", a.to_owned())));
        let path = format!("/api/v1/hosts/{}/history", path_segment(host)?);
        let mut response = self.call(&path, &query)?;
        let next = response
            .headers()
            .get("link")
            .and_then(|v| v.to_str().ok())
            .and_then(next_after)
            .map(str::to_owned);
        let kept_since = response
            .headers()
            .get(KEPT_SINCE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Ok(History {
            rows: read_json(&mut response, &path)?,
            next,
            kept_since,
        })
    }
}

/// The header of a history answer whose window reaches before the history
/// the collector keeps (`[retention] history`): the start of what it keeps.
const KEPT_SINCE_HEADER: &str = "portwatch-history-kept-since";

/// What `peers` asks: a moment (`at`, default now), or a window.
#[derive(Debug, Clone, Copy, Default)]
pub struct PeersWindow {
    /// The moment.
    pub at: Option<Timestamp>,
    /// The window's start.
    pub since: Option<Timestamp>,
    /// The window's end.
    pub until: Option<Timestamp>,
}

/// One page of a host's history.
pub struct History {
    /// The intervals, oldest first.
    pub rows: Vec<ListenerRow>,
    /// The `after` of the next page, when there are more.
    pub next: Option<String>,
    /// When the window asked for reaches before the kept history: its start.
    pub kept_since: Option<Timestamp>,
}

impl Client {
    /// `GET /api/v1/hosts/{host}/diff?from=&to=` or `?vs_host=&at=`
    pub fn diff(
        &self,
        host: &str,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        vs_host: Option<&str>,
    ) -> anyhow::Result<portwatch_model::diff::Diff> {
        let mut query = Vec::new();
        query.extend(from.map(|t| ("from", t.to_string())));
        query.extend(to.map(|t| ("to", t.to_string())));
        if let Some(other) = vs_host {
            query.push(("vs_host", path_segment(other)?.to_owned()));
        }
        self.get(&format!("/api/v1/hosts/{}/diff", path_segment(host)?), &query)
    }
}

impl Client {
    /// `POST /api/v1/baselines`
    pub fn apply_baseline(
        &self,
        source: &str,
        comment: Option<&str>,
    ) -> anyhow::Result<portwatch_model::baseline::ApplyAnswer> {
        self.post(
            "/api/v1/baselines",
            &serde_json::json!({ "source": source, "comment": comment }),
        )
    }

    /// `GET /api/v1/baselines`
    pub fn baselines(&self) -> anyhow::Result<Vec<portwatch_model::baseline::BaselineView>> {
        self.get("/api/v1/baselines", &[])
    }

    /// `DELETE /api/v1/baselines/{name}`
    pub fn remove_baseline(&self, name: &str, comment: Option<&str>) -> anyhow::Result<()> {
        if !portwatch_model::baseline::valid_name(name) {
            bail!("invalid baseline name {name:?}");
        }
        let query: Vec<(&str, String)> = comment.map(|c| ("comment", c.to_owned())).into_iter().collect();
        self.delete(&format!("/api/v1/baselines/{name}"), &query)
    }

    /// `GET /api/v1/baseline-log`
    pub fn baseline_log(&self, name: Option<&str>) -> anyhow::Result<Vec<BaselineLogRow>> {
        let query: Vec<(&str, String)> = name.map(|n| ("name", n.to_owned())).into_iter().collect();
        self.get("/api/v1/baseline-log", &query)
    }

    /// `GET /api/v1/baseline-proposal`: the proposed file.
    pub fn learn(&self, hosts: &str, name: Option<&str>) -> anyhow::Result<String> {
        let mut query = vec![("hosts", hosts.to_owned())];
        query.extend(name.map(|n| ("name", n.to_owned())));
        let mut response = self.call("/api/v1/baseline-proposal", &query)?;
        response
            .body_mut()
            .read_to_string()
            .context("cannot read the proposed baseline")
    }

    /// `GET /api/v1/drift`
    pub fn drift(&self, host: Option<&str>, kinds: &[String], limit: usize) -> anyhow::Result<Vec<Finding>> {
        let mut query: Vec<(&str, String)> = host.map(|h| ("host", h.to_owned())).into_iter().collect();
        if !kinds.is_empty() {
            query.push(("kind", kinds.join(",")));
        }
        query.push(("limit", limit.to_string()));
        self.get("/api/v1/drift", &query)
    }

    /// `GET /api/v1/alerts`
    pub fn alerts(&self, state: &str, host: Option<&str>, limit: usize) -> anyhow::Result<Vec<AlertRow>> {
        let mut query = vec![("state", state.to_owned()), ("limit", limit.to_string())];
        query.extend(host.map(|h| ("host", h.to_owned())));
        self.get("/api/v1/alerts", &query)
    }

    /// `GET /api/v1/trends`
    pub fn trends(
        &self,
        host: Option<&str>,
        bucket: &str,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
    ) -> anyhow::Result<portwatch_model::trend::Trends> {
        let mut query = vec![("bucket", bucket.to_owned())];
        if let Some(h) = host {
            query.push(("host", path_segment(h)?.to_owned()));
        }
        query.extend(since.map(|t| ("since", t.to_string())));
        query.extend(until.map(|t| ("until", t.to_string())));
        self.get("/api/v1/trends", &query)
    }

    /// `POST /api/v1/alerts/{id}/ack`
    pub fn ack(&self, id: i64, comment: &str) -> anyhow::Result<AlertRow> {
        self.post(
            &format!("/api/v1/alerts/{id}/ack"),
            &serde_json::json!({ "comment": comment }),
        )
    }
}

/// What a refusal with `status` says, from the collector's `message` when it gave one. The
/// collector's refusals of a token already say what to do (a 403 names the token it takes, a
/// revoked token's 401 says to use its replacement), so advice is added only where it gave none (a
/// bare 403, a proxy's); a 401 to a request that carried no token (`sent_token`) gets the CLI's own.
fn refusal(status: u16, message: Option<&str>, sent_token: bool) -> String {
    match (status, message) {
        // The collector's own advice (an `Authorization` header, the dashboard) is for other clients.
        (401, _) if !sent_token => "no token given; set --token-file (or --token, PORTWATCH_TOKEN) to a read \
                                    token (an admin token to change baselines or alerts)"
            .to_owned(),
        (403, None) => "this token may not do that (an admin token changes baselines and alerts)".to_owned(),
        (_, Some(message)) => message.to_owned(),
        (status, None) => ureq::http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("no reason given")
            .to_owned(),
    }
}

/// A host name is used as a URL path segment: only the characters host names may have.
fn path_segment(host: &str) -> anyhow::Result<&str> {
    if !portwatch_common::wire::valid_host_name(host) {
        bail!("invalid host name {host:?}");
    }
    Ok(host)
}

/// The JSON body of a successful `response` to `path`.
fn read_json<T: DeserializeOwned>(response: &mut ureq::http::Response<ureq::Body>, path: &str) -> anyhow::Result<T> {
    // Read whole, then parsed: a long answer is streamed (no length), and
    // parsing it from the connection would cost a call per byte.
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER_BYTES)
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => anyhow::anyhow!(
                "the collector's answer to {path} is over {} MiB: narrow the question (--host, --port, --since)",
                MAX_ANSWER_BYTES >> 20
            ),
            e => anyhow::Error::new(e).context(format!("the collector's answer to {path} was cut short")),
        })?;
    serde_json::from_slice(&body)
        .with_context(|| format!("the collector's answer to {path} is not what this portwatch expects"))
}

/// Which page of a paged answer to ask for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Page<'a> {
    /// At most this many rows (the collector's default if `None`).
    pub limit: Option<usize>,
    /// After this cursor (from the previous page).
    pub after: Option<&'a str>,
}

/// The `after` of the next page in a `Link: <...?...&after=C>; rel="next"` header.
fn next_after(link: &str) -> Option<&str> {
    let target = link.split(';').next()?.trim().strip_prefix('<')?.strip_suffix('>')?;
    target.split(['?', '&']).find_map(|p| p.strip_prefix("after="))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_gives_one_piece_of_advice() {
        let admin = "a read token cannot change baselines or alerts; use an admin token \
                     (portwatch-collector token create --role admin --name NAME)";
        assert_eq!(refusal(403, Some(admin), true), admin);
        assert!(refusal(403, None, true).contains("an admin token"));
        let revoked = "this token was revoked: use its replacement, or ask for a new one";
        assert_eq!(refusal(401, Some(revoked), true), revoked);
        let none = refusal(401, Some("no credentials: send `Authorization: Bearer <token>`"), false);
        assert!(none.starts_with("no token given; set --token-file"), "{none}");
        assert!(!none.contains("Authorization"), "{none}");
        assert_eq!(refusal(404, Some("no host \"web-33\""), true), "no host \"web-33\"");
        assert_eq!(refusal(502, None, true), "Bad Gateway");
    }

    #[test]
    fn the_next_page_is_read_from_the_link_header() {
        let link = "</api/v1/hosts/web-3/history?port=22&after=1764612345678.42>; rel=\"next\"";
        assert_eq!(next_after(link), Some("1764612345678.42"));
        assert_eq!(next_after("</x?limit=5>; rel=\"next\""), None);
        assert_eq!(next_after("garbage"), None);
    }
}
