"""Static checks of the Dockerfiles and the chart: hadolint, and trivy's misconfiguration scanner.

trivy runs offline: `trivy config` needs no vulnerability database, and with --skip-check-update it
uses the checks embedded in the binary instead of fetching the checks bundle from a registry (it logs
"Falling back to embedded checks"). A known-bad sample proves those checks are really loaded.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from welcome_chart import CHART, ROOT, VALUE_SETS, render_manifests

SERVICES = ("producer-service", "email-service")
BLOCKING = ("HIGH", "CRITICAL")


def run_trivy(trivy, target, cache_dir) -> list[dict]:
    proc = subprocess.run(
        [str(trivy), "config", "--quiet", "--skip-check-update", "--cache-dir", str(cache_dir),
         "--format", "json", "--exit-code", "0", str(target)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"trivy failed:\n{proc.stderr[-3000:]}"
    report = json.loads(proc.stdout)
    findings = []
    for result in report.get("Results") or []:
        for m in result.get("Misconfigurations") or []:
            findings.append({"target": result["Target"], "id": m["ID"], "severity": m["Severity"],
                             "title": m["Title"], "message": m.get("Message", "")})
    return findings


@pytest.fixture(scope="module")
def scan_tree(tmp_path_factory):
    """One folder with everything trivy should look at: the chart (its helm scanner renders the
    defaults), both Dockerfiles, and the manifests of every value set rendered by Helm."""
    tree = tmp_path_factory.mktemp("trivy-scan")
    shutil.copytree(CHART, tree / "chart" / CHART.name)
    for service in SERVICES:
        (tree / service).mkdir()
        shutil.copy(ROOT / service / "Dockerfile", tree / service / "Dockerfile")
    rendered = tree / "rendered"
    rendered.mkdir()
    for name, values in VALUE_SETS.items():
        docs = [f"# Source: {path}\n{text}" for path, text in sorted(render_manifests(values).items())
                if path.endswith(".yaml") and text.strip()]
        (rendered / f"{name}.yaml").write_text("---\n".join(docs))
    return tree


def test_trivy_finds_no_high_or_critical_misconfiguration(trivy, scan_tree, tmp_path):
    findings = run_trivy(trivy, scan_tree, tmp_path / "cache")
    scanned = {f["target"].split("/")[0] for f in findings}
    assert {"chart", "rendered"} <= scanned, f"trivy looked at the chart and the manifests: {scanned}"
    blocking = [f for f in findings if f["severity"] in BLOCKING]
    assert not blocking, json.dumps(blocking, indent=2)


def test_trivy_checks_are_loaded_offline(trivy, tmp_path):
    """The embedded checks work without network: a root, privileged sample must be flagged."""
    sample = tmp_path / "sample"
    sample.mkdir()
    (sample / "Dockerfile").write_text("FROM debian:bookworm\nUSER root\nRUN apt-get update\nCMD [\"sh\"]\n")
    (sample / "pod.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\nspec:\n  hostPID: true\n  containers:\n"
        "    - name: bad\n      image: debian:bookworm\n      securityContext:\n        privileged: true\n")
    findings = run_trivy(trivy, sample, tmp_path / "cache")
    ids = {f["id"] for f in findings if f["severity"] in BLOCKING}
    assert "DS-0002" in ids, findings  # image user should not be root
    assert any(i.startswith("KSV") for i in ids), findings  # privileged container / host PID


@pytest.mark.parametrize("service", SERVICES)
def test_hadolint_is_clean(hadolint, service):
    proc = subprocess.run([str(hadolint), "--no-color", str(ROOT / service / "Dockerfile")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_shape(service):
    """Multi-stage, base image as a build argument, non-root runtime, exec-form entrypoint, no HEALTHCHECK."""
    text = (ROOT / service / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    froms = [ln for ln in lines if ln.upper().startswith("FROM ")]
    assert len(froms) >= 2, "multi-stage"
    assert lines[0].startswith("ARG PYTHON_IMAGE="), "the base image is a build argument declared first"
    assert all("${PYTHON_IMAGE}" in ln for ln in froms)
    runtime = lines[lines.index(froms[-1]):]
    users = [ln.split()[1] for ln in runtime if ln.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] == "10001", "runs as uid 10001"
    entrypoints = [ln for ln in runtime if ln.upper().startswith("ENTRYPOINT ")]
    assert entrypoints and json.loads(entrypoints[-1].split(None, 1)[1]) == [service], "exec form"
    assert not any(ln.upper().startswith("HEALTHCHECK") for ln in lines), "Kubernetes probes do that"
    assert not re.search(r"\b(gcc|build-essential|apt-get install)\b", "\n".join(runtime)), "no build tools"
    assert "COPY --from=build /opt/venv /opt/venv" in runtime
    ignore = (ROOT / service / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*"):][:4] == ["*", "!pyproject.toml", "!requirements.lock", "!src/"], \
        "the context is pyproject, lock and src only"
    assert re.search(r"pip install .*--require-hashes --no-deps .*-r requirements\.lock", text), "the hashed lock"
