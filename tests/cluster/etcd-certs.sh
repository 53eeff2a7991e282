#!/usr/bin/env bash
# tests/cluster/etcd-certs.sh DIR NAME...
#
# Certificates for an etcd that speaks TLS, as a site would make them (with openssl): a CA
# (DIR/ca.pem), the members' certificate for the names and addresses NAME... (DIR/etcd.pem,
# DIR/etcd.key; good for serving and for the members' own connections to each other) and a
# client certificate for berth's controllers (DIR/client.pem, DIR/client.key). etcd's flags:
#   --cert-file DIR/etcd.pem --key-file DIR/etcd.key --trusted-ca-file DIR/ca.pem
#   --client-cert-auth (and the same with --peer-... between members)
# berth's, in berth.toml:
#   [etcd]
#   ca_certs = ["DIR/ca.pem"]
#   cert = "DIR/client.pem"
#   key = "DIR/client.key"
set -euo pipefail
dir=${1:?usage: etcd-certs.sh DIR NAME...}
shift
(( $# > 0 )) || { echo "usage: etcd-certs.sh DIR NAME..." >&2; exit 2; }
mkdir -p "$dir"
cd "$dir"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 2 -subj /CN=berth-test-etcd-ca 2>/dev/null
sans=()
for name in "$@"; do
  if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then sans+=("IP:$name"); else sans+=("DNS:$name"); fi
done
sign() { # NAME USAGE [SANS]
  openssl req "${ec[@]}" -keyout "$1.key" -out "$1.csr" -subj "/CN=$1" 2>/dev/null
  { echo "extendedKeyUsage=$2"; [[ -n ${3:-} ]] && echo "subjectAltName=$3"; } >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
sign etcd serverAuth,clientAuth "$(IFS=,; echo "${sans[*]}")"
sign client clientAuth
chmod 600 ./*.key
