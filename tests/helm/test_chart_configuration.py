"""helm/welcome-mail rendered for several value sets: the configuration it hands the services (ConfigMap,
Secret, checksum), values.schema.json and the values' documentation, the metrics objects (ports, ServiceMonitor,
PrometheusRule, dashboard), the NetworkPolicy and the kind manifests."""

from __future__ import annotations

import json

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from welcome_chart import (
    CHART,
    COMPONENTS,
    RELEASE,
    ROOT,
    VALUE_SETS,
    container,
    deployments,
    env_of,
    find,
    names,
    one,
    render,
    rendered,
)

SETS = sorted(VALUE_SETS)
KUBE_LATEST = kubernetes_validate.utils.latest_version()


# ---------------------------------------------------------------------------------- configuration


SPEC_ENV = {
    "producer": {"AMQP_URL", "HTTP_HOST", "HTTP_PORT", "LOG_LEVEL", "PUBLISH_TIMEOUT_SECONDS", "MAX_BODY_BYTES",
                 "RETRY_AFTER_SECONDS", "RECONNECT_MAX_DELAY_SECONDS", "AMQP_HEARTBEAT_SECONDS", "LOCALES",
                 "REDIS_URL", "REDIS_KEY_PREFIX", "DELIVERY_STATUS_TTL_SECONDS", "STATUS_API_TOKEN",
                 "IDEMPOTENCY_SECRET"},
    "email": {"AMQP_URL", "SMTP_HOST", "SMTP_PORT", "SMTP_USERNAME", "SMTP_PASSWORD", "SMTP_SECURITY",
              "SMTP_TLS_VERIFY", "SMTP_TIMEOUT_SECONDS", "SMTP_PIPELINING", "MAIL_FROM", "PRODUCT_NAME", "METRICS_HOST",
              "METRICS_PORT", "CONCURRENCY", "MAX_ATTEMPTS", "RETRY_DELAYS", "SHUTDOWN_TIMEOUT_SECONDS",
              "RECONNECT_MAX_DELAY_SECONDS", "AMQP_HEARTBEAT_SECONDS", "LOG_LEVEL", "DEDUP_URL", "DEDUP_TTL_SECONDS",
              "DEDUP_FAIL_MODE", "DEDUP_KEY_PREFIX", "PRODUCT_URL", "LOCALES", "THROTTLE_DELAY_SECONDS",
              "DELIVERY_DEADLINE_SECONDS", "DELIVERY_STATUS_TTL_SECONDS"},
}
SECRET_ENV = {"AMQP_URL", "SMTP_USERNAME", "SMTP_PASSWORD", "DEDUP_URL", "REDIS_URL", "STATUS_API_TOKEN",
              "IDEMPOTENCY_SECRET"}
# The Secret's keys (the producer reads the Redis URL of key DEDUP_URL as REDIS_URL).
SECRET_KEYS = {"AMQP_URL", "SMTP_USERNAME", "SMTP_PASSWORD", "DEDUP_URL", "STATUS_API_TOKEN", "IDEMPOTENCY_SECRET"}


@pytest.mark.parametrize("value_set", SETS)
def test_every_variable_comes_from_the_configmap_or_the_secret(value_set):
    objects = rendered(value_set)
    for component, deployment in deployments(value_set).items():
        c = container(deployment)
        configmap = one(objects, "ConfigMap", deployment["metadata"]["name"])
        from_secret = {e["name"] for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})}
        provided = set(configmap["data"]) | from_secret
        optional = {"SMTP_CA_FILE", "SMTP_POOL_SIZE", "LOGO_URL", "SMTP_HELO_HOSTNAME", "TEMPLATES_DIR",
                    "SEND_RATE_LIMIT", "SMTP_MAX_CONNECTIONS"}
        assert SPEC_ENV[component] <= provided, SPEC_ENV[component] - provided
        assert provided - SPEC_ENV[component] <= optional
        assert from_secret == SPEC_ENV[component] & SECRET_ENV, "credentials only from the Secret"
        assert not set(configmap["data"]) & SECRET_ENV


