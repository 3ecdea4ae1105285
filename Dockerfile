# Atlas Token Broker image. Needs BuildKit (Docker 23+ by default) or podman/buildah for
# the secret mount; no `# syntax=` line, so no frontend image is pulled at build time.
#
#   podman build -t atlas-broker .
#   podman build --secret id=pip-ca,src=/etc/ssl/certs/ca-certificates.crt -t atlas-broker .
#   docker build --build-arg BASE_IMAGE=python:3.11-slim-bookworm@sha256:<digest> -t atlas-broker .
#   podman build --build-arg BASE_IMAGE=localhost/atlas-broker-base:bookworm -t atlas-broker .
#
# The optional `pip-ca` build secret is a PEM bundle that pip trusts instead of its own,
# for builds behind a TLS-intercepting proxy; it is mounted only for the RUN that needs it
# and never lands in a layer. docs/operations.md walks through the options.

# Any image with Python 3.11+ as `python3` and its `venv` module: the official slim image
# (/usr/local/bin/python3) or a Debian base with python3 and python3-venv (/usr/bin/python3).
# Both stages use the same base so the virtual environment's interpreter symlink
# (/opt/venv/bin/python -> the base's python3) resolves in the final image.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src

# Only what the wheels are built from: the server's metadata and package, the lock of its
# runtime dependencies, and the SDK (clients/python), which the `broker` command uses. The
# development IdP and stack (dev/) stay out of the build context (.dockerignore), so out
# of the image.
COPY pyproject.toml README.md requirements.lock ./
COPY broker/ broker/
COPY clients/python/ clients/python/

# Build the server's and the SDK's wheels from the source tree, then install the locked
# dependencies (exact versions, every file checked against its hash, so two builds get the
# same bytes) and the two wheels into a virtual environment made without pip or
# setuptools. pip runs from a throwaway venv of the builder (Debian's python3 has no pip of
# its own), so the runtime image carries no installer. The final stage copies nothing else.
RUN --mount=type=secret,id=pip-ca,required=false \
    set -eu; \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi; \
    python3 -m venv /opt/pip; \
    /opt/pip/bin/python -m pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/wheels \
        . ./clients/python; \
    python3 -m venv --without-pip /opt/venv; \
    /opt/pip/bin/python -m pip --python /opt/venv/bin/python install --no-cache-dir \
        --require-hashes --no-deps -r requirements.lock; \
    /opt/pip/bin/python -m pip --python /opt/venv/bin/python install --no-cache-dir \
        --no-deps /tmp/wheels/*.whl; \
    rm -rf /tmp/wheels /opt/pip

FROM ${BASE_IMAGE}

ARG VERSION=0.1.0
ARG REVISION=unknown

LABEL org.opencontainers.image.title="atlas-token-broker" \
      org.opencontainers.image.description="Central OAuth2 client-credentials broker for the Atlas API" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# A named account for the numeric id, so tools that look the user up find one; its home
# is /tmp, the only writable place when the root file system is read-only.
RUN groupadd --system --gid 10001 broker \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
       --shell /usr/sbin/nologin broker

COPY --from=builder /opt/venv /opt/venv

# Bytecode was compiled when the venv was built; nothing is written at run time, so the
# container runs with a read-only root file system and an emptyDir (or tmpfs) at /tmp.
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BROKER_HOST=0.0.0.0 \
    BROKER_PORT=8080

USER 10001:10001
WORKDIR /tmp
EXPOSE 8080

# For `docker run` and Compose users; Kubernetes ignores it and uses the chart's probes,
# and OCI-format builds (podman's default) drop it with a warning.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('BROKER_PORT', '8080') + '/healthz', timeout=3)"]

ENTRYPOINT ["broker"]
CMD ["serve"]
