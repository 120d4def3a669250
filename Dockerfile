# quotask's image: built with Rust, run on Debian, as an unprivileged user.
#
#   docker build -t quotask .
#   docker run -p 127.0.0.1:5000:5000 -v quotask-data:/data quotask    # SQLite in /data
#
# Both base images are build arguments whose defaults are the public images, so a
# machine without an image registry can name images it built itself
# (scripts/docker-local-images.sh; docs/docker.md). Plain `docker build` instructions
# only: it builds with BuildKit and with the classic builder alike.
ARG QUOTASK_BUILD_IMAGE=rust:1.95-bookworm
ARG QUOTASK_RUNTIME_IMAGE=debian:bookworm-slim

# The dependencies in a layer of their own, rebuilt only when Cargo.toml, Cargo.lock or
# .cargo/ change, not on every change to the source.
FROM ${QUOTASK_BUILD_IMAGE} AS deps
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY .cargo .cargo
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && cargo build --release --locked --bin quotask \
 && rm -rf src

FROM deps AS build
COPY src src
COPY web web
# The real sources must look newer than the placeholders built above, whatever times
# the copy gave them, or cargo keeps the placeholder binary.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin quotask

FROM ${QUOTASK_RUNTIME_IMAGE}
RUN groupadd --system --gid 10001 quotask \
 && useradd --system --uid 10001 --gid quotask --home-dir /data --no-create-home quotask \
 && mkdir /data && chown quotask:quotask /data
COPY --from=build /src/target/release/quotask /usr/local/bin/quotask
COPY docker/ready.sh /usr/local/bin/quotask-ready
# Listen on every interface of the container; SQLite, when no database URL is given,
# in /data (mount a volume there to keep it).
ENV QUOTASK_BIND=0.0.0.0:5000 QUOTASK_DATA_DIR=/data
USER quotask
WORKDIR /data
EXPOSE 5000
# /readyz: 200 once the database answers, 503 while it does not and from SIGTERM on.
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3 CMD ["/usr/local/bin/quotask-ready"]
ENTRYPOINT ["/usr/local/bin/quotask"]
