#!/usr/bin/env bash
# The main job on an embedded default, no server needed: a root, three cluster
# bundles, and verification including a cross-cluster mutual-TLS handshake.
set -euo pipefail
BIN=${MESHPKI:-$(cd "$(dirname "$0")/.." && pwd)/bin/meshpki}
dir=${1:-$(mktemp -d)}
cd "$dir"
echo "# working in $dir"
set -x
"$BIN" root create --out root
"$BIN" intermediate create --root-dir root --cluster east --cluster west --cluster north --out bundles
"$BIN" verify --mtls bundles/east bundles/west bundles/north
