#!/usr/bin/env bash
# Shared by fleet.sh and history.sh: builds the release collector and the
# benchmark binary BIN, then runs it against the collector with HOSTS hosts
# and the rest of the options, saving its output in target/bench/NAME-HOSTS.txt.
#
#   bash collector/benches/pw.sh BIN NAME [HOSTS] [options...]
set -euo pipefail
cd "$(dirname "$0")/../.."

bin=$1
name=$2
shift 2
hosts=10000
if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then
    hosts=$1
    shift
fi

cargo build --release --locked -p portwatch-collector -p portwatch-tests --bin portwatch-collector --bin "$bin"
mkdir -p target/bench
out=target/bench/$name-$hosts.txt
{
    echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(uname -r), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "# bash collector/benches/$name.sh $hosts $*"
} >"$out"
"target/release/$bin" --hosts "$hosts" --collector target/release/portwatch-collector "$@" | tee -a "$out"
echo "(saved in $out)"
