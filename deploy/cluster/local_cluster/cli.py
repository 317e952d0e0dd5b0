"""`cluster.sh COMMAND` (or `python3 -m local_cluster COMMAND`): the local cluster from a shell.

Exit status 0 on success, 1 when the cluster did not do what was asked (the reason on stderr), 2 on bad usage.
Progress goes to stderr; stdout carries only answers (a URL, node names), so that scripts can read them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from . import settings
from .cluster import Cluster
from .errors import ClusterError
from .settings import ClusterSettings

log = logging.getLogger("local_cluster")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cluster.sh", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="A throw-away three-node RabbitMQ cluster on this machine, with an haproxy TCP front.\n"
                    "Needs root (the nodes run as the rabbitmq user) or the rabbitmq user itself.",
        epilog="settings (environment):\n" + settings.__doc__.split("\n\n")[1])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("up", help="start (or complete) the cluster and the front; print the front's URL")
    commands.add_parser("down", help="stop everything the cluster started and remove its state directory")
    commands.add_parser("status", help="nodes, membership, front; exit 0 only when all is healthy")
    for name, what in (("leader", "the node leading quorum queue QUEUE"),
                       ("members", "the online members of quorum queue QUEUE, one per line")):
        command = commands.add_parser(name, help=what)
        command.add_argument("queue", metavar="QUEUE")
        command.add_argument("vhost", metavar="VHOST", nargs="?", default="/")
    commands.add_parser("nodes", help="the running nodes, as the cluster sees them, one per line")
    for name, what in (("kill", "SIGKILL a node (rc1, rc1@localhost or 1)"),
                       ("start", "start a stopped or killed node again; wait until it has rejoined")):
        commands.add_parser(name, help=what).add_argument("node", metavar="NODE")
    ctl = commands.add_parser("ctl", help="rabbitmqctl against one node, with the cluster's cookie")
    ctl.add_argument("node", metavar="NODE")
    ctl.add_argument("args", metavar="ARGS", nargs=argparse.REMAINDER)
    url = commands.add_parser("url", help="the front's AMQP URL, or one node's")
    url.add_argument("node", metavar="NODE", nargs="?")
    return parser


def run(args: argparse.Namespace, cluster: Cluster) -> int:
    """Carry out one command; its exit status."""
    if args.command == "up":
        print(cluster.up())
    elif args.command == "down":
        cluster.down()
    elif args.command == "status":
        if not cluster.settings.state_dir.is_dir():
            print(f"not up (no {cluster.settings.state_dir})")
            return 1
        health = cluster.health()
        print("\n".join(health.lines()))
        return 0 if health.healthy else 1
    elif args.command == "leader":
        print(cluster.leader(args.queue, args.vhost))
    elif args.command == "members":
        print("\n".join(cluster.members(args.queue, args.vhost)))
    elif args.command == "nodes":
        print("\n".join(cluster.running_nodes()))
    elif args.command == "kill":
        cluster.kill_node(args.node)
    elif args.command == "start":
        cluster.start_node(args.node)
    elif args.command == "ctl":
        print(cluster.node(args.node).ctl(*args.args), end="")
    elif args.command == "url":
        print(cluster.node(args.node).url if args.node else cluster.url)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="[cluster] %(asctime)s.%(msecs)03d %(message)s",
                        datefmt="%H:%M:%S")
    try:
        return run(args, Cluster(ClusterSettings.from_env(os.environ)))
    except ClusterError as error:
        print(f"[cluster] error: {error}", file=sys.stderr)
        return 1
