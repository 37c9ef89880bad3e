#!/usr/bin/env bash
# The whole test suite, from a fresh machine: lint, build the local control plane (kube-apiserver,
# etcd and the node components from source, cached outside the clone), every unit and integration
# test, then the node suite (as root: a kubelet, containerd and runc in a network namespace).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }
command -v go >/dev/null || { echo "go not found: the integration tests build kube-apiserver and etcd with Go" >&2; exit 1; }
if command -v rustup >/dev/null; then
  rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> control plane (kube-apiserver + etcd) and node components (kubelet, controllers, kubectl)"
bin="$(bash tests/control-plane/build.sh node)"
# tests/manifests.rs calls kubectl: use the one built from the same Kubernetes version.
export PATH="${bin}:${PATH}"
echo "==> cargo test"
# Benches are compiled by clippy above and run by scripts/bench.sh (they need a release build).
cargo test --workspace --lib --bins --tests --locked -- --skip sdks_get_credentials_from_what_the_webhook_injects --skip operations:: --skip dry_run:: "$@"
# The Helm chart and the alerts/dashboard (tests/chart.rs, tests/monitoring.rs): helm, promtool and
# actionlint are built from their Go modules into ~/.cache/workload-identity-webhook/tools on first use.
echo "==> Helm chart, alerts and dashboard (helm, promtool)"
operations_started=$SECONDS
tools="$(bash tests/tools/build.sh)"
cargo test --test chart --test monitoring --locked -- operations::
echo "==> Helm chart, alerts and dashboard took $((SECONDS - operations_started)) s"
echo "==> workflows (actionlint .github/workflows/*)"
"${tools}/actionlint"
# Its own phase so that its one line per SDK and case is printed: official Python and Go SDKs
# (installed by the test into ~/.cache/workload-identity-webhook/sdk) against `emulate`, inside a
# network namespace (needs root).
echo "==> SDK conformance (tests/sdk.rs)"
sdk_started=$SECONDS
cargo build --locked -p workload-identity-emulator
cargo test --test sdk --locked -- --nocapture
echo "==> SDK conformance took $((SECONDS - sdk_started)) s"
echo "==> node suite (kubelet + containerd + runc in a network namespace; tests/node/run.sh)"
node_started=$SECONDS
bash tests/node/run.sh
echo "==> node suite took $((SECONDS - node_started)) s"
# Every asset of a release, built here and pushed nowhere (the musl build is the node suite's),
# then checked by tests/release.rs (its dry_run tests).
echo "==> release dry run (scripts/release.sh --dry-run, tests/release.rs)"
release_started=$SECONDS
bash scripts/release.sh --dry-run
cargo test --test release --locked -- dry_run::
echo "==> release dry run took $((SECONDS - release_started)) s"
# Fuzzing itself runs from scripts/fuzz.sh: its nightly build recompiles every dependency, too long
# for a cold CI run. The committed corpus is replayed by cargo test above.
