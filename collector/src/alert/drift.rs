//! Drift: how a host's listeners depart from its baselines, as findings.
//!
//! [`evaluate`] is pure: it takes what the store knows of one host (its
//! status, its listeners now, its recent intervals) and the baselines, and
//! says what is wrong. Each finding has a stable `kind`, a severity and a
//! `key` that names the condition (not the moment), so that the same
//! condition seen again is the same alert.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use portwatch_common::process::summary;
use portwatch_common::text;
use portwatch_common::{Exposure, Listener, Proto, Reach};

use super::risky::RiskyPorts;
use crate::clock;
use portwatch_model::alert::{MAX_HOLDERS_BYTES, MAX_MESSAGE_BYTES};
use portwatch_model::baseline::{Baseline, Entry, Fit};
use portwatch_model::history::Edge;
use portwatch_model::time::before;
use portwatch_model::time::human_skew;
use portwatch_model::{Finding, Kind, Severity};
use portwatch_model::{HostRow, HostStatus, ListenerRow, PeerPoint, Place, ProbeVerdict, Verified};

/// Thresholds that are not in baselines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Risky ports.
    pub risky: RiskyPorts,
    /// A listener that closed more than this many times in `flap_window` is flapping.
    pub flap_max: u32,
    /// The flapping window.
    pub flap_window: Duration,
    /// After the collector starts, agents come back at their own pace (their
    /// retry backoff reaches 5 minutes): no host is judged silent before this
    /// long, plus three of its intervals, has passed since the start.
    pub startup_grace: Duration,
    /// A host whose measured clock skew is beyond this, either way, has a
    /// `clock-skew` finding (`[clock] tolerance`, the tolerance ingest dates by).
    pub clock_tolerance: Duration,
    /// Most unresolved alerts of one kind on one host; the findings beyond
    /// are counted in a summary alert ([`crate::lifecycle::cap`]).
    pub max_open_per_kind: usize,
}

/// Default [`Policy::startup_grace`]: the agents' longest retry delay.
pub const DEFAULT_STARTUP_GRACE: Duration = Duration::from_secs(300);

/// Default flapping threshold: more than 5 closes...
pub const DEFAULT_FLAP_MAX: u32 = 5;
/// ...in 10 minutes.
pub const DEFAULT_FLAP_WINDOW: Duration = Duration::from_secs(600);

impl Default for Policy {
    fn default() -> Self {
        Policy {
            risky: RiskyPorts::default(),
            flap_max: DEFAULT_FLAP_MAX,
            flap_window: DEFAULT_FLAP_WINDOW,
            startup_grace: DEFAULT_STARTUP_GRACE,
            clock_tolerance: clock::DEFAULT_TOLERANCE,
            max_open_per_kind: crate::lifecycle::cap::DEFAULT_MAX_OPEN,
        }
    }
}

/// A baseline and when it took its current form.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The baseline.
    pub baseline: Baseline,
    /// When it was applied.
    pub applied_at: Timestamp,
}

/// What the store knows of one host, for [`evaluate`].
#[derive(Debug)]
pub struct HostView<'a> {
    /// The host, with its status and tags.
    pub host: &'a HostRow,
    /// Its listeners open now.
    pub listeners: &'a [ListenerRow],
    /// Its intervals open at any time in the last [`lookback`].
    pub recent: &'a [ListenerRow],
    /// Keys of its alerts that are open or acknowledged: a grace period
    /// delays a new alert, it never resolves one (a baseline edited while a
    /// listener is missing keeps the alert, and its acknowledgement).
    pub alerting: &'a HashSet<String>,
    /// Whether to list `unbaselined` listeners (the drift view does; alert
    /// evaluation, which never alerts on them, need not build them).
    pub with_info: bool,
    /// The latest probe verdicts of its listener places (the view from
    /// outside, [`crate::probe`]); empty where none probed it.
    pub verdicts: &'a [ProbeVerdict],
    /// The latest inbound peer point of each of its listener places (see
    /// [`suspicious_peers`]); empty where no threat list is loaded.
    pub peers: &'a [PeerPoint],
    /// The threat lists as loaded now, when the config names any.
    pub threats: Option<&'a crate::threat::Table>,
}

/// How far back [`HostView::recent`] must reach for these baselines and policy.
pub fn lookback(baselines: &[Applied], policy: &Policy) -> Duration {
    baselines
        .iter()
        .map(|a| a.baseline.missing_grace())
        .chain([policy.flap_window])
        .max()
        .unwrap_or(policy.flap_window)
}

