#!/usr/bin/env bash
# The release, in one place: .github/workflows/release.yml calls it on a v* tag, and it runs here in
# a dry-run mode that builds every asset of a release into one folder without publishing anything.
#
#   scripts/release.sh --dry-run [--out DIR]
#       the host's static musl binaries, then `assemble` into DIR (default target/release-dry-run):
#       what the release publishes, for this machine's platform only, pushed nowhere.
#   scripts/release.sh binaries TARGET DIST
#       cargo build --release of every binary of the workspace for the Rust target TARGET
#       (x86_64/aarch64-unknown-linux-musl, x86_64/aarch64-apple-darwin) into DIST/<os>-<arch>/.
#   scripts/release.sh image DIST OUT.tar
#       the Dockerfile's `package` target built with buildah from DIST/linux-<host arch>/, written as
#       an OCI archive (the node suite runs this image). Prints the image digest and size.
#   scripts/release.sh assemble DIST OUT [--push]
#       from the binaries in DIST (any of linux-amd64, linux-arm64, darwin-amd64, darwin-arm64):
#         images/image-linux-<arch>.oci.tar  the image of each Linux platform (buildah, --timestamp 0;
#                                        pushed, not a release asset)
#         sbom-<binary>-linux-<arch>.cdx.json  CycloneDX SBOM of each binary (cargo-cyclonedx, from Cargo.lock)
#         workload-identity-webhook-<version>.tgz   the Helm chart (helm package, helm lint --strict)
#         install-<overlay>.yaml         `kubectl kustomize` of each overlay, the release image in it
#         kubectl-workload_identity_<tag>_<os>_<arch>.tar.gz and workload-identity.yaml (krew)
#         workload-identity-webhook_<tag>_linux_<arch>.tar.gz  the server binaries
#         SHA256SUMS
#       With --push (the workflow, logged in to the registry): the multi-arch image and the chart
#       are pushed, and image-digest.txt / chart-digest.txt are written for signing and the notes.
#
# Versions: the workspace's version (Cargo.toml) is the release's; a tag v* on HEAD must equal it.
# The revision and build date come from git here (at build time, never at run time) and reach the
# binaries as WIW_BUILD_REVISION and WIW_BUILD_DATE; the date is the commit's, so two builds of one
# commit are the same bytes. Tools: cargo, buildah (Debian's package), helm (tests/tools/build.sh),
# kubectl, jq; cargo-cyclonedx is installed by cargo into the tools cache on first use.
set -euo pipefail
# Bash 4.4+ (macOS runners run `binaries` with their own bash; nothing there relies on it).
shopt -s inherit_errexit 2>/dev/null || true

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

REGISTRY="${WIW_RELEASE_REGISTRY:-ghcr.io/workload-identity-webhook}"
IMAGE="${REGISTRY}/workload-identity-webhook"
CHART_REPOSITORY="oci://${REGISTRY}/charts"
CYCLONEDX_VERSION=0.5.9
OVERLAYS=(cluster-wide namespace-opt-in cert-manager local)
PLUGIN=kubectl-workload_identity

log() { printf 'release: %s\n' "$*" >&2; }
die() { printf 'release: error: %s\n' "$*" >&2; exit 1; }

version() {
  cargo metadata --no-deps --format-version 1 --locked \
    | jq -r '.packages[] | select(.name == "workload-identity-webhook") | .version'
}
revision() { git rev-parse HEAD 2>/dev/null || echo unknown; }
build_date() { git show -s --format=%cI HEAD 2>/dev/null || echo unknown; }
# The binaries of the workspace (every [[bin]] of its packages).
binaries() {
  cargo metadata --no-deps --format-version 1 --locked \
    | jq -r '.packages[].targets[] | select(.kind | index("bin")) | .name' | sort
}
platform_of() {
  case "$1" in
    x86_64-unknown-linux-musl) echo linux-amd64 ;;
    aarch64-unknown-linux-musl) echo linux-arm64 ;;
    x86_64-apple-darwin) echo darwin-amd64 ;;
    aarch64-apple-darwin) echo darwin-arm64 ;;
    *) die "unsupported target $1 (x86_64/aarch64-unknown-linux-musl, x86_64/aarch64-apple-darwin)" ;;
  esac
}
host_target() {
  case "$(uname -m)" in
    x86_64) echo x86_64-unknown-linux-musl ;;
    aarch64) echo aarch64-unknown-linux-musl ;;
    *) die "unsupported architecture $(uname -m)" ;;
  esac
}

# A tag v* on HEAD names the version being released.
check_tag() {
  local v="$1" tag
  for tag in $(git tag --points-at HEAD 'v*' 2>/dev/null); do
    [[ "$tag" == "v${v}" ]] || die "tag ${tag} on HEAD, but the workspace version is ${v}"
  done
}

