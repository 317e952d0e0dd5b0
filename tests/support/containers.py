"""An image's command run the way a pod runs it, without a container engine: namespaces, a read-only root, a uid.

    spec = ContainerSpec(name, rootfs, argv, env, uid=10001, gid=10001, read_only_root=True,
                         tmpfs={"/tmp": "64Mi"}, binds=[Bind(ca_dir, "/etc/smtp-ca")])
    process = ContainerProcess(spec, workdir).start()      # a ServiceProcess: wait_ready, wait_exit, output, stop
    process.signal(signal.SIGTERM)                          # reaches the service, PID 1 of the container
    process.container_status()                              # its uid and PIDs, read from the host's /proc

`rootfs` is a `buildah mount` directory (tests.support.buildah.working_container). The container gets its own
mount, PID and UTS namespaces and shares the host's network (as buildah's chroot isolation does): ports are the
host's. tests/support/container_init.py, its first process, says what is mounted how.

Invariants:
- the container's environment is exactly the spec's (plus HOME, as runc sets it), never the test runner's;
- a signal goes to the container's PID 1, as the kubelet's runtime sends it, not to the `unshare` around it;
- `unshare --kill-child` and the process group of ServiceProcess: stopping or killing it leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .processes import ServiceProcess

INIT = Path(__file__).resolve().with_name("container_init.py")
_SIZE = re.compile(r"^(\d+)(Ki|Mi|Gi|k|M|G)?$")
_UNITS = {"": 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "k": 10**3, "M": 10**6, "G": 10**9}


@dataclass(frozen=True)
class Bind:
    """A host file or directory seen at `dst` in the container (a ConfigMap or Secret volume, a hosts file)."""

    src: Path
    dst: str
    read_only: bool = True


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    rootfs: Path
    argv: list[str]
    env: dict[str, str]
    uid: int
    gid: int
    read_only_root: bool
    tmpfs: dict[str, str] = field(default_factory=dict)  # mount path -> size limit, Kubernetes quantity (64Mi)
    binds: list[Bind] = field(default_factory=list)
    workdir: str = "/"


def tmpfs_size(quantity: str) -> str:
    """A Kubernetes quantity (64Mi, 100M, 1Gi) as tmpfs's size option, in bytes."""
    match = _SIZE.match(quantity)
    assert match, f"unsupported size limit {quantity!r} (expected a whole number with Ki, Mi, Gi, k, M or G)"
    return str(int(match.group(1)) * _UNITS[match.group(2) or ""])


@dataclass(frozen=True)
class ContainerStatus:
    """The container's PID 1 as the host sees it."""

    host_pid: int
    pid_in_container: int
    uid: int
    gid: int
    no_new_privs: bool
    capabilities: int  # effective set, as a bit mask


class ContainerProcess(ServiceProcess):
    """One container: `unshare` around container_init.py, which becomes the image's command."""

    def __init__(self, spec: ContainerSpec, workdir: Path, ready_url: str | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        hosts = workdir / f"{spec.name}.hosts"
        hosts.write_text(f"# Kubernetes-managed hosts file (as the kubelet writes it).\n127.0.0.1\tlocalhost\n"
                         f"127.0.0.1\t{spec.name}\n")
        hostname = workdir / f"{spec.name}.hostname"
        hostname.write_text(spec.name + "\n")
        spec_file = workdir / f"{spec.name}.spec.json"
        spec_file.write_text(json.dumps({
            "rootfs": str(spec.rootfs), "argv": spec.argv, "env": spec.env, "uid": spec.uid, "gid": spec.gid,
            "read_only_root": spec.read_only_root, "hostname": spec.name, "workdir": spec.workdir,
            "tmpfs": {dst: tmpfs_size(size) for dst, size in spec.tmpfs.items()},
            "binds": [{"src": str(b.src), "dst": b.dst, "read_only": b.read_only}
                      for b in [*spec.binds, Bind(hosts, "/etc/hosts"), Bind(hostname, "/etc/hostname")]],
        }, indent=1))
        argv = ["unshare", "--mount", "--pid", "--uts", "--fork", "--kill-child", "--",
                sys.executable, "-I", str(INIT), str(spec_file)]
        super().__init__(spec.name, argv, {}, workdir / f"{spec.name}.log", ready_url=ready_url)
        self.spec = spec

    def _children(self) -> list[int]:
        try:
            return [int(pid) for pid in Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()]
        except FileNotFoundError:  # unshare is gone already
            return []

    @property
    def container_pid(self) -> int:
        """The host PID of the container's PID 1 (the only child of `unshare`)."""
        children = self._children()
        assert len(children) == 1, f"{self.name}: expected one process under unshare, found {children}"
        return children[0]

    def signal(self, signum: int = signal.SIGTERM) -> None:
        """Signal the container's PID 1; nothing when it has exited already (unshare follows it at once)."""
        if self.alive:
            for pid in self._children():
                os.kill(pid, signum)

    def container_status(self) -> ContainerStatus:
        pid = self.container_pid
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        return ContainerStatus(
            host_pid=pid, pid_in_container=int(fields["NSpid"].split()[-1]),
            uid=int(fields["Uid"].split()[1]), gid=int(fields["Gid"].split()[1]),
            no_new_privs=fields["NoNewPrivs"].strip() == "1", capabilities=int(fields["CapEff"].strip(), 16))

    def last_words(self, lines: int = 5) -> str:
        """The last lines the container wrote: what a failing container says about why."""
        said = [line for line in self.output().splitlines() if line.strip()]
        return "\n".join(said[-lines:])
