#!/usr/bin/env bash
# Builds the four packages into target/packages/:
#   portwatch-agent_*.deb, portwatch-agent-*.rpm          the agent
#   portwatch-collector_*.deb, portwatch-collector-*.rpm  the collector and the `portwatch` CLI
# The package metadata is in agent/Cargo.toml and collector/Cargo.toml ([package.metadata.deb],
# [package.metadata.generate-rpm]); the files it points to are in packaging/.
#
# Steps: one release build (--locked); each binary writes its man pages and shell completions from
# its own clap definition (`BINARY generate --out-dir target/release/assets/BINARY`, a hidden
# subcommand); then cargo-deb and cargo-generate-rpm pack without building again.
# Installs cargo-deb and cargo-generate-rpm (pinned versions) with `cargo install --locked` if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1
OUT=target/packages
BINARIES=(portwatch-agent portwatch-collector portwatch)

# The .deb's changelog must name the version being packed (lintian, and `apt changelog`, read it).
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
if ! head -n 1 packaging/deb/changelog | grep -qF "($version-1)"; then
    echo "packaging/build.sh: packaging/deb/changelog does not start with version $version-1: add an entry" >&2
    exit 1
fi

# cargo-deb without default features: no bundled liblzma to compile; it calls the system's xz.
if ! command -v xz >/dev/null 2>&1; then
    echo "packaging/build.sh: xz is missing (cargo-deb compresses with it): apt-get install xz-utils" >&2
    exit 1
fi
if ! cargo deb --version >/dev/null 2>&1; then
    cargo install --locked --no-default-features "cargo-deb@$CARGO_DEB_VERSION"
fi
if ! cargo generate-rpm --version >/dev/null 2>&1; then
    cargo install --locked "cargo-generate-rpm@$CARGO_GENERATE_RPM_VERSION"
fi

cargo build --release --locked -p portwatch-agent -p portwatch-collector -p portwatch-cli --bins

for bin in "${BINARIES[@]}"; do
    assets=target/release/assets/$bin
    rm -rf "$assets"
    "target/release/$bin" generate --out-dir "$assets" >/dev/null
    gzip -9n "$assets"/man/*.1
    # The .rpm takes the binary as is (cargo-generate-rpm does not strip); cargo-deb strips its own copy.
    mkdir -p "$assets/bin"
    strip --strip-unneeded -o "$assets/bin/$bin" "target/release/$bin"
done

mkdir -p "$OUT"
rm -f "$OUT"/*.deb "$OUT"/*.rpm
for package in agent collector; do
    cargo deb --no-build --quiet -p "portwatch-$package" -o "$OUT/" >/dev/null
    cargo generate-rpm -p "$package" -o "$OUT/"
done
ls -1 "$OUT"/*.deb "$OUT"/*.rpm
