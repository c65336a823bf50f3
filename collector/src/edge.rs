//! The collector's edge: how connections are accepted, how long a client
//! may take to send a request, and how many connections are open at once.
//!
//! What a client sees at each limit (the defaults are the `DEFAULT_*` consts,
//! set by `[http]` in the config):
//!
//! - **Connections.** At most `max_connections` are open. Beyond that the
//!   collector stops accepting: a new connection waits in the kernel's
//!   listen queue ([`LISTEN_BACKLOG`]) and is taken, in arrival order, as
//!   soon as an open one closes. Waiting costs the collector no file
//!   descriptor and no memory, and an honest agent queued behind attackers
//!   gets in once their connections time out (below); a client whose own
//!   timeout runs out first retries (an agent keeps its reports spooled).
//! - **Request headers.** A new connection must deliver its first request's
//!   headers within `header_timeout` (after the TLS handshake, which must
//!   finish within the same time), or it is closed without an answer.
//! - **Idle connections.** A kept-alive connection is closed when its next
//!   request's headers have not arrived `idle_timeout` after the previous
//!   answer (hyper's header-read timer runs from the moment the connection
//!   is ready for a request, so this bounds a slowly sent later request too).
//! - **Bodies.** A request body that stops arriving for `body_timeout` is
//!   answered 408 (ingest) or 400 ([`crate::api`]).
//! - **Protocol.** HTTP/1.1 only, in plain text and over TLS (ALPN offers
//!   `http/1.1` alone): agents and the CLI speak HTTP/1.1, and HTTP/2 would
//!   multiply the requests one connection may carry past every limit here.
//!
//! Connections opened, and waits at the limit, are counted in `/metrics`.
//! At start the collector raises its soft limit of open files to the hard
//! one ([`raise_fd_limit`]), so that the connection limit, not the
//! descriptor limit, is what a flood of connections meets.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use axum_server::{AddrListener, Address, Handle};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;

/// Default `[http] max_connections`: above a fleet of 10,000 agents, each
/// keeping its connection between reports, and under the unit's
/// `LimitNOFILE=65536`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
/// Default `[http] header_timeout`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `[http] idle_timeout`: longer than an agent's default interval
/// (10 s) and than its client keeps an idle connection (15 s), so that an
/// agent's connection is closed by the agent, not in the middle of its next
/// request.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `[http] body_timeout`.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections the kernel queues for the collector while `max_connections`
/// are open (it caps this at `net.core.somaxconn`).
pub const LISTEN_BACKLOG: u32 = 1024;

/// Most bytes hyper buffers per connection (a request's headers must fit):
/// what a connection that sends headers slowly can make the collector hold.
const MAX_BUF_BYTES: usize = 16 * 1024;

/// File descriptors kept for other uses than connections (the database,
/// its readers, the log, webhooks), when checking `max_connections`
/// against the limit of open files.
const OTHER_FDS: u64 = 64;

/// The edge limits (`[http]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Time a new connection has for its TLS handshake, and then for its
    /// first request's headers.
    pub header_timeout: Duration,
    /// Time a kept-alive connection has for its next request's headers.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// A listening socket on `addr` with a queue of [`LISTEN_BACKLOG`]; must be
/// called inside the runtime.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Raises this process's soft limit of open files to its hard limit; the
/// limits before and after (soft, hard). Under systemd, `LimitNOFILE=` in
/// the unit sets both and this changes nothing.
pub fn raise_fd_limit() -> io::Result<FdLimit> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let before = getrlimit(Resource::Nofile);
    let mut limit = FdLimit {
        soft: before.current,
        hard: before.maximum,
        raised_from: None,
    };
    if before.current != before.maximum && before.maximum.is_some() {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: before.maximum,
                maximum: before.maximum,
            },
        )?;
        limit.raised_from = before.current;
        limit.soft = before.maximum;
    }
    Ok(limit)
}

/// The limit of open files, as [`raise_fd_limit`] left it (`None`: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit now.
    pub soft: Option<u64>,
    /// The hard limit.
    pub hard: Option<u64>,
    /// The soft limit before, if it was raised.
    pub raised_from: Option<u64>,
}

impl FdLimit {
    /// `max_connections`, or fewer if the soft limit leaves no file for more
    /// after the collector's other files (at least 1).
    pub fn connections(&self, max_connections: usize) -> usize {
        match self.soft {
            Some(soft) => {
                let room = usize::try_from(soft.saturating_sub(OTHER_FDS)).unwrap_or(usize::MAX);
                max_connections.min(room).max(1)
            }
            None => max_connections,
        }
    }
}

/// The peer of an accepted connection (the server's address type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

impl Address for Peer {
    type Stream = Admitted;
    type Listener = Gate;
}

/// The listening socket behind the connection limit: it accepts a
/// connection only once it holds a slot for it.
pub struct Gate {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    waits: LogEvery,
}

impl Gate {
    /// `listener`, accepting at most `max_connections` at once.
    pub fn new(listener: TcpListener, max_connections: usize, metrics: Arc<Metrics>) -> Gate {
        Gate {
            listener,
            slots: Arc::new(Semaphore::new(max_connections.clamp(1, Semaphore::MAX_PERMITS))),
            metrics,
            waits: LogEvery::new(LOG_EVERY),
        }
    }

