"""The hashed dependency locks as data, and the three ways a lock can go stale.

A lock is uv's requirements format (`make lock` writes it): one `name==version ; marker` line per package, each
followed by the `--hash=sha256:...` of every artefact PyPI serves for that version. It is a universal resolution,
meant for the images' targets, TARGETS (CPython 3.11 on Linux x86_64 and aarch64): a marker is judged against
each of them, never against the machine running the tests. Pure file logic, no network.

Invariants the locks keep (each check below returns what breaks them, empty when they hold):
- `unsatisfied`: every requirement of a lock's inputs that applies to a target is pinned there, within its range;
- `unhashed`: every pin is exact (`==`) and carries at least one sha256;
- `disagreements`: a package pinned by several locks is pinned alike (version and hashes) on every target.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = "make lock"


class Target(NamedTuple):
    """One platform an image may be built for: a name for messages and its PEP 508 marker environment."""

    name: str
    environment: Mapping[str, str]


def _cpython_311_on_linux(machine: str, patch: int) -> Target:
    version = f"3.11.{patch}"
    return Target(f"Linux {machine}, CPython {version}", {
        "implementation_name": "cpython", "implementation_version": version, "os_name": "posix",
        "platform_machine": machine, "platform_python_implementation": "CPython", "platform_release": "",
        "platform_system": "Linux", "platform_version": "", "python_full_version": version,
        "python_version": "3.11", "sys_platform": "linux", "extra": ""})


# Every 3.11 patch release up to 3.11.19 (more than exist): Debian bookworm ships 3.11.2, python:3.11-slim the latest.
TARGETS = tuple(_cpython_311_on_linux(machine, patch) for machine in ("x86_64", "aarch64") for patch in range(20))


@dataclass(frozen=True)
class Pin:
    """One locked package: an exact version, the marker limiting where it is installed, its artefacts' hashes."""

    name: NormalizedName
    version: Version | None  # None: not an exact pin
    marker: Marker | None
    hashes: frozenset[str]
    line: str

    def applies_to(self, target: Target) -> bool:
        return self.marker is None or self.marker.evaluate(dict(target.environment))


@dataclass(frozen=True)
class Lock:
    """A lock file and the inputs it was compiled from (the pyproject.toml files, requirements-test.txt)."""

    path: Path
    inputs: tuple[Path, ...]

    @property
    def label(self) -> str:
        return label(self.path)

    @cached_property
    def pins(self) -> tuple[Pin, ...]:
        return read_pins(self.path)

    def pins_for(self, target: Target) -> dict[NormalizedName, Pin]:
        return {pin.name: pin for pin in self.pins if pin.applies_to(target)}


def label(path: Path) -> str:
    """A path as messages name it: relative to the repository when inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _where(failed: list[Target], targets: tuple[Target, ...]) -> str:
    if len(failed) == len(targets):
        return f"on all {len(targets)} targets"
    return f"on {failed[0].name}" + (f" and {len(failed) - 1} more" if len(failed) > 1 else "")


_SERVICES = ("producer-service", "email-service")
# What `make lock` compiles: the dev lock from everything .venv holds, each service lock from its pyproject alone.
DEV_LOCK = Lock(ROOT / "requirements-dev.lock",
                tuple(ROOT / service / "pyproject.toml" for service in _SERVICES) + (ROOT / "requirements-test.txt",))
SERVICE_LOCKS = tuple(Lock(ROOT / service / "requirements.lock", (ROOT / service / "pyproject.toml",))
                      for service in _SERVICES)
LOCKS = (DEV_LOCK, *SERVICE_LOCKS)


def _logical_lines(text: str) -> Iterable[str]:
    """The lines of a requirements file with backslash continuations joined and comments dropped."""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        if logical := (pending + line).strip():
            yield logical
        pending = ""
    if pending.strip():
        yield pending.strip()


_SHA256 = "hash=sha256:"


def read_pins(path: Path) -> tuple[Pin, ...]:
    """Every pin of a lock. An option line (-e, an index URL) is an error naming it; a requirement that is not an
    exact pin is kept without a version, for `unhashed` to report."""
    pins = []
    for line in _logical_lines(path.read_text()):
        requirement_text, *options = line.split(" --")
        if requirement_text.startswith("-"):
            raise ValueError(f"{path}: unexpected option in a lock: {line!r}")
        requirement = Requirement(requirement_text)
        specifiers = list(requirement.specifier)
        pinned = len(specifiers) == 1 and specifiers[0].operator == "==" and "*" not in specifiers[0].version
        hashes = frozenset(option.removeprefix(_SHA256) for option in options if option.startswith(_SHA256))
        pins.append(Pin(canonicalize_name(requirement.name), Version(specifiers[0].version) if pinned else None,
                        requirement.marker, hashes, line))
    return tuple(pins)


def read_requirements(path: Path) -> tuple[Requirement, ...]:
    """The direct requirements of an input: `[project].dependencies` of a pyproject.toml, else requirement lines."""
    if path.name == "pyproject.toml":
        return tuple(Requirement(text) for text in tomllib.loads(path.read_text())["project"]["dependencies"])
    return tuple(Requirement(line) for line in _logical_lines(path.read_text()))


def _applies(requirement: Requirement, target: Target) -> bool:
    return requirement.marker is None or requirement.marker.evaluate(dict(target.environment))


def unsatisfied(lock: Lock, targets: Iterable[Target] = TARGETS) -> list[str]:
    """Input requirements the lock leaves missing or pins outside their range, each with the targets it fails on."""
    targets = tuple(targets)
    problems: dict[str, list[Target]] = {}
    for target in targets:
        pins = lock.pins_for(target)
        for source in lock.inputs:
            for requirement in read_requirements(source):
                if not _applies(requirement, target):
                    continue
                pin = pins.get(canonicalize_name(requirement.name))
                if pin is None or pin.version is None:
                    problem = f"{requirement} (from {label(source)}) is not pinned"
                elif not requirement.specifier.contains(pin.version, prereleases=True):
                    problem = f"{requirement} (from {label(source)}) is pinned at {pin.version}, outside its range"
                else:
                    continue
                problems.setdefault(problem, []).append(target)
    return [f"{problem} {_where(failed, targets)}" for problem, failed in problems.items()]


def unhashed(lock: Lock) -> list[str]:
    """Pins that are not exact or carry no sha256: pip's --require-hashes would refuse the whole lock."""
    return [f"{pin.line!r} is not an exact pin with sha256 hashes" for pin in lock.pins
            if pin.version is None or not pin.hashes]


def disagreements(locks: Iterable[Lock], targets: Iterable[Target] = TARGETS) -> list[str]:
    """Packages that two locks pin differently (version or hashes) on the same target."""
    locks, targets = tuple(locks), tuple(targets)
    problems: dict[str, list[Target]] = {}
    for target in targets:
        seen: dict[NormalizedName, tuple[Lock, Pin]] = {}
        for lock in locks:
            for name, pin in lock.pins_for(target).items():
                first_lock, first = seen.setdefault(name, (lock, pin))
                if first.version != pin.version:
                    problem = f"{name}: {first_lock.label} pins {first.version}, {lock.label} {pin.version}"
                elif first.hashes != pin.hashes:
                    problem = f"{name} {pin.version}: {first_lock.label} and {lock.label} list other hashes"
                else:
                    continue
                problems.setdefault(problem, []).append(target)
    return [f"{problem} {_where(failed, targets)}" for problem, failed in problems.items()]
