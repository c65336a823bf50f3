//! History: listener intervals and hosts, as every query answers them.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use portwatch_common::{Listener, SocketKey};
use serde::{Deserialize, Serialize};

/// One listener interval, as every query returns it. In JSON the listener's
/// fields (`proto`, `local_addr`, `processes`, ... as the scanner names them)
/// stand beside `host`, `opened_at` and `closed_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListenerRow {
    /// Host name (shared by every row of the host: a fleet-wide answer has
    /// thousands).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub host: Arc<str>,
    /// The listener: socket and owners.
    #[serde(flatten)]
    pub listener: Listener,
    /// When the agent first observed it open.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub opened_at: Timestamp,
    /// When the agent observed it gone; `None` while open.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub closed_at: Option<Timestamp>,
}

impl ListenerRow {
    /// Where this interval starts: its socket, at its opening.
    pub fn start(&self) -> Edge {
        Edge {
            socket: self.listener.socket_key(),
            at: self.opened_at,
        }
    }

    /// Where it ends, once it closed: its socket, at its close.
    pub fn end(&self) -> Option<Edge> {
        self.closed_at.map(|at| Edge {
            socket: self.listener.socket_key(),
            at,
        })
    }
}

/// A socket at an instant: where an interval starts or ends. **An owner
/// change is not a close**: an interval whose end is another's start (the
/// same socket, the same instant) is the listener going on with other
/// owners (a prefork server's worker replaced), not a listener closing and
/// another opening. Drift (flapping) and trends (how long a listener lived)
/// both read history this way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Edge {
    /// The kernel socket.
    pub socket: SocketKey,
    /// The instant.
    pub at: Timestamp,
}

/// An interval's CSV columns, in order, as `export --format csv` and the CLI's `--format csv`
/// write them; the owning process's columns follow.
pub const INTERVAL_CSV_COLUMNS: [&str; 15] = [
    "host",
    "proto",
    "family",
    "local_addr",
    "local_port",
    "netns",
    "inode",
    "uid",
    "user",
    "exposure",
    "dual_stack",
    "firewall",
    "firewall_rule",
    "opened_at",
    "closed_at",
];

impl ListenerRow {
    /// Its cells under [`INTERVAL_CSV_COLUMNS`], as text (`firewall` and
    /// `firewall_rule` empty where the firewall was not evaluated; the rule
    /// with a restricted answer's sources). Not guarded for spreadsheets:
    /// the writer does that.
    pub fn csv_cells(&self) -> [String; 15] {
        let l = &self.listener;
        let opt = |o: Option<&str>| o.unwrap_or_default().to_owned();
        [
            self.host.to_string(),
            l.proto.as_str().to_owned(),
            l.family.as_str().to_owned(),
            l.local_addr.to_string(),
            l.local_port.to_string(),
            l.netns.to_string(),
            l.inode.to_string(),
            l.uid.to_string(),
            opt(l.user.as_deref()),
            l.exposure.as_str().to_owned(),
            l.dual_stack.to_string(),
            opt(l.firewall.as_ref().map(|f| f.reach.as_str())),
            l.firewall.as_ref().map(|f| f.describe()).unwrap_or_default(),
            self.opened_at.to_string(),
            self.closed_at.map(|t| t.to_string()).unwrap_or_default(),
        ]
    }
}

/// What a page of history reads: intervals on `port` (any if `None`)
/// open at any time in `[since, until]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryWindow {
    /// Only this port.
    pub port: Option<u16>,
    /// From this moment.
    pub since: Option<Timestamp>,
    /// Until this moment.
    pub until: Option<Timestamp>,
}

/// Where a page of history ends: the last interval's opening time and id.
/// Written `MILLIS.ID` (opaque to clients: they pass back what they got).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryCursor {
    /// The last interval's opening time, in milliseconds.
    pub opened_ms: i64,
    /// The last interval's id.
    pub id: i64,
}

impl std::fmt::Display for HistoryCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.opened_ms, self.id)
    }
}

