#!/usr/bin/env python3
"""A fixture of real processes holding real sockets, for benchmarking and testing the scanner.

The leader forks `--procs - 1` workers. Together they hold:

* `--listeners` listening TCP sockets, 25 % each on 0.0.0.0, 127.0.0.1, :: and ::1. IPv6 sockets
  are IPV6_V6ONLY so that v4 and v6 listeners can share port numbers; `--dual-stack` of the ::
  listeners are dual-stack (IPV6_V6ONLY=0) on ports of their own. One 0.0.0.0 listener is the
  pre-fork listener: opened by the leader before forking and kept by the leader and the first
  `--prefork - 1` workers, so it has several owners.
* `--udp` bound, unconnected UDP sockets, split the same way (and `--dual-stack` likewise).
* `--conns` established loopback TCP connections, spread over the listeners. Both ends are held by
  fixture processes (the client end by one worker, the accepted end by the listener's owner), so
  each connection is two socket fds.
* `--extra-fds` non-socket fds per worker: /dev/null, pipes, memfds, eventfds, directories and a
  read-only regular file, as a real process would have.
* `--udp-connected` connected UDP sockets (state ESTAB: they must NOT be listed as listeners).

Every worker also has stdin/stdout/stderr and two control pipes to the leader; the leader has two
control pipes per worker. Listeners use fixed ports counted from `--base-port` (TCP and UDP port
spaces are separate); nothing but loopback is ever connected to.

When everything is set up, the leader prints exactly one line `READY <pid-of-leader>` to stdout and
then sleeps until SIGTERM or SIGINT, on which it terminates every worker, reaps them and exits 0.
Workers also die with the leader (PR_SET_PDEATHSIG and EOF on their control pipe), so no orphan is
left even if the leader is SIGKILLed. If setup fails or exceeds `--timeout`, the reason goes to
stderr, the workers are torn down and the exit status is 1. If a worker dies after READY, the
fixture is no longer what it claims to be: the leader says so on stderr and exits 1.

`--manifest PATH` writes the ground truth (every listening TCP / unconnected UDP socket with its
owning pids) as JSON, so tests can check a scanner without trusting `ss`.

Python 3 standard library only. Medium (the default) sets up in a few seconds on 2 cores.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import gc
import json
import os
import resource
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

# The four listener classes, in the order the 25 % shares are handed out.
CLASSES = ("0.0.0.0", "127.0.0.1", "::", "::1")
# Where a client connects to reach a listener of each class.
CONNECT_TO = {"0.0.0.0": "127.0.0.1", "127.0.0.1": "127.0.0.1", "::": "::1", "::1": "::1"}
# Linux prctl(2) option: signal delivered to this process when its parent dies.
PR_SET_PDEATHSIG = 1
# Default Linux ephemeral port range start; listener ports should stay below it.
EPHEMERAL_START = 32768


class SetupError(Exception):
    """Setup failed; the message says why, for a human."""


class Shutdown(Exception):
    """SIGTERM or SIGINT reached the leader."""


@dataclass(frozen=True)
class Bound:
    """One socket to bind: protocol, address, port and (IPv6 only) IPV6_V6ONLY."""

    proto: str  # "tcp" or "udp"
    addr: str
    port: int
    v6only: bool | None  # None for IPv4

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.addr else socket.AF_INET

    def __str__(self) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"{self.proto} {host}:{self.port}"


@dataclass
class WorkerPlan:
    """Everything one worker opens."""

    index: int
    listeners: list[Bound] = field(default_factory=list)
    # Connections to accept on each of `listeners` (same index).
    accepts: list[int] = field(default_factory=list)
    udp: list[Bound] = field(default_factory=list)
    # Client ends to open: (address to connect to, port).
    connects: list[tuple[str, int]] = field(default_factory=list)
    # Connected UDP sockets to open: (address, port of one of the fixture's UDP sockets).
    udp_connects: list[tuple[str, int]] = field(default_factory=list)
    extra_fds: int = 0


@dataclass
class Plan:
    workers: list[WorkerPlan]
    prefork: Bound | None
    prefork_workers: int  # the first N workers keep the pre-fork listener
    port_span: tuple[int, int]  # lowest and highest port used
    backlog: int


def split4(n: int) -> list[int]:
    """n split over the four classes as evenly as possible (earlier classes get the remainder)."""
    return [n // 4 + (1 if i < n % 4 else 0) for i in range(4)]


def bound_sockets(proto: str, n: int, dual: int, base: int) -> list[Bound]:
    """`n` sockets of `proto`, 25 % per class, interleaved by class so round-robin spreads them.

    IPv4 (0.0.0.0, 127.0.0.1) take ports base, base+1, ...; V6ONLY IPv6 (::, ::1) take the same
    numbers again; the `dual` dual-stack :: sockets take ports after both, as they clash with v4.
    """
    per_class = split4(n)
    dual = min(dual, per_class[2])
    n4 = per_class[0] + per_class[1]
    n6 = per_class[2] - dual + per_class[3]
    queues: list[list[Bound]] = [[] for _ in CLASSES]
    port4, port6, port_dual = base, base, base + max(n4, n6)
    for cls, addr in enumerate(CLASSES):
        for k in range(per_class[cls]):
            if ":" not in addr:
                queues[cls].append(Bound(proto, addr, port4, None))
                port4 += 1
            elif addr == "::" and k < dual:
                queues[cls].append(Bound(proto, addr, port_dual, False))
                port_dual += 1
            else:
                queues[cls].append(Bound(proto, addr, port6, True))
                port6 += 1
    out = []
    for k in range(max(per_class, default=0)):
        out.extend(q[k] for q in queues if k < len(q))
    return out


def make_plan(args: argparse.Namespace, somaxconn: int) -> Plan:
    """Decide which worker holds what. Pure: no sockets are opened here."""
    nworkers = args.procs - 1
    workers = [WorkerPlan(index=i, extra_fds=args.extra_fds) for i in range(nworkers)]

    dual_tcp = args.dual_stack if args.dual_stack >= 0 else max(1, args.listeners // 400)
    dual_udp = args.dual_stack if args.dual_stack >= 0 else max(1, args.udp // 400)
    tcp = bound_sockets("tcp", args.listeners, dual_tcp if args.listeners >= 3 else 0, args.base_port)
    udp = bound_sockets("udp", args.udp, dual_udp if args.udp >= 3 else 0, args.base_port)
    ports = [b.port for b in tcp + udp]
    span = (min(ports), max(ports)) if ports else (args.base_port, args.base_port)

    # The first listener (0.0.0.0:base) is the pre-fork one, opened by the leader.
    prefork = tcp[0] if tcp and args.prefork > 0 else None
    targets = tcp[1:] if prefork else tcp
    for i, b in enumerate(targets):
        w = workers[i % nworkers]
        w.listeners.append(b)
        w.accepts.append(0)
    for i, b in enumerate(udp):
        workers[i % nworkers].udp.append(b)

    # Connection j goes to listener j % T; its client end is held by a worker other than the
    # listener's owner whenever there is more than one worker. Dual-stack listeners get v4 and v6
    # clients alternately (the accepted end of a v4 client is ::ffff:127.0.0.1).
    if args.conns and not targets:
        raise SetupError("--conns needs at least one listener besides the pre-fork one")
    owner_slot = {}
    for i, b in enumerate(targets):
        owner_slot[i] = (i % nworkers, i // nworkers)
    for j in range(args.conns):
        t = j % len(targets)
        b = targets[t]
        server, slot = owner_slot[t]
        workers[server].accepts[slot] += 1
        client = (server + 1 + j // len(targets)) % nworkers
        host = CONNECT_TO[b.addr]
        if b.v6only is False and j % 2:
            host = "127.0.0.1"
        workers[client].connects.append((host, b.port))

    per_listener = -(-args.conns // len(targets)) if targets else 0
    backlog = max(64, min(somaxconn, 4096))
    if per_listener >= backlog:
        # All clients connect before anyone accepts, so every connection must fit in a backlog.
        raise SetupError(
            f"{per_listener} connections per listener exceed the accept backlog {backlog} "
            "(net.core.somaxconn); use more listeners or fewer connections"
        )

    v4_udp = [b for b in udp if b.family == socket.AF_INET]
    if args.udp_connected and not v4_udp:
        raise SetupError("--udp-connected needs at least one IPv4 UDP socket")
    for j in range(args.udp_connected):
        b = v4_udp[j % len(v4_udp)]
        workers[j % nworkers].udp_connects.append(("127.0.0.1", b.port))

    return Plan(workers, prefork, min(args.prefork - 1, nworkers) if prefork else 0, span, backlog)


# ----------------------------------------------------------------------------------------------
# Workers


def open_extra_fds(n: int, keep: list) -> None:
    """Open `n` non-socket fds of assorted kinds and keep them referenced in `keep`."""
    kinds = ("devnull", "pipe", "memfd", "eventfd", "dir", "file")
    k = 0
    while n > 0:
        kind = kinds[k % len(kinds)]
        k += 1
        if kind == "pipe":
            if n < 2:
                continue
            keep.extend(os.pipe())
            n -= 2
            continue
        if kind == "devnull":
            keep.append(os.open(os.devnull, os.O_RDWR))
        elif kind == "memfd":
            keep.append(os.memfd_create("portwatch-fixture"))
        elif kind == "eventfd":
            keep.append(os.eventfd(0))
        elif kind == "dir":
            keep.append(os.open("/", os.O_RDONLY | os.O_DIRECTORY))
        else:
            keep.append(os.open(os.path.abspath(__file__), os.O_RDONLY))
        n -= 1


def bind(b: Bound, backlog: int) -> socket.socket:
    kind = socket.SOCK_STREAM if b.proto == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(b.family, kind)
    try:
        if b.proto == "tcp":
            # Lets a rerun on the host bind ports that still have TIME_WAIT connections.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if b.v6only is not None:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if b.v6only else 0)
        s.bind((b.addr, b.port))
        if b.proto == "tcp":
            s.listen(backlog)
    except OSError as e:
        s.close()
        hint = ""
        if e.errno == errno.EADDRINUSE:
            hint = " (run in a fresh network namespace, or pick another --base-port)"
        elif e.errno == errno.EADDRNOTAVAIL:
            hint = " (is loopback up? `ip link set lo up`; is IPv6 enabled?)"
        raise SetupError(f"cannot bind {b}{' (dual-stack)' if b.v6only is False else ''}: {e}{hint}")
    return s


class Channel:
    """A worker's two control pipes: lines to the leader, lines from the leader."""

    def __init__(self, rfd: int, wfd: int):
        self.rfd, self.wfd, self.buf = rfd, wfd, b""

    def send(self, line: str) -> None:
        data = (line.replace("\n", " ") + "\n").encode()
        while data:
            data = data[os.write(self.wfd, data):]

    def recv(self) -> str | None:
        """The next line, or None at EOF (the leader is gone)."""
        while b"\n" not in self.buf:
            chunk = os.read(self.rfd, 4096)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()


