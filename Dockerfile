# The operator's image, made of three tarballs that `make image-context` writes into
# dist/image/context (image/__main__.py makes them; nothing is pulled from a registry):
#   rootfs.tar    Debian bookworm's python3.11 and CA certificates, by mmdebstrap (image/rootfs.sh):
#                 no shell, no apt or dpkg, no compiler; the uid below in /etc/passwd
#   python.tar    the dependencies of image/requirements.lock (pinned with hashes), compiled
#   operator.tar  the operator's wheel, installed and compiled
# `make image` builds this file with buildah and writes dist/image/*.oci.tar. With Docker, from
# the repository's root (.dockerignore lets only the three tarballs into the context):
#   make image-context
#   docker build -t ghcr.io/mosaicstack/agent-lifecycle-operator:0.1.0.dev0 .
# (the tag is the version in pyproject.toml, which deploy/base/kustomization.yaml also names).
FROM scratch
# ADD unpacks a local tarball: one layer each, the least often changed first.
ADD dist/image/context/rootfs.tar /
ADD dist/image/context/python.tar /
ADD dist/image/context/operator.tar /
LABEL org.opencontainers.image.title="agent-lifecycle-operator" \
      org.opencontainers.image.description="Runs AI agents as Pods through a strict lifecycle, mirrored into Valkey" \
      org.opencontainers.image.licenses="Apache-2.0"
# The layers' packages; no .pyc written at run time (the root filesystem is read-only and the
# bytecode was compiled at build time); log lines leave at once.
ENV PATH=/usr/bin:/bin \
    PYTHONPATH=/opt/agent-lifecycle-operator/site-packages \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The uid and gid the Deployment's securityContext names (runAsUser / runAsGroup 10001).
USER 10001:10001
# /healthz, /readyz and /metrics (HTTP_PORT).
EXPOSE 8080
ENTRYPOINT ["/usr/bin/python3.11", "-m", "controller", "run"]
