#!/usr/bin/env bash
# Updates axe-core, the accessibility checker the dashboard tests run in the browser
# (tests/tests/dashboard.rs), from its npm package:
#   bash tests/vendor/axe-core.sh            # the pinned version below
#   bash tests/vendor/axe-core.sh 4.15.0     # another one (then change AXE_VERSION here)
# It writes tests/vendor/axe-core/{axe.min.js,LICENSE,VERSION}; commit them. Only the tests use
# it (it is injected into the page over WebDriver); the collector does not embed it.
set -euo pipefail
AXE_VERSION=${1:-4.14.1}
here=$(cd "$(dirname "$0")" && pwd)
dest="$here/axe-core"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "axe-core@$AXE_VERSION" >/dev/null)
tar -xzf "$work"/axe-core-*.tgz -C "$work"
mkdir -p "$dest"
cp "$work/package/axe.min.js" "$work/package/LICENSE" "$dest/"
echo "$AXE_VERSION" >"$dest/VERSION"
echo "axe-core $AXE_VERSION -> $dest"
