#!/usr/bin/env bash
# Updates the chart library the dashboard embeds, uPlot, from its npm package:
#   bash collector/dashboard/vendor.sh            # the pinned version below
#   bash collector/dashboard/vendor.sh 1.6.33     # another one (then change UPLOT_VERSION here)
# It writes collector/dashboard/vendor/uplot/{uPlot.esm.js,uPlot.min.css,LICENSE,VERSION}; commit them.
# The collector embeds those files at build time (collector/src/api/dashboard.rs), so building
# needs neither npm nor the network; only this script does.
set -euo pipefail
UPLOT_VERSION=${1:-1.6.32}
here=$(cd "$(dirname "$0")" && pwd)
dest="$here/vendor/uplot"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "uplot@$UPLOT_VERSION" >/dev/null)
tar -xzf "$work"/uplot-*.tgz -C "$work"
mkdir -p "$dest"
cp "$work/package/dist/uPlot.esm.js" "$work/package/dist/uPlot.min.css" "$work/package/LICENSE" "$dest/"
echo "$UPLOT_VERSION" >"$dest/VERSION"
echo "uPlot $UPLOT_VERSION -> $dest"
