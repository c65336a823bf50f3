//! The fleet simulator, small: what it sends over HTTP to a real collector is
//! stored exactly (one interval row per snapshot listener and per open, a
//! close per close) and heartbeats write no row. No timing is asserted; the
//! figures come from `bash collector/benches/fleet.sh`.

use std::time::Duration;

use portwatch_tests::fleet::{self, Plan};
use portwatch_tests::{binary, TempDir};

#[test]
fn a_small_fleet_over_http_is_stored_exactly_and_heartbeats_write_no_row() {
    let dir = TempDir::new("fleet").unwrap();
    let plan = Plan {
        hosts: 50,
        listeners: 5,
        intervals: 6,
        quiet_intervals: 2,
        change_every: 5,
        clients: 4,
        who_queries: 3,
        time_limit: Duration::from_secs(120),
        collector: binary("portwatch-collector"),
        dir: dir.path.clone(),
        database: fleet::Database::Sqlite,
        collectors: 1,
    };
    let outcome = fleet::run(&plan, &mut |line| eprintln!("{line}")).unwrap();
    eprint!("{}", fleet::report(&plan, &outcome));
    assert_eq!(outcome.problems(), Vec::<String>::new());
    assert!(!outcome.cut_short);
    // 10 of the 50 hosts change in each of the 6 mixed rounds, opening and closing in turn.
    assert_eq!((outcome.deltas, outcome.opened + outcome.closed), (60, 60));
    assert!(outcome.opened > 0 && outcome.closed > 0, "{outcome:?}");
    assert_eq!(outcome.heartbeats, 50 * 8 - 60);
    assert_eq!(outcome.end.intervals as u64, 50 * 5 + outcome.opened);
    assert_eq!(outcome.end.closed as u64, outcome.closed);
    assert_eq!(outcome.after_quiet.total(), outcome.before_quiet.total());
    assert_eq!((outcome.hosts_up, outcome.who_idle.rows), (50, 50));
}

/// The same through two collectors on one PostgreSQL database (the server
/// `tests/run.sh` starts), each host on one of them: stored exactly, once.
#[test]
fn a_small_fleet_through_two_collectors_on_postgresql_is_stored_exactly() {
    let server = std::env::var("PORTWATCH_TEST_POSTGRES").expect(
        "this test needs a PostgreSQL server: run it through `bash tests/run.sh`, which starts one, or \
         `source tests/postgres.sh && postgres_start` first (it sets PORTWATCH_TEST_POSTGRES)",
    );
    let dir = TempDir::new("fleet-pg").unwrap();
    let plan = Plan {
        hosts: 40,
        listeners: 5,
        intervals: 4,
        quiet_intervals: 2,
        change_every: 4,
        clients: 4,
        who_queries: 3,
        time_limit: Duration::from_secs(120),
        collector: binary("portwatch-collector"),
        dir: dir.path.clone(),
        database: fleet::Database::Postgres(server),
        collectors: 2,
    };
    let outcome = fleet::run(&plan, &mut |line| eprintln!("{line}")).unwrap();
    eprint!("{}", fleet::report(&plan, &outcome));
    assert_eq!(outcome.problems(), Vec::<String>::new());
    assert!(!outcome.cut_short);
    assert_eq!((outcome.deltas, outcome.opened + outcome.closed), (40, 40));
    assert_eq!(outcome.end.intervals as u64, 40 * 5 + outcome.opened);
    assert_eq!(outcome.end.closed as u64, outcome.closed);
    assert_eq!((outcome.hosts_up, outcome.who_idle.rows), (40, 40));
    assert!(
        outcome.mixed.cpu.database > 0.0,
        "the database's CPU is measured: {outcome:?}"
    );
}
