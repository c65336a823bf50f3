//! Cutting what an agent reports to the protocol's limits, and deriving
//! what the collector does not take on trust (see the limits table in the
//! [wire module docs](super)).
//!
//! Both halves apply the same rules: the collector to every batch it
//! accepts ([`Batch::sanitize`]), the agent to its listeners and facts before
//! it numbers and spools them ([`Sanitized::listener`],
//! [`Sanitized::facts`]). A string within its limit is never touched, so a
//! report the agent cut reaches the history as it was sent, and a listener
//! closed in a delta matches the one its opening stored.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use super::{
    Batch, HostFacts, ReportBody, MAX_CMDLINE_BYTES, MAX_CONTAINER_BYTES, MAX_EXE_BYTES, MAX_FACT_BYTES,
    MAX_FIREWALL_RULE_BYTES, MAX_FIREWALL_SOURCE_BYTES, MAX_HOST_ADDRESSES, MAX_NAME_BYTES, MAX_TAGS,
    MAX_TAG_KEY_BYTES, MAX_TAG_VALUE_BYTES, MAX_UNIT_BYTES, MAX_USER_BYTES,
};
use crate::{Exposure, Listener, Process};

/// `text` cut to at most `limit` bytes, or `None` when it is within it.
///
/// The cut text is the first bytes of `text`, ending at a character
/// boundary, followed by the marker `…[cut N bytes]`, N being how many bytes
/// of `text` it leaves out; the whole, marker included, is at most `limit`
/// bytes. (A limit too short for the marker, shorter than any of the
/// protocol's, keeps the first bytes only.)
pub fn cut(text: &str, limit: usize) -> Option<String> {
    if text.len() <= limit {
        return None;
    }
    // N is at most text.len(): a marker for that many bytes is the longest.
    // Room for it leaves out at least as many bytes as that marker says, and
    // the marker of what it really leaves out may be a digit shorter: room
    // for that one is the room (stepping back to a character boundary
    // leaves out at most 3 bytes more, and adds at most one digit).
    let (room, marked) = match limit.checked_sub(marker(text.len()).len()) {
        Some(room) => (limit - marker(text.len() - room).len(), true),
        None => (limit, false),
    };
    let mut keep = room;
    while !text.is_char_boundary(keep) {
        keep -= 1;
    }
    let mut out = String::with_capacity(limit);
    out.push_str(&text[..keep]);
    if marked {
        out.push_str(&marker(text.len() - keep));
    }
    Some(out)
}

/// Keeps of `addresses` the first [`MAX_HOST_ADDRESSES`] that a host's
/// interface can have and a probe may connect to ([`probe_worthy`]), each once.
pub fn host_addresses(addresses: &mut Vec<IpAddr>) {
    let mut seen = BTreeSet::new();
    addresses.retain(|a| probe_worthy(*a) && seen.insert(*a));
    addresses.truncate(MAX_HOST_ADDRESSES);
}

/// Whether `addr` is an address a host reports as its own for a probe from
/// outside: not loopback, link-local, unspecified, multicast or broadcast
/// (IPv4-mapped IPv6 addresses are judged as their IPv4 address).
pub fn probe_worthy(addr: IpAddr) -> bool {
    match addr.to_canonical() {
        IpAddr::V4(a) => {
            !(a.is_loopback() || a.is_link_local() || a.is_unspecified() || a.is_multicast() || a.is_broadcast())
        }
        IpAddr::V6(a) => !(a.is_loopback() || a.is_unicast_link_local() || a.is_unspecified() || a.is_multicast()),
    }
}

/// The marker of a cut that left out `bytes` bytes.
fn marker(bytes: usize) -> String {
    format!("…[cut {bytes} bytes]")
}

/// A string field of a report, as [`Sanitized`] names what it cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TextField {
    /// `processes[].name`.
    Name,
    /// `processes[].cmdline`.
    Cmdline,
    /// `processes[].exe`.
    Exe,
    /// `processes[].user`.
    ProcessUser,
    /// `processes[].container`.
    Container,
    /// `processes[].unit`.
    Unit,
    /// A listener's `user`.
    User,
    /// `firewall.rule`.
    FirewallRule,
    /// An entry of `firewall.sources`.
    FirewallSource,
    /// `facts.os`.
    Os,
    /// `facts.kernel`.
    Kernel,
    /// `facts.agent_version`.
    AgentVersion,
    /// `facts.tags`: too many of them.
    Tags,
    /// A key of `facts.tags`.
    TagKey,
    /// A value of `facts.tags`.
    TagValue,
}

