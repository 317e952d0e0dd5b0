"""How the image smoke test turns the chart into a container (tests/images/pods.py), without buildah: Kubernetes'
rule for command and args, and an emptyDir size limit as a tmpfs size."""

from __future__ import annotations

import pytest

from tests.images.pods import command_of
from tests.support.buildah import ImageConfig
from tests.support.containers import tmpfs_size

IMAGE = ImageConfig("localhost/x:1", "10001:10001", {}, ["email-service"], ["run"], "/")


@pytest.mark.parametrize("container,argv", [
    ({}, ["email-service", "run"]),  # the image's ENTRYPOINT and CMD
    ({"args": ["dlq", "list"]}, ["email-service", "dlq", "list"]),  # args replace CMD only
    ({"command": ["python3"]}, ["python3"]),  # command replaces ENTRYPOINT, and CMD goes with it
    ({"command": ["python3"], "args": ["-V"]}, ["python3", "-V"]),
])
def test_command_and_args_follow_kubernetes(container, argv):
    assert command_of(IMAGE, container) == argv


def test_an_empty_dir_size_limit_becomes_a_tmpfs_size():
    sizes = [tmpfs_size(q) for q in ("64Mi", "1Gi", "100M", "1000")]
    assert sizes == [str(64 << 20), str(1 << 30), "100000000", "1000"]
    with pytest.raises(AssertionError, match="unsupported size limit"):
        tmpfs_size("1.5Gi")
