//! Baselines: the documented inventory of legitimate listeners.
//!
//! A baseline is a TOML file that ops keep in git and load with
//! `portwatch baseline apply FILE`. It selects a group of hosts (host name
//! globs and/or tags their agents report) and lists the listeners expected
//! there, each with the team that owns it and the reason it exists:
//!
//! ```toml
//! name = "db"                          # unique; applying a file of the same name replaces it
//! description = "billing databases"
//! hosts = ["db-*", "pg-?"]             # host name globs (* and ?); any may match
//! tags = { role = "db", env = "prod" } # every tag must match
//! missing_grace = "2m"                 # how long an expected listener may be gone (a restart)
//!
//! [[listener]]
//! proto = "tcp"
//! port = 5432                          # or a range: "8000-8100"
//! bind = "loopback"                    # at most this exposed: loopback, specific or wildcard
//! process = "postgres"                 # the name (comm) or executable file name of a holder
//! user = "postgres"
//! owner = "team data"
//! reason = "postgres for the billing app"
//! ```
//!
//! Parsing is strict (unknown keys are errors) and every error names the
//! line. Nothing here does I/O: the collector stores the source text, and
//! `drift` evaluates hosts against the parsed form.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeInclusive;
use std::time::Duration;

use jiff::Timestamp;
use portwatch_common::{Exposure, Listener, Proto};
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// How long an expected listener may be gone before it is reported missing,
/// unless the baseline says otherwise: long enough for a service restart.
pub const DEFAULT_MISSING_GRACE: Duration = Duration::from_secs(120);

/// Longest `missing_grace` accepted.
pub const MAX_MISSING_GRACE: Duration = Duration::from_secs(30 * 86_400);

/// Longest baseline source accepted.
pub const MAX_SOURCE_BYTES: usize = 1024 * 1024;

/// A parsed, valid baseline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Baseline {
    /// Unique name.
    pub name: String,
    /// What it is for.
    pub description: Option<String>,
    /// Host name globs; a host matching any is selected (empty: any host).
    pub hosts: Vec<String>,
    /// Tags a host's agent must report, all of them.
    pub tags: BTreeMap<String, String>,
    /// How long an expected listener may be gone before it is missing, in milliseconds.
    pub missing_grace_ms: u64,
    /// The expected listeners.
    pub listeners: Vec<Entry>,
}

/// One expected listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Entry {
    /// Transport protocol.
    pub proto: Proto,
    /// First port of the range (the port, for a single port).
    pub port_from: u16,
    /// Last port of the range.
    pub port_to: u16,
    /// The widest exposure allowed (`None`: any).
    pub bind: Option<Exposure>,
    /// A holder must have this name (`comm`) or executable file name.
    pub process: Option<String>,
    /// The socket's user, or a holder's, must be this one.
    pub user: Option<String>,
    /// Who owns it.
    pub owner: String,
    /// Why it is there.
    pub reason: String,
    /// Whether it must be there (reported missing when it is not); default:
    /// true for a single port, false for a range.
    pub required: bool,
    /// Accepts a risky port (a database, SMB, ...) exposed beyond loopback.
    pub accept_risk: bool,
    /// Line of the entry in the source, for messages.
    pub line: usize,
}

/// Why a baseline file is refused; the message names the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BaselineError(pub String);

