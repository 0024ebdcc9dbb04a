# syntax=docker/dockerfile:1.7
#
# The mih image: one binary (`mih`) that runs any service (`mih run --service …`),
# the migrations (`mih migrate`) and the admin commands. Build it from the workspace root:
#
#   DOCKER_BUILDKIT=1 docker build -t mih:0.1.0 .
#
# Three stages: the dashboard's browser bundle (npm), the Rust build (the binary embeds that
# bundle from services/api/dashboard/dist at compile time, so it must exist first), and a
# small runtime with nothing but the binary, CA certificates and a non-root user.

ARG RUST_IMAGE=rust:1.95-bookworm
ARG NODE_IMAGE=node:22-bookworm-slim
ARG RUNTIME_IMAGE=debian:bookworm-slim

# --- 1. the dashboard bundle (what scripts/dev-deps does: npm ci, npm run build) -----------------
FROM ${NODE_IMAGE} AS dashboard
WORKDIR /dashboard
# The lockfile alone first, so the npm layer is reused until the dependencies change.
COPY services/api/dashboard/package.json services/api/dashboard/package-lock.json ./
RUN --mount=type=cache,target=/root/.npm \
    npm ci --no-audit --no-fund --loglevel=error
COPY services/api/dashboard/src ./src
RUN npm run build

# --- 2. the binary ---------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS builder
WORKDIR /src
COPY . .
COPY --from=dashboard /dashboard/dist/ services/api/dashboard/dist/
# rust-toolchain.toml says "stable"; pin the toolchain the image ships instead, so the build
# neither downloads another toolchain nor changes with the day it runs. The registry and
# target directory are BuildKit cache mounts (kept between builds, not in any layer), so the
# binary is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    RUSTUP_TOOLCHAIN="${RUST_VERSION}" cargo build --release --locked -p mih \
    && install -D -m 0755 target/release/mih /out/mih

# --- 3. the runtime --------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="mih" \
      org.opencontainers.image.description="Outbound integration hub for Moodle: ingest, matcher, dispatcher, dlq and api in one binary" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/mih-hub/mih" \
      org.opencontainers.image.licenses="Apache-2.0"
# CA certificates: deliveries to HTTPS targets and TLS to NATS/PostgreSQL verify against them.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=builder /out/mih /usr/local/bin/mih
# A numeric user, so Kubernetes' runAsNonRoot can check it without an /etc/passwd lookup;
# the chart runs as the same id with a read-only root filesystem (mih writes no files).
USER 10001:10001
# The default listen ports: ingest 8080 (Moodle events, inbound webhooks), api 8090 (admin API,
# dashboard), matcher 9091, dispatcher 9092, dlq 9093. Each also serves /healthz, /readyz and
# /metrics on its port.
EXPOSE 8080 8090 9091 9092 9093
# No HEALTHCHECK: the orchestrator probes /healthz and /readyz itself (see deploy/k8s).
ENTRYPOINT ["mih"]
CMD ["run"]