/// The findings of one host as of `now`, by kind then key.
pub fn evaluate(view: &HostView<'_>, baselines: &[Applied], policy: &Policy, now: Timestamp) -> Vec<Finding> {
    let host = &view.host.host;
    let mine: Vec<&Applied> = baselines
        .iter()
        .filter(|a| a.baseline.selects(host, &view.host.tags))
        .collect();
    let entries: Vec<(&Applied, &Entry)> = mine
        .iter()
        .flat_map(|a| a.baseline.listeners.iter().map(move |e| (*a, e)))
        .collect();
    let mut findings = Vec::new();
    let verdicts: BTreeMap<Place, &ProbeVerdict> = view.verdicts.iter().map(|v| (v.place, v)).collect();

    if view.host.status == HostStatus::Silent {
        let mut f = Finding::new(Kind::HostSilent, host, format!("host-silent:{host}"));
        f.message = format!(
            "{host}: no report since {} ({}): the agent is stopped, blocked or killed",
            view.host.last_seen,
            ago(now, view.host.last_seen)
        );
        findings.push(f);
    }

    if let Some(skew) = view.host.clock_skew_ms {
        if clock::beyond_tolerance(skew, policy.clock_tolerance) {
            let mut f = Finding::new(Kind::ClockSkew, host, format!("clock-skew:{host}"));
            f.message = format!(
                "{host}: its clock is {} {} the collector's (tolerance {}{}): {}; fix its time sync (NTP)",
                human_skew(skew),
                if skew > 0 { "ahead of" } else { "behind" },
                humantime::format_duration(policy.clock_tolerance),
                match view.host.clock_skew_at {
                    Some(t) => format!(", measured {}", ago(now, t)),
                    None => String::new(),
                },
                if skew > 0 {
                    "the changes it reports are dated when received"
                } else {
                    "the changes it reports are dated that much in the past"
                },
            );
            findings.push(f);
        }
    }

    for row in view.listeners {
        let l = &row.listener;
        let verdict = verdict_of(&verdicts, row);
        let candidates: Vec<&(&Applied, &Entry)> = entries
            .iter()
            .filter(|(_, e)| e.covers(l.proto, l.local_port))
            .collect();
        let fits: Vec<(&Applied, &Entry, Fit)> = candidates.iter().map(|(a, e)| (*a, *e, e.fit(l))).collect();
        let matched = fits
            .iter()
            .find(|(_, e, fit)| *fit == Fit::Matches && e.accept_risk)
            .or_else(|| fits.iter().find(|(_, _, fit)| *fit == Fit::Matches));

        if let Some(label) = policy.risky.label(l.proto, l.local_port) {
            let accepted = matched.is_some_and(|(_, e, _)| e.accept_risk);
            if l.exposure != Exposure::Loopback && !accepted {
                let mut f = listener_finding(Kind::RiskyPortExposed, host, l);
                f.message = format!(
                    "{host}: {} ({label}) is {}, held by {}{}",
                    describe(l),
                    match &l.firewall {
                        Some(fw) if fw.reach == Reach::Filtered => {
                            format!("bound beyond loopback but filtered by the firewall ({})", fw.rule)
                        }
                        Some(fw) if fw.reach == Reach::Restricted => {
                            format!("reachable beyond loopback from some sources only ({})", fw.describe())
                        }
                        Some(fw) if fw.reach == Reach::Open =>
                            format!("reachable beyond loopback, the firewall accepts it ({})", fw.rule),
                        _ => "reachable beyond loopback".to_owned(),
                    },
                    holders(l),
                    match matched {
                        Some(_) => "; its baseline entry does not accept the risk (accept_risk = true, with a reason)",
                        None => "",
                    }
                );
                f.severity = reached(l, f.severity);
                if let Some(v) = verdict.filter(|v| v.state == Verified::Reachable) {
                    // Seen from outside: whatever the firewall's answer said.
                    f.severity = Severity::Critical;
                    let _ = write!(
                        f.message,
                        "; verified reachable from the collector at {} ({})",
                        v.at, v.detail
                    );
                }
                set_entry(&mut f, matched.map(|(a, e, _)| (*a, *e)));
                findings.push(f);
            }
        }

        if let Some(f) = outside_view_disagrees(host, l, verdict) {
            findings.push(f);
        }

        if mine.is_empty() {
            if !view.with_info {
                continue;
            }
            let mut f = listener_finding(Kind::Unbaselined, host, l);
            f.message = format!(
                "{host}: {} held by {} (no baseline covers this host)",
                describe(l),
                holders(l)
            );
            findings.push(f);
            continue;
        }
        if matched.is_some() {
            continue;
        }
        let owner_bad = fits.iter().find(|(_, _, fit)| *fit == Fit::WrongOwner);
        let wider = fits.iter().find(|(_, _, fit)| *fit == Fit::Wider);
        let (kind, entry) = match (owner_bad, wider) {
            (Some((a, e, _)), _) => (Kind::OwnerMismatch, Some((*a, *e))),
            (None, Some((a, e, _))) => (Kind::ExposureWidened, Some((*a, *e))),
            (None, None) => (Kind::UnexpectedListener, None),
        };
        let mut f = listener_finding(kind, host, l);
        f.message = match (kind, entry) {
            (Kind::OwnerMismatch, Some((_, e))) => format!(
                "{host}: {} is held by {}, but the baseline expects {e} (owner: {})",
                describe(l),
                holders(l),
                e.owner
            ),
            (Kind::ExposureWidened, Some((_, e))) => format!(
                "{host}: {} held by {} is exposed ({}), but the baseline allows at most {} ({e}, owner: {})",
                describe(l),
                holders(l),
                l.exposure.as_str(),
                e.bind.map_or("any", Exposure::as_str),
                e.owner
            ),
            _ => format!(
                "{host}: {} held by {} matches no baseline entry of this host",
                describe(l),
                holders(l)
            ),
        };
        if kind == Kind::ExposureWidened {
            f.severity = reached(l, f.severity);
            if let Some(fw) = l.firewall.as_ref().filter(|fw| fw.reach != Reach::Open) {
                let _ = write!(f.message, "; the firewall says {}: {}", fw.reach, fw.describe());
            }
        }
        if kind == Kind::OwnerMismatch && l.processes.is_empty() {
            // No holder could be named (a scan racing a process's exit, or an
            // agent without privileges): worth a look, not a page.
            f.severity = Severity::Warning;
            f.message.push_str(" (the agent could not name the holder)");
        }
        set_entry(&mut f, entry);
        findings.push(f);
    }

    for (applied, entry) in &entries {
        if !entry.required {
            continue;
        }
        let present = view
            .listeners
            .iter()
            .any(|r| entry.covers(r.listener.proto, r.listener.local_port));
        if present {
            continue;
        }
        // Gone since the last close of a listener the entry covers, or since
        // the baseline (or the host) appeared if none was seen recently.
        let last_close = view
            .recent
            .iter()
            .filter(|r| entry.covers(r.listener.proto, r.listener.local_port))
            .filter_map(|r| r.closed_at)
            .max();
        let since = [Some(applied.applied_at), Some(view.host.first_seen), last_close]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(now);
        let name = &applied.baseline.name;
        let key = format!("missing-listener:{host}:{name}:{entry}");
        let grace = SignedDuration::try_from(applied.baseline.missing_grace()).unwrap_or(SignedDuration::MAX);
        if now.duration_since(since) < grace && !view.alerting.contains(&key) {
            continue;
        }
        let mut f = Finding::new(Kind::MissingListener, host, key);
        f.proto = Some(entry.proto);
        f.local_port = Some(entry.port_from);
        f.message = format!(
            "{host}: expected {entry} (owner: {}, reason: {}) is not listening{}",
            entry.owner,
            entry.reason,
            match last_close {
                Some(t) => format!(", gone since {t} ({})", ago(now, t)),
                None => String::new(),
            }
        );
        set_entry(&mut f, Some((applied, entry)));
        findings.push(f);
    }

    // Flapping: real closes only. An owner change (a prefork server's worker
    // replaced) closes one interval and opens the next on the same socket at
    // the same instant: that is not a close of the listener.
    let window_start = before(now, policy.flap_window);
    let continued: HashSet<Edge> = view.recent.iter().map(ListenerRow::start).collect();
    let mut closes: BTreeMap<(u64, Proto, std::net::IpAddr, u16), (u32, &Listener)> = BTreeMap::new();
    for r in view.recent {
        let l = &r.listener;
        let Some(end) = r.end().filter(|e| e.at >= window_start && e.at <= now) else {
            continue;
        };
        if continued.contains(&end) {
            continue;
        }
        closes
            .entry((l.netns, l.proto, l.local_addr, l.local_port))
            .or_insert((0, l))
            .0 += 1;
    }
    for (n, l) in closes.into_values() {
        if n > policy.flap_max {
            let mut f = listener_finding(Kind::Flapping, host, l);
            f.processes = None;
            f.message = format!(
                "{host}: {} closed {n} times in the last {} (more than {}): a crash loop, or a probe?",
                describe(l),
                humantime::format_duration(policy.flap_window),
                policy.flap_max
            );
            findings.push(f);
        }
    }

    findings.extend(firewall_opened(view, policy));
    findings.extend(suspicious_peers(view));

    findings.sort_by(|a, b| (a.kind, &a.key).cmp(&(b.kind, &b.key)));
    findings.dedup_by(|a, b| a.key == b.key);
    for f in &mut findings {
        if let Cow::Owned(cut) = text::truncate(&f.message, MAX_MESSAGE_BYTES) {
            f.message = cut;
        }
    }
    findings
}

