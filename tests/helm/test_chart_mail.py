"""The mail's chart values: operator templates mounted read-only as TEMPLATES_DIR (from the chart's ConfigMap or
an existing one), one `locales` value read by both services, the EHLO name and the product link."""

from __future__ import annotations

import pytest
from welcome_chart import RELEASE, container, find, one, render

TEMPLATE_FILES = {"welcome.en.subject": "Hi from {{product}}\n", "welcome.en.txt": "Hi {{name}}\n",
                  "welcome.en.html": "<p>Hi {{name}}</p>\n"}


def _email(objects: list[dict]) -> tuple[dict, dict]:
    deployment = one(objects, "Deployment", f"{RELEASE}-email")
    return deployment, one(objects, "ConfigMap", f"{RELEASE}-email")["data"]


@pytest.mark.parametrize("templates,configmap", [
    ({"files": TEMPLATE_FILES}, f"{RELEASE}-email-templates"),
    ({"existingConfigMap": "acme-mail-templates"}, "acme-mail-templates"),
])
def test_templates_are_mounted_read_only_as_templates_dir(templates, configmap):
    objects = render({"secrets": {"amqpUrl": "amqp://u:p@rabbit:5672/"}, "email": {"templates": templates}})
    deployment, env = _email(objects)
    mount = next(m for m in container(deployment)["volumeMounts"] if m["name"] == "templates")
    assert mount["readOnly"] is True and env["TEMPLATES_DIR"] == mount["mountPath"]
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "templates")
    assert volume["configMap"]["name"] == configmap
    made = [c for c in find(objects, "ConfigMap") if c["metadata"]["name"] == f"{RELEASE}-email-templates"]
    assert [c["data"] for c in made] == ([TEMPLATE_FILES] if "files" in templates else [])


def test_without_templates_nothing_is_mounted():
    deployment, env = _email(render({"secrets": {"amqpUrl": "amqp://u:p@rabbit:5672/"}}))
    assert "TEMPLATES_DIR" not in env
    assert all(m["name"] != "templates" for m in container(deployment)["volumeMounts"])


def test_one_locales_value_reaches_both_services():
    config = {"productUrl": "https://acme.test/", "smtp": {"heloHostname": "mx.acme.test"}}
    objects = render({"secrets": {"amqpUrl": "amqp://u:p@rabbit:5672/"}, "locales": ["de", "en", "zh-Hant-TW"],
                      "email": {"config": config}})
    producer = one(objects, "ConfigMap", f"{RELEASE}-producer")["data"]
    _, email = _email(objects)
    assert producer["LOCALES"] == email["LOCALES"] == "de,en,zh-Hant-TW"
    assert email["PRODUCT_URL"] == "https://acme.test/" and email["SMTP_HELO_HOSTNAME"] == "mx.acme.test"


@pytest.mark.parametrize("values", [{"locales": ["en_US"]}, {"locales": []},
                                    {"email": {"config": {"smtp": {"heloHostname": "localhost.localdomain"}}}},
                                    {"email": {"templates": {"files": {"evil.sh": "x"}}}}])
def test_the_schema_refuses_bad_mail_values(values):
    with pytest.raises(Exception, match="schema"):
        render({"secrets": {"amqpUrl": "amqp://u:p@rabbit:5672/"}, **values})
