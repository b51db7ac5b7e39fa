# syntax=docker/dockerfile:1
# recur: the streaming stage as a container.
#
#   docker build -t recur .
#   docker run --rm recur run --brokers host:9092 --metrics-addr 0.0.0.0:9898
#
# Needs BuildKit (the default builder of current Docker) for the cache mounts.

# --- build --------------------------------------------------------------------
FROM rust:1.95-bookworm AS builder

# rdkafka builds its bundled librdkafka with ssl and zstd: OpenSSL headers,
# pkg-config to find them and zlib. g++, make and perl come with the image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl-dev pkg-config zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# The whole context (see .dockerignore): Cargo.toml declares benches/ and
# tests/, and the binary embeds config/default.toml.
COPY . .

# The registry and target/ live in cache mounts, so a rebuild after a source
# change recompiles only recur; the binary is copied out of the mount.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/app/target \
    cargo build --release --locked --bin recur \
 && install -D -m 0755 target/release/recur /out/recur

# --- run ----------------------------------------------------------------------
FROM debian:bookworm-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 recur \
 && useradd --system --uid 10001 --gid recur --home-dir /var/lib/recur --create-home --shell /usr/sbin/nologin recur

COPY --from=builder /out/recur /usr/local/bin/recur

USER recur:recur
WORKDIR /var/lib/recur
# /metrics, /healthz, /readyz (pass --metrics-addr 0.0.0.0:9898 to reach it
# from outside the container; the default listens on 127.0.0.1 only).
EXPOSE 9898

ENTRYPOINT ["recur"]
CMD ["run"]
