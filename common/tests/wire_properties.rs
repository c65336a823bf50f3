//! Property tests of the wire protocol's decoding and limits: whatever bytes
//! or batch an agent token sends, decoding, `Batch::validate` and
//! `Batch::sanitize` never panic, and what sanitizing leaves is within every
//! limit, exact where it was within it, and left alone by a second pass.
//!
//! CI runs the cheap properties with proptest's default 256 cases and those
//! of whole batches with 64 (`PROPTEST_CASES` sets both); the long run is in
//! README's testing section.
// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use jiff::Timestamp;
use portwatch_common::peers::{Classes, PeerSample, PeerSummary, TopRemote};
use portwatch_common::wire::{
    cut, peer_problem, Batch, BatchError, HostFacts, ListenerProblem, Report, ReportBody, MAX_CMDLINE_BYTES,
    MAX_CONTAINER_BYTES, MAX_EXE_BYTES, MAX_FACT_BYTES, MAX_FIREWALL_RULE_BYTES, MAX_FIREWALL_SOURCES,
    MAX_FIREWALL_SOURCE_BYTES, MAX_LISTENERS_PER_REPORT, MAX_NAME_BYTES, MAX_PEER_SAMPLES_PER_BATCH, MAX_PEER_TOP,
    MAX_PROCESSES_PER_LISTENER, MAX_TAGS, MAX_TAG_KEY_BYTES, MAX_TAG_VALUE_BYTES, MAX_UNIT_BYTES, MAX_USER_BYTES,
    PEERS_VERSION,
};
use portwatch_common::{family_of, Exposure, Family, Firewall, Listener, Process, Proto, Reach};
use proptest::prelude::*;

/// `ci` cases unless `PROPTEST_CASES` says otherwise (the long run).
fn cases(ci: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = ci;
    }
    config
}

/// Text of every size that matters: short, around each limit, and now and
/// then far over them; ASCII and multi-byte characters (cuts must land on a
/// character boundary), controls included.
fn text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[a-z/ .=-]{1,4}",
        2 => "[é€😀\u{202e}\u{0}\n]{1,3}",
        1 => any::<String>().prop_filter("not empty", |s| !s.is_empty()),
    ];
    let repeats = prop_oneof![
        8 => 0usize..40,
        4 => 10usize..300,
        2 => 900usize..1500,
        1 => 5_000usize..20_000,
    ];
    (piece, repeats).prop_map(|(piece, n)| piece.repeat(n))
}

fn shared(s: String) -> Arc<str> {
    Arc::from(s)
}

fn addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
        any::<[u8; 4]>().prop_map(|b| IpAddr::V6(Ipv4Addr::from(b).to_ipv6_mapped())),
        prop::sample::select(vec![
            "0.0.0.0",
            "127.0.0.1",
            "127.0.0.53",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:0.0.0.0"
        ])
        .prop_map(|a| a.parse().unwrap()),
    ]
}

fn family() -> impl Strategy<Value = Family> {
    prop_oneof![Just(Family::Ipv4), Just(Family::Ipv6)]
}

fn exposure() -> impl Strategy<Value = Exposure> {
    prop_oneof![
        Just(Exposure::Loopback),
        Just(Exposure::Wildcard),
        Just(Exposure::Specific)
    ]
}

fn process() -> impl Strategy<Value = Process> {
    (
        any::<u32>(),
        text(),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(any::<u32>()),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(text()),
    )
        .prop_map(|(pid, name, cmdline, exe, uid, user, container, unit)| Process {
            pid,
            name: shared(name),
            cmdline: cmdline.map(shared),
            exe: exe.map(shared),
            uid,
            user: user.map(shared),
            container: container.map(shared),
            unit: unit.map(shared),
        })
}