/// The file's shape, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Source {
    name: Spanned<String>,
    description: Option<String>,
    #[serde(default)]
    hosts: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    tags: Option<Spanned<BTreeMap<String, String>>>,
    missing_grace: Option<Spanned<String>>,
    #[serde(default)]
    listener: Vec<Spanned<EntrySource>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntrySource {
    proto: Proto,
    port: PortSpec,
    bind: Option<BindSpec>,
    process: Option<String>,
    user: Option<String>,
    owner: String,
    reason: String,
    required: Option<bool>,
    #[serde(default)]
    accept_risk: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PortSpec {
    One(i64),
    Range(String),
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum BindSpec {
    Any,
    Loopback,
    Specific,
    Wildcard,
}

/// 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Parses and validates a baseline file.
pub fn parse(text: &str) -> Result<Baseline, BaselineError> {
    if text.len() > MAX_SOURCE_BYTES {
        return Err(BaselineError(format!(
            "the file is {} bytes; a baseline may be at most {MAX_SOURCE_BYTES}: split it by host group",
            text.len()
        )));
    }
    let source: Source = toml::from_str(text).map_err(|e| BaselineError(e.to_string().trim_end().to_owned()))?;
    let at = |span: std::ops::Range<usize>| line_of(text, span.start);

    let name_line = at(source.name.span());
    let name = source.name.into_inner();
    if !valid_name(&name) {
        return Err(BaselineError(format!(
            "line {name_line}: name {name:?}: use letters, digits, '-', '_' and '.' (at most 64)"
        )));
    }
    let hosts = match source.hosts {
        Some(h) => {
            let line = at(h.span());
            let globs = h.into_inner();
            if let Some(bad) = globs
                .iter()
                .find(|g| g.is_empty() || g.chars().any(char::is_whitespace))
            {
                return Err(BaselineError(format!(
                    "line {line}: hosts: {bad:?} is not a host name glob (write web-* or db-?)"
                )));
            }
            globs
        }
        None => Vec::new(),
    };
    let tags = source.tags.map(Spanned::into_inner).unwrap_or_default();
    if hosts.is_empty() && tags.is_empty() {
        return Err(BaselineError(format!(
            "line {name_line}: baseline {name:?} selects no host: add hosts = [\"web-*\"] and/or tags = {{ role = \"web\" }} \
             (hosts = [\"*\"] for every host)"
        )));
    }
    let missing_grace_ms = match source.missing_grace {
        Some(g) => {
            let line = at(g.span());
            let text = g.into_inner();
            let d = humantime::parse_duration(&text).map_err(|e| {
                BaselineError(format!(
                    "line {line}: missing_grace = {text:?}: {e}; write a duration such as 30s, 2m or 1h"
                ))
            })?;
            if d > MAX_MISSING_GRACE {
                return Err(BaselineError(format!(
                    "line {line}: missing_grace = {text:?} is longer than 30 days; to never report this \
                     listener missing, write required = false on its entry"
                )));
            }
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
        }
        None => DEFAULT_MISSING_GRACE.as_millis() as u64,
    };

    let mut listeners = Vec::with_capacity(source.listener.len());
    for spanned in source.listener {
        let line = at(spanned.span());
        let e = spanned.into_inner();
        let fail = |what: String| BaselineError(format!("line {line}: [[listener]]: {what}"));
        let (port_from, port_to) = match &e.port {
            PortSpec::One(p) => {
                let p = u16::try_from(*p)
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or_else(|| fail(format!("port = {p}: a port is 1 to 65535")))?;
                (p, p)
            }
            PortSpec::Range(r) => parse_range(r).ok_or_else(|| {
                fail(format!(
                    "port = {r:?}: write one port (5432) or a range \"8000-8100\" of ports 1 to 65535"
                ))
            })?,
        };
        for (key, value, hint) in [
            ("owner", &e.owner, "who owns this listener (a team or a person)"),
            ("reason", &e.reason, "why it is there"),
        ] {
            if value.trim().is_empty() {
                return Err(fail(format!("port {port_from}: {key} is empty: say {hint}")));
            }
        }
        for (key, value) in [("process", &e.process), ("user", &e.user)] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(fail(format!(
                    "port {port_from}: {key} is empty: name it, or leave the key out to accept any"
                )));
            }
        }
        let bind = match e.bind {
            None | Some(BindSpec::Any) => None,
            Some(BindSpec::Loopback) => Some(Exposure::Loopback),
            Some(BindSpec::Specific) => Some(Exposure::Specific),
            Some(BindSpec::Wildcard) => Some(Exposure::Wildcard),
        };
        listeners.push(Entry {
            proto: e.proto,
            port_from,
            port_to,
            bind,
            process: e.process,
            user: e.user,
            owner: e.owner,
            reason: e.reason,
            required: e.required.unwrap_or(port_from == port_to),
            accept_risk: e.accept_risk,
            line,
        });
    }
    for (i, a) in listeners.iter().enumerate() {
        if let Some(b) = listeners[..i].iter().find(|b| {
            b.proto == a.proto
                && b.port_from == a.port_from
                && b.port_to == a.port_to
                && b.bind == a.bind
                && b.process == a.process
                && b.user == a.user
        }) {
            return Err(BaselineError(format!(
                "line {}: [[listener]] repeats the entry of line {}: merge them",
                a.line, b.line
            )));
        }
    }
    Ok(Baseline {
        name,
        description: source.description,
        hosts,
        tags,
        missing_grace_ms,
        listeners,
    })
}