def worker_main(plan: WorkerPlan, backlog: int, deadline: float, ch: Channel) -> None:
    """Open everything in `plan`, in two phases separated by the leader's barrier."""
    keep: list = []  # every object whose fd must stay open
    open_extra_fds(plan.extra_fds, keep)
    listeners = [bind(b, backlog) for b in plan.listeners]
    keep.extend(bind(b, backlog) for b in plan.udp)
    ch.send("bound")

    # Phase 2 starts when every worker has bound its listeners.
    if ch.recv() != "go":
        os._exit(1)
    for host, port in plan.connects:
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            s.connect((host, port))
        except OSError as e:
            raise SetupError(f"cannot connect to {host} port {port}: {e}")
        keep.append(s)
    for host, port in plan.udp_connects:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect((host, port))
        keep.append(s)
    for ls, n in zip(listeners, plan.accepts):
        for _ in range(n):
            ls.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                conn, _ = ls.accept()
            except OSError as e:  # socket.timeout is an OSError
                raise SetupError(f"accept on {ls.getsockname()}: {e}")
            keep.append(conn)
    keep.extend(listeners)
    ch.send("ready")

    # Hold everything until the leader says "exit" or goes away (EOF). SIGTERM kills us as well.
    while True:
        line = ch.recv()
        if line is None or line == "exit":
            os._exit(0)


