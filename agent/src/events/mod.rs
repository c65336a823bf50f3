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

use std::collections::{HashMap, HashSet};
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
    /// Events of listeners lost so far (did not fit the ring buffer), since
    /// the program loaded.
    pub lost_total: u64,
    /// Events of connections (for the peers) lost so far, and ports the
    /// program could not add to its table of ports whose connections it
    /// tells, since the program loaded.
    pub peers_lost_total: u64,
    /// CLOCK_MONOTONIC nanoseconds the drain began at: every event dated
    /// before it is in this batch or an earlier one.
    pub drained_ns: u64,
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

    /// The maps the loader hands over, in this order, before the links.
    const MAPS: [&str; 3] = ["events", "lost", "peer_ports"];

    /// The most descriptors the loader hands over: the maps and one link per
    /// program.
    const MAX_FDS: usize = MAPS.len() + PROGRAMS.len();

    /// The attached program, as the daemon holds it: its links (closing them
    /// detaches it) and its maps. Detaches when dropped.
    pub struct Kernel {
        _links: Vec<OwnedFd>,
        ring: RingBuf<MapData>,
        lost: Array<MapData, u64>,
        ports: Option<PeerPorts>,
    }

    /// A key of the program's `peer_ports` (`struct port_key`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    #[repr(C)]
    struct PortKey {
        netns: u32,
        port: u16,
        pad: u16,
    }

    // SAFETY: plain old data of C layout, every bit pattern valid, no padding
    // (the pad is a field).
    #[allow(unsafe_code)]
    unsafe impl aya::Pod for PortKey {}

    /// The program's table of (network namespace, port) pairs whose
    /// connections it tells (`peer_ports`), each with the CLOCK_MONOTONIC
    /// time it was added: the program adds a listener's as the listener
    /// opens; the agent adds those open before the program loaded and
    /// removes those nothing listens on any more.
    pub struct PeerPorts {
        map: aya::maps::HashMap<MapData, PortKey, u64>,
    }

    impl PeerPorts {
        /// Makes the table hold `wanted`, the TCP listeners a full scan
        /// begun at `scanned_at_ns` found: adds those missing, and removes
        /// the others but those added since the scan began (a listener the
        /// scan could not have seen; it is in the next). Returns how many
        /// pairs were added and removed.
        pub fn sync(&mut self, wanted: &HashSet<(u64, u16)>, scanned_at_ns: u64) -> Result<(usize, usize), String> {
            let key = |&(netns, port): &(u64, u16)| PortKey {
                netns: u32::try_from(netns).unwrap_or(u32::MAX),
                port,
                pad: 0,
            };
            let wanted: HashSet<PortKey> = wanted.iter().map(key).collect();
            let held: HashMap<PortKey, u64> = self
                .map
                .iter()
                .collect::<Result<_, _>>()
                .map_err(|e| format!("cannot read the kernel's table of ports: {}", chain(&e)))?;
            let mut removed = 0;
            for (k, added_at) in &held {
                // Gone already (a race with nothing): the same result.
                if !wanted.contains(k) && *added_at < scanned_at_ns && self.map.remove(k).is_ok() {
                    removed += 1;
                }
            }
            let mut added = 0;
            let now = monotonic_ns();
            for k in wanted.iter().filter(|k| !held.contains_key(k)) {
                self.map
                    .insert(k, now, 0)
                    .map_err(|e| format!("cannot add a port to the kernel's table: {}", chain(&e)))?;
                added += 1;
            }
            Ok((added, removed))
        }
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
        pub fn probe(peers: bool) -> Result<Kernel, Unavailable> {
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
            let mut command = Command::new("/proc/self/exe");
            command.arg(LOADER_COMMAND);
            if peers {
                command.arg(LOADER_PEERS_FLAG);
            }
            let mut child = command
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
            if fds.len() < MAPS.len() {
                return Err(loader_failed(format!(
                    "{} descriptors handed over, not the maps",
                    fds.len()
                )));
            }
            let links = fds.split_off(MAPS.len());
            let [ring_fd, lost_fd, ports_fd]: [OwnedFd; MAPS.len()] =
                fds.try_into().map_err(|_| loader_failed("not the maps".to_owned()))?;
            let map = |fd: OwnedFd, what: &str| {
                MapData::from_fd(fd)
                    .and_then(Map::from_map_data)
                    .map_err(|e| refused(what, &e))
            };
            let ring = RingBuf::try_from(map(ring_fd, "events")?).map_err(|e| refused("events", &e))?;
            let lost = Array::try_from(map(lost_fd, "lost")?).map_err(|e| refused("lost", &e))?;
            let ports = match peers {
                true => Some(PeerPorts {
                    map: aya::maps::HashMap::try_from(map(ports_fd, "peer_ports")?)
                        .map_err(|e| refused("peer_ports", &e))?,
                }),
                false => None,
            };
            Ok(Kernel {
                _links: links,
                ring,
                lost,
                ports,
            })
        }

        /// The program's table of ports whose connections it tells, for
        /// the daemon to keep (the reader thread takes the rest); `None`
        /// unless loaded to count peers.
        pub fn take_peer_ports(&mut self) -> Option<PeerPorts> {
            self.ports.take()
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
            let mut batch = Batch {
                drained_ns: monotonic_ns(),
                ..Batch::default()
            };
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
            batch.peers_lost_total = self.lost.get(&1, 0).unwrap_or(0);
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
        /// In the order of [`MAPS`].
        maps: Vec<Map>,
    }

    /// Loads and attaches the program in this process (the loader's);
    /// `peers`: with the connections' events.
    fn load(peers: bool) -> Result<Loaded, Unavailable> {
        // The loader (and its BTF) is dropped at the end of this statement.
        let mut ebpf = aya::EbpfLoader::new()
            .override_global("peers_on", &u8::from(peers), true)
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
        let maps = MAPS
            .iter()
            .map(|name| ebpf.take_map(name).ok_or_else(|| missing(name)))
            .collect::<Result<_, _>>()?;
        Ok(Loaded { _ebpf: ebpf, maps })
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
    pub fn loader(socket: BorrowedFd<'_>, peers: bool) -> std::io::Result<()> {
        let loaded = load(peers);
        let links = match &loaded {
            Ok(_) => own_links()?,
            Err(_) => Vec::new(),
        };
        let fds: Vec<BorrowedFd<'_>> = match &loaded {
            Ok(l) => {
                let [Map::RingBuf(ring), Map::Array(lost), Map::HashMap(ports)] = &l.maps[..] else {
                    return send(
                        socket,
                        &Err::<(), _>(loader_failed("maps of another type".to_owned())),
                        &[],
                    );
                };
                [ring.fd().as_fd(), lost.fd().as_fd(), ports.fd().as_fd()]
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
pub use kernel::{loader, Kernel, PeerPorts};

/// The agent's hidden command that loads the kernel program in a process
/// of its own (see [`Kernel::probe`]); not for people to run.
pub const LOADER_COMMAND: &str = "load-kernel-events";

/// The loader's flag for a program that tells connections too (`peers`).
pub const LOADER_PEERS_FLAG: &str = "--peers";

/// Stand-in for an agent built without the program: the probe says so.
#[cfg(not(portwatch_bpf))]
pub struct Kernel(());

/// Stand-in for the program's table of ports, in an agent built without it.
#[cfg(not(portwatch_bpf))]
pub struct PeerPorts(());

#[cfg(not(portwatch_bpf))]
impl PeerPorts {
    /// Never called: there is no kernel program.
    pub fn sync(&mut self, _wanted: &HashSet<(u64, u16)>, _scanned_at_ns: u64) -> Result<(usize, usize), String> {
        Err(Unavailable::NotBuilt.to_string())
    }
}

#[cfg(not(portwatch_bpf))]
impl Kernel {
    /// Always [`Unavailable::NotBuilt`].
    pub fn probe(_peers: bool) -> Result<Kernel, Unavailable> {
        Err(Unavailable::NotBuilt)
    }

    /// Never called: there is no kernel program.
    pub fn take_peer_ports(&mut self) -> Option<PeerPorts> {
        None
    }

    /// Never called: there is no kernel program.
    pub fn wait(&mut self, timeout: Duration) -> Batch {
        std::thread::sleep(timeout);
        Batch::default()
    }
}

/// The loader of an agent built without the program: nothing to load.
#[cfg(not(portwatch_bpf))]
pub fn loader(_socket: std::os::fd::BorrowedFd<'_>, _peers: bool) -> std::io::Result<()> {
    Err(std::io::Error::other(Unavailable::NotBuilt.to_string()))
}

/// Starts kernel events unless `enabled` is false, with the connections'
/// events when `peers`; the reason when they cannot be had.
pub fn start(enabled: bool, peers: bool) -> Result<Kernel, Unavailable> {
    if !enabled {
        return Err(Unavailable::Off);
    }
    Kernel::probe(peers)
}

/// Drains `kernel` on a thread of its own, sending each non-empty batch
/// (or a change of the lost count) as `wrap(batch)` until `tx` is closed.
pub fn spawn_reader<W: Send + 'static>(mut kernel: Kernel, tx: Sender<W>, wrap: fn(Batch) -> W) {
    std::thread::Builder::new()
        .name("events".into())
        .spawn(move || {
            let mut lost = (0, 0);
            loop {
                let batch = kernel.wait(Duration::from_secs(1));
                let now_lost = (batch.lost_total, batch.peers_lost_total);
                if batch.events.is_empty() && batch.unreadable == 0 && now_lost == lost {
                    continue;
                }
                lost = now_lost;
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
