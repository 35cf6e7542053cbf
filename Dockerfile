# syntax=docker/dockerfile:1.7
#
# gebeta-operator image: a static (musl) release binary on distroless/static, running as the
# distroless "nonroot" user (65532). No shell in the final image.
#
#   docker build -t gebeta-operator:dev .
#
# The build stage runs `cargo build --release --locked`, the same command CI runs, so the
# binary packed here is known to build. Base images are pinned by version; pin them by digest
# too in your registry mirror (e.g. with Renovate) for reproducible builds.

ARG RUST_IMAGE=docker.io/library/rust:1.95.0-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${RUST_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# musl-gcc compiles ring's C and assembly for the static target.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
# The target of the platform being built (x86_64 or aarch64).
RUN echo "$(uname -m)-unknown-linux-musl" > /rust-target \
 && rustup target add "$(cat /rust-target)"
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Sources only: tests, charts and docs are not part of the binary.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(cat /rust-target)" \
 && export "CC_${target//-/_}=musl-gcc" \
 && cargo build --release --locked --bin gebeta-operator --target "$target" \
 && install -D -m 0755 "target/$target/release/gebeta-operator" /out/gebeta-operator

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="gebeta-operator" \
      org.opencontainers.image.description="Kubernetes operator for Gebeta Maps service accounts and always-fresh access tokens" \
      org.opencontainers.image.source="https://github.com/gebeta-operator/gebeta-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/gebeta-operator /usr/local/bin/gebeta-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/gebeta-operator"]
