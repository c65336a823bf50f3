#!/usr/bin/env bash
# The portwatch benchmark.
#
#   bash agent/benches/run.sh [small|medium|large]        (default: medium; run as root)
#
# 1. Installs what is missing (hyperfine, GNU time, ...) and builds the release agent and the
#    criterion bench once, outside any timing.
# 2. Re-runs itself inside a private network + pid namespace (unshare --net --pid --fork
#    --mount-proc), so that /proc and the socket tables hold only the fixture.
# 3. Starts fixture.py there and waits for its READY line.
# 4. Checks correctness: `portwatch-agent scan --json` against `ss -Htulpn` (compare_ss.py).
# 5. Times, in one hyperfine run: portwatch-agent scan [--json], scan --peers, ss -Htulpn, ss -Htuln,
#    ss -Htn state established (the kernel's dump of established sockets that --peers reads too),
#    netstat -tulpn and lsof -nP -iTCP -sTCP:LISTEN.
# 6. Runs the in-process repeated-scan benchmarks (benches/repeat_scan.rs, criterion): the scan alone
#    and the scan followed by the inbound peers' count.
# 7. Measures peak RSS with /usr/bin/time -v.
# 8. The daemon on the fixture (daemon.py, with a collector on the namespace's loopback):
#    `portwatch-agent run` at a 1 s interval, polling and with kernel events, its VmRSS and VmHWM
#    after 30 intervals; its CPU per 10 s idle with events, and polling at 10 s and 1 s.
# 9. Prints a Markdown report (report.py), also saved with all raw data in target/bench/<size>/,
#    then the daemon's table (target/bench/<size>/daemon.md).
# 10. Kernel events against polling (events.py, before entering the namespaces, on this host as it
#    is, not the fixture): the agent's CPU per 10 s idle with each, and event-to-collector latency
#    p50/p99 with events; its table is printed last (target/bench/<size>/events.md).
#
# Missed targets and a correctness mismatch are reported, not fatal: the exit status is non-zero
# only if the fixture or one of the commands fails.
#
# For developing this script only: PW_AGENT_BIN and PW_BENCH_BIN name prebuilt binaries to use
# instead of building the agent and the bench; PW_NO_EVENTS_BENCH=1 and PW_NO_DAEMON_BENCH=1 skip
# steps 10 and 8 (with both, the collector and the CLI are not built either).
set -euo pipefail

usage() { echo "usage: bash agent/benches/run.sh [small|medium|large]" >&2; }

size=${1:-medium}
case "$size" in
  small)
    fixture_args=(--procs 20 --listeners 200 --udp 20 --conns 200)
    hyperfine_args=(--warmup 3 --min-runs 20) ;;
  medium)
    fixture_args=(--procs 200 --listeners 5000 --udp 500 --conns 20000)
    hyperfine_args=(--warmup 2 --min-runs 10) ;;
  large)
    fixture_args=(--procs 1000 --listeners 30000 --udp 3000 --conns 100000)
    hyperfine_args=(--warmup 1 --min-runs 3) ;;
  -h|--help) usage; exit 0 ;;
  *) usage; exit 2 ;;
esac

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/target/bench/$size"

