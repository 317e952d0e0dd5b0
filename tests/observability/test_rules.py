"""Static checks of the alert rules and the Grafana dashboard shipped by the chart.

- `promtool check rules` and `promtool test rules` (tests/observability/alerts_test.yaml) on the alert rules;
- every alert has a firing and a not-firing unit test, a severity, a summary, a description and a runbook link;
- every PromQL expression in the dashboard parses (each is checked by promtool as a recording rule, with
  Grafana's variables substituted) and, like the alerts, names only metrics the services and RabbitMQ export.

promtool comes from Debian's `prometheus` package; without it these tests fail, they never skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.alert_rules import ROOT, RULES, alert_rules

DASHBOARD = ROOT / "helm/welcome-mail/files/grafana-dashboard.json"
ALERT_TESTS = Path(__file__).with_name("alerts_test.yaml")
RUNBOOK_BASE = "https://github.com/example/welcome-mail/blob/main/docs/operations.md#"

# --- what exists: the metric names of SPEC.md plus the broker's per-queue series -------------------------

_COUNTERS = ["producer_signups_total", "email_messages_total", "email_dead_letters_total", "email_smtp_throttled_total",
             "email_end_to_end_excluded_total",
             "email_status_write_failures_total", "email_replayed_messages_total",
             "producer_status_write_failures_total"]
_HISTOGRAMS = [
    "producer_publish_seconds",
    "producer_http_request_duration_seconds",
    "email_send_seconds",
    "email_end_to_end_seconds",
    "email_send_budget_wait_seconds",
]
_GAUGES = [
    "producer_broker_connected",
    "email_in_progress",
    "email_consumer_up",
    "email_smtp_pool_size",
    "email_smtp_connections_open",
    "email_smtp_connections_in_use",
    "email_smtp_concurrency_limit",
    "email_consumer_prefetch",
    "email_send_budget_rate",
    "email_send_budget_connections",
    "email_send_budget_shared",
]
# rabbitmq_prometheus, GET /metrics/detailed?family=queue_coarse_metrics (labels vhost, queue).
_RABBITMQ = [
    "rabbitmq_detailed_queue_messages_ready",
    "rabbitmq_detailed_queue_messages_unacked",
    "rabbitmq_detailed_queue_messages",
]

# series name -> family name (prometheus-client exposes <counter>_total and <counter>_created,
# <histogram>_bucket/_sum/_count/_created).
KNOWN_SERIES: dict[str, str] = {}
for _c in _COUNTERS:
    KNOWN_SERIES[_c] = _c
    KNOWN_SERIES[_c.removesuffix("_total") + "_created"] = _c
for _h in _HISTOGRAMS:
    for _suffix in ("_bucket", "_sum", "_count", "_created"):
        KNOWN_SERIES[_h + _suffix] = _h
for _g in _GAUGES + _RABBITMQ:
    KNOWN_SERIES[_g] = _g

_QUEUE = re.compile(r"email\.welcome(\.dlq|\.retry\.\d+)?")
# Enumerated label values per family; a typo such as outcome="dead-lettered" silently matches nothing.
KNOWN_LABEL_VALUES: dict[str, dict[str, object]] = {
    "producer_signups_total": {"outcome": {"accepted", "invalid", "unavailable"}},
    "producer_http_request_duration_seconds": {"status_class": {"2xx", "3xx", "4xx", "5xx"}},
    "email_messages_total": {"outcome": {"sent", "retried", "deferred", "dead_lettered", "duplicate"}},
    "email_dead_letters_total": {
        "reason": {"undecodable", "invalid_event", "unsupported_schema", "smtp_rejected", "retries_exhausted",
                   "deadline_exceeded"}
    },
    "email_smtp_throttled_total": {"stage": {"connect", "helo", "mail", "rcpt", "data"}},
    **{name: {"queue": _QUEUE} for name in _RABBITMQ},
}

# --- a small PromQL reader: enough to pull out metric names and label matchers --------------------------

_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
             "offset", "bool", "inf", "nan"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_LITERAL_ALTERNATIVES = re.compile(r"[\w.\-+]+(\|[\w.\-+]+)*")


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers that are not functions, keywords or label names."""
    if "__name__" in expr:
        raise ValueError(f"select metrics by name, not through __name__: {expr}")
    s = _STRING.sub('""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # range selectors and subqueries
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)  # label lists
    names = set()
    # The look-behind skips unit letters of durations and exponents of numbers (5m, 1e3).
    for m in re.finditer(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(\s*\()?", s):
        word, is_call = m.group(1), m.group(2)
        if not is_call and word.lower() not in _KEYWORDS:
            names.add(word)
    return names


def label_problems(expr: str) -> list[str]:
    """Equality and literal-alternative matchers on enumerated labels that name a value that does not exist."""
    problems = []
    for metric, body in _SELECTOR.findall(expr):
        allowed = KNOWN_LABEL_VALUES.get(KNOWN_SERIES.get(metric, ""), {})
        for label, op, value in _MATCHER.findall(body):
            if label not in allowed or op in ("!=", "!~"):
                continue
            if op == "=~" and not _LITERAL_ALTERNATIVES.fullmatch(value):
                continue  # a real regex (".*", a Grafana variable): nothing to compare
            rule = allowed[label]
            for v in value.split("|"):
                ok = rule.fullmatch(v) if isinstance(rule, re.Pattern) else v in rule
                if not ok:
                    problems.append(f"{metric}{{{label}{op}{value!r}}}: {v!r} is not a known {label}")
    return problems


def unknown_metrics(expr: str) -> set[str]:
    return {name for name in metric_names(expr) if name not in KNOWN_SERIES}


# --- promtool ----------------------------------------------------------------------------------------------


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if exe is None:
        pytest.fail("promtool not found: install the Debian package prometheus (make system-deps)", pytrace=False)
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, check=False)


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"{' '.join(result.args)}\n{result.stdout}\n{result.stderr}"


# --- the alert rules ---------------------------------------------------------------------------------------


def test_promtool_check_rules() -> None:
    assert_ok(promtool("check", "rules", str(RULES)))


def test_promtool_alert_unit_tests_pass() -> None:
    assert_ok(promtool("test", "rules", str(ALERT_TESTS)))


def test_alert_unit_tests_use_the_shipped_rules_file() -> None:
    suite = yaml.safe_load(ALERT_TESTS.read_text())
    assert [(ALERT_TESTS.parent / f).resolve() for f in suite["rule_files"]] == [RULES.resolve()]


def test_every_alert_has_a_firing_and_a_not_firing_unit_test() -> None:
    suite = yaml.safe_load(ALERT_TESTS.read_text())
    cases = [case for test in suite["tests"] for case in test.get("alert_rule_test", [])]
    missing = []
    for name in (rule["alert"] for rule in alert_rules()):
        mine = [case for case in cases if case["alertname"] == name]
        if not any(case.get("exp_alerts") for case in mine):
            missing.append(f"{name}: no firing case")
        if not any(not case.get("exp_alerts") for case in mine):
            missing.append(f"{name}: no not-firing case")
    assert not missing, missing


def test_alerts_carry_severity_summary_description_and_runbook() -> None:
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names)), f"duplicate alert names: {names}"
    for rule in alert_rules():
        name = rule["alert"]
        assert rule.get("labels", {}).get("severity") in {"critical", "warning", "info"}, name
        annotations = rule.get("annotations", {})
        assert annotations.get("summary") and annotations.get("description"), name
        # docs/operations.md has one heading per alert, anchor #<alertname> (tests/observability/test_runbooks.py).
        assert annotations.get("runbook_url") == RUNBOOK_BASE + name.lower(), name


