//! Sending batches to the collector: `POST /api/v1/ingest`, gzip JSON,
//! bearer token, and a classification of failures that tells the daemon
//! whether to retry, send less, or give a batch up.
//!
//! Batches are bounded in bytes, not only in reports: [`plan`] takes as many
//! reports as fit in three quarters of the collector's decompressed limit,
//! and the daemon halves a batch whose compressed body is still over seven
//! eighths of the limit on what is sent, or that the collector answered
//! 413. The limits are the collector's own, learned from each
//! acknowledgement ([`Limits`]); until the first, version 1's.
//!
//! An agent may have several collectors ([`Failover`]): it sends to the one
//! that last answered, and when that one cannot be reached, times out or
//! answers 5xx ([`fails_over`]), the same batch goes at once to the next in
//! the list, each tried once per round; only when every one failed does the
//! daemon back off. A 4xx is about the agent's token or batch, the same
//! answer from every collector, so it is not sent elsewhere. A switch keeps
//! the batch and the spool as they are: collectors on one database know the
//! session and take the batch where the other left it; one that does not
//! know it asks for a snapshot, as after any gap.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use flate2::write::GzEncoder;
use portwatch_common::client::{self, ClientError};
use portwatch_common::wire::{Ack, Batch, Limits};

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest `Retry-After` honoured (a longer one is taken as this).
const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);

/// Why a batch was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    /// Unreachable, timed out, or a 5xx/429: the same batch may succeed
    /// later, not before `retry_after` when the collector said so (503 or
    /// 429 with `Retry-After`: it is busy, not broken).
    #[error("collector unavailable: {message}")]
    Unavailable {
        /// What happened.
        message: String,
        /// The HTTP status it answered, if it answered at all.
        status: Option<u16>,
        /// How long the collector asked to wait.
        retry_after: Option<Duration>,
    },
    /// The token is missing, unknown, revoked or not this host's: retrying
    /// will not help until an operator fixes the token.
    #[error("collector refused the agent's token: {0}")]
    Unauthorized(String),
    /// The batch is larger than the collector takes (413): a smaller one may
    /// be accepted.
    #[error("collector refused the batch as too large: {0}")]
    TooLarge(String),
    /// The collector rejected this batch as malformed (400/422): sending it
    /// again cannot succeed.
    #[error("collector rejected the batch: {0}")]
    Rejected(String),
}

/// A connection to the collectors.
pub struct Shipper {
    /// Their base URLs, as configured.
    collectors: Vec<String>,
    /// Their ingest URLs, in the same order.
    urls: Vec<String>,
    failover: Failover,
    token: String,
    agent: ureq::Agent,
    limits: Limits,
}

/// A batch encoded for sending.
#[derive(Debug)]
pub struct Encoded {
    /// Bytes of JSON (what the collector decompresses to).
    pub json_bytes: usize,
    /// The gzip body.
    pub body: Vec<u8>,
}

impl Shipper {
    /// A shipper to the collector at `base` (`http(s)://host:port`), verifying
    /// an https collector against `ca_file` when given.
    pub fn new(base: &str, token: &str, ca_file: Option<&Path>) -> Result<Shipper, ClientError> {
        Shipper::several(&[base.to_owned()], token, ca_file)
    }

    /// A shipper to the collectors at `bases`, the first first (see
    /// [`Failover`]); each https one is verified against `ca_file` when given.
    pub fn several(bases: &[String], token: &str, ca_file: Option<&Path>) -> Result<Shipper, ClientError> {
        Ok(Shipper {
            collectors: bases.to_vec(),
            urls: bases
                .iter()
                .map(|base| format!("{}/api/v1/ingest", base.trim_end_matches('/')))
                .collect(),
            failover: Failover::new(bases.len()),
            token: token.trim().to_owned(),
            agent: client::http_agent(ca_file, REQUEST_TIMEOUT)?,
            limits: Limits::VERSION_1,
        })
    }

