#!/usr/bin/env python3
"""The daemon on the fixture (run by run.sh inside its namespaces, with the fixture up, as root):

  python3 agent/benches/daemon.py --agent BIN --collector BIN --portwatch BIN [--intervals N]

A collector on 127.0.0.1 and `portwatch-agent run` against it, one agent at a time:

1. Memory: the agent at a 1 s interval, polling (--no-events: a full scan every second) and with
   kernel events; after N intervals (default 30), VmRSS and VmHWM of /proc/PID/status, and its
   thread count.
2. Idle CPU: the agent at the default 10 s interval, with kernel events (with and without the
   firewall: its nftables generation is checked every interval) and polling, and polling at 1 s; after the first snapshot is shipped (the host is known to the collector, then 2 s),
   its CPU time (events.py's cpu_ms) over 10 s of nothing changing. The same with `--peers`
   (the fixture's established connections summarized every interval: from the kernel events' book
   with events, by a dump polling).

Prints a Markdown table. Nothing here asserts: the figures are compared with the targets
(<= 12 MB resident at a 1 s interval, <= 1 ms of CPU per 10 s idle with events) in the table.

Inside run.sh's pid namespace a kernel event names its task by its pid in the host's namespace,
which this namespace's /proc does not know: the fixture opens nothing while it is measured, so
this only matters for what the rest of the host does meanwhile (owners the agent does not find).
"""
import argparse, os, shutil, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from events import cpu_ms, start_collector, token  # noqa: E402

MEMORY_MAX_KIB = 12e6 / 1024  # 12 MB; /proc/PID/status says kB for KiB


def status(pid):
    """VmRSS, VmHWM (KiB) and Threads of /proc/PID/status."""
    fields = {}
    for line in open(f"/proc/{pid}/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            fields[key] = int(value.split()[0])
    return fields


def agent(args, url, tok, host, spool, interval, extra):
    return subprocess.Popen([args.agent, "run", "--collector", url, "--token", tok, "--host-name", host,
                             "--interval", interval, "--spool-dir", spool, *extra],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PORTWATCH_LOG": "warn"})


def known(args, url, host):
    """Whether the collector knows `host` (its first snapshot was shipped)."""
    out = subprocess.run([args.portwatch, "hosts", "--collector", url, "--token", args.read_token, "--json"],
                         capture_output=True, text=True)
    return out.returncode == 0 and f'"{host}"' in out.stdout


def wait_known(args, url, host, a, timeout=60):
    t0 = time.monotonic()
    while not known(args, url, host):
        if a.poll() is not None:
            sys.exit(f"the agent of {host} exited with {a.returncode}")
        if time.monotonic() - t0 > timeout:
            sys.exit(f"{host} never reached the collector")
        time.sleep(0.2)


def stop(a):
    a.terminate()
    try:
        a.wait(timeout=30)
    except subprocess.TimeoutExpired:
        a.kill()
        a.wait()


def memory(args, url, db, tmp, host, extra):
    a = agent(args, url, token(args.collector, db, "--host", host), host, os.path.join(tmp, host), "1s", extra)
    try:
        time.sleep(args.intervals)
        if a.poll() is not None:
            sys.exit(f"the agent of {host} exited with {a.returncode}")
        shipped = known(args, url, host)
        return {**status(a.pid), "shipped": shipped}
    finally:
        stop(a)


def idle_cpu(args, url, db, tmp, host, interval, extra):
    a = agent(args, url, token(args.collector, db, "--host", host), host, os.path.join(tmp, host), interval, extra)
    try:
        wait_known(args, url, host, a)
        time.sleep(2)
        return cpu_ms(a.pid, 10)
    finally:
        stop(a)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agent", required=True)
    ap.add_argument("--collector", required=True)
    ap.add_argument("--portwatch", required=True)
    ap.add_argument("--intervals", type=int, default=30, help="1 s intervals before memory is read")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="pw-daemon-bench-")
    db = os.path.join(tmp, "c.db")
    args.read_token = token(args.collector, db, "--role", "read", "--name", "bench")
    coll, url = start_collector(args.collector, db)
    try:
        mem_poll = memory(args, url, db, tmp, "mem-polling", ["--no-events"])
        mem_ev = memory(args, url, db, tmp, "mem-events", [])
        cpu_ev = idle_cpu(args, url, db, tmp, "cpu-events", "10s", [])
        cpu_ev_nofw = idle_cpu(args, url, db, tmp, "cpu-events-nofw", "10s", ["--no-firewall"])
        cpu_poll = idle_cpu(args, url, db, tmp, "cpu-polling", "10s", ["--no-events"])
        cpu_poll_1s = idle_cpu(args, url, db, tmp, "cpu-polling-1s", "1s", ["--no-events"])
        cpu_ev_peers = idle_cpu(args, url, db, tmp, "cpu-events-peers", "10s", ["--peers"])
        cpu_poll_peers = idle_cpu(args, url, db, tmp, "cpu-polling-peers", "10s", ["--no-events", "--peers"])
    finally:
        coll.terminate()
        coll.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    def verdict(ok):
        return "met" if ok else "**NOT met**"

    def mem_row(name, m):
        note = "" if m["shipped"] else " (first snapshot not yet shipped)"
        return (f"| daemon memory, {name}, 1 s interval, after {args.intervals} s{note} | "
                f"VmRSS {m['VmRSS'] / 1024:.1f} MiB, VmHWM {m['VmHWM'] / 1024:.1f} MiB, {m['Threads']} threads | "
                f"<= 12 MB (11.4 MiB): VmRSS {verdict(m['VmRSS'] <= MEMORY_MAX_KIB)}, "
                f"VmHWM {verdict(m['VmHWM'] <= MEMORY_MAX_KIB)} |")

    print("| daemon on the fixture | figure | target |")
    print("| --- | --- | --- |")
    print(mem_row("polling", mem_poll))
    print(mem_row("events", mem_ev))
    print(f"| agent CPU per 10 s idle, events (10 s heartbeat) | {cpu_ev:.2f} ms | "
          f"<= 1 ms: {verdict(cpu_ev <= 1)} |")
    print(f"| agent CPU per 10 s idle, events, without the firewall (--no-firewall) | {cpu_ev_nofw:.2f} ms | "
          f"(the firewall's generation check costs the difference) |")
    print(f"| agent CPU per 10 s idle, polling, 10 s interval | {cpu_poll:.1f} ms | |")
    print(f"| agent CPU per 10 s idle, polling, 1 s interval | {cpu_poll_1s:.1f} ms | |")
    print(f"| agent CPU per 10 s idle, events, with --peers | {cpu_ev_peers:.2f} ms | "
          f"{cpu_ev_peers / cpu_ev:.1f} × without peers |")
    print(f"| agent CPU per 10 s idle, polling, 10 s interval, with --peers | {cpu_poll_peers:.1f} ms | "
          f"{cpu_poll_peers / cpu_poll:.1f} × without peers |")


if __name__ == "__main__":
    main()