/// A listener whose family is mostly its address's, not always; whose
/// exposure and dual stack are whatever the agent says.
fn listener() -> impl Strategy<Value = Listener> {
    (
        (any::<u64>(), prop_oneof![Just(Proto::Tcp), Just(Proto::Udp)], addr()),
        prop::option::weighted(0.2, family()),
        (any::<u16>(), any::<u64>(), any::<u32>(), prop::option::of(text())),
        (exposure(), prop::bool::weighted(0.2)),
        (
            prop::collection::vec(process(), 0..4),
            prop::option::weighted(0.3, firewall()),
        ),
    )
        .prop_map(
            |(
                (netns, proto, local_addr),
                family,
                (local_port, inode, uid, user),
                (exposure, dual_stack),
                (processes, firewall),
            )| {
                Listener {
                    netns,
                    proto,
                    family: family.unwrap_or(family_of(local_addr)),
                    local_addr,
                    local_port,
                    inode,
                    uid,
                    user: user.map(shared),
                    exposure,
                    dual_stack,
                    processes,
                    firewall,
                }
            },
        )
}

/// A firewall answer: texts of every size, and now and then more sources
/// than a listener may have.
fn firewall() -> impl Strategy<Value = Firewall> {
    let reach = prop_oneof![
        Just(Reach::Open),
        Just(Reach::Restricted),
        Just(Reach::Filtered),
        Just(Reach::Unknown)
    ];
    let sources = prop_oneof![
        8 => prop::collection::vec(text(), 0..4),
        1 => prop::collection::vec(Just("ip saddr 10.0.0.0/8".to_owned()), MAX_FIREWALL_SOURCES..MAX_FIREWALL_SOURCES + 3),
    ];
    (reach, text(), sources).prop_map(|(reach, rule, sources)| Firewall {
        reach,
        rule: shared(rule),
        sources: sources.into_iter().map(shared).collect(),
    })
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        (
            Timestamp::MIN.as_second()..=Timestamp::MAX.as_second(),
            0..1_000_000_000i32
        )
            .prop_map(|(s, n)| Timestamp::new(s, n).unwrap_or(Timestamp::MAX)),
        (1_600_000_000i64..1_900_000_000).prop_map(|s| Timestamp::from_second(s).unwrap()),
        Just(Timestamp::MIN),
        Just(Timestamp::MAX),
        Just(Timestamp::UNIX_EPOCH),
    ]
}

fn tags() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop_oneof![
        4 => prop::collection::btree_map(text(), text(), 0..8),
        1 => prop::collection::btree_map("[a-z0-9]{1,8}", "[a-z]{0,3}", 60..300),
    ]
}

fn facts() -> impl Strategy<Value = HostFacts> {
    (
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(timestamp()),
        text(),
        any::<u64>(),
        tags(),
    )
        .prop_map(|(os, kernel, boot_time, agent_version, interval_ms, tags)| HostFacts {
            detection: None,
            host_netns: None,
            addresses: Vec::new(),
            os,
            kernel,
            boot_time,
            agent_version,
            interval_ms,
            tags,
        })
}

fn listeners() -> impl Strategy<Value = Vec<Listener>> {
    prop::collection::vec(listener(), 0..5)
}

fn body() -> impl Strategy<Value = ReportBody> {
    let small = || prop_oneof![0u32..5, any::<u32>(), 4090u32..4100];
    prop_oneof![
        (facts(), listeners()).prop_map(|(facts, listeners)| ReportBody::Snapshot { facts, listeners }),
        (small(), small(), prop::option::of(facts()), listeners()).prop_map(|(part, parts, facts, listeners)| {
            ReportBody::SnapshotPart {
                part,
                parts,
                facts,
                listeners,
            }
        }),
        (listeners(), listeners()).prop_map(|(opened, closed)| ReportBody::Delta {
            opened: opened.into_iter().map(Arc::new).collect(),
            closed: closed.into_iter().map(Arc::new).collect(),
        }),
    ]
}

fn seq() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..6,
        any::<u64>(),
        (u64::MAX - 3)..=u64::MAX,
        (1u64 << 63) - 2..(1u64 << 63) + 2
    ]
}

fn report() -> impl Strategy<Value = Report> {
    (seq(), timestamp(), body()).prop_map(|(seq, observed_at, body)| Report { seq, observed_at, body })
}

