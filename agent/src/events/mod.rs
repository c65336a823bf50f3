//! Kernel events: listeners seen the moment they open or close, where the
//! kernel allows it, with polling as the fallback.
//!
//! The kernel program (`agent/bpf/portwatch.bpf.c`, built by `build.rs`
//! with clang when it is installed) is loaded with aya. [`Kernel::probe`]
//! is the run-time check: it needs the kernel's BTF, CAP_BPF and
//! CAP_PERFMON (or CAP_SYS_ADMIN), and a kernel that loads and attaches
//! `tp_btf` programs and a ring buffer; anything missing is an
//! [`Unavailable`] that says why, and the agent polls.
//!
//! Events cross a 1 MiB ring buffer. What does not fit is counted by the
//! program ([`Batch::lost_total`]); the daemon then runs a full scan.

pub mod parse;
pub mod state;

use std::sync::mpsc::Sender;
use std::time::Duration;

pub use parse::{Event, Kind};

/// How the agent sees listeners open and close (the host fact `detection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detection {
    /// Kernel events, with a full scan as a safety net.
    Events,
    /// A full scan every interval.
    Polling,
}

impl Detection {
    /// The word reported as the host fact.
    pub fn as_str(self) -> &'static str {
        match self {
            Detection::Events => "events",
            Detection::Polling => "polling",
        }
    }
}

/// Whether this agent was built with the kernel program.
pub const BUILT_IN: bool = cfg!(portwatch_bpf);

/// Why kernel events cannot be used; the agent polls instead.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum Unavailable {
    /// Built without clang.
    #[error("this agent was built without kernel events (no clang when it was built)")]
    NotBuilt,
    /// Turned off in the config.
    #[error("kernel events are turned off (events = false, or --no-events)")]
    Off,
    /// The kernel has no BTF, which the program's relocations need.
    #[error("the kernel has no BTF ({0}); it needs CONFIG_DEBUG_INFO_BTF")]
    NoBtf(String),
    /// Neither CAP_BPF with CAP_PERFMON nor CAP_SYS_ADMIN.
    #[error("the agent lacks CAP_BPF and CAP_PERFMON (effective capabilities {0:#x})")]
    Capabilities(u64),
    /// The kernel refused a program, a map or an attachment.
    #[error("the kernel refused {what}: {message}")]
    Refused {
        /// Which program or map.
        what: String,
        /// The loader's error chain, with the verifier's log when there is one.
        message: String,
    },
}

/// Effective capabilities of this process (`CapEff` of /proc/self/status).
#[cfg_attr(not(portwatch_bpf), allow(dead_code))]
fn effective_capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Whether `caps` allow loading tracing programs.
#[cfg_attr(not(portwatch_bpf), allow(dead_code))]
fn capable(caps: u64) -> bool {
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    const CAP_PERFMON: u64 = 1 << 38;
    const CAP_BPF: u64 = 1 << 39;
    caps & CAP_SYS_ADMIN != 0 || (caps & CAP_BPF != 0 && caps & CAP_PERFMON != 0)
}

/// An error and its sources, on one line.
#[cfg_attr(not(portwatch_bpf), allow(dead_code))]
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// What the reader thread sends: the events drained at one wake-up.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Events, in ring buffer order.
    pub events: Vec<Event>,
    /// Records that could not be parsed (the program and the agent disagree).
    pub unreadable: u64,
    /// Events lost so far (did not fit the ring buffer), since the program loaded.
    pub lost_total: u64,
}

/// CLOCK_MONOTONIC now, in nanoseconds: the clock of [`Event::ktime_ns`].
pub fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0)
}

