"""The SMTP servers the contenders send to: Postfix's smtp-sink (fast, counts) and tests/bench/sink.py (delays in
fractions of a second, acceptance time per Message-ID).

Invariant: a sink is listening when its constructor returns, and is stopped through the testbed's processes
(so the driver's clean-up stops it too).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading

from tests.support.ports import free_port
from tests.support.waits import eventually_sync

from .paths import BENCH_PY, HERE, SMTP_SINK
from .processes import Processes

_MESG = re.compile(rb"mesg=(\d+)")


def _connectable(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


class SmtpSink:
    """smtp-sink on a fresh port; `-c` prints `mesg=N` per message, read live to time a drain."""

    def __init__(self, processes: Processes, delay_seconds: int | None = None) -> None:
        self.port = free_port()
        self.processes = processes
        self.count = 0
        self._cond = threading.Condition()
        argv = [SMTP_SINK, "-u", "nobody", "-c", *(["-w", str(delay_seconds)] if delay_seconds else []),
                f"127.0.0.1:{self.port}", "1024"]
        self.proc = processes.start("smtp-sink", argv, on_output=self._count)
        eventually_sync(lambda: _connectable(self.port), 10, 0.05, what=f"smtp-sink on :{self.port}")

    def _count(self, chunk: bytes) -> None:
        if found := _MESG.findall(chunk):
            with self._cond:
                self.count = int(found[-1])
                self._cond.notify_all()

    def wait_count(self, n: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.count >= n, timeout=timeout)

    def stop(self) -> None:
        self.processes.stop(self.proc, timeout=2)


class PySink:
    """tests/bench/sink.py and its control connection: STATS, DUMP (Message-ID -> accepted at), RESET."""

    def __init__(self, processes: Processes, delay: float = 0.0, record: bool = False) -> None:
        self.port, control_port = free_port(), free_port()
        self.processes = processes
        self.proc = processes.start("pysink", [
            BENCH_PY, str(HERE / "sink.py"), "--port", str(self.port), "--control-port", str(control_port),
            "--delay", str(delay), "--max-seconds", "900", *(["--record"] if record else [])])
        eventually_sync(lambda: _connectable(control_port), 15, 0.05, what=f"sink.py control port :{control_port}")
        self.sock = socket.create_connection(("127.0.0.1", control_port), timeout=10)
        self.file = self.sock.makefile("rwb")

    def command(self, cmd: str):
        self.file.write(cmd.encode() + b"\n")
        self.file.flush()
        return json.loads(self.file.readline())

    def count(self) -> int:
        return self.command("STATS")["count"]

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.sock.close()
        self.processes.stop(self.proc, timeout=3)