@pytest.mark.parametrize("value_set", ["defaults", "kind", "network-policy", "everything"])
def test_the_services_accept_the_rendered_configuration(value_set):
    """The ConfigMap + Secret environment passes each service's own settings parser."""
    from email_service.config import Settings as EmailSettings
    from producer_service.config import Settings as ProducerSettings

    objects = rendered(value_set)
    configmaps = find(objects, "ConfigMap")
    (secret,) = find(objects, "Secret")
    deps = deployments(value_set)
    producer = ProducerSettings.from_env(env_of(deps["producer"], configmaps, secret))
    email = EmailSettings.from_env(env_of(deps["email"], configmaps, secret))
    producer_port = deps["producer"]["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert producer.http_port == producer_port
    assert email.metrics_port == container(deps["email"])["ports"][0]["containerPort"]
    assert email.shutdown_timeout < deps["email"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]


def test_large_numbers_are_not_rendered_in_exponent_notation():
    objects = render({"producer": {"config": {"maxBodyBytes": 1048576}},
                      "email": {"config": {"dedupTtlSeconds": 31536000}}})
    assert one(objects, "ConfigMap", f"{RELEASE}-producer")["data"]["MAX_BODY_BYTES"] == "1048576"
    assert one(objects, "ConfigMap", f"{RELEASE}-email")["data"]["DEDUP_TTL_SECONDS"] == "31536000"


def test_chart_secret_holds_only_what_is_set():
    assert one(rendered("defaults"), "Secret", f"{RELEASE}-secrets")["stringData"] == {
        "AMQP_URL": "amqp://guest:guest@rabbitmq:5672/"}
    assert set(one(rendered("everything"), "Secret", "mail-secrets")["stringData"]) == SECRET_KEYS


def test_existing_secret_is_used_with_its_own_key_names():
    objects = rendered("existing-secret")
    assert not find(objects, "Secret")
    email = container(one(objects, "Deployment", f"{RELEASE}-email"))
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in email["env"] if "valueFrom" in e}
    assert refs["AMQP_URL"] == {"name": "welcome-mail-credentials", "key": "amqp-url"}
    assert refs["SMTP_PASSWORD"] == {"name": "welcome-mail-credentials", "key": "smtp-password", "optional": True}
    assert refs["DEDUP_URL"]["key"] == "redis-url"


@pytest.mark.parametrize("bad, message", [
    ({"secrets": {"amqpUrl": ""}}, "secrets.amqpUrl"),
    ({"secrets": {"amqpUrl": "http://rabbitmq:15672/"}}, "secrets.amqpUrl"),
    ({"secrets": {"smtpUsername": "mailer"}}, "set together"),
    ({"secrets": {"statusApiToken": "status-token-0123456789"}}, "secrets.idempotencySecret"),
])
def test_secret_values_are_checked(bad, message):
    with pytest.raises(helm.HelmError, match=message):
        render(bad)


def test_checksum_annotation_follows_configmap_and_secret():
    def checksums(values):
        objects = render(values)
        return {c: one(objects, "Deployment", f"{RELEASE}-{c}")["spec"]["template"]["metadata"]["annotations"]
                ["checksum/config"]
                for c in COMPONENTS}

    base = checksums({})
    assert base == checksums({})
    email_change = checksums({"email": {"config": {"productName": "Other"}}})
    assert email_change["email"] != base["email"] and email_change["producer"] == base["producer"]
    secret_change = checksums({"secrets": {"amqpUrl": "amqp://u:p@elsewhere:5672/"}})
    assert secret_change["email"] != base["email"] and secret_change["producer"] != base["producer"]


# --------------------------------------------------------------------------------- values.schema.json


@pytest.mark.parametrize("bad, where", [
    ({"email": {"replicaCount": -1}}, "/email/replicaCount"),
    ({"producer": {"replicaCount": -3}}, "/producer/replicaCount"),
    ({"producer": {"containerPort": "http"}}, "/producer/containerPort"),
    ({"email": {"config": {"smtp": {"port": "587"}}}}, "/email/config/smtp/port"),
    ({"email": {"metricsPort": 70000}}, "/email/metricsPort"),
    ({"email": {"config": {"smtp": {"security": "ssl"}}}}, "/email/config/smtp/security"),
    ({"email": {"autoscaling": {"keda": {"enabled": "yes"}}}}, "/email/autoscaling/keda/enabled"),
    ({"emial": {"replicaCount": 2}}, "emial"),
    ({"secrets": {"statusApiToken": "short"}}, "/secrets/statusApiToken"),
    ({"deliveryStatus": {"ttlSeconds": 5}}, "/deliveryStatus/ttlSeconds"),
    ({"email": {"replayCronJob": {"reasons": ["retries_exhausted", "tired"]}}}, "/email/replayCronJob/reasons"),
    ({"email": {"replayCronJob": {"reasons": []}}}, "/email/replayCronJob/reasons"),
    ({"email": {"replayCronJob": {"maxReplays": 0}}}, "/email/replayCronJob/maxReplays"),
    ({"email": {"replayCronJob": {"rate": 0}}}, "/email/replayCronJob/rate"),
    ({"email": {"replayCronJob": {"schedule": "hourly"}}}, "/email/replayCronJob/schedule"),
])
def test_schema_rejects_wrong_values(bad, where):
    with pytest.raises(helm.HelmValuesError, match=where):
        render(bad)


