#!/usr/bin/env bash
# This webhook side by side with the peers it replaces, measured in one run on this machine
# (benches/compare.rs says what and how). Not part of the test command.
#
#   scripts/compare.sh                        # builds what is missing, then measures
#   WIW_COMPARE_ROUNDS=4 scripts/compare.sh   # more rounds (settings: the top of benches/compare.rs)
#
# It builds the peers at pinned versions from their Go modules (Go module proxy only), each into $WIW_COMPARE_CACHE/<peer>-<version> (default
# ~/.cache/workload-identity-webhook/compare, beside the control plane's cache) with a module and
# build cache of its own there, so the first run is a cold build and later runs reuse it;
# kube-apiserver and etcd with tests/control-plane/build.sh (cached). `cargo bench` builds our
# binary with the bench (the bench profile is the release one; a separate `cargo build --release`
# would build every dependency a second time, with other features).
# Prints one markdown table, also saved as $CARGO_TARGET_DIR/compare-report.md.
#
# - the AWS webhook with `go install github.com/aws/amazon-eks-pod-identity-webhook@v0.6.17`;
# - Azure Workload Identity's webhook (github.com/Azure/azure-workload-identity v1.6.0, cmd/webhook)
#   with `go build`: `go install` cannot, as the module imports monis.app/mlog v0.0.4, which the
#   proxy refuses (403, every version, checked 2026-12-07). The module's own source comes from the
#   proxy (`go mod download`); monis.app/mlog is replaced by scripts/compare-mlog, a stand-in with
#   the part of its API the webhook calls, on klog. The webhook logs only on errors and at
#   start-up, so on the measured path the stand-in only builds a named logger, as mlog does.
# Left out: the GCP federation webhook (github.com/pfnet-research/gcp-workload-identity-federation-webhook):
# the proxy refuses its version list and every tagged version (v0.5.2, v0.6.0, v0.7.0) with 403.
#
# Both peers listen on every interface and have no flag for the address (the AWS webhook binds
# ":<port>" and ":<metrics-port>", Azure's controller-runtime server ":9443"), so the bench (the
# webhooks, the load client and the apiserver they talk to) runs in a network namespace the script
# creates with loopback alone, removed on exit; it needs root (`ip netns`). While it runs, a check
# in the host's namespace fails the run if a peer listens there on anything but loopback.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

for tool in go cargo ip ss; do
  command -v "$tool" >/dev/null || { echo "$tool not found: install it first" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "compare.sh runs the peers in a network namespace of its own: run it as root (ip netns)" >&2; exit 1; }

cache="${WIW_COMPARE_CACHE:-$HOME/.cache/workload-identity-webhook/compare}"
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
export CARGO_TARGET_DIR="$target_dir"
report="$target_dir/compare-report.md"
mkdir -p "$cache" "$target_dir"

# Installs PACKAGE@VERSION into $cache/NAME-VERSION unless it is there; prints the binary's path.
install_peer() {
  local name=$1 package=$2 version=$3 binary=$4
  local dir="$cache/$name-$version"
  if [ ! -x "$dir/$binary" ]; then
    echo "==> go install $package@$version (first time: a cold build, about 10 minutes)" >&2
    local started=$SECONDS
    rm -rf "$dir.partial"
    GOBIN="$dir.partial" GOMODCACHE="$cache/go-mod" GOCACHE="$cache/go-build" GOFLAGS=-buildvcs=false \
      go install "$package@$version" >&2
    mv "$dir.partial" "$dir"
    echo "    built in $((SECONDS - started)) s" >&2
  fi
  echo "$dir/$binary"
}

