#!/usr/bin/env bash
# The history benchmark: builds the release binaries, then runs pw-history
# (tests/src/history.rs): a month of a fleet's listener changes (HOSTS hosts x
# 20 listeners, 5 restarts per host per day) loaded through the store into a
# temp SQLite database, then a real `portwatch-collector serve` on 127.0.0.1
# asked over HTTP with a read token: `who --port 22` now and at past
# instants, `ports --host H --at T`; p50 and p99 of each. Loopback only; runs
# as any user. Loading 10,000 hosts takes a few minutes; give --db FILE to
# keep the database and ask it again later without loading it.
#
#   bash collector/benches/history.sh [HOSTS] [pw-history options...]
#
# The output lands in target/bench/history-HOSTS.txt too.
exec bash "$(dirname "$0")/pw.sh" pw-history history "$@"
