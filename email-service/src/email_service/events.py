"""This service's copy of the user.signed_up contract (owned by producer-service; tests/contract keeps the two
in step). Parsing is hand-written, not a schema engine: it runs for every message."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime

from .envvars import ConfigError
from .errors import PermanentError
from .wire import DeadLetterReason

EVENT_TYPE = "user.signed_up"
SUPPORTED_SCHEMA_VERSIONS = (1,)
# A BCP 47 language tag: language, optional script, region and variants (no extensions or private use).
LOCALE_TAG = re.compile(r"[a-z]{2,3}(?:-[A-Z][a-z]{3})?(?:-(?:[A-Z]{2}|[0-9]{3}))?"
                        r"(?:-(?:[a-z0-9]{5,8}|[0-9][a-z0-9]{3}))*")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_EMAIL = re.compile(r"[\x21-\x7e]+@[\x21-\x7e]+")
_FORBIDDEN_IN_NAME = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
_TOP_FIELDS = frozenset({"schema_version", "event_type", "event_id", "occurred_at", "user"})
_USER_FIELDS = frozenset({"email", "name", "locale"})


@dataclass(frozen=True, slots=True)
class UserSignedUp:
    event_id: str
    occurred_at: datetime
    email: str
    name: str
    locale: str


def _invalid(message: str) -> PermanentError:
    return PermanentError(DeadLetterReason.INVALID_EVENT, message)


def event_id_of(body: bytes) -> str | None:
    """The `event_id` of a body that is a JSON object with a string event_id, whether or not the rest is a valid
    event: for logs and `dlq list` about messages that could not be delivered. Not for the delivery path."""
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    event_id = payload.get("event_id") if isinstance(payload, dict) else None
    return event_id[:64] if isinstance(event_id, str) and event_id.isprintable() else None


def parse_event(body: bytes) -> UserSignedUp:
    """Decode and validate one message body; raise PermanentError with the dead-letter reason otherwise."""
    try:
        payload = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise PermanentError(DeadLetterReason.UNDECODABLE, f"body is not UTF-8 (byte {exc.start})") from None
    except ValueError as exc:
        raise PermanentError(DeadLetterReason.UNDECODABLE, f"body is not JSON: {exc}") from None
    except RecursionError:
        raise PermanentError(DeadLetterReason.UNDECODABLE, "body is JSON nested too deeply to decode") from None
    if not isinstance(payload, dict):
        raise _invalid("body must be a JSON object")
    version = payload.get("schema_version")
    if "event_type" not in payload or "schema_version" not in payload:
        raise _invalid("event_type and schema_version are required")
    if payload.get("event_type") != EVENT_TYPE:
        raise PermanentError(DeadLetterReason.UNSUPPORTED_SCHEMA, f"event_type must be {EVENT_TYPE!r}")
    if type(version) is not int or version not in SUPPORTED_SCHEMA_VERSIONS:
        raise PermanentError(DeadLetterReason.UNSUPPORTED_SCHEMA,
                             f"schema_version {str(version)[:20]!r} is not supported "
                             f"(known: {SUPPORTED_SCHEMA_VERSIONS})")
    extra = set(payload) - _TOP_FIELDS
    if extra:
        raise _invalid(f"unknown fields: {', '.join(sorted(map(str, extra)))[:200]}")
    event_id = payload.get("event_id")
    if not isinstance(event_id, str) or not _UUID.fullmatch(event_id):
        raise _invalid("event_id must be a lowercase UUID string")
    occurred_raw = payload.get("occurred_at")
    try:
        if not isinstance(occurred_raw, str):
            raise ValueError
        occurred_at = datetime.fromisoformat(occurred_raw)
        if occurred_at.tzinfo is None:
            raise ValueError
    except ValueError:
        raise _invalid("occurred_at must be an RFC 3339 timestamp with a time zone") from None
    user = payload.get("user")
    if not isinstance(user, dict):
        raise _invalid("user must be an object")
    if set(user) != _USER_FIELDS:
        raise _invalid(f"user must have exactly the fields {', '.join(sorted(_USER_FIELDS))}")
    email, name, locale = user["email"], user["name"], user["locale"]
    if not isinstance(email, str) or len(email) > 254 or not _EMAIL.fullmatch(email):
        raise _invalid("user.email must be an ASCII address")
    if not isinstance(name, str) or not 1 <= len(name) <= 100 or _FORBIDDEN_IN_NAME.search(name):
        raise _invalid("user.name must be 1-100 characters without control characters")
    if not isinstance(locale, str) or len(locale) > 35 or not LOCALE_TAG.fullmatch(locale):
        raise _invalid("user.locale must be a BCP 47 language tag such as en or zh-CN")
    return UserSignedUp(event_id=event_id, occurred_at=occurred_at, email=email, name=name, locale=locale)


def parse_locales(name: str, raw: str) -> tuple[str, ...]:
    """A comma-separated list of BCP 47 tags, the default locale first; ConfigError naming `name` otherwise."""
    locales = tuple(part.strip() for part in raw.split(",") if part.strip())
    bad = [tag for tag in locales if not LOCALE_TAG.fullmatch(tag)]
    if not locales or bad or len(set(locales)) != len(locales):
        raise ConfigError(f"{name} must be a comma-separated list of distinct BCP 47 tags, the default first, "
                          f"such as en,zh-CN; got {raw!r}")
    return locales