/// The wall time of an event's kernel (CLOCK_MONOTONIC) time, by the
/// current offset of the two clocks (read again at each call, so a stepped
/// wall clock is followed).
///
/// The two clocks cannot be read at once: the wall clock is read between two
/// monotonic reads, and of a few tries the tightest pair is kept, so that a
/// preemption between the reads (a loaded machine) does not date the event
/// early by the time the reader was descheduled.
pub fn wall_time(ktime_ns: u64) -> jiff::Timestamp {
    let (_, offset) = clock_offset();
    jiff::Timestamp::from_nanosecond(i128::from(ktime_ns) + offset).unwrap_or_else(|_| jiff::Timestamp::now())
}

/// The wall clock minus the monotonic clock, in nanoseconds, with the gap
/// between the two monotonic reads it was taken between: the offset is off
/// by at most half that gap.
fn clock_offset() -> (i128, i128) {
    /// A pair read closer than this is taken at once.
    const TIGHT_NS: i128 = 20_000;
    let mut best: Option<(i128, i128)> = None; // (gap, wall minus monotonic)
    for _ in 0..4 {
        let before = i128::from(monotonic_ns());
        let real = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
        let after = i128::from(monotonic_ns());
        let real_ns = i128::from(real.tv_sec) * 1_000_000_000 + i128::from(real.tv_nsec);
        let gap = after - before;
        if best.is_none_or(|(g, _)| gap < g) {
            best = Some((gap, real_ns - (before + after) / 2));
        }
        if gap < TIGHT_NS {
            break;
        }
    }
    best.unwrap_or((0, 0))
}

#[cfg(portwatch_bpf)]
mod kernel {
    use super::*;
    use aya::maps::{Array, Map, MapData, RingBuf};
    use aya::programs::BtfTracePoint;
    use aya::{Btf, Ebpf};
    use std::io::{IoSlice, IoSliceMut};
    use std::mem::MaybeUninit;
    use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
    use std::process::{Command, Stdio};

    use rustix::net::{
        RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
    };

    /// Where the kernel exposes its BTF.
    const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

    static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/portwatch.bpf.o"));

    /// The (program, tracepoint) pairs the object attaches.
    const PROGRAMS: [(&str, &str); 3] = [
        ("tcp_state", "inet_sock_set_state"),
        ("syscall_exit", "sys_exit"),
        ("process_exit", "sched_process_exit"),
    ];

    /// The most descriptors the loader hands over: the ring buffer, the lost
    /// count and one link per program.
    const MAX_FDS: usize = 2 + PROGRAMS.len();

    /// The attached program, as the daemon holds it: its links (closing them
    /// detaches it) and its two maps. Detaches when dropped.
    pub struct Kernel {
        _links: Vec<OwnedFd>,
        ring: RingBuf<MapData>,
        lost: Array<MapData, u64>,
    }

    fn refused(what: &str, e: &dyn std::error::Error) -> Unavailable {
        let mut message = chain(e);
        if message.contains("Operation not permitted") {
            message.push_str(" (EPERM: missing capabilities, or a kernel lockdown or security policy)");
        }
        Unavailable::Refused {
            what: what.to_owned(),
            message,
        }
    }

    fn loader_failed(message: String) -> Unavailable {
        Unavailable::Refused {
            what: "the event program's loader".to_owned(),
            message,
        }
    }

