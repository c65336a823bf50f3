//! Sending batches to the collector: `POST /api/v1/ingest`, gzip JSON,
//! bearer token, and a classification of failures that tells the daemon
//! whether to retry.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use flate2::write::GzEncoder;
use portwatch_common::client::{self, ClientError};
use portwatch_common::wire::{Ack, Batch};

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a batch was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    /// Unreachable, timed out, or a 5xx/429: the same batch may succeed later.
    #[error("collector unavailable: {0}")]
    Unavailable(String),
    /// The token is missing, unknown, revoked or not this host's: retrying
    /// will not help until an operator fixes the token.
    #[error("collector refused the agent's token: {0}")]
    Unauthorized(String),
    /// The collector rejected this batch as malformed (400/413): sending it
    /// again cannot succeed.
    #[error("collector rejected the batch: {0}")]
    Rejected(String),
}

/// A connection to the collector.
pub struct Shipper {
    url: String,
    token: String,
    agent: ureq::Agent,
}

impl Shipper {
    /// A shipper to the collector at `base` (`http(s)://host:port`), verifying
    /// an https collector against `ca_file` when given.
    pub fn new(base: &str, token: &str, ca_file: Option<&Path>) -> Result<Shipper, ClientError> {
        Ok(Shipper {
            url: format!("{}/api/v1/ingest", base.trim_end_matches('/')),
            token: token.trim().to_owned(),
            agent: client::http_agent(ca_file, REQUEST_TIMEOUT)?,
        })
    }

    /// Sends one batch; `Ok` once the collector has committed (what the Ack says).
    pub fn send(&self, batch: &Batch) -> Result<Ack, ShipError> {
        let json = serde_json::to_vec(batch).map_err(|e| ShipError::Rejected(format!("cannot encode: {e}")))?;
        let mut gz = GzEncoder::new(Vec::with_capacity(json.len() / 4), flate2::Compression::fast());
        let body = gz
            .write_all(&json)
            .and_then(|()| gz.finish())
            .map_err(|e| ShipError::Rejected(format!("cannot compress: {e}")))?;
        let mut response = self
            .agent
            .post(&self.url)
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Content-Type", "application/json")
            .header("Content-Encoding", "gzip")
            .send(&body[..])
            .map_err(|e| ShipError::Unavailable(format!("{}: {e} ({})", self.url, client::advice(&e))))?;
        let status = response.status().as_u16();
        if status == 200 {
            return response
                .body_mut()
                .read_json::<Ack>()
                .map_err(|e| ShipError::Unavailable(format!("unreadable acknowledgement: {e}")));
        }
        let message = response
            .body_mut()
            .read_json::<serde_json::Value>()
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let message = format!("HTTP {status}: {message}");
        Err(match status {
            401 | 403 => ShipError::Unauthorized(message),
            400 | 413 | 422 => ShipError::Rejected(message),
            _ => ShipError::Unavailable(message),
        })
    }
}