fn parse_range(text: &str) -> Option<(u16, u16)> {
    let (a, b) = text.split_once('-').unwrap_or((text, text));
    let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a > 0 && a <= b).then_some((a, b))
}

/// Whether `name` is a usable baseline name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Baseline {
    /// Whether the baseline covers `host` (with its agent's `tags`).
    pub fn selects(&self, host: &str, tags: &BTreeMap<String, String>) -> bool {
        let by_name = self.hosts.is_empty() || self.hosts.iter().any(|g| wildmatch::WildMatch::new(g).matches(host));
        let by_tags = self.tags.iter().all(|(k, v)| tags.get(k) == Some(v));
        by_name && by_tags
    }

    /// How long an expected listener may be gone.
    pub fn missing_grace(&self) -> Duration {
        Duration::from_millis(self.missing_grace_ms)
    }
}

/// How wide an exposure is: loopback < specific < wildcard.
fn width(e: Exposure) -> u8 {
    match e {
        Exposure::Loopback => 0,
        Exposure::Specific => 1,
        Exposure::Wildcard => 2,
    }
}

/// How a listener compares with one entry of the same protocol and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Everything the entry says holds.
    Matches,
    /// Exposure within bounds, but held by another process or user.
    WrongOwner,
    /// More exposed than the entry allows.
    Wider,
}

impl Entry {
    /// Whether the entry is about `listener`'s protocol and port.
    pub fn covers(&self, proto: Proto, port: u16) -> bool {
        self.proto == proto && self.ports().contains(&port)
    }

    /// The entry's ports.
    pub fn ports(&self) -> RangeInclusive<u16> {
        self.port_from..=self.port_to
    }

    /// How `listener` (of a protocol and port the entry covers) fits it.
    pub fn fit(&self, listener: &Listener) -> Fit {
        if self.bind.is_some_and(|b| width(listener.exposure) > width(b)) {
            return Fit::Wider;
        }
        match self.owner_ok(listener) {
            true => Fit::Matches,
            false => Fit::WrongOwner,
        }
    }

    /// Whether a holder is the expected process and the user the expected one.
    fn owner_ok(&self, listener: &Listener) -> bool {
        let process_ok = self.process.as_deref().is_none_or(|want| {
            listener.processes.iter().any(|p| {
                &*p.name == want
                    || p.exe
                        .as_deref()
                        .and_then(|exe| exe.rsplit('/').next())
                        .is_some_and(|file| file == want)
            })
        });
        let user_ok = self.user.as_deref().is_none_or(|want| {
            listener.user.as_deref() == Some(want) || listener.processes.iter().any(|p| p.user.as_deref() == Some(want))
        });
        process_ok && user_ok
    }
}

impl fmt::Display for Entry {
    /// `tcp/5432 on loopback by postgres as postgres`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.proto.as_str(), self.port_from)?;
        if self.port_to != self.port_from {
            write!(f, "-{}", self.port_to)?;
        }
        if let Some(b) = self.bind {
            write!(f, " on {}", b.as_str())?;
        }
        if let Some(p) = &self.process {
            write!(f, " by {p}")?;
        }
        if let Some(u) = &self.user {
            write!(f, " as {u}")?;
        }
        Ok(())
    }
}

/// A baseline as stored: its source as written, and when and by whom it was applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StoredBaseline {
    /// Its name.
    pub name: String,
    /// The TOML file as applied.
    pub source: String,
    /// When it was applied.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub applied_at: Timestamp,
    /// The token name that applied it.
    pub applied_by: String,
}

/// What applying a baseline did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum BaselineAction {
    /// A new baseline.
    Create,
    /// A changed baseline replaced the one of the same name.
    Update,
    /// The same source again: nothing changed, nothing logged.
    Unchanged,
    /// Removed.
    Remove,
}

