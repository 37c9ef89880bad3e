# shellcheck shell=bash disable=SC2154  # here, repo, work and the helpers come from run.sh and inside.sh
# Sourced by inside.sh once the node is Ready: installs the webhook as a user would and checks what
# the kubelet gives the Pods. Uses k (kubectl in the namespace), nsx, log, phase, work, repo.
system=workload-identity-system
apps=wiw-apps    # opted in (namespace-opt-in overlay)
plain=wiw-plain  # not opted in
provider=projects/123456789/locations/global/workloadIdentityPools/pool/providers/provider
tenant=11111111-2222-3333-4444-555555555555
client=00000000-1111-2222-3333-444444444444
gsa=reader@my-project.iam.gserviceaccount.com
role=arn:aws:iam::111122223333:role
checks=0

fail() { log "FAIL: $*"; exit 1; }
expect_eq() {
  [[ "$2" == "$3" ]] || fail "$1: got '$2', want '$3'"
  checks=$((checks + 1))
}

# --- install: the overlay as published, through a kustomization that patches only the workload
# image (locally imported) and the Deployments' imagePullPolicy: Never. The webhook's image is the
# release's, imported under its published name.
install_overlay() {
  local dir="$work/kustomize/$1"
  mkdir -p "$dir"
  cat > "$dir/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(realpath --relative-to="$dir" "$repo/manifests/overlays/$1")
images:
  - name: docker.io/library/busybox
    newName: localhost/wiw-node/busybox
    newTag: test
patches:
  - target: {kind: Deployment}
    patch: |
      - {op: replace, path: /spec/template/spec/containers/0/imagePullPolicy, value: Never}
EOF
  k apply -k "$dir" >&2
}

# A Pod as JSON: busybox sleeping, and an init container that saves its env and the identity files
# it sees into an emptyDir that the main container also mounts.
# shellcheck disable=SC2016  # expanded by the container's shell
init_script='env | sort > /out/init.env
for v in AWS_WEB_IDENTITY_TOKEN_FILE AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE AZURE_FEDERATED_TOKEN_FILE GOOGLE_APPLICATION_CREDENTIALS; do
  eval "f=\${$v:-}"
  if [ -n "$f" ]; then cat "$f" > "/out/init.$v"; fi
