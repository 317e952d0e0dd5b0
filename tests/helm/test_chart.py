"""helm/welcome-mail rendered by the real Helm engine for several value sets, then checked: helm lint
(strict), every core object against the Kubernetes OpenAPI schema (kubernetes-validate --strict), every
custom resource against its published schema, and the chart's promises (names, security, probes,
disruption budgets, grace period, scaling, configuration, metrics)."""

from __future__ import annotations

import json

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from welcome_chart import (
    CHART,
    CRD_KINDS,
    KUBE_MIN,
    NAMESPACE,
    RELEASE,
    ROOT,
    VALUE_SETS,
    container,
    deep_merge,
    find,
    one,
    render,
    rendered,
)

SETS = sorted(VALUE_SETS)
KUBE_LATEST = kubernetes_validate.utils.latest_version()
COMPONENTS = ("producer", "email")


def names(value_set: str) -> dict[str, str]:
    prefix = VALUE_SETS[value_set].get("fullnameOverride") or RELEASE
    return {component: f"{prefix}-{component}" for component in COMPONENTS}


def deployments(value_set: str) -> dict[str, dict]:
    objects = rendered(value_set)
    return {component: one(objects, "Deployment", name) for component, name in names(value_set).items()}


def env_of(deployment: dict, configmaps: list[dict], secret: dict | None) -> dict[str, str]:
    """The environment the container would see (ConfigMap envFrom, Secret refs, literal values)."""
    env: dict[str, str] = {}
    c = container(deployment)
    for source in c.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        env.update(next(cm for cm in configmaps if cm["metadata"]["name"] == ref)["data"])
    for item in c.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        data = (secret or {}).get("stringData", {})
        if ref["key"] in data:
            env[item["name"]] = data[ref["key"]]
        else:
            assert ref.get("optional") or secret is None, f"{item['name']}: key {ref['key']} missing from the Secret"
    return env


# ---------------------------------------------------------------------------------------------- lint