log() { printf 'run.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
# set -e stops at a failing command; say which.
trap 'log "error: \`$BASH_COMMAND\` failed (exit $?, line $LINENO)"' ERR

# ------------------------------------------------------------------------------------------------
# Outer stage: tools, build, then enter the namespaces.
if [[ "${PW_BENCH_INSIDE:-}" != 1 ]]; then
  [[ $(id -u) == 0 ]] || die "run as root (unshare of the network and pid namespaces needs it)"

  # command -> Debian package providing it
  declare -A package=(
    [hyperfine]=hyperfine [/usr/bin/time]=time [ss]=iproute2 [ip]=iproute2 [netstat]=net-tools
    [lsof]=lsof [unshare]=util-linux [python3]=python3-minimal [perf]=linux-perf
  )
  missing=()
  for cmd in "${!package[@]}"; do
    command -v "$cmd" >/dev/null || missing+=("${package[$cmd]}")
  done
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi

  cd "$root"
  if [[ -z "${PW_AGENT_BIN:-}" ]]; then
    log "building the release agent"
    cargo build --release -p portwatch-agent
    PW_AGENT_BIN="$root/target/release/portwatch-agent"
  fi
  if [[ -z "${PW_BENCH_BIN:-}" ]]; then
    # `cargo bench --no-run` builds the bench; running its executable inside the namespace is what
    # `cargo bench -p portwatch-agent --bench repeat_scan` would do, minus a cargo process in the
    # scanned /proc and any rebuild during the measurement.
    log "building the repeat_scan bench"
    PW_BENCH_BIN=$(cargo bench -p portwatch-agent --bench repeat_scan --no-run --message-format=json |
      python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "repeat_scan" and m.get("executable"):
        print(m["executable"])')
    [[ -n "$PW_BENCH_BIN" ]] || die "cargo did not report the repeat_scan bench executable"
  fi
  [[ -x "$PW_AGENT_BIN" ]] || die "no agent binary at $PW_AGENT_BIN"
  [[ -x "$PW_BENCH_BIN" ]] || die "no bench binary at $PW_BENCH_BIN"

  # The collector and the `portwatch` CLI, for the daemon (step 8) and events (step 10).
  if [[ -z "${PW_NO_DAEMON_BENCH:-}" || -z "${PW_NO_EVENTS_BENCH:-}" ]]; then
    log "building the release collector and CLI"
    cargo build --release -p portwatch-collector -p portwatch-cli --bins
  fi
  PW_COLLECTOR_BIN="$root/target/release/portwatch-collector"
  PW_PORTWATCH_BIN="$root/target/release/portwatch"

  rm -rf "$out"
  mkdir -p "$out"
  if [[ -z "${PW_NO_EVENTS_BENCH:-}" ]]; then
    log "kernel events against polling (events.py)"
    python3 "$here/events.py" --agent "$PW_AGENT_BIN" --collector "$PW_COLLECTOR_BIN" \
      --portwatch "$PW_PORTWATCH_BIN" >"$out/events.md"
  fi
  log "entering a private network + pid namespace"
  export PW_BENCH_INSIDE=1 PW_AGENT_BIN PW_BENCH_BIN PW_COLLECTOR_BIN PW_PORTWATCH_BIN
  exec unshare --net --pid --fork --mount-proc bash "${BASH_SOURCE[0]}" "$size"
fi

# ------------------------------------------------------------------------------------------------
# Inner stage: this shell is PID 1 of a fresh pid namespace, alone in a fresh network namespace.
# When it exits the kernel kills whatever is left in the namespace; the trap ends the fixture
# cleanly before that.
agent=$PW_AGENT_BIN
cd "$root"
ip link set lo up

fixture_pid=
cleanup() {
  if [[ -n "$fixture_pid" ]] && kill -0 "$fixture_pid" 2>/dev/null; then
    kill -TERM "$fixture_pid" 2>/dev/null || true
    wait "$fixture_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "starting the $size fixture: ${fixture_args[*]}"
python3 "$here/fixture.py" "${fixture_args[@]}" --verbose --manifest "$out/manifest.json" \
  >"$out/fixture.out" 2>"$out/fixture.err" &
fixture_pid=$!
until grep -q '^READY ' "$out/fixture.out"; do
  if ! kill -0 "$fixture_pid" 2>/dev/null; then
    cat "$out/fixture.err" >&2
    wait "$fixture_pid" || true
    fixture_pid=
    die "the fixture failed to start"
  fi
  sleep 0.1
done
grep 'ready in' "$out/fixture.err" >&2 || true

# Correctness first: a wrong scanner makes its timings meaningless.
"$agent" scan --json >"$out/scan.json"
ss -Htulpn >"$out/ss.txt"
set +e
python3 "$here/compare_ss.py" "$out/scan.json" "$out/ss.txt" >"$out/compare.txt"
compare_status=$?
set -e
((compare_status <= 1)) || die "compare_ss.py could not parse the outputs: $(cat "$out/compare.txt")"
head -n 1 "$out/compare.txt" >&2
# And the peers: every connection the fixture made is attributed to a listener, from loopback.
"$agent" scan --json --peers --no-firewall >"$out/scan-peers.json"

# One hyperfine run of all one-shot commands. -N: no shell, so shell start-up is not measured.
# Outputs go to /dev/null (hyperfine's default); a failing command fails the run.
style=()
[[ -t 1 ]] || style=(--style basic)
agent_q=$(printf '%q' "$agent")
hyperfine -N "${style[@]}" "${hyperfine_args[@]}" --export-json "$out/hyperfine.json" \
  -n "portwatch-agent scan" "$agent_q scan" \
  -n "portwatch-agent scan --no-firewall" "$agent_q scan --no-firewall" \
  -n "portwatch-agent scan --json" "$agent_q scan --json" \
  -n "portwatch-agent scan --peers" "$agent_q scan --peers" \
  -n "ss -Htulpn" "ss -Htulpn" \
  -n "ss -Htuln" "ss -Htuln" \
  -n "ss -Htn state established" "ss -Htn state established" \
  -n "netstat -tulpn" "netstat -tulpn" \
  -n "lsof -nP -iTCP -sTCP:LISTEN" "lsof -nP -iTCP -sTCP:LISTEN" >&2

# The in-process repeated scan ("no change"), alone and with the inbound peers' count
# (repeated_scan_no_change, repeated_scan_with_peers, peers_from_kernel_events), results under
# target/criterion.
log "repeated scan, without and with peers (criterion)"
CRITERION_HOME="$root/target/criterion" "$PW_BENCH_BIN" --bench '^(repeated_scan_|peers_from_kernel_events)' \
  >"$out/criterion.txt" 2>&1 || { cat "$out/criterion.txt" >&2; die "the repeat_scan bench failed"; }
grep -E 'warm-up scan|attributed|in the book|time:' "$out/criterion.txt" >&2 || true

# Peak RSS ("Maximum resident set size", KiB): the largest of 3 runs for the agent, whose target
# it is, one run for the peers, which are only the reference.
log "peak RSS"
rss_args=()
measure_rss() { # runs, name, command...
  local runs=$1 name=$2 file i
  shift 2
  file="$out/rss-$(printf '%s' "$name" | tr -c 'A-Za-z0-9' '_').txt"
  : >"$file"
  for ((i = 0; i < runs; i++)); do
    /usr/bin/time -v -a -o "$file" "$@" >/dev/null
  done
  rss_args+=(--rss "$name=$file")
}
measure_rss 3 "portwatch-agent scan" "$agent" scan
measure_rss 3 "portwatch-agent scan --json" "$agent" scan --json
measure_rss 3 "portwatch-agent scan --peers" "$agent" scan --peers
measure_rss 1 "ss -Htulpn" ss -Htulpn
measure_rss 1 "netstat -tulpn" netstat -tulpn
measure_rss 1 "lsof -nP -iTCP -sTCP:LISTEN" lsof -nP -iTCP -sTCP:LISTEN

if [[ -z "${PW_NO_DAEMON_BENCH:-}" ]]; then
  log "the daemon on the fixture (daemon.py)"
  python3 "$here/daemon.py" --agent "$agent" --collector "$PW_COLLECTOR_BIN" --portwatch "$PW_PORTWATCH_BIN" \
    >"$out/daemon.md"
fi

python3 "$here/report.py" --size "$size" --fixture-args "${fixture_args[*]}" \
  --fixture-log "$out/fixture.err" --hyperfine "$out/hyperfine.json" \
  --criterion "$root/target/criterion/repeated_scan_no_change/new" \
  --criterion-peers "$root/target/criterion/repeated_scan_with_peers/new" \
  --criterion-book "$root/target/criterion/peers_from_kernel_events/new" \
  --compare "$out/compare.txt" --peers-json "$out/scan-peers.json" --manifest "$out/manifest.json" \
  "${rss_args[@]}" | tee "$out/report.md"
if [[ -f "$out/daemon.md" ]]; then echo; cat "$out/daemon.md"; fi
if [[ -f "$out/events.md" ]]; then echo; cat "$out/events.md"; fi
log "raw data in $out"
