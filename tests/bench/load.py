"""HTTP load on a producer: wrk for the closed-loop maximum, tests/bench/loadgen.py for paced (open-loop) load.

Both run as their own processes (the driver's CPU stays out of the measurement) and are bounded in time.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from .paths import BENCH_PY, HERE, WRK
from .results import WrkReport

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def wrk_command(seconds: float) -> str:
    return f"wrk -t1 -c64 -d{seconds}s --latency -s post.lua"


def wrk(port: int, seconds: float) -> WrkReport:
    """POST /v1/signups with 64 connections for `seconds`."""
    argv = [WRK, "-t1", "-c64", f"-d{seconds}s", "--latency", "-s", str(HERE / "post.lua"),
            f"http://127.0.0.1:{port}/v1/signups"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30).stdout
    return parse_wrk(out)


def parse_wrk(out: str) -> WrkReport:
    def ms(text: str) -> float:
        value, unit = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
        return float(value) * _UNIT_MS[unit]

    latency = {p: ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", out, re.M)}
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    requests = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    if not (rps and requests and "50" in latency and "99" in latency):
        raise RuntimeError(f"wrk printed no result: {out[-500:]}")
    return WrkReport(rps=float(rps.group(1)), p50_ms=latency["50"], p99_ms=latency["99"],
                     requests=int(requests.group(1)), non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
                     socket_errors=errors.group(1) if errors else "")


def post_signup(port: int, timeout: float = 2.0) -> int:
    """Status of one POST /v1/signups (0 if nothing answered)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/signups", method="POST",
                                 data=b'{"email": "ada@example.com", "name": "Ada Lovelace", "locale": "en"}',
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def paced(tmp: Path, port: int, rate: float, seconds: float) -> list[dict]:
    """loadgen.py at `rate` requests/s for `seconds`: one dict per request (event_id, sent, answered, status, lag)."""
    out = tmp / f"loadgen-{uuid.uuid4().hex[:6]}.jsonl"
    subprocess.run([BENCH_PY, str(HERE / "loadgen.py"), "--port", str(port), "--rate", str(rate), "--duration",
                    str(seconds), "--connections", "64", "--out", str(out)],
                   check=True, timeout=seconds + 60, start_new_session=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    out.unlink()
    return rows
