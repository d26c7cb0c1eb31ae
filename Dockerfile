# flagstream container image: one image for every service (relay, publisher, dev).
#
#   docker build -t flagstream .                                  # on python:3.11-slim-bookworm
#   docker run --rm -p 8030:8030 -e FLAGSTREAM_KAFKA_BOOTSTRAP=kafka:9092 flagstream relay
#   docker run --rm -p 8030:8030 -v flagstream-data:/var/lib/flagstream flagstream dev --host 0.0.0.0
#
# BASE_IMAGE is any Debian-based image with Python >= 3.11 on PATH as `python3` and its venv
# module (the official python:3.11-slim-* images, or a base assembled from Debian's archive:
# deploy/image/build-base.sh, which is what the tests build on). Both stages use it, so the
# virtual environment built in the first runs unchanged in the second. docs/operations.md
# ("Container image") says how to build, run and push it.

ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm

# --- build: a virtual environment with flagstream and its dependencies ------------------------
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protocol ./protocol
COPY publisher ./publisher
COPY relay ./relay
COPY loadtest ./loadtest
COPY flagstream ./flagstream
# Behind a TLS-intercepting proxy, hand pip the proxy's CA bundle as a build secret (never
# stored in a layer): --secret id=pip-ca,src=/etc/ssl/certs/ca-certificates.crt
RUN --mount=type=secret,id=pip-ca,required=false \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && python3 -m venv /opt/flagstream \
    && /opt/flagstream/bin/pip install --quiet . \
    # The runtime image gets no installer: pip and setuptools leave the environment.
    && /opt/flagstream/bin/pip uninstall --quiet --yes pip setuptools \
    && /opt/flagstream/bin/python -m compileall -q /opt/flagstream/lib \
    && /opt/flagstream/bin/flagstream --help >/dev/null

# --- runtime: the base image, the environment, a non-root user ------------------------------
FROM ${BASE_IMAGE}
ARG FLAGSTREAM_UID=10001
RUN groupadd --system --gid "${FLAGSTREAM_UID}" flagstream \
    && useradd --system --uid "${FLAGSTREAM_UID}" --gid flagstream --no-log-init \
        --home-dir /var/lib/flagstream --create-home --shell /usr/sbin/nologin flagstream \
    && chmod 0700 /var/lib/flagstream
COPY --from=build /opt/flagstream /opt/flagstream
ENV PATH=/opt/flagstream/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    # Inside a container the services must listen on every interface to be reachable.
    FLAGSTREAM_RELAY_HOST=0.0.0.0 \
    FLAGSTREAM_PUBLISHER_HOST=0.0.0.0 \
    # Which local port the health check asks: 8030 (relay, dev); set 8031 for the publisher.
    FLAGSTREAM_HEALTHCHECK_PORT=8030
USER flagstream:flagstream
# `flagstream dev` keeps its data in ./.flagstream: mount a volume here to keep it.
WORKDIR /var/lib/flagstream
EXPOSE 8030 8031
# Ready = caught up with the log (relay) / store reachable (publisher); see docs/operations.md.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/opt/flagstream/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('FLAGSTREAM_HEALTHCHECK_PORT', '8030'), timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/flagstream/bin/flagstream"]
CMD ["relay"]