    /// The base URL of the collector batches go to now: the one that last
    /// answered (at first, the first).
    pub fn collector(&self) -> &str {
        &self.collectors[self.failover.current()]
    }

    /// The token it sends.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Sends `token` from now on (a rotated token).
    pub fn set_token(&mut self, token: &str) {
        token.trim().clone_into(&mut self.token);
    }

    /// The collector's limits, as its last acknowledgement stated them.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Encodes and sends one batch; `Ok` once the collector has committed
    /// (what the Ack says).
    pub fn send(&mut self, batch: &Batch) -> Result<Ack, ShipError> {
        let encoded = encode(batch)?;
        self.send_encoded(&encoded)
    }

    /// Sends a batch [`encode`]d before; `Ok` once a collector has committed.
    /// With several collectors, one round of [`Failover`]: an error that
    /// [`fails_over`] is returned only when every collector failed.
    pub fn send_encoded(&mut self, encoded: &Encoded) -> Result<Ack, ShipError> {
        let (agent, urls, token) = (&self.agent, &self.urls, &self.token);
        let (answer, switched) = round(&mut self.failover, |i| send_to(agent, &urls[i], token, encoded));
        if let Some((from, to)) = switched {
            tracing::warn!(
                from = %self.collectors[from], to = %self.collectors[to],
                "switched collector: the last one did not answer; sending to this one from now on"
            );
        }
        let ack = answer?;
        if let Some(limits) = ack.limits {
            self.limits = limits;
        }
        Ok(ack)
    }
}

/// Sends one encoded batch to the ingest URL `url`.
fn send_to(agent: &ureq::Agent, url: &str, token: &str, encoded: &Encoded) -> Result<Ack, ShipError> {
    let mut response = agent
        .post(url)
        .header("Authorization", &format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .header("Content-Encoding", "gzip")
        .send(&encoded.body[..])
        .map_err(|e| ShipError::Unavailable {
            message: format!("{url}: {e} ({})", client::advice(&e)),
            status: None,
            retry_after: None,
        })?;
    let status = response.status().as_u16();
    if status == 200 {
        return response
            .body_mut()
            .read_json::<Ack>()
            .map_err(|e| ShipError::Unavailable {
                message: format!("{url}: unreadable acknowledgement: {e}"),
                status: None,
                retry_after: None,
            });
    }
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(retry_after);
    let message = response
        .body_mut()
        .read_json::<serde_json::Value>()
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_default();
    Err(classify(
        status,
        format!("{url}: HTTP {status}: {message}"),
        retry_after,
    ))
}

/// What a collector's answer `status` (not 200) means for the batch.
fn classify(status: u16, message: String, retry_after: Option<Duration>) -> ShipError {
    match status {
        401 | 403 => ShipError::Unauthorized(message),
        413 => ShipError::TooLarge(message),
        400 | 422 => ShipError::Rejected(message),
        _ => ShipError::Unavailable {
            message,
            status: Some(status),
            retry_after,
        },
    }
}

/// Whether another collector may take a batch that this `error` says one
/// did not: it was not reached, timed out, sent an unreadable answer, or
/// answered 5xx (a 503 busy too). A 4xx says something of the agent's
/// token or batch (401/403, 413, 400), the same answer from every
/// collector, so it is not sent elsewhere.
pub fn fails_over(error: &ShipError) -> bool {
    matches!(
        error,
        ShipError::Unavailable {
            status: None | Some(500..),
            ..
        }
    )
}

/// Which of several collectors batches go to. The agent sticks to the one
/// that last answered (at first, the first of the list). When it fails in
/// a way that [`fails_over`], the same batch goes at once to the next one
/// in the list, and so on, each once per round; when every one has failed,
/// the round is over (the daemon backs off as with one collector), and the
/// next round starts again at the one that last answered. Whichever
/// answers (an acknowledgement or a 4xx) is the one batches go to from then
/// on. With one collector, each attempt is a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failover {
    count: usize,
    /// The one that last answered.
    current: usize,
    /// The one the next attempt goes to.
    target: usize,
    /// How many failed in this round.
    failed: usize,
}

