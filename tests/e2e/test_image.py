"""The image ``make image`` built, run on the real cluster: a sample Agent completes through it.

No container runtime runs here, so the test is the runtime: it unpacks the OCI archive
(index → manifest → config and layers, applied in order) into a directory and starts the
config's entrypoint there with chroot, as the config's user and with the config's
environment, under deploy/'s RBAC. Nothing of this machine's Python or packages is
reachable from inside: what runs is what a cluster would pull.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
import yaml

import image
from image import oci
from tests import identity
from tests.conftest import REPO, Cluster, Operator, Operators
from tests.e2e import views
from tests.e2e.views import Feed
from tests.helpers import get, wait_for

SAMPLE: Final = REPO / "deploy" / "samples" / "agent.yaml"
# Inside the root: the only writable place a read-only root would leave (an emptyDir there).
KUBECONFIG: Final = "/tmp/kubeconfig"  # noqa: S108
pytestmark = pytest.mark.usefixtures("crds")


@pytest.fixture(scope="module")
def built() -> oci.Image:
    if not image.ARCHIVE.exists():
        pytest.fail(f"no {image.ARCHIVE.relative_to(REPO)}: run `make image` first", pytrace=False)
    return oci.read(image.ARCHIVE)


@pytest.fixture
def root(built: oci.Image) -> Iterator[Path]:
    """The image's root filesystem, unpacked; removed at the end (a few hundred MB)."""
    directory = Path(tempfile.mkdtemp(prefix="image-root-"))
    try:
        oci.unpack(built, directory)
        yield directory
    finally:
        shutil.rmtree(directory)


def start(
    built: oci.Image,
    root: Path,
    operators: Operators,
    operator_identity: identity.Identity,
    **settings: str,
) -> Operator:
    """The image's entrypoint in ``root``, as its user, with its environment and ``settings``."""
    kubeconfig = root / KUBECONFIG.lstrip("/")
    shutil.copyfile(operator_identity.kubeconfig, kubeconfig)
    uid, _, gid = built.config["User"].partition(":")
    shutil.chown(kubeconfig, int(uid), int(gid or uid))
    log_path = operators.tmp_path / "image-operator.log"
    operators.logs.append(log_path)  # attached to the report if the test fails
    chroot = shutil.which("chroot")
    assert chroot is not None, "coreutils' chroot"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [chroot, f"--userspec={uid}:{gid or uid}", str(root), *built.command],
            env={**built.env, "KUBECONFIG": KUBECONFIG, **settings},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=root,
        )
    running = Operator(process, log_path)
    operators.running.append(running)  # stopped (SIGTERM to its pid) at the end in any case
    running.wait_for_log("ready; watching agents", timeout=60)
    return running


def test_the_image_runs_a_sample_agent_to_completion(
    built: oci.Image,
    root: Path,
    operators: Operators,
    operator_identity: identity.Identity,
    crds: Cluster,
    namespace: str,
    valkey_url: str,
    feed: Feed,
) -> None:
    assert built.config["User"] == "10001:10001"
    running = start(
        built,
        root,
        operators,
        operator_identity,
        VALKEY_URL=valkey_url,
        WATCH_NAMESPACES=namespace,
        HTTP_HOST="127.0.0.1",
        HTTP_PORT="0",
    )
    assert get(f"http://127.0.0.1:{running.port()}/readyz")[0] == 200

    (sample,) = yaml.safe_load_all(SAMPLE.read_text())
    sample["metadata"]["namespace"] = namespace
    crds.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(sample))
    name = sample["metadata"]["name"]
    done = wait_for(
        lambda: views.check(crds, valkey_url, feed, namespace, name, "Completed"),
        timeout=60,
        what=f"{name} to be Completed in status, Valkey and events",
    )
    assert [h["phase"] for h in done["status"]["history"]] == ["Spawning", "Running", "Completed"]

    assert running.stop() == 0, running.log()
    assert "Traceback" not in running.log()
