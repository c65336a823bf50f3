//! The collector's HTTP API as function calls, with errors that say what to do.

use anyhow::{bail, Context};
use jiff::Timestamp;
use portwatch_collector::store::{HostRow, ListenerRow};
use serde::de::DeserializeOwned;

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
        let agent = portwatch_common::client::http_agent(ca_file, std::time::Duration::from_secs(30))?;
        Ok(Client {
            base: base.trim_end_matches('/').to_owned(),
            token: token.map(str::to_owned),
            agent,
        })
    }

    fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<T> {
        let mut response = self.call(path, query)?;
        response
            .body_mut()
            .read_json::<T>()
            .with_context(|| format!("the collector's answer to {path} is not what this portwatch expects"))
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
        std::io::copy(&mut body, out)
            .context("the export was cut short (the collector's log says why); do not use the partial output")
    }

    /// A successful response to `GET path?query`, or an error saying what to do.
    fn call(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        let url = format!("{}{path}", self.base);
        let mut request = self.agent.get(&url);
        for (key, value) in query {
            request = request.query(key, value);
        }
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let mut response = request.call().map_err(|e| {
            let advice = portwatch_common::client::advice(&e);
            anyhow::Error::new(e).context(format!("cannot reach the collector at {} ({advice})", self.base))
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let message = response
            .body_mut()
            .read_json::<serde_json::Value>()
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| status.to_string());
        let hint = match status.as_u16() {
            401 => "; set --token or PORTWATCH_TOKEN to a read token",
            403 => "; use a read or admin token",
            _ => "",
        };
        bail!("the collector refused ({status}): {message}{hint}")
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
    ) -> anyhow::Result<Vec<ListenerRow>> {
        let mut query = Vec::new();
        query.extend(port.map(|p| ("port", p.to_string())));
        query.extend(since.map(|t| ("since", t.to_string())));
        query.extend(until.map(|t| ("until", t.to_string())));
        self.get(&format!("/api/v1/hosts/{}/history", path_segment(host)?), &query)
    }
}

impl Client {
    /// `GET /api/v1/hosts/{host}/diff?from=&to=` or `?vs_host=&at=`
    pub fn diff(
        &self,
        host: &str,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        vs_host: Option<&str>,
    ) -> anyhow::Result<portwatch_collector::diff::Diff> {
        let mut query = Vec::new();
        query.extend(from.map(|t| ("from", t.to_string())));
        query.extend(to.map(|t| ("to", t.to_string())));
        if let Some(other) = vs_host {
            query.push(("vs_host", path_segment(other)?.to_owned()));
        }
        self.get(&format!("/api/v1/hosts/{}/diff", path_segment(host)?), &query)
    }
}

/// A host name is used as a URL path segment: only the characters host names may have.
fn path_segment(host: &str) -> anyhow::Result<&str> {
    if !portwatch_common::wire::valid_host_name(host) {
        bail!("invalid host name {host:?}");
    }
    Ok(host)
}
