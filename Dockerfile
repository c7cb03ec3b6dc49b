# syntax=docker/dockerfile:1
# The operator's image. Build from the repository's root:
#   docker build -t ghcr.io/mosaicstack/agent-lifecycle-operator:0.1.0.dev0 .
# (the tag is the version in pyproject.toml, which deploy/base/kustomization.yaml also names).
#
# Python 3.11, the version the test suite runs on, on Debian bookworm slim: pinned by exact tag
# and by the digest of that tag's multi-platform index, so a rebuild gets the same base bytes.
# To move to a newer base, change both together; the digest of a tag comes from
#   docker buildx imagetools inspect python:3.11.13-slim-bookworm
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1

# --- build: the operator's wheel and the wheels of everything it depends on -----------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# Only what the wheel is made of (.dockerignore keeps the rest out of the context as well).
COPY pyproject.toml README.md ./
COPY controller/ controller/
RUN python -m pip wheel --wheel-dir /wheels .

# --- runtime: the wheels installed into a clean slim image, run as a non-root user ----------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="agent-lifecycle-operator" \
      org.opencontainers.image.description="Runs AI agents as Pods through a strict lifecycle, mirrored into Valkey" \
      org.opencontainers.image.licenses="Apache-2.0"
# No .pyc written at run time (the root filesystem is read-only; pip compiled them at install),
# and log lines leave at once.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# The uid and gid the Deployment's securityContext names (runAsUser / runAsGroup 10001).
RUN groupadd --system --gid 10001 operator \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin operator
# Installed from the build stage's wheels only (--no-index): nothing is fetched here, and the
# wheels are mounted rather than copied, so they leave no layer behind.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-index --find-links=/wheels agent-lifecycle-operator
USER 10001:10001
# /healthz, /readyz and /metrics (HTTP_PORT).
EXPOSE 8080
ENTRYPOINT ["python", "-m", "controller", "run"]
