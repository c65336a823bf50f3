#!/usr/bin/env python3
"""Kernel events against polling, with real binaries (run as root by run.sh, or alone):

  python3 agent/benches/events.py --agent BIN --collector BIN --portwatch BIN [--probes N]

1. Idle CPU: a collector and an agent at the default 10 s interval, first with kernel events,
   then with --no-events (polling); after a 5 s settle, the agent's CPU time (see cpu_ms: perf's
   task-clock where perf works, else clock ticks of 10 ms) over 10 s of nothing changing.
2. Event-to-collector latency, events on: N times, a TCP listener opens and the time until
   `portwatch who --port P` shows it (the CLI is run in a loop; its own run time, a few ms,
   is included). Prints p50 and p99.

Prints a Markdown table. Nothing here asserts: the figures are compared with the targets
(<= 1 ms of CPU per 10 s idle, <= 1 s latency) in the table.
"""
import argparse, json, os, shutil, socket, subprocess, sys, tempfile, time

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User+system CPU of a process so far, from /proc/PID/stat: clock ticks (10 ms), counting
    threads that have exited."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def cpu_ms(pid, seconds):
    """Milliseconds of CPU the process `pid` uses over the next `seconds`: `perf stat -e task-clock`
    (nanoseconds; threads started meanwhile, such as the fd walk's helpers, are inherited) where perf
    works, else clock ticks of /proc/PID/stat (10 ms, sampled: a tick may land on a process that ran
    for a few microseconds, so they are too coarse for a 1 ms target)."""
    c0 = cpu_seconds(pid)
    perf_ms = None
    if shutil.which("perf"):
        out = subprocess.run(["perf", "stat", "-x,", "-e", "task-clock", "-p", str(pid), "--", "sleep", str(seconds)],
                             capture_output=True, text=True)
        for line in out.stderr.splitlines():
            value, _, rest = line.partition(",")
            if rest.startswith("msec,task-clock"):
                perf_ms = 0.0 if value.startswith("<not") else float(value)
    else:
        time.sleep(seconds)
    ticks_ms = (cpu_seconds(pid) - c0) * 1000
    return ticks_ms if perf_ms is None else perf_ms


def start_collector(bin_, db):
    p = subprocess.Popen([bin_, "serve", "--db", db, "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline().strip()
    prefix = "portwatch-collector listening on "
    if not line.startswith(prefix):
        sys.exit(f"collector did not start: {line!r}")
    return p, line[len(prefix):]


def token(bin_, db, *args):
    return subprocess.run([bin_, "token", "create", *args, "--db", db], check=True, capture_output=True,
                          text=True).stdout.strip()


def who(portwatch, url, read, port):
    out = subprocess.run([portwatch, "who", "--port", str(port), "--collector", url, "--token", read, "--json"],
                         capture_output=True, text=True)
    return out.returncode == 0 and json.loads(out.stdout or "[]")


def run_agent(agent, url, tok, host, spool, extra):
    return subprocess.Popen([agent, "run", "--collector", url, "--token", tok, "--host-name", host,
                             "--interval", "10s", "--spool-dir", spool, *extra],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PORTWATCH_LOG": "warn"})


def idle_cpu(args, url, tok, tmp, host, extra):
    a = run_agent(args.agent, url, tok, host, os.path.join(tmp, host), extra)
    try:
        time.sleep(5)
        return cpu_ms(a.pid, 10)
    finally:
        a.terminate()
        a.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agent", required=True)
    ap.add_argument("--collector", required=True)
    ap.add_argument("--portwatch", required=True)
    ap.add_argument("--probes", type=int, default=50)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="pw-events-bench-")
    db = os.path.join(tmp, "c.db")
    for h in ("ev-idle", "poll-idle", "ev-latency"):
        tok = token(args.collector, db, "--host", h)
        os.environ[f"TOKEN_{h.replace('-', '_')}"] = tok
    read = token(args.collector, db, "--role", "read", "--name", "bench")
    coll, url = start_collector(args.collector, db)
    try:
        ev_cpu = idle_cpu(args, url, os.environ["TOKEN_ev_idle"], tmp, "ev-idle", [])
        poll_cpu = idle_cpu(args, url, os.environ["TOKEN_poll_idle"], tmp, "poll-idle", ["--no-events"])
        a = run_agent(args.agent, url, os.environ["TOKEN_ev_latency"], "ev-latency", os.path.join(tmp, "lat"), [])
        time.sleep(3)
        lat = []
        try:
            for _ in range(args.probes):
                s = socket.socket()
                s.bind(("127.0.0.1", 0))
                t0 = time.monotonic()
                s.listen()
                port = s.getsockname()[1]
                while not who(args.portwatch, url, read, port):
                    if time.monotonic() - t0 > 30:
                        sys.exit(f"port {port} never reached the collector")
                lat.append((time.monotonic() - t0) * 1000)
                s.close()
        finally:
            a.terminate()
            a.wait()
    finally:
        coll.terminate()
        coll.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    lat.sort()
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    print("| kernel events vs polling | figure | target |")
    print("| --- | --- | --- |")
    print(f"| agent CPU per 10 s idle, events | {ev_cpu:.2f} ms | <= 1 ms |")
    print(f"| agent CPU per 10 s idle, polling (10 s interval) | {poll_cpu:.1f} ms | |")
    print(f"| event-to-collector latency p50 ({len(lat)} listeners) | {p(0.50):.0f} ms | <= 1 s |")
    print(f"| event-to-collector latency p99 | {p(0.99):.0f} ms | <= 1 s |")


if __name__ == "__main__":
    main()
