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

/// A token read from a file (`--token-file`, the agent's `token_file`): a
/// token given with `--token` shows in `ps` to every user of the host, a
/// file's content does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFile {
    /// The secret: the file's content without surrounding white space.
    pub secret: String,
    /// Set when users other than the file's owner and group may read the
    /// file: it says so and how to fix it. A warning, not a refusal (the
    /// token is usable; whoever could read it already has it).
    pub warning: Option<String>,
}

/// Why a token file gives no token.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// It cannot be read.
    #[error("cannot read the token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The reason.
        source: std::io::Error,
    },
    /// It holds no token.
    #[error("the token file {path} is empty: write into it the secret printed by `portwatch-collector token create`")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// Reads the token in `path`, with a warning when others may read the file.
pub fn read_token_file(path: &Path) -> Result<TokenFile, TokenFileError> {
    use std::os::unix::fs::PermissionsExt;
    let read = |source| TokenFileError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let mode = file.metadata().map_err(read)?.permissions().mode();
    let secret = std::io::read_to_string(file).map_err(read)?.trim().to_owned();
    if secret.is_empty() {
        return Err(TokenFileError::Empty { path: path.to_owned() });
    }
    let warning = (mode & 0o004 != 0).then(|| {
        format!(
            "the token file {} is readable by every user of this host (mode {:04o}): any of them can use the \
             token; make it private with `chmod o-rwx {}` (and rotate the token if others may have read it)",
            path.display(),
            mode & 0o7777,
            path.display()
        )
    });
    Ok(TokenFile { secret, warning })
}

/// How long each phase of a request may take (`None`: no bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The whole request, from resolving the name to the last byte of the body.
    pub whole: Option<Duration>,
    /// Resolving the name and connecting, TLS handshake included.
    pub connect: Option<Duration>,
    /// Sending the request head and body.
    pub send: Option<Duration>,
    /// Awaiting the response head, once the request is sent.
    pub response: Option<Duration>,
    /// Reading the response body, in total.
    pub body: Option<Duration>,
    /// Each single read or write: a peer silent this long has stalled.
    pub stall: Option<Duration>,
}

impl Timeouts {
    /// Everything within `limit`, body included: for short exchanges that
    /// must not hold their caller (the agent shipping, alert sinks posting).
    pub const fn whole(limit: Duration) -> Timeouts {
        Timeouts {
            whole: Some(limit),
            connect: None,
            send: None,
            response: None,
            body: None,
            stall: None,
        }
    }

    /// For a person's questions (the `portwatch` CLI): quick to say that the
    /// collector is unreachable, patient with a slow answer (a drift or trend
    /// over a large fleet), and a streamed body (an export) takes as long as
    /// it keeps coming.
    pub const QUERY: Timeouts = Timeouts {
        whole: None,
        connect: Some(Duration::from_secs(10)),
        send: Some(Duration::from_secs(30)),
        response: Some(Duration::from_secs(120)),
        body: None,
        stall: Some(Duration::from_secs(300)),
    };
}

/// An HTTP(S) client whose requests take at most `timeout`, body included,
/// trusting `ca_file`'s certificates when given. HTTP error statuses are
/// returned as responses, for the caller to map to its own messages.
pub fn http_agent(ca_file: Option<&Path>, timeout: Duration) -> Result<ureq::Agent, ClientError> {
    http_agent_with(ca_file, Timeouts::whole(timeout))
}

/// [`http_agent`] with a timeout per phase of the request.
pub fn http_agent_with(ca_file: Option<&Path>, timeouts: Timeouts) -> Result<ureq::Agent, ClientError> {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(timeouts.whole)
        .timeout_connect(timeouts.connect)
        .timeout_send_request(timeouts.send)
        .timeout_send_body(timeouts.send)
        .timeout_recv_response(timeouts.response)
        .timeout_recv_body(timeouts.body)
        .timeout_per_read(timeouts.stall)
        .timeout_per_write(timeouts.stall);
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

/// What to check when a request got no (complete) HTTP answer, for error messages.
pub fn advice(error: &ureq::Error) -> &'static str {
    // A failed handshake arrives as an I/O error wrapping the TLS one.
    let tls_in_io = matches!(error, ureq::Error::Io(e) if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()));
    match error {
        _ if tls_in_io => TLS_ADVICE,
        ureq::Error::Rustls(_) | ureq::Error::Tls(_) => TLS_ADVICE,
        ureq::Error::Protocol(_) => "the answer is not HTTP: is this an https:// collector addressed as http://?",
        ureq::Error::HostNotFound => "the host name does not resolve: check the URL",
        ureq::Error::Timeout(phase) => timeout_advice(*phase),
        _ => "is `portwatch-collector serve` running there, and can this machine reach its port?",
    }
}

/// Whether `error` came after the collector accepted the connection: it is
/// there, and was slow or stopped answering.
pub fn reached(error: &ureq::Error) -> bool {
    matches!(
        error,
        ureq::Error::Timeout(
            ureq::Timeout::SendRequest
                | ureq::Timeout::SendBody
                | ureq::Timeout::RecvResponse
                | ureq::Timeout::RecvBody
                | ureq::Timeout::PerRead
                | ureq::Timeout::PerWrite
        )
    )
}

