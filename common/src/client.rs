//! The HTTP client both clients of the collector use (the agent that ships
//! to it and the `portwatch` CLI that queries it): one timeout policy and
//! one TLS trust rule. Behind the `client` feature, so the collector's
//! server side does not link an HTTP client it never uses.
//!
//! Trust: `https://` collectors are verified against the certificates of
//! `ca_file` when one is given (a private CA, or the collector's own
//! certificate when it is self-signed with `CA:FALSE`), else against the
//! Mozilla roots built into the binary.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

/// Why no client could be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The CA file cannot be read.
    #[error("cannot read the CA file {path}: {source}")]
    ReadCa {
        /// The file.
        path: PathBuf,
        /// The reason.
        source: std::io::Error,
    },
    /// The CA file is not PEM, or holds no certificate.
    #[error("the CA file {path} {reason}; give a PEM file of one or more certificates (-----BEGIN CERTIFICATE-----)")]
    BadCa {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// An HTTP(S) client whose requests take at most `timeout`, trusting
/// `ca_file`'s certificates when given. HTTP error statuses are returned as
/// responses, for the caller to map to its own messages.
pub fn http_agent(ca_file: Option<&Path>, timeout: Duration) -> Result<ureq::Agent, ClientError> {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout));
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|source| ClientError::ReadCa {
            path: path.to_owned(),
            source,
        })?;
        let roots = certificates(&pem).map_err(|reason| ClientError::BadCa {
            path: path.to_owned(),
            reason,
        })?;
        config = config.tls_config(
            TlsConfig::builder()
                .root_certs(RootCerts::Specific(Arc::new(roots)))
                .build(),
        );
    }
    Ok(config.build().new_agent())
}

const TLS_ADVICE: &str = "the TLS handshake failed: use https:// only for a collector with [tls] configured, \
     and trust the CA that signed its certificate (--ca-file, or ca_file in the agent's config)";

/// What to check when a request got no HTTP answer at all, for error messages.
pub fn advice(error: &ureq::Error) -> &'static str {
    // A failed handshake arrives as an I/O error wrapping the TLS one.
    let tls_in_io = matches!(error, ureq::Error::Io(e) if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()));
    match error {
        _ if tls_in_io => TLS_ADVICE,
        ureq::Error::Rustls(_) | ureq::Error::Tls(_) => TLS_ADVICE,
        ureq::Error::Protocol(_) => "the answer is not HTTP: is this an https:// collector addressed as http://?",
        ureq::Error::HostNotFound => "the host name does not resolve: check the URL",
        ureq::Error::Timeout(_) => "no answer in time: is the collector overloaded, or a firewall dropping packets?",
        _ => "is `portwatch-collector serve` running there, and can this machine reach its port?",
    }
}

/// Exponential backoff with jitter, for retrying a peer that is away.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
    next_attempt: Instant,
}

impl Backoff {
    /// Delays from `min`, doubling per failure, up to `max`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            failures: 0,
            next_attempt: Instant::now(),
        }
    }

    /// Whether the next attempt is due.
    pub fn ready(&self) -> bool {
        Instant::now() >= self.next_attempt
    }

    /// Records a success: the next attempt is due at once.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.next_attempt = Instant::now();
    }

    /// Records a failure; returns the delay until the next attempt (at least `at_least`).
    pub fn failed(&mut self, at_least: Duration) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let exp = self.min.saturating_mul(1u32 << self.failures.min(16)).min(self.max);
        // Jitter in [exp/2, exp]: peers that lost the same server together do not return together.
        let delay = (exp / 2 + exp.mul_f64(random_fraction() / 2.0)).max(at_least);
        self.next_attempt = Instant::now() + delay;
        delay
    }
}

fn random_fraction() -> f64 {
    let mut b = [0u8; 4];
    match getrandom::fill(&mut b) {
        Ok(()) => f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX),
        Err(_) => 0.5,
    }
}

/// The certificates of a PEM text (private keys in it are ignored).
fn certificates(pem: &[u8]) -> Result<Vec<Certificate<'static>>, String> {
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        match item {
            Ok(PemItem::Certificate(cert)) => certs.push(cert),
            Ok(_) => {}
            Err(e) => return Err(format!("is not valid PEM ({e})")),
        }
    }
    match certs.is_empty() {
        true => Err("holds no certificate".to_owned()),
        false => Ok(certs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_cap_and_resets_on_success() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(300));
        let mut b = Backoff::new(min, max);
        assert!(b.ready());
        for n in 1..=12u32 {
            let cap = min.saturating_mul(1u32 << n).min(max);
            let d = b.failed(Duration::ZERO);
            assert!(
                d >= cap / 2 && d <= cap,
                "failure {n}: {d:?} not in [{:?}, {cap:?}]",
                cap / 2
            );
            assert!(!b.ready());
        }
        assert!(b.failed(Duration::from_secs(400)) >= Duration::from_secs(400));
        b.succeeded();
        assert!(b.ready());
        assert!(b.failed(Duration::ZERO) <= Duration::from_secs(2));
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_with_its_name() {
        let dir = std::env::temp_dir().join(format!("pw-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = http_agent(Some(&empty), Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty.pem") && e.contains("holds no certificate"), "{e}");
        let missing = dir.join("missing.pem");
        let e = http_agent(Some(&missing), Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.pem") && e.contains("cannot read"), "{e}");
        let broken = dir.join("broken.pem");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n").unwrap();
        let e = http_agent(Some(&broken), Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("broken.pem") && e.contains("not valid PEM"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(http_agent(None, Duration::from_secs(1)).is_ok());
    }
}
