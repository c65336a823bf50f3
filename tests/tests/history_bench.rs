//! The history benchmark, small: a few days of a few hosts loaded through the
//! store, then asked over HTTP of a real collector. What it measures must be
//! the answers it claims (every host holds port 22 at any instant; a host's
//! listeners at an instant are all of them). No timing is asserted; the
//! figures come from `bash collector/benches/history.sh`.

use portwatch_tests::history::{self, Plan};
use portwatch_tests::{binary, create_token, portwatch_json, Collector, TempDir};

#[test]
fn a_small_history_is_stored_whole_and_answers_who_and_ports_at_any_instant() {
    let dir = TempDir::new("history-bench").unwrap();
    let plan = Plan {
        hosts: 30,
        listeners: 8,
        days: 3,
        restarts_per_day: 4,
        queries: 5,
        collector: binary("portwatch-collector"),
        db: dir.path.join("collector.db"),
    };
    let outcome = history::run(&plan, &mut |line| eprintln!("{line}")).unwrap();
    eprint!("{}", history::report(&plan, &outcome));
    // A snapshot's listeners, then each restart closes one and opens one.
    let restarts = 30 * 3 * 4;
    assert_eq!(outcome.loaded.map(|(changes, _)| changes), Some(30 * 8 + 2 * restarts));
    assert_eq!(outcome.intervals, 30 * 8 + restarts);
    for q in [&outcome.who_now, &outcome.who_past] {
        assert_eq!((q.count, q.rows), (5, 30), "{q:?}");
    }
    assert_eq!((outcome.ports_at.count, outcome.ports_at.rows), (5, 8));

    // Asked again, the database is not loaded a second time.
    let again = history::run(&plan, &mut |_| {}).unwrap();
    assert_eq!((again.loaded, again.intervals), (None, outcome.intervals));
}

#[test]
fn the_cli_reads_a_streamed_fleet_wide_answer_whole() {
    // 1,100 hosts: `who --port 22` is over the 1,000 rows from which the collector streams.
    let dir = TempDir::new("history-cli").unwrap();
    let plan = Plan {
        hosts: 1_100,
        listeners: 2,
        days: 1,
        restarts_per_day: 1,
        queries: 1,
        collector: binary("portwatch-collector"),
        db: dir.path.join("collector.db"),
    };
    history::run(&plan, &mut |_| {}).unwrap();
    let reader = create_token(&plan.db, &["--role", "read", "--name", "cli"]).unwrap();
    let collector = Collector::start(&plan.db, 0).unwrap();
    let who = portwatch_json(&collector.url, &reader, &["who", "--port", "22"]).unwrap();
    let hosts: Vec<&str> = who
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|row| row["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts.len(), 1_100);
    assert!(hosts.windows(2).all(|w| w[0] < w[1]), "one row per host, in name order");
}
