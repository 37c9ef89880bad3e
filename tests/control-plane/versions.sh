#!/usr/bin/env bash
# The Kubernetes versions the tests support: one folder per version under versions/, holding the
# kube-apiserver and kube-node wrappers' go.mod/go.sum (made by gen-go-mod.sh). The newest is the
# default of build.sh, the test command and the node suite.
#
#   versions.sh list            every supported version, oldest first
#   versions.sh oldest|newest
#   versions.sh resolve [SPEC]  the supported version SPEC names: v1.33.13, 1.33.13, v1.33 or 1.33;
#                               empty: the newest. An unsupported SPEC is an error listing the others.
set -euo pipefail
dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/versions"

list() {
  local v
  for v in "$dir"/v1.*; do
    [[ -f "$v/kube-apiserver/go.mod" && -f "$v/kube-node/go.mod" ]] && basename "$v"
  done | sort -V
}

case "${1:-}" in
  list) list ;;
  oldest) list | head -n 1 ;;
  newest) list | tail -n 1 ;;
  resolve)
    spec="${2:-}"
    spec="${spec#v}"
    if [[ -z "$spec" ]]; then
      list | tail -n 1
    elif [[ "$spec" =~ ^1\.[0-9]+(\.[0-9]+)?$ ]] && found="$(list | grep -E "^v${spec//./\\.}(\.|$)" | tail -n 1)" && [[ -n "$found" ]]; then
      printf '%s\n' "$found"
    else
      echo "unsupported Kubernetes version '${2}': supported are $(list | tr '\n' ' ')(tests/control-plane/versions/)" >&2
      exit 1
    fi
    ;;
  *)
    echo "usage: versions.sh list|oldest|newest|resolve [v1.X[.Y]]" >&2
    exit 2
    ;;
esac