impl TextField {
    /// The field's name in the JSON of a report (`processes[].cmdline`, `facts.os`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            TextField::Name => "processes[].name",
            TextField::Cmdline => "processes[].cmdline",
            TextField::Exe => "processes[].exe",
            TextField::ProcessUser => "processes[].user",
            TextField::Container => "processes[].container",
            TextField::Unit => "processes[].unit",
            TextField::User => "user",
            TextField::FirewallRule => "firewall.rule",
            TextField::FirewallSource => "firewall.sources[]",
            TextField::Os => "facts.os",
            TextField::Kernel => "facts.kernel",
            TextField::AgentVersion => "facts.agent_version",
            TextField::Tags => "facts.tags",
            TextField::TagKey => "facts.tags (key)",
            TextField::TagValue => "facts.tags (value)",
        }
    }

    /// Its limit: in bytes, in tags for [`TextField::Tags`].
    pub fn limit(self) -> usize {
        match self {
            TextField::Name => MAX_NAME_BYTES,
            TextField::Cmdline => MAX_CMDLINE_BYTES,
            TextField::Exe => MAX_EXE_BYTES,
            TextField::ProcessUser | TextField::User => MAX_USER_BYTES,
            TextField::Container => MAX_CONTAINER_BYTES,
            TextField::Unit => MAX_UNIT_BYTES,
            TextField::FirewallRule => MAX_FIREWALL_RULE_BYTES,
            TextField::FirewallSource => MAX_FIREWALL_SOURCE_BYTES,
            TextField::Os | TextField::Kernel | TextField::AgentVersion => MAX_FACT_BYTES,
            TextField::Tags => MAX_TAGS,
            TextField::TagKey => MAX_TAG_KEY_BYTES,
            TextField::TagValue => MAX_TAG_VALUE_BYTES,
        }
    }
}

/// What sanitizing cut and replaced; empty when the input was within every limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sanitized {
    /// Strings cut to their limit (tag keys and values included).
    pub strings_cut: u64,
    /// Tags dropped: beyond [`MAX_TAGS`], or whose cut key was another's.
    pub tags_dropped: u64,
    /// Listeners whose reported exposure was not their address's (replaced by it).
    pub exposures_replaced: u64,
    /// The fields that were cut, each once.
    pub fields: BTreeSet<TextField>,
}

impl Sanitized {
    /// Nothing was cut or replaced.
    pub fn is_empty(&self) -> bool {
        self.strings_cut == 0 && self.tags_dropped == 0 && self.exposures_replaced == 0
    }

    /// The names of the fields cut, comma-separated (`facts.os, processes[].cmdline`).
    pub fn field_names(&self) -> String {
        let names: Vec<&str> = self.fields.iter().map(|f| f.as_str()).collect();
        names.join(", ")
    }

    /// Cuts `listener`'s strings (its processes' included) to their limits
    /// and sets its exposure from its address.
    pub fn listener(&mut self, listener: &mut Listener) {
        let exposure = Exposure::of(listener.local_addr);
        if listener.exposure != exposure {
            listener.exposure = exposure;
            self.exposures_replaced += 1;
        }
        self.shared(TextField::User, listener.user.as_mut());
        for process in &mut listener.processes {
            self.process(process);
        }
        if let Some(firewall) = &mut listener.firewall {
            self.shared(TextField::FirewallRule, Some(&mut firewall.rule));
            for source in &mut firewall.sources {
                self.shared(TextField::FirewallSource, Some(source));
            }
        }
    }

