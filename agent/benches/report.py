#!/usr/bin/env python3
"""The Markdown report of run.sh: timings, peak RSS, correctness and the targets.

Reads hyperfine's --export-json, criterion's `<bench>/new/` directory, `/usr/bin/time -v` outputs
and compare_ss.py's output. A missed target is reported as "NOT met"; this script only fails
(exit 1) if an input is missing or malformed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys

AGENT = "portwatch-agent scan"
SS_P = "ss -Htulpn"
SS_NO_P = "ss -Htuln"
REPEATED = "repeated scan (in-process, criterion)"
REPEATED_PEERS = "repeated scan + inbound peers (in-process, criterion)"
BOOK_PEERS = "inbound peers from kernel events' book (in-process, criterion)"
AGENT_PEERS = "portwatch-agent scan --peers"
SS_ESTAB = "ss -Htn state established"

# The targets (see the project brief); RSS in KiB as /usr/bin/time reports it.
ONE_SHOT_VS_SS_P = 0.3
REPEATED_VS_SS_NO_P = 2.0
REPEATED_MAX_MS = 10.0
RSS_MAX_KIB = 10 * 1024
# Inbound peers (issue 14): the repeated scan with peers against the repeated scan alone.
PEERS_VS_REPEATED = 2.0


def ms(seconds: float) -> str:
    v = seconds * 1000
    digits = 3 if v < 1 else 2 if v < 10 else 1 if v < 100 else 0
    return f"{v:,.{digits}f}"


def criterion_stats(path: str) -> tuple[float, float, float]:
    """(median, min, max) seconds per scan: median from estimates.json, min/max per sample."""
    with open(os.path.join(path, "estimates.json")) as f:
        median = json.load(f)["median"]["point_estimate"] / 1e9
    with open(os.path.join(path, "sample.json")) as f:
        sample = json.load(f)
    per_iter = [t / n for t, n in zip(sample["times"], sample["iters"]) if n]
    return median, min(per_iter) / 1e9, max(per_iter) / 1e9


def max_rss_kib(path: str) -> tuple[int, int]:
    """(largest "Maximum resident set size", number of runs) of /usr/bin/time -v outputs."""
    with open(path) as f:
        found = [int(v) for v in re.findall(r"Maximum resident set size \(kbytes\): (\d+)", f.read())]
    if not found:
        raise ValueError(f"no 'Maximum resident set size' in {path}")
    return max(found), len(found)


def verdict(ok: bool) -> str:
    return "met" if ok else "**NOT met**"


def version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", required=True)
    p.add_argument("--fixture-args", default="")
    p.add_argument("--fixture-log", help="fixture.py --verbose stderr (for the setup time)")
    p.add_argument("--hyperfine", required=True, help="hyperfine --export-json file")
    p.add_argument("--criterion", help="criterion's <bench>/new directory")
    p.add_argument("--criterion-peers", help="criterion's new directory of repeated_scan_with_peers")
    p.add_argument("--criterion-book", help="criterion's new directory of peers_from_kernel_events")
    p.add_argument("--compare", help="compare_ss.py output")
    p.add_argument("--peers-json", help="`scan --json --peers` output, checked against --manifest")
    p.add_argument("--manifest", help="fixture.py --manifest output (the connections it made)")
    p.add_argument("--rss", action="append", default=[], metavar="NAME=FILE",
                   help="/usr/bin/time -v output of one run of NAME")
    args = p.parse_args(argv)

    with open(args.hyperfine) as f:
        results = {r["command"]: r for r in json.load(f)["results"]}
    rows = [(name, r["median"], r["min"], r["max"]) for name, r in results.items()]
    repeated = None
    if args.criterion:
        repeated = criterion_stats(args.criterion)
        rows.insert(2 if len(rows) >= 2 else len(rows), (REPEATED, *repeated))
    repeated_peers = None
    if args.criterion_peers:
        repeated_peers = criterion_stats(args.criterion_peers)
        rows.insert(3 if len(rows) >= 3 else len(rows), (REPEATED_PEERS, *repeated_peers))
    book_peers = None
    if args.criterion_book and os.path.exists(args.criterion_book):
        book_peers = criterion_stats(args.criterion_book)
        rows.insert(4 if len(rows) >= 4 else len(rows), (BOOK_PEERS, *book_peers))
    ss_p = results.get(SS_P, {}).get("median")
    ss_no_p = results.get(SS_NO_P, {}).get("median")
    rss = {}
    for item in args.rss:
        name, _, path = item.partition("=")
        rss[name] = max_rss_kib(path)

    setup = ""
    if args.fixture_log and os.path.exists(args.fixture_log):
        with open(args.fixture_log) as f:
            m = re.search(r"ready in ([\d.]+) s: (.*)", f.read())
        if m:
            setup = f"; set up in {m.group(1)} s ({m.group(2)})"

    out = []
    out.append(f"## portwatch benchmark: {args.size} fixture\n")
    out.append(f"Fixture: `{args.fixture_args}`{setup}.  ")
    out.append(f"Host: {platform.node()}, kernel {platform.release()}, {os.cpu_count()} CPUs; "
               f"{version(['ss', '-V'])}; {version(['hyperfine', '--version'])}. "
               "Private network + pid namespace.\n")
    out.append("| command | median ms | min ms | max ms | × `ss -Htulpn` | × `ss -Htuln` |")
    out.append("|---|---:|---:|---:|---:|---:|")
    for name, med, lo, hi in rows:
        r1 = f"{med / ss_p:.2f}" if ss_p else "–"
        r2 = f"{med / ss_no_p:.2f}" if ss_no_p else "–"
        out.append(f"| `{name}` | {ms(med)} | {ms(lo)} | {ms(hi)} | {r1} | {r2} |"
                   if name not in (REPEATED, REPEATED_PEERS, BOOK_PEERS) else
                   f"| {name} | {ms(med)} | {ms(lo)} | {ms(hi)} | {r1} | {r2} |")
    out.append("")
    if rss:
        out.append("| command | peak RSS | runs (largest shown) |")
        out.append("|---|---:|---:|")
        for name, (kib, runs) in rss.items():
            out.append(f"| `{name}` | {kib / 1024:.1f} MiB | {runs} |")
        out.append("")

    if args.size != "medium":
        out.append("The targets are set for the medium fixture; at this size they are shown for reference.")
        out.append("")
    out.append("| target | measured | |")
    out.append("|---|---|---|")
    agent = results.get(AGENT, {}).get("median")
    if agent is not None and ss_p:
        ratio = agent / ss_p
        out.append(f"| one-shot scan ≤ {ONE_SHOT_VS_SS_P} × `{SS_P}` | {ms(agent)} ms = "
                   f"{ratio:.2f} × | {verdict(ratio <= ONE_SHOT_VS_SS_P)} |")
    if repeated is not None and ss_no_p:
        ratio = repeated[0] / ss_no_p
        out.append(f"| repeated scan ≤ {REPEATED_VS_SS_NO_P:g} × `{SS_NO_P}` | {ms(repeated[0])} ms = "
                   f"{ratio:.2f} × | {verdict(ratio <= REPEATED_VS_SS_NO_P)} |")
        out.append(f"| repeated scan ≤ {REPEATED_MAX_MS:g} ms | {ms(repeated[0])} ms | "
                   f"{verdict(repeated[0] * 1000 <= REPEATED_MAX_MS)} |")
    if repeated is not None and repeated_peers is not None:
        ratio = repeated_peers[0] / repeated[0]
        out.append(f"| repeated scan + peers ≤ {PEERS_VS_REPEATED:g} × repeated scan | {ms(repeated_peers[0])} ms = "
                   f"{ratio:.2f} × | {verdict(ratio <= PEERS_VS_REPEATED)} |")
    if repeated is not None and book_peers is not None:
        # With kernel events the daemon does not scan every interval: the peers are its only
        # per-interval work. Shown in the same form as the polling row, the scan added.
        ratio = (repeated[0] + book_peers[0]) / repeated[0]
        out.append(f"| with kernel events: repeated scan + peers from the events' book ≤ {PEERS_VS_REPEATED:g} × "
                   f"repeated scan | {ms(repeated[0])} + {ms(book_peers[0])} ms = {ratio:.2f} × | "
                   f"{verdict(ratio <= PEERS_VS_REPEATED)} |")
    agent_peers = results.get(AGENT_PEERS, {}).get("median")
    if agent is not None and agent_peers is not None:
        out.append(f"| one-shot `scan --peers` beside `scan` (no target) | {ms(agent_peers)} ms = "
                   f"{agent_peers / agent:.2f} × | |")
    if AGENT in rss:
        kib = rss[AGENT][0]
        out.append(f"| peak RSS ≤ {RSS_MAX_KIB // 1024} MiB | {kib / 1024:.1f} MiB | "
                   f"{verdict(kib <= RSS_MAX_KIB)} |")
    if args.compare:
        with open(args.compare) as f:
            lines = f.read().rstrip("\n").splitlines() or ["(empty)"]
        ok = lines[0].startswith("MATCH")
        out.append(f"| `scan --json` = `{SS_P}` (proto, address, port, pids) | {lines[0]} | "
                   f"{verdict(ok)} |")
        if not ok:
            out.append("\n```")
            out.extend(lines[1:])
            out.append("```")
    if args.peers_json and args.manifest:
        with open(args.peers_json) as f:
            peers = [s["peers"] for s in json.load(f) if s.get("peers")]
        with open(args.manifest) as f:
            made = json.load(f)["connections"]
        attributed = sum(p["connections"] for p in peers)
        loopback = sum(p["classes"]["loopback"] for p in peers)
        ok = attributed == made and loopback == made
        out.append(f"| `scan --peers` attributes every fixture connection, from loopback | {attributed:,} of "
                   f"{made:,} attributed, {loopback:,} loopback | {verdict(ok)} |")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (OSError, KeyError, ValueError) as e:
        print(f"report.py: error: {e}", file=sys.stderr)
        sys.exit(1)