impl BaselineAction {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            BaselineAction::Create => "create",
            BaselineAction::Update => "update",
            BaselineAction::Unchanged => "unchanged",
            BaselineAction::Remove => "remove",
        }
    }

    /// Parses an action's name.
    pub fn parse(name: &str) -> Option<BaselineAction> {
        [
            BaselineAction::Create,
            BaselineAction::Update,
            BaselineAction::Unchanged,
            BaselineAction::Remove,
        ]
        .into_iter()
        .find(|a| a.as_str() == name)
    }

    /// What applying `source` as a baseline does where `stored` is the
    /// source of the same name already in force: the same source again is
    /// no change (and is not logged), another one replaces it.
    pub fn of_applying(stored: Option<&str>, source: &str) -> BaselineAction {
        match stored {
            None => BaselineAction::Create,
            Some(old) if old == source => BaselineAction::Unchanged,
            Some(_) => BaselineAction::Update,
        }
    }
}

/// One change to a baseline, as `baseline log` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BaselineLogRow {
    /// Order of the change.
    pub id: i64,
    /// The baseline.
    pub name: String,
    /// What was done.
    pub action: BaselineAction,
    /// When.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: Timestamp,
    /// Who: the token name.
    pub actor: String,
    /// Why, as the person said.
    pub comment: Option<String>,
    /// The source the change left (`None` for a removal).
    pub source: Option<String>,
}

/// Answer of `POST /api/v1/baselines`.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApplyAnswer {
    /// The baseline's name.
    pub name: String,
    /// `create`, `update` or `unchanged`.
    pub action: BaselineAction,
    /// Expected listeners it lists.
    pub listeners: usize,
}

/// A stored baseline with its parsed form.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BaselineView {
    /// As stored.
    #[serde(flatten)]
    pub stored: StoredBaseline,
    /// Parsed (absent if it no longer parses).
    pub baseline: Option<Baseline>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applying_the_same_source_again_is_no_change_and_another_replaces_it() {
        assert_eq!(BaselineAction::of_applying(None, "a"), BaselineAction::Create);
        assert_eq!(BaselineAction::of_applying(Some("a"), "a"), BaselineAction::Unchanged);
        assert_eq!(BaselineAction::of_applying(Some("a"), "a "), BaselineAction::Update);
        for action in [
            BaselineAction::Create,
            BaselineAction::Update,
            BaselineAction::Unchanged,
            BaselineAction::Remove,
        ] {
            assert_eq!(BaselineAction::parse(action.as_str()), Some(action));
        }
        assert_eq!(BaselineAction::parse("Create"), None);
    }

    const GOOD: &str = r#"
name = "db"
description = "billing databases"
hosts = ["db-*"]
tags = { env = "prod" }
missing_grace = "30s"

[[listener]]
proto = "tcp"
port = 5432
bind = "loopback"
process = "postgres"
user = "postgres"
owner = "team data"
reason = "postgres for the billing app"

