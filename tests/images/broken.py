"""Deliberately broken images (`make images-smoke BREAK=...`): the smoke test must fail on them, saying why.

    package-data   the email image built from a copy of email-service/ whose pyproject.toml leaves the templates
                   out of the package data: the installed package lacks every welcome.* file

Invariant: the broken variant gets a tag of its own (…:broken-<name>), never the chart's, and is removed again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from tests.support.buildah import buildah

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = os.environ.get("PYTHON_IMAGE") or os.environ.get("BASE_IMAGE", "localhost/welcome-mail-base:bookworm")
PACKAGE_DATA = 'email_service = ["contract/*.json", "templates/*"]'
BREAKS = ("package-data",)


@contextlib.contextmanager
def broken_image(name: str, workdir: Path) -> Iterator[dict[str, str]]:
    """component -> the reference of its broken variant, built here (as build.sh builds, layers reused)."""
    assert name in BREAKS, f"BREAK={name}: known are {', '.join(BREAKS)}"
    context = workdir / "email-service"
    shutil.copytree(ROOT / "email-service", context, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    pyproject = context / "pyproject.toml"
    text = pyproject.read_text()
    assert PACKAGE_DATA in text, f"email-service/pyproject.toml no longer says {PACKAGE_DATA}: update broken.py"
    pyproject.write_text(text.replace(PACKAGE_DATA, 'email_service = ["contract/*.json"]'))
    reference = f"localhost/welcome-mail/email-service:broken-{name}"
    buildah("bud", "--isolation", "chroot", "--layers", "--quiet", "--build-arg", f"PYTHON_IMAGE={BASE_IMAGE}",
            "--tag", reference, "--file", str(context / "Dockerfile"), str(context))
    try:
        yield {"email": reference}
    finally:
        buildah("rmi", reference)