    async fn admit(&self) -> io::Result<(Admitted, Peer)> {
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                self.metrics.connection_waited();
                match self.waits.allow() {
                    Some(suppressed) => tracing::warn!(
                        suppressed,
                        "every connection slot is taken ([http] max_connections): new connections wait \
                         until one closes"
                    ),
                    None => tracing::debug!("every connection slot is taken: a new connection waits"),
                }
                self.slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| io::Error::other("the connection limit was closed"))?
            }
        };
        let (stream, peer) = self.listener.accept().await?;
        // TCP_NODELAY: an answer streamed in chunks must not wait for the
        // client's delayed ACK before its last bytes go out (Nagle).
        stream.set_nodelay(true)?;
        self.metrics.connection_opened();
        let admitted = Admitted {
            stream,
            _slot: Slot {
                _permit: slot,
                metrics: self.metrics.clone(),
            },
        };
        Ok((admitted, Peer(peer)))
    }
}

impl AddrListener<Admitted, Peer> for Gate {
    fn bind_to(_addr: Peer) -> impl Future<Output = io::Result<Self>> + Send {
        std::future::ready(Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "bind with edge::bind, then serve the listener",
        )))
    }

    fn accept_stream(&self) -> impl Future<Output = io::Result<(Admitted, Peer)>> + Send {
        self.admit()
    }

    fn get_local_addr(&self) -> io::Result<Peer> {
        self.listener.local_addr().map(Peer)
    }
}

/// An accepted connection, holding its slot until it is dropped.
pub struct Admitted {
    stream: TcpStream,
    _slot: Slot,
}

/// A connection's slot under the limit.
struct Slot {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.connection_closed();
    }
}

impl AsyncRead for Admitted {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Serves `app` on `listener` (plain HTTP, or HTTPS with `tls`) within
/// `limits`, until `handle` is told to shut down.
pub async fn serve(
    listener: TcpListener,
    tls: Option<RustlsConfig>,
    app: Router,
    limits: &Limits,
    metrics: Arc<Metrics>,
    handle: Handle<Peer>,
) -> io::Result<()> {
    let gate = Gate::new(listener, limits.max_connections, metrics);
    // axum-server retries a failed accept every 50 ms: one line per period.
    let accept_failures = LogEvery::new(LOG_EVERY);
    let mut server = axum_server::Server::from_listener(gate)
        .handle(handle)
        .first_request_timeout(limits.header_timeout)
        .accept_error_handler(move |peer: Option<&Peer>, e: &io::Error| match peer {
            // A handshake that failed or a client that went away: the client's business.
            Some(peer) => tracing::debug!(peer = %peer.0, error = %e, "connection failed before its first request"),
            None => match accept_failures.allow() {
                Some(suppressed) => tracing::warn!(error = %e, suppressed, "cannot accept a connection"),
                None => tracing::debug!(error = %e, "cannot accept a connection"),
            },
        })
        .http1_only();
    server
        .http_builder()
        .http1()
        .header_read_timeout(limits.idle_timeout)
        .max_buf_size(MAX_BUF_BYTES);
    let app = app.into_make_service();
    match tls {
        Some(rustls) => {
            offer_http1_only(&rustls);
            let acceptor = RustlsAcceptor::new(rustls).handshake_timeout(limits.header_timeout);
            server.acceptor(acceptor).serve(app).await
        }
        None => server.serve(app).await,
    }
}

/// Has `rustls` offer only HTTP/1.1 in ALPN (axum-server offers h2 too, which
/// the server does not speak). Called again after every reload, which
/// offers both again.
pub fn offer_http1_only(rustls: &RustlsConfig) {
    let mut config = (*rustls.get_inner()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    rustls.reload_from_config(Arc::new(config));
}

/// How often a refusal an attacker could repeat at will is logged at warn
/// (the others of the same kind go to debug, and are counted in the next).
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// A log line at most every so often: [`LogEvery::allow`] says whether this
/// one may be written, and how many were held back since the last.
#[derive(Debug)]
pub struct LogEvery {
    every: Duration,
    start: Instant,
    /// Milliseconds after `start` of the last allowed line, plus one (0: none yet).
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl LogEvery {
    /// At most one line per `every`.
    pub fn new(every: Duration) -> LogEvery {
        LogEvery {
            every,
            start: Instant::now(),
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one)` if a line may be written now.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let now_ms = u64::try_from(now.saturating_duration_since(self.start).as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let every_ms = u64::try_from(self.every.as_millis()).unwrap_or(u64::MAX);
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now_ms.saturating_sub(last) >= every_ms;
        if due
            && self
                .last
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_logged_at_most_once_per_period_with_the_count_held_back() {
        let log = LogEvery::new(Duration::from_secs(10));
        let t0 = log.start;
        assert_eq!(log.allow_at(t0), Some(0));
        assert_eq!(log.allow_at(t0 + Duration::from_secs(1)), None);
        assert_eq!(log.allow_at(t0 + Duration::from_secs(9)), None);
        assert_eq!(log.allow_at(t0 + Duration::from_secs(11)), Some(2));
        assert_eq!(log.allow_at(t0 + Duration::from_secs(12)), None);
    }

    #[test]
    fn the_connection_limit_stays_under_the_open_files_limit() {
        let limit = |soft| FdLimit {
            soft,
            hard: soft,
            raised_from: None,
        };
        assert_eq!(
            limit(Some(65_536)).connections(DEFAULT_MAX_CONNECTIONS),
            DEFAULT_MAX_CONNECTIONS
        );
        assert_eq!(limit(Some(1024)).connections(DEFAULT_MAX_CONNECTIONS), 1024 - 64);
        assert_eq!(limit(Some(1024)).connections(900), 900);
        assert_eq!(limit(Some(10)).connections(900), 1);
        assert_eq!(limit(None).connections(usize::MAX), usize::MAX);
    }
}
