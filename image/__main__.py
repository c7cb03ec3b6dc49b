"""``python -m image rootfs|dependencies|operator|build``: what ``make image`` calls, step by step.

Each of the first three writes one tarball of the build context (the Makefile rebuilds
only those whose inputs changed); ``build`` runs buildah on the context with the same
Dockerfile a Docker user builds, writes the OCI archive and reports the image.

The Python layers are installed from this machine with pip (the image has no pip) for
Debian's Python 3.11, then compiled by that very interpreter, run in a chroot of the root
filesystem: the bytecode is the image's own, and no writable cache is needed at run time.
"""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import image
from image import oci

HOOK: Final = image.REPO / "image" / "rootfs.sh"
LOCK: Final = image.REPO / "image" / "requirements.lock"
DOCKERFILE: Final = image.REPO / "Dockerfile"

SUITE: Final = "bookworm"
# Debian's python3.11 and the CA bundle; their dependencies come along (apt resolves them).
PACKAGES: Final = ("python3.11", "ca-certificates")
DEBIAN_MIRROR: Final = "http://deb.debian.org/debian"
DEBIAN_SECURITY_MIRROR: Final = "http://deb.debian.org/debian-security"
# The wheels pip may choose: those Debian's Python 3.11 on bookworm's glibc 2.36 can load.
WHEEL_TARGET: Final = (
    "--only-binary=:all:",
    "--platform=manylinux2014_x86_64",
    "--python-version=3.11",
    "--implementation=cp",
    "--abi=cp311",
)
PIP: Final = (sys.executable, "-m", "pip", "--quiet", "--disable-pip-version-check")


def run(args: Sequence[str | Path], **kwargs: object) -> None:
    subprocess.run([str(arg) for arg in args], check=True, **kwargs)  # type: ignore[call-overload]


def output(args: Sequence[str | Path]) -> str:
    return subprocess.run(
        [str(arg) for arg in args], check=True, capture_output=True, text=True
    ).stdout.strip()


# What each layer is made from: its files' time is the last commit that touched these, so a
# commit that leaves a layer's inputs alone leaves that layer's bytes (and digest) alone.
INPUTS: Final = {
    "rootfs": ("image/rootfs.sh", "image/__main__.py", "image/__init__.py"),
    "dependencies": ("image/requirements.lock", "image/__main__.py", "image/__init__.py"),
    "operator": ("controller", "pyproject.toml", "README.md", "image/__main__.py"),
}


def source_date_epoch(layer: str) -> int:
    """Every file's time in ``layer``: the last commit of its inputs, for a reproducible
    build (SOURCE_DATE_EPOCH, when set, as the convention has it)."""
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return int(os.environ["SOURCE_DATE_EPOCH"])
    found = output(["git", "-C", image.REPO, "log", "-1", "--format=%ct", "--", *INPUTS[layer]])
    return int(found or 0)


def megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def write_tar(out: Path, root: Path, top: str, mtime: int) -> None:
    """``root/top`` as a layer tarball: sorted, owned by root, readable by all (whatever the
    umask it was installed under), every time the same."""
    partial = out.with_name(out.name + ".partial")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        for directory, dirs, files in os.walk(root / top):
            dirs.sort()
            for path in [Path(directory), *(Path(directory) / name for name in sorted(files))]:
                info = tar.gettarinfo(path, arcname=path.relative_to(root).as_posix())
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = mtime
                if info.isdir() or (info.isfile() and info.mode & 0o111):
                    info.mode = 0o755
                elif info.isfile():
                    info.mode = 0o644
                if info.isfile():
                    with path.open("rb") as content:
                        tar.addfile(info, content)
                else:
                    tar.addfile(info)
    partial.replace(out)


def cmd_rootfs(out: Path) -> None:
    """Debian's Python and CA certificates, extracted by mmdebstrap, finished by rootfs.sh."""
    mirror = os.environ.get("DEBIAN_MIRROR", DEBIAN_MIRROR)
    security = os.environ.get("DEBIAN_SECURITY_MIRROR", DEBIAN_SECURITY_MIRROR)
    partial = out.with_name(out.name + ".partial.tar")
    run(
        [
            "mmdebstrap",
            "--quiet",
            "--variant=extract",
            f"--include={','.join(PACKAGES)}",
            '--aptopt=APT::Install-Recommends "false"',
            f'--extract-hook=sh {shlex.quote(str(HOOK))} "$1"',
            # rootfs.sh removes apt's and dpkg's state itself; no device nodes in an image.
            "--skip=output/dev,cleanup/apt,cleanup/mmdebstrap,chroot/start-stop-daemon,"
            "chroot/policy-rc.d",
            SUITE,
            partial,
            f"deb {mirror} {SUITE} main",
            f"deb {mirror} {SUITE}-updates main",
            f"deb {security} {SUITE}-security main",
        ],
        # Without a mirror on the command line mmdebstrap would read sources from stdin.
        stdin=subprocess.DEVNULL,
        env={**os.environ, "SOURCE_DATE_EPOCH": str(source_date_epoch("rootfs"))},
    )
    partial.replace(out)


