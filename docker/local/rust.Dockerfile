# A Rust build image like rust:<version>-bookworm, for a machine that has no image
# registry: the local Debian image, a C compiler (bundled SQLite, mimalloc) and the
# host's own Rust toolchain (Debian bookworm's rustc, 1.63, is too old for edition 2024).
# Built by scripts/docker-local-images.sh, whose build context holds `rust/` (the
# toolchain: bin, lib, libexec, etc of `rustc --print sysroot`) and `ca-certificates.crt`
# (the host's trust store, so cargo reaches crates.io through whatever the host trusts).
ARG BASE=quotask-local/debian:bookworm
FROM ${BASE}
# For the package scripts of this build only (an ARG, not kept in the image).
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY rust /usr/local/rust
ENV CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    CARGO_HTTP_CAINFO=/etc/ssl/certs/ca-certificates.crt
RUN mkdir -p /usr/local/cargo/bin && rustc --version && cargo --version
