#!/usr/bin/env bash
# The fleet ingest benchmark: builds the release binaries, then runs pw-fleet
# (tests/src/fleet.rs): a temp SQLite database, one agent token per host, a
# real `portwatch-collector serve` on 127.0.0.1, and many agents' gzip JSON
# traffic over HTTP from one process: every host's first snapshot, rounds of
# heartbeats with 1 % deltas, rounds of heartbeats only; then `who --port 22`
# latency and checks of what was stored. Loopback only; runs as any user.
#
#   bash collector/benches/fleet.sh [HOSTS] [pw-fleet options...]
#
# HOSTS defaults to 10000 (x 50 listeners, 20 mixed + 5 heartbeat-only rounds);
# the output lands in target/bench/fleet-HOSTS.txt too.
set -euo pipefail
cd "$(dirname "$0")/../.."

hosts=10000
if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then
    hosts=$1
    shift
fi

cargo build --release --locked -p portwatch-collector -p portwatch-tests --bin portwatch-collector --bin pw-fleet
mkdir -p target/bench
out=target/bench/fleet-$hosts.txt
{
    echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(uname -r), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "# bash collector/benches/fleet.sh $hosts $*"
} >"$out"
target/release/pw-fleet --hosts "$hosts" --collector target/release/portwatch-collector "$@" | tee -a "$out"
echo "(saved in $out)"
