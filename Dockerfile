# syntax=docker/dockerfile:1
#
# workload-identity-webhook: the static (musl) binaries workload-identity-webhook and
# workload-identity-emulator on an empty base (FROM scratch): non-root 65532, no shell, nothing
# else but /etc/passwd and /etc/group. Two targets make the same image:
#
#   From source (the default target; needs Docker with BuildKit, pulls the Rust image):
#     docker build -t workload-identity-webhook:dev --build-arg VERSION=0.2.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#
#   Packaging prebuilt binaries (what the release does; pulls nothing, so buildah or podman build it
#   offline): the static binaries of each platform in dist/linux-<arch>/, made by scripts/release.sh.
#     buildah bud --target package --platform linux/amd64 --timestamp 0 \
#       --build-arg VERSION=0.2.0 --build-arg REVISION=<commit> -f Dockerfile <context with dist/ and packaging/>
#
# The from-source build keeps the Cargo registry and the target folder in BuildKit cache mounts, so
# a change in src/ recompiles only this workspace. It builds for the platform it runs on
# (linux/amd64 or linux/arm64).

ARG RUST_IMAGE=rust:1.95-bookworm

FROM ${RUST_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
RUN case "$(uname -m)" in \
      x86_64) echo x86_64-unknown-linux-musl ;; \
      aarch64) echo aarch64-unknown-linux-musl ;; \
      *) echo "unsupported architecture $(uname -m)" >&2; exit 1 ;; \
    esac > /rust-target \
 && rustup target add "$(cat /rust-target)"
WORKDIR /build
# The build context holds only the Cargo manifests, the lock file, Rust sources and packaging/
# (see .dockerignore). Editing docs or manifests does not invalidate this layer, and the cache
# mounts below keep compiled dependencies.
COPY . .
ARG VERSION=0.2.0
ARG REVISION=unknown
# What `workload-identity-webhook version` reports (build.rs); the build date is the commit's in a
# release, unknown here.
ENV CARGO_PROFILE_RELEASE_STRIP=symbols WIW_BUILD_REVISION=${REVISION}
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/build/target,sharing=locked \
    target="$(cat /rust-target)" \
 && cargo build --release --locked --workspace --bins --target "${target}" \
 && mkdir /out \
 && find "target/${target}/release" -maxdepth 1 -type f -perm -u+x -name 'workload-identity-*' -exec cp {} /out/ \;

# What both targets share: the file system but the binaries, the labels, the user and the command.
FROM scratch AS runtime
ARG VERSION=0.2.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="workload-identity-webhook" \
      org.opencontainers.image.description="Mutating admission webhook that gives Kubernetes Pods AWS, Google Cloud and Azure workload identities" \
      org.opencontainers.image.source="https://github.com/workload-identity-webhook/workload-identity-webhook" \
      org.opencontainers.image.url="https://github.com/workload-identity-webhook/workload-identity-webhook" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --chmod=0644 packaging/rootfs/etc/passwd packaging/rootfs/etc/group /etc/
USER 65532:65532
EXPOSE 8443 9090
ENTRYPOINT ["/workload-identity-webhook"]
CMD ["serve"]

# The release: static binaries built beforehand for each platform (scripts/release.sh).
FROM runtime AS package
ARG TARGETARCH
COPY --chmod=0755 dist/linux-${TARGETARCH}/ /

# From source (the default target, last).
FROM runtime
COPY --from=build /out/ /