/// `suspicious-peer`: a remote address that a threat list holds (after
/// `[threat] allow`), among the remotes that an open listener's latest peer
/// point names. One finding per listener and address, as serious as the
/// most serious list that holds it. It holds while that listener's latest
/// point names the address, and resolves with the first point that does
/// not (the agent ships a point when the connections change), or when the
/// listener closes. An agent names a summary's busiest remotes only
/// (`peers_top`, 5 by default): a listed address with fewer connections
/// than those is not seen.
fn suspicious_peers(view: &HostView<'_>) -> Vec<Finding> {
    let Some(table) = view.threats else {
        return Vec::new();
    };
    let host = &view.host.host;
    let open: BTreeMap<Place, &Listener> = view
        .listeners
        .iter()
        .map(|r| (place_of(&r.listener), &r.listener))
        .collect();
    let mut findings = Vec::new();
    for point in view.peers {
        let Some(l) = open.get(&point.place) else {
            continue; // a listener closed since: its peers are gone with it
        };
        for remote in &point.summary.top {
            let matches = table.suspicious(remote.addr);
            let Some(severity) = matches.iter().map(|m| m.severity).max() else {
                continue;
            };
            let mut f = listener_finding(Kind::SuspiciousPeer, host, l);
            let _ = write!(f.key, ":{}", remote.addr);
            f.severity = severity;
            let lists: Vec<String> = matches
                .iter()
                .map(|m| match m.id {
                    Some(id) => format!("{} ({} {id})", m.list, m.net),
                    None => format!("{} ({})", m.list, m.net),
                })
                .collect();
            f.message = format!(
                "{host}: {} held {} connection(s) to {} held by {} at {}; it is listed in {}",
                remote.addr,
                remote.connections,
                describe(l),
                holders(l),
                point.at,
                lists.join(", ")
            );
            findings.push(f);
        }
    }
    findings
}

/// Where `l` listens, as probe verdicts and peer points name it.
fn place_of(l: &Listener) -> Place {
    Place {
        netns: l.netns,
        proto: l.proto,
        addr: l.local_addr,
        port: l.local_port,
    }
}

/// The verdict of `row`'s place, if it was made while `row` was what it is
/// (at or after its opening): a verdict older than the interval (a rule
/// change since, a listener restarted) says nothing of it yet.
fn verdict_of<'v>(verdicts: &BTreeMap<Place, &'v ProbeVerdict>, row: &ListenerRow) -> Option<&'v ProbeVerdict> {
    verdicts
        .get(&place_of(&row.listener))
        .copied()
        .filter(|v| v.at >= row.opened_at)
}

/// `outside-view-disagrees`: the host's firewall and the collector's probe
/// of `l` disagree. Filtered by the host's firewall but reached from the
/// collector is a warning: the ruleset does not do what it was read to do
/// (a path the agent does not evaluate, another filter, a NAT). Open by the
/// host's firewall but not reached is info: most often a network firewall
/// between the collector and the host, which may be as intended. A
/// restricted or unknown answer, or a verdict not made on this interval,
/// says nothing either way.
fn outside_view_disagrees(host: &str, l: &Listener, verdict: Option<&ProbeVerdict>) -> Option<Finding> {
    let (fw, v) = (l.firewall.as_ref()?, verdict?);
    let (severity, why) = match (fw.reach, v.state) {
        (Reach::Filtered, Verified::Reachable) => (
            Severity::Warning,
            format!(
                "the host's firewall filters it ({}), but the collector connected at {} ({}): the ruleset does not \
                 do what it was read to do, or something else lets it in",
                fw.rule, v.at, v.detail
            ),
        ),
        (Reach::Open, Verified::Unreachable) => (
            Severity::Info,
            format!(
                "the host's firewall accepts it ({}), but the collector could not connect at {} ({}): often a \
                 network firewall between them",
                fw.rule, v.at, v.detail
            ),
        ),
        _ => return None,
    };
    let mut f = listener_finding(Kind::OutsideViewDisagrees, host, l);
    f.severity = severity;
    f.message = format!("{host}: {} held by {}: {why}", describe(l), holders(l));
    Some(f)
}

/// How serious an exposure finding of `l` is, from what the firewall
/// answers: `severity` when it accepts every source (or no answer is
/// known), one step less when it accepts some sources only, info when it
/// filters every source.
fn reached(l: &Listener, severity: Severity) -> Severity {
    match l.firewall.as_ref().map(|f| f.reach) {
        Some(Reach::Filtered) => Severity::Info,
        Some(Reach::Restricted) => severity.min(Severity::Warning),
        Some(Reach::Open | Reach::Unknown) | None => severity,
    }
}

/// `firewall-opened`: a listener the firewall filtered, made reachable by a
/// rule change. The change is one close and one open of the same socket at
/// the same moment (the firewall's answer is part of a listener's
/// identity), so the finding holds while that close is recent (in
/// `view.recent`: the flapping window at least) and the listener is still
/// reachable. Critical on a risky port, a warning elsewhere.
fn firewall_opened(view: &HostView<'_>, policy: &Policy) -> Vec<Finding> {
    let host = &view.host.host;
    let filtered_until: HashSet<(portwatch_common::SocketKey, Timestamp)> = view
        .recent
        .iter()
        .filter(|r| r.listener.firewall.as_ref().is_some_and(|f| f.reach == Reach::Filtered))
        .filter_map(|r| Some((r.listener.socket_key(), r.closed_at?)))
        .collect();
    if filtered_until.is_empty() {
        return Vec::new();
    }
    let mut findings = Vec::new();
    for row in view.listeners {
        let l = &row.listener;
        let Some(fw) = l.firewall.as_ref().filter(|f| f.reach.reachable()) else {
            continue;
        };
        if !filtered_until.contains(&(l.socket_key(), row.opened_at)) {
            continue;
        }
        let mut f = listener_finding(Kind::FirewallOpened, host, l);
        let risky = policy.risky.label(l.proto, l.local_port);
        if risky.is_some() {
            f.severity = Severity::Critical;
        }
        f.message = format!(
            "{host}: {}{} held by {} was filtered by the firewall and is {} since {}: {}",
            describe(l),
            risky.map(|label| format!(" ({label})")).unwrap_or_default(),
            holders(l),
            match fw.reach {
                Reach::Restricted => "reachable from some sources",
                _ => "reachable from anywhere",
            },
            row.opened_at,
            fw.describe()
        );
        findings.push(f);
    }
    findings
}

