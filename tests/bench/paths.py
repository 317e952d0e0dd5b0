"""Where the benchmark finds its programs: the services in .venv, the peers and tools in .venv-bench and Debian.

The services run from .venv (what `make install` builds, editable from the source); the driver, the peers
(Celery, Dramatiq, the ceilings) and the load tools run with the interpreter of .venv-bench.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "tests" / "bench"
PEERS = HERE / "peers"
SERVICES_BIN = ROOT / ".venv" / "bin"
BENCH_PY = sys.executable
BENCH_BIN = Path(BENCH_PY).parent
BROKER_HOST = "127.0.0.1:5672"
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
WRK = shutil.which("wrk") or "/usr/bin/wrk"


def missing_tools() -> list[str]:
    """The external programs `make bench` installs (tests/bench/ensure-tools.sh) that are not there."""
    wanted = {"smtp-sink": SMTP_SINK, "wrk": WRK, "rabbitmqctl": shutil.which("rabbitmqctl") or "rabbitmqctl",
              "email-service (.venv)": str(SERVICES_BIN / "email-service")}
    return [name for name, path in wanted.items() if not Path(path).exists()]
