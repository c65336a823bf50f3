//! The agent's configuration file (TOML), strictly checked.
//!
//! Every key is documented in `packaging/config/agent.toml`, which a test
//! parses; an unknown key, a wrong type or a bad value is an error that names
//! the line and the key. Command-line flags override the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use portwatch_common::wire::{valid_host_name, MAX_TAGS, MAX_TAG_KEY_BYTES, MAX_TAG_VALUE_BYTES};
use serde::{Deserialize, Deserializer};

/// Default scan interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Default period of the full fd re-walk.
pub const DEFAULT_REWALK_INTERVAL: Duration = Duration::from_secs(60);
/// Default spool directory.
pub const DEFAULT_SPOOL_DIR: &str = "/var/lib/portwatch/spool";
/// Default spool size bound, in MiB.
pub const DEFAULT_SPOOL_MAX_MB: u64 = 64;
/// Default period of the safety full scan while kernel events are on.
pub const DEFAULT_SAFETY_SCAN_INTERVAL: Duration = Duration::from_secs(300);
/// Default of `peers`: inbound peers are not summarized unless asked.
pub const DEFAULT_PEERS: bool = false;
/// Default of `peers_top`: how many remote addresses a listener's summary names.
pub const DEFAULT_PEERS_TOP: usize = crate::peers::DEFAULT_TOP;
/// Shortest scan interval accepted.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The agent's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Base URLs of the collectors (`http://` or `https://`), in the order
    /// they are tried: one string, or a non-empty list (empty: not set).
    #[serde(default, deserialize_with = "collectors")]
    pub collector: Vec<String>,
    /// File holding this host's agent token.
    pub token_file: Option<PathBuf>,
    /// PEM certificates to verify an `https://` collector with (default: the built-in Mozilla roots).
    pub ca_file: Option<PathBuf>,
    /// The name this host reports as (default: the system's host name).
    pub host_name: Option<String>,
    /// How often to scan.
    #[serde(default = "default_interval", deserialize_with = "duration")]
    pub interval: Duration,
    /// How often the full fd re-walk runs.
    #[serde(default = "default_rewalk_interval", deserialize_with = "duration")]
    pub rewalk_interval: Duration,
    /// Where reports wait while the collector is unreachable.
    #[serde(default = "default_spool_dir")]
    pub spool_dir: PathBuf,
    /// Largest size of the spool on disk, in MiB.
    #[serde(default = "default_spool_max_mb")]
    pub spool_max_mb: u64,
    /// Use kernel events where the kernel allows them (else, and when
    /// false, scan every `interval`).
    #[serde(default = "default_events")]
    pub events: bool,
    /// With kernel events, how often a full scan checks what they said.
    #[serde(default = "default_safety_scan_interval", deserialize_with = "duration")]
    pub safety_scan_interval: Duration,
    /// Read the host's firewall (nftables, and legacy iptables where a
    /// namespace has legacy tables, in every network namespace) and
    /// report with each listener beyond loopback what it does with new
    /// inbound connections: open, restricted, filtered or unknown. Needs
    /// `CAP_NET_ADMIN` to list the rulesets (without it: unknown, with a
    /// warning).
    #[serde(default = "default_firewall")]
    pub firewall: bool,
    /// Summarize each TCP listener's established connections (count,
    /// distinct remotes, the busiest ones, their classes) every interval,
    /// and ship a listener's summary when it changed, at most once a minute
    /// (`run --peers` too; best-effort, not spooled: see the README).
    /// `portwatch-agent scan --peers` shows them whatever this says.
    #[serde(default = "default_peers")]
    pub peers: bool,
    /// How many of the busiest remote addresses a listener's summary names (1 to 100).
    #[serde(default = "default_peers_top")]
    pub peers_top: usize,
    /// Free-form tags reported with the host.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            collector: Vec::new(),
            token_file: None,
            ca_file: None,
            host_name: None,
            interval: DEFAULT_INTERVAL,
            rewalk_interval: DEFAULT_REWALK_INTERVAL,
            spool_dir: PathBuf::from(DEFAULT_SPOOL_DIR),
            spool_max_mb: DEFAULT_SPOOL_MAX_MB,
            events: true,
            safety_scan_interval: DEFAULT_SAFETY_SCAN_INTERVAL,
            firewall: true,
            peers: DEFAULT_PEERS,
            peers_top: DEFAULT_PEERS_TOP,
            tags: BTreeMap::new(),
        }
    }
}