cmd_binaries() {
  local target="$1" dist="$2" platform name
  platform="$(platform_of "$target")"
  if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$target"; then
    rustup target add "$target" >&2
  fi
  log "binaries for ${target} (revision $(revision), built $(build_date))"
  WIW_BUILD_REVISION="$(revision)" WIW_BUILD_DATE="$(build_date)" CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build -q --release --locked --workspace --bins --target "$target"
  mkdir -p "${dist}/${platform}"
  for name in $(binaries); do
    install -m 0755 "${CARGO_TARGET_DIR:-target}/${target}/release/${name}" "${dist}/${platform}/${name}"
  done
}

# buildah with a private storage in $1 (vfs: works as root anywhere, nothing shared with the host's).
buildah_in() {
  local store="$1"
  shift
  buildah --storage-driver vfs --root "${store}/root" --runroot "${store}/run" "$@"
}

# build_image STORE DIST ARCH VERSION REVISION: the `package` target for linux/ARCH; prints the image id.
build_image() {
  local store="$1" dist="$2" arch="$3" v="$4" rev="$5" context="$1/context-$3"
  [[ -x "${dist}/linux-${arch}/workload-identity-webhook" ]] || die "no ${dist}/linux-${arch}/workload-identity-webhook"
  # The context holds only what the target copies: the binaries and packaging/.
  rm -rf "$context"
  mkdir -p "${context}/dist"
  cp -a "${dist}/linux-${arch}" "${context}/dist/"
  cp -a packaging "${context}/"
  buildah_in "$store" bud --quiet --target package --platform "linux/${arch}" --timestamp 0 \
    --build-arg "VERSION=${v}" --build-arg "REVISION=${rev}" \
    -f "${repo}/Dockerfile" "$context" | tail -n 1
}

# Digest of the single image in an OCI archive (its manifest) and the archive's size.
archive_digest() { tar -xOf "$1" index.json | jq -r '.manifests[0].digest'; }

cmd_image() {
  local dist="$1" out="$2" v rev store arch id
  v="$(version)"
  rev="$(revision)"
  arch="$(platform_of "$(host_target)")"
  arch="${arch#linux-}"
  store="$(mktemp -d)"
  # shellcheck disable=SC2064  # the folder is known now
  trap "rm -rf '$store'" RETURN
  id="$(build_image "$store" "$dist" "$arch" "$v" "$rev")"
  rm -f "$out"
  buildah_in "$store" push --quiet "$id" "oci-archive:${out}:${IMAGE}:${v}" >&2
  log "image ${IMAGE}:${v} linux/${arch}: $(archive_digest "$out"), archive $(stat -c %s "$out") bytes, binaries $(du -cb "${dist}/linux-${arch}"/* | tail -n 1 | cut -f1) bytes"
}

# cargo-cyclonedx from crates.io, built once into the tools cache.
cyclonedx() {
  local root="${WIW_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/workload-identity-webhook/tools}/cargo"
  if [[ "$("${root}/bin/cargo-cyclonedx" cyclonedx --version 2>/dev/null)" != *" ${CYCLONEDX_VERSION}" ]]; then
    log "installing cargo-cyclonedx ${CYCLONEDX_VERSION} into ${root} (once)"
    cargo install -q --locked --root "$root" "cargo-cyclonedx@${CYCLONEDX_VERSION}" >&2
  fi
  printf '%s\n' "${root}/bin/cargo-cyclonedx"
}

