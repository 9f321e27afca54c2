# Redis and PostgreSQL for compose.yaml, from Debian's packages on the same base as the aitasks image,
# for machines that pull no images (`make test-containers` builds it from a debootstrap base). With a
# registry at hand, the official redis:7 and postgres:15 images serve as well: see docs/deployment.md.
#   podman build -t aitasks-datastores -f containers/datastores.Dockerfile containers
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 PGDATA=/var/lib/postgresql/data
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server redis-tools postgresql-15 tini \
 && rm -rf /var/lib/apt/lists/* /var/lib/postgresql/15 /etc/postgresql/15 \
 && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data \
 && install -d -o redis -g redis -m 0750 /var/lib/redis
COPY redis-start.sh /usr/local/bin/redis-start
COPY postgres-start.sh /usr/local/bin/postgres-start
ENTRYPOINT ["/usr/bin/tini", "--"]
