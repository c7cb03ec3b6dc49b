"""An OCI image archive, read without a container runtime: what ``make image`` reports and what
the e2e test unpacks and runs.

The archive is an OCI image layout in a tarball: ``index.json`` names the manifest, the
manifest names the config and the layers (``blobs/sha256/<hex>``), and the layers, applied
in order, are the root filesystem.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Final

WHITEOUT: Final = ".wh."
OPAQUE: Final = ".wh..wh..opq"


@dataclass(frozen=True)
class Layer:
    digest: str
    size: int  # as stored (compressed)
    created_by: str  # the Dockerfile instruction that made it


@dataclass(frozen=True)
class Image:
    archive: Path
    id: str  # the config's digest, which is also the image's id in containers-storage
    config: dict[str, Any]  # the image config's "config": Env, User, Entrypoint, ...
    layers: tuple[Layer, ...]
    size: int  # what a registry stores and a pull fetches: config, manifest and layers

    @property
    def env(self) -> dict[str, str]:
        return dict(item.partition("=")[::2] for item in self.config.get("Env", []))

    @property
    def command(self) -> list[str]:
        return [*(self.config.get("Entrypoint") or []), *(self.config.get("Cmd") or [])]


def _member(archive: tarfile.TarFile, name: str) -> IO[bytes]:
    try:
        found = archive.extractfile(name)
    except KeyError:
        found = None
    if found is None:
        raise ValueError(f"no {name} in the archive: not an OCI archive as `make image` writes")
    return found


def _blob(archive: tarfile.TarFile, digest: str) -> IO[bytes]:
    algorithm, _, hexdigest = digest.partition(":")
    return _member(archive, f"blobs/{algorithm}/{hexdigest}")


def _json(archive: tarfile.TarFile, digest: str) -> Any:
    return json.load(_blob(archive, digest))


def read(path: Path) -> Image:
    """The archive's one image: its config and its layers, as the manifest lists them."""
    with tarfile.open(path) as archive:
        index = json.load(_member(archive, "index.json"))
        (entry,) = index["manifests"]
        manifest = _json(archive, entry["digest"])
        config = _json(archive, manifest["config"]["digest"])
    history = [step for step in config.get("history", []) if not step.get("empty_layer")]
    layers = tuple(
        Layer(
            layer["digest"],
            layer["size"],
            history[i].get("created_by", "") if i < len(history) else "",
        )
        for i, layer in enumerate(manifest["layers"])
    )
    size = entry["size"] + manifest["config"]["size"] + sum(layer.size for layer in layers)
    return Image(path, manifest["config"]["digest"], config.get("config", {}), layers, size)


def _inside(root: Path, name: str) -> Path:
    """``root/name``, refusing a path that climbs out or passes through a symlink."""
    relative = PurePosixPath(name.lstrip("/"))
    if ".." in relative.parts:
        raise ValueError(f"{name}: a layer's path leaves the root")
    current = root
    for part in relative.parts[:-1]:
        current = current / part
        if current.is_symlink():
            raise ValueError(f"{name}: a layer's path passes through the symlink {current}")
    return root / relative


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        for child in path.iterdir():
            _remove(child)
        path.rmdir()
    elif path.exists() or path.is_symlink():
        path.unlink()


def unpack(image: Image, root: Path) -> None:
    """Apply the layers in order onto ``root`` (owners kept when run as root), whiteouts too."""
    # A layer has no entry for the root itself: it is open to all, as a runtime makes it.
    root.chmod(0o755)
    with tarfile.open(image.archive) as archive:
        for layer in image.layers:
            with tarfile.open(fileobj=_blob(archive, layer.digest), mode="r|*") as tar:
                for member in tar:
                    target = _inside(root, member.name)
                    if target.name == OPAQUE:
                        for child in target.parent.iterdir():
                            _remove(child)
                    elif target.name.startswith(WHITEOUT):
                        _remove(target.with_name(target.name.removeprefix(WHITEOUT)))
                    else:
                        if target.exists() and not (target.is_dir() and member.isdir()):
                            _remove(target)
                        tar.extract(member, root, numeric_owner=True, filter="fully_trusted")
