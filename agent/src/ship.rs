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

/// A connection to the collector.
pub struct Shipper {
    url: String,
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
        Ok(Shipper {
            url: format!("{}/api/v1/ingest", base.trim_end_matches('/')),
            token: token.trim().to_owned(),
            agent: client::http_agent(ca_file, REQUEST_TIMEOUT)?,
            limits: Limits::VERSION_1,
        })
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

    /// Sends a batch [`encode`]d before; `Ok` once the collector has committed.
    pub fn send_encoded(&mut self, encoded: &Encoded) -> Result<Ack, ShipError> {
        let mut response = self
            .agent
            .post(&self.url)
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Content-Type", "application/json")
            .header("Content-Encoding", "gzip")
            .send(&encoded.body[..])
            .map_err(|e| ShipError::Unavailable {
                message: format!("{}: {e} ({})", self.url, client::advice(&e)),
                retry_after: None,
            })?;
        let status = response.status().as_u16();
        if status == 200 {
            let ack = response
                .body_mut()
                .read_json::<Ack>()
                .map_err(|e| ShipError::Unavailable {
                    message: format!("unreadable acknowledgement: {e}"),
                    retry_after: None,
                })?;
            if let Some(limits) = ack.limits {
                self.limits = limits;
            }
            return Ok(ack);
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
        let message = format!("HTTP {status}: {message}");
        Err(match status {
            401 | 403 => ShipError::Unauthorized(message),
            413 => ShipError::TooLarge(message),
            400 | 422 => ShipError::Rejected(message),
            _ => ShipError::Unavailable { message, retry_after },
        })
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

    #[test]
    fn retry_after_is_read_in_seconds_and_bounded() {
        assert_eq!(retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(" 10 "), Some(Duration::from_secs(10)));
        assert_eq!(retry_after("86400"), Some(RETRY_AFTER_MAX));
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
