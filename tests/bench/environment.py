"""What a run was measured on: the code, the machine, every package and tool version (for the report header).

The services run from .venv and the peers from .venv-bench, so each venv reports its own packages.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path

import psutil

from .broker import Broker
from .paths import ROOT, SERVICES_BIN, WRK

SERVICE_PACKAGES = ("aio-pika", "aiormq", "aiosmtplib", "uvicorn", "starlette", "uvloop", "httptools",
                    "prometheus-client", "producer-service", "email-service")
PEER_PACKAGES = ("celery", "kombu", "dramatiq", "pika", "aio-pika", "aiosmtplib", "uvicorn", "starlette", "uvloop",
                 "psutil")


def _dist(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def _run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True).stdout.strip()


def versions(broker: Broker) -> dict:
    services = json.loads(subprocess.run(
        [str(SERVICES_BIN / "python"), "-c", "import importlib.metadata as m, json, platform; "
         "print(json.dumps({'python': platform.python_version(), "
         f"**{{n: m.version(n) for n in {SERVICE_PACKAGES!r}}}}}))"],
        check=True, capture_output=True, text=True).stdout)
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu_model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
                     platform.processor())
    debian = Path("/etc/debian_version")
    props = broker.conn.server_properties
    return {
        # The services run from their source (editable installs): say which.
        "code": {"commit": _run("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"),
                 "uncommitted_service_files": _run("git", "-C", str(ROOT), "status", "--porcelain", "--",
                                                   "producer-service/src", "email-service/src").splitlines()},
        "machine": {"nproc": os.cpu_count(), "cpu_model": cpu_model, "kernel": platform.release(),
                    "memory_gib": round(psutil.virtual_memory().total / 1024 ** 3, 1),
                    "os": debian.read_text().strip() if debian.exists() else platform.platform()},
        "services (.venv)": services,
        "peers (.venv-bench)": {"python": platform.python_version(), **{n: _dist(n) for n in PEER_PACKAGES}},
        "rabbitmq": {"version": props.get("version"), "platform": props.get("platform")},
        "tools": {"wrk": _run(WRK, "-v").split("\n")[0].strip(),
                  "postfix (smtp-sink)": _run("dpkg-query", "-W", "-f", "${Version}", "postfix")},
    }
