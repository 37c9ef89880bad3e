#!/usr/bin/env bash
# Makes a private CA and a serving certificate for the webhook, with openssl only.
#
#   certs/make-certs.sh [--out DIR] [--san DNS:name|IP:addr]... [--namespace NS] [--service NAME]
#                       [--days N] [--ca-days N] [--force]
#
# Writes DIR/ca.crt, DIR/ca.key, DIR/tls.crt, DIR/tls.key (default DIR: certs/out, git-ignored)
# and prints the base64 caBundle for the MutatingWebhookConfiguration on stdout (everything else
# goes to stderr, so `CA_BUNDLE=$(certs/make-certs.sh)` works).
#
# The serving certificate always names the in-cluster Service:
#   <service>.<namespace>.svc and <service>.<namespace>.svc.cluster.local
# Add more with --san (repeatable) or EXTRA_SANS (comma-separated), e.g. for loopback tests:
#   certs/make-certs.sh --san IP:127.0.0.1 --san DNS:localhost
# An existing CA in DIR is reused (so a renewed serving certificate keeps the same caBundle),
# unless --force is given.
set -euo pipefail

out_dir="${OUT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/out}"
namespace="${NAMESPACE:-workload-identity-system}"
service="${SERVICE:-workload-identity-webhook}"
days="${DAYS:-365}"
ca_days="${CA_DAYS:-3650}"
force=false
extra_sans=()
if [[ -n "${EXTRA_SANS:-}" ]]; then
  IFS=',' read -r -a extra_sans <<<"${EXTRA_SANS}"
fi

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" >&2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) out_dir="$2"; shift 2 ;;
    --san) extra_sans+=("$2"); shift 2 ;;
    --namespace) namespace="$2"; shift 2 ;;
    --service) service="$2"; shift 2 ;;
    --days) days="$2"; shift 2 ;;
    --ca-days) ca_days="$2"; shift 2 ;;
    --force) force=true; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "make-certs.sh: unknown argument: $1" >&2; usage; exit 2 ;;
  esac
done

command -v openssl >/dev/null || { echo "make-certs.sh: openssl is not installed" >&2; exit 1; }

sans=("DNS:${service}.${namespace}.svc" "DNS:${service}.${namespace}.svc.cluster.local")
for san in "${extra_sans[@]}"; do
  san="${san// /}"
  [[ -z "${san}" ]] && continue
  case "${san}" in
    DNS:* | IP:*) sans+=("${san}") ;;
    *) echo "make-certs.sh: a SAN must start with DNS: or IP:, got ${san}" >&2; exit 2 ;;
  esac
done
san_list="$(IFS=','; echo "${sans[*]}")"

mkdir -p "${out_dir}"
umask 077
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

if [[ "${force}" == true || ! -s "${out_dir}/ca.crt" || ! -s "${out_dir}/ca.key" ]]; then
  echo "making a CA valid for ${ca_days} days" >&2
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "${out_dir}/ca.key" -out "${out_dir}/ca.crt" -days "${ca_days}" \
    -subj "/CN=workload-identity-webhook CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" 2>/dev/null
else
  echo "reusing the CA in ${out_dir}" >&2
fi

echo "making a serving certificate valid for ${days} days for ${san_list}" >&2
openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
  -keyout "${work}/tls.key" -out "${work}/tls.csr" \
  -subj "/CN=${service}.${namespace}.svc" 2>/dev/null
cat >"${work}/ext.cnf" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
subjectAltName=${san_list}
EXT
openssl x509 -req -in "${work}/tls.csr" -CA "${out_dir}/ca.crt" -CAkey "${out_dir}/ca.key" \
  -CAcreateserial -CAserial "${work}/ca.srl" -days "${days}" -sha256 \
  -extfile "${work}/ext.cnf" -out "${work}/tls.crt" 2>/dev/null
openssl verify -CAfile "${out_dir}/ca.crt" "${work}/tls.crt" >/dev/null

# Move complete files into place (never a half-written file). Between the two moves a watching
# webhook may read a key and certificate that do not match: it refuses that pair, keeps serving the
# old one and picks the new pair up at its next check.
mv -f "${work}/tls.key" "${out_dir}/tls.key"
mv -f "${work}/tls.crt" "${out_dir}/tls.crt"
chmod 0644 "${out_dir}/ca.crt" "${out_dir}/tls.crt"
chmod 0600 "${out_dir}/ca.key" "${out_dir}/tls.key"

echo "wrote ${out_dir}/ca.crt ${out_dir}/tls.crt ${out_dir}/tls.key" >&2
echo "caBundle (base64 of ca.crt):" >&2
base64 <"${out_dir}/ca.crt" | tr -d '\n'
echo
