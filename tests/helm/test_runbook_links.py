"""prometheusRule.runbookBaseUrl: the chart points every alert's runbook link at it, keeping the file's anchors.

The default equals the base written in files/prometheus-rules.yaml, so a default render embeds the file verbatim
(test_chart.py) and `promtool test rules` sees the same links the cluster gets.
"""

from __future__ import annotations

import helm_python as helm
import pytest
import yaml
from welcome_chart import CHART, MONITORING, RELEASE, deep_merge, one, render, rendered

from tests.support.alert_rules import runbook_urls

WIKI = "https://git.internal.example/platform/welcome-mail/-/blob/v0.1.0/docs/operations.md"


def rendered_runbook_urls(objects: list[dict]) -> dict[str, str]:
    groups = one(objects, "PrometheusRule", RELEASE)["spec"]["groups"]
    return {r["alert"]: r["annotations"]["runbook_url"] for g in groups for r in g["rules"] if "alert" in r}


def test_default_base_is_the_one_in_the_rules_file():
    default = yaml.safe_load((CHART / "values.yaml").read_text())["prometheusRule"]["runbookBaseUrl"]
    assert {url.partition("#")[0] for url in runbook_urls().values()} == {default}
    assert rendered_runbook_urls(rendered("monitoring")) == runbook_urls()


def test_base_url_value_moves_every_link_and_keeps_the_anchors():
    objects = render(deep_merge(MONITORING, {"prometheusRule": {"runbookBaseUrl": WIKI}}))
    assert rendered_runbook_urls(objects) == {name: f"{WIKI}#{name.lower()}" for name in runbook_urls()}
    summaries = {r["alert"]: r["annotations"]["summary"]
                 for g in one(objects, "PrometheusRule", RELEASE)["spec"]["groups"] for r in g["rules"]}
    assert "{{ $labels.reason }}" in summaries["WelcomeMailDeadLettered"], "Prometheus templates pass untouched"


@pytest.mark.parametrize("bad", ["docs/operations.md", "https://example.com/ops.md#runbooks", "ftp://example.com/x"])
def test_schema_rejects_a_base_that_is_no_http_address_or_has_an_anchor(bad):
    with pytest.raises(helm.HelmValuesError, match="runbookBaseUrl"):
        render({"prometheusRule": {"enabled": True, "runbookBaseUrl": bad}})