def python_layer(out: Path, install: Callable[[Path, Path], None], layer: str) -> None:
    """What ``install(site_packages, scratch)`` puts into SITE_PACKAGES, compiled, as a layer."""
    with tempfile.TemporaryDirectory(dir=image.DIST, prefix="layer-") as tmp:
        root, scratch = Path(tmp) / "root", Path(tmp) / "scratch"
        root.mkdir()
        scratch.mkdir()
        run(["tar", "-C", root, "-xf", image.CONTEXT / image.ROOTFS])
        site_packages = root / image.SITE_PACKAGES.lstrip("/")
        install(site_packages, scratch)
        # Console scripts name this machine's Python in their shebang; the image runs `-m`.
        shutil.rmtree(site_packages / "bin", ignore_errors=True)
        run(
            [
                "chroot",
                root,
                image.PYTHON,
                "-m",
                "compileall",
                "-q",
                "--invalidation-mode=unchecked-hash",
                image.SITE_PACKAGES,
            ]
        )
        write_tar(
            out, root, image.SITE_PACKAGES.lstrip("/").split("/")[0], source_date_epoch(layer)
        )


def install_dependencies(site_packages: Path, scratch: Path) -> None:
    run(
        [
            *PIP,
            "install",
            "--no-compile",
            "--no-deps",
            "--require-hashes",
            *WHEEL_TARGET,
            f"--target={site_packages}",
            f"--requirement={LOCK}",
        ]
    )


def install_operator(site_packages: Path, scratch: Path) -> None:
    run([*PIP, "wheel", "--no-deps", f"--wheel-dir={scratch}", image.REPO])
    # By name from that folder, not by the wheel's path, which pip would record (direct_url.json):
    # the layer stays the same bytes when the operator's code does.
    run(
        [
            *PIP,
            "install",
            "--no-compile",
            "--no-deps",
            "--no-index",
            f"--find-links={scratch}",
            f"--target={site_packages}",
            "agent-lifecycle-operator",
        ]
    )


@functools.cache
def storage_driver() -> str:
    """overlay where the kernel lets buildah mount it (a build takes seconds), else vfs, which
    works anywhere (nested in a container too) but copies every layer whole: ~5 times slower.
    BUILDAH_STORAGE_DRIVER chooses. Each driver keeps its images apart in the same store."""
    chosen = os.environ.get("BUILDAH_STORAGE_DRIVER")
    if chosen:
        return chosen
    probe = subprocess.run(["buildah", "--storage-driver=overlay", "info"], capture_output=True)
    return "overlay" if probe.returncode == 0 else "vfs"


def buildah(*args: str | Path) -> list[str | Path]:
    return ["buildah", f"--storage-driver={storage_driver()}", *args]


def image_id(reference: str) -> str | None:
    found = subprocess.run(
        [str(arg) for arg in buildah("images", "--quiet", "--no-trunc", reference)],
        capture_output=True,
        text=True,
    )
    return found.stdout.strip() or None if found.returncode == 0 else None


def docker_is_running() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def cmd_build() -> None:
    """The Dockerfile built on the context by buildah; the OCI archive; the local stores."""
    previous = image_id(image.TAG)
    run(
        buildah(
            "bud",
            "--quiet",
            "--isolation=chroot",
            "--layers",
            # No --timestamp: it would stamp every file of every layer with one time, so each
            # commit would change all three layers; the tarballs carry their own times.
            f"--file={DOCKERFILE}",
            f"--tag={image.TAG}",
            image.REPO,
        ),
        stdout=subprocess.DEVNULL,
    )
    built = image_id(image.TAG)
    if previous and previous != built:
        # The image this build replaced goes (its layers stay as the cache of the next build).
        subprocess.run(buildah("rmi", previous), capture_output=True)
    if not image.ARCHIVE.exists() or oci.read(image.ARCHIVE).id != built:
        # Written only when the image changed (compressing the layers is most of a warm build).
        image.ARCHIVE.unlink(missing_ok=True)
        run(buildah("push", "--quiet", image.TAG, f"oci-archive:{image.ARCHIVE}:{image.VERSION}"))
    stores = [f"containers-storage ({storage_driver()}; buildah, podman)"]
    if docker_is_running():
        run(buildah("push", "--quiet", image.TAG, f"docker-daemon:{image.TAG}"))
        stores.append("the Docker daemon")
    built_image = oci.read(image.ARCHIVE)
    print(f"image {image.TAG} ({built}), user {built_image.config.get('User')}")
    # The Dockerfile's ADDs, in order: one layer each (image.LAYERS names them).
    named = len(image.LAYERS) == len(built_image.layers)
    for i, layer in enumerate(built_image.layers):
        name = image.LAYERS[i] if named else layer.created_by
        print(f"  {megabytes(layer.size):>9}  {name}  {layer.digest[:19]}")
    print(f"  {megabytes(built_image.size):>9}  compressed, as a registry stores it")
    print(f"archive: {image.ARCHIVE.relative_to(image.REPO)}")
    print(f"loaded into: {', '.join(stores)} as {image.TAG}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m image", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("rootfs", "dependencies", "operator"):
        sub.add_parser(name, help=f"write the context's {name} layer").add_argument(
            "out", type=Path
        )
    sub.add_parser("build", help="build the context with buildah; the OCI archive")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        if args.command == "build":
            cmd_build()
        else:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            image.DIST.mkdir(parents=True, exist_ok=True)
            if args.command == "rootfs":
                cmd_rootfs(args.out)
            elif args.command == "dependencies":
                python_layer(args.out, install_dependencies, "dependencies")
            else:
                python_layer(args.out, install_operator, "operator")
            print(f"{args.out.name}: {megabytes(args.out.stat().st_size)}", end=" ")
    except FileNotFoundError as exc:
        print(
            f"error: {exc.filename} not found: `make image` needs root, mmdebstrap and buildah "
            "(apt-get install mmdebstrap buildah)",
            file=sys.stderr,
        )
        return 1
    except subprocess.CalledProcessError as exc:
        # The command's own output said why; this line says which step it was.
        print(f"error: {shlex.join(exc.cmd)} exited {exc.returncode}", file=sys.stderr)
        return 1
    print(f"in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
