#!/usr/bin/env python3
"""Check `portwatch-agent scan --json` against `ss -Htulpn` (or against a fixture manifest).

    compare_ss.py AGENT_JSON SS_TXT            # the two must list the same sockets and owners
    compare_ss.py --manifest MANIFEST AGENT_JSON
                                               # every fixture socket must be in the scan, with
                                               # exactly the fixture's owners (others may exist)

A socket is compared as (proto, local address, port, sorted owning pids), as a multiset (two
SO_REUSEPORT sockets on one address count twice). Addresses are normalised on both sides:
`[::]` -> `::`, `*` -> `::` (ss prints a dual-stack IPv6 wildcard as `*`), `%iface` suffixes are
dropped, IPv6 is compressed and v4-mapped addresses are written `::ffff:1.2.3.4`.

Prints `MATCH: ...` and exits 0, or `MISMATCH: ...` with the first 20 differences and exits 1.
Exits 2 if an input cannot be parsed.

The agent's JSON is read leniently, so that this script does not have to change with the wire
format: the document may be a list of sockets, an object holding one under "sockets" (at any
depth), or JSON Lines. A socket's protocol is "proto"/"protocol" (tcp, udp, tcp6, "Tcp", ...);
its address and port are "local_addr"/"local_address"/"addr"/"address"/"ip" plus
"local_port"/"port", or one "local"/"local_addr" string "ADDR:PORT", or an object
{"ip"/"addr": ..., "port": ...} under "local"; its owners are "pids" (ints) or
"owners"/"processes"/"users" (ints, or objects with "pid", possibly nested under "process").
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import sys
from collections import Counter, defaultdict

Key = tuple[str, str, int]  # (proto, address, port)
Row = tuple[str, str, int, tuple[int, ...]]  # Key + sorted pids

MAX_SHOWN = 20


class ParseError(Exception):
    pass


def norm_addr(text: str) -> str:
    """Canonical text of a local address as printed by ss or a scanner."""
    a = text.strip()
    if a.startswith("[") and "]" in a:
        a = a[1 : a.index("]")] + a[a.index("]") + 1 :]
    a = a.split("%", 1)[0]  # interface suffix: 127.0.0.53%lo, fe80::1%eth0
    if a in ("*", ""):
        return "::"
    try:
        ip = ipaddress.ip_address(a)
    except ValueError as e:
        raise ParseError(f"not an IP address: {text!r}") from e
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return f"::ffff:{ip.ipv4_mapped}"
    return str(ip)


def split_host_port(text: str) -> tuple[str, int]:
    """'1.2.3.4:80', '[::1]:80', '[::1]%lo:80', '*:80', '127.0.0.53%lo:53' -> (address, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ParseError(f"no port in {text!r}")
    return norm_addr(host), int(port)


def norm_proto(value) -> str:
    p = str(value).strip().lower()
    if p.endswith("6"):
        p = p[:-1]
    if p not in ("tcp", "udp"):
        raise ParseError(f"unknown protocol {value!r}")
    return p


# ------------------------------------------------------------------------------------------- ss

SS_OWNER = re.compile(r",pid=(\d+),fd=\d+\)")


def parse_ss(text: str) -> list[Row]:
    """Rows of `ss -Htulpn` (also accepts -tulnp, with or without the header line)."""
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0] == "Netid":
            continue
        if len(fields) < 6:
            raise ParseError(f"ss line {n}: too few fields: {line!r}")
        try:
            addr, port = split_host_port(fields[4])
            pids = tuple(sorted({int(p) for p in SS_OWNER.findall(line)}))
            rows.append((norm_proto(fields[0]), addr, port, pids))
        except ParseError as e:
            raise ParseError(f"ss line {n}: {e}") from e
    return rows


# ---------------------------------------------------------------------------------------- agent

PROTO_KEYS = ("proto", "protocol")
ADDR_KEYS = ("local_addr", "local_address", "local_ip", "addr", "address", "ip", "local")
PORT_KEYS = ("local_port", "port")
OWNER_KEYS = ("pids", "owners", "processes", "users")


def find_socket_list(doc):
    """The list of sockets in a scan document: the document itself or a "sockets" member."""
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict):
        if isinstance(doc.get("sockets"), list):
            return doc["sockets"]
        for v in doc.values():
            found = find_socket_list(v) if isinstance(v, dict) else None
            if found is not None:
                return found
    return None


def first(obj: dict, keys):
    for k in keys:
        if k in obj and obj[k] is not None:
            return obj[k]
    return None


def owner_pid(o) -> int:
    if isinstance(o, int):
        return o
    if isinstance(o, dict):
        if "pid" in o:
            return int(o["pid"])
        if isinstance(o.get("process"), dict) and "pid" in o["process"]:
            return int(o["process"]["pid"])
    raise ParseError(f"owner without a pid: {o!r}")