/// What to do after a failure that [`fails_over`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Send the same batch to this collector now.
    Try(usize),
    /// Every collector failed in this round: back off.
    BackOff,
}

impl Failover {
    /// For `count` collectors (at least one), starting at the first.
    pub fn new(count: usize) -> Failover {
        Failover {
            count: count.max(1),
            current: 0,
            target: 0,
            failed: 0,
        }
    }

    /// The collector that last answered.
    pub fn current(&self) -> usize {
        self.current
    }

    /// The collector the next attempt goes to.
    pub fn target(&self) -> usize {
        self.target
    }

    /// The target answered: it is the current collector from now on, and
    /// the round is over. Returns the collector it replaces, if another.
    pub fn answered(&mut self) -> Option<usize> {
        self.failed = 0;
        let previous = std::mem::replace(&mut self.current, self.target);
        (previous != self.current).then_some(previous)
    }

    /// The target failed in a way that [`fails_over`]: the next collector
    /// not yet tried in this round, or back off when there is none (the
    /// next round starts at the current collector).
    pub fn failed(&mut self) -> Next {
        self.failed += 1;
        if self.failed < self.count {
            self.target = (self.target + 1) % self.count;
            Next::Try(self.target)
        } else {
            self.failed = 0;
            self.target = self.current;
            Next::BackOff
        }
    }
}

/// One round of `failover` for one batch, each attempt made by `send`
/// (given the collector's index): the first answer that does not
/// [`fail over`](fails_over), or, when every collector failed, their
/// failures in one (see [`round_failed`]). Also returns `(from, to)` when
/// the collector that answered is not the one that answered before.
pub fn round<T>(
    failover: &mut Failover,
    mut send: impl FnMut(usize) -> Result<T, ShipError>,
) -> (Result<T, ShipError>, Option<(usize, usize)>) {
    let mut failures = Vec::new();
    loop {
        let target = failover.target();
        match send(target) {
            Err(e) if fails_over(&e) => {
                failures.push(e);
                if failover.failed() == Next::BackOff {
                    return (Err(round_failed(failures)), None);
                }
            }
            answer => {
                let switched = failover.answered().map(|from| (from, target));
                return (answer, switched);
            }
        }
    }
}

/// The failures of every collector in a round as one: the only one as it
/// is; several as one [`ShipError::Unavailable`] saying each, that asks to
/// wait (`retry_after`) only when every collector did, and then the
/// shortest time asked.
fn round_failed(mut failures: Vec<ShipError>) -> ShipError {
    if failures.len() == 1 {
        if let Some(only) = failures.pop() {
            return only;
        }
    }
    let mut messages = Vec::new();
    let mut wait: Option<Duration> = None;
    let mut every_one_asked = true;
    for failure in failures {
        match failure {
            ShipError::Unavailable {
                message, retry_after, ..
            } => {
                messages.push(message);
                match retry_after {
                    Some(asked) => wait = Some(wait.map_or(asked, |w| w.min(asked))),
                    None => every_one_asked = false,
                }
            }
            other => {
                messages.push(other.to_string());
                every_one_asked = false;
            }
        }
    }
    ShipError::Unavailable {
        message: format!("every collector failed: {}", messages.join("; ")),
        status: None,
        retry_after: wait.filter(|_| every_one_asked),
    }
}

/// A `Retry-After` value in seconds (the HTTP-date form is not used by the
/// collector), at most [`RETRY_AFTER_MAX`].
fn retry_after(value: &str) -> Option<Duration> {
    let seconds: u64 = value.trim().parse().ok()?;
    Some(Duration::from_secs(seconds).min(RETRY_AFTER_MAX))
}

