"""The signup request, its validation, and the `user.signed_up` event it becomes.

The event contract is owned here: `contract/user_signed_up.v1.schema.json` describes the body that
`UserSignedUp.to_json` writes, and the email service keeps a copy that a contract test compares.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

from .ids import random_uuid4

EVENT_TYPE = "user.signed_up"
SCHEMA_VERSION = 1
LOCALES = ("en", "zh-CN")  # the default of LOCALES: which locales the signup accepts, the first one the default
# A BCP 47 language tag: language, optional script, region and variants (no extensions or private use).
LOCALE_TAG = re.compile(r"[a-z]{2,3}(?:-[A-Z][a-z]{3})?(?:-(?:[A-Z]{2}|[0-9]{3}))?"
                        r"(?:-(?:[a-z0-9]{5,8}|[0-9][a-z0-9]{3}))*")
MAX_NAME_LENGTH = 100
MAX_EMAIL_LENGTH = 254
ALLOWED_FIELDS = frozenset({"email", "name", "locale"})

# The plain addresses nearly every signup has (dot-atom local part, LDH domain labels, an alphabetic TLD) are
# checked with this expression; anything else goes through email_validator's full check. tests/unit holds the
# property test that whatever the fast path accepts, email_validator accepts with the same result.
_PLAIN_EMAIL = re.compile(
    r"(?P<local>[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*)@"
    r"(?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63})")
_SPECIAL_USE = frozenset(SPECIAL_USE_DOMAIN_NAMES)

# Idempotency keys map to event ids, so the same key always yields the same event: keyed with IDEMPOTENCY_SECRET
# (HMAC-SHA256, so nobody who knows or guesses a key can compute its event id), or, without the secret, in this
# public namespace (what every version before the secret did: `legacy_event_id_for`).
IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1c3c55-8f5e-4c53-9a0e-0d1c3b7f2a41")


_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@dataclass(frozen=True)
class FieldError:
    field: str
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "code": self.code, "message": self.message}


class InvalidSignup(ValueError):
    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


@dataclass(frozen=True)
class Signup:
    email: str
    name: str
    locale: str


# Unicode categories Cc (U+0000-001F, U+007F-009F, U+0085 among them), Cs (surrogates), Zl (U+2028), Zp (U+2029),
# and U+FEFF: one regular expression instead of a category lookup per character (tests/unit checks the equivalence).
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\ufeff]")


def _forbidden_character(text: str) -> str | None:
    """The first control or line-breaking character in text, which must never reach a mail header."""
    found = _FORBIDDEN.search(text)
    return found.group() if found else None


def _check_email(value: object, errors: list[FieldError]) -> str | None:
    if not isinstance(value, str):
        errors.append(FieldError("email", "type", "must be a string"))
        return None
    if len(value) > MAX_EMAIL_LENGTH:
        errors.append(FieldError("email", "too_long", f"must be at most {MAX_EMAIL_LENGTH} characters"))
        return None
    if _forbidden_character(value) is not None:
        errors.append(FieldError("email", "control_character", "must not contain control characters"))
        return None
    plain = _PLAIN_EMAIL.fullmatch(value)
    if plain is not None and len(plain["local"]) <= 64 and len(plain["domain"]) <= 253 and "--" not in value:
        domain = plain["domain"].lower()
        suffix = domain.rsplit(".", 1)[-1]
        if suffix not in _SPECIAL_USE and not any(domain.endswith("." + name) for name in _SPECIAL_USE):
            return f"{plain['local']}@{domain}"
    try:
        # ASCII only (allow_smtputf8=False): every SMTP server can deliver it. No DNS lookups on the request path.
        result = validate_email(value, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        errors.append(FieldError("email", "invalid_email", str(exc)))
        return None
    return result.ascii_email


def _check_name(value: object, errors: list[FieldError]) -> str | None:
    if not isinstance(value, str):
        errors.append(FieldError("name", "type", "must be a string"))
        return None
    name = value.strip()
    if not name:
        errors.append(FieldError("name", "empty", "must not be empty"))
        return None
    if len(name) > MAX_NAME_LENGTH:
        errors.append(FieldError("name", "too_long", f"must be at most {MAX_NAME_LENGTH} characters"))
        return None
    bad = _forbidden_character(name)
    if bad is not None:
        errors.append(FieldError("name", "control_character",
                                 f"must not contain control characters (found U+{ord(bad):04X})"))
        return None
    return unicodedata.normalize("NFC", name)


def parse_signup(payload: object, locales: tuple[str, ...] = LOCALES) -> Signup:
    """Validate a decoded JSON body; raise InvalidSignup naming every bad field."""
    if not isinstance(payload, dict):
        raise InvalidSignup([FieldError("body", "type", "must be a JSON object")])
    errors: list[FieldError] = []
    for unknown in sorted(set(payload) - ALLOWED_FIELDS):
        errors.append(FieldError(unknown, "unknown_field", "is not a known field (allowed: email, name, locale)"))
    email = name = None
    if "email" not in payload:
        errors.append(FieldError("email", "missing", "is required"))
    else:
        email = _check_email(payload["email"], errors)
    if "name" not in payload:
        errors.append(FieldError("name", "missing", "is required"))
    else:
        name = _check_name(payload["name"], errors)
    locale = payload.get("locale", locales[0])
    if locale not in locales:
        errors.append(FieldError("locale", "unknown_locale", f"must be one of {', '.join(locales)}"))
    if errors:
        raise InvalidSignup(errors)
    return Signup(email=email, name=name, locale=locale)  # type: ignore[arg-type]


def parse_locales(name: str, raw: str) -> tuple[str, ...]:
    """A comma-separated list of BCP 47 tags, the default locale first; ConfigError naming `name` otherwise."""
    from .envvars import ConfigError

    locales = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not locales or any(not LOCALE_TAG.fullmatch(tag) for tag in locales) or len(set(locales)) != len(locales):
        raise ConfigError(f"{name} must be a comma-separated list of distinct BCP 47 tags, the default first, "
                          f"such as en,zh-CN; got {raw!r}")
    return locales


class DuplicateKey(ValueError):
    """A JSON object names the same key twice (the last one would silently win)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate key {key[:100]!r}")
        self.key = key


