"""The operator's OCI image, built on a machine with no Docker engine and no registry to pull from.

``make image`` (``python -m image``) builds the Dockerfile's context in ``dist/image/context``
(three tarballs: Debian's Python from mmdebstrap, the locked dependencies, the operator),
then builds the Dockerfile with buildah and writes an OCI archive. One Dockerfile for both:
a Docker user runs ``make image-context`` then ``docker build .`` (``.dockerignore`` lets
only those tarballs into the context).

Here are the names the Makefile, the Dockerfile's test and the e2e test share.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parent.parent
VERSION: Final[str] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
NAME: Final = "ghcr.io/mosaicstack/agent-lifecycle-operator"
TAG: Final = f"{NAME}:{VERSION}"

DIST: Final = REPO / "dist" / "image"
CONTEXT: Final = DIST / "context"
ARCHIVE: Final = DIST / f"agent-lifecycle-operator-{VERSION}.oci.tar"

# The context's tarballs, one layer each, in the order the Dockerfile ADDs them: the least
# often changed first, so a change to the operator rebuilds (and pushes) a few hundred KB.
ROOTFS: Final = "rootfs.tar"
DEPENDENCIES: Final = "python.tar"
OPERATOR: Final = "operator.tar"
LAYERS: Final = (ROOTFS, DEPENDENCIES, OPERATOR)

# Where the dependencies and the operator live in the image (the Dockerfile's PYTHONPATH).
SITE_PACKAGES: Final = "/opt/agent-lifecycle-operator/site-packages"
# The interpreter: Debian's, the one the wheels and the bytecode are made for.
PYTHON: Final = "/usr/bin/python3.11"