fn default_interval() -> Duration {
    DEFAULT_INTERVAL
}
fn default_rewalk_interval() -> Duration {
    DEFAULT_REWALK_INTERVAL
}
fn default_events() -> bool {
    true
}
fn default_firewall() -> bool {
    true
}
fn default_safety_scan_interval() -> Duration {
    DEFAULT_SAFETY_SCAN_INTERVAL
}
fn default_peers() -> bool {
    DEFAULT_PEERS
}
fn default_peers_top() -> usize {
    DEFAULT_PEERS_TOP
}
fn default_spool_dir() -> PathBuf {
    PathBuf::from(DEFAULT_SPOOL_DIR)
}
fn default_spool_max_mb() -> u64 {
    DEFAULT_SPOOL_MAX_MB
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

/// `collector = "URL"` or `collector = ["URL", ...]` (at least one).
fn collectors<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let urls = match OneOrMany::deserialize(d).map_err(|_| {
        serde::de::Error::custom(
            "write one URL, collector = \"https://c1:7878\", or a list, collector = [\"https://c1:7878\", \"https://c2:7878\"]",
        )
    })? {
        OneOrMany::One(url) => vec![url],
        OneOrMany::Many(urls) => urls,
    };
    if urls.is_empty() {
        return Err(serde::de::Error::custom(
            "collector = []: give at least one URL, or leave collector out",
        ));
    }
    Ok(urls)
}

