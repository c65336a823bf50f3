//! What must happen once happens once: the periodic drift sweep, each alert
//! sink, the pruner and the periodic probe run in one collector at a time, the one holding its
//! lease in the store ([`crate::store::Leases`]). Collectors sharing a
//! PostgreSQL database are otherwise interchangeable; a SQLite file has one
//! collector, which holds every lease.
//!
//! A [`Keeper`] thread renews this collector's leases every
//! [`RENEW_EVERY`], each for [`TTL`]. A lease counts as held only until the
//! time its last renewal gives, less [`MARGIN`], by this process's own
//! clock: a collector cut off from the database stops working on it before
//! the lease can expire in the database and another take it. When a
//! collector dies, another takes each of its leases within
//! `TTL + RENEW_EVERY` (20 s), and resumes from what the store kept (a
//! sink's place in the outbox); a collector stopping cleanly releases its
//! leases, which are taken at the next renewal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::store::Leases;

/// How long a lease lasts past its last renewal.
pub const TTL: Duration = Duration::from_secs(15);

/// How often the keeper renews (and tries to take) its leases.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);

/// How long before its end by the database's count a lease stops counting
/// as held here: room for the clocks of two collectors to differ.
pub const MARGIN: Duration = Duration::from_secs(3);

/// The lease of the periodic drift sweep.
pub const SWEEP: &str = "sweep";

/// The lease of the pruner.
pub const PRUNE: &str = "prune";

/// The lease of the periodic probe (`[probe]`): one collector of a database
/// probes the fleet, so a fleet behind several collectors is not scanned
/// once by each.
pub const PROBE: &str = "probe";

/// The lease of alert sink `name`.
pub fn sink(name: &str) -> String {
    format!("sink:{name}")
}

/// One lease as this collector sees it: held until a deadline.
#[derive(Clone)]
pub struct Lease(Arc<Mutex<Option<Instant>>>);

impl Lease {
    /// Whether this collector holds it now.
    pub fn held(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|until| Instant::now() < until)
    }

    /// A lease held for good, for a store no other collector shares (tests,
    /// and a router built without a keeper).
    pub fn always() -> Lease {
        Lease(Arc::new(Mutex::new(Some(
            Instant::now() + Duration::from_secs(100 * 365 * 86_400),
        ))))
    }

    /// A lease held until `until` (never if `None`), for tests of what runs under one.
    #[cfg(test)]
    pub(crate) fn held_until(until: Option<Instant>) -> Lease {
        Lease(Arc::new(Mutex::new(until)))
    }

    /// Makes it held until `until` (not held if `None`), for tests.
    #[cfg(test)]
    pub(crate) fn set_until(&self, until: Option<Instant>) {
        self.set(until);
    }

    fn set(&self, until: Option<Instant>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = until;
    }
}

/// Takes and renews this collector's leases.
pub struct Keeper {
    store: Arc<dyn Leases>,
    /// This collector, as the leases name it (host, pid and random bits).
    holder: String,
    leases: Mutex<Vec<(String, Lease)>>,
    stopped: AtomicBool,
}

impl Keeper {
    /// A keeper for the collector `holder` (see [`holder_name`]); its
    /// renewals start with [`Keeper::start`].
    pub fn new(store: Arc<dyn Leases>, holder: String) -> Arc<Keeper> {
        Arc::new(Keeper {
            store,
            holder,
            leases: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
        })
    }

    /// This collector's name in the leases.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Lease `name`, tried at once and then at every renewal.
    pub fn lease(&self, name: &str) -> Lease {
        let lease = Lease(Arc::default());
        self.renew(name, &lease);
        self.leases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((name.to_owned(), lease.clone()));
        lease
    }

