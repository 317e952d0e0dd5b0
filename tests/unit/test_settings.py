"""Settings of both services: defaults, validation, secrets kept out of reprs."""

from __future__ import annotations

import pytest

from email_service.config import ConfigError as EmailConfigError
from email_service.config import Settings as EmailSettings
from producer_service.config import ConfigError, Settings, redact_url


def test_producer_defaults():
    s = Settings.from_env({})
    assert (s.http_host, s.http_port, s.amqp_url.value) == ("0.0.0.0", 8000, "amqp://guest:guest@localhost:5672/")
    assert s.amqp_heartbeat == 5 == EmailSettings.from_env({}).amqp_heartbeat


@pytest.mark.parametrize("env,variable", [
    ({"HTTP_PORT": "http"}, "HTTP_PORT"), ({"HTTP_PORT": "70000"}, "HTTP_PORT"),
    ({"AMQP_URL": "redis://x"}, "AMQP_URL"), ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
    ({"PUBLISH_TIMEOUT_SECONDS": "-1"}, "PUBLISH_TIMEOUT_SECONDS"), ({"MAX_BODY_BYTES": "1"}, "MAX_BODY_BYTES"),
    ({"AMQP_HEARTBEAT_SECONDS": "0"}, "AMQP_HEARTBEAT_SECONDS"),
])
def test_producer_bad_values_name_the_variable(env, variable):
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(env)


def test_secrets_stay_out_of_reprs_and_errors():
    s = Settings.from_env({"AMQP_URL": "amqp://app:s3cret@rabbit:5672/prod"})
    assert "s3cret" not in repr(s)
    assert redact_url(s.amqp_url.value) == "amqp://app:***@rabbit:5672/prod"
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({"AMQP_URL": "http://app:s3cret@rabbit/"})
    assert "s3cret" not in str(exc.value)
    e = EmailSettings.from_env({"SMTP_USERNAME": "u", "SMTP_PASSWORD": "hunter2", "DEDUP_URL": "redis://:pw@r:6379/0"})
    assert "hunter2" not in repr(e) and "pw@" not in repr(e)


def test_email_defaults_are_secure():
    s = EmailSettings.from_env({})
    assert (s.smtp_security, s.smtp_port, s.smtp_tls_verify) == ("starttls", 587, True)
    assert s.retry_delays == (1.0, 5.0, 30.0, 120.0, 600.0) and s.max_attempts == 5
    assert EmailSettings.from_env({"SMTP_SECURITY": "tls"}).smtp_port == 465
    assert EmailSettings.from_env({"SMTP_SECURITY": "none"}).smtp_port == 25


@pytest.mark.parametrize("env,variable", [
    ({"SMTP_SECURITY": "ssl"}, "SMTP_SECURITY"), ({"RETRY_DELAYS": "5,1"}, "RETRY_DELAYS"),
    ({"RETRY_DELAYS": "a,b"}, "RETRY_DELAYS"), ({"CONCURRENCY": "0"}, "CONCURRENCY"),
    ({"SMTP_USERNAME": "u"}, "SMTP_PASSWORD"), ({"MAIL_FROM": "nobody"}, "MAIL_FROM"),
    ({"MAIL_FROM": "a@b.c\r\nBcc: x@y"}, "MAIL_FROM"), ({"SMTP_TLS_VERIFY": "maybe"}, "SMTP_TLS_VERIFY"),
    ({"DEDUP_URL": "http://x"}, "DEDUP_URL"), ({"DEDUP_FAIL_MODE": "ajar"}, "DEDUP_FAIL_MODE"),
    ({"METRICS_PORT": "-1"}, "METRICS_PORT"), ({"AMQP_HEARTBEAT_SECONDS": "none"}, "AMQP_HEARTBEAT_SECONDS"),
    ({"METRICS_PORT": "-1"}, "METRICS_PORT"), ({"LOCALES": "en,zh_CN"}, "LOCALES"), ({"LOCALES": "en,en"}, "LOCALES"),
    ({"SMTP_HELO_HOSTNAME": "localhost"}, "SMTP_HELO_HOSTNAME"), ({"SMTP_HELO_HOSTNAME": "mail"}, "SMTP_HELO_HOSTNAME"),
    ({"PRODUCT_URL": "javascript:alert(1)"}, "PRODUCT_URL"), ({"LOGO_URL": 'https://x/"a'}, "LOGO_URL"),
])
def test_email_bad_values_name_the_variable(env, variable):
    with pytest.raises(EmailConfigError, match=variable):
        EmailSettings.from_env(env)


def test_helo_name_is_fully_qualified_and_never_localhost(monkeypatch):
    import email_service.config as config

    monkeypatch.setattr(config.socket, "getfqdn", lambda: "localhost")
    assert EmailSettings.from_env({"MAIL_FROM": "Acme <no-reply@acme.test>"}).smtp_helo_hostname == "acme.test"
    monkeypatch.setattr(config.socket, "getfqdn", lambda: "node-1.eu.acme.test")
    assert EmailSettings.from_env({}).smtp_helo_hostname == "node-1.eu.acme.test"


def test_both_services_read_the_same_locales():
    env = {"LOCALES": "de, en,zh-Hant-TW"}
    assert Settings.from_env(env).locales == EmailSettings.from_env(env).locales == ("de", "en", "zh-Hant-TW")
