# snigate container image: a static musl binary on distroless/static, running as uid 65532.
#
#   docker build -t snigate .
#   docker run --rm -p 8883:8883 -v "$PWD/my-config:/etc/snigate:ro" snigate
#
# Expected size: about 5 MB compressed (what `docker pull` transfers), 11 MB on disk. The snigate
# binary is 8.6 MB (x86_64 musl release build of this tree, stripped; 3.5 MB gzipped), mostly
# aws-lc, rustls, tokio and hyper; musl links it statically, so the base needs no libc:
# distroless/static adds under 1 MB compressed (CA roots, tzdata, /etc/passwd with `nonroot`).
# tests/container.rs checks what can be checked without a Docker engine (COPY sources, USER,
# config path, the binary as uid 65532).
#
# musl's malloc is slower than glibc's under many threads. If a benchmark shows it, build for
# x86_64-unknown-linux-gnu in rust:1.95.0-bookworm instead and use
# gcr.io/distroless/cc-debian12:nonroot as the final stage (about 10 MB more).

# ---- build -------------------------------------------------------------------------------------
# rust:*-alpine targets x86_64/aarch64-unknown-linux-musl natively. aws-lc-sys (0.47) compiles
# AWS-LC with the `cc` crate and ships pre-generated bindings for both musl targets, so a C
# compiler and the musl headers are all it needs (no cmake, no clang/bindgen, no Go).
FROM rust:1.95.0-alpine3.23 AS build
RUN apk add --no-cache musl-dev gcc
WORKDIR /src
# Set before the dependency layer: the profile is part of every crate's fingerprint.
ENV CARGO_PROFILE_RELEASE_STRIP=symbols

# Dependency layer: build every dependency against stub sources, so a change under src/ reuses
# this layer and recompiles snigate only.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src/bin/snigate \
 && echo 'fn main() {}' > src/bin/snigate/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src

COPY src ./src
# COPY keeps the context's mtimes, which may be older than the stubs': touch so cargo rebuilds.
RUN touch src/bin/snigate/main.rs src/lib.rs \
 && cargo build --release --locked \
 && install -D -m 0755 target/release/snigate /out/snigate \
 && /out/snigate --version

# ---- run ---------------------------------------------------------------------------------------
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/snigate /snigate
# `nonroot` in distroless is 65532:65532; numeric so Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
# 8883: the TLS listener of the example configs (any port >= 1024 needs no capability).
# 9100: the admin endpoint (/metrics, /healthz, /readyz) when the config sets `admin: 0.0.0.0:9100`.
EXPOSE 8883 9100
# Mount a directory (not a single file) at /etc/snigate, so edits and Kubernetes ConfigMap
# updates reach the file watch. No HEALTHCHECK: the image has no shell or HTTP client; use the
# orchestrator's probes on /healthz and /readyz.
ENTRYPOINT ["/snigate"]
CMD ["run", "--config", "/etc/snigate/routes.yaml"]