fn listener_finding(kind: Kind, host: &str, l: &Listener) -> Finding {
    let mut key = format!("{}:{host}:{}/{}", kind.as_str(), l.proto.as_str(), l.local_port);
    let _ = write!(key, "@{}:{}", l.netns, l.local_addr);
    let mut f = Finding::new(kind, host, key);
    f.proto = Some(l.proto);
    f.local_addr = Some(l.local_addr);
    f.local_port = Some(l.local_port);
    f.processes = (!l.processes.is_empty()).then(|| holders(l));
    f
}

fn set_entry(f: &mut Finding, entry: Option<(&Applied, &Entry)>) {
    if let Some((a, e)) = entry {
        f.baseline = Some(a.baseline.name.clone());
        f.expected = Some(e.to_string());
        f.owner = Some(e.owner.clone());
        f.reason = Some(e.reason.clone());
    }
}

/// `tcp 0.0.0.0:5432`.
fn describe(l: &Listener) -> String {
    match l.local_addr {
        std::net::IpAddr::V6(a) => format!("{} [{a}]:{}", l.proto_label(), l.local_port),
        std::net::IpAddr::V4(a) => format!("{} {a}:{}", l.proto_label(), l.local_port),
    }
}

/// Who holds `l` (`sshd[812]`), in at most [`MAX_HOLDERS_BYTES`].
fn holders(l: &Listener) -> String {
    match l.processes.is_empty() {
        true => "an unknown process".to_owned(),
        false => text::truncate(&summary(&l.processes), MAX_HOLDERS_BYTES).into_owned(),
    }
}