def test_every_value_is_documented():
    """Each leaf of values.yaml has a `## @param <path>` line (bitnami style), and every @param exists."""
    text = (CHART / "values.yaml").read_text()
    documented = {line.split()[2] for line in text.splitlines() if line.strip().startswith("## @param ")}

    def leaves(node, prefix=""):
        for key, value in node.items():
            path = f"{prefix}{key}"
            if path in documented:
                yield path  # a documented map or list is one value (resources, behavior, ...)
            elif isinstance(value, dict) and value:
                yield from leaves(value, path + ".")
            else:
                yield path

    values = yaml.safe_load(text)
    all_leaves = set(leaves(values))
    assert all_leaves <= documented, f"undocumented: {sorted(all_leaves - documented)}"

    def exists(path):
        node = values
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    assert all(exists(p) for p in documented), [p for p in documented if not exists(p)]


# ------------------------------------------------------------------------------------------ metrics


@pytest.mark.parametrize("value_set", SETS)
def test_services_expose_a_port_named_metrics(value_set):
    objects = rendered(value_set)
    producer, email = (one(objects, "Service", n) for n in names(value_set).values())
    assert {p["name"]: p["targetPort"] for p in producer["spec"]["ports"]} == {"http": "http", "metrics": "http"}
    assert {p["name"]: p["targetPort"] for p in email["spec"]["ports"]} == {"metrics": "metrics"}
    assert {p["name"]: p["port"] for p in producer["spec"]["ports"]}["http"] == 8000
    assert email["spec"]["ports"][0]["port"] == 9100


def test_service_monitor_selects_both_services():
    objects = rendered("monitoring")
    monitor = one(objects, "ServiceMonitor", RELEASE)
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    selector = monitor["spec"]["selector"]
    selected = []
    for service in find(objects, "Service"):
        labels = service["metadata"]["labels"]
        if selector["matchLabels"].items() <= labels.items() and all(
                labels.get(e["key"]) in e["values"] for e in selector["matchExpressions"]):
            selected.append(service["metadata"]["name"])
    assert sorted(selected) == [f"{RELEASE}-email", f"{RELEASE}-producer"]


def test_prometheus_rule_carries_the_rules_file_verbatim():
    rules_file = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    rule = one(rendered("monitoring"), "PrometheusRule", RELEASE)
    assert rule["spec"]["groups"] == rules_file["groups"]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_grafana_dashboard_configmap():
    objects = rendered("monitoring")
    dashboard = one(objects, "ConfigMap", f"{RELEASE}-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"]["grafana_folder"] == "Messaging"
    (data,) = dashboard["data"].values()
    assert json.loads(data) == json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    assert not find(rendered("defaults"), "ConfigMap", f"{RELEASE}-dashboard")


# ------------------------------------------------------------------------------------ network policy


def test_network_policy_allows_only_the_needed_traffic():
    objects = rendered("network-policy")
    producer = one(objects, "NetworkPolicy", f"{RELEASE}-producer")["spec"]
    email = one(objects, "NetworkPolicy", f"{RELEASE}-email")["spec"]

    def egress_ports(policy):
        return {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}

    amqp_dns_redis = {(5672, "TCP"), (5671, "TCP"), (53, "UDP"), (53, "TCP"), (6379, "TCP")}  # + extraEgress
    assert egress_ports(producer) == amqp_dns_redis
    assert egress_ports(email) == amqp_dns_redis | {(465, "TCP")}  # SMTP_SECURITY=tls
    assert [p["port"] for r in producer["ingress"] for p in r["ports"]] == ["http"]
    assert [p["port"] for r in email["ingress"] for p in r["ports"]] == ["metrics"]
    assert email["ingress"][0]["from"] == VALUE_SETS["network-policy"]["networkPolicy"]["metricsFrom"]
    assert set(producer["policyTypes"]) == {"Ingress", "Egress"}
    assert not find(rendered("defaults"), "NetworkPolicy")


# ------------------------------------------------------------------------------------ kind manifests


@pytest.mark.parametrize("manifest", ["rabbitmq.yaml", "mailpit.yaml"])
def test_kind_manifests_are_valid_kubernetes_strict(manifest):
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy" / "kind" / manifest).read_text()) if d]
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_LATEST, strict=True)


def test_kind_values_point_at_the_kind_services():
    kind = yaml.safe_load((ROOT / "deploy" / "kind" / "values.yaml").read_text())
    services = {d["metadata"]["name"]: d for f in ("rabbitmq.yaml", "mailpit.yaml")
                for d in yaml.safe_load_all((ROOT / "deploy" / "kind" / f).read_text()) if d and d["kind"] == "Service"}
    smtp = kind["email"]["config"]["smtp"]
    assert smtp["port"] in [p["port"] for p in services[smtp["host"]]["spec"]["ports"]]
    assert "@rabbitmq:5672/" in kind["secrets"]["amqpUrl"]
    assert 5672 in [p["port"] for p in services["rabbitmq"]["spec"]["ports"]]