# Builds Azure Workload Identity's webhook at VERSION into $cache/azure-VERSION unless it is there.
build_azure() {
  local version=$1
  local dir="$cache/azure-$version" stand_in="$PWD/scripts/compare-mlog"
  if [ ! -x "$dir/azure-wi-webhook" ]; then
    echo "==> go build github.com/Azure/azure-workload-identity/cmd/webhook@$version, monis.app/mlog replaced (first time: a cold build)" >&2
    local started=$SECONDS module_dir
    export GOMODCACHE="$cache/go-mod" GOCACHE="$cache/go-build" GOFLAGS="-mod=mod -buildvcs=false"
    module_dir=$(cd "$cache" && go mod download -json "github.com/Azure/azure-workload-identity@$version" \
      | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
    [ -n "$module_dir" ] || { echo "go mod download of azure-workload-identity@$version failed" >&2; exit 1; }
    rm -rf "$dir.partial" "$cache/azure-src-$version"
    cp -r "$module_dir" "$cache/azure-src-$version"
    chmod -R u+w "$cache/azure-src-$version"
    (cd "$cache/azure-src-$version" \
      && go mod edit -replace "monis.app/mlog=$stand_in" \
      && go build -o "$dir.partial/azure-wi-webhook" ./cmd/webhook) >&2
    unset GOMODCACHE GOCACHE GOFLAGS
    mv "$dir.partial" "$dir"
    echo "    built in $((SECONDS - started)) s" >&2
  fi
  echo "$dir/azure-wi-webhook"
}

WIW_PEER_AWS=$(install_peer aws github.com/aws/amazon-eks-pod-identity-webhook v0.6.17 amazon-eks-pod-identity-webhook)
WIW_PEER_AZURE=$(build_azure v1.6.0)
export WIW_PEER_AWS WIW_PEER_AZURE

echo "==> control plane (tests/control-plane/build.sh)" >&2
WIW_CONTROL_PLANE_BIN_DIR=$(bash tests/control-plane/build.sh | tail -1)
export WIW_CONTROL_PLANE_BIN_DIR

echo "==> cargo bench --bench compare --no-run" >&2
cargo bench --locked --bench compare --no-run >&2

# The listening sockets of a peer that are not on loopback, from `ss -Hltnp` on stdin ("address
# process" a line; ss shows the first 15 characters of a process name).
exposed_peers() {
  awk '/users:\(\("(amazon-eks-pod-|azure-wi-webhoo)/ && $4 !~ /^(127\.|\[::1\]|\[::ffff:127\.)/ {print $4, $6}'
}

netns="wiw-compare-$$"
exposed=$(mktemp)
watcher=
cleanup() {
  [ -z "$watcher" ] || kill "$watcher" 2>/dev/null || true
  ip netns delete "$netns" 2>/dev/null || true
  rm -f "$exposed"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ip netns add "$netns"
ip netns exec "$netns" ip link set lo up
# Every second: a peer listening outside the namespace is recorded and stopped, and the run fails.
(
  while sleep 1; do
    found=$(ss -Hltnp | exposed_peers)
    [ -n "$found" ] || continue
    echo "$found" >>"$exposed"
    for pid in $(grep -o 'pid=[0-9]*' <<<"$found" | cut -d= -f2 | sort -u); do
      kill "$pid" 2>/dev/null || true
    done
  done
) &
watcher=$!

echo "==> cargo bench --bench compare, in network namespace $netns" >&2
{
  echo "## Side by side, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo
  echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), load average before: $(cut -d' ' -f1-3 /proc/loadavg); peers: amazon-eks-pod-identity-webhook v0.6.17, azure-workload-identity v1.6.0 ($(go version | cut -d' ' -f3))"
} | tee "$report"
bench_status=0
ip netns exec "$netns" cargo bench --locked --offline --bench compare 2>&1 \
  | awk '/^(###|\||First error)/ || /^$/ {print; next} {print > "/dev/stderr"}' | tee -a "$report" \
  || bench_status=$?
ss -Hltnp | exposed_peers >>"$exposed"
if [ -s "$exposed" ]; then
  echo "FAILED: a peer listened outside the test's network namespace, on a non-loopback address:" >&2
  sort -u "$exposed" >&2
  exit 1
fi
[ "$bench_status" = 0 ] || exit "$bench_status"
echo "Load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$report"
echo "report saved to $report" >&2