    impl Kernel {
        /// Loads and attaches the program: the run-time probe.
        ///
        /// The loading is done by a short-lived process of its own (this
        /// binary again, as [`LOADER_COMMAND`]), which hands the daemon the
        /// links and maps over a Unix socket and exits. Loading parses the
        /// kernel's BTF (`/sys/kernel/btf/vmlinux`, about 5 MB, some 13 MB
        /// once parsed): done in the daemon, it was most of the daemon's peak
        /// memory (VmHWM twice its resident set), and what the allocator kept
        /// of it, with the loader's code pages, stayed resident for good.
        pub fn probe() -> Result<Kernel, Unavailable> {
            std::fs::File::open(BTF_PATH).map_err(|e| Unavailable::NoBtf(format!("{BTF_PATH}: {e}")))?;
            if let Some(caps) = effective_capabilities().filter(|&c| !capable(c)) {
                return Err(Unavailable::Capabilities(caps));
            }
            let (ours, theirs) = rustix::net::socketpair(
                rustix::net::AddressFamily::UNIX,
                rustix::net::SocketType::SEQPACKET,
                rustix::net::SocketFlags::CLOEXEC,
                None,
            )
            .map_err(|e| loader_failed(format!("cannot make its socket: {e}")))?;
            // Its stdin is its end of the socket.
            let mut child = Command::new("/proc/self/exe")
                .arg(LOADER_COMMAND)
                .stdin(Stdio::from(theirs))
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| loader_failed(format!("cannot start it: {e}")))?;
            let received = receive(ours.as_fd());
            let status = child.wait();
            let (answer, mut fds) = received.map_err(|e| loader_failed(format!("no answer ({e}); {status:?}")))?;
            let answer: Result<(), Unavailable> = serde_json::from_slice(&answer)
                .map_err(|e| loader_failed(format!("an answer this agent cannot read ({e}); {status:?}")))?;
            answer?;
            if fds.len() < 2 {
                return Err(loader_failed(format!(
                    "{} descriptors handed over, not the maps",
                    fds.len()
                )));
            }
            let links = fds.split_off(2);
            let lost_fd = fds.pop().ok_or_else(|| loader_failed("no lost count".to_owned()))?;
            let ring_fd = fds.pop().ok_or_else(|| loader_failed("no ring buffer".to_owned()))?;
            let map = |fd: OwnedFd, what: &str| {
                MapData::from_fd(fd)
                    .and_then(Map::from_map_data)
                    .map_err(|e| refused(what, &e))
            };
            let ring = RingBuf::try_from(map(ring_fd, "events")?).map_err(|e| refused("events", &e))?;
            let lost = Array::try_from(map(lost_fd, "lost")?).map_err(|e| refused("lost", &e))?;
            Ok(Kernel {
                _links: links,
                ring,
                lost,
            })
        }

