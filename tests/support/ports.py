"""Free TCP ports for test servers and services.

Invariant: a port handed out here lies below Linux's ephemeral range (32768-60999), so no outgoing connection of
this or any other process can take it between the moment it is chosen and the moment the server binds it; a port
the kernel hands out for port 0 gives no such promise. Nor does it ever hand out a port of the machine's fixed
RabbitMQ nodes (`RESERVED`): a node that is down (killed by a cluster test) must find its ports free when it starts
again, and a test server in another xdist worker must not take one meanwhile.
"""

from __future__ import annotations

import random
import socket

_LOW, _HIGH = 20000, 32000
# Erlang distribution ports (AMQP port + 20000) in that range: the shared broker's (5672) and the local cluster's
# (deploy/cluster: rc1..rc3 on 5681-5683, dist 25681-25683; a few spare for CLUSTER_* overrides nearby)
RESERVED = frozenset({25672, *range(25680, 25690)})
_rng = random.Random()
_handed_out: set[int] = set()  # never the same port twice in one process, even after its server has stopped


def free_port() -> int:
    """A loopback TCP port that nothing is bound to right now and that this process has not handed out before."""
    for _ in range(500):
        port = _rng.randrange(_LOW, _HIGH)
        if port in _handed_out or port in RESERVED:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free TCP port between {_LOW} and {_HIGH} after 500 tries")