def test_alerts_name_only_known_metrics_and_label_values() -> None:
    for rule in alert_rules():
        expr = rule["expr"]
        assert metric_names(expr), f"{rule['alert']} selects no metric"
        assert not unknown_metrics(expr), f"{rule['alert']}: unknown metrics {unknown_metrics(expr)}"
        assert not label_problems(expr), f"{rule['alert']}: {label_problems(expr)}"


# --- the dashboard -----------------------------------------------------------------------------------------

# Grafana's built-in interval variables become durations; any other variable ($namespace, ${vhost:regex},
# [[job]]) sits inside a label matcher's string and becomes a plain value.
_GRAFANA_DURATIONS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h", "__range_s": "3600"}
_GRAFANA_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)\]\]|\$(\w+)")


def substitute_grafana_variables(expr: str) -> str:
    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        return _GRAFANA_DURATIONS.get(name, "value")

    return _GRAFANA_VARIABLE.sub(value, expr)


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(panels: list[dict]) -> list[dict]:
    out = []
    for panel in panels:
        out.append(panel)
        out.extend(all_panels(panel.get("panels", [])))  # panels inside collapsed rows
    return out


def dashboard_expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable's metric selector."""
    found = []
    for panel in all_panels(dashboard()["panels"]):
        for target in panel.get("targets", []):
            found.append((f"panel {panel['id']} {panel['title']!r} {target['refId']}", target["expr"]))
    for var in dashboard()["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", query)
        assert m, f"variable {var['name']}: expected label_values(<selector>, <label>), got {query!r}"
        found.append((f"variable {var['name']}", m.group(1)))
    return found


