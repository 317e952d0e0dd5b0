"""local_cluster.ctl_json: what `rabbitmqctl --formatter json` prints, read back as values (samples from 3.10)."""

from __future__ import annotations

import pytest
from local_cluster import ClusterError, ClusterStatus, QueueState
from local_cluster.ctl_json import find_queue, parse

CLUSTER_STATUS = (
    '{"alarms":[],"cluster_name":"rc1@vm","disk_nodes":["rc1@localhost","rc2@localhost","rc3@localhost"],'
    '"feature_flags":[{"name":"quorum_queue","state":"enabled"}],"partitions":{},"ram_nodes":[],'
    '"running_nodes":["rc3@localhost","rc1@localhost"],"versions":{}}')

LIST_QUEUES = """[
{"name":"classic-probe","type":"classic","leader":"","online":"","members":""}
,{"name":"qq-probe","type":"quorum","leader":"rc3@localhost","online":["rc3@localhost","rc2@localhost"],"members":["rc3@localhost","rc2@localhost","rc1@localhost"]}
]"""


def test_cluster_status_gives_running_and_disk_nodes_sorted() -> None:
    status = ClusterStatus.from_json(CLUSTER_STATUS)
    assert status.running_nodes == ("rc1@localhost", "rc3@localhost")
    assert status.disk_nodes == ("rc1@localhost", "rc2@localhost", "rc3@localhost")


def test_a_quorum_queue_has_a_leader_and_online_members() -> None:
    assert find_queue(LIST_QUEUES, "qq-probe") == QueueState(
        "qq-probe", leader="rc3@localhost", online=("rc2@localhost", "rc3@localhost"))


def test_a_classic_queue_has_no_leader_and_no_members() -> None:
    assert find_queue(LIST_QUEUES, "classic-probe") == QueueState("classic-probe", leader=None, online=())


def test_a_queue_not_listed_is_none() -> None:
    assert find_queue(LIST_QUEUES, "nope") is None
    assert find_queue("", "nope") is None   # -q and no queues at all: rabbitmqctl prints nothing


def test_output_that_is_not_json_names_the_command() -> None:
    with pytest.raises(ClusterError, match="cluster_status printed no JSON"):
        ClusterStatus.from_json("Error: unable to perform an operation on node 'rc1@localhost'")
    with pytest.raises(ClusterError, match="expected an object"):
        ClusterStatus.from_json("[]")


def test_parse_reads_arrays_and_objects() -> None:
    assert parse('[\n{"name":"/"}\n]', "list_vhosts") == [{"name": "/"}]
    assert parse("  \n", "list_connections") == []
