"""What the chart says about running each container, read from the chart rendered by the real Helm engine.

Nothing here is retyped from the templates: the environment comes from `env_of` over the rendered ConfigMaps and
Secret, the command from the image's ENTRYPOINT/CMD and the container's `command`/`args` (Kubernetes' rule), the
uid, gid and read-only root from the container's securityContext, the mounts from its volumeMounts and the pod's
volumes, the time allowed to stop from terminationGracePeriodSeconds less the preStop sleep.

Invariant: a chart change the smoke test cannot honour (a volume kind it does not know, a container without
runAsUser) fails here, naming it, rather than running the image some other way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helm import welcome_chart
from tests.support.buildah import ImageConfig, image_config
from tests.support.containers import Bind, ContainerSpec

LOCAL_REGISTRY = "localhost"  # deploy/images/build.sh tags localhost/<chart repository>:<appVersion>


@dataclass(frozen=True)
class PodRun:
    """One component's container as the chart runs it; `container` has no root directory yet (see `spec`)."""

    component: str
    image: ImageConfig
    container: ContainerSpec
    stop_within: float  # seconds from SIGTERM to SIGKILL: the grace period less the preStop hook's sleep
    port: int  # the container port the probes use

    @property
    def env(self) -> dict[str, str]:
        return self.container.env

    def spec(self, rootfs: Path, name: str, argv: list[str] | None = None) -> ContainerSpec:
        return dataclasses.replace(self.container, name=name, rootfs=rootfs, argv=argv or self.container.argv)


def command_of(image: ImageConfig, container: dict[str, Any]) -> list[str]:
    """Kubernetes' rule: `command` replaces ENTRYPOINT (and then CMD too), `args` replaces CMD."""
    if "command" in container:
        return [*container["command"], *container.get("args", [])]
    return [*image.entrypoint, *container.get("args", image.cmd)]


def _mounts(component: str, container: dict, pod: dict, volume_sources: dict[str, Path]
            ) -> tuple[dict[str, str], list[Bind]]:
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    tmpfs: dict[str, str] = {}
    binds: list[Bind] = []
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            tmpfs[mount["mountPath"]] = volume["emptyDir"].get("sizeLimit", "64Mi")
        elif mount["name"] in volume_sources:
            binds.append(Bind(volume_sources[mount["name"]], mount["mountPath"], bool(mount.get("readOnly"))))
        else:
            raise AssertionError(f"{component}: volume {mount['name']} ({', '.join(set(volume) - {'name'})}) has no "
                                 "source in the smoke test: give one in volume_sources")
    return tmpfs, binds


def pod_runs(values: dict[str, Any], volume_sources: dict[str, Path]) -> dict[str, PodRun]:
    """component -> how its container runs, for the chart rendered with `values`; `volume_sources` maps a
    ConfigMap or Secret volume's name to the host directory holding its files."""
    objects = welcome_chart.render(values)
    configmaps = welcome_chart.find(objects, "ConfigMap")
    secrets = welcome_chart.find(objects, "Secret")
    runs = {}
    for component, name in welcome_chart.names("defaults").items():
        deployment = welcome_chart.one(objects, "Deployment", name)
        pod = deployment["spec"]["template"]["spec"]
        container = welcome_chart.container(deployment)
        context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
        assert "runAsUser" in context, f"{component}: the chart sets no runAsUser; the smoke test will not guess one"
        image = image_config(f"{LOCAL_REGISTRY}/{container['image']}")
        tmpfs, binds = _mounts(component, container, pod, volume_sources)
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        probe_port = container["readinessProbe"]["httpGet"]["port"]
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        env = {**image.env, **welcome_chart.env_of(deployment, configmaps, secrets[0] if secrets else None)}
        uid = int(context["runAsUser"])
        runs[component] = PodRun(
            component=component, image=image,
            container=ContainerSpec(component, Path(), command_of(image, container), env, uid,
                                    int(context.get("runAsGroup", uid)), bool(context.get("readOnlyRootFilesystem")),
                                    tmpfs, binds),
            stop_within=float(pod.get("terminationGracePeriodSeconds", 30)) - float(pre_stop),
            port=int(ports.get(probe_port, probe_port)))
    return runs
