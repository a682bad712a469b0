#!/usr/bin/env bash
# Vendor the dashboard's one JavaScript dependency (uPlot, MIT) from the npm registry into
# app/dashboard/vendor, pinned by version and checked by its registry integrity hash, so the
# dashboard works offline and no page ever loads from a CDN. Run it to upgrade; the result
# is committed.
set -euo pipefail
version=1.6.32
here=$(cd "$(dirname "$0")/.." && pwd)
dest=$here/app/dashboard/vendor
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
want=$(npm view "uplot@$version" dist.integrity)
tarball=$(npm pack --silent "uplot@$version")
have="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
[[ $have == "$want" ]] || { echo "integrity mismatch for uplot@$version: $have != $want" >&2; exit 1; }
tar -xzf "$tarball"
mkdir -p "$dest"
cp package/dist/uPlot.iife.min.js package/dist/uPlot.min.css "$dest/"
cp package/LICENSE "$dest/LICENSE.uplot"
echo "uplot@$version $want" > "$dest/VERSIONS"
echo "vendored uplot@$version into ${dest#$here/}"
