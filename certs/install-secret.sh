#!/usr/bin/env bash
# Creates or updates the webhook's serving-certificate Secret and sets the caBundle of both
# webhooks of the MutatingWebhookConfiguration, with kubectl.
#
#   certs/install-secret.sh [--dir DIR] [--namespace NS] [--secret NAME] [--webhook-config NAME]
#                           [--context CONTEXT]
#
# DIR (default certs/out) must hold ca.crt, tls.crt and tls.key, as certs/make-certs.sh writes
# them. Run it after `kubectl apply -k manifests/overlays/<overlay>` (the Namespace and the
# MutatingWebhookConfiguration must exist); it is safe to run again, e.g. after renewing the
# certificate: the Pods pick the new Secret up without a restart.
set -euo pipefail

dir="${CERT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/out}"
namespace="${NAMESPACE:-workload-identity-system}"
secret="${SECRET:-workload-identity-webhook-tls}"
webhook_config="${WEBHOOK_CONFIG:-workload-identity-webhook}"
kubectl_args=()

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" >&2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --namespace) namespace="$2"; shift 2 ;;
    --secret) secret="$2"; shift 2 ;;
    --webhook-config) webhook_config="$2"; shift 2 ;;
    --context) kubectl_args+=(--context "$2"); shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "install-secret.sh: unknown argument: $1" >&2; usage; exit 2 ;;
  esac
done

for file in ca.crt tls.crt tls.key; do
  [[ -s "${dir}/${file}" ]] || {
    echo "install-secret.sh: ${dir}/${file} is missing; run certs/make-certs.sh first" >&2
    exit 1
  }
done

kc() { kubectl "${kubectl_args[@]}" "$@"; }

# The Secret: create it, or replace its data (apply keeps working on re-runs).
kc -n "${namespace}" create secret tls "${secret}" \
  --cert="${dir}/tls.crt" --key="${dir}/tls.key" --dry-run=client -o yaml |
  kc label --local -f - app.kubernetes.io/name=workload-identity-webhook -o yaml |
  kc apply --server-side --field-manager=workload-identity-install-secret --force-conflicts -f -

# The caBundle of every webhook in both configurations (whatever their order); the
# ValidatingWebhookConfiguration (the check of the ConfigMap) may be absent in older installs.
ca_bundle="$(base64 <"${dir}/ca.crt" | tr -d '\n')"
for kind in mutatingwebhookconfiguration validatingwebhookconfiguration; do
  optional=()
  [[ ${kind} == validatingwebhookconfiguration ]] && optional=(--ignore-not-found)
  names="$(kc get "${kind}" "${webhook_config}" "${optional[@]}" -o jsonpath='{range .webhooks[*]}{.name}{"\n"}{end}')"
  count="$(grep -c . <<<"${names}" || true)"
  [[ ${count} -eq 0 ]] && continue
  patch="["
  for ((i = 0; i < count; i++)); do
    [[ ${i} -gt 0 ]] && patch+=","
    patch+="{\"op\":\"add\",\"path\":\"/webhooks/${i}/clientConfig/caBundle\",\"value\":\"${ca_bundle}\"}"
  done
  patch+="]"
  kc patch "${kind}" "${webhook_config}" --type=json -p "${patch}"
  echo "caBundle of ${count} webhook(s) in ${kind} ${webhook_config} set." >&2
done

echo "Secret ${namespace}/${secret} is set." >&2