fn ago(now: Timestamp, then: Timestamp) -> String {
    let secs = now.duration_since(then).as_secs().max(0) as u64;
    format!("{} ago", humantime::format_duration(Duration::from_secs(secs)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use portwatch_common::{Family, Process};
    use portwatch_model::baseline;
    use std::sync::Arc;

    const BASE: &str = r#"
name = "web"
hosts = ["web-*"]
missing_grace = "2m"

[[listener]]
proto = "tcp"
port = 22
process = "sshd"
user = "root"
owner = "team sre"
reason = "remote administration"

[[listener]]
proto = "tcp"
port = 5432
bind = "loopback"
process = "postgres"
owner = "team data"
reason = "local cache database"

[[listener]]
proto = "tcp"
port = 443
owner = "team web"
reason = "the site"
"#;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    /// No alert open.
    static NO_ALERTS: std::sync::LazyLock<HashSet<String>> = std::sync::LazyLock::new(HashSet::new);

    /// The view of `host` with `now` open (and nothing else open in the
    /// lookback), no alert open, the info findings listed, and no probe
    /// verdict, peer or threat list: the fields a test changes it names.
    fn view_of<'a>(host: &'a HostRow, now: &'a [ListenerRow]) -> HostView<'a> {
        HostView {
            host,
            listeners: now,
            recent: now,
            alerting: &NO_ALERTS,
            with_info: true,
            verdicts: &[],
            peers: &[],
            threats: None,
        }
    }

    fn host(name: &str, status: HostStatus) -> HostRow {
        HostRow {
            host: name.to_owned(),
            status,
            first_seen: t(-86_400),
            last_seen: t(0),
            agent_version: None,
            interval_ms: 10_000,
            os: None,
            kernel: None,
            boot_time: None,
            tags: Default::default(),
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

    fn row(port: u16, addr: &str, process: &str, user: &str) -> ListenerRow {
        let local_addr: std::net::IpAddr = addr.parse().unwrap();
        ListenerRow {
            host: "web-1".into(),
            listener: Listener {
                netns: 1,
                proto: Proto::Tcp,
                family: Family::Ipv4,
                local_addr,
                local_port: port,
                inode: u64::from(port),
                uid: 0,
                user: Some(user.into()),
                exposure: portwatch_common::Exposure::of(local_addr),
                dual_stack: false,
                processes: vec![Process {
                    pid: 100 + u32::from(port),
                    name: process.into(),
                    cmdline: None,
                    exe: None,
                    uid: None,
                    user: Some(user.into()),
                    container: None,
                    unit: None,
                }],
                firewall: None,
            },
            opened_at: t(-3600),
            closed_at: None,
        }
    }

    fn applied(at: Timestamp) -> Vec<Applied> {
        vec![Applied {
            baseline: baseline::parse(BASE).unwrap(),
            applied_at: at,
        }]
    }

    fn kinds(findings: &[Finding]) -> Vec<(&'static str, Option<u16>)> {
        findings.iter().map(|f| (f.kind.as_str(), f.local_port)).collect()
    }

    fn behind(mut r: ListenerRow, reach: Reach, rule: &str) -> ListenerRow {
        r.listener.firewall = Some(portwatch_common::Firewall {
            reach,
            rule: rule.into(),
            sources: match reach {
                Reach::Restricted => vec!["ip saddr 10.0.0.0/8".into()],
                _ => Vec::new(),
            },
        });
        r
    }

    fn severity_of(findings: &[Finding], kind: Kind, port: u16) -> Option<Severity> {
        findings
            .iter()
            .find(|f| f.kind == kind && f.local_port == Some(port))
            .map(|f| f.severity)
    }

    #[test]
    fn a_risky_or_widened_port_the_firewall_filters_is_info_and_one_it_restricts_a_warning() {
        let h = host("web-1", HostStatus::Up);
        let now = [
            behind(
                row(5432, "0.0.0.0", "postgres", "postgres"),
                Reach::Filtered,
                "inet filter input policy drop",
            ),
            behind(
                row(23, "0.0.0.0", "telnetd", "root"),
                Reach::Restricted,
                "inet filter input handle 4",
            ),
            behind(
                row(3389, "0.0.0.0", "xrdp", "root"),
                Reach::Open,
                "inet filter input handle 5",
            ),
            row(445, "0.0.0.0", "smbd", "root"),
        ];
        let view = view_of(&h, &now);
        let f = evaluate(&view, &applied(t(-7200)), &Policy::default(), t(0));
        assert_eq!(severity_of(&f, Kind::RiskyPortExposed, 5432), Some(Severity::Info));
        assert_eq!(severity_of(&f, Kind::ExposureWidened, 5432), Some(Severity::Info));
        assert_eq!(severity_of(&f, Kind::RiskyPortExposed, 23), Some(Severity::Warning));
        assert_eq!(severity_of(&f, Kind::RiskyPortExposed, 3389), Some(Severity::Critical));
        assert_eq!(
            severity_of(&f, Kind::RiskyPortExposed, 445),
            Some(Severity::Critical),
            "no answer: as bound"
        );
        let filtered = f
            .iter()
            .find(|f| f.kind == Kind::RiskyPortExposed && f.local_port == Some(5432))
            .unwrap();
        assert!(
            filtered
                .message
                .contains("filtered by the firewall (inet filter input policy drop)"),
            "{}",
            filtered.message
        );
        let widened = f.iter().find(|f| f.kind == Kind::ExposureWidened).unwrap();
        assert!(
            widened.message.contains("the firewall says filtered"),
            "{}",
            widened.message
        );
        assert!(
            !f.iter().any(|f| f.kind == Kind::FirewallOpened),
            "nothing was opened: {f:?}"
        );
    }

    fn probed(r: &ListenerRow, state: Verified, at: Timestamp) -> ProbeVerdict {
        ProbeVerdict {
            place: Place {
                netns: r.listener.netns,
                proto: r.listener.proto,
                addr: r.listener.local_addr,
                port: r.listener.local_port,
            },
            state,
            at,
            detail: format!("10.0.0.5:{} answered", r.listener.local_port),
        }
    }

    #[test]
    fn a_risky_port_verified_reachable_is_critical_whatever_the_firewall_said() {
        let h = host("db-1", HostStatus::Up);
        let now = vec![
            behind(
                row(5432, "0.0.0.0", "postgres", "postgres"),
                Reach::Restricted,
                "inet filter input handle 4",
            ),
            behind(
                row(6379, "0.0.0.0", "redis", "redis"),
                Reach::Filtered,
                "inet filter input policy drop",
            ),
            behind(
                row(3306, "0.0.0.0", "mysqld", "mysql"),
                Reach::Filtered,
                "inet filter input policy drop",
            ),
        ];
        let verdicts = vec![
            probed(&now[0], Verified::Reachable, t(-60)),
            probed(&now[1], Verified::Reachable, t(-60)),
            probed(&now[2], Verified::Unreachable, t(-60)),
        ];
        let view = HostView {
            verdicts: &verdicts,
            ..view_of(&h, &now)
        };
        let f = evaluate(&view, &[], &Policy::default(), t(0));
        assert_eq!(
            severity_of(&f, Kind::RiskyPortExposed, 5432),
            Some(Severity::Critical),
            "{f:#?}"
        );
        assert_eq!(
            severity_of(&f, Kind::RiskyPortExposed, 6379),
            Some(Severity::Critical),
            "{f:#?}"
        );
        assert_eq!(
            severity_of(&f, Kind::RiskyPortExposed, 3306),
            Some(Severity::Info),
            "not reached: as the firewall said"
        );
        let pg = f
            .iter()
            .find(|f| f.kind == Kind::RiskyPortExposed && f.local_port == Some(5432))
            .unwrap();
        assert!(
            pg.message.contains("; verified reachable from the collector at"),
            "{}",
            pg.message
        );
        assert!(pg.message.contains("10.0.0.5:5432 answered"), "{}", pg.message);
    }

    #[test]
    fn the_host_and_the_outside_view_disagreeing_is_a_finding_either_way() {
        let h = host("db-1", HostStatus::Up);
        let now = vec![
            behind(
                row(8080, "0.0.0.0", "nginx", "www"),
                Reach::Filtered,
                "inet filter input policy drop",
            ),
            behind(
                row(8081, "0.0.0.0", "nginx", "www"),
                Reach::Open,
                "inet filter input handle 7",
            ),
            behind(
                row(8082, "0.0.0.0", "nginx", "www"),
                Reach::Open,
                "inet filter input handle 8",
            ),
            behind(
                row(8083, "0.0.0.0", "nginx", "www"),
                Reach::Restricted,
                "inet filter input handle 9",
            ),
            behind(
                row(8084, "0.0.0.0", "nginx", "www"),
                Reach::Filtered,
                "inet filter input policy drop",
            ),
            row(8085, "0.0.0.0", "nginx", "www"),
        ];
        let verdicts = vec![
            probed(&now[0], Verified::Reachable, t(-60)),
            probed(&now[1], Verified::Unreachable, t(-60)),
            probed(&now[2], Verified::Reachable, t(-60)),
            probed(&now[3], Verified::Unreachable, t(-60)),
            probed(&now[4], Verified::Unreachable, t(-60)),
            probed(&now[5], Verified::Reachable, t(-60)),
        ];
        let view = HostView {
            verdicts: &verdicts,
            ..view_of(&h, &now)
        };
        let f = evaluate(&view, &[], &Policy::default(), t(0));
        let disagree: Vec<(u16, Severity)> = f
            .iter()
            .filter(|f| f.kind == Kind::OutsideViewDisagrees)
            .map(|f| (f.local_port.unwrap(), f.severity))
            .collect();
        assert_eq!(disagree, [(8080, Severity::Warning), (8081, Severity::Info)], "{f:#?}");
        let filtered = f
            .iter()
            .find(|f| f.kind == Kind::OutsideViewDisagrees && f.local_port == Some(8080))
            .unwrap();
        assert!(
            filtered.message.contains(
                "the host's firewall filters it (inet filter input policy drop), but the collector connected"
            ),
            "{}",
            filtered.message
        );
        assert!(
            filtered.key.starts_with("outside-view-disagrees:db-1:tcp/8080@1:"),
            "{}",
            filtered.key
        );
        let open = f
            .iter()
            .find(|f| f.kind == Kind::OutsideViewDisagrees && f.local_port == Some(8081))
            .unwrap();
        assert!(
            open.message.contains("often a network firewall between them"),
            "{}",
            open.message
        );
    }

    #[test]
    fn a_verdict_older_than_the_listeners_interval_says_nothing_of_it() {
        let h = host("db-1", HostStatus::Up);
        // Filtered since a rule change a minute ago; the probe reached it before that.
        let mut now = vec![behind(
            row(5432, "0.0.0.0", "postgres", "postgres"),
            Reach::Filtered,
            "inet filter input policy drop",
        )];
        now[0].opened_at = t(-60);
        let verdicts = vec![probed(&now[0], Verified::Reachable, t(-120))];
        let view = HostView {
            verdicts: &verdicts,
            ..view_of(&h, &now)
        };
        let f = evaluate(&view, &[], &Policy::default(), t(0));
        assert_eq!(
            severity_of(&f, Kind::RiskyPortExposed, 5432),
            Some(Severity::Info),
            "{f:#?}"
        );
        assert!(!f.iter().any(|f| f.kind == Kind::OutsideViewDisagrees), "{f:#?}");
    }

    #[test]
    fn a_rule_change_that_makes_a_filtered_listener_reachable_is_firewall_opened_while_recent() {
        let h = host("web-1", HostStatus::Up);
        let mut was = behind(
            row(5432, "0.0.0.0", "postgres", "postgres"),
            Reach::Filtered,
            "inet filter input policy drop",
        );
        was.closed_at = Some(t(-60));
        let mut is = behind(
            row(5432, "0.0.0.0", "postgres", "postgres"),
            Reach::Open,
            "inet filter input handle 9",
        );
        is.opened_at = t(-60);
        let mut other = behind(
            row(8080, "0.0.0.0", "python3", "www"),
            Reach::Filtered,
            "inet filter input policy drop",
        );
        other.closed_at = Some(t(-50));
        let mut other_now = behind(
            row(8080, "0.0.0.0", "python3", "www"),
            Reach::Open,
            "inet filter input handle 9",
        );
        other_now.opened_at = t(-40); // not the moment the filtered one closed: a restart, not a rule change
        let now = [is.clone(), other_now.clone()];
        let recent = [was.clone(), is.clone(), other.clone(), other_now.clone()];
        let view = HostView {
            recent: &recent,
            ..view_of(&h, &now)
        };
        let f = evaluate(&view, &applied(t(-7200)), &Policy::default(), t(0));
        let opened: Vec<&Finding> = f.iter().filter(|f| f.kind == Kind::FirewallOpened).collect();
        assert_eq!(opened.len(), 1, "{f:?}");
        assert_eq!(opened[0].local_port, Some(5432));
        assert_eq!(opened[0].severity, Severity::Critical, "a risky port");
        assert!(
            opened[0]
                .message
                .contains("was filtered by the firewall and is reachable from anywhere"),
            "{}",
            opened[0].message
        );
        // Filtered again: nothing opened.
        let mut shut = behind(
            row(5432, "0.0.0.0", "postgres", "postgres"),
            Reach::Filtered,
            "inet filter input policy drop",
        );
        shut.opened_at = t(-60);
        let view = HostView {
            recent: &[was, shut.clone()],
            ..view_of(&h, std::slice::from_ref(&shut))
        };
        let f = evaluate(&view, &applied(t(-7200)), &Policy::default(), t(0));
        assert!(!f.iter().any(|f| f.kind == Kind::FirewallOpened), "{f:?}");
    }

    /// A threat table of two lists: a FireHOL netset (warning) and a
    /// Spamhaus DROP (critical), behind the default allowlist.
    fn threats() -> crate::threat::Table {
        use crate::threat::{default_allow, Allowlist, Format, List, ListSpec, Table};
        let list = |name: &str, format: Format, severity: Severity, text: &str| {
            let spec = ListSpec {
                name: name.to_owned(),
                path: format!("/lists/{name}").into(),
                format,
                severity,
            };
            Arc::new(List::from_text(&spec, text).unwrap())
        };
        Table::new(
            Arc::new(Allowlist::new(&default_allow())),
            vec![
                list(
                    "firehol",
                    Format::Netset,
                    Severity::Warning,
                    "10.0.0.0/8\n185.220.101.0/24\n",
                ),
                list(
                    "drop",
                    Format::SpamhausDrop,
                    Severity::Critical,
                    "185.220.0.0/16 ; SBL123\n",
                ),
            ],
        )
    }

    fn point(r: &ListenerRow, at: Timestamp, remotes: &[(&str, u64)]) -> PeerPoint {
        let top: Vec<portwatch_common::peers::TopRemote> = remotes
            .iter()
            .map(|(a, n)| portwatch_common::peers::TopRemote {
                addr: a.parse().unwrap(),
                connections: *n,
            })
            .collect();
        let connections = top.iter().map(|t| t.connections).sum();
        PeerPoint {
            place: place_of(&r.listener),
            at,
            summary: portwatch_common::peers::PeerSummary {
                connections,
                distinct_remotes: top.len() as u64,
                top,
                classes: portwatch_common::peers::Classes {
                    public: connections,
                    ..Default::default()
                },
            },
        }
    }

    #[test]
    fn a_listed_remote_connected_to_an_open_listener_is_a_suspicious_peer_as_serious_as_its_lists() {
        let h = host("web-1", HostStatus::Up);
        let ssh = row(22, "0.0.0.0", "sshd", "root");
        let gone = row(8080, "0.0.0.0", "python3", "www");
        let table = threats();
        let peers = [
            // Listed by both (critical wins); a private address the firehol list holds is allowed.
            point(
                &ssh,
                t(-30),
                &[("185.220.101.7", 3), ("10.1.2.3", 2), ("198.51.100.9", 1)],
            ),
            // A listener no longer open: its point says nothing now.
            point(&gone, t(-30), &[("185.220.101.8", 1)]),
        ];
        let view = HostView {
            peers: &peers,
            threats: Some(&table),
            ..view_of(&h, std::slice::from_ref(&ssh))
        };
        let f = evaluate(&view, &applied(t(-7200)), &Policy::default(), t(0));
        let suspicious: Vec<&Finding> = f.iter().filter(|f| f.kind == Kind::SuspiciousPeer).collect();
        assert_eq!(suspicious.len(), 1, "{f:?}");
        let s = suspicious[0];
        assert_eq!((s.severity, s.local_port), (Severity::Critical, Some(22)));
        assert!(s.key.ends_with(":185.220.101.7"), "{}", s.key);
        assert!(
            s.message
                .contains("185.220.101.7 held 3 connection(s) to tcp 0.0.0.0:22")
                && s.message.contains("firehol (185.220.101.0/24)")
                && s.message.contains("drop (185.220.0.0/16 SBL123)"),
            "{}",
            s.message
        );
        // The next point no longer names it: resolved. Without lists: nothing to look up.
        let later = [point(&ssh, t(-5), &[("10.1.2.3", 2)])];
        for (peers, threats) in [(&later[..], Some(&table)), (&peers[..], None)] {
            let view = HostView { peers, threats, ..view };
            let f = evaluate(&view, &applied(t(-7200)), &Policy::default(), t(0));
            assert!(!f.iter().any(|f| f.kind == Kind::SuspiciousPeer), "{f:?}");
        }
    }

    #[test]
    fn rule_changes_however_many_are_not_closes_of_the_listener_and_never_flapping() {
        let h = host("web-1", HostStatus::Up);
        // Ten answers in a row on one socket, each closed the moment the next opened.
        let mut recent = Vec::new();
        for i in 0..10 {
            let reach = if i % 2 == 0 { Reach::Filtered } else { Reach::Open };
            let mut r = behind(row(443, "0.0.0.0", "nginx", "www"), reach, "inet filter input handle 3");
            r.opened_at = t(-100 + i * 10);
            r.closed_at = (i < 9).then(|| t(-100 + (i + 1) * 10));
            recent.push(r);
        }
        let now = [recent[9].clone()];
        let view = HostView {
            recent: &recent,
            ..view_of(&h, &now)
        };
        let f = evaluate(&view, &applied(t(-7200)), &Policy::default(), t(0));
        assert!(!f.iter().any(|f| f.kind == Kind::Flapping), "{f:?}");
        assert!(
            f.iter().any(|f| f.kind == Kind::FirewallOpened),
            "the last change opened it: {f:?}"
        );
    }

    #[test]
    fn a_host_as_its_baseline_says_has_no_finding() {
        let h = host("web-1", HostStatus::Up);
        let now = [
            row(22, "0.0.0.0", "sshd", "root"),
            row(5432, "127.0.0.1", "postgres", "postgres"),
            row(443, "0.0.0.0", "nginx", "www"),
        ];
        let view = view_of(&h, &now);
        assert_eq!(evaluate(&view, &applied(t(-7200)), &Policy::default(), t(0)), vec![]);
    }

    #[test]
    fn each_departure_is_its_own_kind() {
        let h = host("web-1", HostStatus::Up);
        let now = [
            row(22, "0.0.0.0", "nc", "root"),             // owner-mismatch
            row(5432, "0.0.0.0", "postgres", "postgres"), // exposure-widened and risky
            row(8080, "0.0.0.0", "python3", "www"),       // unexpected
            row(23, "0.0.0.0", "telnetd", "root"),        // unexpected and risky
        ];
        let view = view_of(&h, &now);
        let f = evaluate(&view, &applied(t(-7200)), &Policy::default(), t(0));
        assert_eq!(
            kinds(&f),
            vec![
                ("unexpected-listener", Some(23)),
                ("unexpected-listener", Some(8080)),
                ("missing-listener", Some(443)),
                ("owner-mismatch", Some(22)),
                ("exposure-widened", Some(5432)),
                ("risky-port-exposed", Some(23)),
                ("risky-port-exposed", Some(5432)),
            ]
        );
        let mismatch = f.iter().find(|f| f.kind == Kind::OwnerMismatch).unwrap();
        assert_eq!(mismatch.severity, Severity::Critical);
        assert_eq!(mismatch.owner.as_deref(), Some("team sre"));
        assert!(
            mismatch.message.contains("nc[122]") && mismatch.message.contains("by sshd as root"),
            "{}",
            mismatch.message
        );
        let missing = f.iter().find(|f| f.kind == Kind::MissingListener).unwrap();
        assert!(missing.message.contains("the site"), "{}", missing.message);
    }

    #[test]
    fn a_listener_gone_less_than_the_grace_period_is_not_missing_yet() {
        let h = host("web-1", HostStatus::Up);
        let now = [
            row(22, "0.0.0.0", "sshd", "root"),
            row(5432, "127.0.0.1", "postgres", "postgres"),
        ];
        let mut closed = row(443, "0.0.0.0", "nginx", "www");
        closed.closed_at = Some(t(-60));
        let recent = [closed];
        let view = HostView {
            recent: &recent,
            ..view_of(&h, &now)
        };
        assert_eq!(evaluate(&view, &applied(t(-7200)), &Policy::default(), t(0)), vec![]);
        let later = evaluate(&view, &applied(t(-7200)), &Policy::default(), t(61));
        assert_eq!(kinds(&later), vec![("missing-listener", Some(443))]);
        // A baseline applied a minute ago is not yet missing anything either.
        let view = HostView {
            recent: &[],
            ..view_of(&h, &now)
        };
        assert_eq!(evaluate(&view, &applied(t(-60)), &Policy::default(), t(0)), vec![]);
    }

    #[test]
    fn a_host_without_baseline_lists_unbaselined_listeners_and_still_flags_risky_ones() {
        let h = host("db-1", HostStatus::Up);
        let now = [
            row(22, "0.0.0.0", "sshd", "root"),
            row(6379, "0.0.0.0", "redis-server", "redis"),
            row(6380, "127.0.0.1", "redis-server", "redis"),
        ];
        let view = view_of(&h, &now);
        let f = evaluate(&view, &applied(t(-7200)), &Policy::default(), t(0));
        assert_eq!(
            kinds(&f),
            vec![
                ("risky-port-exposed", Some(6379)),
                ("unbaselined", Some(22)),
                ("unbaselined", Some(6379)),
                ("unbaselined", Some(6380))
            ]
        );
        assert!(f.iter().filter(|f| f.kind.alerts()).count() == 1);
    }

    #[test]
    fn an_accepted_risk_is_not_flagged_but_only_where_the_entry_matches() {
        let text = BASE.replace(
            "bind = \"loopback\"\nprocess = \"postgres\"",
            "bind = \"wildcard\"\nprocess = \"postgres\"\naccept_risk = true",
        );
        let b = vec![Applied {
            baseline: baseline::parse(&text).unwrap(),
            applied_at: t(-7200),
        }];
        let h = host("web-1", HostStatus::Up);
        let now = [
            row(22, "0.0.0.0", "sshd", "root"),
            row(443, "0.0.0.0", "nginx", "www"),
            row(5432, "0.0.0.0", "postgres", "postgres"),
        ];
        let view = view_of(&h, &now);
        assert_eq!(evaluate(&view, &b, &Policy::default(), t(0)), vec![]);
        let intruder = [
            row(22, "0.0.0.0", "sshd", "root"),
            row(443, "0.0.0.0", "nginx", "www"),
            row(5432, "0.0.0.0", "nc", "nobody"),
        ];
        let view = view_of(&h, &intruder);
        let f = evaluate(&view, &b, &Policy::default(), t(0));
        assert_eq!(
            kinds(&f),
            vec![("owner-mismatch", Some(5432)), ("risky-port-exposed", Some(5432))]
        );
    }

    #[test]
    fn a_silent_host_and_a_flapping_listener_are_reported() {
        let h = host("web-1", HostStatus::Silent);
        let now = [
            row(22, "0.0.0.0", "sshd", "root"),
            row(5432, "127.0.0.1", "postgres", "postgres"),
            row(443, "0.0.0.0", "nginx", "www"),
        ];
        let mut recent = now.to_vec();
        for i in 0..6 {
            let mut r = row(9999, "127.0.0.1", "worker", "www");
            r.opened_at = t(-300 + i * 10);
            r.closed_at = Some(t(-295 + i * 10));
            recent.push(r);
        }
        let view = HostView {
            recent: &recent,
            ..view_of(&h, &now)
        };
        let f = evaluate(&view, &applied(t(-7200)), &Policy::default(), t(0));
        assert_eq!(kinds(&f), vec![("host-silent", None), ("flapping", Some(9999))]);
        assert_eq!(f[0].key, "host-silent:web-1");
        assert_eq!(f[1].key, "flapping:web-1:tcp/9999@1:127.0.0.1");
        let relaxed = Policy {
            flap_max: 6,
            ..Policy::default()
        };
        assert_eq!(evaluate(&view, &applied(t(-7200)), &relaxed, t(0)).len(), 1);
    }

    #[test]
    fn a_clock_off_by_more_than_the_tolerance_either_way_is_a_warning() {
        let judge = |skew: Option<i64>| {
            let mut h = host("db-1", HostStatus::Up);
            h.clock_skew_ms = skew;
            h.clock_skew_at = Some(t(-10));
            let view = view_of(&h, &[]);
            evaluate(&view, &applied(t(-7200)), &Policy::default(), t(0))
        };
        let ahead = judge(Some(7_380_000));
        assert_eq!(kinds(&ahead), vec![("clock-skew", None)]);
        assert_eq!(
            (ahead[0].severity, ahead[0].key.as_str()),
            (Severity::Warning, "clock-skew:db-1")
        );
        assert!(
            ahead[0]
                .message
                .contains("+2h03m ahead of the collector's (tolerance 5m, measured 10s ago)"),
            "{}",
            ahead[0].message
        );
        let behind = judge(Some(-400_000));
        assert!(behind[0].message.contains("-6m40s behind"), "{}", behind[0].message);
        // Within the tolerance, or never measured: nothing (an open alert resolves).
        assert_eq!(judge(Some(-40)), vec![]);
        assert_eq!(judge(Some(300_000)), vec![]);
        assert_eq!(judge(None), vec![]);
    }

    #[test]
    fn owner_changes_of_one_socket_are_not_flapping() {
        // A prefork server replacing its workers: each change closes one
        // interval and opens the next on the same socket at the same instant.
        let h = host("web-1", HostStatus::Up);
        let mut recent = Vec::new();
        for i in 0..10 {
            let mut r = row(443, "0.0.0.0", "nginx", "www");
            r.listener.processes[0].pid = 1000 + i as u32;
            r.opened_at = t(-500 + i * 10);
            r.closed_at = (i < 9).then(|| t(-490 + i * 10));
            recent.push(r);
        }
        let now = [
            row(22, "0.0.0.0", "sshd", "root"),
            row(5432, "127.0.0.1", "postgres", "postgres"),
            recent[9].clone(),
        ];
        let view = HostView {
            recent: &recent,
            ..view_of(&h, &now)
        };
        assert_eq!(evaluate(&view, &applied(t(-7200)), &Policy::default(), t(0)), vec![]);
    }

    #[test]
    fn a_grace_period_delays_a_missing_alert_but_never_resolves_an_open_one() {
        // The baseline was just re-applied (an edit): its grace starts again...
        let h = host("web-1", HostStatus::Up);
        let now = [
            row(22, "0.0.0.0", "sshd", "root"),
            row(5432, "127.0.0.1", "postgres", "postgres"),
        ];
        let fresh = HostView {
            recent: &[],
            ..view_of(&h, &now)
        };
        assert_eq!(evaluate(&fresh, &applied(t(-10)), &Policy::default(), t(0)), vec![]);
        // ...but the alert already open for :443 stays open.
        let open = HashSet::from(["missing-listener:web-1:web:tcp/443".to_owned()]);
        let alerting = HostView {
            alerting: &open,
            ..fresh
        };
        let f = evaluate(&alerting, &applied(t(-10)), &Policy::default(), t(0));
        assert_eq!(kinds(&f), vec![("missing-listener", Some(443))]);
        assert_eq!(f[0].key, "missing-listener:web-1:web:tcp/443");
    }

    #[test]
    fn any_matching_entry_that_accepts_the_risk_accepts_it() {
        // A broad entry first, the one that accepts the risk after it.
        let broad = "[[listener]]\nproto = \"tcp\"\nport = \"5000-6000\"\nowner = \"x\"\nreason = \"y\"\n\n";
        let text = BASE
            .replacen("[[listener]]", &format!("{broad}[[listener]]"), 1)
            .replace(
                "port = 5432\nbind = \"loopback\"\nprocess = \"postgres\"",
                "port = 5432\nprocess = \"postgres\"\naccept_risk = true",
            );
        let parsed = baseline::parse(&text).unwrap();
        assert_eq!(
            (parsed.listeners[0].port_from, parsed.listeners[2].accept_risk),
            (5000, true)
        );
        let b = vec![Applied {
            baseline: baseline::parse(&text).unwrap(),
            applied_at: t(-7200),
        }];
        let h = host("web-1", HostStatus::Up);
        let now = [
            row(22, "0.0.0.0", "sshd", "root"),
            row(443, "0.0.0.0", "nginx", "www"),
            row(5432, "0.0.0.0", "postgres", "postgres"),
        ];
        let view = view_of(&h, &now);
        assert_eq!(evaluate(&view, &b, &Policy::default(), t(0)), vec![]);
    }

    #[test]
    fn an_unknown_holder_of_an_expected_port_is_a_warning_not_a_page() {
        let h = host("web-1", HostStatus::Up);
        let mut ssh = row(22, "0.0.0.0", "sshd", "root");
        ssh.listener.processes.clear();
        let now = [
            ssh,
            row(5432, "127.0.0.1", "postgres", "postgres"),
            row(443, "0.0.0.0", "nginx", "www"),
        ];
        let view = HostView {
            with_info: false,
            ..view_of(&h, &now)
        };
        let f = evaluate(&view, &applied(t(-7200)), &Policy::default(), t(0));
        assert_eq!(kinds(&f), vec![("owner-mismatch", Some(22))]);
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(f[0].message.contains("could not name the holder"), "{}", f[0].message);
    }

    #[test]
    fn a_huge_process_name_is_cut_in_the_finding_and_its_message() {
        let h = host("db-1", HostStatus::Up);
        let name = format!("evil{}", "x".repeat(300_000));
        let now = [row(23, "0.0.0.0", &name, "root")];
        let view = HostView {
            with_info: false,
            ..view_of(&h, &now)
        };
        let f = evaluate(&view, &applied(t(-7200)), &Policy::default(), t(0));
        assert_eq!(kinds(&f), vec![("risky-port-exposed", Some(23))]);
        let holders = f[0].processes.as_deref().unwrap();
        assert!(
            holders.len() <= MAX_HOLDERS_BYTES && holders.starts_with("evilxxx"),
            "{holders}"
        );
        assert!(holders.ends_with(" bytes]"), "{holders}");
        assert!(f[0].message.len() <= MAX_MESSAGE_BYTES, "{}", f[0].message.len());
        assert!(
            f[0].message
                .starts_with("db-1: tcp 0.0.0.0:23 (Telnet) is reachable beyond loopback, held by evilxxx"),
            "{}",
            f[0].message
        );
    }

    #[test]
    fn kinds_have_stable_names_that_parse_back() {
        for k in portwatch_model::ALL_KINDS {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
    }
}
