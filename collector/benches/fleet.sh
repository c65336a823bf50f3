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
exec bash "$(dirname "$0")/pw.sh" pw-fleet fleet "$@"
