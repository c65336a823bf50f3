//! Property tests of ingest against a real SQLite store: sequences of
//! arbitrary batches (snapshots, snapshots in parts, possibly split over
//! batches or numbered anyhow, deltas, resends, gaps, several sessions,
//! heartbeats, hostile times, a collector clock that steps back) go through
//! what the ingest handler does (`Batch::validate`, then `Batch::sanitize`)
//! into `Store::ingest`, and after every batch:
//!
//! - the store answered (no error, no panic);
//! - the listeners open are exactly those of a model of the history rules
//!   (a snapshot replaces them, a delta of the next seq applies, anything
//!   else asks for a resync), and the acknowledgement is the model's;
//! - at most one interval is open per listener, none closes before it opened,
//!   and every time is within the clock rules' window of the receive times;
//! - the acknowledged seq never goes backwards while its session is the
//!   host's, and is never beyond what that session sent;
//! - a batch of reports already acknowledged changes nothing;
//! - what is stored is within the protocol's limits, its exposure and family
//!   those of its address.
//!
//! CI runs 128 sequences (`PROPTEST_CASES` sets more); the long run is in
//! README's testing section.
// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use portwatch_collector::clock;
use portwatch_collector::store::sqlite::SqliteStore;
use portwatch_collector::store::{HistoryReads, HistoryWrites};
use portwatch_common::wire::{
    Ack, Batch, HostFacts, Report, ReportBody, MAX_CMDLINE_BYTES, MAX_NAME_BYTES, MAX_USER_BYTES, PROTOCOL_VERSION,
};
use portwatch_common::{family_of, Exposure, Family, Listener, Process, Proto};
use portwatch_fixtures::{facts, on, process};
use proptest::prelude::*;

const HOST: &str = "web-3";
const SESSIONS: [&str; 3] = ["run-a", "run-b", "run-c"];

/// `ci` cases unless `PROPTEST_CASES` says otherwise (the long run).
fn cases(ci: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = ci;
    }
    config
}

/// A directory for one case, removed on drop: in memory (`/dev/shm`) where
/// there is one, as durability is not what these properties are about and
/// a commit's fsync is most of a case's time on disk.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let shm = std::path::Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_owned()
        } else {
            std::env::temp_dir()
        };
        let path = base.join(format!("pw-ingest-prop-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The listeners reports are made of: few, so that opens, closes and
/// snapshots meet the same ones; some with what sanitizing changes.
fn pool() -> Vec<Listener> {
    let run = |pid: u32, name: &str, cmdline: Option<&str>| Process {
        cmdline: cmdline.map(Arc::from),
        ..process(pid, name)
    };
    let dual = Listener {
        inode: 3,
        dual_stack: true,
        processes: vec![run(90, "nginx", None), run(91, "nginx", None)],
        ..on(Proto::Tcp, "::", 80)
    };
    // Said to be loopback; the collector knows better.
    let mapped = Listener {
        inode: 4,
        exposure: Exposure::Loopback,
        processes: vec![run(70, "envoy", None)],
        ..on(Proto::Tcp, "::ffff:10.0.0.1", 8443)
    };
    let java = format!("/usr/bin/java -cp {}", "/opt/app/lib/dependency.jar:".repeat(400));
    let long = Listener {
        inode: 5,
        user: Some("u".repeat(300).into()),
        processes: vec![run(60, &"j".repeat(100), Some(&java))],
        ..on(Proto::Tcp, "127.0.0.1", 8080)
    };
    let nobody = Listener {
        inode: 6,
        user: None,
        ..on(Proto::Udp, "0.0.0.0", 0)
    };
    vec![
        Listener {
            inode: 1,
            processes: vec![run(812, "sshd", Some("/usr/sbin/sshd -D"))],
            ..on(Proto::Tcp, "0.0.0.0", 22)
        },
        Listener {
            inode: 2,
            processes: vec![run(77, "systemd-resolve", None)],
            ..on(Proto::Udp, "127.0.0.53", 53)
        },
        dual,
        mapped,
        long,
        nobody,
        // Port 22 again, another socket: a restarted sshd.
        Listener {
            inode: 8,
            processes: vec![run(4000, "sshd", Some("/usr/sbin/sshd -D"))],
            ..on(Proto::Tcp, "0.0.0.0", 22)
        },
    ]
}

/// The listeners of the pool a bit mask selects.
fn chosen(mask: u8) -> Vec<Listener> {
    pool()
        .into_iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, l)| l)
        .collect()
}

