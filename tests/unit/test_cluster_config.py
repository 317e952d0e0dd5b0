"""local_cluster: the files it writes for nodes and haproxy, and what it reads from haproxy, epmd and /proc."""

from __future__ import annotations

from pathlib import Path

import pytest
from local_cluster import ClusterError, ClusterSettings, FrontSpec, NodePlace, NodeSpec
from local_cluster.epmd import parse_names
from local_cluster.front import render_haproxy_cfg, up_servers
from local_cluster.node import node_environment, render_rabbitmq_conf
from local_cluster.process import carries
from local_cluster.rabbitmq import RabbitMQ


def test_default_settings_name_three_nodes_on_consecutive_ports() -> None:
    specs = ClusterSettings.from_env({}).node_specs()
    assert [(s.name, s.amqp_port, s.dist_port) for s in specs] == [
        ("rc1@localhost", 5681, 25681), ("rc2@localhost", 5682, 25682), ("rc3@localhost", 5683, 25683)]
    assert all(s.seed == "rc1@localhost" for s in specs)
    assert specs[1].home == Path("/tmp/welcome-mail-cluster/rc2")
    assert specs[1].url == "amqp://guest:guest@127.0.0.1:5682/"


def test_settings_move_the_whole_cluster() -> None:
    settings = ClusterSettings.from_env({"CLUSTER_STATE_DIR": "/tmp/other", "CLUSTER_NODE_PREFIX": "x",
                                         "CLUSTER_FRONT_PORT": "6680", "CLUSTER_AMQP_BASE_PORT": "6681",
                                         "CLUSTER_DIST_BASE_PORT": "26681", "CLUSTER_TIMEOUT": "30"})
    front = settings.front_spec()
    assert (front.port, front.servers, front.home) == (6680, (("x1", "127.0.0.1", 6681), ("x2", "127.0.0.1", 6682),
                                                               ("x3", "127.0.0.1", 6683)),
                                                       Path("/tmp/other"))
    assert settings.node_specs()[2].name == "x3@localhost" and settings.timeout == 30


def test_a_malformed_port_names_its_variable() -> None:
    with pytest.raises(ClusterError, match="CLUSTER_FRONT_PORT must be a whole number"):
        ClusterSettings.from_env({"CLUSTER_FRONT_PORT": "56 80"})


def test_a_clustered_node_listens_on_loopback_and_joins_its_seed() -> None:
    conf = render_rabbitmq_conf(NodeSpec("rc2@localhost", 5682, 25682, Path("/s/rc2"), seed="rc1@localhost"))
    assert "listeners.tcp.1 = 127.0.0.1:5682\n" in conf
    assert "cluster_formation.peer_discovery_backend = classic_config\n" in conf
    assert "cluster_formation.classic_config.nodes.1 = rc1@localhost\n" in conf
    assert "cluster_partition_handling = pause_minority\n" in conf


def test_a_private_node_has_no_peers() -> None:
    conf = render_rabbitmq_conf(NodeSpec("wm-broker@localhost", 5790, 25790, Path("/tmp/wm-broker")))
    assert "listeners.tcp.1 = 127.0.0.1:5790\n" in conf
    assert "cluster_formation" not in conf and "partition" not in conf


def test_node_environment_keeps_everything_in_its_home() -> None:
    env = node_environment(NodeSpec("rc1@localhost", 5681, 25681, Path("/s/rc1")))
    assert env["HOME"] == "/s/rc1"    # the Erlang cookie is $HOME/.erlang.cookie
    assert env["RABBITMQ_CONF_ENV_FILE"] == "/dev/null"
    assert {env[k] for k in ("RABBITMQ_MNESIA_BASE", "RABBITMQ_LOG_BASE", "RABBITMQ_PID_FILE")} == {
        "/s/rc1/mnesia", "/s/rc1/log", "/s/rc1/rabbitmq.pid"}
    assert (env["RABBITMQ_NODE_PORT"], env["RABBITMQ_DIST_PORT"]) == ("5681", "25681")