fn timeout_advice(phase: ureq::Timeout) -> &'static str {
    match phase {
        ureq::Timeout::Resolve => "the host name did not resolve in time: check the URL and this machine's DNS",
        ureq::Timeout::Connect => {
            "no connection in time: is the host up, is the port right, and is a firewall dropping packets?"
        }
        ureq::Timeout::SendRequest | ureq::Timeout::SendBody | ureq::Timeout::PerWrite => {
            "connected, but the collector did not take the request in time: is it overloaded?"
        }
        ureq::Timeout::RecvResponse => {
            "connected, but the collector did not answer in time: it is overloaded or the question is large \
             (ask for fewer hosts or a shorter window)"
        }
        ureq::Timeout::RecvBody | ureq::Timeout::PerRead => {
            "the answer stopped arriving: the collector stalled or the connection dropped; try again"
        }
        _ => "no answer in time: is the collector overloaded, or a firewall dropping packets?",
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

    /// Puts the next attempt `delay` from now without counting a failure
    /// (a peer that asked to be left alone for a while: back-pressure).
    pub fn wait(&mut self, delay: Duration) {
        self.next_attempt = Instant::now() + delay;
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
    fn a_token_file_is_read_trimmed_and_a_world_readable_one_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("pw-token-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.token");
        std::fs::write(&path, "pw_abc\n").unwrap();
        for (mode, warned) in [(0o600, false), (0o640, false), (0o644, true), (0o604, true)] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let token = read_token_file(&path).unwrap();
            assert_eq!(token.secret, "pw_abc");
            assert_eq!(token.warning.is_some(), warned, "mode {mode:o}: {:?}", token.warning);
            if let Some(warning) = token.warning {
                assert!(warning.contains(&path.display().to_string()), "{warning}");
                assert!(
                    warning.contains(&format!("{mode:04o}")) && warning.contains("chmod o-rwx"),
                    "{warning}"
                );
            }
        }
        std::fs::write(&path, " \n").unwrap();
        let empty = read_token_file(&path).unwrap_err();
        assert!(matches!(empty, TokenFileError::Empty { .. }), "{empty:?}");
        let missing = read_token_file(&dir.join("missing")).unwrap_err();
        assert!(missing.to_string().contains("missing"), "{missing}");
        let _ = std::fs::remove_dir_all(&dir);
    }

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
    fn a_wait_asked_for_delays_the_next_attempt_without_growing_the_backoff() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        b.wait(Duration::from_secs(60));
        assert!(!b.ready(), "not before the wait is over");
        b.wait(Duration::ZERO);
        assert!(b.ready());
        for _ in 0..5 {
            b.wait(Duration::from_millis(1));
        }
        // No failure was counted: the first real failure waits 1 to 2 s, not 32 s.
        assert!(b.failed(Duration::ZERO) <= Duration::from_secs(2));
    }

    #[test]
    fn the_query_policy_bounds_connecting_and_the_answer_head_but_not_a_streamed_body() {
        let agent = http_agent_with(None, Timeouts::QUERY).unwrap();
        let t = agent.config().timeouts();
        assert_eq!(t.global, None, "a global timeout would cut a long export");
        assert_eq!(t.recv_body, None);
        assert_eq!(t.connect, Some(Duration::from_secs(10)));
        assert_eq!(t.send_request, Some(Duration::from_secs(30)));
        assert_eq!(t.recv_response, Some(Duration::from_secs(120)));
        assert_eq!(agent.config().timeout_per_read(), Some(Duration::from_secs(300)));

        // The agent's and sinks' policy stays one bound on everything.
        let strict = http_agent(None, Duration::from_secs(5)).unwrap();
        let t = strict.config().timeouts();
        assert_eq!(t.global, Some(Duration::from_secs(5)));
        assert_eq!((t.connect, t.recv_response, t.recv_body), (None, None, None));
        assert_eq!(strict.config().timeout_per_read(), None);
    }

    #[test]
    fn a_body_may_take_longer_than_the_bound_on_the_answer_head() {
        use std::io::{Read, Write};
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", server.local_addr().unwrap());
        let trickle = std::thread::spawn(move || {
            let (mut conn, _) = server.accept().unwrap();
            let mut head = [0u8; 1024];
            let _ = conn.read(&mut head).unwrap();
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\n")
                .unwrap();
            for byte in b"abcd" {
                std::thread::sleep(Duration::from_millis(400));
                conn.write_all(&[*byte]).unwrap();
            }
        });
        let policy = Timeouts {
            response: Some(Duration::from_millis(500)),
            stall: Some(Duration::from_secs(5)),
            ..Timeouts::QUERY
        };
        let body = http_agent_with(None, policy)
            .unwrap()
            .get(&url)
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        assert_eq!(body, "abcd");
        trickle.join().unwrap();
    }

    #[test]
    fn a_timeout_says_whether_the_collector_was_reached() {
        let connect = ureq::Error::Timeout(ureq::Timeout::Connect);
        assert!(!reached(&connect));
        assert!(
            advice(&connect).contains("no connection in time"),
            "{}",
            advice(&connect)
        );
        let head = ureq::Error::Timeout(ureq::Timeout::RecvResponse);
        assert!(reached(&head));
        assert!(advice(&head).contains("did not answer in time"), "{}", advice(&head));
        let body = ureq::Error::Timeout(ureq::Timeout::RecvBody);
        assert!(reached(&body) && advice(&body).contains("stopped arriving"));
        assert!(!reached(&ureq::Error::HostNotFound));
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
