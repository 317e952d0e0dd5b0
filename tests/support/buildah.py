"""buildah as the image checks use it: is it usable here, what an image says about itself, a working container.

Invariant: a working container made here is removed again (`buildah rm`, which also unmounts it) when its `with`
block ends, whatever happened inside; nothing else in buildah's storage is touched. Where buildah cannot run (not
root, not installed) `require_buildah()` raises `BuildahMissing` saying what to do: nothing skips silently.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class BuildahMissing(AssertionError):
    """buildah cannot run on this machine; the message says why and what to install or change."""


def require_buildah() -> None:
    if os.geteuid() != 0:
        raise BuildahMissing("the image smoke test needs root (buildah mounts image roots; the containers get their "
                             "own mount and PID namespaces): run it as root")
    for tool in ("buildah", "unshare", "mount"):
        if shutil.which(tool) is None:
            raise BuildahMissing(f"{tool} is not on PATH: apt-get install -y buildah debootstrap "
                                 "(`make images-build` installs them)")
    probe = subprocess.run(["buildah", "images", "--quiet"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise BuildahMissing(f"buildah cannot run here: {probe.stderr.strip() or probe.stdout.strip()}")


def buildah(*args: str, timeout: float = 600) -> str:
    result = subprocess.run(["buildah", *args], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"buildah {' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout.strip()


@dataclass(frozen=True)
class ImageConfig:
    """What the image itself says about how to run it (the OCI config)."""

    reference: str
    user: str
    env: dict[str, str]
    entrypoint: list[str]
    cmd: list[str]
    workdir: str


def image_config(reference: str) -> ImageConfig:
    found = subprocess.run(["buildah", "inspect", "--type", "image", reference], capture_output=True, text=True)
    if found.returncode != 0:
        raise AssertionError(f"no image {reference} in buildah's storage: build it with `make images-build`")
    config = json.loads(found.stdout)["OCIv1"]["config"]
    env = dict(item.split("=", 1) for item in config.get("Env") or [])
    return ImageConfig(reference, config.get("User") or "0", env, list(config.get("Entrypoint") or []),
                       list(config.get("Cmd") or []), config.get("WorkingDir") or "/")


@contextlib.contextmanager
def working_container(reference: str) -> Iterator[Path]:
    """A fresh working container of the image, mounted: its root directory (changes go to its own layer)."""
    name = buildah("from", "--pull=never", "--quiet", reference)
    try:
        yield Path(buildah("mount", name))
    finally:
        buildah("rm", name)