done'
pod_json() { # name namespace serviceaccount [pod label value for workload-identity.dev/inject]
  jq -n --arg name "$1" --arg ns "$2" --arg sa "$3" --arg inject "${4:-}" --arg init "$init_script" '{
    apiVersion: "v1", kind: "Pod",
    metadata: {name: $name, namespace: $ns,
      labels: ({app: "wiw-node-test"} + (if $inject == "" then {} else {"workload-identity.dev/inject": $inject} end))},
    spec: {serviceAccountName: $sa, enableServiceLinks: false, terminationGracePeriodSeconds: 1,
      volumes: [{name: "out", emptyDir: {}}],
      initContainers: [{name: "init", image: "localhost/wiw-node/busybox:test", imagePullPolicy: "Never",
        command: ["sh", "-c", $init], volumeMounts: [{name: "out", mountPath: "/out"}]}],
      containers: [{name: "app", image: "localhost/wiw-node/busybox:test", imagePullPolicy: "Never",
        command: ["sleep", "3600"], volumeMounts: [{name: "out", mountPath: "/out"}]}]}}'
}
create_pods() { # namespace serviceaccount=name... ; creates, then waits until all are Ready
  local ns="$1" spec
  shift
  for spec in "$@"; do pod_json "${spec#*=}" "$ns" "${spec%%=*}"; done | k create -f - >&2
  for spec in "$@"; do
    k -n "$ns" wait --for=condition=Ready "pod/${spec#*=}" --timeout=180s >&2 \
      || fail "Pod $ns/${spec#*=} not Ready: $(k -n "$ns" get pod "${spec#*=}" -o jsonpath='{.status}')"
  done
}
# What the webhook would give a new Pod of this ServiceAccount now ("none", or nothing when the
# create failed): a server-side dry run, which passes admission exactly as a real create.
dry_run_env() { # namespace serviceaccount
  pod_json "dry-run" "$1" "$2" | k create --dry-run=server -o json -f - 2>/dev/null \
    | jq -r '(.spec.containers[0].env // [] | map("\(.name)=\(.value)") | sort | join(" ")) as $env
        | if $env == "" then "none" else $env end'
}
wait_dry_run() { # what namespace serviceaccount expected-substring
  local t0=$SECONDS
  until [[ "$(dry_run_env "$2" "$3")" == *"$4"* ]]; do
    ((SECONDS - t0 < 120)) || fail "$1: a new Pod of $2/$3 did not get $4 within 120 s"
    sleep 1
  done
  log "$1: $((SECONDS - t0)) s"
}

identity_env_filter() { { grep -E '^(AWS_|AZURE_|GOOGLE_|CLOUDSDK_)' || true; } | sort | tr '\n' ' ' | sed 's/ $//'; }
identity_env() { # namespace pod [container, app when not given]
  local out
  out="$(k -n "$1" exec "$2" -c "${3:-app}" -- env)"
  identity_env_filter <<< "$out"
}
jwt_claims() { # the payload of a JWT, as JSON
  local p
  p="$(cut -d. -f2 <<< "$1" | tr '_-' '/+')"
  while ((${#p} % 4)); do p+="="; done
  base64 -d <<< "$p"
}
kubelet_volume() { # namespace pod volume: the folder the kubelet writes the volume's files into
  echo "/var/lib/kubelet/pods/$(k -n "$1" get pod "$2" -o jsonpath='{.metadata.uid}')/volumes/kubernetes.io~projected/$3"
}
# For the SDK runs: a copy of the files the kubelet wrote into the volume, and the Pod as stored.
save_kubelet_files() { # namespace pod volume
  mkdir -p "$work/tokens/$1/$2/$3"
  cp -L "$(kubelet_volume "$1" "$2" "$3")"/[!.]* "$work/tokens/$1/$2/$3/"
  k -n "$1" get pod "$2" -o json > "$work/tokens/$1/$2/pod.json"
}
# check_token NAMESPACE POD VOLUME FILE MOUNT AUDIENCE LIFETIME ENV: the token the kubelet wrote is
# the file the container reads, with the audience, subject and lifetime asked for; the init
# container read a token with the same audience and subject.
check_token() {
  local ns="$1" pod="$2" volume="$3" file="$4" mount="$5" aud="$6" lifetime="$7" var="$8"
  local token claims sa host written init
  token="$(k -n "$ns" exec "$pod" -c app -- cat "$mount/$file")"
  claims="$(jwt_claims "$token")"
  sa="$(k -n "$ns" get pod "$pod" -o jsonpath='{.spec.serviceAccountName}')"
  expect_eq "$pod $volume aud" "$(jq -r '.aud | if type == "array" then join(",") else . end' <<< "$claims")" "$aud"
  expect_eq "$pod $volume sub" "$(jq -r .sub <<< "$claims")" "system:serviceaccount:$ns:$sa"
  expect_eq "$pod $volume exp - iat" "$(jq -r '.exp - .iat' <<< "$claims")" "$lifetime"
  expect_eq "$pod $volume pod binding" "$(jq -r '."kubernetes.io".pod.name' <<< "$claims")" "$pod"
  host="$(kubelet_volume "$ns" "$pod" "$volume")"
  written="$(cat "$host/$file")"
  expect_eq "$pod $volume file written by the kubelet" "$written" "$token"
  save_kubelet_files "$ns" "$pod" "$volume"
  init="$(k -n "$ns" exec "$pod" -c app -- cat "/out/init.$var")"
  if [[ "$var" == GOOGLE_APPLICATION_CREDENTIALS ]]; then
    expect_eq "$pod init container's credential file" "$init" "$(cat "$host/credential-configuration.json")"
  else
    expect_eq "$pod init container's token sub" "$(jwt_claims "$init" | jq -r .sub)" "$(jq -r .sub <<< "$claims")"
    expect_eq "$pod init container's token aud" "$(jwt_claims "$init" | jq -c .aud)" "$(jq -c .aud <<< "$claims")"
  fi
}
aws_irsa_env() { # role [regional: the ServiceAccount asks for regional STS endpoints]
  echo "AWS_DEFAULT_REGION=us-west-2 AWS_REGION=us-west-2 AWS_ROLE_ARN=$1 AWS_WEB_IDENTITY_TOKEN_FILE=/var/run/secrets/eks.amazonaws.com/serviceaccount/token${2:+ AWS_STS_REGIONAL_ENDPOINTS=regional}"
}
check_irsa() { # namespace pod role
  check_token "$1" "$2" aws-iam-token token /var/run/secrets/eks.amazonaws.com/serviceaccount \
    sts.amazonaws.com 86400 AWS_WEB_IDENTITY_TOKEN_FILE
}
check_azure() {
  check_token "$1" "$2" azure-identity-token azure-identity-token /var/run/secrets/azure/tokens \
    api://AzureADTokenExchange 3600 AZURE_FEDERATED_TOKEN_FILE
}
check_google() { # namespace pod [google service account]
  local ns="$1" pod="$2" gsa="${3:-}" file annotation
  check_token "$ns" "$pod" gcp-workload-identity token /var/run/secrets/sts.googleapis.com/serviceaccount \
    "https://iam.googleapis.com/$provider" 3600 GOOGLE_APPLICATION_CREDENTIALS
  file="$(k -n "$ns" exec "$pod" -c app -- cat /var/run/secrets/sts.googleapis.com/serviceaccount/credential-configuration.json)"
  annotation="$(k -n "$ns" get pod "$pod" -o json | jq -r '.metadata.annotations["cloud.google.com/external-credentials-json"]')"
  expect_eq "$pod Google credential file = annotation" "$file" "$annotation"
  expect_eq "$pod credential type" "$(jq -r .type <<< "$file")" external_account
  expect_eq "$pod gcloud config directory is writable" \
    "$(k -n "$ns" exec "$pod" -c app -- sh -c 'touch "$CLOUDSDK_CONFIG/probe" && echo writable')" writable
  expect_eq "$pod credential audience" "$(jq -r .audience <<< "$file")" "//iam.googleapis.com/$provider"
  expect_eq "$pod credential token file" "$(jq -r .credential_source.file <<< "$file")" \
    /var/run/secrets/sts.googleapis.com/serviceaccount/token
  if [[ -n "$gsa" ]]; then
    expect_eq "$pod impersonation URL" "$(jq -r .service_account_impersonation_url <<< "$file")" \
      "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/$gsa:generateAccessToken"
  else
    expect_eq "$pod no impersonation (direct access)" "$(jq -r '.service_account_impersonation_url // "none"' <<< "$file")" none
  fi
}
azure_env="AZURE_AUTHORITY_HOST=https://login.microsoftonline.com/ AZURE_CLIENT_ID=$client AZURE_FEDERATED_TOKEN_FILE=/var/run/secrets/azure/tokens/azure-identity-token AZURE_TENANT_ID=$tenant"
google_env="CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE=/var/run/secrets/sts.googleapis.com/serviceaccount/credential-configuration.json CLOUDSDK_CONFIG=/var/run/secrets/sts.googleapis.com/gcloud-config GOOGLE_APPLICATION_CREDENTIALS=/var/run/secrets/sts.googleapis.com/serviceaccount/credential-configuration.json"
# With a Google service account to impersonate, its e-mail's project is the workload's project.
google_impersonation_env="$google_env CLOUDSDK_CORE_PROJECT=my-project GOOGLE_CLOUD_PROJECT=my-project"
sorted() { tr ' ' '\n' <<< "$*" | { grep . || true; } | sort | tr '\n' ' ' | sed 's/ $//'; }
check_env() { # namespace pod expected...: the identity env of the app and of the init container
  local want got init
  want="$(sorted "${@:3}")"
  got="$(identity_env "$1" "$2")"
  expect_eq "$2 env" "$got" "$want"
  init="$(k -n "$1" exec "$2" -c app -- cat /out/init.env)"
  expect_eq "$2 init container env" "$(identity_env_filter <<< "$init")" "$want"
}
check_untouched() { # namespace pod
  local pod
  check_env "$1" "$2"
  pod="$(k -n "$1" get pod "$2" -o json)"
  expect_eq "$2 volumes" "$(jq -r '[.spec.volumes[].name | select(startswith("kube-api-access-") | not)] | join(",")' <<< "$pod")" out
  expect_eq "$2 Google annotation" "$(jq -r '.metadata.annotations // {} | has("cloud.google.com/external-credentials-json")' <<< "$pod")" false
}

# ---------------------------------------------------------------------------------------------
install_overlay namespace-opt-in
k -n "$system" wait --for=condition=Available deploy/workload-identity-webhook --timeout=300s >&2 \
  || fail "webhook Deployment not Available: $(k -n "$system" get pods -o wide 2>&1)"
phase "webhook installed (namespace-opt-in), Deployment Available"
t0=$SECONDS
until [[ "$(k get mutatingwebhookconfiguration workload-identity-webhook -o json \
  | jq '[.webhooks[].clientConfig.caBundle // "" | select(. != "")] | length')" == 2 ]]; do
  ((SECONDS - t0 < 60)) || fail "caBundle not published by the self-managed certificate within 60 s"
  sleep 1
done
k -n "$system" get secret workload-identity-webhook-tls >/dev/null || fail "no certificate Secret"
checks=$((checks + 1))
# The image is the Dockerfile's package target: the webhook runs as 65532 and there is no shell.
for pod in $(k -n "$system" get pods -l app.kubernetes.io/name=workload-identity-webhook -o name); do
  container="$(k -n "$system" get "$pod" -o jsonpath='{.status.containerStatuses[0].containerID}')"
  pid="$(ctr_ tasks ls | awk -v id="${container#containerd://}" '$1 == id {print $2}')"
  expect_eq "$pod process user" "$(awk '/^Uid:/ {print $2 "/" $3}' "/proc/$pid/status")" 65532/65532
  if k -n "$system" exec "$pod" -- sh -c true 2>/dev/null; then fail "$pod has a shell"; fi
  checks=$((checks + 1))
done

k create namespace "$apps" >&2
k label namespace "$apps" workload-identity.dev/inject=enabled >&2
k create namespace "$plain" >&2
config="aws: {region: us-west-2}
identities:
  - {namespace: $apps, serviceAccount: podid, aws: {mode: podIdentity}}
  - {namespace: $apps, serviceAccount: mapped, aws: {roleArn: \"$role/mapped-v1\"}}
  - {namespace: $apps, serviceAccount: per-container, containers: [app], aws: {roleArn: \"$role/per-container-app\"}}
  - {namespace: $apps, serviceAccount: per-container, containers: [init], aws: {roleArn: \"$role/per-container-init\"}}
  - {namespace: $apps, serviceAccount: per-container, containers: [sidecar], aws: {roleArn: \"$role/per-container-sidecar\"}}"
set_config() {
  k -n "$system" patch configmap workload-identity-webhook --type merge \
    -p "$(jq -n --arg c "$1" '{data: {"config.yaml": $c}}')" >&2
}
set_config "$config"
sa() { # namespace name annotation...
  k -n "$1" create serviceaccount "$2" >&2
  (($# < 3)) || k -n "$1" annotate serviceaccount "$2" "${@:3}" >&2
}
gcp_provider="cloud.google.com/workload-identity-provider=$provider"
for ns in "$apps" "$plain"; do
  sa "$ns" irsa "eks.amazonaws.com/role-arn=$role/irsa" eks.amazonaws.com/sts-regional-endpoints=true
done
sa "$apps" podid
sa "$apps" mapped
sa "$apps" per-container
sa "$apps" late
sa "$apps" azure "azure.workload.identity/client-id=$client" "azure.workload.identity/tenant-id=$tenant"
sa "$apps" gcp-impersonate "iam.gke.io/gcp-service-account=$gsa" "$gcp_provider"
sa "$apps" gcp-direct "$gcp_provider"
sa "$apps" multi "eks.amazonaws.com/role-arn=$role/multi" eks.amazonaws.com/sts-regional-endpoints=true \
  "iam.gke.io/gcp-service-account=$gsa" "$gcp_provider" \
  "azure.workload.identity/client-id=$client" "azure.workload.identity/tenant-id=$tenant"
# Claims the identities of irsa, azure and gcp-impersonate: the SDK runs' trust rules refuse it.
sa "$apps" intruder "eks.amazonaws.com/role-arn=$role/irsa" eks.amazonaws.com/sts-regional-endpoints=true \
  "iam.gke.io/gcp-service-account=$gsa" "$gcp_provider" \
  "azure.workload.identity/client-id=$client" "azure.workload.identity/tenant-id=$tenant"
# The apiserver calls the webhook through its Service; wait until it answers with the identity.
wait_dry_run "webhook reachable through its Service, ServiceAccounts cached" "$apps" irsa "AWS_ROLE_ARN=$role/irsa"
wait_dry_run "ConfigMap mappings loaded" "$apps" podid AWS_CONTAINER_CREDENTIALS_FULL_URI

create_pods "$apps" irsa=irsa podid=podid azure=azure gcp-impersonate=gcp-impersonate \
  gcp-direct=gcp-direct multi=multi intruder=intruder mapped=mapped-1 late=late-1
pod_json optout "$apps" irsa disabled | k create -f - >&2
# Identities per container: a role for each of app, init and a native sidecar (an init container
# that keeps running beside app); the opt-in Pod's list leaves its init container out.
pod_json per-container-1 "$apps" per-container | jq '.spec.initContainers += [{name: "sidecar",
  image: "localhost/wiw-node/busybox:test", imagePullPolicy: "Never", restartPolicy: "Always",
  command: ["sleep", "3600"]}]' | k create -f - >&2
pod_json opt-in "$apps" irsa | jq '.metadata.annotations = {"workload-identity.dev/containers": "app"}' | k create -f - >&2
create_pods "$plain" irsa=plain-1
for pod in optout per-container-1 opt-in; do
  k -n "$apps" wait --for=condition=Ready "pod/$pod" --timeout=180s >&2 \
    || fail "Pod $apps/$pod not Ready: $(k -n "$apps" get pod "$pod" -o jsonpath='{.status}')"
done
phase "workload Pods Running"

check_env "$apps" irsa "$(aws_irsa_env "$role/irsa" regional)"
check_irsa "$apps" irsa
check_env "$apps" podid AWS_DEFAULT_REGION=us-west-2 AWS_REGION=us-west-2 \
  AWS_CONTAINER_CREDENTIALS_FULL_URI=http://169.254.170.23/v1/credentials \
  AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token
check_token "$apps" podid eks-pod-identity-token eks-pod-identity-token /var/run/secrets/pods.eks.amazonaws.com/serviceaccount \
  pods.eks.amazonaws.com 86400 AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE
check_env "$apps" azure "$azure_env"
check_azure "$apps" azure
check_env "$apps" gcp-impersonate "$google_impersonation_env"
check_google "$apps" gcp-impersonate "$gsa"
# Tamper check: the overlay's ValidatingAdmissionPolicy keeps the Google credential annotation of a
# running Pod (the file its containers read) as the webhook wrote it: no overwrite, no removal.
gcp_annotation=cloud.google.com/external-credentials-json
gcp_policy=workload-identity-webhook-google-credential-configuration
annotation_of() { k -n "$apps" get pod "$1" -o json | jq -r --arg a "$gcp_annotation" '.metadata.annotations[$a] // "none"'; }
before="$(annotation_of gcp-impersonate)"
for change in "$gcp_annotation={\"type\":\"external_account\",\"token_url\":\"https://sts.example.com/token\"}" "${gcp_annotation}-"; do
  if out="$(k -n "$apps" annotate --overwrite pod gcp-impersonate "$change" 2>&1)"; then
    fail "kubectl annotate pod gcp-impersonate ${change%%=*} was allowed: $out"
  fi
  [[ "$out" == *"$gcp_policy"*"denied"* ]] || fail "kubectl annotate ${change%%=*} failed, but not by $gcp_policy: $out"
  log "kubectl annotate --overwrite pod gcp-impersonate ${change%%=*}: refused by $gcp_policy"
  checks=$((checks + 1))
done
expect_eq "gcp-impersonate Google annotation after the refused changes" "$(annotation_of gcp-impersonate)" "$before"
check_env "$apps" gcp-direct "$google_env"
check_google "$apps" gcp-direct
check_env "$apps" multi "$(aws_irsa_env "$role/multi" regional)" "$azure_env" "$google_impersonation_env"
check_irsa "$apps" multi
check_azure "$apps" multi
check_google "$apps" multi "$gsa"
check_env "$apps" intruder "$(aws_irsa_env "$role/irsa" regional)" "$azure_env" "$google_impersonation_env"
check_irsa "$apps" intruder
check_azure "$apps" intruder
check_google "$apps" intruder "$gsa"
check_env "$apps" mapped-1 "$(aws_irsa_env "$role/mapped-v1")"
# Identities per container: each container's own role from its mapping, one token volume that all
# three read; a container outside the Pod's opt-in list gets nothing. The SDK runs below prove the
# roles granted.
check_init_env() { # namespace pod expected...: the identity env the init container saw
  expect_eq "$2 init container env" \
    "$(identity_env_filter <<< "$(k -n "$1" exec "$2" -c app -- cat /out/init.env)")" "$(sorted "${@:3}")"
}
expect_eq "per-container-1 env" "$(identity_env "$apps" per-container-1)" "$(sorted "$(aws_irsa_env "$role/per-container-app")")"
check_init_env "$apps" per-container-1 "$(aws_irsa_env "$role/per-container-init")"
expect_eq "per-container-1 sidecar env" "$(identity_env "$apps" per-container-1 sidecar)" \
  "$(sorted "$(aws_irsa_env "$role/per-container-sidecar")")"
check_irsa "$apps" per-container-1
expect_eq "per-container-1 sidecar's token" \
  "$(k -n "$apps" exec per-container-1 -c sidecar -- cat /var/run/secrets/eks.amazonaws.com/serviceaccount/token)" \
  "$(cat "$work/tokens/$apps/per-container-1/aws-iam-token/token")"
expect_eq "per-container-1 volumes" \
  "$(k -n "$apps" get pod per-container-1 -o json | jq -r '[.spec.volumes[].name | select(. == "aws-iam-token")] | length')" 1
expect_eq "opt-in env" "$(identity_env "$apps" opt-in)" "$(sorted "$(aws_irsa_env "$role/irsa" regional)")"
check_init_env "$apps" opt-in
save_kubelet_files "$apps" opt-in aws-iam-token
check_untouched "$apps" optout
check_untouched "$plain" plain-1
check_untouched "$apps" late-1
# Isolation: nothing leaves the namespace, from the node or from a Pod (192.0.2.1 is TEST-NET-1).
if nsx ip route get 192.0.2.1 >/dev/null 2>&1; then fail "the network namespace has a route out"; fi
if k -n "$apps" exec irsa -c app -- wget -q -T 5 -O /dev/null http://192.0.2.1/ 2>/dev/null; then
  fail "a Pod reached 192.0.2.1"
fi
if k -n "$apps" exec irsa -c app -- nslookup sts.amazonaws.com >/dev/null 2>&1; then
  fail "a Pod resolved sts.amazonaws.com"
fi
checks=$((checks + 3))
phase "tokens, credential files and env checked ($checks checks so far)"

# The seam for the SDK conformance runs: the token and credential files the kubelet wrote, one
# folder per namespace/Pod/volume, handed to a command that runs in the same namespaces (no route
# out, cloud host names on loopback).
if [[ -n "${WIW_NODE_TOKEN_HOOK:-}" ]]; then
  nsx bash -c "$WIW_NODE_TOKEN_HOOK \"\$1\"" hook "$work/tokens" || fail "WIW_NODE_TOKEN_HOOK failed"
  phase "WIW_NODE_TOKEN_HOOK"
fi
# The official SDKs on those files (tests/sdk.rs): each container's env from its Pod's spec, the files at their
# in-container paths, the emulated token services on this namespace's loopback verifying the tokens
# against this apiserver's keys and issuer; one line per SDK, Pod's container and cloud.
k get --raw /openid/v1/jwks > "$work/jwks.json"
WIW_SDK_NODE_TOKENS="$work/tokens" WIW_SDK_NODE_JWKS="$work/jwks.json" WIW_SDK_NODE_NETNS="/run/netns/$netns" \
  WIW_SDK_NODE_ISSUER="$(k get --raw /.well-known/openid-configuration | jq -r .issuer)" \
  nsx "$sdk_test" --ignored --exact sdks_get_credentials_from_the_kubelets_files --nocapture -q >&2 \
  || fail "official SDKs on the kubelet's token files"
checks=$((checks + 1))
phase "official SDKs on the kubelet's token files"

# --- lifecycle: a ServiceAccount annotated after its Pod started.
k -n "$apps" annotate serviceaccount late "eks.amazonaws.com/role-arn=$role/late" >&2
wait_dry_run "ServiceAccount annotation reached new Pods" "$apps" late "AWS_ROLE_ARN=$role/late"
check_untouched "$apps" late-1
create_pods "$apps" late=late-2
check_env "$apps" late-2 "$(aws_irsa_env "$role/late")"
check_irsa "$apps" late-2

# A mapping edited in the ConfigMap reaches the next Pod; the running one keeps its identity.
set_config "${config/mapped-v1/mapped-v2}"
wait_dry_run "ConfigMap edit reached new Pods" "$apps" mapped "AWS_ROLE_ARN=$role/mapped-v2"
create_pods "$apps" mapped=mapped-2
check_env "$apps" mapped-2 "$(aws_irsa_env "$role/mapped-v2")"
check_env "$apps" mapped-1 "$(aws_irsa_env "$role/mapped-v1")"
phase "lifecycle: late annotation and ConfigMap edit"

# Pods admitted while the webhook Deployment rolls: server-side dry runs in a loop, from before
# `kubectl rollout restart` until 20 s after the rollout finished (preStop 10 s + drain).
rollout_log="$work/rollout.log"
(
  trap - EXIT INT TERM
  while [[ ! -f "$work/rollout.stop" ]]; do
    case "$(dry_run_env "$apps" irsa)" in
      *"AWS_ROLE_ARN=$role/irsa"*) echo injected ;;
      "") echo error ;;
      *) echo missing ;;
    esac
  done > "$rollout_log"
) &
sampler=$!
sleep 3
k -n "$system" rollout restart deploy/workload-identity-webhook >&2
k -n "$system" rollout status deploy/workload-identity-webhook --timeout=300s >&2
sleep 20
touch "$work/rollout.stop"
wait "$sampler"
admitted="$(grep -c . "$rollout_log" || true)"
missing_count="$(grep -c missing "$rollout_log" || true)"
errors="$(grep -c error "$rollout_log" || true)"
log "rollout restart: ${admitted} Pods admitted (server-side dry run), ${missing_count} without injection, ${errors} create errors (failurePolicy: Ignore)"
((admitted - errors >= 10)) || fail "too few Pods admitted during the rollout to measure (${admitted})"
expect_eq "Pods admitted without injection during kubectl rollout restart" "$missing_count" 0
phase "lifecycle: rollout restart"

# --- cluster-wide: the same webhook, now every namespace but kube-system and its own.
install_overlay cluster-wide
# Applying an overlay puts back its own config.yaml (no mappings): manifests/README.md's advice is to keep
# config.yaml in your own kustomization; here the test's mappings are written again.
set_config "$config"
wait_dry_run "cluster-wide overlay reached the namespace that did not opt in" "$plain" irsa "AWS_REGION=us-west-2 AWS_ROLE_ARN=$role/irsa"
create_pods "$plain" irsa=plain-2
check_env "$plain" plain-2 "$(aws_irsa_env "$role/irsa" regional)"
check_irsa "$plain" plain-2
pod_json optout-2 "$plain" irsa disabled | k create -f - >&2
k -n "$plain" wait --for=condition=Ready pod/optout-2 --timeout=180s >&2
check_untouched "$plain" optout-2
phase "cluster-wide overlay"

# --- local overlay: the emulator in the cluster (components/emulator) and the webhook's settings
# pointing at its Service, and its Pod Identity agent on the node's 169.254.170.23:80. The SDKs then
# get credentials from them for the identities its rules ConfigMap trusts, and a refusal for the
# same identities claimed by another ServiceAccount.
# The agent's address leaves the node's loopback (the SDK runs above served it from the test's own
# emulator, which has exited): the agent's init container must put it back, as on a kind node.
nsx ip addr del "$pod_identity_ip/32" dev lo
install_overlay local
k -n "$system" wait --for=condition=Available deploy/workload-identity-emulator --timeout=180s >&2 \
  || fail "emulator Deployment not Available: $(k -n "$system" get pods -o wide 2>&1)"
agent=workload-identity-emulator-pod-identity-agent
k -n "$system" rollout status "ds/$agent" --timeout=180s >&2 \
  || fail "Pod Identity agent DaemonSet not ready: $(k -n "$system" get pods -o wide 2>&1)"
nsx ip -4 addr show dev lo | grep -qF "inet $pod_identity_ip/32" \
  || fail "the Pod Identity agent did not put $pod_identity_ip on the node's loopback"
checks=$((checks + 1))
agent_pod="$(k -n "$system" get pods -l "app.kubernetes.io/name=$agent" -o jsonpath='{.items[0].metadata.name}')"
# Why an agent on the node's network and not the emulator's Service: the API refuses the agent's
# link-local address as an externalIP, so no kube-proxy could route it.
if out="$(k -n "$system" patch service workload-identity-emulator --dry-run=server --type merge \
  -p "{\"spec\": {\"externalIPs\": [\"$pod_identity_ip\"]}}" 2>&1)"; then
  fail "the API took $pod_identity_ip as an externalIP of the emulator's Service: $out"
fi
[[ "$out" == *"link-local"* ]] || fail "externalIPs [$pod_identity_ip] refused, but not as link-local: $out"
checks=$((checks + 1))
emulator_pod="$(k -n "$system" get pods -l app.kubernetes.io/name=workload-identity-emulator \
  -o jsonpath='{.items[0].metadata.name}')"
t0=$SECONDS
until [[ -n "$(k -n "$system" get configmap workload-identity-emulator-ca -o jsonpath='{.data.ca\.crt}')" ]]; do
  ((SECONDS - t0 < 60)) || fail "the emulator did not publish its CA within 60 s"
  sleep 1
done
k -n "$system" get configmap workload-identity-emulator-ca -o jsonpath='{.data.ca\.crt}' > "$work/emulator-ca.crt"
phase "local overlay: emulator Available, CA published"
emulated_role="$role/emulated"
subject="system:serviceaccount:$apps:emulated"
rules="aws:
  roles: [{arn: \"$emulated_role\", subjects: [\"$subject\"]}]
  podIdentity: [{arn: \"$role/emulated-pod-identity\", subjects: [\"system:serviceaccount:$apps:emulated-podid\"]}]
azure: [{tenantId: \"$tenant\", clientId: \"$client\", subjects: [\"$subject\"]}]
google:
  providers: [{name: \"$provider\", subjects: [\"$subject\"]}]
  serviceAccounts: [{email: \"$gsa\", subjects: [\"$subject\"]}]"
k -n "$system" patch configmap workload-identity-emulator-rules --type merge \
  -p "$(jq -n --arg r "$rules" '{data: {"rules.yaml": $r}}')" >&2
for name in emulated not-emulated; do
  sa "$apps" "$name" "eks.amazonaws.com/role-arn=$emulated_role" \
    "azure.workload.identity/client-id=$client" "azure.workload.identity/tenant-id=$tenant" \
    "iam.gke.io/gcp-service-account=$gsa" "$gcp_provider"
done
# EKS Pod Identity: mappings (an association is not an annotation), added to the overlay's settings.
for name in emulated-podid not-emulated-podid; do sa "$apps" "$name"; done
local_config="$(k -n "$system" get configmap workload-identity-webhook -o jsonpath='{.data.config\.yaml}')"
[[ "$local_config" == *"identities: []"* ]] || fail "the local overlay's config.yaml has no 'identities: []': $local_config"
podid_mappings="identities:
  - {namespace: $apps, serviceAccount: emulated-podid, aws: {mode: podIdentity}}
  - {namespace: $apps, serviceAccount: not-emulated-podid, aws: {mode: podIdentity}}"
set_config "${local_config/"identities: []"/$podid_mappings}"
emulator_url="http://workload-identity-emulator.$system.svc"
wait_dry_run "local overlay settings reached new Pods" "$apps" emulated "AWS_ENDPOINT_URL_STS=$emulator_url"
wait_dry_run "local overlay Pod Identity mappings reached new Pods" "$apps" emulated-podid \
  "AWS_CONTAINER_CREDENTIALS_FULL_URI=http://$pod_identity_ip/v1/credentials"
# The kubelet updates the mounted rules file within its sync period; the emulator and the agent log
# the reload.
t0=$SECONDS
for pod in "$emulator_pod" "$agent_pod"; do
  until k -n "$system" logs "$pod" | grep -q '"trust rules loaded"'; do
    ((SECONDS - t0 < 120)) || fail "$pod did not reload its edited rules within 120 s"
    sleep 1
  done
done
log "emulator rules ConfigMap edit applied: $((SECONDS - t0)) s"
create_pods "$apps" emulated=emulated not-emulated=not-emulated \
  emulated-podid=emulated-podid not-emulated-podid=not-emulated-podid
env_of_emulated="$(identity_env "$apps" emulated)"
for want in "AWS_ENDPOINT_URL_STS=$emulator_url" "AZURE_AUTHORITY_HOST=https://workload-identity-emulator.$system.svc/"; do
  [[ " $env_of_emulated " == *" $want "* ]] || fail "emulated env lacks $want: $env_of_emulated"
  checks=$((checks + 1))
done
for pod in emulated not-emulated; do
  check_irsa "$apps" "$pod"
  check_azure "$apps" "$pod"
  check_token "$apps" "$pod" gcp-workload-identity token /var/run/secrets/sts.googleapis.com/serviceaccount \
    "https://iam.googleapis.com/$provider" 3600 GOOGLE_APPLICATION_CREDENTIALS
done
for pod in emulated-podid not-emulated-podid; do
  check_env "$apps" "$pod" AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1 \
    "AWS_CONTAINER_CREDENTIALS_FULL_URI=http://$pod_identity_ip/v1/credentials" \
    AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token \
    "AWS_ENDPOINT_URL_STS=$emulator_url"
  check_token "$apps" "$pod" eks-pod-identity-token eks-pod-identity-token /var/run/secrets/pods.eks.amazonaws.com/serviceaccount \
    pods.eks.amazonaws.com 86400 AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE
done
# From inside the Pods, as an SDK calls the agent: the Pod's own network namespace, its route to the
# node, the agent on the node's network.
# shellcheck disable=SC2016  # expanded by the container's shell
agent_call='wget -q -O - --header "Authorization: $(cat "$AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")" "$AWS_CONTAINER_CREDENTIALS_FULL_URI" 2>&1'
answer="$(k -n "$apps" exec emulated-podid -c app -- sh -c "$agent_call")" \
  || fail "emulated-podid could not call the Pod Identity agent: $answer"
expect_eq "emulated-podid: the agent's credentials from inside the Pod" \
  "$(jq -r '.AccessKeyId | startswith("ASIAEMULATED")' <<< "$answer")" true
if answer="$(k -n "$apps" exec not-emulated-podid -c app -- sh -c "$agent_call")"; then
  fail "not-emulated-podid got credentials from the Pod Identity agent: $answer"
fi
[[ "$answer" == *"403 Forbidden"* ]] || fail "not-emulated-podid: the agent did not refuse with 403: $answer"
checks=$((checks + 1))
google_file="$(cat "$work/tokens/$apps/emulated/gcp-workload-identity/credential-configuration.json")"
expect_eq "emulated Google token_url" "$(jq -r .token_url <<< "$google_file")" "$emulator_url/v1/token"
expect_eq "emulated Google impersonation URL" "$(jq -r .service_account_impersonation_url <<< "$google_file")" \
  "$emulator_url/v1/projects/-/serviceAccounts/$gsa:generateAccessToken"
phase "local overlay: rules edited, Pods of the emulated identities Running"
# No kube-proxy and no cluster DNS on this node: the SDK runs' private /etc/hosts maps the Service
# names to the emulator Pod's IP, where it listens on the Service's ports (443 and 80) itself.
container_log() { # pod container: the file the kubelet writes the container's log to
  local uid file
  uid="$(k -n "$system" get pod "$1" -o jsonpath='{.metadata.uid}')"
  file="$work/logs/pods/${system}_${1}_${uid}/$2/0.log"
  [[ -f "$file" ]] || fail "no container log of $1/$2 at $file"
  echo "$file"
}
emulator_log="$(container_log "$emulator_pod" emulator)"
WIW_SDK_NODE_TOKENS="$work/tokens" WIW_SDK_NODE_NETNS="/run/netns/$netns" \
  WIW_SDK_NODE_EMULATOR_IP="$(k -n "$system" get pod "$emulator_pod" -o jsonpath='{.status.podIP}')" \
  WIW_SDK_NODE_EMULATOR_CA="$work/emulator-ca.crt" WIW_SDK_NODE_EMULATOR_LOG="$emulator_log" \
  WIW_SDK_NODE_AGENT_LOG="$(container_log "$agent_pod" agent)" \
  nsx "$sdk_test" --ignored --exact sdks_get_credentials_from_the_in_cluster_emulator --nocapture -q >&2 \
  || fail "official SDKs against the in-cluster emulator"
checks=$((checks + 1))
# What a CI job asserts on: the emulator's own count of grants and refusals.
decisions="$(k get --raw "/api/v1/namespaces/$system/pods/http:$emulator_pod:80/proxy/metrics" \
  | grep '^workload_identity_emulator_decisions_total' || true)"
log "emulator decisions: $(tr '\n' ' ' <<< "$decisions")"
[[ "$decisions" == *'service="aws-sts",outcome="grant"'* && "$decisions" == *'service="aws-sts",outcome="refusal",reason="untrusted_subject"'* ]] \
  || fail "the emulator's /metrics does not count the grant and the refusal: $decisions"
checks=$((checks + 1))
phase "local overlay: official SDKs against the in-cluster emulator"

log "$checks checks passed"
