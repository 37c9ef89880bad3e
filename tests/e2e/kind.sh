#!/usr/bin/env bash
# End-to-end test in a kind cluster, for machines with a Docker engine:
# builds the image, loads it into kind, installs manifests/overlays/local (the webhook cluster-wide
# with a self-managed certificate, and the emulator's token services it points the Pods at), checks
# with kubectl what the API server stored, and that a Pod's AWS CLI gets (fake) credentials from
# the in-cluster emulator for the role its trust rule names, and a refusal for another
# ServiceAccount claiming the same role, and the same for EKS Pod Identity through the overlay's
# agent DaemonSet at 169.254.170.23 (docs/local-clusters.md).
# Prints PASS/FAIL per case and exits non-zero if any case failed.
#
#   tests/e2e/kind.sh
#
# Environment:
#   CLUSTER_NAME     kind cluster name (default wiw-e2e); an existing cluster of that name is reused
#   KEEP_CLUSTER=1   leave the cluster running afterwards (default: delete it if this script made it)
#   KIND_NODE_IMAGE  node image (default: the one pinned in tests/e2e/kind-config.yaml, Kubernetes 1.34)
#   IMAGE            image tag to build and load (default workload-identity-webhook:e2e)
#
# Without a reachable Docker engine it prints SKIP and exits 0: nothing was tested.
set -euo pipefail

if ! docker info >/dev/null 2>&1; then
  echo "SKIP: no Docker engine reachable; the kind e2e did not run"
  exit 0
fi

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cluster="${CLUSTER_NAME:-wiw-e2e}"
image="${IMAGE:-workload-identity-webhook:e2e}"
system_ns=workload-identity-system
ns_in=e2e-opted-in
ns_out=e2e-unlabelled
role_arn="arn:aws:iam::111122223333:role/e2e-s3-reader"
late_role_arn="arn:aws:iam::111122223333:role/e2e-late"
gsa="e2e-reader@my-project.iam.gserviceaccount.com"
client_id="00000000-1111-2222-3333-444444444444"
tenant_id="11111111-2222-3333-4444-555555555555"
wip="projects/123456789/locations/global/workloadIdentityPools/e2e-pool/providers/e2e-provider"

for tool in kind kubectl openssl; do
  command -v "${tool}" >/dev/null || { echo "kind.sh: ${tool} is required (kind v0.30 or newer)" >&2; exit 1; }
done

work="$(mktemp -d "${repo}/tests/e2e/.work.XXXXXX")"
made_cluster=false
cleanup() {
  local status=$?
  if [[ ${status} -ne 0 ]] && kubectl --context "kind-${cluster}" get ns "${system_ns}" >/dev/null 2>&1; then
    echo "--- webhook logs ---" >&2
    kubectl --context "kind-${cluster}" -n "${system_ns}" logs -l app.kubernetes.io/name=workload-identity-webhook --tail=100 --prefix >&2 || true
    echo "--- emulator logs ---" >&2
    kubectl --context "kind-${cluster}" -n "${system_ns}" logs -l app.kubernetes.io/name=workload-identity-emulator --tail=100 --prefix >&2 || true
  fi
  rm -rf "${work}"
  if [[ "${made_cluster}" == true && "${KEEP_CLUSTER:-0}" != 1 ]]; then
    kind delete cluster --name "${cluster}" >/dev/null 2>&1 || true
  fi
  exit "${status}"
}
trap cleanup EXIT

# --- cluster, image, install --------------------------------------------------------------------
if kind get clusters 2>/dev/null | grep -qx "${cluster}"; then
  echo "reusing kind cluster ${cluster}"
else
  image_args=()
  [[ -n "${KIND_NODE_IMAGE:-}" ]] && image_args=(--image "${KIND_NODE_IMAGE}")
  kind create cluster --name "${cluster}" --config "${repo}/tests/e2e/kind-config.yaml" "${image_args[@]}" --wait 120s
  made_cluster=true
fi
kc() { kubectl --context "kind-${cluster}" "$@"; }

docker build -t "${image}" "${repo}"
kind load docker-image --name "${cluster}" "${image}"