/// The host's facts: no boot time, tagged `role = web`.
fn web_facts() -> HostFacts {
    HostFacts {
        boot_time: None,
        tags: BTreeMap::from([("role".into(), "web".into())]),
        ..facts()
    }
}

/// When a report says it was observed, relative to when it is received.
#[derive(Debug, Clone, Copy)]
enum At {
    Received,
    Ago(i64),
    Ahead(i64),
    Min,
    Max,
    Epoch,
}

impl At {
    fn of(self, received: Timestamp) -> Timestamp {
        let shift = |s: i64| received.checked_add(SignedDuration::from_secs(s)).ok();
        match self {
            At::Received => received,
            At::Ago(s) => shift(-s).unwrap_or(Timestamp::MIN),
            At::Ahead(s) => shift(s).unwrap_or(Timestamp::MAX),
            At::Min => Timestamp::MIN,
            At::Max => Timestamp::MAX,
            At::Epoch => Timestamp::UNIX_EPOCH,
        }
    }
}

fn at() -> impl Strategy<Value = At> {
    prop_oneof![
        4 => Just(At::Received),
        3 => (0i64..7200).prop_map(At::Ago),
        1 => (0i64..(40 * 86_400)).prop_map(At::Ago),
        1 => (0i64..600).prop_map(At::Ahead),
        1 => (0i64..(400 * 86_400)).prop_map(At::Ahead),
        1 => prop_oneof![Just(At::Min), Just(At::Max), Just(At::Epoch)],
    ]
}

/// The first seq of a batch, relative to what its session sent last.
#[derive(Debug, Clone, Copy)]
enum Seq {
    Next,
    Back(u64),
    Skip(u64),
    Exactly(u64),
}

fn seq() -> impl Strategy<Value = Seq> {
    prop_oneof![
        8 => Just(Seq::Next),
        1 => (0u64..3).prop_map(Seq::Back),
        1 => (1u64..3).prop_map(Seq::Skip),
        1 => prop_oneof![
            Just(1u64),
            (1u64 << 63) - 3..(1u64 << 63) + 1,
            u64::MAX - 3..=u64::MAX,
            any::<u64>(),
        ]
        .prop_map(Seq::Exactly),
    ]
}

/// One or more reports of a batch, numbered consecutively.
#[derive(Debug, Clone)]
enum Item {
    Snapshot {
        mask: u8,
        at: At,
    },
    /// Parts `from..to` of a snapshot in `masks.len()` parts.
    Parts {
        masks: Vec<u8>,
        from: usize,
        to: usize,
        at: At,
    },
    /// One part, numbered anyhow.
    Part {
        part: u32,
        parts: u32,
        mask: u8,
        at: At,
    },
    Delta {
        opened: u8,
        closed: u8,
        at: At,
    },
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        3 => (any::<u8>(), at()).prop_map(|(mask, at)| Item::Snapshot { mask, at }),
        3 => (prop::collection::vec(any::<u8>(), 2..5), any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<bool>(), at())
            .prop_map(|(masks, a, b, whole, at)| {
                let (a, b) = (a.index(masks.len()), b.index(masks.len()));
                let (from, to) = if whole { (0, masks.len()) } else { (a.min(b), a.max(b) + 1) };
                Item::Parts { masks, from, to, at }
            }),
        1 => (0u32..4, 0u32..5, any::<u8>(), at()).prop_map(|(part, parts, mask, at)| Item::Part { part, parts, mask, at }),
        5 => (any::<u8>(), any::<u8>(), at()).prop_map(|(opened, closed, at)| Item::Delta { opened, closed, at }),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    /// A batch of `items` (none: a heartbeat) from `session`.
    Send {
        session: usize,
        first: Seq,
        items: Vec<Item>,
        alive: Option<At>,
        dropped: u64,
    },
    /// The previous batch again (its answer was lost).
    Resend,
    /// The collector's clock moves, maybe back.
    Clock(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..SESSIONS.len(), seq(), prop::collection::vec(item(), 0..3), prop::option::of(at()), prop_oneof![4 => Just(0u64), 1 => any::<u64>()])
            .prop_map(|(session, first, items, alive, dropped)| Op::Send { session, first, items, alive, dropped }),
        2 => Just(Op::Resend),
        1 => prop_oneof![(-7200i64..7200), (0i64..(40 * 86_400))].prop_map(Op::Clock),
    ]
}

