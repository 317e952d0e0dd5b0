"""The test-support layer's TCP fault proxy (tests/support/fault_proxy.py): each fault it promises, switched while
traffic flows, against an echo server and against the real RabbitMQ (whose heartbeat must notice a blackout).

A proxy that forwarded during a "blackhole", or closed the sockets instead of holding them, would make every network
fault scenario prove nothing; these tests fail when it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aio_pika
import pytest

from tests.support.broker import VHost
from tests.support.fault_proxy import FaultProxy
from tests.support.ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
QUIET = 0.3  # how long "nothing arrives" is watched for; long against loopback's microseconds


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    """A TCP server that sends back every byte it reads and closes when its client does."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    port = free_port()
    server = await asyncio.start_server(echo, "127.0.0.1", port)
    yield port
    server.close()


@pytest.fixture
async def proxy(echo_port: int) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(echo_port) as running:
        yield running


async def connect(proxy: FaultProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.port)


async def round_trip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes,
                     timeout: float = 5) -> bytes:
    writer.write(data)
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(len(data)), timeout)


async def nothing_arrives(reader: asyncio.StreamReader) -> bool:
    try:
        await asyncio.wait_for(reader.read(1), QUIET)
    except asyncio.TimeoutError:
        return True
    return False


async def test_forwards_both_ways_and_adds_the_latency_asked_for_each_direction(proxy: FaultProxy) -> None:
    reader, writer = await connect(proxy)
    assert await round_trip(reader, writer, b"hello") == b"hello"
    proxy.latency(0.1, jitter=0.02)
    started = time.monotonic()
    for i in range(3):
        assert await round_trip(reader, writer, f"ping {i}".encode()) == f"ping {i}".encode()
    assert (time.monotonic() - started) / 3 >= 2 * (0.1 - 0.02)  # both directions held
    proxy.clear()
    writer.close()


async def test_bandwidth_cap_spreads_a_large_write(proxy: FaultProxy) -> None:
    reader, writer = await connect(proxy)
    proxy.bandwidth(200_000, to_client=False)
    started = time.monotonic()
    assert len(await round_trip(reader, writer, b"x" * 100_000)) == 100_000
    assert time.monotonic() - started >= 0.45  # 100 kB at 200 kB/s
    writer.close()


async def test_blackhole_holds_every_socket_open_and_silent_then_heal_delivers_what_was_held(
        proxy: FaultProxy) -> None:
    reader, writer = await connect(proxy)
    assert await round_trip(reader, writer, b"before") == b"before"
    proxy.blackhole()
    writer.write(b"during")
    await writer.drain()
    assert await nothing_arrives(reader), "a blackholed link forwarded"
    late_reader, late_writer = await connect(proxy)  # accepted, not connected upstream
    late_writer.write(b"late")
    assert await nothing_arrives(late_reader)
    assert not reader.at_eof() and not late_reader.at_eof()  # no FIN, no RST
    proxy.heal()
    assert await asyncio.wait_for(reader.readexactly(6), 5) == b"during"  # TCP would have retransmitted it
    assert await asyncio.wait_for(late_reader.readexactly(4), 5) == b"late"
    writer.close()
    late_writer.close()


async def test_keep_dead_blackout_leaves_old_links_dead_and_serves_new_ones(proxy: FaultProxy) -> None:
    reader, writer = await connect(proxy)
    assert await round_trip(reader, writer, b"alive") == b"alive"
    proxy.blackhole(keep_dead=True)
    writer.write(b"lost")
    await writer.drain()
    proxy.heal()
    assert await nothing_arrives(reader), "a link from before the blackout came back"
    assert not reader.at_eof()
    fresh_reader, fresh_writer = await connect(proxy)
    assert await round_trip(fresh_reader, fresh_writer, b"new") == b"new"
    assert proxy.open_links == 2  # the dead one held until both its ends close (or the proxy stops)
    writer.close()
    fresh_writer.close()


async def test_reset_sends_an_rst_to_the_client_and_keeps_serving(proxy: FaultProxy) -> None:
    reader, writer = await connect(proxy)
    assert await round_trip(reader, writer, b"x") == b"x"
    proxy.reset()
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(1), 5)
        writer.write(b"y")  # some kernels report the reset on the next write
        await writer.drain()
        await asyncio.wait_for(reader.read(1), 5)
    writer.close()
    reader, writer = await connect(proxy)
    assert await round_trip(reader, writer, b"z") == b"z"
    writer.close()


async def test_slow_close_delays_the_fin(proxy: FaultProxy) -> None:
    reader, writer = await connect(proxy)
    proxy.slow_close(0.5)
    writer.write_eof()  # the echo server closes in turn; its FIN reaches us 2 x 0.5 s later
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(1), 5) == b""
    assert time.monotonic() - started >= 0.9
    writer.close()


def test_runs_in_a_thread_of_its_own_for_code_without_a_loop() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server, FaultProxy(server.getsockname()[1]) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as client:
            peer, _ = server.accept()
            with peer:
                client.sendall(b"from a thread")
                assert peer.recv(100) == b"from a thread"
                proxy.blackhole()
                client.sendall(b"held")
                peer.settimeout(QUIET)
                with pytest.raises(socket.timeout):
                    peer.recv(100)
                proxy.heal()
                peer.settimeout(5)
                assert peer.recv(100) == b"held"


async def test_amqp_heartbeat_notices_a_keep_dead_blackout_and_a_new_connection_works(vhost: VHost) -> None:
    broker = urlsplit(vhost.url)
    async with FaultProxy(broker.port or 5672, upstream_host=broker.hostname or "localhost") as proxy:
        url = proxy.url_for(vhost.url)
        connection = await aio_pika.connect(f"{url}?heartbeat=1")
        closed = asyncio.Event()
        connection.close_callbacks.add(lambda *args: closed.set())
        proxy.blackhole(keep_dead=True)
        await asyncio.wait_for(closed.wait(), 10)  # two missed heartbeats of 1 s, plus a margin
        proxy.heal()
        fresh = await aio_pika.connect(url)
        channel = await fresh.channel()
        await channel.declare_queue("", exclusive=True)
        await fresh.close()
        with contextlib.suppress(Exception):
            await connection.close()