@pytest.mark.parametrize("value_set", SETS)
def test_helm_lint_strict_reports_no_problem(value_set):
    report = helm.lint(CHART, VALUE_SETS[value_set], strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # 2 = warning, 3 = error
    assert not report["errors"] and not problems, json.dumps(report, indent=2)


# ------------------------------------------------------------------------------------------ validate


@pytest.mark.parametrize("value_set", SETS)
def test_core_objects_are_valid_kubernetes_strict(value_set):
    objects = [o for o in rendered(value_set) if (o["apiVersion"], o["kind"]) not in CRD_KINDS]
    assert objects
    failures = []
    for version in (KUBE_MIN, KUBE_LATEST):
        for obj in objects:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = "/".join(str(p) for p in exc.path)
                failures.append(f"{version} {obj['kind']}/{obj['metadata']['name']} at {path}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError as exc:
                failures.append(f"{version}: {exc.message}")
    assert not failures, "\n".join(failures)


def test_custom_resources_match_their_published_schemas(validate_crds):
    objects = [o for s in SETS for o in rendered(s) if (o["apiVersion"], o["kind"]) in CRD_KINDS]
    assert {(o["apiVersion"], o["kind"]) for o in objects} == CRD_KINDS, "every custom resource kind is rendered"
    results = validate_crds(objects)
    bad = [r for r in results if r["errors"] or r["unknown"]]
    assert not bad, json.dumps(bad, indent=2)


def test_custom_resource_check_catches_wrong_types_and_misspelled_fields(validate_crds):
    everything = rendered("everything")
    scaled = one(everything, "ScaledObject", "mail-email")
    scaled["spec"]["maxReplicaCount"] = "twelve"
    scaled["spec"]["triggers"][0]["authRef"] = scaled["spec"]["triggers"][0].pop("authenticationRef")
    monitor = one(everything, "ServiceMonitor", "mail")
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    rule = one(everything, "PrometheusRule", "mail")
    rule["spec"]["groups"][0]["rules"][0]["expression"] = rule["spec"]["groups"][0]["rules"][0].pop("expr")
    scaled_result, monitor_result, rule_result = validate_crds([scaled, monitor, rule])
    assert any("/spec/maxReplicaCount" in e for e in scaled_result["errors"])
    assert "/spec/triggers/0/authRef" in scaled_result["unknown"]
    assert monitor_result["unknown"] == ["/spec/endpoints/0/intervall"]
    assert rule_result["unknown"] == ["/spec/groups/0/rules/0/expression"]
    assert any("expr" in e for e in rule_result["errors"]), "expr is required"


# ----------------------------------------------------------------------------------- names, labels


@pytest.mark.parametrize("release, override, expected", [
    ("welcome", "", "welcome"),
    ("welcome-mail", "", "welcome-mail"),  # the chart name is never added (nor removed)
    ("prod", "mail", "mail"),
])
def test_deployments_are_named_release_dash_component(release, override, expected):
    objects = render({"fullnameOverride": override}, release=release)
    names = sorted(d["metadata"]["name"] for d in find(objects, "Deployment"))
    assert names == [f"{expected}-email", f"{expected}-producer"]


@pytest.mark.parametrize("value_set", SETS)
def test_selectors_carry_the_component(value_set):
    for component, deployment in deployments(value_set).items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector["app.kubernetes.io/component"] == component
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


# -------------------------------------------------------------------------------------- security


@pytest.mark.parametrize("value_set", SETS)
def test_pods_run_unprivileged_with_a_read_only_root(value_set):
    objects = rendered(value_set)
    for component, deployment in deployments(value_set).items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        sc = container(deployment)["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        # /tmp is the only writable place
        tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
        assert "emptyDir" in tmp
        assert {"name": "tmp", "mountPath": "/tmp"} in container(deployment)["volumeMounts"]
        account = one(objects, "ServiceAccount", pod["serviceAccountName"])
        assert account["automountServiceAccountToken"] is False
        assert pod["topologySpreadConstraints"], f"{component}: topology spread constraints"


# ---------------------------------------------------------------------------------------- probes


@pytest.mark.parametrize("value_set", SETS)
def test_probes(value_set):
    expected_port = {"producer": "http", "email": "metrics"}
    for component, deployment in deployments(value_set).items():
        c = container(deployment)
        port_names = {p["name"] for p in c["ports"]}
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
            assert c[probe]["httpGet"] == {"path": path, "port": expected_port[component]}, (component, probe)
            assert c[probe]["httpGet"]["port"] in port_names
        assert c["livenessProbe"]["successThreshold"] == 1


def test_probes_can_be_disabled():
    objects = render({"email": {"livenessProbe": {"enabled": False}, "startupProbe": {"enabled": False}}})
    c = container(one(objects, "Deployment", f"{RELEASE}-email"))
    assert "livenessProbe" not in c and "startupProbe" not in c and "readinessProbe" in c


# -------------------------------------------------------------------------- disruption and shutdown


@pytest.mark.parametrize("value_set", SETS)
def test_every_component_has_a_disruption_budget(value_set):
    objects = rendered(value_set)
    for deployment in deployments(value_set).values():
        pdb = one(objects, "PodDisruptionBudget", deployment["metadata"]["name"])
        assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
        assert ("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"])


def test_disruption_budget_min_available_and_max_unavailable_are_exclusive():
    with pytest.raises(helm.HelmError, match="cannot both be set"):
        render({"email": {"pdb": {"minAvailable": 1, "maxUnavailable": 1}}})


@pytest.mark.parametrize("value_set", SETS)
def test_grace_period_outlasts_the_consumer_shutdown_timeout(value_set):
    objects = rendered(value_set)
    email = deployments(value_set)["email"]
    config = one(objects, "ConfigMap", email["metadata"]["name"])["data"]
    grace = email["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(config["SHUTDOWN_TIMEOUT_SECONDS"])


@pytest.mark.parametrize("grace, shutdown", [(20, 20), (15, 20), (30, 45.5)])
def test_rendering_fails_when_the_grace_period_is_too_short(grace, shutdown):
    with pytest.raises(helm.HelmError, match="must be longer than email.config.shutdownTimeoutSeconds"):
        render({"email": {"terminationGracePeriodSeconds": grace, "config": {"shutdownTimeoutSeconds": shutdown}}})


def test_producer_grace_period_covers_pre_stop_and_uvicorn_shutdown():
    producer = one(rendered("defaults"), "Deployment", f"{RELEASE}-producer")
    spec = producer["spec"]["template"]["spec"]
    pre_stop = container(producer)["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert spec["terminationGracePeriodSeconds"] > pre_stop + 10
    with pytest.raises(helm.HelmError, match="producer.terminationGracePeriodSeconds"):
        render({"producer": {"terminationGracePeriodSeconds": 12, "preStopSleepSeconds": 5}})


# --------------------------------------------------------------------------------------- scaling


@pytest.mark.parametrize("value_set, autoscaled", [
    ("defaults", set()), ("hpa", {"producer", "email"}), ("keda", {"email"}), ("everything", {"producer", "email"}),
])
def test_replicas_are_left_out_when_an_autoscaler_owns_them(value_set, autoscaled):
    for component, deployment in deployments(value_set).items():
        if component in autoscaled:
            assert "replicas" not in deployment["spec"], component
        else:
            assert deployment["spec"]["replicas"] >= 1, component


def test_hpa_scales_the_deployments_on_cpu():
    objects = rendered("hpa")
    for component in COMPONENTS:
        hpa = one(objects, "HorizontalPodAutoscaler", f"{RELEASE}-{component}")
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                 "name": f"{RELEASE}-{component}"}
        cpu = [m for m in hpa["spec"]["metrics"] if m["resource"]["name"] == "cpu"]
        assert cpu and cpu[0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    assert "behavior" in one(objects, "HorizontalPodAutoscaler", f"{RELEASE}-email")["spec"]


def test_keda_scales_the_consumer_on_the_work_queue_depth():
    objects = rendered("keda")
    scaled = one(objects, "ScaledObject", f"{RELEASE}-email")
    assert scaled["spec"]["scaleTargetRef"]["name"] == f"{RELEASE}-email"
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (0, 12)
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"]["mode"] == "QueueLength"
    assert trigger["metadata"]["queueName"] == "email.welcome"
    assert trigger["metadata"]["value"] == "48"
    auth = one(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "host", "name": f"{RELEASE}-secrets", "key": "AMQP_URL"}]
    assert not find(objects, "HorizontalPodAutoscaler"), "KEDA makes its own HPA"


def test_keda_reads_the_host_from_an_existing_secret():
    objects = rendered("existing-secret")
    auth = one(objects, "TriggerAuthentication", f"{RELEASE}-email")
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "host", "name": "welcome-mail-credentials", "key": "amqp-url"}]


def test_hpa_and_keda_are_mutually_exclusive():
    with pytest.raises(helm.HelmError, match="mutually exclusive"):
        render(deep_merge(VALUE_SETS["hpa"], VALUE_SETS["keda"]))


def test_no_autoscaler_by_default_so_kubectl_scale_is_not_fought():
    objects = rendered("defaults")
    assert not find(objects, "HorizontalPodAutoscaler") and not find(objects, "ScaledObject")


# ---------------------------------------------------------------------------------- configuration


SPEC_ENV = {
    "producer": {"AMQP_URL", "HTTP_HOST", "HTTP_PORT", "LOG_LEVEL", "PUBLISH_TIMEOUT_SECONDS", "MAX_BODY_BYTES",
                 "RETRY_AFTER_SECONDS", "RECONNECT_MAX_DELAY_SECONDS"},
    "email": {"AMQP_URL", "SMTP_HOST", "SMTP_PORT", "SMTP_USERNAME", "SMTP_PASSWORD", "SMTP_SECURITY",
              "SMTP_TLS_VERIFY", "SMTP_TIMEOUT_SECONDS", "MAIL_FROM", "PRODUCT_NAME", "METRICS_HOST",
              "METRICS_PORT", "CONCURRENCY", "MAX_ATTEMPTS", "RETRY_DELAYS", "SHUTDOWN_TIMEOUT_SECONDS",
              "RECONNECT_MAX_DELAY_SECONDS", "LOG_LEVEL", "DEDUP_URL", "DEDUP_TTL_SECONDS", "DEDUP_FAIL_MODE",
              "DEDUP_KEY_PREFIX"},
}
SECRET_ENV = {"AMQP_URL", "SMTP_USERNAME", "SMTP_PASSWORD", "DEDUP_URL"}


@pytest.mark.parametrize("value_set", SETS)
def test_every_variable_comes_from_the_configmap_or_the_secret(value_set):
    objects = rendered(value_set)
    for component, deployment in deployments(value_set).items():
        c = container(deployment)
        configmap = one(objects, "ConfigMap", deployment["metadata"]["name"])
        from_secret = {e["name"] for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})}
        provided = set(configmap["data"]) | from_secret
        optional = {"SMTP_CA_FILE", "SMTP_POOL_SIZE"}
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
    assert set(one(rendered("everything"), "Secret", "mail-secrets")["stringData"]) == SECRET_ENV


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