    /// Starts the renewing thread; it stops after [`Keeper::release_all`].
    pub fn start(self: &Arc<Keeper>) -> std::io::Result<()> {
        let keeper = Arc::clone(self);
        std::thread::Builder::new()
            .name("leases".to_owned())
            .spawn(move || {
                while !keeper.stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(RENEW_EVERY);
                    if keeper.stopped.load(Ordering::Relaxed) {
                        break;
                    }
                    let leases = keeper.leases.lock().unwrap_or_else(PoisonError::into_inner).clone();
                    for (name, lease) in &leases {
                        keeper.renew(name, lease);
                    }
                }
            })
            .map(drop)
    }

    /// Takes or renews `lease`, logging when it changes hands here.
    fn renew(&self, name: &str, lease: &Lease) {
        let asked = Instant::now();
        let now = Timestamp::now();
        let until = now.checked_add(TTL).unwrap_or(now);
        let was = lease.held();
        match self.store.hold_lease(name, &self.holder, now, until) {
            Ok(true) => {
                lease.set(Some(asked + TTL.saturating_sub(MARGIN)));
                if !was {
                    tracing::info!(lease = name, holder = %self.holder, "took the lease: this collector runs it");
                }
            }
            Ok(false) => {
                lease.set(None);
                if was {
                    tracing::warn!(lease = name, holder = %self.holder, "lost the lease to another collector");
                }
            }
            // Kept until its deadline: the database may answer again before then.
            Err(e) => tracing::warn!(lease = name, error = %e, "cannot renew the lease"),
        }
    }

    /// Gives up every lease (at shutdown: another collector takes them at
    /// its next renewal) and stops renewing.
    pub fn release_all(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        let leases = self.leases.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for (name, lease) in &leases {
            if lease.held() {
                lease.set(None);
                if let Err(e) = self.store.release_lease(name, &self.holder) {
                    tracing::warn!(lease = %name, error = %e, "cannot release the lease; it expires by itself");
                }
            }
        }
    }
}

/// A name for this collector in the leases: its host, its pid and random
/// bits (a restarted collector is another holder).
pub fn holder_name() -> String {
    let mut bits = [0u8; 4];
    let _ = getrandom::fill(&mut bits);
    format!("{}:{}:{}", this_host(), std::process::id(), hex::encode(bits))
}

/// This machine's name, as [`holder_name`] gives it.
pub fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "collector".to_owned())
}

/// Whether another collector serves the database now, from the holders of
/// its live leases (before this collector takes any): one on another host,
/// or on this host (`host`) with a process `running` still. A holder of this
/// host whose process is gone (a collector killed less than a lease ago)
/// serves nobody. Then the fleet has been served all along, and this
/// collector gives its hosts no startup grace (see [`crate::alert::drift::Policy::startup_grace`]).
pub fn others_serving(holders: &[String], host: &str, running: impl Fn(u32) -> bool) -> bool {
    holders.iter().any(|holder| {
        let mut parts = holder.rsplitn(3, ':');
        let (_bits, pid, on) = (parts.next(), parts.next(), parts.next());
        match (on, pid.and_then(|p| p.parse::<u32>().ok())) {
            (Some(on), Some(pid)) if on == host => running(pid),
            _ => true,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    /// Leases that are free or not as the test says.
    struct Fixed(Mutex<Result<bool, ()>>);

    impl Leases for Fixed {
        fn hold_lease(&self, _: &str, _: &str, _: Timestamp, _: Timestamp) -> Result<bool, StoreError> {
            self.0
                .lock()
                .unwrap()
                .map_err(|()| StoreError::Unavailable("down".to_owned()))
        }

        fn release_lease(&self, _: &str, _: &str) -> Result<(), StoreError> {
            Ok(())
        }

        fn live_holders(&self, _: Timestamp) -> Result<Vec<String>, StoreError> {
            Ok(Vec::new())
        }
    }

    #[test]
    fn another_collector_serves_unless_it_is_a_dead_process_of_this_host() {
        let holders = |h: &[&str]| h.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let running = |pid: u32| pid == 7;
        assert!(!others_serving(&[], "c1", running), "nobody holds a lease");
        assert!(others_serving(&holders(&["c2:99:ab"]), "c1", running), "another host's");
        assert!(
            others_serving(&holders(&["c1:7:ab"]), "c1", running),
            "a running one of this host"
        );
        assert!(
            !others_serving(&holders(&["c1:99:ab"]), "c1", running),
            "a killed one of this host"
        );
        assert!(
            others_serving(&holders(&["odd"]), "c1", running),
            "a holder not named so: counted"
        );
    }

    #[test]
    fn a_lease_counts_as_held_only_while_its_last_renewal_lasts() {
        let store = Arc::new(Fixed(Mutex::new(Ok(true))));
        let keeper = Keeper::new(store.clone(), "c1".to_owned());
        let lease = keeper.lease(SWEEP);
        assert!(lease.held(), "taken at once");
        *store.0.lock().unwrap() = Err(());
        keeper.renew(SWEEP, &lease);
        assert!(lease.held(), "a failed renewal keeps it until its deadline");
        lease.set(Some(Instant::now()));
        assert!(
            !lease.held(),
            "past its deadline it is not held, whatever the database says"
        );
        *store.0.lock().unwrap() = Ok(false);
        keeper.renew(SWEEP, &lease);
        assert!(!lease.held(), "another collector holds it");
        *store.0.lock().unwrap() = Ok(true);
        keeper.renew(SWEEP, &lease);
        assert!(lease.held());
        keeper.release_all();
        assert!(!lease.held(), "released");
    }
}