def test_haproxy_config_balances_over_every_node_with_checks() -> None:
    spec = FrontSpec(5680, (("rc1", "127.0.0.1", 5681), ("rc2", "127.0.0.1", 5682)), Path("/s"))
    cfg = render_haproxy_cfg(spec, run_as="haproxy")
    assert "    bind 127.0.0.1:5680\n" in cfg
    assert "    server rc1 127.0.0.1:5681 check\n    server rc2 127.0.0.1:5682 check\n" in cfg
    assert "    stats socket /s/haproxy.sock mode 600 level admin\n" in cfg
    assert "    user haproxy\n" in cfg
    assert "user" not in render_haproxy_cfg(spec, run_as=None).split("defaults")[0]


SHOW_STAT = """# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status
amqp,FRONTEND,,,3,3,4096,3,0,0,0,0,0,,,,,OPEN
rabbitmq_nodes,rc1,0,0,1,1,,1,0,0,,0,,0,0,0,0,UP
rabbitmq_nodes,rc2,0,0,1,1,,1,0,0,,0,,0,0,0,0,DOWN
rabbitmq_nodes,rc3,0,0,1,1,,1,0,0,,0,,0,0,0,0,UP 1/2
rabbitmq_nodes,BACKEND,0,0,3,3,410,3,0,0,0,0,,0,0,0,0,UP

"""


def test_up_servers_are_read_from_show_stat_by_column_name() -> None:
    assert up_servers(SHOW_STAT) == ("rc1", "rc3")
    assert up_servers("") == ()


def test_epmd_names_give_short_names_and_ports() -> None:
    text = "epmd: up and running on port 4369 with data:\nname rabbit at port 25672\nname rc1 at port 25681\n"
    assert parse_names(text) == {"rabbit": 25672, "rc1": 25681}
    assert parse_names("epmd: up and running on port 4369 with data:\n") == {}


def test_a_node_is_recognised_by_its_home_argument_only_as_a_whole() -> None:
    argv = ["beam.smp", "--", "-home", "/tmp/c/rc1", "--", "-noshell"]
    assert carries(argv, ("-home", "/tmp/c/rc1"))
    assert not carries(argv, ("-home", "/tmp/c/rc"))
    assert not carries(["beam.smp", "-home"], ("-home", "/tmp/c/rc1"))


def test_places_put_each_node_on_its_own_address_and_namespace() -> None:
    places = tuple(NodePlace(f"h{i}", f"198.18.7.{i}", f"ns{i}") for i in (1, 2, 3))
    settings = ClusterSettings(places=places, inetrc=Path("/tmp/x.inetrc"), net_ticktime=10)
    spec = settings.node_specs()[1]
    assert (spec.name, spec.address, spec.netns, spec.seed) == ("rc2@h2", "198.18.7.2", "ns2", "rc1@h1")
    assert spec.url == "amqp://guest:guest@198.18.7.2:5682/"
    assert settings.front_spec().servers[2] == ("rc3", "198.18.7.3", 5683)
    conf = render_rabbitmq_conf(spec)
    assert "listeners.tcp.1 = 198.18.7.2:5682\n" in conf and "loopback_users.guest = false\n" in conf
    env = node_environment(spec)
    assert env["ERL_FLAGS"] == "-kernel inet_dist_use_interface {198,18,7,2} -kernel net_ticktime 10"
    assert (env["ERL_EPMD_ADDRESS"], env["ERL_INETRC"]) == ("198.18.7.2", "/tmp/x.inetrc")


def test_a_tool_in_a_namespace_is_entered_as_root_then_run_as_the_rabbitmq_user() -> None:
    rabbit = RabbitMQ(Path("/usr/lib/rabbitmq/bin"), run_as="rabbitmq")
    argv, user = rabbit.command(["rabbitmqctl", "status"], "ns1")
    assert argv[-6:] == ["setpriv", "--reuid=rabbitmq", "--regid=rabbitmq", "--clear-groups", "rabbitmqctl", "status"]
    assert argv[1:4] == ["netns", "exec", "ns1"] and user is None
    assert rabbit.command(["rabbitmqctl"], None) == (["rabbitmqctl"], "rabbitmq")
