#!/usr/bin/env sh
# Throwaway demo PKI for deploy/compose: one CA, a server certificate per tenant, one client
# certificate and an (empty) CRL, written to ./certs/ next to this script (git-ignored).
# Demo only: no passphrases, keys readable by the containers' users. Needs openssl (3.x).
#
#   ./gen-certs.sh            # makes certs/ if it does not exist yet
#   ./gen-certs.sh --force    # throws certs/ away and makes a new set
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out="${CERTS_DIR:-$here/certs}"
days=825

if [ "${1:-}" = "--force" ]; then
  rm -rf "$out"
elif [ -e "$out/ca.pem" ]; then
  echo "$out already has a CA; use --force to make a new set"
  exit 0
fi
mkdir -p "$out/snigate" "$out/mosquitto-b" "$out/client"
cd "$out"

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# The CA: signs both tenants' server certificates, the client certificate and the CRL.
key ca.key
openssl req -x509 -new -key ca.key -out ca.pem -days "$days" -subj "/CN=snigate compose demo CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"

# sign STEM CN SAN EKU: STEM.key + STEM.csr -> STEM.pem, signed by the CA.
sign() {
  key "$1.key"
  openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$2"
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\n%s' \
    "$4" "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days "$days" \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

# Tenant A: snigate terminates TLS with this certificate.
sign snigate/tenant-a mqtt.tenant-a.test "subjectAltName=DNS:mqtt.tenant-a.test" serverAuth
# Tenant B: passthrough, so the broker itself holds its certificate.
sign mosquitto-b/server mqtt.tenant-b.test "subjectAltName=DNS:mqtt.tenant-b.test" serverAuth
# The device: its CN becomes the MQTT username on both brokers.
sign client/client device-1 "" clientAuth

# An empty CRL. The crlnumber file makes it a v2 CRL (with a CRL number), which rustls needs.
# Revoke later with: openssl ca -config ca.cnf -revoke client/client.pem, then -gencrl again.
touch index.txt
echo 01 > crlnumber
cat > ca.cnf <<CNF
[ca]
default_ca = demo
[demo]
database = index.txt
crlnumber = crlnumber
certificate = ca.pem
private_key = ca.key
default_md = sha256
default_crl_days = $days
CNF
openssl ca -config ca.cnf -gencrl -out ca.crl 2>/dev/null

# What each container mounts: snigate gets the tenant A key, the client CA and the CRL;
# mosquitto-b gets its own key and the CA (it checks client certificates itself).
cp ca.pem ca.crl snigate/
cp ca.pem mosquitto-b/
# snigate runs as uid 65532 and mosquitto as uid 1883: demo keys must be readable by them.
chmod 0644 snigate/*.key mosquitto-b/*.key
chmod 0600 ca.key client/client.key

echo "made the demo PKI in $out:"
find "$out" -name '*.pem' -o -name '*.key' -o -name '*.crl' | sort