    /// Cuts `facts`' strings to their limits and drops the tags beyond [`MAX_TAGS`].
    pub fn facts(&mut self, facts: &mut HostFacts) {
        if let Some(os) = &mut facts.os {
            self.text(TextField::Os, os);
        }
        if let Some(kernel) = &mut facts.kernel {
            self.text(TextField::Kernel, kernel);
        }
        self.text(TextField::AgentVersion, &mut facts.agent_version);
        self.tags(&mut facts.tags);
        // A word such as `events`; anything else is not a detection this protocol knows.
        facts.detection = facts
            .detection
            .take()
            .filter(|d| (1..=32).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        host_addresses(&mut facts.addresses);
    }

    fn process(&mut self, process: &mut Process) {
        self.shared(TextField::Name, Some(&mut process.name));
        self.shared(TextField::Cmdline, process.cmdline.as_mut());
        self.shared(TextField::Exe, process.exe.as_mut());
        self.shared(TextField::ProcessUser, process.user.as_mut());
        self.shared(TextField::Container, process.container.as_mut());
        self.shared(TextField::Unit, process.unit.as_mut());
    }

    /// The first [`MAX_TAGS`] tags by key, keys and values cut; a tag whose
    /// cut key is that of an earlier one is dropped.
    fn tags(&mut self, tags: &mut BTreeMap<String, String>) {
        let within = |(k, v): (&String, &String)| k.len() <= MAX_TAG_KEY_BYTES && v.len() <= MAX_TAG_VALUE_BYTES;
        if tags.len() <= MAX_TAGS && tags.iter().all(within) {
            return;
        }
        let all = std::mem::take(tags);
        let total = all.len();
        for (mut key, mut value) in all.into_iter().take(MAX_TAGS) {
            self.text(TextField::TagKey, &mut key);
            self.text(TextField::TagValue, &mut value);
            tags.entry(key).or_insert(value);
        }
        let dropped = total - tags.len();
        if dropped > 0 {
            self.tags_dropped += dropped as u64;
            self.fields.insert(TextField::Tags);
        }
    }

    fn text(&mut self, field: TextField, text: &mut String) {
        if let Some(short) = cut(text, field.limit()) {
            *text = short;
            self.counted(field);
        }
    }

    fn shared(&mut self, field: TextField, text: Option<&mut Arc<str>>) {
        if let Some(text) = text {
            if let Some(short) = cut(text, field.limit()) {
                *text = Arc::from(short);
                self.counted(field);
            }
        }
    }

    fn counted(&mut self, field: TextField) {
        self.strings_cut += 1;
        self.fields.insert(field);
    }
}

impl fmt::Display for Sanitized {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} strings cut, {} tags dropped, {} exposures replaced",
            self.strings_cut, self.tags_dropped, self.exposures_replaced
        )?;
        if !self.fields.is_empty() {
            write!(f, " ({})", self.field_names())?;
        }
        Ok(())
    }
}

/// Whether [`Sanitized::listener`] would change `listener`.
fn needs_sanitizing(listener: &Listener) -> bool {
    let over = |field: TextField, text: Option<&Arc<str>>| text.is_some_and(|t| t.len() > field.limit());
    listener.exposure != Exposure::of(listener.local_addr)
        || over(TextField::User, listener.user.as_ref())
        || listener.firewall.as_ref().is_some_and(|f| {
            over(TextField::FirewallRule, Some(&f.rule))
                || f.sources.iter().any(|s| over(TextField::FirewallSource, Some(s)))
        })
        || listener.processes.iter().any(|p| {
            over(TextField::Name, Some(&p.name))
                || over(TextField::Cmdline, p.cmdline.as_ref())
                || over(TextField::Exe, p.exe.as_ref())
                || over(TextField::ProcessUser, p.user.as_ref())
                || over(TextField::Container, p.container.as_ref())
                || over(TextField::Unit, p.unit.as_ref())
        })
}

impl Batch {
    /// Cuts every string of the batch to its limit, drops the tags beyond
    /// [`MAX_TAGS`] and sets every listener's exposure from its address (see
    /// the limits table in the [module docs](super)); says what it did.
    /// Run after [`Batch::validate`], which refuses what cannot be cut
    /// into shape. Sanitizing a sanitized batch changes nothing.
    pub fn sanitize(&mut self) -> Sanitized {
        let mut sanitized = Sanitized::default();
        for report in &mut self.reports {
            match &mut report.body {
                ReportBody::Snapshot { facts, listeners } => {
                    sanitized.facts(facts);
                    for listener in listeners {
                        sanitized.listener(listener);
                    }
                }
                ReportBody::SnapshotPart { facts, listeners, .. } => {
                    if let Some(facts) = facts {
                        sanitized.facts(facts);
                    }
                    for listener in listeners {
                        sanitized.listener(listener);
                    }
                }
                ReportBody::Delta { opened, closed } => {
                    // Shared listeners are copied only when they change.
                    for listener in opened.iter_mut().chain(closed) {
                        if needs_sanitizing(listener) {
                            sanitized.listener(Arc::make_mut(listener));
                        }
                    }
                }
            }
        }
        sanitized
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Report, PROTOCOL_VERSION};
    use crate::{Family, Proto};
    use jiff::Timestamp;