/// `batch` as gzip JSON, compressed report by report (see [`BatchBody`]).
pub fn encode(batch: &Batch) -> Result<Encoded, ShipError> {
    let head = Batch {
        version: batch.version,
        host: batch.host.clone(),
        session: batch.session.clone(),
        dropped: batch.dropped,
        peers: Vec::new(),
        peers_dropped: 0,
        alive_at: batch.alive_at,
        reports: Vec::new(),
    };
    let mut body = BatchBody::new(&head)?;
    for report in &batch.reports {
        let json = serde_json::to_vec(report).map_err(|e| ShipError::Rejected(format!("cannot encode: {e}")))?;
        body.report(&json);
    }
    body.finish()
}

/// A batch's gzip JSON, written as it is made: the batch's fields, then
/// each report's JSON as given (the spool's bytes, see
/// `Spool::pending_json`), compressed at once. Neither the batch's JSON nor
/// a parsed copy of its reports is ever held in memory, only the compressed
/// body: a first snapshot of 5,000 listeners would be several megabytes
/// each (they were most of the daemon's peak memory).
pub struct BatchBody {
    gz: GzEncoder<Vec<u8>>,
    json_bytes: usize,
    reports: usize,
    error: Option<std::io::Error>,
}

impl BatchBody {
    /// Starts the body of `head`, a batch whose `reports` are empty (they
    /// are added with [`BatchBody::report`]).
    pub fn new(head: &Batch) -> Result<BatchBody, ShipError> {
        let json = serde_json::to_vec(head).map_err(|e| ShipError::Rejected(format!("cannot encode: {e}")))?;
        // `reports` is the last field of a batch: its JSON ends `[]}`, where the reports go.
        let prefix = match json.strip_suffix(b"[]}") {
            Some(prefix) if head.reports.is_empty() => prefix,
            _ => {
                return Err(ShipError::Rejected(
                    "cannot encode: the batch's reports are not last".into(),
                ))
            }
        };
        let mut body = BatchBody {
            gz: GzEncoder::new(Vec::new(), flate2::Compression::fast()),
            json_bytes: 0,
            reports: 0,
            error: None,
        };
        body.write(prefix);
        body.write(b"[");
        Ok(body)
    }

    /// Adds a report, given as its JSON.
    pub fn report(&mut self, json: &[u8]) {
        if self.reports > 0 {
            self.write(b",");
        }
        self.write(json);
        self.reports += 1;
    }

    /// How many reports were added.
    pub fn reports(&self) -> usize {
        self.reports
    }

    /// The body, compressed.
    pub fn finish(mut self) -> Result<Encoded, ShipError> {
        self.write(b"]}");
        if let Some(e) = self.error {
            return Err(ShipError::Rejected(format!("cannot compress: {e}")));
        }
        let body = self
            .gz
            .finish()
            .map_err(|e| ShipError::Rejected(format!("cannot compress: {e}")))?;
        Ok(Encoded {
            json_bytes: self.json_bytes,
            body,
        })
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.error.is_none() {
            match self.gz.write_all(bytes) {
                Ok(()) => self.json_bytes += bytes.len(),
                Err(e) => self.error = Some(e),
            }
        }
    }
}

/// Bytes of a batch's JSON besides its reports (host, session, numbers).
const BATCH_OVERHEAD: u64 = 1024;

/// How many of the leading reports, of JSON sizes `report_bytes`, one
/// batch may carry under `limits`: at most `cap` and the collector's report
/// limit, and as many as fit in three quarters of its decompressed limit;
/// at least one.
pub fn plan(report_bytes: &[u64], limits: &Limits, cap: usize) -> usize {
    let budget = limits.max_decompressed_bytes / 4 * 3;
    let most = usize::try_from(limits.max_reports)
        .unwrap_or(usize::MAX)
        .min(cap)
        .max(1);
    let mut bytes = BATCH_OVERHEAD;
    let mut count = 0;
    for size in report_bytes.iter().take(most) {
        bytes = bytes.saturating_add(size + 1);
        if count > 0 && bytes > budget {
            break;
        }
        count += 1;
    }
    count.max(1).min(report_bytes.len())
}

