//! The store's conformance suite ([`conformance`]) on the PostgreSQL
//! backend, against the real server `tests/run.sh` starts: a fresh schema
//! for every test; and what only PostgreSQL shows (its migrations, several
//! stores on one database, its partitions).
// Test code: a failed setup fails the test.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod conformance;

use conformance::build::*;
use portwatch_collector::clock;
use portwatch_collector::store::postgres::{PostgresOptions, PostgresStore};
use portwatch_collector::store::{HistoryReads, HistoryWrites, Store, StoreError};
use portwatch_fixtures::PostgresSchema;

/// A PostgreSQL store in a schema of its own, dropped when the test ends.
struct Postgres {
    // Dropped first: the store closes its connections before the schema goes.
    store: PostgresStore,
    schema: PostgresSchema,
}

impl Postgres {
    fn new() -> Postgres {
        let schema = PostgresSchema::fresh();
        let store = open(&schema).unwrap();
        Postgres { store, schema }
    }
}

fn open(schema: &PostgresSchema) -> Result<PostgresStore, StoreError> {
    let mut options = PostgresOptions::new(schema.url.clone());
    options.max_connections = 4;
    PostgresStore::open(&options, clock::Limits::default())
}

impl conformance::Backend for Postgres {
    fn store(&self) -> &dyn Store {
        &self.store
    }
}

conformance_suite!(Postgres::new());

#[test]
fn a_store_opened_anew_names_its_hosts_as_before() {
    let pg = Postgres::new();
    for host in ["web-2", "app-1"] {
        let b = batch(host, "s", vec![snapshot(1, ts(0), vec![owned(22, 1, &[])])]);
        pg.store.ingest(&b, ts(0)).unwrap();
    }
    let again = open(&pg.schema).unwrap();
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

#[test]
fn stores_opened_at_once_on_a_new_database_migrate_it_once() {
    let schema = PostgresSchema::fresh();
    let stores: Vec<PostgresStore> = std::thread::scope(|s| {
        let opening: Vec<_> = (0..4).map(|_| s.spawn(|| open(&schema))).collect();
        opening.into_iter().map(|t| t.join().unwrap().unwrap()).collect()
    });
    assert_eq!(
        schema.psql("SELECT count(*), max(version) FROM portwatch_schema"),
        "1|1"
    );
    drop(stores);
}

#[test]
fn a_database_of_a_newer_collector_is_refused() {
    let schema = PostgresSchema::fresh();
    drop(open(&schema).unwrap());
    schema.psql("UPDATE portwatch_schema SET version = 999");
    let error = open(&schema).err().unwrap().to_string();
    assert!(error.contains("version 999") && error.contains("newer"), "{error}");
}

#[test]
fn a_database_of_another_program_is_refused() {
    let schema = PostgresSchema::fresh();
    schema.psql("CREATE TABLE intervals (x integer)");
    let error = open(&schema).err().unwrap().to_string();
    assert!(error.contains("another program"), "{error}");
}

#[test]
fn an_unreachable_server_is_named_in_a_clear_error_and_no_password_shown() {
    let mut options = PostgresOptions::new("postgres://pw:s3cret@127.0.0.1:1/pw?connect_timeout=2");
    options.max_connections = 2;
    let error = PostgresStore::open(&options, clock::Limits::default())
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("127.0.0.1:1") && !error.contains("s3cret"), "{error}");
}

#[test]
fn closed_intervals_go_to_the_partition_of_the_month_they_closed_in() {
    let pg = Postgres::new();
    let now = jiff::Timestamp::now();
    let l = owned(8080, 1, &[]);
    pg.store
        .ingest(&batch("web-1", "s", vec![snapshot(1, now, vec![l.clone()])]), now)
        .unwrap();
    pg.store
        .ingest(&batch("web-1", "s", vec![delta(2, now, vec![], vec![l])]), now)
        .unwrap();
    let month = jiff::tz::Offset::UTC.to_datetime(now);
    let table = format!("intervals_{:04}{:02}", month.year(), month.month());
    assert_eq!(
        pg.schema.psql("SELECT tableoid::regclass FROM intervals"),
        table,
        "the closed interval moved out of the open partition"
    );
}
