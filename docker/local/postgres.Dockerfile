# PostgreSQL 15 from Debian's packages, for a machine that has no image registry. It
# takes the environment the official postgres image takes for what docker-compose.yml
# uses: POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB and PGDATA, a data volume at
# /var/lib/postgresql/data, password (scram-sha-256) sign-in over TCP on every address.
ARG BASE=quotask-local/debian:bookworm
FROM ${BASE}
# For the package scripts of this build only (an ARG, not kept in the image).
ARG DEBIAN_FRONTEND=noninteractive
# No cluster made by the package: the entrypoint makes one in PGDATA on first start.
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-common \
 && sed -ri 's/#(create_main_cluster) .*$/\1 = false/' /etc/postgresql-common/createcluster.conf \
 && apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/*
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data
RUN mkdir -p "$PGDATA" /var/run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql \
 && chmod 700 "$PGDATA"
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /var/lib/postgresql/data
# A fast shutdown, as the official image: SIGTERM would wait for every client to leave.
STOPSIGNAL SIGINT
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres"]
