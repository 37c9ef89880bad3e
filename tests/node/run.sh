#!/usr/bin/env bash
# The node suite: the webhook installed from the manifests as a Deployment, and workload Pods run by
# a real kubelet + containerd + runc, all inside a network namespace this script creates.
#
#   bash tests/node/run.sh      # as root; scripts/test.sh runs it as its own phase
#
# What it does, in order:
#   1. checks the machine (root, network and mount namespaces, writable cgroups) and installs what is
#      missing from Debian (containerd, runc, containernetworking-plugins, busybox-static, musl-tools);
#   2. builds etcd, kube-apiserver and kube-node (kubelet, kube-controller-manager, kube-scheduler,
#      kubectl) with tests/control-plane/build.sh, and the static musl release binaries as the release
#      does (scripts/release.sh binaries);
#   3. builds the webhook's image as the release does: the Dockerfile's `package` target with Debian's
#      buildah (scripts/release.sh image), twice, and fails unless both builds have the same digest;
#      and two OCI image archives without Docker (tests/node/oci-image.sh): a busybox-static workload
#      image and the pause image (Kubernetes' pause.c built with musl-gcc);
#   4. in a private mount namespace (unshare) and a new network namespace entered with
#      `nsenter --net` (`ip netns exec` remounts /sys and hides the cgroup mounts from the kubelet):
#      loopback, a bridge with the node and Pod addresses, the kubernetes Service IP and the EKS Pod
#      Identity agent address on loopback, no route out. etcd, kube-apiserver, kube-controller-manager,
#      kube-scheduler, containerd and the kubelet run there, every state folder in the test's folder;
#   5. imports the images with `ctr -n k8s.io images import`, applies the namespace-opt-in overlay
#      through a kustomization that patches only the image and imagePullPolicy, and checks Pods;
#   6. runs the SDK conformance runs (tests/sdk.rs, its ignored test
#      sdks_get_credentials_from_the_kubelets_files) on the token files the kubelet wrote.
#   7. installs the local overlay (manifests/overlays/local: the emulator in the cluster, the webhook's
#      endpoints pointing at its Service, its EKS Pod Identity agent DaemonSet on the node's network
#      at 169.254.170.23:80) and runs the official SDKs of Pods it trusts and of Pods it does not
#      against them (tests/sdk.rs, sdks_get_credentials_from_the_in_cluster_emulator).
#
# The checks are in tests/node/checks.sh. Figures (phase times, Pods admitted without injection
# during a rollout) are printed as "node suite: ..." lines.
#
# Environment: WIW_NODE_KEEP=1 keeps the test folder (logs) after the run; WIW_NODE_TOKEN_HOOK=<cmd>
# runs <cmd> <folder> inside the namespaces on a copy of the token and credential files the kubelet
# wrote for the Pods (the seam for the SDK conformance runs).
set -euo pipefail
# A failing command inside $(...) fails the assignment that uses it (checks rely on this).
shopt -s inherit_errexit

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/../.." && pwd)"

log() { printf 'node suite: %s\n' "$*" >&2; }
# A machine that cannot run the suite fails with one line naming what is missing.
missing() { printf 'node suite: cannot run: %s\n' "$*" >&2; exit 1; }

if [[ "${1:-}" == --inside ]]; then
  # shellcheck source=tests/node/inside.sh
  source "${here}/inside.sh"
  exit
fi

start=$SECONDS
phase() { log "$1: $((SECONDS - phase_start)) s"; phase_start=$SECONDS; }
phase_start=$SECONDS

[[ "$(uname -s)" == Linux ]] || missing "Linux is required (kubelet, containerd, runc)"
[[ "$(id -u)" == 0 ]] || missing "root is required (the kubelet, containerd and runc manage mounts, cgroups and network namespaces)"
# Root inside a user namespace cannot make device nodes, own files as 65532 or set cgroup limits.
[[ "$(awk '{print $1, $2, $3}' /proc/self/uid_map)" == "0 0 4294967295" ]] \
  || missing "root of the host's user namespace is required (this shell runs in a user namespace)"
command -v unshare >/dev/null && command -v nsenter >/dev/null && command -v ip >/dev/null \
  || missing "unshare, nsenter and ip (util-linux, iproute2) are required"
unshare --net true 2>/dev/null || missing "network namespaces (unshare --net failed)"
unshare --mount true 2>/dev/null || missing "mount namespaces (unshare --mount failed)"
probe="wiw-node-probe-$$"
if [[ "$(stat -fc %T /sys/fs/cgroup)" == cgroup2fs ]]; then
  mkdir "/sys/fs/cgroup/${probe}" 2>/dev/null && rmdir "/sys/fs/cgroup/${probe}" \
    || missing "writable cgroups (mkdir in /sys/fs/cgroup failed)"
else
  mkdir "/sys/fs/cgroup/pids/${probe}" 2>/dev/null && rmdir "/sys/fs/cgroup/pids/${probe}" \
    || missing "writable cgroups (mkdir in /sys/fs/cgroup/pids failed)"
fi
command -v go >/dev/null || missing "go (the node components are built from source)"
command -v cargo >/dev/null || missing "cargo"

