#!/usr/bin/env bash
# Runs every test of the workspace: installs the system tools the tests use,
# builds the binaries once (tests never build), then runs unit and
# end-to-end tests, then the packaging test (packaging/test.sh: builds the
# .deb/.rpm packages and really installs, upgrades, removes and purges them).
# Tests that need root say so; CI runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."

# Tools the end-to-end tests drive: ss and ip (iproute2), setpriv (util-linux), nft (nftables),
# iptables-legacy (iptables),
# openssl (a private CA for the HTTPS tests), systemd-analyze (the units' system
# call filters), promtool and a Prometheus server (prometheus: the metrics and the
# example rules), an Alertmanager (prometheus-alertmanager: the Alertmanager sink),
# Debian's headless Chromium and its WebDriver (the dashboard tests,
# tests/tests/dashboard.rs; no browser is downloaded),
# and clang with libbpf's headers (libbpf-dev), which agent/build.rs needs to build
# the kernel program the event tests load (about 60 MB of packages, some 20 s to install);
# python3 and python3-venv, for openapi-spec-validator below; and Debian's PostgreSQL server
# (postgresql: initdb and pg_ctl), for the throwaway server the PostgreSQL store's tests use.
missing=()
command -v clang >/dev/null 2>&1 || missing+=(clang)
[[ -e /usr/include/bpf/bpf_helpers.h ]] || missing+=(libbpf-dev)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v ss >/dev/null 2>&1 || missing+=(iproute2)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
# iptables-legacy and iptables-legacy-save: the legacy iptables tests (tests/tests/firewall.rs).
command -v iptables-legacy-save >/dev/null 2>&1 || missing+=(iptables)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# tests/tests/probe.rs reads /metrics from inside a network namespace with it.
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
[[ -x /usr/bin/chromedriver ]] || missing+=(chromium-driver)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
# The OpenAPI document's validator (tests/tests/openapi.rs) comes from PyPI (below); what installs it, from Debian.
openapi_validator=target/openapi-validator
if ! command -v openapi-spec-validator >/dev/null 2>&1 && [[ ! -x $openapi_validator/bin/openapi-spec-validator ]]; then
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
    python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
fi
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "tests/run.sh: missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root" >&2
        exit 1
    fi
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# openapi-spec-validator checks the collector's OpenAPI 3.1 document. Debian 12 has no package of it, so it is
# pip-installed from PyPI into a virtualenv under target/ (where the test looks), when not on PATH already.
if ! command -v openapi-spec-validator >/dev/null 2>&1 && [[ ! -x $openapi_validator/bin/openapi-spec-validator ]]; then
    python3 -m venv "$openapi_validator"
    "$openapi_validator/bin/pip" install -q 'openapi-spec-validator>=0.7,<1'
fi

cargo build --workspace --bins --locked
# A PostgreSQL server of the tests' own (tests/postgres.sh): started here, stopped on the way out.
source tests/postgres.sh
postgres_start
trap postgres_stop EXIT
cargo test --workspace --locked "$@"

# The packaging test installs packages on this machine, so it runs only as root (CI is root, on a
# throwaway machine). Its release build is the slow part of CI.
if (($#)); then
    echo "tests/run.sh: SKIPPED packaging/test.sh: arguments were given to cargo test ($*); run it alone: sudo bash packaging/test.sh" >&2
elif [[ $(id -u) -eq 0 ]]; then
    bash packaging/test.sh
else
    echo "tests/run.sh: SKIPPED packaging/test.sh: it needs root (it installs and purges the .deb packages on this machine); run: sudo bash packaging/test.sh" >&2
fi
