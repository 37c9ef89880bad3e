#!/usr/bin/env bash
# Builds the Go command-line tools the chart, monitoring and release checks use (helm, promtool,
# actionlint) from their Go modules at pinned versions, into a cache folder outside the clone.
#
#   tests/tools/build.sh      # prints the bin directory as the last stdout line
#
# Cache: ${WIW_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/workload-identity-webhook/tools}/bin
# A binary is reused when its stamp (module@version + build tags + Go version + platform) matches,
# as in tests/control-plane/build.sh. Force a rebuild with WIW_TOOLS_REBUILD=1. The tests skip this
# script when WIW_TOOLS_BIN_DIR names a folder that already holds the binaries.
# Progress goes to stderr; stdout carries only the bin directory.
set -euo pipefail

HELM_MODULE="helm.sh/helm/v3/cmd/helm@v3.22.0"
# Prometheus v3.x is published as Go module version v0.3xx.y (v3.16.0 -> v0.316.0).
PROMTOOL_MODULE="github.com/prometheus/prometheus/cmd/promtool@v0.316.0"
# Without this tag promtool links every service discovery (AWS, Azure, GCE, ... SDKs): its cold
# build did not finish in 12 minutes on 2 busy cores. `promtool test rules` needs none of them.
PROMTOOL_TAGS="remove_all_sd"
# scripts/test.sh lints every workflow under .github/workflows with it.
ACTIONLINT_MODULE="github.com/rhysd/actionlint/cmd/actionlint@v1.7.12"

cache="${WIW_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/workload-identity-webhook/tools}"
bin="${cache}/bin"

log() { printf 'tools/build.sh: %s\n' "$*" >&2; }

command -v go >/dev/null 2>&1 || { log "error: go is not on PATH"; exit 1; }
mkdir -p "$bin"

if command -v flock >/dev/null 2>&1; then
  exec 9>"${cache}/.build.lock"
  flock 9
fi

export CGO_ENABLED=0
go_version="$(go env GOVERSION)"

build_one() {
  local name="$1" module="$2" tags="${3:-}"
  local out="${bin}/${name}" stamp="${bin}/.${name}.stamp"
  local key="${module} tags=${tags} ${go_version} $(go env GOOS)/$(go env GOARCH)"
  if [[ "${WIW_TOOLS_REBUILD:-0}" != 1 && -x "$out" && -f "$stamp" && "$(cat "$stamp")" == "$key" ]]; then
    log "${name}: up to date (${out})"
    return
  fi
  log "${name}: building ${module} with ${go_version} ..."
  local start=$SECONDS tmp
  rm -f "$stamp"
  tmp="$(mktemp -d "${cache}/gobin.XXXXXX")"
  # `go install module@version` builds with the module's own go.mod and go.sum (checked against
  # the checksum database), so nothing needs to be vendored here.
  GOBIN="$tmp" go install -trimpath -ldflags="-s -w" -tags="$tags" "$module" >&2 || { rm -rf "$tmp"; exit 1; }
  mv -f "${tmp}/${name}" "$out"
  rmdir "$tmp"
  printf '%s\n' "$key" > "$stamp"
  log "${name}: built in $((SECONDS - start))s -> ${out}"
}

build_one helm "$HELM_MODULE"
build_one promtool "$PROMTOOL_MODULE" "$PROMTOOL_TAGS"
build_one actionlint "$ACTIONLINT_MODULE"

printf '%s\n' "$bin"
