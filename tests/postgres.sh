# A throwaway PostgreSQL server for the tests, sourced by tests/run.sh (or by
# hand: `source tests/postgres.sh && postgres_start`, then `postgres_stop`).
#
# postgres_start makes a new cluster with Debian's initdb in a new temporary
# directory and starts it with pg_ctl on a Unix socket in that directory only (no TCP
# port), as an unprivileged user: root's tests run it as `nobody` (PostgreSQL
# refuses to run as root). Its superuser is `portwatch`, trusted on the
# socket. It exports PORTWATCH_TEST_POSTGRES, the connection string the
# PostgreSQL tests read; each test makes a schema of its own in it and drops it.
# postgres_stop stops the server and removes the cluster.

postgres_bin() {
    local initdb
    initdb=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1)
    [[ -n $initdb ]] && dirname "$initdb"
}

postgres_start() {
    local bin dir run_as=()
    bin=$(postgres_bin) || {
        echo "tests/postgres.sh: no PostgreSQL server (apt-get install postgresql)" >&2
        return 1
    }
    # A directory `nobody` can reach (a checkout under /root may not be).
    dir=$(mktemp -d "${TMPDIR:-/tmp}/portwatch-pg.XXXXXX")
    chmod 755 "$dir"
    if [[ $(id -u) -eq 0 ]]; then
        chown nobody: "$dir"
        run_as=(setpriv --reuid=nobody --regid=nogroup --clear-groups --)
    fi
    "${run_as[@]}" "$bin/initdb" -D "$dir/data" -U portwatch --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        return 1
    }
    # Tests run in parallel, each with a pool of its own: room for them all.
    "${run_as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses='' -c unix_socket_directories='$dir' -c max_connections=400 -c fsync=off" \
        start >/dev/null || {
        cat "$dir/server.log" >&2
        return 1
    }
    export PORTWATCH_TEST_POSTGRES="postgresql://portwatch@/postgres?host=$dir"
    POSTGRES_TEST_DIR=$dir
    POSTGRES_TEST_BIN=$bin
    POSTGRES_TEST_RUN_AS=("${run_as[@]}")
}

postgres_stop() {
    [[ -n ${POSTGRES_TEST_DIR:-} ]] || return 0
    "${POSTGRES_TEST_RUN_AS[@]}" "$POSTGRES_TEST_BIN/pg_ctl" -D "$POSTGRES_TEST_DIR/data" -m fast -w stop >/dev/null || true
    rm -rf "$POSTGRES_TEST_DIR"
    unset POSTGRES_TEST_DIR PORTWATCH_TEST_POSTGRES
}
