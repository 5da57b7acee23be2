#!/usr/bin/env bash
# Usage: scripts/demo-mesh.sh   (make demo-mesh)
# The whole product in one command: starts three local Kubernetes clusters (etcd +
# kube-apiserver on loopback, built from Go modules by tools/build.sh), creates a
# root, mints one intermediate per cluster, installs them as cacerts into all three
# at once, shows status, reruns the install (nothing to do), proves cross-cluster
# mTLS, then stops the clusters and removes everything.
# Env: K8S_TESTENV_BIN (folder with kube-apiserver and etcd; built if unset — a cold
# build takes ~10 min), MESHPKI (a meshpki binary; built if unset), KEEP=1 keeps the
# work folder.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
work=$(mktemp -d /tmp/meshpki-demo.XXXXXX)
pid=
cleanup() {
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    echo "== stopping the clusters"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  fi
  if [[ ${KEEP:-} == 1 ]]; then echo "work folder kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

if [[ -z ${K8S_TESTENV_BIN:-} ]]; then
  echo "== building kube-apiserver and etcd (cached after the first time; a cold build takes ~10 min)"
  K8S_TESTENV_BIN=$(tools/build.sh k8s-testenv)
fi
meshpki=${MESHPKI:-}
if [[ -z $meshpki ]]; then
  go build -o "$work/meshpki" ./cmd/meshpki
  meshpki=$work/meshpki
fi
meshpki=$(cd "$(dirname "$meshpki")" && pwd)/$(basename "$meshpki")
go build -o "$work/testclusters" ./internal/testenv/cmd/testclusters

echo "== starting clusters east, west and north"
"$work/testclusters" -bin "$K8S_TESTENV_BIN" -kubeconfig "$work/kubeconfig" -ready "$work/ready" east west north 2>"$work/clusters.log" &
pid=$!
for _ in $(seq 1 600); do
  [[ -f $work/ready ]] && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/clusters.log"; exit 1; }
  sleep 0.2
done
[[ -f $work/ready ]] || { echo "clusters not ready after 2 minutes"; cat "$work/clusters.log"; exit 1; }
grep ' at ' "$work/clusters.log" || true

cd "$work"
export KUBECONFIG=$work/kubeconfig
step() { echo; echo "\$ meshpki $*"; "$meshpki" "$@"; }
step root create --out root
step intermediate create --root-dir root --cluster east --cluster west --cluster north --out bundles
step install --bundles bundles --all-contexts --dry-run
step install --bundles bundles --all-contexts
step status --all-contexts
echo; echo "# again: nothing changed, so nothing is written"
step install --bundles bundles --all-contexts
echo; echo "# workloads of any two clusters complete a mutual-TLS handshake"
step verify --mtls bundles/east bundles/west bundles/north
echo
echo "== done"