/// Parses `500ms`, `10s`, `5m`, `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration {text:?} ({e}); write it like \"500ms\", \"10s\" or \"5m\""))
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (the message names line and key).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line, column and key.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("{path}: {message}")]
    Invalid {
        /// The file (or "flags").
        path: PathBuf,
        /// What is wrong and what to write instead.
        message: String,
    },
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and checks configuration text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        config.check().map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(config)
    }

    /// Checks values the types alone do not.
    pub fn check(&self) -> Result<(), String> {
        for (i, url) in self.collector.iter().enumerate() {
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() <= "https://".len() {
                return Err(format!(
                    "collector = {url:?}: write a URL such as \"https://collector.example:7878\""
                ));
            }
            if let Some(ca) = &self.ca_file {
                if url.starts_with("http://") {
                    return Err(format!(
                        "ca_file = {:?} is set but collector {url:?} is plain http: write https://, or drop ca_file",
                        ca.display().to_string()
                    ));
                }
            }
            let same = |other: &String| other.trim_end_matches('/') == url.trim_end_matches('/');
            if let Some(first) = self.collector[..i].iter().find(|other| same(other)) {
                return Err(format!(
                    "collector {url:?} is listed twice (also as {first:?}): list each collector once"
                ));
            }
        }
        if let Some(name) = &self.host_name {
            if !valid_host_name(name) {
                return Err(format!(
                    "host_name = {name:?}: use 1 to 253 letters, digits, '.', '-' or '_'"
                ));
            }
        }
        if self.interval < MIN_INTERVAL {
            return Err(format!(
                "interval = {:?} is too short: use at least 100ms",
                self.interval
            ));
        }
        if self.rewalk_interval < self.interval {
            return Err(format!(
                "rewalk_interval ({:?}) is shorter than interval ({:?}): make it at least the interval",
                self.rewalk_interval, self.interval
            ));
        }
        if self.safety_scan_interval < self.interval {
            return Err(format!(
                "safety_scan_interval ({:?}) is shorter than interval ({:?}): make it at least the interval",
                self.safety_scan_interval, self.interval
            ));
        }
        if !(1..=crate::peers::MAX_TOP).contains(&self.peers_top) {
            return Err(format!(
                "peers_top = {}: name from 1 to {} remote addresses per listener",
                self.peers_top,
                crate::peers::MAX_TOP
            ));
        }
        if self.spool_max_mb == 0 {
            return Err("spool_max_mb = 0: the spool needs at least 1 MiB".to_owned());
        }
        if self.tags.len() > MAX_TAGS {
            return Err(format!(
                "{} tags: a host has at most {MAX_TAGS} (the collector keeps no more)",
                self.tags.len()
            ));
        }
        for (key, value) in &self.tags {
            if key.is_empty()
                || key.len() > MAX_TAG_KEY_BYTES
                || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                return Err(format!(
                    "tag {key:?}: tag names are 1 to {MAX_TAG_KEY_BYTES} letters, digits, '.', '-' or '_'"
                ));
            }
            if value.len() > MAX_TAG_VALUE_BYTES {
                return Err(format!("tag {key:?}: values are at most {MAX_TAG_VALUE_BYTES} bytes"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("agent.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn the_shipped_example_parses_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/config/agent.toml");
        let config = Config::load(&path).unwrap();
        assert_eq!(config.interval, DEFAULT_INTERVAL);
        assert_eq!(config.rewalk_interval, DEFAULT_REWALK_INTERVAL);
        assert_eq!(config.spool_dir, PathBuf::from(DEFAULT_SPOOL_DIR));
        assert_eq!(config.spool_max_mb, DEFAULT_SPOOL_MAX_MB);
        assert!(config.events);
        assert_eq!(config.safety_scan_interval, DEFAULT_SAFETY_SCAN_INTERVAL);
        assert_eq!(config.collector, ["http://127.0.0.1:7878"]);
        assert_eq!(config.peers, DEFAULT_PEERS);
        assert_eq!(config.peers_top, DEFAULT_PEERS_TOP);
        assert!(config.tags.is_empty());
    }

    #[test]
    fn an_empty_file_is_all_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn durations_tags_and_names_are_read() {
        let c = parse("interval = \"500ms\"\nrewalk_interval = \"5m\"\nhost_name = \"web-3\"\n[tags]\nrole = \"db\"\n")
            .unwrap();
        assert_eq!(c.interval, Duration::from_millis(500));
        assert_eq!(c.rewalk_interval, Duration::from_secs(300));
        assert_eq!(c.host_name.as_deref(), Some("web-3"));
        assert_eq!(c.tags.get("role").map(String::as_str), Some("db"));
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_its_line_and_the_known_keys() {
        let e = parse("interval = \"10s\"\nintervall = \"5s\"\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        assert!(e.contains("intervall") && e.contains("interval"), "{e}");
    }

    #[test]
    fn bad_values_say_what_to_write_instead() {
        let too_many_tags = (0..65).fold("[tags]\n".to_owned(), |t, i| t + &format!("t{i} = \"x\"\n"));
        let long_tag_value = format!("[tags]\nrole = \"{}\"\n", "x".repeat(257));
        for (text, needle) in [
            ("interval = \"10 parsecs\"", "write it like"),
            ("interval = 10", "line 1"),
            ("interval = \"10ms\"", "at least 100ms"),
            ("interval = \"2m\"\nrewalk_interval = \"1m\"", "at least the interval"),
            ("collector = \"collector:7878\"", "https://collector.example:7878"),
            ("host_name = \"web 3\"", "host_name"),
            ("spool_max_mb = 0", "at least 1 MiB"),
            ("events = \"yes\"", "line 1"),
            (
                "interval = \"1m\"\nsafety_scan_interval = \"30s\"",
                "safety_scan_interval",
            ),
            (
                "collector = \"http://c:7878\"\nca_file = \"/etc/ca.pem\"",
                "write https://",
            ),
            ("spool_max_mb = -1", "line 1"),
            ("peers_top = 0", "from 1 to 100"),
            ("peers_top = 101", "from 1 to 100"),
            ("peers = 1", "line 1"),
            ("collector = []", "at least one URL"),
            ("collector = 7878", "or a list"),
            ("collector = [\"https://c1:7878\", 7878]", "or a list"),
            (
                "collector = [\"https://c1:7878\", \"c2:7878\"]",
                "https://collector.example:7878",
            ),
            (
                "collector = [\"https://c1:7878\", \"https://c2:7878\", \"https://c1:7878/\"]",
                "listed twice",
            ),
            (
                "collector = [\"https://c1:7878\", \"http://c2:7878\"]\nca_file = \"/etc/ca.pem\"",
                "write https://",
            ),
            ("[tags]\n\"bad tag\" = \"x\"", "tag names"),
            (too_many_tags.as_str(), "at most 64"),
            (long_tag_value.as_str(), "at most 256 bytes"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.starts_with("agent.toml: "), "{text}: {e}");
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn peers_are_off_by_default_and_read_with_their_top() {
        let c = parse("").unwrap();
        assert!(!c.peers);
        assert_eq!(c.peers_top, 5);
        let c = parse("peers = true\npeers_top = 10\n").unwrap();
        assert!(c.peers);
        assert_eq!(c.peers_top, 10);
    }

    #[test]
    fn collector_is_one_url_or_a_list_tried_in_order() {
        assert_eq!(
            parse("collector = \"https://c1:7878\"").unwrap().collector,
            ["https://c1:7878"]
        );
        let c = parse("collector = [\"https://c1:7878\", \"https://c2:7878\"]\nca_file = \"/etc/ca.pem\"").unwrap();
        assert_eq!(c.collector, ["https://c1:7878", "https://c2:7878"]);
        assert!(parse("").unwrap().collector.is_empty());
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = Config::load(Path::new("/nonexistent/agent.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/agent.toml"), "{e}");
    }
}
