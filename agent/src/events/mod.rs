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
#[derive(Debug, thiserror::Error)]
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
    let offset = best.map_or(0, |(_, offset)| offset);
    jiff::Timestamp::from_nanosecond(i128::from(ktime_ns) + offset).unwrap_or_else(|_| jiff::Timestamp::now())
}

#[cfg(portwatch_bpf)]
mod kernel {
    use super::*;
    use aya::maps::{Array, MapData, RingBuf};
    use aya::programs::BtfTracePoint;
    use aya::{Btf, Ebpf};
    use std::os::fd::AsFd;

    /// Where the kernel exposes its BTF.
    const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

    static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/portwatch.bpf.o"));

    /// The (program, tracepoint) pairs the object attaches.
    const PROGRAMS: [(&str, &str); 3] = [
        ("tcp_state", "inet_sock_set_state"),
        ("syscall_exit", "sys_exit"),
        ("process_exit", "sched_process_exit"),
    ];

    /// The loaded, attached program and its maps. Detaches when dropped.
    pub struct Kernel {
        _ebpf: Ebpf,
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

    impl Kernel {
        /// Loads and attaches the program: the run-time probe.
        ///
        /// The kernel's BTF (`/sys/kernel/btf/vmlinux`, about 5 MB, some
        /// 13 MB once parsed) is needed twice: by the loader, for the
        /// program's CO-RE relocations, and to find each tracepoint's type.
        /// aya's loader always parses its own copy, so the copy for the
        /// tracepoints is parsed only once the loader is gone: two copies at
        /// once were most of the daemon's peak memory. It is dropped before
        /// this returns.
        pub fn probe() -> Result<Kernel, Unavailable> {
            std::fs::File::open(BTF_PATH).map_err(|e| Unavailable::NoBtf(format!("{BTF_PATH}: {e}")))?;
            if let Some(caps) = effective_capabilities().filter(|&c| !capable(c)) {
                return Err(Unavailable::Capabilities(caps));
            }
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
            let ring = RingBuf::try_from(ebpf.take_map("events").ok_or_else(|| missing("events"))?)
                .map_err(|e| refused("events", &e))?;
            let lost = Array::try_from(ebpf.take_map("lost").ok_or_else(|| missing("lost"))?)
                .map_err(|e| refused("lost", &e))?;
            Ok(Kernel {
                _ebpf: ebpf,
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
}

#[cfg(portwatch_bpf)]
pub use kernel::Kernel;

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
            let at = wall_time(monotonic_ns());
            let after = jiff::Timestamp::now();
            // A microsecond each way: jiff reads the same clock, rounded.
            let us = jiff::SignedDuration::from_micros(1);
            assert!(before - us <= at && at <= after + us, "{before} {at} {after}");
        }
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