    fn process(cmdline: &str) -> Process {
        Process {
            pid: 42,
            name: "java".into(),
            cmdline: Some(cmdline.into()),
            exe: Some("/usr/bin/java".into()),
            uid: Some(1000),
            user: Some("app".into()),
            container: None,
            unit: Some("app.service".into()),
        }
    }

    fn listener(addr: &str, processes: Vec<Process>) -> Listener {
        let local_addr: std::net::IpAddr = addr.parse().unwrap();
        Listener {
            netns: 1,
            proto: Proto::Tcp,
            family: crate::family_of(local_addr),
            local_addr,
            local_port: 8080,
            inode: 9,
            uid: 1000,
            user: Some("app".into()),
            exposure: Exposure::of(local_addr),
            dual_stack: false,
            processes,
            firewall: None,
        }
    }

    fn facts() -> HostFacts {
        HostFacts {
            detection: None,
            host_netns: None,
            addresses: Vec::new(),
            os: Some("Debian GNU/Linux 12".into()),
            kernel: Some("6.1.0-18-amd64".into()),
            boot_time: None,
            agent_version: "0.1.0".into(),
            interval_ms: 10_000,
            tags: BTreeMap::from([("role".into(), "db".into())]),
        }
    }

    fn batch(facts: HostFacts, listeners: Vec<Listener>) -> Batch {
        Batch {
            version: PROTOCOL_VERSION,
            host: "web-3".into(),
            session: "s".into(),
            dropped: 0,
            peers: Vec::new(),
            peers_dropped: 0,
            alive_at: None,
            reports: vec![Report {
                seq: 1,
                observed_at: Timestamp::from_second(1_700_000_000).unwrap(),
                body: ReportBody::Snapshot { facts, listeners },
            }],
        }
    }

    fn snapshot(b: &Batch) -> (&HostFacts, &[Listener]) {
        match &b.reports[0].body {
            ReportBody::Snapshot { facts, listeners } => (facts, listeners),
            _ => unreachable!(),
        }
    }