/// The batch `op` sends, numbering from what each session sent last (past
/// `u64::MAX` the numbers repeat, and validation refuses the batch); `None`
/// when its first number would overflow.
fn build(
    session: usize,
    first: Seq,
    items: &[Item],
    alive: Option<At>,
    dropped: u64,
    last_sent: &mut HashMap<usize, u64>,
    received: Timestamp,
) -> Option<Batch> {
    let last = last_sent.get(&session).copied().unwrap_or(0);
    let mut seq = match first {
        Seq::Next => last.checked_add(1)?,
        Seq::Back(k) => last.saturating_sub(k).max(1),
        Seq::Skip(k) => last.checked_add(1 + k)?,
        Seq::Exactly(n) => n,
    };
    let mut reports = Vec::new();
    let mut push = |body: ReportBody, at: At, reports: &mut Vec<Report>| {
        reports.push(Report {
            seq,
            observed_at: at.of(received),
            body,
        });
        seq = seq.saturating_add(1);
    };
    for item in items {
        match item {
            Item::Snapshot { mask, at } => push(
                ReportBody::Snapshot {
                    facts: web_facts(),
                    listeners: chosen(*mask),
                },
                *at,
                &mut reports,
            ),
            Item::Parts { masks, from, to, at } => {
                for i in *from..*to {
                    let parts = masks.len() as u32;
                    let part = i as u32;
                    push(
                        ReportBody::SnapshotPart {
                            part,
                            parts,
                            facts: (part + 1 == parts).then(web_facts),
                            listeners: chosen(masks[i]),
                        },
                        *at,
                        &mut reports,
                    );
                }
            }
            Item::Part { part, parts, mask, at } => push(
                ReportBody::SnapshotPart {
                    part: *part,
                    parts: *parts,
                    facts: None,
                    listeners: chosen(*mask),
                },
                *at,
                &mut reports,
            ),
            Item::Delta { opened, closed, at } => push(
                ReportBody::Delta {
                    opened: chosen(*opened).into_iter().map(Arc::new).collect(),
                    closed: chosen(*closed).into_iter().map(Arc::new).collect(),
                },
                *at,
                &mut reports,
            ),
        }
    }
    if let Some(r) = reports.last() {
        last_sent.insert(session, r.seq);
    }
    Some(Batch {
        version: PROTOCOL_VERSION,
        host: HOST.into(),
        session: SESSIONS[session].into(),
        dropped,
        peers: Vec::new(),
        peers_dropped: 0,
        alive_at: alive.map(|a| a.of(received)),
        reports,
    })
}

/// The history rules of `Store::ingest`, as far as which listeners are
/// open and what is acknowledged: a model to hold the store to.
#[derive(Debug, Default)]
struct Model {
    session: Option<String>,
    last_seq: u64,
    /// Parts of a snapshot in progress, by part: (session, seq, listeners).
    parts: BTreeMap<u32, (String, u64, Vec<Listener>)>,
    open: Vec<Listener>,
}

impl Model {
    fn reconcile(&mut self, listeners: &[Listener]) {
        let mut open = listeners.to_vec();
        open.sort();
        open.dedup();
        self.open = open;
    }

    /// Parts 0 to `part - 1` of `session` are kept, the last numbered `seq - 1`.
    fn follows(&self, session: &str, seq: u64, part: u32) -> bool {
        let mine: Vec<u64> = self
            .parts
            .values()
            .filter(|(s, ..)| s == session)
            .map(|(_, q, _)| *q)
            .collect();
        mine.len() == part as usize && mine.iter().max() == Some(&(seq - 1))
    }

