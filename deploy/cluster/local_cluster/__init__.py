"""A local RabbitMQ cluster for failover tests, and private RabbitMQ nodes, on this machine (standard library only).

    Cluster.from_env().up()       three nodes rc1..rc3@localhost behind haproxy on 127.0.0.1:5680 (see settings)
    Node(NodeSpec(...)).start()   one private node of its own (see node)

Modules: settings (names, ports, directories), node (one node: files, process, rabbitmqctl), cluster (the three
nodes and the front together), front (haproxy), ctl_json (rabbitmqctl JSON as values), process (pid files),
probe (socket probes), epmd, rabbitmq (the installation), lock, health, waiting, errors, cli.
"""

from .cluster import Cluster
from .ctl_json import ClusterStatus, QueueState
from .errors import ClusterError
from .front import Front, FrontSpec
from .node import Node, NodeSpec
from .settings import ClusterSettings, NodePlace

__all__ = ["Cluster", "ClusterError", "ClusterSettings", "ClusterStatus", "Front", "FrontSpec", "Node", "NodePlace",
           "NodeSpec", "QueueState"]
