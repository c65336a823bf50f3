//! `portwatch-agent run`: scan every interval, record what changed in the
//! spool, and ship the spool to the collector, in order, until stopped.
//!
//! The loop never stops observing because of the collector: while it is
//! unreachable, reports accumulate in the spool (bounded, see `spool`) and
//! sending is retried with exponential backoff and jitter; when it is back,
//! reports are replayed in order with their original observation times.
//! Reports of an earlier run (a restart while the collector was away) are
//! replayed first, in their own session. SIGTERM or SIGINT ends the loop
//! after one last attempt to ship; what is not acknowledged stays spooled.
//!
//! Where the kernel allows it (see `events`), listeners are seen by kernel
//! events instead of a scan every interval: each event becomes a report at
//! the event's own time (a listener that lived 50 ms is opened and closed in
//! history), owned by the event's task as the scanner reads it. Reports made
//! by events are shipped within `EVENT_SHIP_DELAY`; with nothing to send, a
//! heartbeat goes every interval. A full scan runs at start, every
//! `safety_scan_interval`, and at once when events were lost; it is the
//! truth, and what it finds that events did not say is counted and logged.
//!
//! Every listener beyond loopback carries the firewall's answer (see
//! `firewall::watch`): each namespace's nftables ruleset is read once and
//! read again when its generation moves, which is checked at every scan
//! (polling) or every interval (events); a rule change that changes an
//! answer is reported then, as a change of the listeners it decides.
//!
//! With `peers = true`, the established connections of every TCP listener
//! are summarized every interval (after the scan when polling, at each
//! heartbeat with kernel events; see `peers`), and the summaries due go
//! with the next batch to a collector that speaks protocol version 3 (see
//! `peers::series` for when one is due, and why they are not spooled).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use portwatch_common::client::Backoff;
use portwatch_common::wire::Batch;
use portwatch_common::Snapshot;

use crate::events::state::{self, Key, Tracked};
use crate::events::{self as kernel_events, Batch as EventBatch, Detection, PeerPorts};
use crate::firewall::watch::Watch;
use crate::observe::Observer;
use crate::peers::{self, book::Book, series::Series};
use crate::scan::{ScanOptions, Scanner};
use crate::ship::{self, ShipError, Shipper};
use crate::spool::{Spool, SpoolError, SpooledReport};

/// Most reports sent in one batch.
const BATCH_REPORTS: usize = 500;
/// Snapshots still spooled that one call of `ship` goes on to after the
/// collector asked for one (more wait for the next interval).
const MAX_RESYNCS_PER_SHIP: u32 = 3;
/// First retry delay after a failure.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Longest time a report made by a kernel event waits before it is shipped
/// (the events of that time go in one batch).
const EVENT_SHIP_DELAY: Duration = Duration::from_millis(100);
/// How long after a hint of a UDP release the socket dump confirms it (the
/// kernel finishes the release as the task returns to user space or exits).
const RELEASE_CONFIRM_DELAY: Duration = Duration::from_millis(20);

/// How often the daemon reads the host's interface addresses again (a
/// change goes to the collector in a snapshot: its probe tries them).
const ADDRESS_CHECK_PERIOD: Duration = Duration::from_secs(30);

/// What the daemon needs, resolved from the config file and flags.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Collector base URLs, in the order they are tried (at least one; see
    /// `ship::Failover`).
    pub collectors: Vec<String>,
    /// The agent token.
    pub token: String,
    /// The file the token was read from, read again when the collector
    /// refuses the token (a rotated token is put there); `None` when it was
    /// given on the command line.
    pub token_file: Option<std::path::PathBuf>,
    /// Certificates to verify an https collector with.
    pub ca_file: Option<std::path::PathBuf>,
    /// The host name to report as.
    pub host: String,
    /// Scan interval.
    pub interval: Duration,
    /// Full fd re-walk period.
    pub rewalk_interval: Duration,
    /// Use kernel events where the kernel allows them.
    pub events: bool,
    /// With kernel events, the period of the safety full scan.
    pub safety_scan_interval: Duration,
    /// Spool directory.
    pub spool_dir: std::path::PathBuf,
    /// Spool bound in bytes.
    pub spool_max_bytes: u64,
    /// Tags to report.
    pub tags: std::collections::BTreeMap<String, String>,
    /// Read the firewall: each listener beyond loopback carries its answer.
    pub firewall: bool,
    /// Ship inbound peers per listener, naming this many of the busiest
    /// remotes (`peers = true`, `peers_top`); `None`: off.
    pub peers_top: Option<usize>,
}

/// A new session id: 16 random bytes in hex.
pub fn new_session() -> anyhow::Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("cannot read the system's random source: {e}"))?;
    Ok(hex::encode(b))
}

/// What wakes the daemon's loop.
enum Wake {
    /// SIGTERM or SIGINT.
    Stop(i32),
    /// Kernel events.
    Events(EventBatch),
}

