"""Settings of the producer service, read once from the environment at start-up."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit


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
    """The URL with its password replaced, for log lines."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return parts._replace(netloc=netloc).geturl()


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, default).strip()
    if not value:
        raise ConfigError(f"{name} must not be empty")
    return value


def _number(env: Mapping[str, str], name: str, default: float, kind: type, low: float, high: float):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return kind(default)
    try:
        value = kind(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {raw!r}")
    return value


def amqp_url(env: Mapping[str, str], name: str = "AMQP_URL") -> Secret:
    url = _text(env, name, "amqp://guest:guest@localhost:5672/")
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        raise ConfigError(f"{name} must look like amqp://user:password@host:5672/vhost (or amqps://), got {redact_url(url)!r}")
    return Secret(url)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def log_level(env: Mapping[str, str]) -> str:
    level = env.get("LOG_LEVEL", "INFO").strip().upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    return level


@dataclass(frozen=True)
class Settings:
    amqp_url: Secret
    http_host: str = "0.0.0.0"
    http_port: int = 8000
    log_level: str = "INFO"
    publish_timeout: float = 5.0
    max_body_bytes: int = 16384
    retry_after_seconds: int = 2
    reconnect_max_delay: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        return cls(
            amqp_url=amqp_url(env),
            http_host=_text(env, "HTTP_HOST", "0.0.0.0"),
            http_port=_number(env, "HTTP_PORT", 8000, int, 1, 65535),
            log_level=log_level(env),
            publish_timeout=_number(env, "PUBLISH_TIMEOUT_SECONDS", 5.0, float, 0.05, 120),
            max_body_bytes=_number(env, "MAX_BODY_BYTES", 16384, int, 256, 1_048_576),
            retry_after_seconds=_number(env, "RETRY_AFTER_SECONDS", 2, int, 1, 3600),
            reconnect_max_delay=_number(env, "RECONNECT_MAX_DELAY_SECONDS", 5.0, float, 0.1, 300),
        )

    @property
    def log_level_number(self) -> int:
        return logging.getLevelName(self.log_level)
