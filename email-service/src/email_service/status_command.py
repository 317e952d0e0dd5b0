"""`email-service status`: the delivery records of some events, or counts by status over a window.

    email-service status EVENT_ID... [--json]       one line (or JSON object) per event
    email-service status --summary [--window 24h]   records updated within the window, by status

Exit codes: 0 every record found, 1 some not found, 2 bad arguments or no REDIS_URL, 3 Redis unreachable.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time

from redis.exceptions import RedisError

from .config import Settings
from .envvars import redact_url
from .status import EVENT_ID, DeliveryRecords, DeliveryStatus

EXIT_OK, EXIT_NOT_FOUND, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
_WINDOW = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def window_seconds(text: str) -> int:
    """`90s`, `15m`, `24h`, `7d` as seconds (argparse type)."""
    match = _WINDOW.fullmatch(text)
    if match is None or int(match[1]) < 1:
        raise argparse.ArgumentTypeError(f"must be a duration such as 15m, 24h or 7d, got {text!r}")
    return int(match[1]) * _UNIT_SECONDS[match[2]]


def add_parser(sub: argparse._SubParsersAction) -> None:
    status = sub.add_parser("status", help="show the delivery records of events (Redis, REDIS_URL)")
    status.add_argument("event_ids", nargs="*", metavar="EVENT_ID", help="event ids as POST /v1/signups returned")
    status.add_argument("--json", action="store_true", help="one JSON object per line")
    status.add_argument("--summary", action="store_true", help="counts by status of the records updated within "
                        "--window (a scan of every record: for an operator, not a monitor)")
    status.add_argument("--window", type=window_seconds, default=24 * 3600, help="for --summary: 15m, 24h, 7d "
                        "(default 24h)")


def _line(event_id: str, record: dict[str, object] | None) -> str:
    if record is None:
        return f"{event_id}  not found"
    return f"{event_id}  " + "  ".join(f"{name}={value}" for name, value in record.items())


async def run(settings: Settings, args: argparse.Namespace) -> int:
    if settings.redis_url is None:
        print("email-service: status needs REDIS_URL (the Redis the delivery records are in)", file=sys.stderr)
        return EXIT_USAGE
    if args.summary == bool(args.event_ids):
        print("email-service: give event ids or --summary (not both)", file=sys.stderr)
        return EXIT_USAGE
    malformed = [i for i in args.event_ids if not EVENT_ID.fullmatch(i)]
    if malformed:
        print(f"email-service: not an event id (a lowercase UUID): {malformed[0][:80]!r}", file=sys.stderr)
        return EXIT_USAGE
    records = DeliveryRecords.from_settings(settings)
    try:
        if args.summary:
            return await _summary(records, args)
        found = await records.read(args.event_ids)
    except (RedisError, OSError) as exc:
        print(f"email-service: cannot reach Redis at {redact_url(settings.redis_url.value)}: "
              f"{exc.__class__.__name__}: {str(exc)[:200]}", file=sys.stderr)
        return EXIT_UNREACHABLE
    finally:
        await records.close()
    for event_id, record in found.items():
        if args.json:
            print(json.dumps({"event_id": event_id, "found": record is not None, **(record or {})},
                             ensure_ascii=False))
        else:
            print(_line(event_id, record))
    return EXIT_OK if all(record is not None for record in found.values()) else EXIT_NOT_FOUND


async def _summary(records: DeliveryRecords, args: argparse.Namespace) -> int:
    counts, scanned = await records.summary(time.time() - args.window)
    by_status = {status.value: counts.get(status.value, 0) for status in DeliveryStatus}
    if args.json:
        print(json.dumps({"window_seconds": args.window, "records": scanned, "by_status": by_status}))
    else:
        print(f"{sum(by_status.values())} of {scanned} records updated in the last {args.window}s; by status: "
              + ", ".join(f"{k}={v}" for k, v in by_status.items()))
    return EXIT_OK