/// Allocations from this size on get pages of their own from the kernel,
/// which go back to it when freed (glibc's default, before it adapts).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Keeps glibc malloc's mmap threshold at [`MMAP_THRESHOLD`]. By default
/// glibc raises it to the size of each large block freed (up to 32 MiB):
/// after the first snapshot's buffers or the kernel's parsed BTF (each a few
/// MiB) are freed, later buffers of that size come from the heap, and a
/// heap only shrinks from its top, so the daemon kept its start-up peak
/// resident for good. With the threshold fixed, a large buffer is returned
/// to the kernel when it is freed (one mmap and munmap per buffer, a few per
/// interval). And one malloc arena for every thread: glibc gives each thread
/// that allocates an arena of its own (the event reader's batches, the fd
/// walk's helpers), each keeping its pages; the daemon's threads seldom
/// allocate at once. Elsewhere (musl, other allocators) nothing is changed.
fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets a malloc parameter, and is called before
        // the daemon starts its threads.
        #[allow(unsafe_code)]
        let set = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
        if set != 1 {
            tracing::debug!("malloc did not take the mmap threshold; large buffers may stay resident");
        }
        // SAFETY: as above.
        #[allow(unsafe_code)]
        let set = unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
        if set != 1 {
            tracing::debug!("malloc did not take the arena count; each thread may keep an arena");
        }
    }
}

/// Runs until SIGTERM or SIGINT.
pub fn run(settings: Settings) -> anyhow::Result<()> {
    fix_mmap_threshold();
    let (tx, rx) = mpsc::channel();
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
        .map_err(|e| anyhow::anyhow!("cannot handle signals: {e}"))?;
    let stop_tx = tx.clone();
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let _ = stop_tx.send(Wake::Stop(signal));
        }
    });

    let spool = Spool::open(&settings.spool_dir, settings.spool_max_bytes)?;
    if spool.recovered_torn() > 0 {
        tracing::warn!(
            torn = spool.recovered_torn(),
            "spool: dropped a report cut short by a crash (it was never acknowledged as pushed)"
        );
    }
    for q in spool.quarantined() {
        tracing::error!(file = %q.file.display(), line = q.line, dropped = q.dropped, "{q}");
    }
    let scanner = Scanner::new(ScanOptions {
        rewalk_every: settings.rewalk_interval,
        ..ScanOptions::default()
    })?;
    // Attached before the first scan, so that nothing happens unseen between the two.
    let mut peer_ports = None;
    let detection = match kernel_events::start(settings.events, settings.peers_top.is_some()) {
        Ok(mut kernel) => {
            tracing::info!(
                detection = "events", safety_scan_interval = ?settings.safety_scan_interval,
                peers = settings.peers_top.is_some(),
                "detection: kernel events (TCP listen/close, UDP bind/release{}), with a full scan as a safety net",
                if settings.peers_top.is_some() { ", inbound connections for the peers" } else { "" }
            );
            peer_ports = kernel.take_peer_ports();
            kernel_events::spawn_reader(kernel, tx.clone(), Wake::Events);
            Detection::Events
        }
        Err(why) => {
            tracing::info!(detection = "polling", interval = ?settings.interval, "detection: polling every interval, because {why}");
            Detection::Polling
        }
    };
    let session = new_session()?;
    let mut facts = crate::facts::host_facts(settings.interval, &settings.tags);
    facts.detection = Some(detection.as_str().to_owned());
    let mut d = Daemon {
        firewall: settings.firewall.then(Watch::new),
        observer: Observer::new(session.clone(), facts),
        shipper: Shipper::several(&settings.collectors, &settings.token, settings.ca_file.as_deref())?,
        backoff: Backoff::new(BACKOFF_MIN, BACKOFF_MAX),
        series: Series::default(),
        peers_not_counted: Vec::new(),
        book: Book::default(),
        peer_ports,
        next_address_check: Instant::now() + ADDRESS_CHECK_PERIOD,
        scanner,
        spool,
        settings,
    };
    tracing::info!(
        host = %d.settings.host, collector = %d.shipper.collector(),
        collectors = %d.settings.collectors.join(" "), session = %session,
        interval = ?d.settings.interval, spooled = d.spool.len(), peers = d.settings.peers_top.is_some(),
        "agent started"
    );
    match detection {
        Detection::Polling => d.poll(&rx),
        Detection::Events => d.follow_events(&rx),
    }
}

/// The daemon's state between wake-ups.
struct Daemon {
    settings: Settings,
    scanner: Scanner,
    /// The firewall's answers, unless the config turned them off.
    firewall: Option<Watch>,
    observer: Observer,
    spool: Spool,
    shipper: Shipper,
    backoff: Backoff,
    /// Peer summaries shipped and waiting (used when `settings.peers_top` is set).
    series: Series,
    /// The namespaces whose peers the last count could not read, and why (logged when they change).
    peers_not_counted: Vec<(u64, String)>,
    /// With kernel events and peers: the open inbound connections, from the
    /// connections' events, counted instead of a dump every interval.
    book: Book,
    /// With kernel events and peers: the program's table of the ports whose
    /// connections it tells.
    peer_ports: Option<PeerPorts>,
    /// When the host's interface addresses are read again.
    next_address_check: Instant,
}

