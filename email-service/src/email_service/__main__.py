"""Console script `email-service`.

    email-service run                                   consume user.signed_up events, send the welcome emails
    email-service dlq list   [--limit N] [--reason R] [--json]
    email-service dlq replay [--limit N] [--reason R]... [--rate N] [--max-replays N] [--dry-run]
    email-service dlq purge  [--reason R] [--json] --yes
    email-service status EVENT_ID... [--json] | --summary [--window 24h]   the delivery records (status_command.py)
    email-service preview --locale zh-CN --name "Zoë" [--format html|text|eml] [--email ADDRESS]

Exit codes: 0 done, 1 some messages could not be moved (they stay in the dead-letter queue), 2 bad configuration
or arguments or templates, 3 the broker cannot be reached, 4 a queue is missing, 130 a second signal forced the exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from . import logs, status_command
from .config import Settings
from .envvars import broker_failure, read_settings, redact_url
from .template_files import LocaleFiles, TemplateError, read_templates
from .wire import DEAD_LETTER_REASONS

if TYPE_CHECKING:
    from .dlq import DeadLetter

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_BROKER = 3
EXIT_QUEUE_MISSING = 4
EXIT_FORCED = 130

log = logging.getLogger("email_service")


async def _run(settings: Settings, templates: Mapping[str, LocaleFiles]) -> int:
    from .service import EmailService

    service = EmailService(settings, templates=templates)
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            log.warning("second signal, exiting at once")
            logging.getLogger().handlers[0].flush()
            os._exit(EXIT_FORCED)
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        service.stop_event.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    await service.start()
    await service.wait()
    await service.stop()
    return EXIT_OK


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="email-service", description="Sends the welcome email for every signup.",
                                     epilog="Exit codes: 0 done, 1 partly done, 2 usage or configuration, "
                                            "3 broker unreachable, 4 queue missing.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", help="consume user.signed_up events and send the welcome emails")
    dlq = sub.add_parser("dlq", help="inspect, replay or purge dead-lettered messages (email.welcome.dlq)")
    actions = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    reason_help = f"only messages dead-lettered for this reason ({', '.join(DEAD_LETTER_REASONS)})"
    listing = actions.add_parser("list", help="show dead letters without removing them or changing their order")
    listing.add_argument("--limit", type=_positive_int, default=50, help="show at most N (default 50)")
    listing.add_argument("--reason", help=reason_help)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    replay = actions.add_parser("replay", help="move dead letters back to email.welcome, attempts reset")
    replay.add_argument("--limit", type=_positive_int, default=None, help="move at most N (default: all)")
    replay.add_argument("--reason", action="append", help=reason_help + "; may be given more than once")
    replay.add_argument("--rate", type=_positive_float, default=100.0, help="messages per second (default 100)")
    replay.add_argument("--dry-run", action="store_true", help="show what would be moved, move nothing")
    replay.add_argument("--max-replays", type=_positive_int, default=None,
                        help="leave (and report) letters already replayed N times: nothing loops for ever")
    purge = actions.add_parser("purge", help="remove dead letters for good, printing each one")
    purge.add_argument("--reason", help=reason_help)
    purge.add_argument("--json", action="store_true", help="one JSON object per line, as dlq list --json")
    purge.add_argument("--yes", action="store_true", help="required: confirms that the messages are to be deleted")
    status_command.add_parser(sub)
    show = sub.add_parser("preview", help="write the welcome email as it would be sent, from the configured templates")
    show.add_argument("--locale", default=None, help="BCP 47 tag (default: the first of LOCALES)")
    show.add_argument("--name", default="Ada Lovelace", help="the user's name (default: Ada Lovelace)")
    show.add_argument("--email", default="preview@example.com", help="the recipient (default: preview@example.com)")
    show.add_argument("--format", choices=("html", "text", "eml"), default="html",
                      help="the HTML part, the text part or the whole message (default: html)")
    return parser


def _preview(settings: Settings, templates: Mapping[str, LocaleFiles], args: argparse.Namespace) -> int:
    from .events import LOCALE_TAG
    from .preview import preview

    locale = args.locale or settings.locales[0]
    if not LOCALE_TAG.fullmatch(locale):
        print(f"email-service: --locale must be a BCP 47 tag such as en or zh-CN, got {locale!r}", file=sys.stderr)
        return EXIT_USAGE
    if locale not in templates:
        print(f"email-service: no template for {locale}; showing the default locale's ({settings.locales[0]}), "
              "as the service would send it", file=sys.stderr)
    sys.stdout.buffer.write(preview(settings, templates, locale=locale, name=args.name, address=args.email,
                                    fmt=args.format))
    return EXIT_OK


def _letter_id(letter: DeadLetter) -> str:
    """What names a dead letter: the body's event id, else the message_id it came with; and that message_id too
    when it is another."""
    name = letter.event_id or letter.message_id or "(no id)"
    if letter.event_id and letter.message_id not in (None, letter.event_id):
        name += f"  message_id={letter.message_id}"
    return name


def _letter_line(letter: DeadLetter) -> str:
    """One dead letter as `dlq list` and `dlq purge` print it."""
    return (f"{_letter_id(letter)}  reason={letter.reason}  attempts={letter.attempts}  "
            f"at={letter.dead_lettered_at}  error={letter.last_error}")


async def _dlq(settings: Settings, args: argparse.Namespace) -> int:
    from aiormq.exceptions import AMQPError

    from .dlq import DeadLetterQueue, QueueMissing, as_json

    records = None
    if settings.redis_url is not None and args.action in ("replay", "purge") and not getattr(args, "dry_run", False):
        from .status import DeliveryRecords

        records = DeliveryRecords.from_settings(settings)
    queue = DeadLetterQueue(settings.amqp_url.value, records=records)
    try:
        if args.action == "list":
            report = await queue.list(limit=args.limit, reason=args.reason)
            for letter in report.matched:
                if args.json:
                    print(as_json(letter))
                else:
                    print(_letter_line(letter))
            counts = dict(sorted(report.by_reason.items()))
            if args.json:
                print(json.dumps({"total": report.scanned, "by_reason": counts}))
            else:
                print(f"{report.scanned} dead letters; by reason: "
                      + (", ".join(f"{k}={v}" for k, v in counts.items()) or "none"))
            return EXIT_OK
        if args.action == "replay":
            verb = "would replay" if args.dry_run else "replayed"
            report = await queue.replay(limit=args.limit, reason=tuple(args.reason) if args.reason else None,
                                        rate=args.rate, dry_run=args.dry_run, max_replays=args.max_replays,
                                        on_moved=lambda letter: print(f"{verb} {_letter_id(letter)} ({letter.reason})"))
            for letter in report.held:
                print(f"held {_letter_id(letter)} ({letter.reason}): replayed {letter.replays} times already "
                      f"(--max-replays {args.max_replays}), stays in the dead-letter queue")
            if args.dry_run:
                for letter in report.matched:
                    print(f"{verb} {_letter_id(letter)} ({letter.reason})")
            stuck = f"; {report.failed} could not be moved and stay in the dead-letter queue" if report.failed else ""
            held = f"; {len(report.held)} held (replayed --max-replays times)" if report.held else ""
            print(f"{verb} {len(report.matched) if args.dry_run else report.moved} of {report.scanned} dead letters"
                  + stuck + held)
            return EXIT_PARTIAL if report.failed else EXIT_OK
        if args.action == "purge":
            if not args.yes:
                print("email-service: dlq purge deletes messages for good; add --yes to confirm", file=sys.stderr)
                return EXIT_USAGE
            report = await queue.purge(reason=args.reason, on_removed=lambda letter: print(
                as_json(letter) if args.json else f"removed {_letter_line(letter)}"))
            if args.json:
                print(json.dumps({"removed": report.moved, "total": report.scanned}))
            else:
                print(f"removed {report.moved} of {report.scanned} dead letters")
            return EXIT_OK
    except QueueMissing as exc:
        print(f"email-service: queue {exc} does not exist at {redact_url(settings.amqp_url.value)} "
              "(start email-service once to declare the topology, or check the vhost in AMQP_URL)", file=sys.stderr)
        return EXIT_QUEUE_MISSING
    except (AMQPError, OSError, asyncio.TimeoutError) as exc:
        print(f"email-service: cannot use the broker at {redact_url(settings.amqp_url.value)}: "
              f"{broker_failure(exc, settings.amqp_url.value)}", file=sys.stderr)
        return EXIT_BROKER
    finally:
        if records is not None:
            await records.close()
    return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = read_settings("email-service", Settings.from_env, os.environ)
    if settings is None:
        return EXIT_USAGE
    logs.configure(settings.log_level)
    if args.command in ("run", "preview"):
        try:
            templates = read_templates(settings.locales, settings.templates_dir)
        except TemplateError as exc:
            print(f"email-service: template error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if args.command == "preview":
            return _preview(settings, templates, args)
    if args.command == "status":
        return asyncio.run(status_command.run(settings, args))
    if args.command == "dlq":
        logging.getLogger("aiormq").setLevel(logging.CRITICAL)  # the command reports connection errors itself
        return asyncio.run(_dlq(settings, args))
    if args.command == "run":
        try:
            import uvloop

            return uvloop.run(_run(settings, templates))
        except ImportError:
            return asyncio.run(_run(settings, templates))
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
