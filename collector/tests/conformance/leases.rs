//! Leases: one holder at a time, until it lets the lease expire or gives it up.

use std::sync::atomic::{AtomicUsize, Ordering};

use portwatch_collector::store::Store;

use super::build::*;

pub fn a_lease_is_one_holders_until_it_expires_or_is_released(store: &dyn Store) {
    assert!(
        store.hold_lease("sweep", "c1", ts(0), ts(15)).unwrap(),
        "a free lease is taken"
    );
    assert!(
        !store.hold_lease("sweep", "c2", ts(5), ts(20)).unwrap(),
        "held: refused to another"
    );
    assert!(
        store.hold_lease("sink:ops", "c2", ts(5), ts(20)).unwrap(),
        "another lease is another row"
    );
    assert!(
        store.hold_lease("sweep", "c1", ts(10), ts(25)).unwrap(),
        "its holder renews it"
    );
    assert!(
        !store.hold_lease("sweep", "c2", ts(20), ts(35)).unwrap(),
        "renewed: still held at 20"
    );
    assert!(
        store.hold_lease("sweep", "c2", ts(25), ts(40)).unwrap(),
        "expired at 25: taken over"
    );
    assert!(
        !store.hold_lease("sweep", "c1", ts(26), ts(41)).unwrap(),
        "the old holder has lost it"
    );
    store.release_lease("sweep", "c1").unwrap();
    assert!(
        !store.hold_lease("sweep", "c1", ts(27), ts(42)).unwrap(),
        "only its holder releases it"
    );
    store.release_lease("sweep", "c2").unwrap();
    assert!(
        store.hold_lease("sweep", "c1", ts(28), ts(43)).unwrap(),
        "released: free at once"
    );
}

pub fn of_holders_racing_for_a_free_lease_exactly_one_gets_it(store: &dyn Store) {
    for round in 0..20 {
        let name = format!("race-{round}");
        let won = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for holder in 0..4 {
                let (name, won) = (&name, &won);
                s.spawn(move || {
                    if store.hold_lease(name, &format!("c{holder}"), ts(0), ts(15)).unwrap() {
                        won.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(won.load(Ordering::Relaxed), 1, "round {round}");
    }
}
