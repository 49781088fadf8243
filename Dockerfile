# Depot's container image: a release build in the Rust image, then only the binary on a minimal
# base (distroless: glibc and libgcc, no shell, no package manager), running as a non-root user.
#
#   docker build --build-arg DEPOT_GIT_COMMIT=$(git rev-parse --short HEAD) -t depot .
#   docker run -p 4444:4444 -v depot-data:/var/lib/depot -e DEPOT_ADMIN_PASSWORD=... depot
#
# docs/deploy.md ("Container image") has the settings a cluster node needs.

FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src
# .dockerignore leaves out .git and target/: the commit comes in as a build argument.
ARG DEPOT_GIT_COMMIT=unknown
ENV DEPOT_GIT_COMMIT=${DEPOT_GIT_COMMIT}
COPY . .
RUN cargo build --release --locked -p depot-gateway --bin depot \
    && install -D -m 0755 target/release/depot /out/usr/local/bin/depot \
    && install -d -m 0750 -o 65532 -g 65532 /out/var/lib/depot

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/usr/local/bin/depot /usr/local/bin/depot
COPY --from=build --chown=65532:65532 /out/var/lib/depot /var/lib/depot
# uid 65532, the image's `nonroot`.
USER 65532:65532
ENV DEPOT_DATA_DIR=/var/lib/depot/data \
    DEPOT_LISTEN=0.0.0.0:4444 \
    DEPOT_CLUSTER_LISTEN=0.0.0.0:6222
VOLUME ["/var/lib/depot"]
EXPOSE 4444 6222
# `depot probe` GETs /livez on DEPOT_LISTEN's port: the image needs no curl.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 CMD ["/usr/local/bin/depot", "probe"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/depot"]
CMD ["serve"]