impl std::str::FromStr for HistoryCursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a history cursor: pass back the one the previous page gave");
        let (opened, id) = s.split_once('.').ok_or_else(bad)?;
        Ok(HistoryCursor {
            opened_ms: opened.parse().map_err(|_| bad())?,
            id: id.parse().map_err(|_| bad())?,
        })
    }
}

/// Whether a host's agent is reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum HostStatus {
    /// Heard from within the last three intervals.
    Up,
    /// Not heard from for three intervals or more.
    Silent,
}

/// Which hosts a listing keeps (`GET /api/v1/hosts?name=&tag=&status=`):
/// every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFilter {
    /// A host name glob (`*` any run of characters, `?` one).
    pub name: Option<String>,
    /// A tag the host's agent reports, with this value (`None`: any value).
    pub tag: Option<(String, Option<String>)>,
    /// Only the hosts up, or only the silent ones.
    pub status: Option<HostStatus>,
}

impl HostFilter {
    /// Whether `host` is kept.
    pub fn keeps(&self, host: &HostRow) -> bool {
        self.name
            .as_ref()
            .is_none_or(|glob| wildmatch::WildMatch::new(glob).matches(&host.host))
            && self
                .tag
                .as_ref()
                .is_none_or(|(key, value)| match (host.tags.get(key), value) {
                    (Some(has), Some(wanted)) => has == wanted,
                    (has, None) => has.is_some(),
                    (None, Some(_)) => false,
                })
            && self.status.is_none_or(|status| host.status == status)
    }
}

/// One page of a host listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPage {
    /// The hosts of the page, by name.
    pub hosts: Vec<HostRow>,
    /// How many hosts `filter` keeps in all.
    pub total: usize,
    /// The name to give as `after` for the next page, when there is one.
    pub next: Option<String>,
}

/// The hosts of `hosts` that `filter` keeps, by name: those named after
/// `after` (none: from the first), at most `limit` (none: all of them).
pub fn host_page(mut hosts: Vec<HostRow>, filter: &HostFilter, after: Option<&str>, limit: Option<usize>) -> HostPage {
    hosts.retain(|h| filter.keeps(h));
    hosts.sort_by(|a, b| a.host.cmp(&b.host));
    let total = hosts.len();
    let start = after.map_or(0, |after| hosts.partition_point(|h| h.host.as_str() <= after));
    let mut page: Vec<HostRow> = hosts.drain(start..).collect();
    let next = match limit {
        Some(limit) if page.len() > limit => {
            page.truncate(limit);
            page.last().map(|h| h.host.clone())
        }
        _ => None,
    };
    HostPage {
        hosts: page,
        total,
        next,
    }
}

