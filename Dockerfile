# One image with both binaries; the API is the default entrypoint.
#
#   docker build -t metasync:dev .
#   docker run --rm metasync:dev migrate                    # metasync-api migrate
#   docker run --rm --entrypoint /usr/local/bin/metasync-worker metasync:dev keygen --key-id 2026-12
#
# Checked by deploy/local/check-deploy.sh with `hadolint --failure-threshold warning`.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# The whole workspace: the migrations are compiled into the binaries (sqlx::migrate!), and the
# patched sqlx drivers live in vendor/. .dockerignore keeps target/ and .git out.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p metasync-api -p metasync-worker \
    && install -D -m 0755 -t /out target/release/metasync-api target/release/metasync-worker

# glibc and libgcc only (TLS is rustls with the Mozilla roots compiled in), no shell, no
# package manager; the same Debian release as the build stage.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
# The image's `nonroot` user; Kubernetes pins the same uid (runAsUser: 65532).
USER 65532:65532
# 8080: the public API (METASYNC_API_ADDR); 9091: the operations listener (METASYNC_METRICS_ADDR).
EXPOSE 8080 9091
ENTRYPOINT ["/usr/local/bin/metasync-api"]
CMD ["serve"]