# The local overlay, with the image just built (never pulled) for the webhook and the emulator.
cat >"${work}/kustomization.yaml" <<KUSTOMIZATION
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../../manifests/overlays/local
images:
  - name: ghcr.io/workload-identity-webhook/workload-identity-webhook
    newName: ${image%:*}
    newTag: ${image##*:}
patches:
  - target: {kind: Deployment}
    patch: |
      - op: replace
        path: /spec/template/spec/containers/0/imagePullPolicy
        value: Never
KUSTOMIZATION
# The webhook makes its own certificate (--manage-certificate) and publishes its caBundle.
kc apply -k "${work}"

# Cluster settings and mappings used by the cases below; the endpoints are the local overlay's.
emulator="workload-identity-emulator.${system_ns}.svc"
set_config() {
  kc -n "${system_ns}" create configmap workload-identity-webhook --from-file=config.yaml=/dev/stdin \
    --dry-run=client -o yaml | kc apply -f -
}
set_config <<CONFIG
aws: {region: us-west-2, stsEndpoint: "http://${emulator}"}
azure: {tenantId: "${tenant_id}", authorityHost: "https://${emulator}/"}
gcp: {workloadIdentityProvider: "${wip}", tokenUrl: "http://${emulator}/v1/token", impersonationEndpoint: "http://${emulator}"}
identities:
  - {namespace: ${ns_in}, serviceAccount: probe-sa, aws: {roleArn: "${role_arn}"}}
  - {namespace: ${ns_in}, serviceAccount: aws-sa, aws: {roleArn: "${role_arn}"}}
  - {namespace: ${ns_in}, serviceAccount: gcp-sa, gcp: {serviceAccount: "${gsa}"}}
  - {namespace: ${ns_in}, serviceAccount: azure-sa, azure: {clientId: "${client_id}"}}
  - namespace: ${ns_in}
    serviceAccount: all-sa
    aws: {roleArn: "${role_arn}"}
    gcp: {serviceAccount: "${gsa}"}
    azure: {clientId: "${client_id}"}
  - {namespace: ${ns_out}, serviceAccount: aws-sa, aws: {roleArn: "${role_arn}"}}
  - {namespace: ${ns_in}, serviceAccount: podid-sa, aws: {mode: podIdentity}}
  - {namespace: ${ns_in}, serviceAccount: podid-intruder-sa, aws: {mode: podIdentity}}
CONFIG

kc -n "${system_ns}" rollout status deployment/workload-identity-webhook deployment/workload-identity-emulator \
  daemonset/workload-identity-emulator-pod-identity-agent --timeout=180s
# --- test objects -------------------------------------------------------------------------------
for ns in "${ns_in}" "${ns_out}"; do
  kc delete namespace "${ns}" --ignore-not-found --wait=true >/dev/null
done
kc create namespace "${ns_in}"
kc create namespace "${ns_out}"
kc -n "${ns_in}" create serviceaccount probe-sa

# A Pod manifest: pod_yaml NAMESPACE NAME SERVICE_ACCOUNT [LABELS_YAML]
pod_yaml() {
  cat <<POD
apiVersion: v1
kind: Pod
metadata:
  name: $2
  namespace: $1
  labels: {e2e: "true"${4:+, $4}}
spec:
  serviceAccountName: $3
  restartPolicy: Never
  terminationGracePeriodSeconds: 0
  containers:
    - name: app
      image: registry.k8s.io/pause:3.10
POD
}
create_pod() { pod_yaml "$@" | kc create -f - >/dev/null; }
# What the API server would store for that Pod (server-side dry run: webhooks run, nothing is kept).
dry_run_env() {
  pod_yaml "$1" "$2" "$3" | kc create --dry-run=server -o jsonpath="{.spec.containers[0].env[?(@.name==\"$4\")].value}" -f - 2>/dev/null || true
}
get() { kc -n "$1" get "$2" "$3" -o jsonpath="$4"; }
env_of() { get "$1" pod "$2" "{.spec.containers[0].env[?(@.name==\"$3\")].value}"; }
volume_of() { get "$1" pod "$2" "{.spec.volumes[?(@.name==\"$3\")].name}"; }

# Waits until 5 server-side dry runs in a row (so, very likely, both replicas) give a Pod of
# ServiceAccount $2 in namespace $1 the env var $3 with the value $4; at most $5 seconds.
wait_for_env() {
  local streak=0 deadline=$((SECONDS + $5))
  while [[ ${SECONDS} -lt ${deadline} ]]; do
    if [[ "$(dry_run_env "$1" probe "$2" "$3")" == "$4" ]]; then
      streak=$((streak + 1))
      [[ ${streak} -ge 5 ]] && return 0
    else
      streak=0
      sleep 1
    fi
  done
  echo "note: the webhook did not give $1/$2 $3=$4 within $5s" >&2
}

# The webhook answers through the Service, with the trusted certificate and the mappings above.
wait_for_env "${ns_in}" probe-sa AWS_ROLE_ARN "${role_arn}" 120
webhook_pods_before="$(kc -n "${system_ns}" get pods -l app.kubernetes.io/name=workload-identity-webhook \
  -o jsonpath='{range .items[*]}{.metadata.name}:{.status.containerStatuses[0].restartCount}{"\n"}{end}' | sort)"

# ServiceAccounts are created now that the mappings are in force, so the webhook annotates them.
for sa in aws-sa gcp-sa azure-sa all-sa late-sa; do
  kc -n "${ns_in}" create serviceaccount "${sa}"
done
kc -n "${ns_out}" create serviceaccount aws-sa

failures=0
check() { # check CASE EXPECTED ACTUAL
  if [[ "$2" == "$3" ]]; then
    echo "PASS: $1"
  else
    echo "FAIL: $1: expected '$2', got '$3'"
    failures=$((failures + 1))
  fi
}

# --- cases --------------------------------------------------------------------------------------
create_pod "${ns_in}" aws aws-sa
check "AWS IRSA: AWS_ROLE_ARN" "${role_arn}" "$(env_of "${ns_in}" aws AWS_ROLE_ARN)"
check "AWS IRSA: AWS_WEB_IDENTITY_TOKEN_FILE" "/var/run/secrets/eks.amazonaws.com/serviceaccount/token" \
  "$(env_of "${ns_in}" aws AWS_WEB_IDENTITY_TOKEN_FILE)"
check "AWS IRSA: AWS_REGION" "us-west-2" "$(env_of "${ns_in}" aws AWS_REGION)"
check "AWS IRSA: AWS_ENDPOINT_URL_STS (the emulator)" "http://${emulator}" "$(env_of "${ns_in}" aws AWS_ENDPOINT_URL_STS)"
check "AWS IRSA: aws-iam-token volume" "aws-iam-token" "$(volume_of "${ns_in}" aws aws-iam-token)"
check "AWS IRSA: token mount" "/var/run/secrets/eks.amazonaws.com/serviceaccount" \
  "$(get "${ns_in}" pod aws '{.spec.containers[0].volumeMounts[?(@.name=="aws-iam-token")].mountPath}')"

create_pod "${ns_in}" gcp gcp-sa
check "GCP: GOOGLE_APPLICATION_CREDENTIALS" \
  "/var/run/secrets/sts.googleapis.com/serviceaccount/credential-configuration.json" \
  "$(env_of "${ns_in}" gcp GOOGLE_APPLICATION_CREDENTIALS)"
check "GCP: gcp-workload-identity volume" "gcp-workload-identity" "$(volume_of "${ns_in}" gcp gcp-workload-identity)"
gcp_credentials="$(get "${ns_in}" pod gcp '{.metadata.annotations.cloud\.google\.com/external-credentials-json}')"
check "GCP: credential configuration names the provider" yes \
  "$([[ "${gcp_credentials}" == *"//iam.googleapis.com/${wip}"* ]] && echo yes || echo "no: ${gcp_credentials}")"
check "GCP: credential configuration impersonates the service account" yes \
  "$([[ "${gcp_credentials}" == *"serviceAccounts/${gsa}:generateAccessToken"* ]] && echo yes || echo "no: ${gcp_credentials}")"

create_pod "${ns_in}" azure azure-sa
check "Azure: AZURE_CLIENT_ID" "${client_id}" "$(env_of "${ns_in}" azure AZURE_CLIENT_ID)"
check "Azure: AZURE_TENANT_ID" "${tenant_id}" "$(env_of "${ns_in}" azure AZURE_TENANT_ID)"
check "Azure: AZURE_FEDERATED_TOKEN_FILE" "/var/run/secrets/azure/tokens/azure-identity-token" \
  "$(env_of "${ns_in}" azure AZURE_FEDERATED_TOKEN_FILE)"
check "Azure: azure-identity-token volume" "azure-identity-token" "$(volume_of "${ns_in}" azure azure-identity-token)"

create_pod "${ns_in}" all all-sa
check "all three: AWS_ROLE_ARN" "${role_arn}" "$(env_of "${ns_in}" all AWS_ROLE_ARN)"
check "all three: GOOGLE_APPLICATION_CREDENTIALS" \
  "/var/run/secrets/sts.googleapis.com/serviceaccount/credential-configuration.json" \
  "$(env_of "${ns_in}" all GOOGLE_APPLICATION_CREDENTIALS)"
check "all three: AZURE_CLIENT_ID" "${client_id}" "$(env_of "${ns_in}" all AZURE_CLIENT_ID)"
check "all three: volumes" "aws-iam-token gcp-workload-identity azure-identity-token" \
  "$(get "${ns_in}" pod all '{.spec.volumes[?(@.name=="aws-iam-token")].name} {.spec.volumes[?(@.name=="gcp-workload-identity")].name} {.spec.volumes[?(@.name=="azure-identity-token")].name}')"
check "all three: AWS_ROLE_ARN appears once" 1 \
  "$(get "${ns_in}" pod all '{range .spec.containers[0].env[*]}{.name}{"\n"}{end}' | grep -cx AWS_ROLE_ARN)"

create_pod "${ns_out}" unlabelled aws-sa
check "cluster-wide: Pod of an unlabelled namespace injected (env)" "${role_arn}" "$(env_of "${ns_out}" unlabelled AWS_ROLE_ARN)"
check "cluster-wide: Pod of an unlabelled namespace injected (volume)" aws-iam-token "$(volume_of "${ns_out}" unlabelled aws-iam-token)"
check "cluster-wide: ServiceAccount of an unlabelled namespace annotated" "${role_arn}" \
  "$(get "${ns_out}" serviceaccount aws-sa '{.metadata.annotations.eks\.amazonaws\.com/role-arn}')"

create_pod "${ns_in}" opted-out aws-sa "workload-identity.dev/inject: disabled"
check "opt-out label: Pod untouched (env)" "" "$(env_of "${ns_in}" opted-out AWS_ROLE_ARN)"
check "opt-out label: Pod untouched (volume)" "" "$(volume_of "${ns_in}" opted-out aws-iam-token)"

check "ServiceAccount annotated by mapping (AWS)" "${role_arn}" \
  "$(get "${ns_in}" serviceaccount aws-sa '{.metadata.annotations.eks\.amazonaws\.com/role-arn}')"
check "ServiceAccount annotated by mapping (GCP)" "${gsa}" \
  "$(get "${ns_in}" serviceaccount gcp-sa '{.metadata.annotations.iam\.gke\.io/gcp-service-account}')"
check "ServiceAccount annotated by mapping (Azure)" "${client_id}" \
  "$(get "${ns_in}" serviceaccount azure-sa '{.metadata.annotations.azure\.workload\.identity/client-id}')"

# ConfigMap edit: a new mapping for late-sa reaches the next Pod without a restart.
create_pod "${ns_in}" before-edit late-sa
check "ConfigMap edit: before the edit late-sa gets nothing" "" "$(env_of "${ns_in}" before-edit AWS_ROLE_ARN)"
kc -n "${system_ns}" get configmap workload-identity-webhook -o jsonpath='{.data.config\.yaml}' >"${work}/config.yaml"
printf '  - {namespace: %s, serviceAccount: late-sa, aws: {roleArn: "%s"}}\n' "${ns_in}" "${late_role_arn}" >>"${work}/config.yaml"
set_config <"${work}/config.yaml"
wait_for_env "${ns_in}" late-sa AWS_ROLE_ARN "${late_role_arn}" 60
create_pod "${ns_in}" after-edit late-sa
check "ConfigMap edit: the next Pod gets the new mapping" "${late_role_arn}" "$(env_of "${ns_in}" after-edit AWS_ROLE_ARN)"
webhook_pods_after="$(kc -n "${system_ns}" get pods -l app.kubernetes.io/name=workload-identity-webhook \
  -o jsonpath='{range .items[*]}{.metadata.name}:{.status.containerStatuses[0].restartCount}{"\n"}{end}' | sort)"
check "ConfigMap edit: webhook Pods not restarted" "${webhook_pods_before}" "${webhook_pods_after}"
kc -n "${ns_in}" annotate serviceaccount late-sa e2e/touched=true >/dev/null
check "ConfigMap edit: ServiceAccount annotated on its next update" "${late_role_arn}" \
  "$(get "${ns_in}" serviceaccount late-sa '{.metadata.annotations.eks\.amazonaws\.com/role-arn}')"

# --- the in-cluster emulator (README "Local clusters") -----------------------------------------
# aws-sa is trusted with the role; intruder-sa claims the same role and is not.
kc -n "${ns_in}" create serviceaccount intruder-sa
kc -n "${ns_in}" annotate serviceaccount intruder-sa "eks.amazonaws.com/role-arn=${role_arn}"
# EKS Pod Identity: podid-sa has an association, podid-intruder-sa (also mapped) has none.
kc -n "${ns_in}" create serviceaccount podid-sa
kc -n "${ns_in}" create serviceaccount podid-intruder-sa
kc -n "${system_ns}" create configmap workload-identity-emulator-rules --from-file=rules.yaml=/dev/stdin \
  --dry-run=client -o yaml <<RULES | kc apply -f -
aws:
  roles:
    - {arn: "${role_arn}", subjects: ["system:serviceaccount:${ns_in}:aws-sa"]}
  podIdentity:
    - {arn: "${role_arn}", subjects: ["system:serviceaccount:${ns_in}:podid-sa"]}
RULES
# The kubelet updates the mounted rules within about a minute; the emulator logs the reload.
deadline=$((SECONDS + 120))
for emulator_workload in deploy/workload-identity-emulator ds/workload-identity-emulator-pod-identity-agent; do
  until kc -n "${system_ns}" logs "${emulator_workload}" | grep -q '"trust rules loaded"'; do
    [[ ${SECONDS} -lt ${deadline} ]] || { echo "FAIL: ${emulator_workload} did not load the edited rules"; failures=$((failures + 1)); break; }
    sleep 2
  done
done
aws_cli() { # NAME SERVICE_ACCOUNT: the AWS CLI's default credential chain in a Pod; prints its phase
  kc -n "${ns_in}" run "$1" --image=amazon/aws-cli:2.22.0 --restart=Never --labels=e2e=true \
    --overrides="{\"spec\": {\"serviceAccountName\": \"$2\"}}" -- configure export-credentials --format env >/dev/null
  local phase="" deadline=$((SECONDS + 180))
  while [[ ${SECONDS} -lt ${deadline} ]]; do
    phase="$(get "${ns_in}" pod "$1" '{.status.phase}')"
    [[ "${phase}" == Succeeded || "${phase}" == Failed ]] && break
    sleep 2
  done
  echo "${phase}"
}
check "emulator: the trusted ServiceAccount's Pod gets credentials" Succeeded "$(aws_cli cli-trusted aws-sa)"
check "emulator: they are the emulator's fake ones" yes \
  "$(kc -n "${ns_in}" logs cli-trusted | grep -q '^export AWS_ACCESS_KEY_ID=ASIAEMULATED' && echo yes || echo no)"
check "emulator: the other ServiceAccount's Pod is refused" Failed "$(aws_cli cli-intruder intruder-sa)"
check "emulator: refused with AccessDenied" yes \
  "$(kc -n "${ns_in}" logs cli-intruder | grep -q AccessDenied && echo yes || echo no)"
decisions="$(kc -n "${system_ns}" logs deploy/workload-identity-emulator | grep '"decision"' || true)"
check "emulator log: grant to aws-sa" yes \
  "$(grep '"outcome":"grant"' <<<"${decisions}" | grep -q "system:serviceaccount:${ns_in}:aws-sa" && echo yes || echo no)"
check "emulator log: refusal of intruder-sa" yes \
  "$(grep '"outcome":"refusal"' <<<"${decisions}" | grep -q "system:serviceaccount:${ns_in}:intruder-sa" && echo yes || echo no)"
check "Pod Identity agent: the associated ServiceAccount's Pod gets credentials" Succeeded "$(aws_cli cli-podid podid-sa)"
check "Pod Identity agent: they are the emulator's fake ones" yes \
  "$(kc -n "${ns_in}" logs cli-podid | grep -q '^export AWS_ACCESS_KEY_ID=ASIAEMULATED' && echo yes || echo no)"
check "Pod Identity agent: a ServiceAccount without association is refused" Failed "$(aws_cli cli-podid-intruder podid-intruder-sa)"
decisions="$(kc -n "${system_ns}" logs ds/workload-identity-emulator-pod-identity-agent | grep '"decision"' || true)"
check "Pod Identity agent log: grant to podid-sa" yes \
  "$(grep '"outcome":"grant"' <<<"${decisions}" | grep -q "system:serviceaccount:${ns_in}:podid-sa" && echo yes || echo no)"
check "Pod Identity agent log: refusal of podid-intruder-sa" yes \
  "$(grep '"outcome":"refusal"' <<<"${decisions}" | grep -q "system:serviceaccount:${ns_in}:podid-intruder-sa" && echo yes || echo no)"

echo
if [[ ${failures} -gt 0 ]]; then
  echo "kind e2e: ${failures} check(s) FAILED"
  exit 1
fi
echo "kind e2e: all checks passed"
for ns in "${ns_in}" "${ns_out}"; do
  kc delete namespace "${ns}" --wait=false >/dev/null
done