def test_dashboard_has_expressions() -> None:
    assert len(dashboard_expressions()) >= 20


def test_dashboard_expressions_parse(tmp_path: Path) -> None:
    exprs = dashboard_expressions()
    rules = [
        {"record": f"dashboard:expr_{i}", "expr": substitute_grafana_variables(expr)}
        for i, (_, expr) in enumerate(exprs)
    ]
    rules_file = tmp_path / "dashboard-rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False))
    result = promtool("check", "rules", str(rules_file))
    where = "\n".join(f"dashboard:expr_{i} = {w}" for i, (w, _) in enumerate(exprs))
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{where}"


def test_dashboard_names_only_known_metrics_and_label_values() -> None:
    for where, expr in dashboard_expressions():
        expr = substitute_grafana_variables(expr)
        assert metric_names(expr), f"{where} selects no metric"
        assert not unknown_metrics(expr), f"{where}: unknown metrics {unknown_metrics(expr)}"
        assert not label_problems(expr), f"{where}: {label_problems(expr)}"


def test_dashboard_queries_go_through_the_datasource_variable() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in all_panels(board["panels"]):
        if panel["type"] == "row":
            continue
        sources = [panel["datasource"], *(t["datasource"] for t in panel["targets"])]
        assert all(s == {"type": "prometheus", "uid": "${datasource}"} for s in sources), panel["title"]
    ids = [p["id"] for p in all_panels(board["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


# --- the reader above, on its own --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (outcome) (rate(email_messages_total{outcome="sent"}[5m]))', {"email_messages_total"}),
        (
            "histogram_quantile(0.99, sum by (le) (rate(email_send_seconds_bucket[5m] offset 1h))) > 1e3",
            {"email_send_seconds_bucket"},
        ),
        ("a_metric / on () group_left sum(b_metric) unless c:recorded", {"a_metric", "b_metric", "c:recorded"}),
        ('deriv(max by (vhost) (x{queue="email.welcome"})[15m:1m]) > 0 and bool y', {"x", "y"}),
        ('absent(email_consumer_up{namespace=~"value"})', {"email_consumer_up"}),
    ],
)
def test_metric_names_reader(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_unknown_metric_and_label_value_are_caught() -> None:
    assert unknown_metrics("sum(rate(email_mesages_total[5m]))") == {"email_mesages_total"}
    assert label_problems('email_messages_total{outcome="dead-lettered"}')
    assert label_problems('rabbitmq_detailed_queue_messages_ready{queue=~"email.welcome|emails"}')
    assert not label_problems('rabbitmq_detailed_queue_messages_ready{queue=~"email.welcome|email.welcome.retry.3"}')
    assert not label_problems('email_messages_total{outcome=~".*"}')
