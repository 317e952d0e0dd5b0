"""helm/welcome-mail rendered by the real Helm engine for several value sets, then checked: helm lint
(strict), every core object against the Kubernetes OpenAPI schema (kubernetes-validate --strict), every
custom resource against its published schema, and the chart's promises about objects (names, security, probes,
disruption budgets, grace period, scaling). Configuration, schema and metrics: test_chart_configuration.py."""

from __future__ import annotations

import json

import helm_python as helm
import kubernetes_validate
import pytest
from welcome_chart import (
    CHART,
    COMPONENTS,
    CRD_KINDS,
    KUBE_MIN,
    NAMESPACE,
    RELEASE,
    VALUE_SETS,
    container,
    deep_merge,
    deployments,
    find,
    one,
    render,
    rendered,
)

SETS = sorted(VALUE_SETS)
KUBE_LATEST = kubernetes_validate.utils.latest_version()


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