/// Peer summaries an agent token could send: consistent ones, and counts
/// of any size that need not add up.
fn peer_sample() -> impl Strategy<Value = PeerSample> {
    let counts = prop_oneof![3 => 0u64..5, 1 => any::<u64>()];
    (
        timestamp(),
        any::<u64>(),
        addr(),
        any::<u16>(),
        counts.clone(),
        counts.clone(),
        prop::collection::vec((addr(), counts.clone()), 0..4),
        (counts.clone(), counts.clone(), counts),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(observed_at, netns, local_addr, local_port, connections, distinct, top, classes, many)| {
                let mut top: Vec<TopRemote> = top
                    .into_iter()
                    .map(|(addr, connections)| TopRemote { addr, connections })
                    .collect();
                if many {
                    top = vec![
                        top.first().cloned().unwrap_or(TopRemote {
                            addr: local_addr,
                            connections: 1
                        });
                        MAX_PEER_TOP + 1
                    ];
                }
                PeerSample {
                    observed_at,
                    netns,
                    local_addr,
                    local_port,
                    summary: PeerSummary {
                        connections,
                        distinct_remotes: distinct,
                        top,
                        classes: Classes {
                            loopback: classes.0,
                            private: classes.1,
                            public: classes.2,
                        },
                    },
                }
            },
        )
}

/// Batches an agent token could send: mostly plausible, often not.
fn batch() -> impl Strategy<Value = Batch> {
    (
        prop_oneof![Just(1u32), Just(2), Just(3), any::<u32>()],
        prop_oneof![4 => "[a-z0-9._-]{1,12}", 1 => any::<String>()],
        prop_oneof![4 => "[!-~]{1,64}", 1 => any::<String>()],
        any::<u64>(),
        prop::option::of(timestamp()),
        prop::collection::vec(report(), 0..4),
        prop_oneof![2 => Just(Vec::new()), 1 => prop::collection::vec(peer_sample(), 1..3)],
        prop_oneof![3 => Just(0u64), 1 => any::<u64>()],
    )
        .prop_map(
            |(version, host, session, dropped, alive_at, reports, peers, peers_dropped)| Batch {
                version,
                host,
                session,
                dropped,
                peers,
                peers_dropped,
                alive_at,
                reports,
            },
        )
}

/// Bytes made of JSON tokens and the protocol's field names and values,
/// with stray bytes: mostly almost a batch.
fn json_ish() -> impl Strategy<Value = Vec<u8>> {
    const TOKENS: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"version\"",
        "1",
        "2",
        "\"host\"",
        "\"web-3\"",
        "\"session\"",
        "\"s\"",
        "\"dropped\"",
        "\"alive_at\"",
        "\"reports\"",
        "\"seq\"",
        "\"observed_at\"",
        "\"2026-01-01T00:00:00Z\"",
        "\"kind\"",
        "\"snapshot\"",
        "\"snapshot_part\"",
        "\"delta\"",
        "\"facts\"",
        "\"os\"",
        "\"tags\"",
        "\"agent_version\"",
        "\"interval_ms\"",
        "\"listeners\"",
        "\"opened\"",
        "\"closed\"",
        "\"part\"",
        "\"parts\"",
        "\"netns\"",
        "\"proto\"",
        "\"tcp\"",
        "\"family\"",
        "\"ipv4\"",
        "\"ipv6\"",
        "\"local_addr\"",
        "\"::1\"",
        "\"0.0.0.0\"",
        "\"local_port\"",
        "\"inode\"",
        "\"uid\"",
        "\"user\"",
        "\"exposure\"",
        "\"wildcard\"",
        "\"dual_stack\"",
        "\"processes\"",
        "\"pid\"",
        "\"name\"",
        "\"cmdline\"",
        "null",
        "true",
        "false",
        "0",
        "-1",
        "18446744073709551616",
        "1e999",
        "\"\\ud800\"",
        "\"\\u0000\"",
        "\"é\"",
    ];
    let token = prop_oneof![
        8 => prop::sample::select(TOKENS).prop_map(|t| t.as_bytes().to_vec()),
        1 => any::<u8>().prop_map(|b| vec![b]),
    ];
    prop::collection::vec(token, 0..200).prop_map(|tokens| tokens.concat())
}