/// Whether an encoded batch is over seven eighths of what the collector
/// takes as sent or decompressed, so that a smaller one should be made.
pub fn oversized(encoded: &Encoded, limits: &Limits) -> bool {
    encoded.body.len() as u64 > limits.max_body_bytes / 8 * 7
        || encoded.json_bytes as u64 > limits.max_decompressed_bytes / 8 * 7
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;
    use portwatch_common::wire::{json_len as json_bytes, Report, ReportBody};

    fn report(seq: u64, padding: usize) -> Report {
        let mut tags = std::collections::BTreeMap::new();
        tags.insert("pad".to_owned(), "x".repeat(padding));
        Report {
            seq,
            observed_at: Timestamp::from_second(1_700_000_000).unwrap(),
            body: ReportBody::Snapshot {
                facts: portwatch_common::wire::HostFacts {
                    detection: None,
                    host_netns: None,
                    addresses: Vec::new(),
                    os: None,
                    kernel: None,
                    boot_time: None,
                    agent_version: "t".into(),
                    interval_ms: 1000,
                    tags,
                },
                listeners: Vec::new(),
            },
        }
    }

    fn limits(decompressed: u64) -> Limits {
        Limits {
            max_decompressed_bytes: decompressed,
            ..Limits::VERSION_1
        }
    }

    #[test]
    fn a_batch_takes_as_many_reports_as_fit_three_quarters_of_the_decompressed_limit() {
        // 500 reports of ~76 KB: ~38 MB, over the 32 MiB a version 1 collector takes.
        let reports: Vec<Report> = (1..=500).map(|seq| report(seq, 76_000)).collect();
        let sizes: Vec<u64> = reports.iter().map(json_bytes).collect();
        let n = plan(&sizes, &Limits::VERSION_1, 500);
        let bytes: u64 = reports[..n].iter().map(|r| json_bytes(r) + 1).sum();
        assert!(n < 500 && n > 250, "{n} reports");
        assert!(
            bytes <= Limits::VERSION_1.max_decompressed_bytes / 4 * 3,
            "{bytes} bytes"
        );
        // The next report would not have fitted.
        assert!(
            bytes + json_bytes(&reports[n]) + 1 + BATCH_OVERHEAD > Limits::VERSION_1.max_decompressed_bytes / 4 * 3
        );
        // A cap and the collector's report limit bound it too.
        assert_eq!(plan(&sizes, &Limits::VERSION_1, 7), 7);
        let few = Limits {
            max_reports: 3,
            ..Limits::VERSION_1
        };
        assert_eq!(plan(&sizes, &few, 500), 3);
        // One report always goes, even one over the limit (the collector decides).
        assert_eq!(plan(&sizes, &limits(10), 500), 1);
        assert_eq!(plan(&sizes[..2], &Limits::VERSION_1, 500), 2);
        assert_eq!(plan(&[], &Limits::VERSION_1, 500), 0);
    }

    fn gunzip(body: &[u8]) -> Vec<u8> {
        let mut json = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut json).unwrap();
        json
    }

    #[test]
    fn a_batch_encoded_report_by_report_is_the_json_of_the_whole_batch() {
        for reports in [Vec::new(), vec![report(1, 10)], vec![report(1, 10), report(2, 3_000)]] {
            let batch = Batch {
                version: 2,
                host: "h\"x".into(),
                session: "s".into(),
                dropped: 3,
                peers: Vec::new(),
                peers_dropped: 0,
                alive_at: Some(Timestamp::from_second(1_700_000_000).unwrap()),
                reports,
            };
            let encoded = encode(&batch).unwrap();
            let json = gunzip(&encoded.body);
            assert_eq!(json, serde_json::to_vec(&batch).unwrap());
            assert_eq!(encoded.json_bytes, json.len());
            assert_eq!(serde_json::from_slice::<Batch>(&json).unwrap(), batch);
        }
        let with_reports = Batch {
            version: 1,
            host: "h".into(),
            session: "s".into(),
            dropped: 0,
            peers: Vec::new(),
            peers_dropped: 0,
            alive_at: None,
            reports: vec![report(1, 1)],
        };
        assert!(BatchBody::new(&with_reports).is_err());
    }

    #[test]
    fn an_encoded_batch_near_either_limit_is_oversized() {
        let batch = Batch {
            version: 1,
            host: "h".into(),
            session: "s".into(),
            dropped: 0,
            peers: Vec::new(),
            peers_dropped: 0,
            alive_at: None,
            reports: vec![report(1, 10_000)],
        };
        let encoded = encode(&batch).unwrap();
        assert!(!oversized(&encoded, &Limits::VERSION_1));
        assert!(oversized(&encoded, &limits(encoded.json_bytes as u64)));
        let small_body = Limits {
            max_body_bytes: encoded.body.len() as u64,
            ..Limits::VERSION_1
        };
        assert!(oversized(&encoded, &small_body));
    }

    fn down(i: usize) -> ShipError {
        ShipError::Unavailable {
            message: format!("c{i}: connection refused"),
            status: None,
            retry_after: None,
        }
    }

    fn busy(i: usize, seconds: u64) -> ShipError {
        classify(503, format!("c{i}: HTTP 503"), Some(Duration::from_secs(seconds)))
    }

    /// What a round answered, whether it switched, and where it sent.
    type Attempts = (Result<u64, ShipError>, Option<(usize, usize)>, Vec<usize>);

    /// One round over collectors that answer as `answer` says, and the
    /// indices it sent to.
    fn run(failover: &mut Failover, answer: impl Fn(usize) -> Result<u64, ShipError>) -> Attempts {
        let mut sent = Vec::new();
        let (result, switched) = round(failover, |i| {
            sent.push(i);
            answer(i)
        });
        (result, switched, sent)
    }

    #[test]
    fn no_answer_a_timeout_or_a_5xx_fails_over_and_a_4xx_does_not() {
        assert!(fails_over(&down(0)));
        for status in [500, 502, 503, 504] {
            assert!(fails_over(&classify(status, String::new(), None)), "{status}");
        }
        assert!(fails_over(&busy(0, 5)), "a busy collector: another may not be");
        for status in [400, 401, 403, 404, 413, 422, 429] {
            assert!(!fails_over(&classify(status, String::new(), None)), "{status}");
        }
        assert!(matches!(classify(401, String::new(), None), ShipError::Unauthorized(_)));
        assert!(matches!(classify(413, String::new(), None), ShipError::TooLarge(_)));
        assert!(matches!(classify(400, String::new(), None), ShipError::Rejected(_)));
    }

    #[test]
    fn a_failed_collector_hands_the_same_batch_to_the_next_which_is_kept_afterwards() {
        let mut failover = Failover::new(3);
        let (result, switched, sent) = run(&mut failover, |i| if i == 0 { Err(down(0)) } else { Ok(7) });
        assert_eq!((result.unwrap(), switched, sent), (7, Some((0, 1)), vec![0, 1]));
        assert_eq!(failover.current(), 1);
        // The first is back: the agent stays with the one that answered, and says nothing more.
        let (result, switched, sent) = run(&mut failover, |_| Ok(8));
        assert_eq!((result.unwrap(), switched, sent), (8, None, vec![1]));
        // The second goes too: on to the third, then around the list to the first.
        let (_, switched, sent) = run(&mut failover, |i| if i == 2 { Ok(9) } else { Err(down(i)) });
        assert_eq!((switched, sent), (Some((1, 2)), vec![1, 2]));
        let (_, switched, sent) = run(&mut failover, |i| if i == 0 { Ok(10) } else { Err(down(i)) });
        assert_eq!((switched, sent), (Some((2, 0)), vec![2, 0]));
    }

    #[test]
    fn each_collector_is_tried_once_a_round_and_then_the_agent_backs_off() {
        let mut failover = Failover::new(3);
        let (first, _, _) = run(&mut failover, |i| if i == 1 { Ok(1) } else { Err(down(i)) });
        assert_eq!(first.unwrap(), 1);
        let (result, switched, sent) = run(&mut failover, |i| Err(down(i)));
        assert_eq!((switched, sent), (None, vec![1, 2, 0]));
        let e = result.unwrap_err();
        assert!(fails_over(&e), "{e}");
        let message = e.to_string();
        assert!(
            message.contains("every collector failed") && ["c0", "c1", "c2"].iter().all(|c| message.contains(c)),
            "{message}"
        );
        // The next round starts again at the one that last answered.
        assert_eq!(failover.target(), 1);
        let (_, _, sent) = run(&mut failover, |i| Err(down(i)));
        assert_eq!(sent, vec![1, 2, 0]);
    }

    #[test]
    fn a_refusal_is_the_same_answer_everywhere_and_goes_nowhere_else() {
        for refusal in [
            ShipError::Unauthorized("401".into()),
            ShipError::TooLarge("413".into()),
            ShipError::Rejected("400".into()),
        ] {
            let mut failover = Failover::new(2);
            let kind = refusal.to_string();
            let refusal = std::cell::RefCell::new(Some(refusal));
            let (result, switched, sent) = run(&mut failover, |_| Err(refusal.borrow_mut().take().unwrap()));
            assert_eq!((result.unwrap_err().to_string(), switched, sent), (kind, None, vec![0]));
            assert_eq!(failover.current(), 0);
        }
        // A refusal is an answer: the collector that gave it, after one that did not answer, is kept.
        let mut failover = Failover::new(2);
        let (result, switched, sent) = run(&mut failover, |i| {
            Err(if i == 0 {
                down(0)
            } else {
                ShipError::Unauthorized("401".into())
            })
        });
        assert!(matches!(result, Err(ShipError::Unauthorized(_))));
        assert_eq!((switched, sent, failover.current()), (Some((0, 1)), vec![0, 1], 1));
    }

    #[test]
    fn with_one_collector_a_failure_is_told_as_it_was_and_every_attempt_is_a_round() {
        let mut failover = Failover::new(1);
        let (result, switched, sent) = run(&mut failover, |_| Err(busy(0, 5)));
        assert_eq!((switched, sent), (None, vec![0]));
        match result {
            Err(ShipError::Unavailable {
                message,
                status,
                retry_after,
            }) => assert_eq!(
                (message.as_str(), status, retry_after),
                ("c0: HTTP 503", Some(503), Some(Duration::from_secs(5)))
            ),
            other => panic!("{other:?}"),
        }
        let (_, _, sent) = run(&mut failover, |_| Err(down(0)));
        assert_eq!(sent, vec![0]);
    }

    #[test]
    fn a_round_of_busy_collectors_waits_the_shortest_time_asked_only_if_every_one_asked() {
        let mut failover = Failover::new(3);
        let (result, _, _) = run(&mut failover, |i| Err(busy(i, [9, 4, 6][i])));
        assert!(
            matches!(result, Err(ShipError::Unavailable { retry_after: Some(d), .. }) if d == Duration::from_secs(4))
        );
        let (result, _, _) = run(&mut failover, |i| Err(if i == 1 { down(1) } else { busy(i, 4) }));
        assert!(matches!(result, Err(ShipError::Unavailable { retry_after: None, .. })));
    }

    #[test]
    fn retry_after_is_read_in_seconds_and_bounded() {
        assert_eq!(retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(" 10 "), Some(Duration::from_secs(10)));
        assert_eq!(retry_after("86400"), Some(RETRY_AFTER_MAX));
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