def agent_row(s: dict) -> Row:
    if not isinstance(s, dict):
        raise ParseError(f"socket is not an object: {s!r}")
    proto = first(s, PROTO_KEYS)
    if proto is None:
        raise ParseError(f"socket without a protocol: {s!r}")
    local = first(s, ADDR_KEYS)
    port = first(s, PORT_KEYS)
    if isinstance(local, dict):  # {"local": {"ip": ..., "port": ...}}
        port = first(local, PORT_KEYS) if port is None else port
        local = first(local, ("ip", "addr", "address"))
    if local is None:
        raise ParseError(f"socket without a local address: {s!r}")
    if port is None:
        addr, port = split_host_port(str(local))
    else:
        addr = norm_addr(str(local))
    owners = first(s, OWNER_KEYS) or []
    pids = tuple(sorted({owner_pid(o) for o in owners}))
    return norm_proto(proto), addr, int(port), pids


def parse_agent(text: str) -> list[Row]:
    try:
        doc = json.loads(text)
        items = find_socket_list(doc)
        if items is None:
            raise ParseError("no list of sockets in the agent's JSON")
    except json.JSONDecodeError:
        try:  # JSON Lines: one socket per line
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise ParseError(f"agent output is neither JSON nor JSON Lines: {e}") from e
    return [agent_row(s) for s in items]


def parse_manifest(text: str) -> list[Row]:
    doc = json.loads(text)
    return [
        (norm_proto(s["proto"]), norm_addr(s["addr"]), int(s["port"]), tuple(sorted(s["pids"])))
        for s in doc["sockets"]
    ]


# ------------------------------------------------------------------------------------- compare


def fmt_key(k: Key) -> str:
    proto, addr, port = k
    return f"{proto} {'[' + addr + ']' if ':' in addr else addr}:{port}"


def fmt_pids(c: Counter) -> str:
    return " ".join(f"{list(pids)}" + (f"x{n}" if n > 1 else "") for pids, n in sorted(c.items()))


def differences(left: list[Row], right: list[Row], lname: str, rname: str,
                subset: bool = False) -> list[str]:
    """Human-readable differences; with `subset`, only rows of `left` missing from `right`."""
    by_key: dict[Key, list[Counter]] = defaultdict(lambda: [Counter(), Counter()])
    for side, rows in ((0, left), (1, right)):
        for proto, addr, port, pids in rows:
            by_key[(proto, addr, port)][side][pids] += 1
    out = []
    for key in sorted(by_key):
        lc, rc = by_key[key]
        only_l, only_r = lc - rc, rc - lc
        if subset:
            only_r = Counter()
        if not only_l and not only_r:
            continue
        if only_l and only_r:
            out.append(f"{fmt_key(key)}: owners differ: {lname} {fmt_pids(only_l)}, "
                       f"{rname} {fmt_pids(only_r)}")
            continue
        for pids, n in sorted((only_l or only_r).items()):
            times = f" ({n} sockets)" if n > 1 else ""
            out.append(f"{fmt_key(key)} pids={list(pids)}: only in {lname if only_l else rname}{times}")
    return out


def summary(rows: list[Row]) -> str:
    tcp = sum(1 for r in rows if r[0] == "tcp")
    owners = sum(len(r[3]) for r in rows)
    unowned = sum(1 for r in rows if not r[3])
    return f"{len(rows)} sockets ({tcp} tcp, {len(rows) - tcp} udp), {owners} owner pids, {unowned} without owner"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", metavar="PATH", help="check the scan against a fixture.py manifest")
    p.add_argument("agent", help="output of `portwatch-agent scan --json`")
    p.add_argument("ss", nargs="?", help="output of `ss -Htulpn`")
    args = p.parse_args(argv)
    if (args.ss is None) == (args.manifest is None):
        p.error("give either SS_TXT or --manifest")
    try:
        with open(args.agent) as f:
            agent = parse_agent(f.read())
        if args.manifest:
            with open(args.manifest) as f:
                expected = parse_manifest(f.read())
            diffs = differences(expected, agent, "fixture", "agent", subset=True)
            what = f"{len(expected)} fixture sockets found in the scan of {len(agent)}"
        else:
            with open(args.ss) as f:
                expected = parse_ss(f.read())
            diffs = differences(agent, expected, "agent", "ss")
            what = summary(agent)
    except (OSError, ParseError, KeyError, ValueError) as e:
        print(f"compare_ss: error: {e}", file=sys.stderr)
        return 2
    if not diffs:
        print(f"MATCH: {what}")
        return 0
    print(f"MISMATCH: {len(diffs)} differences (agent: {len(agent)} sockets, "
          f"{'fixture' if args.manifest else 'ss'}: {len(expected)})")
    for d in diffs[:MAX_SHOWN]:
        print(f"  {d}")
    if len(diffs) > MAX_SHOWN:
        print(f"  ... and {len(diffs) - MAX_SHOWN} more")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
