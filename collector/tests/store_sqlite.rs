//! The store's conformance suite ([`conformance`]) on the SQLite backend:
//! a fresh database file in a directory of its own for every test.
// Test code: a failed setup fails the test.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod conformance;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use portwatch_collector::store::sqlite::SqliteStore;
use portwatch_collector::store::Store;

/// A SQLite store in a fresh directory, removed when the test ends.
struct Sqlite {
    // Dropped first: the store closes its files before the directory goes.
    store: SqliteStore,
    dir: PathBuf,
}

impl Sqlite {
    fn new() -> Sqlite {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "portwatch-conformance-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = SqliteStore::open(&dir.join("collector.db")).unwrap();
        Sqlite { store, dir }
    }
}

impl Drop for Sqlite {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl conformance::Backend for Sqlite {
    fn store(&self) -> &dyn Store {
        &self.store
    }
}

conformance_suite!(Sqlite::new());

#[test]
fn a_store_opened_anew_names_its_hosts_as_before() {
    use portwatch_collector::store::{HistoryReads, HistoryWrites};
    use portwatch_common::wire::{Batch, HostFacts, Report, ReportBody, PROTOCOL_VERSION};
    use portwatch_common::{Exposure, Family, Listener, Proto};
    let sqlite = Sqlite::new();
    let at = jiff::Timestamp::from_second(1_700_000_000).unwrap();
    let listener = Listener {
        netns: 1,
        proto: Proto::Tcp,
        family: Family::Ipv4,
        local_addr: "0.0.0.0".parse().unwrap(),
        local_port: 22,
        inode: 1,
        uid: 0,
        user: None,
        exposure: Exposure::Wildcard,
        dual_stack: false,
        processes: Vec::new(),
    };
    for host in ["web-2", "app-1"] {
        let batch = Batch {
            version: PROTOCOL_VERSION,
            host: host.into(),
            session: "s".into(),
            dropped: 0,
            alive_at: None,
            reports: vec![Report {
                seq: 1,
                observed_at: at,
                body: ReportBody::Snapshot {
                    facts: HostFacts {
                        os: None,
                        kernel: None,
                        boot_time: None,
                        agent_version: "0.1.0".into(),
                        interval_ms: 10_000,
                        tags: Default::default(),
                        detection: None,
                    },
                    listeners: vec![listener.clone()],
                },
            }],
        };
        sqlite.store.ingest(&batch, at).unwrap();
    }
    let path = sqlite.dir.join("collector.db");
    let again = SqliteStore::open(&path).unwrap();
    let names: Vec<String> = again
        .who(22, None, at)
        .unwrap()
        .iter()
        .map(|r| r.host.to_string())
        .collect();
    assert_eq!(
        names,
        ["app-1", "web-2"],
        "an empty host-name cache fills from the database"
    );
}
