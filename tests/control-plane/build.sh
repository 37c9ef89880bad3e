#!/usr/bin/env bash
# Builds the kube-apiserver and etcd binaries used by the integration tests from
# source, through the Go module proxy, into a cache folder outside the clone.
#
#   tests/control-plane/build.sh        # prints the bin directory as the last stdout line
#   tests/control-plane/build.sh node   # also kube-node (kubelet, kube-controller-manager,
#                                       # kube-scheduler, kubectl) for the node suite, tests/node/
#
# Cache: ${WIW_CONTROL_PLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/workload-identity-webhook/control-plane/<k8s version>}/bin
# A binary is reused when its stamp (Kubernetes version + Go version + sha256 of the
# wrapper's go.mod, go.sum and main.go) matches; edit a wrapper and it is rebuilt.
# Force a rebuild with WIW_CONTROL_PLANE_REBUILD=1, or delete the cache folder.
#
# Toolchain: the wrappers need Go >= 1.26 (go.etcd.io/etcd/server/v3 v3.6.16 declares
# go 1.26.0). If the local Go is older, `export GOTOOLCHAIN=go1.26.10` (or any newer
# release, e.g. go1.27.3) makes the go command fetch a toolchain from the module proxy.
#
# Progress goes to stderr; stdout carries only the bin directory.
set -euo pipefail

K8S_VERSION="v1.34.4"   # keep in step with the k8s-openapi feature (v1_34) in Cargo.toml

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${WIW_CONTROL_PLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/workload-identity-webhook/control-plane/${K8S_VERSION}}"
bin="${cache}/bin"

log() { printf 'control-plane/build.sh: %s\n' "$*" >&2; }

command -v go >/dev/null 2>&1 || { log "error: go is not on PATH (need Go >= 1.26)"; exit 1; }
mkdir -p "$bin"

# Serialise concurrent invocations (several test binaries may start at once).
if command -v flock >/dev/null 2>&1; then
  exec 9>"${cache}/.build.lock"
  flock 9
fi

export CGO_ENABLED=0
# -mod=mod would let the build rewrite go.mod/go.sum; insist on the committed go.sum.
GOFLAGS="$(printf '%s' "${GOFLAGS:-}" | sed -E 's/(^|[[:space:]])-mod=[^[:space:]]*//g')"
export GOFLAGS

go_version="$(go env GOVERSION)"

# Same version stamps as Kubernetes' hack/lib/version.sh, so /version reports v1.34.4
# instead of v0.0.0-master. buildDate is the tag's date, for reproducible binaries.
k8s_minor="${K8S_VERSION#v1.}"; k8s_minor="${k8s_minor%%.*}"
k8s_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X ${pkg}.gitVersion=${K8S_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${k8s_minor}"
  k8s_ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=2026-02-10T12:53:36Z"
done

build_one() {
  local name="$1" src="${here}/$1" ldflags="-s -w${2:-}"
  local out="${bin}/${name}" stamp="${bin}/.${name}.stamp"
  local key
  key="$(
    {
      printf 'k8s=%s\ngo=%s\nos=%s/%s\nldflags=%s\n' "$K8S_VERSION" "$go_version" "$(go env GOOS)" "$(go env GOARCH)" "$ldflags"
      cd "$src" && sha256sum go.mod go.sum main.go
    } | sha256sum | cut -d' ' -f1
  )"
  shift $(($# < 2 ? $# : 2))
  # Multi-call binaries get one symlink per command name.
  local link
  for link in "$@"; do ln -sfn "$name" "${bin}/${link}"; done
  if [[ "${WIW_CONTROL_PLANE_REBUILD:-0}" != 1 && -x "$out" && -f "$stamp" && "$(cat "$stamp")" == "$key" ]]; then
    log "${name}: up to date (${out})"
    return
  fi
  log "${name}: building with ${go_version} (first build of kube-apiserver takes several minutes) ..."
  local start=$SECONDS
  rm -f "$stamp"
  (
    cd "$src"
    go build -mod=readonly -trimpath -ldflags="$ldflags" -o "${out}.tmp.$$" .
  ) >&2
  mv -f "${out}.tmp.$$" "$out"
  printf '%s\n' "$key" > "$stamp"
  log "${name}: built in $((SECONDS - start))s -> ${out}"
}

build_one etcd
build_one kube-apiserver "$k8s_ldflags"
if [[ "${1:-}" == node ]]; then
  build_one kube-node "$k8s_ldflags" kubelet kube-controller-manager kube-scheduler kubectl
fi

printf '%s\n' "$bin"
