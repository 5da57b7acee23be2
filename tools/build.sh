#!/usr/bin/env bash
# Usage: tools/build.sh vaultdev|k8s-testenv|istiod
# Builds a test server from its own Go module under tools/ and caches the binaries in
# $MESHPKI_CACHE (default ~/.cache/meshpki)/<name>-<stamp>/, where the stamp hashes the
# module's inputs and the Go version. Prints the folder holding the binaries.
# Cold builds are heavy (7-12 min, ~3 GB memory each on 2 cores): run one at a time.
set -euo pipefail
name=$1
here=$(cd "$(dirname "$0")" && pwd)
mod=$here/$name
cache=${MESHPKI_CACHE:-$HOME/.cache/meshpki}
export GOWORK=off GOFLAGS=-mod=mod
# The stamp covers what the binaries are built from: the module files, its Go code
# and, for vaultdev, the script that composes the Vault sdk.
stamp=$(cd "$mod" && cat go.mod go.sum $(find . -name '*.go' -not -path './third_party/*' | sort) $(ls mksdk.sh 2>/dev/null) | sha256sum | cut -c1-16)-$(go env GOVERSION)
out=$cache/$name-$stamp
if [[ -f $out/.ok ]]; then echo "$out"; exit 0; fi
mkdir -p "$out"
cd "$mod"
case $name in
vaultdev)
  (cd / && sh "$mod/mksdk.sh" "$mod/third_party/vault-sdk") >&2
  go build -trimpath -ldflags "-s -w" -o "$out/vaultdev" . >&2
  ;;
k8s-testenv)
  kver=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
  v=k8s.io/component-base/version
  go build -trimpath -o "$out/" -ldflags "-s -w -X $v.gitVersion=$kver -X $v.gitMajor=1 -X $v.gitMinor=$(echo "$kver" | cut -d. -f2)" ./cmd/kube-apiserver ./cmd/etcd >&2
  ;;
istiod)
  # pilot-discovery (istiod), istio-agent's CA client and istiod's own bundle loader, all
  # from the pinned istio.io/istio; Istio's CRDs are copied beside them for the harness.
  go build -trimpath -ldflags "-s -w" -o "$out/" istio.io/istio/pilot/cmd/pilot-discovery ./csrclient ./bundlecheck >&2
  idir=$(go list -m -f '{{.Dir}}' istio.io/istio)
  cp "$idir/manifests/charts/base/files/crd-all.gen.yaml" "$out/crd-all.gen.yaml"
  chmod 0644 "$out/crd-all.gen.yaml"
  ;;
*) echo "unknown tool $name" >&2; exit 2 ;;
esac
touch "$out/.ok"
echo "$out"