/// Every listener of a report, with the list it is in.
fn listeners_of(body: &ReportBody) -> Vec<(&'static str, &Listener)> {
    match body {
        ReportBody::Snapshot { listeners, .. } | ReportBody::SnapshotPart { listeners, .. } => {
            listeners.iter().map(|l| ("listeners", l)).collect()
        }
        ReportBody::Delta { opened, closed } => opened
            .iter()
            .map(|l| ("opened", &**l))
            .chain(closed.iter().map(|l| ("closed", &**l)))
            .collect(),
    }
}

fn facts_of(body: &ReportBody) -> Option<&HostFacts> {
    match body {
        ReportBody::Snapshot { facts, .. } => Some(facts),
        ReportBody::SnapshotPart { facts, .. } => facts.as_ref(),
        ReportBody::Delta { .. } => None,
    }
}

/// The strings of a listener and their limits, in a fixed order.
fn listener_texts(l: &Listener) -> Vec<(Option<&str>, usize)> {
    let mut texts = vec![(l.user.as_deref(), MAX_USER_BYTES)];
    if let Some(f) = &l.firewall {
        texts.push((Some(&*f.rule), MAX_FIREWALL_RULE_BYTES));
        texts.extend(f.sources.iter().map(|s| (Some(&**s), MAX_FIREWALL_SOURCE_BYTES)));
    }
    for p in &l.processes {
        texts.extend([
            (Some(&*p.name), MAX_NAME_BYTES),
            (p.cmdline.as_deref(), MAX_CMDLINE_BYTES),
            (p.exe.as_deref(), MAX_EXE_BYTES),
            (p.user.as_deref(), MAX_USER_BYTES),
            (p.container.as_deref(), MAX_CONTAINER_BYTES),
            (p.unit.as_deref(), MAX_UNIT_BYTES),
        ]);
    }
    texts
}

fn facts_texts(f: &HostFacts) -> Vec<(Option<&str>, usize)> {
    vec![
        (f.os.as_deref(), MAX_FACT_BYTES),
        (f.kernel.as_deref(), MAX_FACT_BYTES),
        (Some(&*f.agent_version), MAX_FACT_BYTES),
    ]
}

/// Every string of a batch outside the tags, with its limit, in a fixed order.
fn texts(b: &Batch) -> Vec<(Option<&str>, usize)> {
    let mut all = Vec::new();
    for r in &b.reports {
        all.extend(facts_of(&r.body).map(facts_texts).unwrap_or_default());
        for (_, l) in listeners_of(&r.body) {
            all.extend(listener_texts(l));
        }
    }
    all
}

/// What a cut left of `original`, if `short` is one: the kept prefix and the
/// number the marker says is gone.
fn parse_cut(short: &str) -> Option<(&str, usize)> {
    let (kept, marker) = short.rsplit_once("…[cut ")?;
    let gone = marker.strip_suffix(" bytes]")?.parse().ok()?;
    Some((kept, gone))
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic_decoding_validation_or_sanitizing(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(mut batch) = serde_json::from_slice::<Batch>(&bytes) {
            let _ = batch.validate();
            batch.sanitize();
        }
    }

    #[test]
    fn json_ish_token_soup_never_panics_decoding_validation_or_sanitizing(bytes in json_ish()) {
        if let Ok(mut batch) = serde_json::from_slice::<Batch>(&bytes) {
            let _ = batch.validate();
            batch.sanitize();
        }
    }

    #[test]
    fn a_cut_is_a_prefix_at_a_character_boundary_and_a_marker_within_the_limit(
        text in text(),
        limit in prop_oneof![0usize..80, 200usize..300, 4000usize..4200],
    ) {
        match cut(&text, limit) {
            None => prop_assert!(text.len() <= limit),
            Some(short) => {
                prop_assert!(text.len() > limit);
                prop_assert!(short.len() <= limit, "{} > {}", short.len(), limit);
                match parse_cut(&short) {
                    Some((kept, gone)) => {
                        prop_assert!(text.starts_with(kept));
                        prop_assert_eq!(kept.len() + gone, text.len());
                        // As much kept as the marker leaves room for, give or take a character.
                        prop_assert!(short.len() + 4 >= limit, "{} for {}", short.len(), limit);
                    }
                    // Too short a limit for a marker: only a prefix.
                    None => {
                        prop_assert!(limit < 40);
                        prop_assert!(text.starts_with(&short));
                    }
                }
                prop_assert_eq!(cut(&short, limit), None, "a cut string is not cut again");
            }
        }
    }
}

