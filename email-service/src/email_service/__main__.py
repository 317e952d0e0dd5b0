"""Console script `email-service`.

    email-service run      consume user.signed_up events and send the welcome emails (until SIGTERM/SIGINT)

Exit codes: 0 stopped cleanly, 2 bad configuration or arguments, 130 a second signal forced the exit.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from . import logs
from .config import ConfigError, Settings

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_FORCED = 130

log = logging.getLogger("email_service")


async def _run(settings: Settings) -> int:
    from .service import EmailService

    dedup = None
    if settings.dedup_url is not None:
        from .dedup import DeliveryLedger

        dedup = DeliveryLedger.from_settings(settings)
    service = EmailService(settings, dedup=dedup)
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            log.warning("second signal, exiting at once")
            os._exit(EXIT_FORCED)
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        service.stop_event.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    await service.start()
    await service.wait()
    await service.stop()
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="email-service", description="Sends the welcome email for every signup.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", help="consume user.signed_up events and send the welcome emails")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"email-service: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logs.configure(settings.log_level)
    if args.command == "run":
        try:
            import uvloop

            return uvloop.run(_run(settings))
        except ImportError:
            return asyncio.run(_run(settings))
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
