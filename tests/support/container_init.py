"""The first process of a container that tests.support.containers starts: mounts, then the image's command.

    unshare --mount --pid --uts --fork --kill-child -- python container_init.py SPEC.json

It runs as root inside fresh mount, PID and UTS namespaces (the host network is shared, as buildah's chroot
isolation does), as PID 1, and does what a container runtime does for a pod before it starts the container:

- the image's root (a `buildah mount` directory) is bind-mounted onto itself and, when the spec says so, remounted
  read-only (`readOnlyRootFilesystem`); the mount points the spec needs are created first, as runc creates them in
  the container's writable layer before it makes the root read-only;
- the pod's host name, /proc of the new PID namespace, a read-only /sys, a small read-only /dev with null, zero,
  full, random, urandom and tty;
- each tmpfs (an `emptyDir`: /tmp) and each bind mount (a ConfigMap or Secret volume, the kubelet's /etc/hosts),
  read-only where asked;
- then chroot, no supplementary groups, the spec's gid and uid (every capability goes with uid 0), no_new_privs,
  HOME from the image's /etc/passwd as runc sets it, and exec of the command with exactly the spec's environment:
  the service itself becomes PID 1 and receives the signals sent to the container.

Invariant: the command never starts on a root that should be read-only but is not: a write probe must fail with
EROFS first. Failures before the exec exit with 125 (set-up) or 127 (no such command) and say why on stderr.

Standard library only, and no imports from the repository: it runs with the host's Python before the chroot.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

PR_SET_NO_NEW_PRIVS = 38
DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0)}


def fail(code: int, message: str) -> None:
    print(f"container-init: {message}", file=sys.stderr, flush=True)
    os._exit(code)


def mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True)
    if result.returncode != 0:
        fail(125, f"mount {' '.join(args)}: {result.stderr.strip()}")


def inside(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def make_mount_point(target: Path, source: Path | None) -> None:
    if target.exists() or target.is_symlink():
        return
    if source is not None and not source.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()
    else:
        target.mkdir(parents=True)


def read_only_remount(target: Path) -> None:
    mount("-o", "remount,bind,ro", str(target))


def prove_read_only(root: Path) -> None:
    probe = root / ".container-init-write-probe"
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_WRONLY, 0o600))
    except OSError as exc:
        if exc.errno == errno.EROFS:
            return
        fail(125, f"write probe on the read-only root failed with {exc!r}, not EROFS")
    probe.unlink()
    fail(125, "the root filesystem is still writable after the read-only remount")


def populate_dev(root: Path) -> None:
    dev = inside(root, "/dev")
    mount("-t", "tmpfs", "-o", "mode=755,size=64k,nosuid,noexec", "tmpfs", str(dev))
    for name, (major, minor) in DEVICES.items():
        os.mknod(dev / name, stat.S_IFCHR | 0o666, os.makedev(major, minor))
        os.chmod(dev / name, 0o666)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, dev / name)
    mount("-o", "remount,ro", str(dev))


def home_of(root: Path, uid: int) -> str:
    passwd = inside(root, "/etc/passwd")
    for line in passwd.read_text(errors="replace").splitlines() if passwd.exists() else []:
        fields = line.split(":")
        if len(fields) >= 6 and fields[2] == str(uid):
            return fields[5] or "/"
    return "/"


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    root = Path(spec["rootfs"])
    binds = [(Path(b["src"]), b["dst"], b["read_only"]) for b in spec["binds"]]
    for src, dst, _ in binds:
        make_mount_point(inside(root, dst), src)
    for dst in spec["tmpfs"]:
        make_mount_point(inside(root, dst), None)
    mount("--bind", str(root), str(root))
    if spec["read_only_root"]:
        read_only_remount(root)
        prove_read_only(root)
    mount("-t", "proc", "-o", "nosuid,nodev,noexec", "proc", str(inside(root, "/proc")))
    mount("-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "sysfs", str(inside(root, "/sys")))
    populate_dev(root)
    for dst, size in spec["tmpfs"].items():
        mount("-t", "tmpfs", "-o", f"size={size},mode=1777,nosuid,nodev", "tmpfs", str(inside(root, dst)))
    for src, dst, read_only in binds:
        mount("--bind", str(src), str(inside(root, dst)))
        if read_only:
            read_only_remount(inside(root, dst))
    socket.sethostname(spec["hostname"])
    os.chroot(root)
    os.chdir(spec["workdir"])
    uid, gid = spec["uid"], spec["gid"]
    env = {"HOME": home_of(Path("/"), uid), **spec["env"]}
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        fail(125, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(ctypes.get_errno())}")
    argv = spec["argv"]
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        fail(127, f"cannot run {argv[0]!r} in the image (PATH={env.get('PATH', '')}): {exc.strerror}")


if __name__ == "__main__":
    main(sys.argv[1])
