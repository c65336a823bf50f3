# A throwaway PostgreSQL server for the tests, sourced by tests/run.sh (or by
# hand: `source tests/postgres.sh && postgres_start`, then `postgres_stop`).
#
# postgres_start makes a new cluster with Debian's initdb in a new temporary
# directory and starts it with pg_ctl on a Unix socket in that directory, and
# on a free port of 127.0.0.1 for TLS only (a certificate of a throwaway CA
# made with openssl), as an unprivileged user: root's tests run it as `nobody` (PostgreSQL
# refuses to run as root). Its superuser is `portwatch`, trusted on the
# socket. It exports PORTWATCH_TEST_POSTGRES, the connection string the
# PostgreSQL tests read (each test makes a schema of its own in it and drops
# it), PORTWATCH_TEST_POSTGRES_TLS (the TCP port, sslmode=require) and
# PORTWATCH_TEST_POSTGRES_CA (the CA's certificate).
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
    # TCP takes TLS only: a throwaway CA and the server's certificate for 127.0.0.1.
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=portwatch-test-ca \
        -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout "$dir/data/server.key" \
        -out "$dir/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\n' >"$dir/san.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial -days 2 \
        -extfile "$dir/san.ext" -out "$dir/data/server.crt" 2>/dev/null
    [[ $(id -u) -eq 0 ]] && chown nobody: "$dir/data/server.key" "$dir/data/server.crt"
    chmod 600 "$dir/data/server.key"
    printf 'local all all trust\nhostssl all all 127.0.0.1/32 trust\n' >"$dir/data/pg_hba.conf"
    local port
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    # Tests run in parallel, each with a pool of its own: room for them all.
    "${run_as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories='$dir' -c ssl=on -c max_connections=400 -c fsync=off" \
        start >/dev/null || {
        cat "$dir/server.log" >&2
        return 1
    }
    export PORTWATCH_TEST_POSTGRES="postgresql://portwatch@/postgres?host=$dir&port=$port"
    export PORTWATCH_TEST_POSTGRES_TLS="postgresql://portwatch@127.0.0.1:$port/postgres?sslmode=require"
    export PORTWATCH_TEST_POSTGRES_CA=$dir/ca.crt
    POSTGRES_TEST_DIR=$dir
    POSTGRES_TEST_BIN=$bin
    POSTGRES_TEST_RUN_AS=("${run_as[@]}")
}

postgres_stop() {
    [[ -n ${POSTGRES_TEST_DIR:-} ]] || return 0
    "${POSTGRES_TEST_RUN_AS[@]}" "$POSTGRES_TEST_BIN/pg_ctl" -D "$POSTGRES_TEST_DIR/data" -m fast -w stop >/dev/null || true
    rm -rf "$POSTGRES_TEST_DIR"
    unset POSTGRES_TEST_DIR PORTWATCH_TEST_POSTGRES PORTWATCH_TEST_POSTGRES_TLS PORTWATCH_TEST_POSTGRES_CA
}