# sbom TARGET PLATFORM OUT: one CycloneDX JSON per binary, the crates compiled into it for TARGET.
# cargo-cyclonedx writes the SBOM (purls, hashes, licenses, the dependency graph) from `cargo
# metadata`, whose resolve also holds proc-macros (they run in the compiler, they are not in the
# binary) and features that only dev-dependencies enable (e.g. ipnet, through reqwest's hyper-util
# features). Its components are narrowed to what Cargo's own resolver links into the binary:
# `cargo tree -e normal,no-proc-macro --target TARGET` of the binary's package.
sbom() {
  local target="$1" platform="$2" out="$3" tool tmp file name package linked
  tool="$(cyclonedx)"
  tmp="$(mktemp -d)"
  # The tool writes next to each Cargo.toml; a copy of the sources keeps the work tree clean.
  git ls-files -z | xargs -0 cp --parents -t "$tmp"
  (cd "$tmp" && SOURCE_DATE_EPOCH="$(git -C "$repo" show -s --format=%ct HEAD)" \
    "$tool" cyclonedx --format json --describe binaries --no-build-deps --target "$target" \
      --spec-version 1.5 -q >&2)
  while IFS= read -r file; do
    name="$(basename "$file" .cdx.json)"
    name="${name%_bin}"
    package="$(cargo metadata --no-deps --format-version 1 --locked | jq -r --arg bin "$name" \
      '.packages[] | select(any(.targets[]; .name == $bin and (.kind | index("bin")))) | .name')"
    linked="$(cargo tree --locked -q -p "$package" --target "$target" -e normal,no-proc-macro --prefix none \
      --format '{p}' | awk '{ sub(/^v/, "", $2); print $1 "@" $2 }' | sort -u | jq -R . | jq -sc .)"
    # Paths of the copy become ".", the components those linked, the graph only between them.
    jq --arg tmp "$tmp" --argjson linked "$linked" '
      walk(if type == "string" then (split($tmp) | join(".")) else . end)
      | .components |= map(select((.name + "@" + .version) as $c | $linked | index($c)))
      | ([.metadata.component["bom-ref"]] + [.components[]["bom-ref"]]) as $refs
      | .dependencies |= map(select(.ref as $r | $refs | index($r))
          | if .dependsOn then .dependsOn |= map(select(. as $d | $refs | index($d))) else . end)' \
      "$file" > "${out}/sbom-${name}-${platform}.cdx.json"
  done < <(find "$tmp" -name '*_bin.cdx.json' -not -path '*/fuzz/*')
  rm -rf "$tmp"
}

# The chart, its version and appVersion the release's.
chart() {
  local v="$1" out="$2" helm
  helm="$(bash tests/tools/build.sh)/helm"
  "$helm" lint --strict charts/workload-identity-webhook >&2
  "$helm" package charts/workload-identity-webhook --version "$v" --app-version "$v" -d "$out" >&2
}

# One manifest per overlay: `kubectl kustomize` of the overlay, with the image set to REF.
manifests() {
  local ref="$1" out="$2" overlay tmp
  tmp="$(mktemp -d "${repo}/manifests/.release.XXXXXX")"
  for overlay in "${OVERLAYS[@]}"; do
    printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [../overlays/%s]\nimages:\n  - {name: %s, newName: %s, %s}\n' \
      "$overlay" "$IMAGE" "${ref%%[:@]*}" "$(image_fields "$ref")" > "${tmp}/kustomization.yaml"
    kubectl kustomize "$tmp" > "${out}/install-${overlay}.yaml"
  done
  rm -rf "$tmp"
}
# Kustomize's fields for the tag and digest of an image reference.
image_fields() {
  local ref="$1" tag digest=""
  if [[ "$ref" == *@* ]]; then digest="${ref#*@}"; ref="${ref%@*}"; fi
  tag="${ref##*:}"
  if [[ -n "$digest" ]]; then printf 'newTag: "%s", digest: "%s"' "$tag" "$digest"; else printf 'newTag: "%s"' "$tag"; fi
}

# Reproducible tar.gz: sorted, the commit's time, numeric root owner.
archive() {
  local out="$1" dir="$2"
  shift 2
  tar --sort=name --mtime="@$(git show -s --format=%ct HEAD 2>/dev/null || echo 0)" --owner=0 --group=0 \
    --numeric-owner -C "$dir" -cf - "$@" | gzip -n -9 > "$out"
}

# Archives of the binaries and the krew manifest for the platforms in DIST.
archives() {
  local v="$1" dist="$2" out="$3" platform os arch tmp file krew_platforms=""
  tmp="$(mktemp -d)"
  for platform in linux-amd64 linux-arm64 darwin-amd64 darwin-arm64; do
    [[ -d "${dist}/${platform}" ]] || continue
    os="${platform%-*}" arch="${platform#*-}"
    mkdir -p "${tmp}/${platform}"
    cp LICENSE "${tmp}/${platform}/"
    install -m 0755 "${dist}/${platform}/workload-identity-webhook" "${tmp}/${platform}/${PLUGIN}"
    file="${PLUGIN}_v${v}_${os}_${arch}.tar.gz"
    archive "${out}/${file}" "${tmp}/${platform}" LICENSE "$PLUGIN"
    krew_platforms+="$(krew_platform "$v" "$os" "$arch" "$file" "$(sha256sum "${out}/${file}" | cut -d' ' -f1)")"
    if [[ "$os" == linux ]]; then
      local names
      mapfile -t names < <(binaries)
      archive "${out}/workload-identity-webhook_v${v}_${os}_${arch}.tar.gz" "${dist}/${platform}" "${names[@]}"
    fi
  done
  rm -rf "$tmp"
  cat > "${out}/workload-identity.yaml" <<EOF
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: workload-identity
spec:
  version: v${v}
  homepage: https://github.com/workload-identity-webhook/workload-identity-webhook
  shortDescription: Explain why a Pod has or lacks its cloud workload identity
  description: |
    Shows what cloud identity (AWS IRSA and EKS Pod Identity, Google Workload Identity
    Federation, Azure Workload Identity) a Pod has, what workload-identity-webhook would give it
    now, and why they differ; lists stale running Pods and checks the webhook's installation.
    Only reads from the cluster (get and list).
  platforms:
${krew_platforms}
EOF
}
krew_platform() {
  local v="$1" os="$2" arch="$3" file="$4" sum="$5"
  cat <<EOF
    - selector:
        matchLabels: {os: ${os}, arch: ${arch}}
      uri: https://github.com/workload-identity-webhook/workload-identity-webhook/releases/download/v${v}/${file}
      sha256: ${sum}
      bin: ${PLUGIN}
      files:
        - {from: ${PLUGIN}, to: .}
        - {from: LICENSE, to: .}
EOF
  printf '\n'
}