/// Counters of the event stream, logged as they change.
#[derive(Debug, Default)]
struct EventCounts {
    /// Events lost so far (ring buffer overflow), as the program counts them.
    lost: u64,
    /// Records that could not be read.
    unreadable: u64,
    /// Listeners full scans found that events had not said, summed.
    disagreements: u64,
    /// Events applied.
    applied: u64,
    /// Connection events lost so far, as the program counts them.
    peers_lost: u64,
    /// Connections the peers' dumps found that events had not said (both
    /// ways), summed.
    peers_drift: u64,
    /// A dump of the connections is due (connection events were lost).
    peers_resync_due: bool,
    /// Events dated before this (CLOCK_MONOTONIC ns) have all been taken.
    told_until_ns: u64,
}

impl Daemon {
    /// Polling: a scan every interval.
    fn poll(&mut self, rx: &mpsc::Receiver<Wake>) -> anyhow::Result<()> {
        let mut next_scan = Instant::now();
        loop {
            if Instant::now() >= next_scan {
                next_scan += self.settings.interval;
                if next_scan < Instant::now() {
                    next_scan = Instant::now() + self.settings.interval;
                }
                self.check_addresses();
                let index = observe(
                    &mut self.scanner,
                    self.firewall.as_mut(),
                    &mut self.observer,
                    &mut self.spool,
                    self.settings.peers_top.is_some(),
                );
                if let Some(index) = index {
                    self.sample_peers(&index);
                }
                self.ship_if_ready();
            }
            let wait = next_scan.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Wake::Stop(signal)) => return self.stop(signal),
                Ok(Wake::Events(_)) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => anyhow::bail!("the signal thread ended"),
            }
        }
    }

    /// Kernel events, a heartbeat every interval, a full scan every
    /// safety_scan_interval and whenever events were lost.
    fn follow_events(&mut self, rx: &mpsc::Receiver<Wake>) -> anyhow::Result<()> {
        let mut tracked = Tracked::default();
        let mut counts = EventCounts::default();
        let mut last_at = Timestamp::now();
        let mut first = true;
        let (stop, rescan) = self.full_scan(rx, &mut tracked, &mut counts, &mut last_at, &mut first);
        if let Some(signal) = stop {
            return self.stop(signal);
        }
        self.ship_events(&tracked, &mut last_at);
        let mut next_heartbeat = Instant::now() + self.settings.interval;
        let mut next_full = match rescan {
            true => Instant::now(),
            false => Instant::now() + self.settings.safety_scan_interval,
        };
        let mut ship_at: Option<Instant> = None;
        let mut confirm_at: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let deadline = [Some(next_heartbeat), Some(next_full), ship_at, confirm_at]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(next_heartbeat);
            let mut full_due = false;
            match rx.recv_timeout(deadline.saturating_duration_since(now)) {
                Ok(Wake::Stop(signal)) => return self.stop(signal),
                Ok(Wake::Events(batch)) => {
                    full_due |= self.take_batch(batch, &mut tracked, &mut counts, &mut last_at);
                    if tracked.has_suspects() && confirm_at.is_none() {
                        confirm_at = Some(Instant::now() + RELEASE_CONFIRM_DELAY);
                    }
                    if !self.spool.is_empty() && ship_at.is_none() {
                        ship_at = Some(Instant::now() + EVENT_SHIP_DELAY);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => anyhow::bail!("the signal thread ended"),
            }
            let now = Instant::now();
            if confirm_at.is_some_and(|t| now >= t) {
                confirm_at = None;
                self.confirm_releases(&mut tracked, &mut last_at);
                ship_at = ship_at.or(Some(now));
            }
            if full_due || now >= next_full {
                let (stop, rescan) = self.full_scan(rx, &mut tracked, &mut counts, &mut last_at, &mut first);
                if let Some(signal) = stop {
                    return self.stop(signal);
                }
                next_full = match rescan {
                    true => Instant::now(),
                    false => Instant::now() + self.settings.safety_scan_interval,
                };
                ship_at = Some(now);
            }
            if now >= next_heartbeat {
                self.check_addresses();
                self.firewall_changes(&mut tracked, &mut last_at);
                if self.settings.peers_top.is_some() {
                    let index = peers::Listeners::of_listeners(tracked.listeners());
                    if std::mem::take(&mut counts.peers_resync_due) {
                        self.resync_peers(&index);
                    }
                    self.settle_peers(&mut counts);
                    self.sample_peers_from_book(&index);
                }
            }
            if ship_at.is_some_and(|t| now >= t) || now >= next_heartbeat {
                ship_at = None;
                next_heartbeat = Instant::now() + self.settings.interval;
                self.ship_events(&tracked, &mut last_at);
            }
        }
    }

    /// Applies a batch of events, each reported at its own time (never
    /// earlier than the report before it). Returns whether a full scan is
    /// due because events were lost.
    fn take_batch(
        &mut self,
        batch: EventBatch,
        tracked: &mut Tracked,
        counts: &mut EventCounts,
        last_at: &mut Timestamp,
    ) -> bool {
        let mut reports = Vec::new();
        for event in &batch.events {
            match event.kind.is_connection() {
                true => self.book_connection(event),
                false => {
                    self.apply(event, tracked, last_at, &mut reports);
                }
            }
        }
        spool_reports(reports, &mut self.observer, &mut self.spool);
        counts.applied += batch.events.len() as u64;
        counts.told_until_ns = counts.told_until_ns.max(batch.drained_ns);
        if batch.unreadable > 0 {
            counts.unreadable += batch.unreadable;
            tracing::error!(
                unreadable = batch.unreadable,
                total = counts.unreadable,
                "kernel event records this agent cannot read; running a full scan"
            );
        }
        let peers_lost = batch.peers_lost_total.saturating_sub(counts.peers_lost);
        if peers_lost > 0 {
            counts.peers_lost = batch.peers_lost_total;
            counts.peers_resync_due = true;
            tracing::warn!(
                lost = peers_lost,
                total = counts.peers_lost,
                "kernel events of connections lost (the ring buffer or the table of ports was full); \
                 dumping the connections at the next interval to resync the peers"
            );
        }
        let lost = batch.lost_total.saturating_sub(counts.lost);
        if lost > 0 {
            counts.lost = batch.lost_total;
            tracing::warn!(
                lost,
                total = counts.lost,
                "kernel events lost (the ring buffer was full); running a full scan to resync"
            );
        }
        lost > 0 || batch.unreadable > 0
    }

    /// Applies one event; the report it makes, if any, goes to `reports`.
    fn apply(
        &mut self,
        event: &kernel_events::Event,
        tracked: &mut Tracked,
        last_at: &mut Timestamp,
        reports: &mut Vec<portwatch_common::wire::Report>,
    ) {
        let (scanner, firewall) = (&mut self.scanner, &mut self.firewall);
        let changed = tracked.apply(event, |e| {
            let owner = scanner.process(e.tgid);
            let user = scanner.user(e.uid);
            let mut listener = state::listener(e, owner, user)?;
            listener.firewall = firewall
                .as_mut()
                .and_then(|w| w.firewall_of_new(scanner, &listener, e.tgid));
            Some(listener)
        });
        if !changed.is_empty() {
            let at = kernel_events::wall_time(event.ktime_ns).max(*last_at);
            *last_at = at;
            // The change alone, not a copy of every listener and a diff:
            // a burst of events at a host of thousands of listeners.
            reports.extend(self.observer.observe_change(changed, at));
        }
    }

    /// Closes the UDP listeners whose release a hint announced and a socket
    /// dump now confirms, each at its hint's time.
    fn confirm_releases(&mut self, tracked: &mut Tracked, last_at: &mut Timestamp) {
        let present = match self.scanner.listening_now() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot dump sockets to confirm UDP releases; the next full scan will");
                return;
            }
        };
        for (_, ktime_ns) in tracked.confirm(|k| present.contains(k)) {
            let at = kernel_events::wall_time(ktime_ns).max(*last_at);
            *last_at = at;
            let reports = self.observer.observe(tracked.snapshot(), at);
            spool_reports(reports, &mut self.observer, &mut self.spool);
        }
    }

    /// A full scan: its result replaces the event-made table, and what the
    /// two disagree on is counted and logged. Events that arrive while it
    /// runs are applied after it. The `first` scan (the table is empty) only
    /// sets the table. Returns a stop signal that came meanwhile, and
    /// whether another scan is due (events were lost while it ran).
    fn full_scan(
        &mut self,
        rx: &mpsc::Receiver<Wake>,
        tracked: &mut Tracked,
        counts: &mut EventCounts,
        last_at: &mut Timestamp,
        first: &mut bool,
    ) -> (Option<i32>, bool) {
        let scan_began_ns = kernel_events::monotonic_ns();
        let scan = match self.scanner.scan() {
            Ok(scan) => scan,
            Err(e) => {
                tracing::error!(error = %e, "full scan failed; retrying at the next safety scan");
                return (None, false);
            }
        };
        if let Some(warning) = scan.partial_warning() {
            tracing::warn!("{warning}");
        }
        let mut later = Vec::new();
        let mut stop = None;
        while let Ok(wake) = rx.try_recv() {
            match wake {
                Wake::Stop(signal) => stop = Some(signal),
                Wake::Events(batch) => later.push(batch),
            }
        }
        let touched: std::collections::HashSet<Key> = later
            .iter()
            .flat_map(|b| b.events.iter())
            .filter(|e| !e.kind.is_connection())
            .map(|e| (e.netns, e.inode))
            .collect();
        let mut snapshot = Snapshot::from_sockets(&scan.sockets);
        drop(scan);
        if let Some(watch) = &mut self.firewall {
            watch.refresh(&self.scanner, &Watch::namespaces_of(snapshot.listeners()));
            snapshot = watch.annotate(snapshot);
        }
        let mut disagreement = tracked.reset(snapshot.listeners(), &touched);
        if std::mem::take(first) {
            disagreement = state::Disagreement::default();
        }
        counts.disagreements += disagreement.total() as u64;
        if disagreement.total() > 0 {
            tracing::warn!(
                missed_opens = disagreement.missed_opens,
                missed_closes = disagreement.missed_closes,
                total = counts.disagreements,
                events = counts.applied,
                "the full scan disagrees with kernel events; taking the scan's listeners"
            );
        } else {
            tracing::debug!(
                listeners = tracked.len(),
                events = counts.applied,
                "full scan agrees with kernel events"
            );
        }
        let at = Timestamp::now().max(*last_at);
        *last_at = at;
        let reports = self.observer.observe(tracked.snapshot(), at);
        spool_reports(reports, &mut self.observer, &mut self.spool);
        // A dump of the connections with it, unless the last one is still
        // being settled (a safety scan more often than events settle) and no
        // events were lost since.
        if self.settings.peers_top.is_some() {
            let index = peers::Listeners::of_listeners(tracked.listeners());
            self.sync_peer_ports(&index, scan_began_ns);
            if counts.peers_resync_due || !self.book.settling() {
                self.resync_peers(&index);
                counts.peers_resync_due = false;
            }
        }
        // Events lost that a batch drained during the scan tells of may have
        // been lost after the scan read the sockets (a burst going on): only
        // another scan covers them. (Taken as covered by this one, a
        // listener whose close was lost then stayed open until the next
        // safety scan.)
        let mut rescan = false;
        for batch in later {
            rescan |= self.take_batch(batch, tracked, counts, last_at);
        }
        (stop, rescan)
    }

    /// With kernel events: when a namespace's ruleset changed, the
    /// listeners whose answer it changed, reported now.
    fn firewall_changes(&mut self, tracked: &mut Tracked, last_at: &mut Timestamp) {
        let Some(watch) = &mut self.firewall else {
            return;
        };
        if !watch.refresh(&self.scanner, &Watch::namespaces_of(tracked.listeners())) {
            return;
        }
        tracked.update(|l| l.firewall = watch.firewall_of(l));
        let at = Timestamp::now().max(*last_at);
        *last_at = at;
        let reports = self.observer.observe(tracked.snapshot(), at);
        spool_reports(reports, &mut self.observer, &mut self.spool);
    }

    /// With kernel events, ships; and when the collector asked for a
    /// snapshot that nothing spooled gives (a collector that does not know
    /// this session, after a switch; a gap), makes it at once from the
    /// event-made table and ships it (no scan comes every interval to make
    /// it).
    fn ship_events(&mut self, tracked: &Tracked, last_at: &mut Timestamp) {
        self.ship_if_ready();
        if self.observer.resync_due() {
            let at = Timestamp::now().max(*last_at);
            *last_at = at;
            let reports = self.observer.observe(tracked.snapshot(), at);
            spool_reports(reports, &mut self.observer, &mut self.spool);
            self.ship_if_ready();
        }
    }

    /// Counts the established connections of the TCP listeners of `index`
    /// and queues the summaries due (see `peers::series`).
    fn sample_peers(&mut self, index: &peers::Listeners) {
        let Some(top) = self.settings.peers_top else {
            return;
        };
        let counted = peers::count(&self.scanner, index, top);
        self.queue_peers(counted);
    }

    /// Queues the summaries of `counted` that are due; says which
    /// namespaces were not counted when that changes, not every interval.
    fn queue_peers(&mut self, counted: peers::Peers) {
        if counted.not_counted != self.peers_not_counted {
            for (netns, reason) in &counted.not_counted {
                tracing::warn!(netns, %reason, "peers not counted in a network namespace; its listeners ship none until it is");
            }
            self.peers_not_counted = counted.not_counted.clone();
        }
        let queued = self.series.observe(Timestamp::now(), counted.summaries());
        tracing::debug!(
            queued,
            pending = self.series.pending(),
            dropped = self.series.dropped(),
            "peer summaries"
        );
    }

    /// Every [`ADDRESS_CHECK_PERIOD`], reads the host's interface addresses
    /// again; when they changed, the next report is a snapshot with them.
    fn check_addresses(&mut self) {
        let now = Instant::now();
        if now < self.next_address_check {
            return;
        }
        self.next_address_check = now + ADDRESS_CHECK_PERIOD;
        match crate::facts::read_addresses() {
            Ok(addresses) => {
                let shown = format!("{addresses:?}");
                if self.observer.refresh_addresses(addresses) {
                    tracing::info!(addresses = %shown, "the host's addresses changed; a snapshot reports them");
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot read the host's interface addresses; keeping the last ones"),
        }
    }

    /// With kernel events: takes a connection's event into the book.
    fn book_connection(&mut self, event: &kernel_events::Event) {
        let connection = peers::book::Connection {
            local_addr: event.addr,
            local_port: event.port,
            remote_addr: event.remote_addr,
            remote_port: event.remote_port,
        };
        match event.kind {
            kernel_events::Kind::TcpAccepted => self.book.accepted(event.netns, connection, event.ktime_ns),
            _ => self.book.ended(event.netns, &connection, event.ktime_ns),
        }
    }

    /// With kernel events, after a full scan begun at `scanned_at_ns` that
    /// found the listeners of `index`: brings the program's table of ports
    /// whose connections it tells to them (those open before it loaded
    /// among them), before their connections are dumped.
    fn sync_peer_ports(&mut self, index: &peers::Listeners, scanned_at_ns: u64) {
        let Some(ports) = &mut self.peer_ports else {
            return;
        };
        match ports.sync(&index.ports(), scanned_at_ns) {
            Ok((added, removed)) => tracing::debug!(added, removed, "kernel table of ports with peers"),
            Err(e) => {
                tracing::warn!(error = %e, "the peers of listeners open before the agent started may be counted late")
            }
        }
    }

    /// With kernel events: dumps the connections of the listeners of
    /// `index` and takes the dump as the book's truth.
    fn resync_peers(&mut self, index: &peers::Listeners) {
        let began = kernel_events::monotonic_ns();
        let dumped = peers::dump(&self.scanner, index);
        self.book.reset((began, kernel_events::monotonic_ns()), index, dumped);
        tracing::debug!(
            connections = self.book.len(),
            "peers: the connections dumped are taken as the truth"
        );
    }

    /// With kernel events: says how the last dumps of connections differed
    /// from what events told (they should not), once the events of their
    /// time are in, adding it to the count.
    fn settle_peers(&mut self, counts: &mut EventCounts) {
        // The reader drains the ring buffer at least once a second, and
        // sends only what it found: with nothing sent for this long, nothing
        // of a dump's time is still to come.
        const QUIET_NS: u64 = 3_000_000_000;
        let told_until = counts
            .told_until_ns
            .max(kernel_events::monotonic_ns().saturating_sub(QUIET_NS));
        let Some(differed) = self.book.settle(told_until) else {
            return;
        };
        if differed.total() == 0 {
            tracing::debug!(
                connections = self.book.len(),
                "peers: the dump of connections agreed with kernel events"
            );
        } else {
            counts.peers_drift += differed.total() as u64;
            tracing::warn!(
                missed_accepts = differed.missed_accepts,
                missed_ends = differed.missed_ends,
                total = counts.peers_drift,
                connections = self.book.len(),
                "the dump of connections disagreed with kernel events; the dump's were taken"
            );
        }
    }

    /// With kernel events: the peers of the listeners of `index` from the
    /// book, queued as [`Self::sample_peers`] does a dump's.
    fn sample_peers_from_book(&mut self, index: &peers::Listeners) {
        let Some(top) = self.settings.peers_top else {
            return;
        };
        let counted = self.book.count(index, top);
        self.queue_peers(counted);
    }

    fn ship_if_ready(&mut self) {
        if self.backoff.ready() {
            ship(
                &self.settings,
                &mut self.shipper,
                &mut self.spool,
                &mut self.observer,
                &mut self.series,
                &mut self.backoff,
            );
        }
    }

    /// Ships what is spooled one last time, for a stop signal.
    fn stop(&mut self, signal: i32) -> anyhow::Result<()> {
        tracing::info!(signal, "stopping: shipping what is spooled");
        ship(
            &self.settings,
            &mut self.shipper,
            &mut self.spool,
            &mut self.observer,
            &mut self.series,
            &mut Backoff::new(BACKOFF_MIN, BACKOFF_MAX),
        );
        tracing::info!(spooled = self.spool.len(), collector = %self.shipper.collector(),
            peers_unsent = self.series.pending(), "agent stopped");
        Ok(())
    }
}

/// One scan, with the firewall's answers when `firewall` is there: the
/// report it makes, if any, goes to the spool. With `peers`, returns the
/// scan's TCP listeners, indexed for counting their peers.
fn observe(
    scanner: &mut Scanner,
    firewall: Option<&mut Watch>,
    observer: &mut Observer,
    spool: &mut Spool,
    peers: bool,
) -> Option<peers::Listeners> {
    let scan = match scanner.scan() {
        Ok(scan) => scan,
        Err(e) => {
            tracing::error!(error = %e, "scan failed; retrying at the next interval");
            return None;
        }
    };
    let index = peers.then(|| peers::Listeners::of(&scan.sockets));
    if let Some(warning) = scan.partial_warning() {
        tracing::warn!("{warning}");
    }
    let at = Timestamp::now();
    let mut snapshot = Snapshot::from_sockets(&scan.sockets);
    // Not kept while the reports are made and spooled: a copy of every
    // socket is the larger part of the daemon's peak at a big host.
    drop(scan);
    if let Some(watch) = firewall {
        watch.refresh(scanner, &Watch::namespaces_of(snapshot.listeners()));
        snapshot = watch.annotate(snapshot);
    }
    let reports = observer.observe(snapshot, at);
    spool_reports(reports, observer, spool);
    index
}

/// Puts reports in the spool, in order; when one cannot be, counts the rest
/// as dropped and makes the next report a snapshot.
fn spool_reports(reports: Vec<portwatch_common::wire::Report>, observer: &mut Observer, spool: &mut Spool) {
    let bytes: u64 = reports.iter().map(portwatch_common::wire::json_len).sum();
    if bytes > spool.max_bytes() / 2 {
        // The spool's drop policy would delete the first parts of this snapshot
        // to make room for its last ones while the collector is away.
        tracing::error!(report_bytes = bytes, spool_max_bytes = spool.max_bytes(),
            "this scan's report takes more than half the spool; raise spool_max_mb (agent.toml) so an outage cannot cut it");
    }
    let count = reports.len();
    let items: Vec<SpooledReport> = reports
        .into_iter()
        .map(|report| SpooledReport {
            session: observer.session().to_owned(),
            report,
        })
        .collect();
    if let Err((pushed, e)) = spool.push_all(&items) {
        // These changes are lost (counted as dropped); a snapshot will restore history's state.
        tracing::error!(error = %e, seq = items.get(pushed).map(|i| i.report.seq),
            "cannot spool a report; counting it as dropped, and the next report will be a full snapshot");
        spool.count_lost((count - pushed) as u64);
        observer.resync();
    }
}

/// Sends the spool, oldest first, one session's run of reports per batch
/// (bounded in bytes by the collector's limits, see `ship`), until it is
/// empty or a send fails; with nothing spooled, a heartbeat. A batch the
/// collector finds too large is sent again in halves; reports it refuses
/// for good are counted as dropped (reported in the next batch) and
/// replaced by a snapshot. Peer summaries waiting go with the first batch
/// to a collector that speaks version 3 (see `peers::series`).
fn ship(
    settings: &Settings,
    shipper: &mut Shipper,
    spool: &mut Spool,
    observer: &mut Observer,
    series: &mut Series,
    backoff: &mut Backoff,
) {
    // Lowered when the collector answers 413, for the rest of this call.
    let mut cap = BATCH_REPORTS;
    let mut resyncs = 0;
    loop {
        let limits = shipper.limits();
        // What each pending report is, not the reports: the batch is encoded from the spool's lines.
        let pending = match spool.pending_keys(cap.min(usize::try_from(limits.max_reports).unwrap_or(cap))) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the spool");
                return;
            }
        };
        let session = pending
            .first()
            .map_or_else(|| observer.session().to_owned(), |p| p.session.clone());
        let run: Vec<_> = pending.into_iter().take_while(|p| p.session == session).collect();
        let dropped = spool.dropped();
        let sizes: Vec<u64> = run.iter().map(|p| p.json_bytes).collect();
        let mut count = ship::plan(&sizes, &limits, cap);
        let (peers, peers_dropped) = series.for_batch(limits.max_version);
        let peers_sent = peers.len();
        let (sent, encoded) = loop {
            let sent = &run[..count.min(run.len())];
            let mut version = Batch::version_for(sent.iter().any(|p| p.part));
            if peers_sent > 0 || peers_dropped > 0 {
                version = version.max(portwatch_common::wire::PEERS_VERSION);
            }
            let head = Batch {
                version,
                host: settings.host.clone(),
                session: session.clone(),
                dropped,
                peers: peers.clone(),
                peers_dropped,
                alive_at: Some(Timestamp::now()),
                reports: Vec::new(),
            };
            let encoded = ship::BatchBody::new(&head).and_then(|mut body| {
                let read = spool.pending_json(sent.len(), |json| body.report(json));
                match read {
                    Ok(n) if n == sent.len() => body.finish().map(Some),
                    // The spool changed under the agent (it is the only writer): plan again next time.
                    Ok(_) => Ok(None),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read the spool");
                        Ok(None)
                    }
                }
            });
            match encoded {
                Ok(Some(encoded)) if count > 1 && ship::oversized(&encoded, &limits) => count /= 2,
                Ok(Some(encoded)) => break (sent, encoded),
                Ok(None) => return,
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode a batch");
                    return;
                }
            }
        };
        let last = sent.last().map_or(0, |p| p.seq);
        match shipper.send_encoded(&encoded) {
            Ok(ack) => {
                backoff.succeeded();
                series.acked(peers_sent, peers_dropped, shipper.limits().max_version);
                let acked = match spool
                    .ack_through(&session, ack.acked)
                    .and_then(|n| spool.forget_dropped(dropped).map(|()| n))
                {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot record the acknowledgement in the spool; reports will be sent again");
                        return;
                    }
                };
                if ack.resync {
                    // What follows the acknowledged reports up to the session's next
                    // snapshot cannot be placed (a gap): it is dropped, counted.
                    let snapshot_pending = match skip_to_snapshot(spool, &session) {
                        Ok((skipped, pending)) => {
                            if skipped > 0 {
                                tracing::warn!(skipped, session = %session, acked = ack.acked, collector = %shipper.collector(),
                                    "dropped reports the collector cannot place after a gap (counted as dropped); \
                                     a snapshot restores the history's state");
                            } else {
                                tracing::info!(acked = ack.acked, collector = %shipper.collector(), "collector asked for a snapshot");
                            }
                            pending
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "cannot discard the reports the collector cannot place");
                            return;
                        }
                    };
                    if !snapshot_pending {
                        observer.resync();
                        return;
                    }
                    resyncs += 1;
                    if resyncs > MAX_RESYNCS_PER_SHIP {
                        return;
                    }
                    continue;
                }
                if sent.is_empty() || acked < sent.len() || spool.is_empty() {
                    return;
                }
            }
            Err(ShipError::TooLarge(message)) if sent.len() > 1 => {
                cap = sent.len() / 2;
                tracing::warn!(%message, reports = sent.len(), bytes = encoded.body.len(),
                    "collector refused a batch as too large; sending it in halves");
            }
            Err(e @ (ShipError::TooLarge(_) | ShipError::Rejected(_))) => {
                // Sending it again cannot succeed: count it as dropped, and let a snapshot restore history.
                tracing::error!(error = %e, reports = sent.len(), peers = peers_sent,
                    "the collector refuses these reports for good; counting them as dropped and sending a snapshot");
                series.refused(peers_sent);
                if let Err(e) = spool.discard_through(&session, last) {
                    tracing::error!(error = %e, "cannot drop the refused reports");
                }
                observer.resync();
                return;
            }
            Err(e @ ShipError::Unauthorized(_)) => {
                if reread_token(settings, shipper) {
                    continue;
                }
                let delay = backoff.failed(BACKOFF_MAX);
                tracing::error!(error = %e, retry_in = ?delay, spooled = spool.len(),
                    "fix the agent token (portwatch-collector token create --host {}); still observing and spooling", settings.host);
                return;
            }
            Err(ShipError::Unavailable {
                message,
                retry_after: Some(wait),
                ..
            }) => {
                // Back-pressure from a busy collector, not a failure: wait as asked, no longer.
                backoff.wait(wait);
                tracing::info!(%message, retry_in = ?wait, spooled = spool.len(),
                    "collector busy; sending again when it asked; still observing and spooling");
                return;
            }
            Err(e @ ShipError::Unavailable { .. }) => {
                let delay = backoff.failed(Duration::ZERO);
                tracing::warn!(error = %e, retry_in = ?delay, spooled = spool.len(), "cannot ship; still observing and spooling");
                return;
            }
        }
    }
}

