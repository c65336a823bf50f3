#!/usr/bin/env bash
# The dashboard's first-render benchmark: builds the release collector and
# pw-dashboard (tests/src/render.rs), then serves a month-benchmark database
# with a real `portwatch-collector serve` on 127.0.0.1 and times, in Debian's
# headless Chromium (chromium and chromium-driver; tests/run.sh installs them
# as root), the first render of the fleet view and of a host's 30-day
# timeline after a page load, as the page measures it. Loopback only.
#
#   bash collector/benches/dashboard.sh [DB] [pw-dashboard options...]
#
# DB defaults to target/bench/month-10000.db, loaded first by
# `history.sh 10000 --db DB` when it does not exist (a few minutes); a read
# token is added to it. The output lands in target/bench/dashboard.txt too.
set -euo pipefail
cd "$(dirname "$0")/../.."

db=target/bench/month-10000.db
if [[ $# -gt 0 && $1 != -* ]]; then
    db=$1
    shift
fi
mkdir -p target/bench
[[ -e $db ]] || bash collector/benches/history.sh 10000 --db "$db"
cargo build --release --locked -p portwatch-collector -p portwatch-tests --bin portwatch-collector --bin pw-dashboard
out=target/bench/dashboard.txt
{
    echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(uname -r), $(nproc) CPUs, $(chromium --version 2>/dev/null || echo chromium)"
    echo "# bash collector/benches/dashboard.sh $db $*"
} >"$out"
target/release/pw-dashboard --db "$db" --collector target/release/portwatch-collector "$@" | tee -a "$out"
echo "(saved in $out)"
