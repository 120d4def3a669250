# Redis 7 from Debian's packages (bookworm has 7.0), for a machine that has no image
# registry. Like the official image: no configuration file, protected mode off (the
# server is reached over the container network, without a password), data in /data.
ARG BASE=quotask-local/debian:bookworm
FROM ${BASE}
# For the package scripts of this build only (an ARG, not kept in the image).
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir /data && chown redis:redis /data
WORKDIR /data
USER redis
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no"]