// Whole batches are costly to generate in a debug build: fewer cases in CI.
proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn damaged_batch_json_never_panics_decoding_validation_or_sanitizing(
        batch in batch(),
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
    ) {
        let mut bytes = serde_json::to_vec(&batch).unwrap();
        for (at, byte, how) in damage {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match how {
                0 => bytes[i] = byte,
                1 => bytes.truncate(i),
                _ => bytes.insert(i, byte),
            }
        }
        if let Ok(mut batch) = serde_json::from_slice::<Batch>(&bytes) {
            let _ = batch.validate();
            batch.sanitize();
        }
    }

    #[test]
    fn any_batch_round_trips_through_json_and_is_validated_without_panicking(batch in batch()) {
        let bytes = serde_json::to_vec(&batch).unwrap();
        let back: Batch = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(&back, &batch);
        let _ = back.validate();
    }

    #[test]
    fn a_refused_listener_is_impossible_and_an_accepted_batch_has_none(batch in batch()) {
        match batch.validate() {
            Ok(()) => {
                for report in &batch.reports {
                    let all = listeners_of(&report.body);
                    prop_assert!(all.len() <= MAX_LISTENERS_PER_REPORT);
                    for (_, l) in all {
                        prop_assert_eq!(l.family, family_of(l.local_addr));
                        prop_assert!(!l.dual_stack || l.local_addr == IpAddr::V6(Ipv6Addr::UNSPECIFIED));
                        prop_assert!(l.processes.len() <= MAX_PROCESSES_PER_LISTENER);
                        prop_assert!(l.firewall.as_ref().is_none_or(|f| f.sources.len() <= MAX_FIREWALL_SOURCES));
                    }
                }
            }
            Err(BatchError::Listener { seq, at, problem }) => {
                let report = batch.reports.iter().find(|r| r.seq == seq).unwrap();
                let (_, l) = listeners_of(&report.body)
                    .into_iter()
                    .filter(|(list, _)| *list == at.list)
                    .nth(at.index)
                    .unwrap();
                match problem {
                    ListenerProblem::Family { family, addr } => {
                        prop_assert_eq!((family, addr), (l.family, l.local_addr));
                        prop_assert_ne!(family, family_of(addr));
                    }
                    ListenerProblem::DualStack { addr } => {
                        prop_assert!(l.dual_stack && addr == l.local_addr);
                        prop_assert_ne!(addr, IpAddr::V6(Ipv6Addr::UNSPECIFIED));
                    }
                    ListenerProblem::Processes(n) => prop_assert!(n > MAX_PROCESSES_PER_LISTENER),
                    ListenerProblem::FirewallSources(n) => {
                        prop_assert!(n > MAX_FIREWALL_SOURCES);
                        prop_assert_eq!(l.firewall.as_ref().map(|f| f.sources.len()), Some(n));
                    }
                }
            }
            Err(_) => {}
        }
    }

    #[test]
    fn an_accepted_batch_carries_only_peer_summaries_that_add_up_and_a_refused_one_names_one_that_does_not(
        batch in batch(),
    ) {
        match batch.validate() {
            Ok(()) => {
                prop_assert!(batch.peers.is_empty() || batch.version >= PEERS_VERSION);
                prop_assert!(batch.peers.len() <= MAX_PEER_SAMPLES_PER_BATCH);
                for p in &batch.peers {
                    let s = &p.summary;
                    prop_assert!(s.top.len() <= MAX_PEER_TOP);
                    prop_assert_eq!(s.classes.total(), s.connections);
                    prop_assert!(s.distinct_remotes <= s.connections);
                    prop_assert!(s.top.len() as u64 <= s.distinct_remotes);
                    prop_assert!(s.top.iter().all(|t| t.connections >= 1));
                }
            }
            Err(BatchError::Peer { index, addr, port, problem }) => {
                let p = &batch.peers[index];
                prop_assert_eq!((addr, port), (p.local_addr, p.local_port));
                prop_assert_eq!(Some(problem), peer_problem(&p.summary));
                prop_assert!(batch.peers[..index].iter().all(|p| peer_problem(&p.summary).is_none()));
            }
            Err(BatchError::PeersNeedVersion(v)) => {
                prop_assert!(v < PEERS_VERSION && !batch.peers.is_empty());
            }
            Err(_) => {}
        }
    }

    #[test]
    fn sanitizing_leaves_every_string_within_its_limit_counts_each_cut_and_a_second_pass_changes_nothing(
        batch in batch(),
    ) {
        let original = batch.clone();
        let mut batch = batch;
        let _ = batch.validate();
        let cut = batch.sanitize();

        // Every string within its limit; one within it before is unchanged,
        // one over it is its own prefix and a marker counting what is gone.
        let (before, after) = (texts(&original), texts(&batch));
        prop_assert_eq!(before.len(), after.len());
        let mut over = 0;
        for ((was, limit), (is, _)) in before.into_iter().zip(after) {
            let (Some(was), Some(is)) = (was, is) else {
                prop_assert_eq!(was.is_none(), is.is_none());
                continue;
            };
            prop_assert!(is.len() <= limit, "{} bytes over {}", is.len(), limit);
            if was.len() <= limit {
                prop_assert_eq!(was, is);
            } else {
                over += 1;
                let (kept, gone) = parse_cut(is).unwrap();
                prop_assert!(was.starts_with(kept));
                prop_assert_eq!(kept.len() + gone, was.len());
            }
        }
        // Tags: the first 64 by key, cut; what is gone counted.
        let mut tag_cuts = 0;
        let mut dropped = 0;
        for (was, is) in original.reports.iter().zip(&batch.reports) {
            let (Some(was), Some(is)) = (facts_of(&was.body), facts_of(&is.body)) else {
                continue;
            };
            prop_assert!(is.tags.len() <= MAX_TAGS);
            for (k, v) in was.tags.iter().take(MAX_TAGS) {
                tag_cuts += usize::from(k.len() > MAX_TAG_KEY_BYTES) + usize::from(v.len() > MAX_TAG_VALUE_BYTES);
            }
            for (k, v) in &is.tags {
                prop_assert!(k.len() <= MAX_TAG_KEY_BYTES && v.len() <= MAX_TAG_VALUE_BYTES);
            }
            dropped += was.tags.len() - is.tags.len();
            if was.tags.len() <= MAX_TAGS
                && was.tags.iter().all(|(k, v)| k.len() <= MAX_TAG_KEY_BYTES && v.len() <= MAX_TAG_VALUE_BYTES)
            {
                prop_assert_eq!(&was.tags, &is.tags);
            }
        }
        prop_assert_eq!(cut.strings_cut, (over + tag_cuts) as u64);
        prop_assert_eq!(cut.tags_dropped, dropped as u64);

        // Exposure is the address's, and only exposure changed of the rest.
        let mut replaced = 0;
        for (was, is) in original.reports.iter().zip(&batch.reports) {
            for ((_, was), (_, is)) in listeners_of(&was.body).into_iter().zip(listeners_of(&is.body)) {
                prop_assert_eq!(is.exposure, Exposure::of(is.local_addr));
                replaced += usize::from(was.exposure != is.exposure);
                prop_assert_eq!(
                    (is.netns, is.proto, is.family, is.local_addr, is.local_port, is.inode, is.uid, is.dual_stack),
                    (was.netns, was.proto, was.family, was.local_addr, was.local_port, was.inode, was.uid, was.dual_stack)
                );
                let pids = |l: &Listener| l.processes.iter().map(|p| (p.pid, p.uid)).collect::<Vec<_>>();
                prop_assert_eq!(pids(is), pids(was));
            }
        }
        prop_assert_eq!(cut.exposures_replaced, replaced as u64);

        // A second pass finds nothing, and the result survives JSON.
        let once = batch.clone();
        prop_assert!(batch.sanitize().is_empty());
        prop_assert_eq!(&batch, &once);
        let back: Batch = serde_json::from_slice(&serde_json::to_vec(&batch).unwrap()).unwrap();
        prop_assert_eq!(back, once);
    }
}
