#!/usr/bin/env bash
# Runs the apiserver-backed tests (every tests/*.rs that starts the control plane, the Helm chart and
# alerts operations and the SDK conformance included; not the node suite, not the scale benchmark)
# against Kubernetes versions, building each one's kube-apiserver and etcd on first use
# (tests/control-plane/build.sh; cached per version).
#
#   bash scripts/test-kubernetes-versions.sh              # every supported version: the matrix
#   bash scripts/test-kubernetes-versions.sh 1.33 v1.37.2 # only these (a minor or an exact version)
#
# The supported versions are the folders under tests/control-plane/versions/
# (docs/kubernetes-versions.md). kubectl (tests/manifests.rs, tests/chart.rs) is the newest
# version's, as in the test command. Extra cargo test arguments: WIW_CARGO_TEST_ARGS. Every
# version is run even when one fails; the summary at the end says which failed (exit status 1).
# Needs what the test command needs (root for the SDK conformance).
set -euo pipefail
cd "$(dirname "$0")/.."

versions_sh=tests/control-plane/versions.sh
if (($#)); then
  versions=()
  for spec in "$@"; do versions+=("$(bash "$versions_sh" resolve "$spec")"); done
else
  mapfile -t versions < <(bash "$versions_sh" list)
fi

# The test files that start the control plane, in every crate of the workspace; scale.rs is a
# benchmark (scripts/bench.sh) and sdk.rs runs in a phase of its own, as in the test command.
tests=()
for file in tests/*.rs crates/*/tests/*.rs; do
  name="$(basename "$file" .rs)"
  if grep -q 'support/control_plane.rs' "$file" && [[ "$name" != scale && "$name" != sdk ]]; then
    tests+=(--test "$name")
  fi
done
# shellcheck disable=SC2206 # word splitting wanted
extra=(${WIW_CARGO_TEST_ARGS:-})

kubectl_bin="$(bash tests/control-plane/build.sh node)"
export PATH="${kubectl_bin}:${PATH}"
# The tests start the emulator binary, another crate's (tests/support/webhook.rs).
cargo build --locked -p workload-identity-emulator

summary=()
failed=0
for version in "${versions[@]}"; do
  echo "==> Kubernetes ${version}: kube-apiserver and etcd (tests/control-plane/build.sh)"
  started=$SECONDS
  problems=()
  WIW_KUBERNETES_VERSION="$version" bash tests/control-plane/build.sh >/dev/null || problems+=(build)
  built=$((SECONDS - started))
  if ((${#problems[@]} == 0)); then
    echo "==> Kubernetes ${version}: apiserver-backed tests (${tests[*]//--test /})"
    WIW_KUBERNETES_VERSION="$version" cargo test --locked --workspace "${tests[@]}" -- \
      --skip sdks_get_credentials_from_what_the_webhook_injects "${extra[@]}" || problems+=(tests)
    echo "==> Kubernetes ${version}: SDK conformance (tests/sdk.rs)"
    WIW_KUBERNETES_VERSION="$version" cargo test --locked --test sdk -- --nocapture "${extra[@]}" \
      || problems+=("SDK conformance")
  fi
  status=passed
  if ((${#problems[@]})); then
    status="FAILED: ${problems[*]}"
    failed=1
  fi
  summary+=("$(printf '%-9s %s (build %d s, tests %d s)' "$version" "$status" "$built" "$((SECONDS - started - built))")")
done

echo "==> Kubernetes versions tested"
printf '  %s\n' "${summary[@]}"
exit "$failed"
