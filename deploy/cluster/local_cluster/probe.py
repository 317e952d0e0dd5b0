"""Socket probes on 127.0.0.1: is a port taken, does an AMQP broker answer on it."""

from __future__ import annotations

import socket

AMQP_0_9_1_HEADER = b"AMQP\x00\x00\x09\x01"
METHOD_FRAME = 1


def port_open(port: int, timeout: float = 1.0) -> bool:
    """Something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def amqp_answers(port: int, timeout: float = 3.0) -> bool:
    """A broker (or a proxy in front of one) answers the AMQP 0-9-1 protocol header with a method frame
    (Connection.Start); a port that accepts and then closes, or says nothing, does not count."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            conn.sendall(AMQP_0_9_1_HEADER)
            first = conn.recv(1)
    except OSError:
        return False
    return first == bytes([METHOD_FRAME])
