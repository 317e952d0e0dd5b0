"""Rendering helpers for the chart checks (imported by conftest.py and the test modules).

The chart is rendered by the real Helm engine: helm-python-sdk embeds Helm's Go SDK (v4) as a shared
library and renders offline, like `helm template`; no cluster and no helm binary are involved.
"""

from __future__ import annotations

import copy
import functools
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CHART = ROOT / "helm" / "welcome-mail"
VENV_BIN = Path(sys.executable).parent
CACHE = HERE / ".cache"

RELEASE = "welcome"
NAMESPACE = "welcome-mail"

# Kubernetes versions the core objects are validated against (kubernetes-validate ships schemas up to
# its own version): the chart's minimum (Chart.yaml kubeVersion) and the newest one shipped.
KUBE_MIN = "1.30.0"

# Published schemas of the custom resources, from npm, pinned. Installed into tests/helm/.cache/.
CRD_PACKAGES = {
    "@kubernetes-models/keda": "2.0.0",
    "@kubernetes-models/prometheus-operator": "6.0.0",
}
CRD_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}


def deep_merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


HPA = {
    "producer": {"autoscaling": {"hpa": {"enabled": True}}},
    "email": {"autoscaling": {"hpa": {
        "enabled": True, "minReplicas": 2, "maxReplicas": 8, "targetMemoryUtilizationPercentage": 80,
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300, "policies": [
            {"type": "Pods", "value": 1, "periodSeconds": 60}]}},
    }}},
}
KEDA = {
    "email": {"autoscaling": {"keda": {
        "enabled": True, "minReplicaCount": 0, "maxReplicaCount": 12, "queueLength": 48,
        "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0}},
    }}},
}
MONITORING = {
    "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}, "scrapeTimeout": "10s",
                       "relabelings": [{"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"}]},
    "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Messaging"}},
}
EXISTING_SECRET = {
    "secrets": {"existingSecret": "welcome-mail-credentials", "amqpUrl": "",
                "keys": {"amqpUrl": "amqp-url", "smtpUsername": "smtp-user", "smtpPassword": "smtp-password",
                         "dedupUrl": "redis-url", "statusApiToken": "status-token",
                         "idempotencySecret": "idempotency-secret"}},
}
NETWORK_POLICY = {
    "networkPolicy": {
        "enabled": True,
        "amqpTo": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "rabbitmq"}}}],
        "dnsTo": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                   "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        "extraEgress": [{"to": [{"podSelector": {"matchLabels": {"app": "redis"}}}],
                         "ports": [{"port": 6379, "protocol": "TCP"}]}],
    },
    "email": {"config": {"smtp": {"security": "tls", "host": "smtp.example.com"}}},
}
EVERYTHING = deep_merge(deep_merge(deep_merge(KEDA, MONITORING), NETWORK_POLICY), {
    "fullnameOverride": "mail",
    "commonLabels": {"team": "growth"},
    "commonAnnotations": {"owner": "growth@example.com"},
    "imagePullSecrets": [{"name": "regcred"}],
    "secrets": {"smtpUsername": "mailer", "smtpPassword": "s3cret", "dedupUrl": "redis://redis:6379/0",
                "statusApiToken": "status-token-0123456789", "idempotencySecret": "idempotency-0123456789"},
    "deliveryStatus": {"ttlSeconds": 7776000},
    "producer": {"autoscaling": {"hpa": {"enabled": True}},
                 "image": {"digest": "sha256:" + "a" * 64},
                 "service": {"type": "LoadBalancer", "annotations": {"example.com/lb": "internal"}},
                 "pdb": {"minAvailable": "50%", "maxUnavailable": ""}},
    "email": {"config": {"smtp": {"caFile": "/etc/smtp-ca/ca.crt", "poolSize": 4, "port": 2465},
                         "concurrency": 32, "shutdownTimeoutSeconds": 40, "sendRateLimit": 13.5,
                         "smtpMaxConnections": 20},
              "replayCronJob": {"enabled": True, "schedule": "*/30 * * * *", "timeZone": "Europe/Zurich",
                                "reasons": ["retries_exhausted"], "rate": 2.5, "limit": 200, "maxReplays": 2},
              "terminationGracePeriodSeconds": 60,
              "extraVolumes": [{"name": "smtp-ca", "configMap": {"name": "smtp-ca"}}],
              "extraVolumeMounts": [{"name": "smtp-ca", "mountPath": "/etc/smtp-ca", "readOnly": True}],
              "extraEnv": [{"name": "TZ", "value": "UTC"}],
              "topologySpreadConstraints": [{"maxSkew": 2, "topologyKey": "kubernetes.io/hostname",
                                             "whenUnsatisfiable": "DoNotSchedule",
                                             "labelSelector": {
                                                 "matchLabels": {"app.kubernetes.io/component": "email"}}}],
              "priorityClassName": "important"},
})

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "hpa": HPA,
    "keda": KEDA,
    "monitoring": MONITORING,
    "existing-secret": deep_merge(EXISTING_SECRET, KEDA),
    "network-policy": NETWORK_POLICY,
    "kind": yaml.safe_load((ROOT / "deploy" / "kind" / "values.yaml").read_text()),
    "everything": EVERYTHING,
}


@functools.lru_cache(maxsize=1)
def chart() -> helm.Chart:
    return helm.Chart.load(CHART)


def render_manifests(values: dict[str, Any] | None = None, release: str = RELEASE) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` would produce (no cluster involved)."""
    return chart().render(values or {}, name=release, namespace=NAMESPACE, is_install=True)


def render(values: dict[str, Any] | None = None, release: str = RELEASE) -> list[dict[str, Any]]:
    """The rendered Kubernetes objects (NOTES.txt and empty documents left out)."""
    objects = []
    for path, text in sorted(render_manifests(values, release).items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append(doc)
    return objects


@functools.lru_cache(maxsize=None)
def _render_set(name: str) -> tuple[dict[str, Any], ...]:
    return tuple(render(VALUE_SETS[name]))


def rendered(name: str) -> list[dict[str, Any]]:
    """The objects of a named value set (rendered once per session; deep copies, safe to mutate)."""
    return copy.deepcopy(list(_render_set(name)))


def find(objects: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[dict], kind: str, name: str) -> dict:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, found {[o['metadata']['name'] for o in find(objects, kind)]}"
    return found[0]


def container(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


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