def refuse_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    """`object_pairs_hook` for json.loads: the object, or DuplicateKey naming the repeated key."""
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return result


def legacy_event_id_for(idempotency_key: str) -> str:
    """The event id of a key without a secret (UUID v5 in a public namespace): anyone can compute it."""
    return str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, idempotency_key))


def event_id_for(idempotency_key: str | None, secret: bytes | None = None) -> str:
    """A random id without a key; with one, the HMAC-SHA256 of the key under the secret as a UUID (version 8,
    RFC 9562: custom), or the legacy id when no secret is configured."""
    if idempotency_key is None:
        return random_uuid4()
    if secret is None:
        return legacy_event_id_for(idempotency_key)
    digest = int.from_bytes(hmac.new(secret, idempotency_key.encode("ascii"), hashlib.sha256).digest()[:16], "big")
    digest = (digest & ~(0xF << 76) | 0x8 << 76) & ~(0x3 << 62) | 0x2 << 62  # version 8, variant RFC 9562
    return str(uuid.UUID(int=digest))


@dataclass(frozen=True)
class UserSignedUp:
    event_id: str
    occurred_at: datetime
    signup: Signup
    # With a secret, the id the same Idempotency-Key had before (the email service's dedup still honours it).
    legacy_event_id: str | None = None

    @classmethod
    def new(cls, signup: Signup, idempotency_key: str | None = None, secret: bytes | None = None) -> UserSignedUp:
        legacy = legacy_event_id_for(idempotency_key) if idempotency_key is not None and secret is not None else None
        return cls(event_id=event_id_for(idempotency_key, secret), occurred_at=datetime.now(timezone.utc),
                   signup=signup, legacy_event_id=legacy)

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "event_type": EVENT_TYPE,
            "event_id": self.event_id,
            "occurred_at": self.occurred_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "user": {"email": self.signup.email, "name": self.signup.name, "locale": self.signup.locale},
        }

    def to_json(self) -> bytes:
        return _ENCODE(self.to_dict()).encode("utf-8")
