# syntax=docker/dockerfile:1
#
# workload-identity-webhook: a static (musl) binary on distroless/static, non-root, no shell.
#
#   docker build -t workload-identity-webhook:dev --build-arg VERSION=0.1.0 .
#
# Needs BuildKit (the default builder since Docker 23) for the cache mounts: the Cargo registry
# and the target folder survive between builds, so a change in src/ recompiles only this crate.
# Builds for the platform it runs on (linux/amd64 or linux/arm64).

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
# The build context holds only the Cargo manifest, the lock file and Rust sources (src/, and the
# benches and tests that Cargo.toml may name as targets); see .dockerignore. Editing docs or
# manifests does not invalidate this layer, and the cache mounts below keep compiled dependencies.
COPY . .
ENV CARGO_PROFILE_RELEASE_STRIP=symbols
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/build/target,sharing=locked \
    target="$(cat /rust-target)" \
 && cargo build --release --locked --target "${target}" -p workload-identity-webhook -p workload-identity-emulator \
 && cp "target/${target}/release/workload-identity-webhook" "target/${target}/release/workload-identity-emulator" /

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="workload-identity-webhook" \
      org.opencontainers.image.description="Mutating admission webhook that gives Kubernetes Pods AWS, Google Cloud and Azure workload identities" \
      org.opencontainers.image.source="https://github.com/workload-identity-webhook/workload-identity-webhook" \
      org.opencontainers.image.url="https://github.com/workload-identity-webhook/workload-identity-webhook" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /workload-identity-webhook /workload-identity-webhook
# The token-service emulator for local clusters (manifests/components/emulator); never started here.
COPY --from=build /workload-identity-emulator /workload-identity-emulator
USER 65532:65532
EXPOSE 8443 9090
ENTRYPOINT ["/workload-identity-webhook"]
CMD ["serve"]
