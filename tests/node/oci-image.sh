#!/usr/bin/env bash
# Builds a single-layer OCI image archive (oci-layout, index.json, blobs) without Docker or a
# registry, for `ctr -n k8s.io images import` (the webhook's own image is the Dockerfile's, built
# with buildah by scripts/release.sh image):
#
#   oci-image.sh busybox <static busybox binary> <out.tar>      workload image, applets as symlinks
#   oci-image.sh pause <pause.c from k8s.io/kubernetes> <out.tar>   the sandbox image (musl-gcc)
#
# Image names: localhost/wiw-node/{busybox,pause}:test. Tars are made reproducible (sorted,
# mtime 0, numeric owners), so the same inputs give the same image digest.
set -euo pipefail

kind="$1" source="$2" out="$3"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
root="$tmp/rootfs"
mkdir -p "$root"

case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) echo "oci-image.sh: unsupported architecture $(uname -m)" >&2; exit 1 ;;
esac

case "$kind" in
  busybox)
    mkdir -p "$root/bin" "$root/tmp" "$root/etc"
    chmod 1777 "$root/tmp"
    install -m 0755 "$source" "$root/bin/busybox"
    for applet in $("$source" --list); do
      [[ "$applet" == busybox ]] || ln -s busybox "$root/bin/$applet"
    done
    config='{"Env":["PATH=/bin"],"Cmd":["sh"]}'
    name=busybox
    ;;
  pause)
    # -DVERSION as Kubernetes' build/pause/Makefile does.
    musl-gcc -Os -static -Wall -Werror -DVERSION=3.10-wiw -o "$tmp/pause" "$source"
    strip "$tmp/pause"
    install -m 0755 "$tmp/pause" "$root/pause"
    config='{"User":"65535:65535","Entrypoint":["/pause"]}'
    name=pause
    ;;
  *) echo "oci-image.sh: unknown image kind $kind" >&2; exit 1 ;;
esac
chown -R 0:0 "$root"
ref="localhost/wiw-node/${name}:test"

blobs="$tmp/oci/blobs/sha256"
mkdir -p "$blobs"
sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }
blob() { local digest; digest="$(sha "$1")"; mv "$1" "$blobs/$digest"; printf '%s' "$digest"; }

# Owners come from the files (the script runs as root).
tar --sort=name --mtime=@0 --numeric-owner --format=gnu -C "$root" -cf "$tmp/layer.tar" .
diff_id="$(sha "$tmp/layer.tar")"
gzip -n -9 "$tmp/layer.tar"
layer_size="$(size "$tmp/layer.tar.gz")"
layer="$(blob "$tmp/layer.tar.gz")"

jq -cn --arg arch "$arch" --arg diff "sha256:$diff_id" --argjson config "$config" \
  '{architecture: $arch, os: "linux", config: $config, rootfs: {type: "layers", diff_ids: [$diff]},
    history: [{created_by: "tests/node/oci-image.sh"}]}' > "$tmp/config.json"
config_size="$(size "$tmp/config.json")"
config_digest="$(blob "$tmp/config.json")"

jq -cn --arg c "sha256:$config_digest" --argjson cs "$config_size" --arg l "sha256:$layer" --argjson ls "$layer_size" \
  '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $c, size: $cs},
    layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $l, size: $ls}]}' > "$tmp/manifest.json"
manifest_size="$(size "$tmp/manifest.json")"
manifest="$(blob "$tmp/manifest.json")"

jq -cn --arg m "sha256:$manifest" --argjson ms "$manifest_size" --arg arch "$arch" --arg ref "$ref" \
  '{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
    manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $m, size: $ms,
      platform: {architecture: $arch, os: "linux"},
      annotations: {"io.containerd.image.name": $ref, "org.opencontainers.image.ref.name": "test"}}]}' > "$tmp/oci/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' > "$tmp/oci/oci-layout"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$tmp/oci" -cf "$out" oci-layout index.json blobs
printf 'oci-image.sh: %s (%s, layer %s bytes)\n' "$ref" "$out" "$layer_size" >&2