        /// Waits up to `timeout` for events, then drains them all.
        pub fn wait(&mut self, timeout: Duration) -> Batch {
            let ts = rustix::event::Timespec {
                tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: i64::from(timeout.subsec_nanos()),
            };
            {
                let fd = self.ring.as_fd();
                let mut fds = [rustix::event::PollFd::new(&fd, rustix::event::PollFlags::IN)];
                // EINTR or a timeout: drain whatever is there either way.
                let _ = rustix::event::poll(&mut fds, Some(&ts));
            }
            let mut batch = Batch::default();
            while let Some(item) = self.ring.next() {
                match parse::parse(&item) {
                    Ok(e) => batch.events.push(e),
                    Err(e) => {
                        tracing::debug!(error = %e, "unreadable event record");
                        batch.unreadable += 1;
                    }
                }
            }
            batch.lost_total = self.lost.get(&0, 0).unwrap_or(0);
            batch
        }
    }

    /// One message from the loader: its answer and the descriptors with it.
    fn receive(socket: BorrowedFd<'_>) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
        let mut answer = vec![0u8; 64 * 1024];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = rustix::net::recvmsg(
            socket,
            &mut [IoSliceMut::new(&mut answer)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        if got.bytes == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "it exited"));
        }
        answer.truncate(got.bytes);
        let mut fds = Vec::new();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(rights) = message {
                fds.extend(rights);
            }
        }
        Ok((answer, fds))
    }

    /// What the loader process holds once the program is attached.
    struct Loaded {
        _ebpf: Ebpf,
        ring: Map,
        lost: Map,
    }

    /// Loads and attaches the program in this process (the loader's).
    fn load() -> Result<Loaded, Unavailable> {
        // The loader (and its BTF) is dropped at the end of this statement.
        let mut ebpf = aya::EbpfLoader::new()
            .load(OBJECT)
            .map_err(|e| refused("the event program's maps", &e))?;
        let btf = Btf::from_sys_fs().map_err(|e| Unavailable::NoBtf(chain(&e)))?;
        for (name, tracepoint) in PROGRAMS {
            let program: &mut BtfTracePoint = ebpf
                .program_mut(name)
                .ok_or_else(|| Unavailable::Refused {
                    what: name.to_owned(),
                    message: "not in the built object".to_owned(),
                })?
                .try_into()
                .map_err(|e| refused(name, &e))?;
            program.load(tracepoint, &btf).map_err(|e| refused(name, &e))?;
            program.attach().map_err(|e| refused(name, &e))?;
        }
        let missing = |what: &str| Unavailable::Refused {
            what: what.to_owned(),
            message: "not in the built object".to_owned(),
        };
        let ring = ebpf.take_map("events").ok_or_else(|| missing("events"))?;
        let lost = ebpf.take_map("lost").ok_or_else(|| missing("lost"))?;
        Ok(Loaded {
            _ebpf: ebpf,
            ring,
            lost,
        })
    }

    /// The descriptors of this process's BPF links (`anon_inode:bpf_link`
    /// in /proc/self/fd): the loader's process holds no others than the
    /// program's. aya keeps a link's descriptor to itself; the kernel tells
    /// which descriptors are links.
    fn own_links() -> std::io::Result<Vec<OwnedFd>> {
        let mut links = Vec::new();
        for entry in std::fs::read_dir("/proc/self/fd")? {
            let entry = entry?;
            if !std::fs::read_link(entry.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:bpf_link") {
                continue;
            }
            let Some(n) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<std::os::fd::RawFd>().ok())
            else {
                continue;
            };
            // SAFETY: descriptor n is open in this process (listed just now)
            // and stays open while borrowed: the loader's `Ebpf`, which owns
            // it, lives until the daemon has it.
            #[allow(unsafe_code)]
            let fd = unsafe { BorrowedFd::borrow_raw(n) };
            links.push(fd.try_clone_to_owned()?);
        }
        Ok(links)
    }

    /// The loader process ([`LOADER_COMMAND`]): loads and attaches the
    /// program, hands the daemon its maps and links over `socket` (its
    /// stdin), and returns, its part done (the daemon holds them now).
    pub fn loader(socket: BorrowedFd<'_>) -> std::io::Result<()> {
        let loaded = load();
        let links = match &loaded {
            Ok(_) => own_links()?,
            Err(_) => Vec::new(),
        };
        let fds: Vec<BorrowedFd<'_>> = match &loaded {
            Ok(l) => {
                let (Map::RingBuf(ring), Map::Array(lost)) = (&l.ring, &l.lost) else {
                    return send(
                        socket,
                        &Err::<(), _>(loader_failed("maps of another type".to_owned())),
                        &[],
                    );
                };
                [ring.fd().as_fd(), lost.fd().as_fd()]
                    .into_iter()
                    .chain(links.iter().map(AsFd::as_fd))
                    .collect()
            }
            Err(_) => Vec::new(),
        };
        send(socket, &loaded.as_ref().map(drop).map_err(Clone::clone), &fds)
    }

    fn send(socket: BorrowedFd<'_>, answer: &Result<(), Unavailable>, fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(answer).map_err(std::io::Error::other)?;
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(std::io::Error::other(format!("{} descriptors do not fit", fds.len())));
        }
        rustix::net::sendmsg(socket, &[IoSlice::new(&bytes)], &mut control, SendFlags::empty())?;
        Ok(())
    }
}

#[cfg(portwatch_bpf)]
pub use kernel::{loader, Kernel};

/// The agent's hidden command that loads the kernel program in a process
/// of its own (see [`Kernel::probe`]); not for people to run.
pub const LOADER_COMMAND: &str = "load-kernel-events";