/// A host as `hosts` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostRow {
    /// Host name.
    pub host: String,
    /// Up or silent, as of the query's `now`.
    pub status: HostStatus,
    /// When the collector first heard from it.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub first_seen: Timestamp,
    /// When the collector last heard from it.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub last_seen: Timestamp,
    /// The agent's version.
    pub agent_version: Option<String>,
    /// The agent's scan interval, in milliseconds.
    pub interval_ms: u64,
    /// Operating system.
    pub os: Option<String>,
    /// Kernel release.
    pub kernel: Option<String>,
    /// Boot time.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub boot_time: Option<Timestamp>,
    /// Tags from the agent's config.
    pub tags: BTreeMap<String, String>,
    /// Listeners open now.
    pub listeners: u64,
    /// Reports the agent dropped from a full spool, in all.
    pub dropped_reports: u64,
    /// The host's clock minus the collector's, in milliseconds, as last
    /// measured (from a batch's `alive_at`, see the collector's `clock` module; a few
    /// milliseconds behind on a correct clock); `None` before it was measured.
    #[serde(default)]
    pub clock_skew_ms: Option<i64>,
    /// When it was measured.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub clock_skew_at: Option<Timestamp>,
    /// Whether that skew is beyond the collector's tolerance (`[clock]
    /// tolerance`): the host has a `clock-skew` finding.
    #[serde(default)]
    pub clock_skewed: bool,
    /// How its agent sees listeners: `events` (kernel events) or `polling`,
    /// as its latest snapshot said; `None` for agents that do not say.
    #[serde(default)]
    pub detection: Option<String>,
    /// The inode of its agent's own network namespace (the host's), as its
    /// latest snapshot said; `None` for agents that do not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_netns: Option<u64>,
    /// The addresses of its interfaces in that namespace, as its latest
    /// snapshot said (loopback and link-local left out): where a probe from
    /// the collector connects to its wildcard listeners.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub addresses: Vec<std::net::IpAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, status: HostStatus, tags: &[(&str, &str)]) -> HostRow {
        let at = Timestamp::from_second(1_800_000_000).unwrap();
        HostRow {
            host: name.into(),
            status,
            first_seen: at,
            last_seen: at,
            agent_version: None,
            interval_ms: 10_000,
            os: None,
            kernel: None,
            boot_time: None,
            tags: tags.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            listeners: 0,
            dropped_reports: 0,
            clock_skew_ms: None,
            clock_skew_at: None,
            clock_skewed: false,
            detection: None,
            host_netns: None,
            addresses: Vec::new(),
        }
    }

    fn fleet() -> Vec<HostRow> {
        vec![
            host("web-2", HostStatus::Up, &[("env", "prod")]),
            host("db-1", HostStatus::Silent, &[("env", "prod")]),
            host("web-1", HostStatus::Silent, &[("env", "staging")]),
            host("web-3", HostStatus::Up, &[]),
        ]
    }

    fn names(page: &HostPage) -> Vec<&str> {
        page.hosts.iter().map(|h| h.host.as_str()).collect()
    }

    #[test]
    fn hosts_are_kept_by_name_glob_tag_and_status_all_together() {
        let all = host_page(fleet(), &HostFilter::default(), None, None);
        assert_eq!(names(&all), ["db-1", "web-1", "web-2", "web-3"]);
        assert_eq!((all.total, all.next), (4, None));
        let filter = |name: Option<&str>, tag: Option<(&str, Option<&str>)>, status| HostFilter {
            name: name.map(str::to_owned),
            tag: tag.map(|(k, v)| (k.to_owned(), v.map(str::to_owned))),
            status,
        };
        let page = |f: HostFilter| names(&host_page(fleet(), &f, None, None)).join(" ");
        assert_eq!(page(filter(Some("web-?"), None, None)), "web-1 web-2 web-3");
        assert_eq!(page(filter(Some("*-1"), None, None)), "db-1 web-1");
        assert_eq!(page(filter(None, Some(("env", Some("prod"))), None)), "db-1 web-2");
        assert_eq!(
            page(filter(None, Some(("env", Some(""))), None)),
            "",
            "a tag's value must match"
        );
        assert_eq!(
            page(filter(None, Some(("env", None)), None)),
            "db-1 web-1 web-2",
            "any value"
        );
        assert_eq!(page(filter(None, None, Some(HostStatus::Silent))), "db-1 web-1");
        assert_eq!(
            page(filter(Some("web-*"), Some(("env", Some("prod"))), Some(HostStatus::Up))),
            "web-2"
        );
        assert_eq!(
            page(filter(Some("WEB-*"), None, None)),
            "",
            "names are matched as written"
        );
    }

    #[test]
    fn pages_follow_each_other_by_name_with_every_kept_host_once() {
        let f = HostFilter::default();
        let first = host_page(fleet(), &f, None, Some(3));
        assert_eq!(names(&first), ["db-1", "web-1", "web-2"]);
        assert_eq!((first.total, first.next.as_deref()), (4, Some("web-2")));
        let second = host_page(fleet(), &f, first.next.as_deref(), Some(3));
        assert_eq!(names(&second), ["web-3"]);
        assert_eq!(second.next, None, "the last page says so");
        let exact = host_page(fleet(), &f, None, Some(4));
        assert_eq!(
            (exact.hosts.len(), exact.next),
            (4, None),
            "a full last page has no next"
        );
        // A name that is gone (forgotten meanwhile) still places the next page.
        let after_gone = host_page(fleet(), &f, Some("web-15"), Some(10));
        assert_eq!(names(&after_gone), ["web-2", "web-3"]);
        assert_eq!(host_page(fleet(), &f, None, Some(0)).next.as_deref(), None);
    }
}
