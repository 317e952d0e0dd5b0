"""Console script `producer-service`: read the settings, then serve the API with uvicorn until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import os
import sys

import uvicorn

from . import logs
from .app import create_app
from .config import Settings
from .envvars import read_settings, redact_url

EXIT_CONFIG = 2


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
    logging.getLogger("producer_service").info(
        "starting", extra={"http": f"{settings.http_host}:{settings.http_port}",
                           "amqp": redact_url(settings.amqp_url.value)})
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    # uvicorn handles SIGTERM/SIGINT: it stops accepting, finishes in-flight requests, then runs the lifespan
    # shutdown that closes the broker connection. A second signal exits at once.
    uvicorn.run(create_app(settings), host=settings.http_host, port=settings.http_port, loop=loop,
                http="httptools", log_config=None, access_log=False, server_header=False,
                timeout_graceful_shutdown=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
