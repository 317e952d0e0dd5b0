"""Settings of the producer service, read once from the environment at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .envvars import ConfigError, Env, Secret, redact_url
from .events import LOCALES, parse_locales

__all__ = ["ConfigError", "Secret", "Settings", "redact_url"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
MIN_SECRET_LENGTH = 16


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
    # the broker link's liveness (network faults): heartbeat asked of RabbitMQ
    amqp_heartbeat: int = 5
    locales: tuple[str, ...] = ("en", "zh-CN")
    # Delivery status (status.py): the Redis the email service writes the records to, and who may read them.
    redis_url: Secret | None = None
    redis_key_prefix: str = "welcome-mail:"
    delivery_status_ttl_seconds: int = 30 * 24 * 3600
    status_api_token: Secret | None = None
    idempotency_secret: Secret | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """A variable set but blank is an error for the text values (AMQP_URL, HTTP_HOST, LOG_LEVEL); a blank
        number takes its default."""
        e = Env(env)
        token, secret = e.raw("STATUS_API_TOKEN"), e.raw("IDEMPOTENCY_SECRET")
        for name, value in (("STATUS_API_TOKEN", token), ("IDEMPOTENCY_SECRET", secret)):
            if value is not None and (len(value) < MIN_SECRET_LENGTH or not value.isascii() or not value.isprintable()
                                      or " " in value):
                raise ConfigError(f"{name} must be at least {MIN_SECRET_LENGTH} printable ASCII characters without "
                                  "spaces (e.g. openssl rand -hex 32)")
        if token is not None and secret is None:
            raise ConfigError("STATUS_API_TOKEN turns the status lookup on, which needs IDEMPOTENCY_SECRET: without "
                              "it, event ids derived from an Idempotency-Key are guessable")
        return cls(
            amqp_url=e.url("AMQP_URL", "amqp://guest:guest@localhost:5672/", ("amqp", "amqps"),
                           "amqp://user:password@host:5672/vhost (or amqps://)", blank_is_error=True),
            http_host=e.text("HTTP_HOST", "0.0.0.0", blank_is_error=True),
            http_port=e.integer("HTTP_PORT", 8000, 1, 65535),
            log_level=e.choice("LOG_LEVEL", "INFO", LOG_LEVELS, blank_is_error=True),
            publish_timeout=e.number("PUBLISH_TIMEOUT_SECONDS", 5.0, 0.05, 120),
            max_body_bytes=e.integer("MAX_BODY_BYTES", 16384, 256, 1_048_576),
            retry_after_seconds=e.integer("RETRY_AFTER_SECONDS", 2, 1, 3600),
            reconnect_max_delay=e.number("RECONNECT_MAX_DELAY_SECONDS", 5.0, 0.1, 300),
            # the broker link's liveness (network faults)
            amqp_heartbeat=e.integer("AMQP_HEARTBEAT_SECONDS", 5, 1, 300),
            locales=parse_locales("LOCALES", e.text("LOCALES", ",".join(LOCALES))),
            redis_url=e.optional_url("REDIS_URL", ("redis", "rediss"), "redis://host:6379/0"),
            redis_key_prefix=e.text("REDIS_KEY_PREFIX", "welcome-mail:", blank_is_error=True),
            delivery_status_ttl_seconds=e.integer("DELIVERY_STATUS_TTL_SECONDS", 30 * 24 * 3600, 1, 366 * 24 * 3600),
            status_api_token=Secret(token) if token is not None else None,
            idempotency_secret=Secret(secret) if secret is not None else None,
        )
