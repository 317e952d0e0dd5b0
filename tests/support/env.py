"""The services' settings for tests, written out once: every suite, the benchmarks included, starts from these.

`email_env()` and `producer_env()` return plain environment mappings (what a process gets); `email_settings()` and
`producer_settings()` parse them with the services' own `Settings.from_env`, so a test never builds a settings
object by hand and a renamed variable breaks here, in one place.

Overrides are given as the variables' own names: `email_env(url, smtp.port, CONCURRENCY="16")`.
"""

from __future__ import annotations

from email_service.config import Settings as EmailSettings
from producer_service.config import Settings as ProducerSettings

from .ports import free_port

MAIL_FROM = "Acme <welcome@acme.test>"

# Fast retries and short timeouts: a test's transient failure is retried within a second, not minutes.
_EMAIL_DEFAULTS = {
    "SMTP_HOST": "127.0.0.1",
    "SMTP_SECURITY": "none",
    "MAIL_FROM": MAIL_FROM,
    "METRICS_HOST": "127.0.0.1",
    "RETRY_DELAYS": "0.2,0.4,0.8",
    "MAX_ATTEMPTS": "4",
    "THROTTLE_DELAY_SECONDS": "0.2",
    "SHUTDOWN_TIMEOUT_SECONDS": "10",
    "RECONNECT_MAX_DELAY_SECONDS": "0.5",
}

_PRODUCER_DEFAULTS = {
    "HTTP_HOST": "127.0.0.1",
    "RETRY_AFTER_SECONDS": "1",
    "RECONNECT_MAX_DELAY_SECONDS": "0.5",
}


def _stringify(overrides: dict[str, object]) -> dict[str, str]:
    return {name: str(value) for name, value in overrides.items()}


def email_env(amqp_url: str, smtp_port: int, *, metrics_port: int | None = None, **overrides: object) -> dict[str, str]:
    """Environment of one email-service against `amqp_url` and an SMTP server on 127.0.0.1:`smtp_port`."""
    return {
        **_EMAIL_DEFAULTS,
        "AMQP_URL": amqp_url,
        "SMTP_PORT": str(smtp_port),
        "METRICS_PORT": str(metrics_port if metrics_port is not None else free_port()),
        **_stringify(overrides),
    }


def producer_env(amqp_url: str, *, http_port: int | None = None, **overrides: object) -> dict[str, str]:
    """Environment of one producer-service against `amqp_url`, serving on 127.0.0.1:`http_port`."""
    return {
        **_PRODUCER_DEFAULTS,
        "AMQP_URL": amqp_url,
        "HTTP_PORT": str(http_port if http_port is not None else free_port()),
        **_stringify(overrides),
    }


def email_settings(amqp_url: str, smtp_port: int, **overrides: object) -> EmailSettings:
    return EmailSettings.from_env(email_env(amqp_url, smtp_port, **overrides))


def producer_settings(amqp_url: str, **overrides: object) -> ProducerSettings:
    return ProducerSettings.from_env(producer_env(amqp_url, **overrides))
