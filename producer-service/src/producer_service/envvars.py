# Twin copies: producer-service/src/producer_service/envvars.py and email-service/src/email_service/envvars.py
# are byte-identical, so that each service builds alone; tests/contract/test_shared_copies.py fails when they differ.
"""Reading settings from environment variables: typed values whose errors name the variable, and secrets that
never show up in logs, reprs or error messages."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import unquote, urlsplit

N = TypeVar("N", int, float)
S = TypeVar("S")


class ConfigError(ValueError):
    """A variable is missing or malformed; the message names it and what was expected."""


@dataclass(frozen=True)
class Secret:
    """A value that must never show up in logs or reprs."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


def redact_url(url: str) -> str:
    """The URL with its password replaced, for log lines and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return parts._replace(netloc=netloc).geturl()


def broker_failure(exc: BaseException, url: str) -> str:
    """A failed broker connection in one line, naming what in AMQP_URL the broker refused where it said so, never
    the password. RabbitMQ answers Connection.Open for a vhost that does not exist (or that the user may not use)
    by closing the connection; aiormq reports that as an InvalidFrameError whose text is only an object's repr."""
    text = str(exc)
    if "Connection.OpenOk" in text and "Connection.Close" in text:
        parts = urlsplit(url)
        vhost = unquote(parts.path[1:]) or "/"
        return (f"the broker refused vhost {vhost!r} of AMQP_URL: it does not exist, or user "
                f"{unquote(parts.username or 'guest')!r} has no permissions on it")
    return f"{exc.__class__.__name__}: {text[:200]}"


class Env:
    """Typed access to environment variables. Values are stripped; a blank value counts as unset (the default
    applies) unless the reader is given `blank_is_error`. Every error names the variable and what it expected."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def text(self, name: str, default: str, *, blank_is_error: bool = False) -> str:
        value = self.raw(name)
        if value is None and blank_is_error and name in self.env:
            raise ConfigError(f"{name} must not be empty")
        return default if value is None else value

    def choice(self, name: str, default: str, choices: tuple[str, ...], *, blank_is_error: bool = False) -> str:
        """One of `choices`, compared without regard to case and returned as spelled there."""
        value = self.text(name, default, blank_is_error=blank_is_error)
        for known in choices:
            if known.lower() == value.lower():
                return known
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false, got {value!r}")

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        return self._bounded(name, default, int, "an integer", low, high)

    def number(self, name: str, default: float, low: float, high: float) -> float:
        return self._bounded(name, default, float, "a number", low, high)

    def _bounded(self, name: str, default: N, kind: Callable[[str], N], what: str, low: N, high: N) -> N:
        value = self.raw(name)
        if value is None:
            return default
        try:
            result = kind(value)
        except ValueError:
            raise ConfigError(f"{name} must be {what}, got {value!r}") from None
        if not low <= result <= high:
            raise ConfigError(f"{name} must be between {low} and {high}, got {value!r}")
        return result

    def url(self, name: str, default: str, schemes: tuple[str, ...], example: str, *,
            blank_is_error: bool = False) -> Secret:
        return _checked_url(name, self.text(name, default, blank_is_error=blank_is_error), schemes, example)

    def optional_url(self, name: str, schemes: tuple[str, ...], example: str) -> Secret | None:
        value = self.raw(name)
        return None if value is None else _checked_url(name, value, schemes, example)


def _checked_url(name: str, value: str, schemes: tuple[str, ...], example: str) -> Secret:
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        raise ConfigError(f"{name} must look like {example}, got {redact_url(value)!r}")
    return Secret(value)


def read_settings(program: str, parse: Callable[[Mapping[str, str]], S], environ: Mapping[str, str]) -> S | None:
    """`parse(environ)`; on a ConfigError None, after telling stderr what is wrong (the caller then exits 2)."""
    try:
        return parse(environ)
    except ConfigError as exc:
        print(f"{program}: configuration error: {exc}", file=sys.stderr)
        return None
