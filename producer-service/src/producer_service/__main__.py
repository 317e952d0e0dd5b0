"""Console script `producer-service`: read the settings, then serve the API with uvicorn until SIGTERM/SIGINT.

Exit codes: 0 stopped cleanly (also after SIGTERM or SIGINT), 2 bad configuration, 3 the server could not start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator
from types import FrameType

import uvicorn

from . import logs
from .app import create_app
from .config import Settings
from .envvars import read_settings, redact_url

log = logging.getLogger("producer_service")

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_STARTUP = 3  # what uvicorn.run exits with when the server did not start


class Server(uvicorn.Server):
    """uvicorn's server, except that a signal ends it like a clean stop: uvicorn re-raises the SIGTERM/SIGINT it
    caught once it has shut down, so the process died of the signal (exit 143) before `atexit` flushed the last
    log lines. Here the signal only starts the shutdown: finish in-flight requests, run the lifespan shutdown
    (closing the broker connection), return. A second signal skips the wait for in-flight requests."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.force_exit = self.should_exit
        self.should_exit = True


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print("usage: producer-service\n\nServes the signup API. Configured by environment variables; "
              "see README.md (Configuration).")
        return 0
    settings = read_settings("producer-service", Settings.from_env, os.environ)
    if settings is None:
        return EXIT_CONFIG
    logs.configure(settings.log_level)
    # uvicorn's access log would print client addresses per request; our own log line carries what matters.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    log.info("starting", extra={"http": f"{settings.http_host}:{settings.http_port}",
                                "amqp": redact_url(settings.amqp_url.value)})
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    server = Server(uvicorn.Config(create_app(settings), host=settings.http_host, port=settings.http_port, loop=loop,
                                   http="httptools", log_config=None, access_log=False, server_header=False,
                                   timeout_graceful_shutdown=10))
    server.run()
    if not server.started:
        log.error("could not start the HTTP server")
        logs.flush()
        return EXIT_STARTUP
    log.info("stopped")
    logs.flush()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
