"""Settings of the email service, read once from the environment at start-up."""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parseaddr

from .envvars import ConfigError, Env, Secret, redact_url
from .events import parse_locales

__all__ = ["ConfigError", "Secret", "Settings", "parse_delays", "redact_url"]


def parse_delays(name: str, raw: str) -> tuple[float, ...]:
    try:
        delays = tuple(float(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a comma-separated list of seconds such as 1,5,30,120,600, "
                          f"got {raw!r}") from None
    if not delays or any(d < 0.1 or d > 86400 for d in delays) or list(delays) != sorted(delays):
        raise ConfigError(f"{name} must list 1 or more delays between 0.1 and 86400 seconds in growing order, "
                          f"got {raw!r}")
    return delays


def _renamed(e: Env, name: str, old_name: str) -> str:
    """The variable to read: `name`, or its former name `old_name` when only that one is set."""
    if e.raw(name) is None and e.raw(old_name) is not None:
        return old_name
    if e.raw(name) is not None and e.raw(old_name) is not None and e.raw(name) != e.raw(old_name):
        raise ConfigError(f"{name} and its former name {old_name} are both set, to different values: set {name} only")
    return name


def _optional_number(e: Env, name: str, kind: type[int] | type[float], low: float, high: float) -> float | None:
    """An optional bounded number: None when unset. A budget of 0 or less is refused, never read as "off"."""
    if e.raw(name) is None:
        return None
    return e.integer(name, 0, int(low), int(high)) if kind is int else e.number(name, 0.0, low, high)


LOG_LEVELS = ("debug", "info", "warning", "error")
SECURITY_MODES = ("none", "starttls", "tls")
DEDUP_FAIL_MODES = ("closed", "open")
_FQDN = re.compile(r"(?=.{4,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z][A-Za-z0-9-]{0,62}")


@dataclass(frozen=True)
class Settings:
    amqp_url: Secret
    smtp_host: str = "localhost"
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: Secret | None = None
    smtp_security: str = "starttls"
    smtp_tls_verify: bool = True
    smtp_ca_file: str | None = None
    smtp_timeout: float = 30.0
    smtp_pool_size: int = 16
    smtp_pipelining: bool = True  # RFC 2920, where the server advertises it (pipelining.py)
    mail_from: str = "Welcome <no-reply@example.com>"
    product_name: str = "Acme"
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9100
    concurrency: int = 16
    max_attempts: int = 5
    retry_delays: tuple[float, ...] = (1.0, 5.0, 30.0, 120.0, 600.0)
    shutdown_timeout: float = 20.0
    reconnect_max_delay: float = 5.0
    log_level: str = "INFO"
    redis_url: Secret | None = None
    redis_key_prefix: str = "welcome-mail:"
    dedup_enabled: bool = True
    dedup_ttl_seconds: int = 7 * 24 * 3600
    dedup_fail_mode: str = "closed"
    # The delivery record of every event (status.py), in the same Redis.
    delivery_status_ttl_seconds: int = 30 * 24 * 3600
    # Provider limits (throttle.py, budget.py): None = no deployment-wide budget.
    send_rate_limit: float | None = None
    smtp_max_connections: int | None = None
    throttle_delay: float = 2.0
    delivery_deadline: float = 2 * 24 * 3600.0
    # the broker link's liveness (network faults): heartbeat asked of RabbitMQ
    amqp_heartbeat: int = 5
    # The mail itself (issue 17): what the templates link to and show, where they come from, which locales exist.
    product_url: str = "https://example.com/"
    logo_url: str | None = None
    templates_dir: str | None = None
    locales: tuple[str, ...] = ("en", "zh-CN")
    smtp_helo_hostname: str = "mail.example.com"

    @property
    def dedup_url(self) -> Secret | None:
        """The Redis that remembers delivered events, or None when duplicate suppression is off."""
        return self.redis_url if self.dedup_enabled else None

    @property
    def record_ttl_seconds(self) -> int:
        """How long a delivery record lives: it is also the dedup record, so never shorter than the dedup window."""
        if self.dedup_enabled:
            return max(self.delivery_status_ttl_seconds, self.dedup_ttl_seconds)
        return self.delivery_status_ttl_seconds

    @property
    def has_send_budget(self) -> bool:
        return self.send_rate_limit is not None or self.smtp_max_connections is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        e = Env(env)
        security = e.choice("SMTP_SECURITY", "starttls", SECURITY_MODES)
        default_port = {"none": 25, "starttls": 587, "tls": 465}[security]
        username = e.raw("SMTP_USERNAME")
        password = e.raw("SMTP_PASSWORD")
        if (username is None) != (password is None):
            raise ConfigError("SMTP_USERNAME and SMTP_PASSWORD must be set together (or neither)")
        mail_from = e.text("MAIL_FROM", "Welcome <no-reply@example.com>")
        _, address = parseaddr(mail_from)
        if "@" not in address or any(ch in mail_from for ch in "\r\n\0") or not mail_from.isascii():
            raise ConfigError("MAIL_FROM must be an ASCII address such as 'Acme <no-reply@acme.test>', "
                              f"got {mail_from!r}")
        concurrency = e.integer("CONCURRENCY", 16, 1, 1000)
        retry_delays = parse_delays("RETRY_DELAYS", e.text("RETRY_DELAYS", "1,5,30,120,600"))
        redis_url = e.optional_url(_renamed(e, "REDIS_URL", "DEDUP_URL"), ("redis", "rediss"), "redis://host:6379/0")
        send_rate_limit = _optional_number(e, "SEND_RATE_LIMIT", float, 0.01, 100_000.0)
        max_connections = _optional_number(e, "SMTP_MAX_CONNECTIONS", int, 1, 10_000)
        smtp_max_connections = None if max_connections is None else int(max_connections)
        for name, value in (("SEND_RATE_LIMIT", send_rate_limit), ("SMTP_MAX_CONNECTIONS", smtp_max_connections)):
            if value is not None and redis_url is None:
                raise ConfigError(f"{name} is a budget for the whole deployment and needs REDIS_URL (the Redis that "
                                  "all replicas share)")
        deadline = e.number("DELIVERY_DEADLINE_SECONDS", 2 * 24 * 3600.0, 1, 30 * 24 * 3600)
        if deadline < max(retry_delays):
            raise ConfigError(f"DELIVERY_DEADLINE_SECONDS ({deadline:g}) must not be shorter than the longest "
                              f"retry tier in RETRY_DELAYS ({max(retry_delays):g})")
        return cls(
            amqp_url=e.url("AMQP_URL", "amqp://guest:guest@localhost:5672/", ("amqp", "amqps"),
                           "amqp://user:password@host:5672/vhost"),
            smtp_host=e.text("SMTP_HOST", "localhost"),
            smtp_port=e.integer("SMTP_PORT", default_port, 1, 65535),
            smtp_username=username,
            smtp_password=Secret(password) if password is not None else None,
            smtp_security=security,
            smtp_tls_verify=e.boolean("SMTP_TLS_VERIFY", True),
            smtp_ca_file=e.raw("SMTP_CA_FILE"),
            smtp_timeout=e.number("SMTP_TIMEOUT_SECONDS", 30.0, 0.1, 600),
            # One connection per message in flight: with fewer, the extra prefetched messages only wait.
            smtp_pool_size=e.integer("SMTP_POOL_SIZE", min(concurrency, 256), 1, 256),
            smtp_pipelining=e.boolean("SMTP_PIPELINING", True),
            mail_from=mail_from,
            product_name=e.text("PRODUCT_NAME", "Acme"),
            metrics_host=e.text("METRICS_HOST", "0.0.0.0"),
            metrics_port=e.integer("METRICS_PORT", 9100, 1, 65535),
            concurrency=concurrency,
            max_attempts=e.integer("MAX_ATTEMPTS", 5, 1, 100),
            retry_delays=retry_delays,
            shutdown_timeout=e.number("SHUTDOWN_TIMEOUT_SECONDS", 20.0, 0, 3600),
            reconnect_max_delay=e.number("RECONNECT_MAX_DELAY_SECONDS", 5.0, 0.1, 300),
            log_level=e.choice("LOG_LEVEL", "info", LOG_LEVELS).upper(),
            redis_url=redis_url,
            redis_key_prefix=e.text(_renamed(e, "REDIS_KEY_PREFIX", "DEDUP_KEY_PREFIX"), "welcome-mail:"),
            dedup_enabled=e.boolean("DEDUP_ENABLED", True),
            dedup_ttl_seconds=e.integer("DEDUP_TTL_SECONDS", 7 * 24 * 3600, 60, 365 * 24 * 3600),
            dedup_fail_mode=e.choice("DEDUP_FAIL_MODE", "closed", DEDUP_FAIL_MODES),
            delivery_status_ttl_seconds=e.integer("DELIVERY_STATUS_TTL_SECONDS", 30 * 24 * 3600, 1, 366 * 24 * 3600),
            send_rate_limit=send_rate_limit,
            smtp_max_connections=smtp_max_connections,
            throttle_delay=e.number("THROTTLE_DELAY_SECONDS", 2.0, 0.1, 300),
            delivery_deadline=deadline,
            # the broker link's liveness (network faults)
            amqp_heartbeat=e.integer("AMQP_HEARTBEAT_SECONDS", 5, 1, 300),
            **_mail_settings(e, address),
        )


def _web_url(name: str, value: str | None) -> str | None:
    if value is not None and not (value.startswith(("https://", "http://")) and value.isascii()
                                  and not any(ch.isspace() or ch in '"<>' for ch in value)):
        raise ConfigError(f"{name} must be an http(s) URL such as https://acme.test/start, got {value!r}")
    return value


def default_helo_hostname(sender_address: str) -> str:
    """This host's name when it is fully qualified, else the MAIL_FROM domain: never `localhost`."""
    fqdn = socket.getfqdn()
    if "." in fqdn and not fqdn.startswith("localhost") and not fqdn.endswith((".localdomain", ".local")):
        return fqdn
    return sender_address.rpartition("@")[2]


def _mail_settings(e: Env, sender_address: str) -> dict:
    helo = e.text("SMTP_HELO_HOSTNAME", default_helo_hostname(sender_address))
    if not _FQDN.fullmatch(helo) or helo.lower().startswith("localhost"):
        raise ConfigError(f"SMTP_HELO_HOSTNAME must be a fully qualified host name such as mail.acme.test, "
                          f"got {helo!r}")
    return {
        "product_url": _web_url("PRODUCT_URL", e.text("PRODUCT_URL", "https://example.com/")),
        "logo_url": _web_url("LOGO_URL", e.raw("LOGO_URL")),
        "templates_dir": e.raw("TEMPLATES_DIR"),
        "locales": parse_locales("LOCALES", e.text("LOCALES", "en,zh-CN")),
        "smtp_helo_hostname": helo,
    }