    #[test]
    fn host_addresses_keep_only_what_a_probe_may_connect_to_once_and_at_most_the_limit() {
        let mut f = facts();
        f.addresses = [
            "10.0.0.1",
            "127.0.0.1",
            "::1",
            "169.254.1.1",
            "fe80::1",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "ff02::1",
            "255.255.255.255",
            "::ffff:127.0.0.1",
            "10.0.0.1",
            "2001:db8::1",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        Sanitized::default().facts(&mut f);
        let kept: Vec<String> = f.addresses.iter().map(|a| a.to_string()).collect();
        assert_eq!(kept, ["10.0.0.1", "2001:db8::1"]);
        f.addresses = (0..=255u8).map(|i| IpAddr::from([10, 1, 0, i])).collect();
        Sanitized::default().facts(&mut f);
        assert_eq!(f.addresses.len(), MAX_HOST_ADDRESSES);
        assert_eq!(f.addresses[0], IpAddr::from([10, 1, 0, 0]));
    }

    #[test]
    fn a_cut_keeps_the_first_bytes_and_says_how_many_are_gone_within_the_limit() {
        let text = "a".repeat(10_000);
        let short = cut(&text, 100).unwrap();
        assert_eq!(short.len(), 100, "{short}");
        let (kept, marker) = short.split_once('…').unwrap();
        assert!(text.starts_with(kept));
        assert_eq!(marker, format!("[cut {} bytes]", 10_000 - kept.len()));
        assert_eq!(cut(&"a".repeat(100), 100), None, "at the limit: untouched");
        assert_eq!(cut("", 0), None);
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        for pad in 0..4 {
            let text = "x".repeat(pad) + &"é€😀".repeat(100);
            for limit in 40..60 {
                let short = cut(&text, limit).unwrap();
                assert!(short.len() <= limit, "{limit}: {short}");
                let kept = short.split("…[cut ").next().unwrap();
                assert!(text.starts_with(kept), "{limit}: {short}");
                let gone: usize = short
                    .rsplit("[cut ")
                    .next()
                    .unwrap()
                    .trim_end_matches(" bytes]")
                    .parse()
                    .unwrap();
                assert_eq!(kept.len() + gone, text.len());
            }
        }
        // A limit too short for the marker keeps the first bytes only.
        assert_eq!(cut("ééé", 5).as_deref(), Some("éé"));
    }

    #[test]
    fn a_10_mib_cmdline_is_stored_as_its_first_4_kib_and_counted() {
        let huge = "/opt/app/bin/java -cp ".to_owned() + &"/opt/app/lib/dependency.jar:".repeat(375_000);
        assert!(huge.len() > 10 * 1024 * 1024);
        let mut b = batch(facts(), vec![listener("0.0.0.0", vec![process(&huge)])]);
        let cut = b.sanitize();
        assert_eq!(cut.strings_cut, 1);
        assert_eq!(cut.fields, BTreeSet::from([TextField::Cmdline]));
        let cmdline = snapshot(&b).1[0].processes[0].cmdline.clone().unwrap();
        assert!(cmdline.len() <= MAX_CMDLINE_BYTES && cmdline.len() > MAX_CMDLINE_BYTES - 32);
        assert!(cmdline.starts_with("/opt/app/bin/java -cp /opt/app/lib/dependency.jar:"));
        assert!(cmdline.ends_with(" bytes]"), "{}", &cmdline[cmdline.len() - 40..]);
    }

    #[test]
    fn every_string_of_a_report_is_cut_at_its_own_limit() {
        let long = |n: usize| "x".repeat(n + 1);
        let mut p = process(&long(MAX_CMDLINE_BYTES));
        p.name = long(MAX_NAME_BYTES).into();
        p.exe = Some(long(MAX_EXE_BYTES).into());
        p.user = Some(long(MAX_USER_BYTES).into());
        p.container = Some(long(MAX_CONTAINER_BYTES).into());
        p.unit = Some(long(MAX_UNIT_BYTES).into());
        let mut l = listener("::1", vec![p]);
        l.user = Some(long(MAX_USER_BYTES).into());
        let mut f = facts();
        f.os = Some(long(MAX_FACT_BYTES));
        f.kernel = Some(long(MAX_FACT_BYTES));
        f.agent_version = long(MAX_FACT_BYTES);
        let mut b = batch(f, vec![l]);
        let cut = b.sanitize();
        assert_eq!(cut.strings_cut, 10);
        assert_eq!(cut.fields.len(), 10, "{}", cut.field_names());
        let (f, ls) = snapshot(&b);
        let p = &ls[0].processes[0];
        for (text, limit) in [
            (f.os.as_deref().unwrap(), MAX_FACT_BYTES),
            (f.kernel.as_deref().unwrap(), MAX_FACT_BYTES),
            (&f.agent_version, MAX_FACT_BYTES),
            (ls[0].user.as_deref().unwrap(), MAX_USER_BYTES),
            (&p.name, MAX_NAME_BYTES),
            (p.cmdline.as_deref().unwrap(), MAX_CMDLINE_BYTES),
            (p.exe.as_deref().unwrap(), MAX_EXE_BYTES),
            (p.user.as_deref().unwrap(), MAX_USER_BYTES),
            (p.container.as_deref().unwrap(), MAX_CONTAINER_BYTES),
            (p.unit.as_deref().unwrap(), MAX_UNIT_BYTES),
        ] {
            assert!(text.len() <= limit && text.ends_with(" bytes]"), "{limit}: {text}");
        }
    }

    #[test]
    fn strings_real_systems_report_are_never_cut() {
        let mut p = process(&format!("/usr/lib/jvm/bin/java -cp {}", "lib/x.jar:".repeat(400)));
        p.name = "postgres: walwr".into(); // comm: 15 bytes
        p.container = Some("3f4e1b2c9d8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e".into());
        p.unit = Some(format!("{}.service", "u".repeat(247)).into());
        p.exe = Some(format!("/{}", "d/".repeat(2047)).into());
        let mut f = facts();
        f.tags = (0..MAX_TAGS)
            .map(|i| (format!("{i:0>64}"), "v".repeat(MAX_TAG_VALUE_BYTES)))
            .collect();
        let mut b = batch(f, vec![listener("10.0.0.1", vec![p])]);
        let before = b.clone();
        assert!(b.sanitize().is_empty());
        assert_eq!(b, before);
    }

    #[test]
    fn tags_beyond_64_are_dropped_and_long_keys_and_values_cut() {
        let mut f = facts();
        f.tags = (0..200_000).map(|i| (format!("k{i:06}"), "v".to_owned())).collect();
        f.tags.insert("a".repeat(100), "x".repeat(1000));
        let mut b = batch(f, Vec::new());
        let cut = b.sanitize();
        let tags = &snapshot(&b).0.tags;
        assert_eq!(tags.len(), MAX_TAGS);
        assert_eq!(cut.tags_dropped, 200_001 - MAX_TAGS as u64);
        assert_eq!(cut.strings_cut, 2, "the long key and its value");
        assert_eq!(
            cut.fields,
            BTreeSet::from([TextField::Tags, TextField::TagKey, TextField::TagValue])
        );
        let (key, value) = tags.iter().next().unwrap();
        assert!(key.starts_with("aaa") && key.len() <= MAX_TAG_KEY_BYTES, "{key}");
        assert!(value.len() <= MAX_TAG_VALUE_BYTES, "{value}");
        assert_eq!(
            tags.keys().last().map(String::as_str),
            Some("k000062"),
            "the first 64 by key"
        );
    }

    #[test]
    fn tags_whose_cut_keys_collide_keep_the_first() {
        let mut f = facts();
        let stem = "k".repeat(MAX_TAG_KEY_BYTES);
        f.tags = BTreeMap::from([
            (format!("{stem}1"), "one".to_owned()),
            (format!("{stem}2"), "two".to_owned()),
        ]);
        let mut b = batch(f, Vec::new());
        let cut = b.sanitize();
        let tags = &snapshot(&b).0.tags;
        assert_eq!(tags.values().collect::<Vec<_>>(), ["one"]);
        assert_eq!((cut.strings_cut, cut.tags_dropped), (2, 1));
    }

    #[test]
    fn exposure_is_the_addresss_whatever_the_agent_said() {
        let mut cases = Vec::new();
        for (addr, said, is) in [
            ("0.0.0.0", Exposure::Loopback, Exposure::Wildcard),
            ("::", Exposure::Specific, Exposure::Wildcard),
            ("127.0.0.1", Exposure::Wildcard, Exposure::Loopback),
            ("::ffff:127.0.0.1", Exposure::Specific, Exposure::Loopback),
            ("::ffff:10.0.0.1", Exposure::Loopback, Exposure::Specific),
            ("10.0.0.1", Exposure::Specific, Exposure::Specific),
        ] {
            let mut l = listener(addr, Vec::new());
            l.exposure = said;
            cases.push((l, is));
        }
        let mut b = batch(facts(), cases.iter().map(|(l, _)| l.clone()).collect());
        let cut = b.sanitize();
        assert_eq!(cut.exposures_replaced, 5);
        assert_eq!(cut.strings_cut, 0);
        for (l, (_, is)) in snapshot(&b).1.iter().zip(&cases) {
            assert_eq!(l.exposure, *is, "{}", l.local_addr);
            assert_eq!(
                l.family,
                if l.local_addr.is_ipv4() {
                    Family::Ipv4
                } else {
                    Family::Ipv6
                }
            );
        }
    }

    #[test]
    fn a_delta_copies_only_the_listeners_it_changes_and_a_second_pass_changes_nothing() {
        let clean = Arc::new(listener("0.0.0.0", vec![process("nginx")]));
        let mut wrong = listener("0.0.0.0", vec![process(&"x".repeat(50_000))]);
        wrong.exposure = Exposure::Loopback;
        let mut b = batch(facts(), Vec::new());
        b.reports[0].body = ReportBody::Delta {
            opened: vec![clean.clone()],
            closed: vec![Arc::new(wrong)],
        };
        let cut = b.sanitize();
        assert_eq!((cut.strings_cut, cut.exposures_replaced), (1, 1));
        let ReportBody::Delta { opened, closed } = &b.reports[0].body else {
            unreachable!()
        };
        assert!(Arc::ptr_eq(&opened[0], &clean), "a clean listener is not copied");
        assert_eq!(closed[0].exposure, Exposure::Wildcard);
        let once = b.clone();
        assert!(b.sanitize().is_empty());
        assert_eq!(b, once);
    }
}