cmd_assemble() {
  local dist="$1" out="$2" push="${3:-}" v rev store arch id ids=() platform ref
  [[ -z "$push" || "$push" == --push ]] || die "assemble DIST OUT [--push]"
  v="$(version)"
  rev="$(revision)"
  check_tag "$v"
  dist="$(cd "$dist" && pwd)"
  mkdir -p "$out"
  out="$(cd "$out" && pwd)"
  log "assembling ${v} (${rev}) from ${dist} into ${out}"
  store="$(mktemp -d)"

  # Images: one per Linux platform present.
  for platform in linux-amd64 linux-arm64; do
    [[ -d "${dist}/${platform}" ]] || continue
    arch="${platform#linux-}"
    id="$(build_image "$store" "$dist" "$arch" "$v" "$rev")"
    ids+=("$id")
    mkdir -p "${out}/images"
    buildah_in "$store" push --quiet "$id" "oci-archive:${out}/images/image-${platform}.oci.tar:${IMAGE}:${v}" >&2
    log "image linux/${arch}: $(archive_digest "${out}/images/image-${platform}.oci.tar"), $(stat -c %s "${out}/images/image-${platform}.oci.tar") bytes"
    sbom "$( [[ "$arch" == amd64 ]] && echo x86_64 || echo aarch64)-unknown-linux-musl" "$platform" "$out"
  done
  ((${#ids[@]})) || die "no Linux binaries in ${dist}"
  ref="${IMAGE}:${v}"
  if [[ "$push" == --push ]]; then
    buildah_in "$store" manifest create "${IMAGE}:${v}" "${ids[@]}" >&2
    buildah_in "$store" manifest push --all --digestfile "${out}/image-digest.txt" "${IMAGE}:${v}" "docker://${IMAGE}:${v}" >&2
    ref="${IMAGE}:${v}@$(cat "${out}/image-digest.txt")"
    log "pushed ${ref}"
  fi
  rm -rf "$store"

  chart "$v" "$out"
  manifests "$ref" "$out"
  archives "$v" "$dist" "$out"
  if [[ "$push" == --push ]]; then
    local helm
    helm="$(bash tests/tools/build.sh)/helm"
    "$helm" push "${out}/workload-identity-webhook-${v}.tgz" "$CHART_REPOSITORY" 2>&1 | tee "${out}/helm-push.log" >&2
    sed -n 's/^Digest: //p' "${out}/helm-push.log" > "${out}/chart-digest.txt"
    rm "${out}/helm-push.log"
    [[ -s "${out}/chart-digest.txt" ]] || die "helm push printed no digest"
  fi
  (cd "$out" && find . -maxdepth 1 -type f ! -name SHA256SUMS ! -name '*-digest.txt' -printf '%P\n' \
    | sort | xargs sha256sum > ../.SHA256SUMS && mv ../.SHA256SUMS SHA256SUMS)
  log "assets in ${out}:"
  (cd "$out" && ls -l >&2)
}

case "${1:-}" in
  --dry-run)
    out="target/release-dry-run"
    if [[ "${2:-}" == --out ]]; then out="${3:?--out DIR}"; fi
    rm -rf "$out"
    mkdir -p "$out"
    dist="$(mktemp -d)"
    trap 'rm -rf "$dist"' EXIT
    cmd_binaries "$(host_target)" "$dist"
    cmd_assemble "$dist" "$out"
    ;;
  binaries) cmd_binaries "${2:?binaries TARGET DIST}" "${3:?binaries TARGET DIST}" ;;
  image) cmd_image "${2:?image DIST OUT.tar}" "${3:?image DIST OUT.tar}" ;;
  assemble) cmd_assemble "${2:?assemble DIST OUT [--push]}" "${3:?assemble DIST OUT [--push]}" "${4:-}" ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
