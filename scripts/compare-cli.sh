#!/usr/bin/env bash
# Usage: scripts/compare-cli.sh OLD_MESHPKI NEW_MESHPKI
# Runs one broad set of meshpki invocations (offline commands, and cluster commands
# against three local kube-apiservers) with two binaries, each in a work folder and
# namespace of its own, and diffs what each printed (stdout, stderr, exit code), with
# what differs by nature (serials, fingerprints, times, paths, namespaces) masked.
# For refactors that must not change behaviour. Env: K8S_TESTENV_BIN (folder with
# kube-apiserver and etcd; tools/build.sh k8s-testenv prints it).
set -uo pipefail
old=$(realpath "$1") new=$(realpath "$2")
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/meshpki-compare.XXXXXX)
pid=
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
(cd "$repo" && go build -o "$work/testclusters" ./internal/testenv/cmd/testclusters) || exit 2
"$work/testclusters" -bin "$K8S_TESTENV_BIN" -kubeconfig "$work/kubeconfig" -ready "$work/ready" east west north 2>"$work/clusters.log" &
pid=$!
for _ in $(seq 1 600); do [[ -f $work/ready ]] && break; sleep 0.1; done
[[ -f $work/ready ]] || { cat "$work/clusters.log"; exit 2; }
kc=$work/kubeconfig

# mask normalizes what differs between two runs by nature.
mask() {
  sed -E -e "s#$work/(old|new)#WORK#g" -e 's/meshpki-(old|new)/NS/g' \
    -e 's/[0-9a-f]{32,64}/HEX/g' -e 's/sha256:[0-9a-f]{16}/FP/g' -e 's/\b[0-9a-f]{10,31}\b/HEX/g' \
    -e 's/[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z/TIME/g' -e 's/[0-9]{8}T[0-9]{6}Z(-[0-9]+)?/STAMP/g' \
    -e 's/[0-9]+d[0-9]+h|[0-9]+h[0-9]+m|[0-9.]+(ms|µs|s)\b/DUR/g' -e 's/time=[^ ]+/time=T/g' -e 's/elapsed=[^ ]+/elapsed=E/g' \
    -e 's/_[0-9a-f]{8}\b/_ID/g'
}

# session runs the invocations with binary $1, as "old" or "new" ($2).
session() {
  local bin=$1 tag=$2 dir=$work/$2 ns=meshpki-$2 n=0
  mkdir -p "$dir" && cd "$dir" || exit 2
  r() {
    n=$((n + 1))
    local out err code
    out=$("$bin" "$@" 2>"$dir/.err"); code=$?
    err=$(cat "$dir/.err")
    { echo "### $n: meshpki $*" | mask; echo "exit $code"; echo "$out" | mask; echo "--- stderr"; echo "$err" | mask; } >>"$work/$tag.txt"
  }
  local k=(--kubeconfig "$kc" --namespace "$ns")
  r version -o json
  r help
  r bogus
  r root create --out root
  r root create --out root
  r root create --out root2 --key-type rsa-3072 --org Example --ttl 3650d
  r intermediate create --root-dir root --cluster east --cluster west --cluster north --out bundles
  r intermediate create --root-dir root --cluster east --out bundles
  r intermediate create --root-dir root --cluster east --out bundles --force --ttl 90d
  r intermediate create --root-dir root --cluster bad/name --out bundles
  r intermediate create --root-dir root --cluster a --cluster A --out bundles
  r intermediate create --root-dir nope --cluster east --out bundles
  r intermediate create --root-dir root --cluster east --out bundles2 -o json
  r verify bundles/east bundles/west bundles/north
  r verify --mtls bundles/east bundles/west
  r verify --mtls --output json bundles/east bundles/west
  r verify bundles/east "$dir/root2"
  r verify nothing-here
  r verify --strict bundles/east
  r root bundle --out combined.pem root root2
  r root bundle --out combined.pem root root2
  r root bundle --out - root
  r intermediate csr --cluster c1 --cluster c2 --out csrs
  r intermediate status --out csrs
  r intermediate status --out csrs -o json
  r intermediate import --out csrs --signed nowhere --root root/root-cert.pem
  r crl sign --root-dir root --out root.crl
  r crl sign --root-dir root
  r install "${k[@]}" --bundles bundles --all-contexts --dry-run
  r install "${k[@]}" --bundles bundles --all-contexts
  r install "${k[@]}" --bundles bundles --all-contexts
  r install "${k[@]}" --bundles bundles --all-contexts -o json
  r install "${k[@]}" --bundles nowhere --all-contexts
  r install "${k[@]}" --bundles bundles --context east --context nowhere
  r status "${k[@]}" --all-contexts
  r status "${k[@]}" --all-contexts -o json
  r rotate "${k[@]}" --all-contexts --root-dir root --dry-run
  r rotate "${k[@]}" --all-contexts --root-dir root
  r rotate "${k[@]}" --all-contexts --root-dir root --force -o json
  r rotate "${k[@]}" --all-contexts --root-dir root2
  r rotate "${k[@]}" --all-contexts --root-dir nope
  r crl sync "${k[@]}" --root-dir root --all-contexts
  r crl sync "${k[@]}" --root-dir root --all-contexts -o json
  r status "${k[@]}" --all-contexts
  r rotate "${k[@]}" --all-contexts --root-dir root --force --crl-settle 0
  r revoke "${k[@]}" --root-dir root --all-contexts --reason keyCompromise west
  r revoke "${k[@]}" --root-dir root --all-contexts west
  r revoke "${k[@]}" --root-dir root --all-contexts nobody
  r status "${k[@]}" --all-contexts
  r bootstrap "${k[@]}" --context west --root-dir root --force --mesh-context east --mesh-context north --crl-settle 0
  r bootstrap "${k[@]}" --context west --root-dir root
  r root rotate "${k[@]}" --all-contexts --new-root-dir root2 --status
  r root rotate "${k[@]}" --all-contexts --new-root-dir root2 --dry-run --crl-settle 0
  r root rotate "${k[@]}" --all-contexts --new-root-dir root2 --min-step-interval 0 --crl-settle 0
  r root rotate "${k[@]}" --all-contexts --new-root-dir root2 --crl-settle 0
  r root rotate "${k[@]}" --all-contexts --new-root-dir root2 --min-step-interval 0 --crl-settle 0 -o json
  r root rotate "${k[@]}" --all-contexts --new-root-dir root2 --min-step-interval 0 --crl-settle 0
  r root rotate "${k[@]}" --all-contexts --new-root-dir root2 --status
  r status "${k[@]}" --all-contexts
}
session "$old" old
session "$new" new
if diff -u "$work/old.txt" "$work/new.txt" >"$work/diff.txt"; then
  echo "same output and exit codes for $(grep -c '^### ' "$work/old.txt") invocations"
else
  cat "$work/diff.txt"
  exit 1
fi