packages=()
command -v containerd >/dev/null || packages+=(containerd)
command -v runc >/dev/null || packages+=(runc)
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local ]] || packages+=(containernetworking-plugins)
dpkg -s busybox-static >/dev/null 2>&1 || packages+=(busybox-static)
command -v musl-gcc >/dev/null || packages+=(musl-tools)
command -v jq >/dev/null || packages+=(jq)
command -v openssl >/dev/null || packages+=(openssl)
command -v buildah >/dev/null || packages+=(buildah)
if ((${#packages[@]})); then
  command -v apt-get >/dev/null || missing "apt-get, to install ${packages[*]}"
  log "installing ${packages[*]} from Debian"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >&2
fi
target=x86_64-unknown-linux-musl
[[ "$(uname -m)" == x86_64 ]] || target=aarch64-unknown-linux-musl
phase "packages"

bin="$(bash "${repo}/tests/control-plane/build.sh" node)"
phase "control plane and node components (build.sh node)"
# The release's build: stripped static musl release binaries (revision and date from git).
dist="${CARGO_TARGET_DIR:-${repo}/target}/node-dist"
rm -rf "$dist"
bash "${repo}/scripts/release.sh" binaries "$target" "$dist"
phase "webhook musl release build (scripts/release.sh binaries)"
# The SDK conformance test binary (tests/sdk.rs): checks.sh runs its SDKs on the files the kubelet
# wrote. Its SDKs (venv, Go probe) are installed here: the namespaces have no route out.
(cd "$repo" && cargo build -q --locked -p workload-identity-emulator)
sdk_test="$(cd "$repo" && cargo test -q --locked --test sdk --no-run --message-format=json \
  | jq -r 'select(.target.name == "sdk" and .executable != null) | .executable')"
"$sdk_test" --ignored --exact install_sdks -q >&2
phase "SDK conformance runner (cargo test --test sdk --no-run, SDK installs)"

work="${TMPDIR:-/tmp}/wiw-node.$$"
cgroup="wiw-node-$$"
rm -rf "$work"
mkdir -p "$work/images"
# Earlier runs that died before their cleanup leave their folder behind; remove those of dead runs.
for old in "${TMPDIR:-/tmp}"/wiw-node.*; do
  pid="${old##*.}"
  if [[ "$old" != "$work" && "$pid" =~ ^[0-9]+$ ]] && ! kill -0 "$pid" 2>/dev/null; then
    rm -rf "$old"
  fi
done

# The release's image, built twice: the same commit must give the same digest (--timestamp 0).
bash "${repo}/scripts/release.sh" image "$dist" "$work/images/webhook.tar"
bash "${repo}/scripts/release.sh" image "$dist" "$work/images/webhook-again.tar"
digest="$(tar -xOf "$work/images/webhook.tar" index.json | jq -r '.manifests[0].digest')"
again="$(tar -xOf "$work/images/webhook-again.tar" index.json | jq -r '.manifests[0].digest')"
[[ "$digest" == "$again" ]] || { log "FAIL: two builds of the image differ: $digest and $again"; exit 1; }
rm "$work/images/webhook-again.tar"
log "webhook image: $(tar -xOf "$work/images/webhook.tar" index.json | jq -r '.manifests[0].annotations["org.opencontainers.image.ref.name"]')@${digest}, reproducible, $(stat -c %s "$work/images/webhook.tar") bytes"
bash "${here}/oci-image.sh" busybox "$(command -v busybox)" "$work/images/busybox.tar"
# pause.c from the same k8s.io/kubernetes module (downloaded if the module cache lacks it).
k8s_version="$(sed -n 's/^K8S_VERSION="\(v[^"]*\)".*/\1/p' "${repo}/tests/control-plane/build.sh")"
k8s_dir="$(go mod download -json "k8s.io/kubernetes@${k8s_version}" | jq -r .Dir)"
bash "${here}/oci-image.sh" pause "${k8s_dir}/build/pause/linux/pause.c" "$work/images/pause.tar"
phase "OCI images"

# Everything from here on runs in a private mount namespace: the kubelet's and containerd's mounts,
# the bind mounts over their fixed paths and the private /etc/hosts vanish with it.
status=0
# An interrupt reaches the inner shell too (it cleans up); this one goes on to the cgroup cleanup.
trap 'log "interrupted"' INT TERM
unshare --mount --propagation private bash "$0" --inside "$work" "$bin" "$cgroup" "$sdk_test" || status=$?

# Whatever survived the inner cleanup (a container, a shim) sits in the run's cgroups: kill it there.
kill_cgroup_tree() {
  local dir left
  for dir in /sys/fs/cgroup/pids/"$cgroup" /sys/fs/cgroup/"$cgroup"; do
    [[ -d "$dir" ]] || continue
    left="$(find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null || true)"
    # shellcheck disable=SC2086  # one pid per word
    [[ -z "$left" ]] || kill -9 $left 2>/dev/null || true
  done
  sleep 1
  find /sys/fs/cgroup -depth -type d \( -path "*/${cgroup}" -o -path "*/${cgroup}/*" \) -exec rmdir {} + 2>/dev/null || true
}
kill_cgroup_tree
if [[ -f "$work/created-mount-points" ]]; then
  xargs -r rmdir < "$work/created-mount-points" 2>/dev/null || true
fi
if [[ "${WIW_NODE_KEEP:-0}" == 1 || $status != 0 ]]; then
  log "logs and state kept in ${work}"
else
  rm -rf "$work"
fi
log "total: $((SECONDS - start)) s"
if [[ $status != 0 ]]; then
  log "FAILED"
  exit "$status"
fi
log "passed"
