# fastraft container image: Debian's Python, a venv in /opt/fastraft, the Cython core.
# docs/docker.md has the details; in short:
#   docker build -t fastraft .
#   docker run -d --name fr --stop-timeout 20 -p 7001-7003:7001-7003 -p 7201-7203:7201-7203 \
#       -v fastraft-data:/var/lib/fastraft fastraft
#   fastraft put a 1                       (on the host; or: docker exec fr fastraft put a 1)
#   docker compose up -d                   (compose.yaml: one node per container)
# Behind a TLS-intercepting proxy, give pip its CA (the file must be visible to the build):
#   buildah bud -v /etc/ssl/certs/ca-certificates.crt:/run/ca.crt:ro \
#       --build-arg PIP_CERT=/run/ca.crt -t fastraft .
# Stop timeout: `fastraft cluster` gives its nodes 10 s to stop cleanly after SIGTERM (a node
# hands its leadership over within 3 s, then flushes), so let the container have longer than
# that: `docker run --stop-timeout 20`, compose's `stop_grace_period: 20s` (an image cannot
# set it: there is no Dockerfile instruction for it).
# The HEALTHCHECK is kept by `docker build` and by `buildah bud --format docker` (buildah's
# default OCI format has no health check).

# -- build stage: the compiler, the headers, pip; nothing of it reaches the image -----------
FROM debian:bookworm-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/fastraft
# Only what the package is built from, so a change elsewhere (tests, docs) keeps the layers.
COPY pyproject.toml setup.py README.md /src/
COPY fastraft /src/fastraft
# PIP_CERT: a CA bundle for pip (unset by default). EXTRAS: optional extras, e.g. "tls".
ARG PIP_CERT
ARG EXTRAS=""
# pip passes --cert on to the pip that installs the build requirements only through the
# environment, hence PIP_CERT exported as well (and unset when empty).
RUN set -eu; if [ -n "${PIP_CERT:-}" ]; then export PIP_CERT; else unset PIP_CERT; fi; \
    FASTRAFT_REQUIRE_EXTENSIONS=1 /opt/fastraft/bin/pip install --no-cache-dir \
        ${PIP_CERT:+--cert "$PIP_CERT"} "/src${EXTRAS:+[$EXTRAS]}"; \
    /opt/fastraft/bin/pip uninstall --yes --quiet pip setuptools; \
    cd / && /opt/fastraft/bin/python -P -c \
        "import fastraft.core as c; assert c.IMPLEMENTATION == 'cython', c.IMPLEMENTATION"

# -- runtime stage: Debian's python3, the venv, a config, a non-root user -------------------
FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="fastraft" \
      org.opencontainers.image.description="A Raft-replicated key-value store (Cython core)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 fastraft \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/fastraft \
        --no-create-home --shell /usr/sbin/nologin fastraft \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/fastraft
COPY --from=build /opt/fastraft /opt/fastraft
COPY docker/cluster.toml /etc/fastraft/cluster.toml
COPY docker/healthcheck.py /opt/fastraft/healthcheck.py
ENV PATH=/opt/fastraft/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1
# The installed package (not a source tree) runs its compiled core here too.
RUN cd / && PYTHONDONTWRITEBYTECODE=1 python -P -c \
    "import fastraft.core as c; assert c.IMPLEMENTATION == 'cython', c.IMPLEMENTATION"
USER 10001:10001
WORKDIR /var/lib/fastraft
VOLUME ["/var/lib/fastraft"]
# Clients 7001-7003 and metrics (/metrics, /health, /ready) 7201-7203 of the default cluster.
# Its peer ports 7101-7103 stay on the container's loopback; a one-node-per-container
# cluster (compose.yaml) uses them between containers.
EXPOSE 7001 7002 7003 7201 7202 7203
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/opt/fastraft/bin/python", "/opt/fastraft/healthcheck.py"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["fastraft"]
CMD ["cluster", "--config", "/etc/fastraft/cluster.toml"]
