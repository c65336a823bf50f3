//! The probe's I/O: a TCP connect to each target, paced and bounded, each
//! answered as it went. A connection that is accepted is closed at once;
//! nothing is sent on it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::MissedTickBehavior;

use super::Pace;

/// What a connect to one target answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "error", rename_all = "kebab-case")]
pub enum Outcome {
    /// The connection was accepted (and closed at once).
    Connected,
    /// Refused (a RST: nothing listens there, or a firewall rejects it).
    Refused,
    /// No answer within the timeout (a firewall dropping it, or no route).
    TimedOut,
    /// Any other error (no route to the host, network unreachable, ...).
    Failed(String),
}

impl Outcome {
    /// Whether the target is reachable.
    pub fn reached(&self) -> bool {
        matches!(self, Outcome::Connected)
    }
}

/// One target's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answer {
    /// Where the probe connected.
    pub target: SocketAddr,
    /// What it answered.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// How long it took, in milliseconds.
    pub took_ms: u64,
}

impl Answer {
    /// The answer in a few words (`10.0.0.5:22 connected`, `10.0.0.5:5432 timed out after 2s`).
    pub fn describe(&self, timeout: Duration) -> String {
        match &self.outcome {
            Outcome::Connected => format!("{} connected", self.target),
            Outcome::Refused => format!("{} refused", self.target),
            Outcome::TimedOut => format!(
                "{} timed out after {}",
                self.target,
                humantime::format_duration(timeout)
            ),
            Outcome::Failed(e) => format!("{} failed: {e}", self.target),
        }
    }
}

/// Connects to each of `targets` once, `pace.rate` connects started a
/// second at most, `pace.concurrency` in flight at most, each given
/// `pace.timeout`; the answers in the order of `targets`.
pub async fn run(targets: &[SocketAddr], pace: Pace) -> Vec<Answer> {
    let period = Duration::from_secs(1) / pace.rate.max(1);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let permits = Arc::new(Semaphore::new(pace.concurrency.max(1)));
    let mut tries = Vec::with_capacity(targets.len());
    for &target in targets {
        ticks.tick().await;
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        tries.push(tokio::spawn(async move {
            let answer = connect(target, pace.timeout).await;
            drop(permit);
            answer
        }));
    }
    let mut answers = Vec::with_capacity(tries.len());
    for (t, &target) in tries.into_iter().zip(targets) {
        answers.push(t.await.unwrap_or_else(|e| Answer {
            target,
            outcome: Outcome::Failed(format!("the connect task failed: {e}")),
            took_ms: 0,
        }));
    }
    answers
}

/// One connect to `target` within `timeout`.
async fn connect(target: SocketAddr, timeout: Duration) -> Answer {
    let start = Instant::now();
    let outcome = match tokio::time::timeout(timeout, TcpStream::connect(target)).await {
        Ok(Ok(stream)) => {
            drop(stream);
            Outcome::Connected
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
        Ok(Err(e)) => Outcome::Failed(e.to_string()),
        Err(_) => Outcome::TimedOut,
    };
    Answer {
        target,
        outcome,
        took_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pace(rate: u32) -> Pace {
        Pace {
            rate,
            concurrency: 4,
            timeout: Duration::from_millis(500),
        }
    }

    #[tokio::test]
    async fn a_listening_port_is_reached_and_a_closed_one_refused() {
        let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        let answers = run(&[open.local_addr().unwrap(), closed_addr], pace(100)).await;
        assert_eq!(answers[0].outcome, Outcome::Connected);
        assert_eq!(answers[1].outcome, Outcome::Refused);
        assert_eq!(answers[1].target, closed_addr);
    }

    #[tokio::test]
    async fn connects_are_paced_at_the_rate() {
        let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = open.local_addr().unwrap();
        let start = Instant::now();
        let answers = run(&[target; 6], pace(10)).await;
        assert_eq!(answers.len(), 6);
        // The first starts at once, each next 100 ms later.
        assert!(start.elapsed() >= Duration::from_millis(500), "{:?}", start.elapsed());
    }
}