[[listener]]
proto = "tcp"
port = "9100-9199"
owner = "team sre"
reason = "exporters"
"#;

    fn err(text: &str) -> String {
        parse(text).unwrap_err().0
    }

    #[test]
    fn a_documented_baseline_parses_with_its_defaults() {
        let b = parse(GOOD).unwrap();
        assert_eq!(b.name, "db");
        assert_eq!(b.missing_grace_ms, 30_000);
        assert_eq!(b.listeners.len(), 2);
        let pg = &b.listeners[0];
        assert_eq!(
            (pg.port_from, pg.port_to, pg.bind),
            (5432, 5432, Some(Exposure::Loopback))
        );
        assert!(pg.required && !pg.accept_risk);
        assert_eq!(pg.line, 8);
        let range = &b.listeners[1];
        assert_eq!((range.port_from, range.port_to, range.required), (9100, 9199, false));
        assert_eq!(pg.to_string(), "tcp/5432 on loopback by postgres as postgres");
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let unknown = GOOD.replace("user = \"postgres\"", "usr = \"postgres\"");
        let e = err(&unknown);
        assert!(e.contains("line 13") && e.contains("usr"), "{e}");
        let e = err(&GOOD.replace("owner = \"team data\"", "owner = \" \""));
        assert!(e.contains("line 8") && e.contains("owner is empty"), "{e}");
        let e = err(&GOOD.replace("port = 5432", "port = 70000"));
        assert!(e.contains("line 8") && e.contains("1 to 65535"), "{e}");
        let e = err(&GOOD.replace("\"9100-9199\"", "\"9199-9100\""));
        assert!(e.contains("line 17") && e.contains("range"), "{e}");
        let e = err(&GOOD.replace("\"30s\"", "\"20000y\""));
        assert!(e.contains("line 6") && e.contains("required = false"), "{e}");
        let e = err(&GOOD.replace("\"30s\"", "\"soon\""));
        assert!(e.contains("line 6") && e.contains("missing_grace"), "{e}");
        let e = err(&GOOD.replace("bind = \"loopback\"", "bind = \"public\""));
        assert!(e.contains("line 11") && e.contains("bind"), "{e}");
        let e = err(&GOOD.replace("reason = \"exporters\"\n", ""));
        assert!(e.contains("reason"), "{e}");
        let e = err("name = \"x\"\n");
        assert!(e.contains("line 1") && e.contains("selects no host"), "{e}");
        let e = err("name = \"a b\"\nhosts = [\"*\"]\n");
        assert!(e.contains("line 1") && e.contains("name"), "{e}");
        let twice =
            format!("{GOOD}\n[[listener]]\nproto = \"tcp\"\nport = \"9100-9199\"\nowner = \"x\"\nreason = \"y\"\n");
        let e = err(&twice);
        assert!(e.contains("line 23") && e.contains("line 17"), "{e}");
    }

    #[test]
    fn hosts_are_selected_by_glob_and_every_tag() {
        let b = parse(GOOD).unwrap();
        let prod: BTreeMap<String, String> = [("env".to_owned(), "prod".to_owned())].into();
        let dev: BTreeMap<String, String> = [("env".to_owned(), "dev".to_owned())].into();
        assert!(b.selects("db-1", &prod));
        assert!(!b.selects("db-1", &dev));
        assert!(!b.selects("web-1", &prod));
        assert!(!b.selects("db-1", &BTreeMap::new()));
    }

    fn listener(port: u16, exposure: Exposure, process: &str, user: &str) -> Listener {
        Listener {
            netns: 1,
            proto: Proto::Tcp,
            family: portwatch_common::Family::Ipv4,
            local_addr: match exposure {
                Exposure::Loopback => "127.0.0.1".parse().unwrap(),
                Exposure::Wildcard => "0.0.0.0".parse().unwrap(),
                Exposure::Specific => "10.0.0.5".parse().unwrap(),
            },
            local_port: port,
            inode: 1,
            uid: 0,
            user: Some(user.into()),
            exposure,
            dual_stack: false,
            processes: vec![portwatch_common::Process {
                pid: 7,
                name: process.into(),
                cmdline: None,
                exe: Some(format!("/usr/lib/bin/{process}").into()),
                uid: None,
                user: Some(user.into()),
                container: None,
                unit: None,
            }],
            firewall: None,
        }
    }

    #[test]
    fn a_listener_fits_matches_is_wider_or_has_the_wrong_owner() {
        let pg = &parse(GOOD).unwrap().listeners[0];
        assert!(pg.covers(Proto::Tcp, 5432) && !pg.covers(Proto::Udp, 5432));
        assert_eq!(
            pg.fit(&listener(5432, Exposure::Loopback, "postgres", "postgres")),
            Fit::Matches
        );
        assert_eq!(
            pg.fit(&listener(5432, Exposure::Wildcard, "postgres", "postgres")),
            Fit::Wider
        );
        assert_eq!(
            pg.fit(&listener(5432, Exposure::Loopback, "nc", "postgres")),
            Fit::WrongOwner
        );
        assert_eq!(
            pg.fit(&listener(5432, Exposure::Loopback, "postgres", "nobody")),
            Fit::WrongOwner
        );
        let mut by_exe = listener(5432, Exposure::Loopback, "postmaster", "postgres");
        by_exe.processes[0].exe = Some("/usr/lib/postgresql/15/bin/postgres".into());
        assert_eq!(pg.fit(&by_exe), Fit::Matches);
        let mut unattributed = listener(5432, Exposure::Loopback, "postgres", "postgres");
        unattributed.processes.clear();
        assert_eq!(
            pg.fit(&unattributed),
            Fit::WrongOwner,
            "an unknown holder is not the expected one"
        );
    }
}
