//! The store's conformance suite ([`conformance`]) on the SQLite backend:
//! a fresh database file in a directory of its own for every test; and what
//! only SQLite shows (its file, its tables), with the suite's builders.
// Test code: a failed setup fails the test.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod conformance;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use conformance::build::*;
use portwatch_collector::pruner;
use portwatch_collector::store::sqlite::SqliteStore;
use portwatch_collector::store::{HistoryReads, HistoryWrites, Maintenance, Store};
use portwatch_common::Listener;

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

    /// The first column of each row `sql` reads, straight from the database file.
    fn column<T: rusqlite::types::FromSql>(&self, sql: &str) -> Vec<T> {
        let conn = rusqlite::Connection::open(self.dir.join("collector.db")).unwrap();
        let mut stmt = conn.prepare(sql).unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    /// The one value `sql` reads.
    fn value(&self, sql: &str) -> i64 {
        self.column(sql)[0]
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
    let sqlite = Sqlite::new();
    for host in ["web-2", "app-1"] {
        let b = batch(host, "s", vec![snapshot(1, ts(0), vec![owned(22, 1, &[])])]);
        sqlite.store.ingest(&b, ts(0)).unwrap();
    }
    let path = sqlite.dir.join("collector.db");
    let again = SqliteStore::open(&path).unwrap();
    let names: Vec<String> = again
        .who(22, None, ts(0))
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

/// The suite's `retention::closed_intervals_past_the_cutoff_...` as the
/// programs table sees it: what pruning counted gone is gone, the rest stays.
#[test]
fn pruning_leaves_in_the_programs_table_the_programs_kept_intervals_name() {
    let sqlite = Sqlite::new();
    two_hosts(&sqlite.store);
    let all = "SELECT name FROM programs ORDER BY name";
    assert_eq!(sqlite.column::<String>(all), ["haproxy", "nginx", "pgbouncer", "sshd"]);
    let (pruned, _) = prune_all(&sqlite.store, &month_plan(day(60)), 1);
    assert_eq!(pruned.programs, 2);
    assert_eq!(sqlite.column::<String>(all), ["haproxy", "sshd"]);
}

#[test]
fn a_new_database_gives_freed_space_back_to_the_file_system() {
    let sqlite = Sqlite::new();
    let store = &sqlite.store;
    assert_eq!(sqlite.value("PRAGMA auto_vacuum"), 2, "incremental");
    let many: Vec<Listener> = (1..2000).map(|p| served_by(p, "svc")).collect();
    send(store, "web-1", vec![snapshot(1, day(0), many.clone())]);
    send(store, "web-1", vec![delta(2, day(1), vec![], many)]);
    prune_all(store, &month_plan(day(60)), 500);
    let pages = sqlite.value("PRAGMA page_count");
    assert!(store.reclaim(8).unwrap() > 0, "freed pages are left after a small step");
    let mut left = u64::MAX;
    for _ in 0..10_000 {
        left = store.reclaim(pruner::VACUUM_PAGES).unwrap();
        if left == 0 {
            break;
        }
    }
    assert_eq!(left, 0, "every freed page given back");
    assert!(sqlite.value("PRAGMA page_count") < pages, "the file got shorter");
}
