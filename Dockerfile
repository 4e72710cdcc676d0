# syntax=docker/dockerfile:1
# The catalogue binary on Debian slim. Build: `docker build -t catalogue .`
# (docker compose builds it for the stack).

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# The caches keep the registry and the build between image builds; the
# binary is copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin catalogue \
    && cp target/release/catalogue /usr/local/bin/catalogue

FROM debian:bookworm-slim
# ca-certificates for TLS to PostgreSQL and collectors; curl for the compose
# health check (GET /readyz on the admin port).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home --home-dir /var/lib/catalogue --uid 10001 catalogue
COPY --from=builder /usr/local/bin/catalogue /usr/local/bin/catalogue
USER catalogue
# The default SQLite database (sqlite://catalogue.db) is created here.
WORKDIR /var/lib/catalogue
# gRPC, the health lane (gRPC health for probes), admin HTTP (/metrics,
# /healthz, /readyz), tokio-console.
EXPOSE 50051 50050 6060 6669
ENTRYPOINT ["catalogue"]
# Listen on every interface: inside a container loopback is unreachable.
# An admin port off loopback needs a token, so `docker run` needs
# -e CATALOGUE_ADMIN_TOKEN=... (or, on a private network on purpose,
# -e CATALOGUE_ADMIN_INSECURE=1); without either the server refuses to start.
CMD ["--grpc-addr", "0.0.0.0:50051", "--health-addr", "0.0.0.0:50050", "--admin-addr", "0.0.0.0:6060", "--console-addr", "0.0.0.0:6669"]
