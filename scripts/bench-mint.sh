#!/usr/bin/env bash
# Mints the same cluster bundles with meshpki and with an openssl recipe equivalent
# to Istio's tools/certs (genpkey/req/x509 per cluster), and prints the ratio.
# Usage: scripts/bench-mint.sh [N_MESHPKI] [N_OPENSSL] [N_RSA]
#   N_MESHPKI ECDSA P-256 bundles by one `meshpki intermediate create` (default 1000)
#   N_OPENSSL bundles by the openssl recipe, per key type (default 50; timed per bundle)
#   N_RSA     RSA-4096 bundles for both tools (default 4)
set -euo pipefail
N=${1:-1000}
NO=${2:-50}
NR=${3:-4}
BIN=${MESHPKI:-bin/meshpki}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.${2:-3}f\", $1 }"; }
cores=$(nproc)
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $cores cores, $(go version | cut -d' ' -f3)"

"$BIN" root create --out "$work/root" >/dev/null
seq -f "cluster-%g" 1 "$N" > "$work/clusters.txt"

# meshpki: N ECDSA bundles, minted, written atomically and fsynced, in one run.
/usr/bin/time -f "%e %M" -o "$work/time" "$BIN" intermediate create --root-dir "$work/root" \
  --clusters-from "$work/clusters.txt" --out "$work/m-ecdsa" >/dev/null 2>"$work/m.log"
read -r m_wall m_rss < "$work/time"
m_per=$(calc "$m_wall * 1000 / $N" 3)
echo "meshpki  ecdsa-p256: $N bundles in ${m_wall}s wall (${m_per} ms/bundle), peak RSS $((m_rss / 1024)) MiB"
"$BIN" verify "$work/m-ecdsa/cluster-1" "$work/m-ecdsa/cluster-$N" >/dev/null

# The openssl recipe, as Istio's tools/certs Makefile does it per cluster.
cat > "$work/intermediate.conf" <<CONF
[ req ]
encrypt_key = no
prompt = no
utf8 = yes
default_md = sha256
req_extensions = req_ext
x509_extensions = req_ext
distinguished_name = req_dn
[ req_ext ]
subjectKeyIdentifier = hash
basicConstraints = critical, CA:true, pathlen:0
keyUsage = critical, digitalSignature, nonRepudiation, keyEncipherment, keyCertSign
subjectAltName=@san
[ san ]
DNS.1 = istiod.istio-system.svc
[ req_dn ]
O = Istio
CN = Intermediate CA
L = cluster
CONF
openssl_bundle() { # dir keyalg
  local d=$1
  mkdir -p "$d"
  if [[ $2 == ec ]]; then
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/ca-key.pem" 2>/dev/null
  else
    openssl genrsa -out "$d/ca-key.pem" 4096 2>/dev/null
  fi
  openssl req -new -config "$work/intermediate.conf" -key "$d/ca-key.pem" -out "$d/cluster-ca.csr" 2>/dev/null
  openssl x509 -req -days 730 -CA "$work/root/root-cert.pem" -CAkey "$work/root/root-key.pem" -CAcreateserial \
    -extensions req_ext -extfile "$work/intermediate.conf" -in "$d/cluster-ca.csr" -out "$d/ca-cert.pem" 2>/dev/null
  cat "$d/ca-cert.pem" "$work/root/root-cert.pem" > "$d/cert-chain.pem"
  cp "$work/root/root-cert.pem" "$d/root-cert.pem"
}
t0=$(now)
for i in $(seq 1 "$NO"); do openssl_bundle "$work/o-ecdsa/cluster-$i" ec; done
o_wall=$(calc "$(now) - $t0")
o_per=$(calc "$o_wall * 1000 / $NO" 3)
echo "openssl  ecdsa-p256: $NO bundles in ${o_wall}s wall (${o_per} ms/bundle, sequential as the Makefile runs)"
echo "ratio    ecdsa-p256: meshpki is $(calc "$o_per / $m_per" 1)x faster per bundle"

# RSA-4096: meshpki against the key-generation floor (N x one keygen / cores).
seq -f "rsa-%g" 1 "$NR" > "$work/rsa.txt"
/usr/bin/time -f "%e %M" -o "$work/time" "$BIN" intermediate create --root-dir "$work/root" \
  --clusters-from "$work/rsa.txt" --out "$work/m-rsa" --key-type rsa-4096 >/dev/null 2>&1
read -r r_wall r_rss < "$work/time"
# The floor is Go's own RSA-4096 key generation, the same code meshpki runs.
kg_ns=$(go test -run '^$' -bench 'Keygen/rsa-4096' -benchtime "${NR}x" ./ca/ | awk '/Keygen\/rsa-4096/ { print $3 }')
floor=$(calc "$NR * $kg_ns / 1e9 / $cores")
t0=$(now)
for i in $(seq 1 "$NR"); do openssl_bundle "$work/o-rsa/rsa-$i" rsa; done
or_wall=$(calc "$(now) - $t0")
echo "meshpki  rsa-4096:   $NR bundles in ${r_wall}s wall, peak RSS $((r_rss / 1024)) MiB"
echo "openssl  rsa-4096:   $NR bundles in ${or_wall}s wall ($(calc "$or_wall * 1000 / $NR" 0) ms/bundle)"
echo "floor    rsa-4096:   one Go keygen $(calc "$kg_ns / 1e6" 0) ms (mean of $NR) x $NR / $cores cores = ${floor}s; meshpki/floor = $(calc "$r_wall / $floor" 2)"
echo "         (RSA key generation time varies widely per key: use N_RSA >= 16 for a stable ratio)"
