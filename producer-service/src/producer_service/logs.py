# Twin copies: producer-service/src/producer_service/logs.py and email-service/src/email_service/logs.py
# are byte-identical, so that each service builds alone; tests/contract/test_shared_copies.py fails when they differ.
"""JSON log lines on stdout, each carrying the correlation id of the request or message being handled, if any."""

from __future__ import annotations

import atexit
import contextvars
import json
import logging
import sys
import threading
import time
from typing import TextIO

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)

_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}
# Built once: json.dumps with any option but the defaults builds a new encoder for every call (a third of a line's
# cost in the producer's profile).
_encode = json.JSONEncoder(ensure_ascii=False, default=str).encode


class JsonFormatter(logging.Formatter):
    """One JSON object per line. Runs for every message handled, so it avoids per-record work it can share."""

    _second = -1
    _stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        line = {
            "ts": f"{self._stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        cid = correlation_id.get()
        if cid is not None:
            line["correlation_id"] = cid
        for key in record.__dict__.keys() - _STANDARD:
            if not key.startswith("_"):
                line[key] = record.__dict__[key]
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return _encode(line)


class BatchingStdoutHandler(logging.Handler):
    """Writes log lines in batches: one write per FLUSH_SECONDS instead of one per message, which under load cost
    a fifth of the consumer's throughput. WARNING and above, a full buffer, and exit flush at once."""

    FLUSH_SECONDS = 0.2
    FLUSH_BYTES = 64 * 1024

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self.stream = stream if stream is not None else sys.stdout
        self._buffer_lock = threading.Lock()  # taken after the handler's own lock, never before it
        self._pending: list[str] = []
        self._size = 0
        threading.Thread(target=self._tick, name="log-flush", daemon=True).start()
        atexit.register(self.flush)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)
            return
        with self._buffer_lock:
            self._pending.append(line)
            self._size += len(line) + 1
            if record.levelno >= logging.WARNING or self._size >= self.FLUSH_BYTES:
                self._write()

    def _write(self) -> None:  # the caller holds self._buffer_lock
        if not self._pending:
            return
        data = "\n".join(self._pending) + "\n"
        self._pending.clear()
        self._size = 0
        try:
            self.stream.write(data)
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def flush(self) -> None:
        with self._buffer_lock:
            self._write()

    def _tick(self) -> None:
        while True:
            time.sleep(self.FLUSH_SECONDS)
            self.flush()


def flush() -> None:
    """Write what the handlers hold now: called on a clean stop, before the last line could be lost to a signal."""
    for handler in logging.getLogger().handlers:
        handler.flush()


def configure(level: str) -> None:
    # Our lines carry no file, line, thread or process: skip collecting them (the logging docs' "Optimization").
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BatchingStdoutHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiormq").setLevel(max(logging.getLevelName(level), logging.WARNING))
    logging.getLogger("aio_pika").setLevel(max(logging.getLevelName(level), logging.WARNING))