/// Reads the token file again after the collector refused the token: `true`
/// when it holds another token now (a rotation), which the shipper then uses.
fn reread_token(settings: &Settings, shipper: &mut Shipper) -> bool {
    let Some(file) = &settings.token_file else {
        return false;
    };
    match portwatch_common::client::read_token_file(file) {
        Ok(read) if read.secret != shipper.token() => {
            if let Some(warning) = &read.warning {
                tracing::warn!(file = %file.display(), "{warning}");
            }
            tracing::info!(file = %file.display(), "the collector refused the token; using the new one in the token file");
            shipper.set_token(&read.secret);
            true
        }
        Ok(_) => false,
        Err(e) => {
            tracing::error!(error = %e, "the collector refused the token, and the token file cannot be read again");
            false
        }
    }
}

/// After the collector asked for a snapshot of `session`, drops (and
/// counts as dropped) that session's leading pending reports that precede
/// its next snapshot: after a gap the collector can place none of them.
/// Returns how many, and whether a snapshot of the session is still pending
/// (if not, the observer must make one).
fn skip_to_snapshot(spool: &mut Spool, session: &str) -> Result<(usize, bool), SpoolError> {
    let mut skipped = 0;
    loop {
        let pending = spool.pending_keys(BATCH_REPORTS)?;
        let mut last = None;
        let mut ended = pending.len() < BATCH_REPORTS;
        let mut found = false;
        for p in &pending {
            if p.session != session {
                ended = true;
                break;
            }
            if p.starts_snapshot {
                found = true;
                break;
            }
            last = Some(p.seq);
        }
        let Some(seq) = last else {
            return Ok((skipped, found));
        };
        skipped += spool.discard_through(session, seq)?;
        if found || ended {
            return Ok((skipped, found));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portwatch_common::wire::ReportBody;

    #[test]
    fn sessions_are_random_hex() {
        let a = new_session().unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, new_session().unwrap());
    }

    fn item(session: &str, seq: u64, snapshot: bool) -> SpooledReport {
        let body = if snapshot {
            ReportBody::SnapshotPart {
                part: 0,
                parts: 2,
                facts: None,
                listeners: Vec::new(),
            }
        } else {
            ReportBody::Delta {
                opened: Vec::new(),
                closed: Vec::new(),
            }
        };
        SpooledReport {
            session: session.into(),
            report: portwatch_common::wire::Report {
                seq,
                observed_at: Timestamp::from_second(1_700_000_000).unwrap(),
                body,
            },
        }
    }

    fn pending(spool: &Spool) -> Vec<(String, u64)> {
        let all = spool.pending(usize::MAX).unwrap();
        all.into_iter().map(|p| (p.session, p.report.seq)).collect()
    }

    #[test]
    fn after_a_gap_the_reports_before_the_next_snapshot_are_dropped_and_counted() {
        let dir = std::env::temp_dir().join(format!("pw-daemon-gap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut spool = Spool::open(&dir, 1 << 20).unwrap();
        for (session, seq, snapshot) in [
            ("a", 8, false),
            ("a", 9, false),
            ("a", 10, false),
            ("a", 11, true),
            ("a", 12, false),
            ("b", 1, true),
        ] {
            spool.push(&item(session, seq, snapshot)).unwrap();
        }
        assert_eq!(skip_to_snapshot(&mut spool, "a").unwrap(), (3, true));
        assert_eq!(spool.dropped(), 3);
        assert_eq!(pending(&spool), [("a".into(), 11), ("a".into(), 12), ("b".into(), 1)]);
        // At a snapshot already: nothing to drop.
        assert_eq!(skip_to_snapshot(&mut spool, "a").unwrap(), (0, true));
        // No later snapshot of the session: all of it goes, and one must be made.
        spool.ack(1).unwrap();
        assert_eq!(skip_to_snapshot(&mut spool, "a").unwrap(), (1, false));
        assert_eq!((pending(&spool), spool.dropped()), (vec![("b".into(), 1)], 4));
        drop(spool);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
