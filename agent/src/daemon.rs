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

use std::sync::mpsc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use portwatch_common::client::Backoff;
use portwatch_common::wire::{Batch, PROTOCOL_VERSION};
use portwatch_common::Snapshot;

use crate::observe::Observer;
use crate::scan::{ScanOptions, Scanner};
use crate::ship::{ShipError, Shipper};
use crate::spool::{Spool, SpooledReport};

/// Most reports sent in one batch.
const BATCH_REPORTS: usize = 500;
/// First retry delay after a failure.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// What the daemon needs, resolved from the config file and flags.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Collector base URL.
    pub collector: String,
    /// The agent token.
    pub token: String,
    /// Certificates to verify an https collector with.
    pub ca_file: Option<std::path::PathBuf>,
    /// The host name to report as.
    pub host: String,
    /// Scan interval.
    pub interval: Duration,
    /// Full fd re-walk period.
    pub rewalk_interval: Duration,
    /// Spool directory.
    pub spool_dir: std::path::PathBuf,
    /// Spool bound in bytes.
    pub spool_max_bytes: u64,
    /// Tags to report.
    pub tags: std::collections::BTreeMap<String, String>,
}

/// A new session id: 16 random bytes in hex.
pub fn new_session() -> anyhow::Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("cannot read the system's random source: {e}"))?;
    Ok(hex::encode(b))
}

/// Runs until SIGTERM or SIGINT.
pub fn run(settings: Settings) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = mpsc::channel();
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
        .map_err(|e| anyhow::anyhow!("cannot handle signals: {e}"))?;
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let _ = stop_tx.send(signal);
        }
    });

    let mut spool = Spool::open(&settings.spool_dir, settings.spool_max_bytes)?;
    if spool.recovered_torn() > 0 {
        tracing::warn!(
            torn = spool.recovered_torn(),
            "spool: dropped a report cut short by a crash (it was never acknowledged as pushed)"
        );
    }
    for q in spool.quarantined() {
        tracing::error!(file = %q.file.display(), line = q.line, dropped = q.dropped, "{q}");
    }
    let mut scanner = Scanner::new(ScanOptions {
        rewalk_every: settings.rewalk_interval,
        ..ScanOptions::default()
    })?;
    let session = new_session()?;
    let facts = crate::facts::host_facts(settings.interval, &settings.tags);
    let mut observer = Observer::new(session.clone(), facts);
    let shipper = Shipper::new(&settings.collector, &settings.token, settings.ca_file.as_deref())?;
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    tracing::info!(
        host = %settings.host, collector = %settings.collector, session = %session,
        interval = ?settings.interval, spooled = spool.len(), "agent started"
    );

    let mut next_scan = Instant::now();
    loop {
        if Instant::now() >= next_scan {
            next_scan += settings.interval;
            if next_scan < Instant::now() {
                next_scan = Instant::now() + settings.interval;
            }
            observe(&mut scanner, &mut observer, &mut spool);
            if backoff.ready() {
                ship(&settings, &shipper, &mut spool, &mut observer, &mut backoff);
            }
        }
        let wait = next_scan.saturating_duration_since(Instant::now());
        match stop_rx.recv_timeout(wait) {
            Ok(signal) => {
                tracing::info!(signal, "stopping: shipping what is spooled");
                ship(
                    &settings,
                    &shipper,
                    &mut spool,
                    &mut observer,
                    &mut Backoff::new(BACKOFF_MIN, BACKOFF_MAX),
                );
                tracing::info!(spooled = spool.len(), "agent stopped");
                return Ok(());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => anyhow::bail!("the signal thread ended"),
        }
    }
}

/// One scan: the report it makes, if any, goes to the spool.
fn observe(scanner: &mut Scanner, observer: &mut Observer, spool: &mut Spool) {
    let scan = match scanner.scan() {
        Ok(scan) => scan,
        Err(e) => {
            tracing::error!(error = %e, "scan failed; retrying at the next interval");
            return;
        }
    };
    if let Some(warning) = scan.partial_warning() {
        tracing::warn!("{warning}");
    }
    let at = Timestamp::now();
    let Some(report) = observer.observe(Snapshot::from_sockets(&scan.sockets), at) else {
        return;
    };
    let item = SpooledReport {
        session: observer.session().to_owned(),
        report,
    };
    if let Err(e) = spool.push(&item) {
        // The change is lost from the spool; a snapshot will restore history's state.
        tracing::error!(error = %e, seq = item.report.seq, "cannot spool a report; the next report will be a full snapshot");
        observer.resync();
    }
}

/// Sends the spool, oldest first, one session's run of reports per batch,
/// until it is empty or a send fails; with nothing spooled, a heartbeat.
fn ship(settings: &Settings, shipper: &Shipper, spool: &mut Spool, observer: &mut Observer, backoff: &mut Backoff) {
    loop {
        let pending = match spool.pending(BATCH_REPORTS) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the spool");
                return;
            }
        };
        let session = pending
            .first()
            .map_or_else(|| observer.session().to_owned(), |p| p.session.clone());
        let reports: Vec<_> = pending
            .iter()
            .take_while(|p| p.session == session)
            .map(|p| p.report.clone())
            .collect();
        let dropped = spool.dropped();
        let batch = Batch {
            version: PROTOCOL_VERSION,
            host: settings.host.clone(),
            session: session.clone(),
            dropped,
            alive_at: Some(Timestamp::now()),
            reports,
        };
        match shipper.send(&batch) {
            Ok(ack) => {
                backoff.succeeded();
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
                    if session == observer.session() {
                        tracing::info!(acked = ack.acked, "collector asked for a snapshot");
                    } else {
                        // An earlier run's reports the collector cannot use: the current run's snapshot supersedes them.
                        match spool.ack_through(&session, u64::MAX) {
                            Ok(stale) => tracing::warn!(stale, session = %session,
                                "discarded reports of an earlier run the collector cannot place"),
                            Err(e) => {
                                tracing::error!(error = %e, "cannot discard stale reports");
                                return;
                            }
                        }
                    }
                    observer.resync();
                    return;
                }
                if batch.reports.is_empty() || acked < batch.reports.len() || spool.is_empty() {
                    return;
                }
            }
            Err(ShipError::Rejected(message)) => {
                // Sending it again cannot succeed: drop it, count it, and let a snapshot restore history.
                tracing::error!(%message, reports = batch.reports.len(), "collector rejected a batch; dropping it and sending a snapshot");
                let last = batch.reports.last().map_or(0, |r| r.seq);
                if let Err(e) = spool.ack_through(&session, last) {
                    tracing::error!(error = %e, "cannot drop the rejected batch");
                }
                observer.resync();
                return;
            }
            Err(e @ ShipError::Unauthorized(_)) => {
                let delay = backoff.failed(BACKOFF_MAX);
                tracing::error!(error = %e, retry_in = ?delay, spooled = spool.len(),
                    "fix the agent token (portwatch-collector token create --host {}); still observing and spooling", settings.host);
                return;
            }
            Err(e) => {
                let delay = backoff.failed(Duration::ZERO);
                tracing::warn!(error = %e, retry_in = ?delay, spooled = spool.len(), "cannot ship; still observing and spooling");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_random_hex() {
        let a = new_session().unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, new_session().unwrap());
    }
}
