#!/usr/bin/env bash
# Development certificates for a TLS control plane (docs/operations.md,
# "Securing the control plane"), made with the openssl CLI:
#
#   scripts/dev-certs.sh DIR NODE_ID [NODE_ID...]
#
# DIR/ca.pem, ca.key              a CA (10 years; for development only)
# DIR/control-plane.pem, .key     sluice-control's server certificate,
#                                 SAN DNS:localhost, IP:127.0.0.1
# DIR/proxy-NODE_ID.pem, .key     a proxy's client certificate per node id,
#                                 URI SAN spiffe://sluice/node/NODE_ID
# Existing files are replaced, except that an existing CA is reused (so that
# more proxy certificates can be added later).
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 DIR NODE_ID [NODE_ID...]" >&2
  exit 2
fi
dir=$1
shift
mkdir -p "$dir"
umask 077
days=825
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [[ ! -s "$dir/ca.pem" || ! -s "$dir/ca.key" ]]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/O=Sluice development/CN=Sluice development CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
  echo "made $dir/ca.pem (CA certificate) and $dir/ca.key"
else
  echo "kept $dir/ca.pem (CA certificate) and $dir/ca.key"
fi

# issue NAME SUBJECT_CN EXTENSIONS: NAME.pem and NAME.key signed by the CA.
issue() {
  local name=$1 cn=$2 ext=$3
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
    "$ext" >"$tmp/$name.ext"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/O=Sluice development/CN=$cn" -keyout "$dir/$name.key" -out "$tmp/$name.csr" 2>/dev/null
  openssl x509 -req -in "$tmp/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
    -CAcreateserial -CAserial "$tmp/ca.srl" -days "$days" -extfile "$tmp/$name.ext" \
    -out "$dir/$name.pem" 2>/dev/null
}

issue control-plane localhost \
  "$(printf '%s\n%s' 'subjectAltName=DNS:localhost,IP:127.0.0.1' 'extendedKeyUsage=serverAuth')"
echo "made $dir/control-plane.pem and .key (server: DNS:localhost, IP:127.0.0.1)"
for node in "$@"; do
  if [[ ! $node =~ ^[A-Za-z0-9._-]+$ ]]; then
    echo "$0: node id '$node': use letters, digits, '.', '_' and '-' only" >&2
    exit 2
  fi
  issue "proxy-$node" "$node" \
    "$(printf '%s\n%s' "subjectAltName=URI:spiffe://sluice/node/$node" 'extendedKeyUsage=clientAuth')"
  echo "made $dir/proxy-$node.pem and .key (client: URI:spiffe://sluice/node/$node)"
done
