#!/usr/bin/env bash
# Builds the kube-apiserver and etcd binaries used by the integration tests from
# source, through the Go module proxy, into a cache folder outside the clone.
#
#   tests/control-plane/build.sh        # prints the bin directory as the last stdout line
#   tests/control-plane/build.sh node   # also kube-node (kubelet, kube-controller-manager,
#                                       # kube-scheduler, kubectl) for the node suite, tests/node/
#
# Kubernetes version: WIW_KUBERNETES_VERSION (v1.33.13, or just the minor: 1.33), one of those
# with a folder under versions/ (`versions.sh list`); by default the newest.
#
# Cache: ${WIW_CONTROL_PLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/workload-identity-webhook/control-plane}/<k8s version>/bin
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

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { printf 'control-plane/build.sh: %s\n' "$*" >&2; }

K8S_VERSION="$(bash "${here}/versions.sh" resolve "${WIW_KUBERNETES_VERSION:-}")"
cache="${WIW_CONTROL_PLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/workload-identity-webhook/control-plane}/${K8S_VERSION}"
bin="${cache}/bin"

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

# Same version stamps as Kubernetes' hack/lib/version.sh, so /version reports ${K8S_VERSION}
# instead of v0.0.0-master. buildDate is the tag's date (the module proxy's time of the
# version), for reproducible binaries.
k8s_minor="${K8S_VERSION#v1.}"; k8s_minor="${k8s_minor%%.*}"
build_date="$(cd / && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' "k8s.io/kubernetes@${K8S_VERSION}")"
k8s_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X ${pkg}.gitVersion=${K8S_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${k8s_minor}"
  k8s_ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${build_date}"
done

# build_one NAME MODULE_DIR [LDFLAGS [SYMLINK...]]: builds NAME/main.go with the go.mod and go.sum
# of MODULE_DIR (the wrapper's own folder, or its folder under versions/<version>/).
build_one() {
  local name="$1" mod="$2" ldflags="-s -w${3:-}"
  local out="${bin}/${name}" stamp="${bin}/.${name}.stamp" src="${here}/${name}"
  local key
  key="$(
    {
      printf 'k8s=%s\ngo=%s\nos=%s/%s\nldflags=%s\n' "$K8S_VERSION" "$go_version" "$(go env GOOS)" "$(go env GOARCH)" "$ldflags"
      sha256sum "${mod}/go.mod" "${mod}/go.sum" "${src}/main.go" | cut -d' ' -f1
    } | sha256sum | cut -d' ' -f1
  )"
  shift $(($# < 3 ? $# : 3))
  # Multi-call binaries get one symlink per command name.
  local link
  for link in "$@"; do ln -sfn "$name" "${bin}/${link}"; done
  if [[ "${WIW_CONTROL_PLANE_REBUILD:-0}" != 1 && -x "$out" && -f "$stamp" && "$(cat "$stamp")" == "$key" ]]; then
    log "${name}: up to date (${out})"
    return
  fi
  log "${name} ${K8S_VERSION}: building with ${go_version} (a first build takes several minutes) ..."
  local start=$SECONDS
  rm -f "$stamp"
  if [[ "$mod" != "$src" ]]; then
    # A module is a folder with its go.mod: put the version's go.mod/go.sum beside main.go in the cache.
    local copy="${cache}/src/${name}"
    rm -rf "$copy" && mkdir -p "$copy"
    cp "${src}/main.go" "${mod}/go.mod" "${mod}/go.sum" "$copy/"
    src="$copy"
  fi
  (
    cd "$src"
    go build -mod=readonly -trimpath -ldflags="$ldflags" -o "${out}.tmp.$$" .
  ) >&2
  mv -f "${out}.tmp.$$" "$out"
  printf '%s\n' "$key" > "$stamp"
  log "${name} ${K8S_VERSION}: built in $((SECONDS - start))s -> ${out}"
}

versions="${here}/versions/${K8S_VERSION}"
build_one etcd "${here}/etcd"
build_one kube-apiserver "${versions}/kube-apiserver" "$k8s_ldflags"
if [[ "${1:-}" == node ]]; then
  build_one kube-node "${versions}/kube-node" "$k8s_ldflags" kubelet kube-controller-manager kube-scheduler kubectl
fi

printf '%s\n' "$bin"