def start_worker(index: int, plan: Plan, deadline: float, prefork_fd: int | None) -> tuple[int, int, int]:
    """Fork worker `index`; returns (pid, fd to read its lines, fd to write lines to it)."""
    to_worker_r, to_worker_w = os.pipe()
    to_leader_r, to_leader_w = os.pipe()
    leader_pid = os.getpid()
    pid = os.fork()
    if pid:
        os.close(to_worker_r)
        os.close(to_leader_w)
        return pid, to_leader_r, to_worker_w

    # Child. Never return into the leader's code: always os._exit.
    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the leader, who tears down
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != leader_pid:  # the leader died before prctl
            os._exit(1)
        # Drop every fd inherited from the leader (other workers' pipes, the leader's epoll, the
        # pre-fork listener unless this worker shares it, whatever the leader's caller leaked) so
        # that fd counts are exact and EOF on the control pipe means the leader is gone.
        keep = [0, 1, 2, to_worker_r, to_leader_w]
        if prefork_fd is not None and index < plan.prefork_workers:
            keep.append(prefork_fd)
        keep.sort()
        for lo, hi in zip(keep, keep[1:] + [os.sysconf("SC_OPEN_MAX")]):
            os.closerange(lo + 1, hi)  # close_range(2): cheap whatever the limit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)  # only the leader writes to stdout
        os.close(devnull)
        ch = Channel(to_worker_r, to_leader_w)
        try:
            worker_main(plan.workers[index], plan.backlog, deadline, ch)
        except SetupError as e:
            ch.send(f"err worker {index} (pid {os.getpid()}): {e}")
        except Exception as e:  # report anything, the leader decides
            ch.send(f"err worker {index} (pid {os.getpid()}): {type(e).__name__}: {e}")
    finally:
        os._exit(code)