/// Stand-in for an agent built without the program: the probe says so.
#[cfg(not(portwatch_bpf))]
pub struct Kernel(());

#[cfg(not(portwatch_bpf))]
impl Kernel {
    /// Always [`Unavailable::NotBuilt`].
    pub fn probe() -> Result<Kernel, Unavailable> {
        Err(Unavailable::NotBuilt)
    }

    /// Never called: there is no kernel program.
    pub fn wait(&mut self, timeout: Duration) -> Batch {
        std::thread::sleep(timeout);
        Batch::default()
    }
}

/// The loader of an agent built without the program: nothing to load.
#[cfg(not(portwatch_bpf))]
pub fn loader(_socket: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
    Err(std::io::Error::other(Unavailable::NotBuilt.to_string()))
}

/// Starts kernel events unless `enabled` is false; the reason when they
/// cannot be had.
pub fn start(enabled: bool) -> Result<Kernel, Unavailable> {
    if !enabled {
        return Err(Unavailable::Off);
    }
    Kernel::probe()
}

/// Drains `kernel` on a thread of its own, sending each non-empty batch
/// (or a change of the lost count) as `wrap(batch)` until `tx` is closed.
pub fn spawn_reader<W: Send + 'static>(mut kernel: Kernel, tx: Sender<W>, wrap: fn(Batch) -> W) {
    std::thread::Builder::new()
        .name("events".into())
        .spawn(move || {
            let mut lost = 0;
            loop {
                let batch = kernel.wait(Duration::from_secs(1));
                if batch.events.is_empty() && batch.unreadable == 0 && batch.lost_total == lost {
                    continue;
                }
                lost = batch.lost_total;
                if tx.send(wrap(batch)).is_err() {
                    return;
                }
            }
        })
        .map(drop)
        .unwrap_or_else(|e| tracing::error!(error = %e, "cannot start the event reader thread"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_time_of_now_is_dated_between_the_wall_clock_before_and_after() {
        for _ in 0..1_000 {
            let before = jiff::Timestamp::now();
            let now = monotonic_ns();
            let (gap, offset) = clock_offset();
            let at = jiff::Timestamp::from_nanosecond(i128::from(now) + offset).unwrap();
            let after = jiff::Timestamp::now();
            // Off by at most half the gap of its reads (a preemption between
            // them on a loaded machine widens it), and a microsecond each way:
            // jiff reads the same clock, rounded.
            let slack = jiff::SignedDuration::from_nanos(i64::try_from(gap / 2).unwrap() + 1_000);
            assert!(
                before - slack <= at && at <= after + slack,
                "{before} {at} {after} (gap {gap} ns)"
            );
        }
    }

    #[test]
    fn the_loaders_answer_says_why_the_kernel_refused() {
        let refused: Result<(), Unavailable> = Err(Unavailable::Refused {
            what: "tcp_state".into(),
            message: "EPERM".into(),
        });
        let back: Result<(), Unavailable> = serde_json::from_slice(&serde_json::to_vec(&refused).unwrap()).unwrap();
        assert_eq!(back.unwrap_err().to_string(), "the kernel refused tcp_state: EPERM");
        let loaded: Result<(), Unavailable> = serde_json::from_slice(b"{\"Ok\":null}").unwrap();
        assert!(loaded.is_ok());
    }

    #[test]
    fn capabilities_for_events_are_bpf_with_perfmon_or_sys_admin() {
        assert!(capable(1 << 21));
        assert!(capable((1 << 38) | (1 << 39)));
        assert!(!capable(1 << 39));
        assert!(!capable(0));
    }

    #[test]
    fn kernel_time_converts_to_wall_time_now() {
        let before = jiff::Timestamp::now();
        let at = wall_time(monotonic_ns());
        let after = jiff::Timestamp::now();
        assert!(
            at >= before - jiff::SignedDuration::from_millis(1) && at <= after + jiff::SignedDuration::from_millis(1)
        );
    }
}