    fn apply(&mut self, batch: &Batch) -> Ack {
        let mut gap = false;
        for report in &batch.reports {
            let current = self.session.as_deref() == Some(&*batch.session);
            if current && report.seq <= self.last_seq {
                continue;
            }
            match &report.body {
                ReportBody::Snapshot { listeners, .. } => {
                    self.parts.clear();
                    self.reconcile(listeners);
                    self.session = Some(batch.session.clone());
                }
                ReportBody::SnapshotPart {
                    part, parts, listeners, ..
                } => {
                    if *part == 0 {
                        self.parts.clear();
                    } else if !current
                        || self.last_seq.checked_add(1) != Some(report.seq)
                        || !self.follows(&batch.session, report.seq, *part)
                    {
                        gap = true;
                        break;
                    }
                    if part + 1 < *parts {
                        self.parts
                            .insert(*part, (batch.session.clone(), report.seq, listeners.clone()));
                    } else {
                        let mut whole: Vec<Listener> = std::mem::take(&mut self.parts)
                            .into_values()
                            .flat_map(|(.., l)| l)
                            .collect();
                        whole.extend(listeners.iter().cloned());
                        self.reconcile(&whole);
                    }
                    self.session = Some(batch.session.clone());
                }
                ReportBody::Delta { opened, closed } => {
                    if !current || self.last_seq.checked_add(1) != Some(report.seq) {
                        gap = true;
                        break;
                    }
                    self.open.retain(|l| !closed.iter().any(|c| **c == *l));
                    for l in opened {
                        if !self.open.contains(l) {
                            self.open.push(Listener::clone(l));
                        }
                    }
                    self.open.sort();
                }
            }
            self.last_seq = report.seq;
        }
        let current = self.session.as_deref() == Some(&*batch.session);
        Ack {
            acked: if current { self.last_seq } else { 0 },
            resync: gap || !current,
            limits: None,
        }
    }
}

/// Every row of the history's tables, to tell whether a batch changed any.
fn dump(db: &rusqlite::Connection) -> Vec<String> {
    let mut rows = Vec::new();
    for sql in [
        "SELECT id, host_id, netns, proto, family, hex(addr), port, inode, uid, user, exposure, dual_stack, hex(owners),
                opened_at, closed_at FROM intervals ORDER BY id",
        "SELECT host_id, part, session, seq, length(listeners) FROM snapshot_parts ORDER BY host_id, part",
        "SELECT id, hash, name, exe, cmdline, uid, user, container, unit FROM programs ORDER BY id",
        "SELECT name, session, last_seq FROM hosts ORDER BY name",
    ] {
        let mut stmt = db.prepare(sql).unwrap();
        let n = stmt.column_count();
        let mut q = stmt.query([]).unwrap();
        while let Some(row) = q.next().unwrap() {
            let cells: Vec<String> = (0..n)
                .map(|i| format!("{:?}", row.get_ref(i).unwrap()))
                .collect();
            rows.push(cells.join("|"));
        }
    }
    rows
}

/// One SQL number.
fn number(db: &rusqlite::Connection, sql: &str) -> i64 {
    db.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// The invariants every state of the history keeps.
fn check_history(
    store: &SqliteStore,
    db: &rusqlite::Connection,
    model: &Model,
    (earliest, latest): (Timestamp, Timestamp),
) -> Result<(), TestCaseError> {
    let limits = clock::Limits::default();
    let duplicates = number(
        db,
        "SELECT count(*) FROM (SELECT 1 FROM intervals WHERE closed_at IS NULL
           GROUP BY host_id, netns, proto, family, addr, port, inode, uid, user, exposure, dual_stack, owners
           HAVING count(*) > 1)",
    );
    prop_assert_eq!(duplicates, 0, "a listener with two open intervals");
    prop_assert_eq!(
        number(db, "SELECT count(*) FROM intervals WHERE closed_at < opened_at"),
        0
    );
    let floor = (earliest - SignedDuration::try_from(limits.max_backlog).unwrap()).as_millisecond();
    let ceiling = (latest + SignedDuration::try_from(limits.tolerance).unwrap()).as_millisecond();
    let (first, last) = (
        number(db, "SELECT coalesce(min(opened_at), 0) FROM intervals"),
        number(
            db,
            "SELECT coalesce(max(max(opened_at, coalesce(closed_at, 0))), 0) FROM intervals",
        ),
    );
    if first != 0 {
        prop_assert!(first >= floor, "opened at {first}, before the backlog window ({floor})");
        prop_assert!(
            last <= ceiling,
            "a time {last} beyond the tolerance after any receipt ({ceiling})"
        );
    }

    let mut open: Vec<Listener> = store
        .listeners_at(HOST, Timestamp::MAX)
        .unwrap()
        .into_iter()
        .map(|row| row.listener)
        .collect();
    open.sort();
    prop_assert_eq!(&open, &model.open, "the listeners open are not the model's");

    for row in store.history(HOST, None, None, None).unwrap() {
        let l = &row.listener;
        prop_assert_eq!(l.exposure, Exposure::of(l.local_addr));
        prop_assert_eq!(l.family, family_of(l.local_addr));
        prop_assert!(!l.dual_stack || l.family == Family::Ipv6);
        prop_assert!(l.user.as_ref().is_none_or(|u| u.len() <= MAX_USER_BYTES));
        for p in &l.processes {
            prop_assert!(p.name.len() <= MAX_NAME_BYTES);
            prop_assert!(p.cmdline.as_ref().is_none_or(|c| c.len() <= MAX_CMDLINE_BYTES));
        }
        if let Some(closed) = row.closed_at {
            prop_assert!(closed >= row.opened_at);
        }
    }
    Ok(())
}