# ----------------------------------------------------------------------------------------------
# Leader


class Leader:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.workers: list[tuple[int, int, int]] = []  # (pid, read fd, write fd)
        self.bufs: dict[int, bytes] = {}
        self.sel = selectors.DefaultSelector()

    def log(self, msg: str) -> None:
        if self.args.verbose:
            print(f"fixture: {msg}", file=sys.stderr, flush=True)

    def collect(self, expect: str, deadline: float) -> None:
        """Wait until every worker has sent the line `expect`; raise SetupError on any failure."""
        pending = {rfd for _, rfd, _ in self.workers}
        pid_of = {rfd: pid for pid, rfd, _ in self.workers}
        while pending:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                raise SetupError(
                    f"timed out after {self.args.timeout} s waiting for {len(pending)} of "
                    f"{len(self.workers)} workers to be {expect} (raise --timeout?)"
                )
            for key, _ in self.sel.select(timeout):
                rfd = key.fd
                chunk = os.read(rfd, 65536)
                if not chunk:
                    raise SetupError(f"worker pid {pid_of[rfd]} died during setup")
                self.bufs[rfd] = self.bufs.get(rfd, b"") + chunk
                while b"\n" in self.bufs[rfd]:
                    line, self.bufs[rfd] = self.bufs[rfd].split(b"\n", 1)
                    text = line.decode()
                    if text.startswith("err "):
                        raise SetupError(text[4:])
                    if text != expect:
                        raise SetupError(f"worker pid {pid_of[rfd]} said {text!r}, expected {expect!r}")
                    pending.discard(rfd)

    def broadcast(self, line: str) -> None:
        for pid, _, wfd in self.workers:
            try:
                os.write(wfd, (line + "\n").encode())
            except OSError as e:
                raise SetupError(f"cannot write to worker pid {pid}: {e}")

    def teardown(self) -> None:
        """Terminate and reap every worker; SIGKILL those still alive after 10 s."""
        pids = {pid for pid, _, _ in self.workers}
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while pids:
            for pid in list(pids):
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done = pid
                if done:
                    pids.discard(pid)
            if pids and time.monotonic() > deadline:
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                deadline = float("inf")
            if pids:
                time.sleep(0.02)

    def raise_fd_limit(self, plan: Plan) -> None:
        """Soft RLIMIT_NOFILE to the hard limit, and the hard limit up if root and needed."""
        need = 64 + 2 * len(plan.workers)  # the leader's pipes
        for w in plan.workers:
            conns_here = len(w.connects) + sum(w.accepts) + len(w.udp_connects)
            need = max(need, 64 + len(w.listeners) + len(w.udp) + conns_here + w.extra_fds)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < need:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
                return
            except (ValueError, OSError) as e:
                raise SetupError(f"need {need} fds per process, hard RLIMIT_NOFILE is {hard}: {e}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    def write_manifest(self, plan: Plan, path: str) -> None:
        """The ground truth: every listening TCP and unconnected UDP socket with its owners."""
        leader = os.getpid()
        pids = [pid for pid, _, _ in self.workers]
        rows = []
        if plan.prefork is not None:
            owners = [leader] + pids[: plan.prefork_workers]
            rows.append((plan.prefork, owners))
        for w in plan.workers:
            rows.extend((b, [pids[w.index]]) for b in w.listeners + w.udp)
        doc = {
            "leader": leader,
            "workers": pids,
            "sockets": [
                {"proto": b.proto, "addr": b.addr, "port": b.port, "v6only": b.v6only,
                 "pids": sorted(owners)}
                for b, owners in rows
            ],
            "connections": self.args.conns,
            "udp_connected": self.args.udp_connected,
            "extra_fds_per_worker": self.args.extra_fds,
        }
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1)
        os.replace(tmp, path)

    def run(self) -> int:
        args = self.args
        t0 = time.monotonic()
        deadline = t0 + args.timeout
        try:
            with open("/proc/sys/net/core/somaxconn") as f:
                somaxconn = int(f.read())
        except OSError:
            somaxconn = 4096
        plan = make_plan(args, somaxconn)
        lo, hi = plan.port_span
        if hi >= EPHEMERAL_START:
            self.log(f"warning: ports up to {hi} overlap the usual ephemeral range")
        self.raise_fd_limit(plan)

        prefork = None
        if plan.prefork is not None:
            prefork = bind(plan.prefork, plan.backlog)
        # Workers are forked from this state: freeze the heap so refcount/GC traffic in the
        # children does not copy it page by page.
        gc.collect()
        gc.freeze()
        for i in range(len(plan.workers)):
            pid, rfd, wfd = start_worker(i, plan, deadline, prefork.fileno() if prefork else None)
            self.workers.append((pid, rfd, wfd))
            self.sel.register(rfd, selectors.EVENT_READ)
        self.log(f"forked {len(self.workers)} workers in {time.monotonic() - t0:.2f} s")

        self.collect("bound", deadline)
        self.log(f"all sockets bound at {time.monotonic() - t0:.2f} s (ports {lo}-{hi})")
        self.broadcast("go")
        self.collect("ready", deadline)
        setup = time.monotonic() - t0
        if args.manifest:
            self.write_manifest(plan, args.manifest)

        if args.verbose:
            nfds = len(os.listdir("/proc/self/fd"))
            nfds += sum(len(os.listdir(f"/proc/{pid}/fd")) for pid, _, _ in self.workers)
            self.log(
                f"ready in {setup:.2f} s: {args.procs} processes, {args.listeners} tcp listeners, "
                f"{args.udp} udp sockets, {args.conns} connections, {nfds} fds in all"
            )
        print(f"READY {os.getpid()}", flush=True)

        # Sleep until a signal; a worker's EOF means it died, which breaks the fixture.
        while True:
            for key, _ in self.sel.select():
                if not os.read(key.fd, 4096):
                    pid = next(p for p, r, _ in self.workers if r == key.fd)
                    raise SetupError(f"worker pid {pid} died after READY; the fixture is broken")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Hold real listening/UDP/established sockets in many processes until SIGTERM.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--procs", type=int, default=200, help="processes in total, leader included (>= 2)")
    p.add_argument("--listeners", type=int, default=5000, help="listening TCP sockets")
    p.add_argument("--udp", type=int, default=500, help="bound unconnected UDP sockets")
    p.add_argument("--conns", type=int, default=20000, help="established loopback TCP connections")
    p.add_argument("--extra-fds", type=int, default=16, help="non-socket fds per worker")
    p.add_argument("--udp-connected", type=int, default=0, help="connected (ESTAB) UDP sockets")
    p.add_argument("--dual-stack", type=int, default=-1,
                   help="dual-stack :: sockets per protocol (-1: 1 per 400 sockets, at least 1)")
    p.add_argument("--prefork", type=int, default=4,
                   help="processes sharing the pre-fork listener, leader included (0: none)")
    p.add_argument("--base-port", type=int, default=10000, help="first listener port")
    p.add_argument("--timeout", type=float, default=120, help="setup time limit, seconds")
    p.add_argument("--manifest", metavar="PATH", help="write the expected sockets and owners as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    args = p.parse_args(argv)
    if args.procs < 2:
        p.error("--procs must be at least 2 (a leader and a worker)")
    for name in ("listeners", "udp", "conns", "extra_fds", "udp_connected", "prefork"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must not be negative")
    if not 1024 <= args.base_port <= 65535:
        p.error("--base-port must be in 1024..65535")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    leader = Leader(args)

    def on_signal(signum, _frame):
        raise Shutdown(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        leader.run()
        return 1  # not reached: run() only leaves by an exception
    except Shutdown:
        return 0
    except SetupError as e:
        print(f"fixture: error: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        # Tear down with signals blocked so a second SIGTERM cannot interrupt the reaping.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        leader.teardown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
