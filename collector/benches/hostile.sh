#!/usr/bin/env bash
# The hostile-fleet benchmark: builds the release binaries, then runs
# pw-hostile (tests/src/hostile.rs): a real `portwatch-collector serve` on
# 127.0.0.1, an honest fleet of HOSTS simulated agents heartbeating every
# second, and one attack at a time (stalled uploads without a token,
# slowloris, one host's snapshot flood, an alert flood, heavy reads,
# garbage). Prints per attack the collector's peak RSS, the honest hosts'
# latency and what the attack got. Loopback only; about 3 minutes.
#
#   bash collector/benches/hostile.sh [HOSTS] [--phase SECS] [--only ATTACK,...]
#
# HOSTS defaults to 1000; the output lands in target/bench/hostile-HOSTS.txt too.
if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then
    exec bash "$(dirname "$0")/pw.sh" pw-hostile hostile "$@"
fi
exec bash "$(dirname "$0")/pw.sh" pw-hostile hostile 1000 "$@"