/// Runs `ops` against a fresh store, checking everything after each batch.
fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = TempDir::new();
    let path = dir.0.join("collector.db");
    let store = SqliteStore::open(&path).unwrap();
    let db = rusqlite::Connection::open(&path).unwrap();
    let mut model = Model::default();
    let mut received = Timestamp::from_second(1_780_000_000).unwrap();
    let (mut earliest, mut latest) = (received, received);
    let mut last_sent: HashMap<usize, u64> = HashMap::new();
    let mut most_sent: HashMap<String, u64> = HashMap::new();
    // The last acknowledgement of the host's session.
    let mut acked: HashMap<String, u64> = HashMap::new();
    let mut previous: Option<Batch> = None;
    for op in ops {
        let mut batch = match op {
            Op::Clock(step) => {
                received = received
                    .checked_add(SignedDuration::from_secs(step))
                    .unwrap_or(received);
                (earliest, latest) = (earliest.min(received), latest.max(received));
                continue;
            }
            Op::Resend => match &previous {
                Some(b) => b.clone(),
                None => continue,
            },
            Op::Send {
                session,
                first,
                items,
                alive,
                dropped,
            } => match build(session, first, &items, alive, dropped, &mut last_sent, received) {
                Some(b) => b,
                None => continue,
            },
        };
        // What the ingest handler does before the store: a refused batch stores nothing.
        if batch.validate().is_err() {
            continue;
        }
        batch.sanitize();
        previous = Some(batch.clone());
        for r in &batch.reports {
            let most = most_sent.entry(batch.session.clone()).or_default();
            *most = (*most).max(r.seq);
        }
        let already_stored = model.session.as_deref() == Some(&*batch.session)
            && !batch.reports.is_empty()
            && batch.reports.iter().all(|r| r.seq <= model.last_seq);
        let before = dump(&db);
        let session_before = model.session.clone();

        let ack = store.ingest(&batch, received);
        prop_assert!(ack.is_ok(), "the store failed: {:?}", ack);
        let ack = ack.unwrap();
        let expected = model.apply(&batch);
        prop_assert_eq!(
            (ack.acked, ack.resync),
            (expected.acked, expected.resync),
            "{:?}",
            batch
        );

        if ack.acked > 0 {
            let sent = most_sent.get(&batch.session).copied().unwrap_or(0);
            prop_assert!(
                ack.acked <= sent,
                "acked {} of a session that sent up to {}",
                ack.acked,
                sent
            );
        }
        if session_before.as_deref() == Some(&*batch.session) {
            if let Some(&previous) = acked.get(&batch.session) {
                prop_assert!(ack.acked >= previous, "acked {} after {}", ack.acked, previous);
            }
        }
        // Only the host's session has acknowledgements that must not go back.
        acked.retain(|s, _| model.session.as_ref() == Some(s));
        if model.session.as_deref() == Some(&*batch.session) {
            acked.insert(batch.session.clone(), ack.acked);
        }
        if already_stored {
            prop_assert_eq!(
                dump(&db),
                before,
                "a resend of what was acknowledged changed the history"
            );
        }
        check_history(&store, &db, &model, (earliest, latest))?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn any_sequence_of_batches_keeps_the_history_consistent_and_acknowledges_only_what_is_stored(
        ops in prop::collection::vec(op(), 1..24),
    ) {
        run(ops)?;
    }
}
