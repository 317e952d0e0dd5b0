"""A TCP fault proxy between a client and its server, for the faults a real network makes and loopback does not.

    proxy = FaultProxy(upstream_port=5672)    # listens on 127.0.0.1:proxy.port (a free port, or `listen_port`)
    proxy.start()                              # its own event loop in a background thread; stop() ends it
    proxy.latency(0.05, jitter=0.01)           # each chunk held 50 +- 10 ms, each direction (or to_server=/to_client=)
    proxy.bandwidth(64_000)                    # bytes per second, per direction and link
    proxy.blackhole()                          # nothing forwarded any more, every socket stays open
    proxy.heal()                               # forwarding again
    proxy.blackhole(keep_dead=True)            # ... and the links open until heal() stay dead after it
    proxy.reset()                              # every open link closed with an RST on both sides
    proxy.slow_close(2.0)                      # a close of either side reaches the other side 2 s later

Every switch takes effect at once, on the links already open as well as on new ones, while traffic flows. The
switches are plain attribute writes and may be called from any thread; `start()` runs the proxy in a background
thread with a loop of its own (usable from sync code, another loop or a fixture), `async with FaultProxy(...)` on the
caller's loop.

Invariants:
- A link is one accepted client socket and one upstream socket. Bytes are forwarded in order, each direction on its
  own, and never reordered: latency delays every chunk by its own draw but a chunk never overtakes the one before.
- A blackout is the network dropping packets while TCP retransmits: nothing is sent either way (no byte, no FIN, no
  RST) and the proxy stops reading, so the senders' buffers fill as they would. New connections are accepted (the
  handshake completes, as with a load balancer's address) but not connected upstream while it lasts. After
  `heal()` what was held back goes through, unless a client or server gave up on the link meanwhile.
- `blackhole(keep_dead=True)`: every link open when `heal()` comes stays dead for good, as when the node behind a
  Kubernetes Service is gone and only new connections reach a surviving one. A dead link forwards nothing ever
  again; its sockets stay open (silent) until their owner closes them or the proxy stops.
- `stop()` closes every socket; counters (`links_opened`, `bytes_forwarded`) only grow.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from tests.support.ports import free_port

CHUNK = 65536
POLL_SECONDS = 0.01  # how soon a link notices a switch made from another thread


@dataclass
class Direction:
    """What one direction of every link suffers now. `bandwidth` in bytes per second, 0: unlimited."""

    latency: float = 0.0
    jitter: float = 0.0
    bandwidth: float = 0.0


@dataclass(eq=False)
class _Link:
    """One client connection and its upstream connection."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    dead: bool = False  # killed by a keep_dead blackout: forwards nothing ever again
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def writers(self) -> list[asyncio.StreamWriter]:
        return [writer for writer in (self.client, self.upstream) if writer is not None]

    def abort(self) -> None:
        """Close both sockets with an RST (SO_LINGER 0), not a FIN."""
        for writer in self.writers():
            sock = writer.transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

    def close(self) -> None:
        for writer in self.writers():
            writer.transport.close()


class FaultProxy:
    """A loopback TCP proxy to `upstream_host`:`upstream_port` whose faults can be switched while it runs."""

    def __init__(self, upstream_port: int, listen_port: int | None = None, upstream_host: str = "127.0.0.1",
                 seed: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = listen_port or free_port()
        self.to_server = Direction()
        self.to_client = Direction()
        self.blackholed = False
        self.keep_dead = False
        self.slow_close_seconds = 0.0
        self.links_opened = 0
        self.bytes_forwarded = 0
        self._rng = random.Random(seed)
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        """host:port the clients connect to instead of the server's."""
        return f"127.0.0.1:{self.port}"

    def url_for(self, url: str) -> str:
        """`url` (amqp://user:pw@host:port/vhost, ...) with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        credentials = parts.netloc.rpartition("@")[0]
        return urlunsplit(parts._replace(netloc=f"{credentials}@{self.address}" if credentials else self.address))

    @property
    def open_links(self) -> int:
        return len(self._links)

    # -- switches ---------------------------------------------------------------------------------------------------

    def latency(self, seconds: float, jitter: float = 0.0, to_server: bool = True, to_client: bool = True) -> None:
        """Hold each chunk `seconds` +- up to `jitter` (uniform) before forwarding it, in the directions named."""
        for direction, chosen in ((self.to_server, to_server), (self.to_client, to_client)):
            if chosen:
                direction.latency, direction.jitter = seconds, jitter

    def bandwidth(self, bytes_per_second: float, to_server: bool = True, to_client: bool = True) -> None:
        """Cap each link's throughput in the directions named (0: no cap)."""
        for direction, chosen in ((self.to_server, to_server), (self.to_client, to_client)):
            if chosen:
                direction.bandwidth = bytes_per_second

    def blackhole(self, keep_dead: bool = False) -> None:
        """Stop forwarding, keep every socket open. `keep_dead`: the links open at `heal()` stay dead after it."""
        self.keep_dead = self.keep_dead or keep_dead
        self.blackholed = True

    def heal(self) -> None:
        """End the blackout (links a keep_dead blackout saw stay dead). Latency, caps and slow close stay as set."""
        if self.keep_dead:
            for link in list(self._links):
                link.dead = True
        self.keep_dead = False
        self.blackholed = False

    def clear(self) -> None:
        """No fault at all: heal, no latency, no cap, no slow close."""
        self.heal()
        self.to_server, self.to_client = Direction(), Direction()
        self.slow_close_seconds = 0.0

    def reset(self) -> None:
        """Close every open link with an RST on both sides (new connections are served as before)."""
        self._call(self._reset_all)

    def slow_close(self, seconds: float) -> None:
        """When one side closes, let the other side see it `seconds` later (0: at once)."""
        self.slow_close_seconds = seconds

    # -- running ----------------------------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Serve in a background thread with a loop of its own; returns once the port listens."""
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(self._listen())
            except OSError as error:  # the port is taken: reported to start()'s caller
                failure.append(error)
                started.set()
                loop.close()
                return
            self._loop = loop
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._close())
            loop.close()

        self._thread = threading.Thread(target=serve, name=f"fault-proxy-{self.port}", daemon=True)
        self._thread.start()
        if not started.wait(10) or failure:
            raise RuntimeError(f"fault proxy on port {self.port} did not start: {failure or 'timeout'}")
        return self

    def stop(self) -> None:
        """Close every socket and end the thread (nothing when it does not run in one)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> FaultProxy:
        await self._listen()
        self._loop = asyncio.get_running_loop()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._close()
        self._loop = None

    def _call(self, function: Callable[[], None]) -> None:
        """Run `function` on the proxy's loop, from that loop or any other thread."""
        loop = self._loop
        if loop is None:
            return
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is loop:
            function()
        else:
            loop.call_soon_threadsafe(function)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._reset_all()
        tasks = [task for link in list(self._links) for task in link.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._links.clear()
        self._server = None

    def _reset_all(self) -> None:
        for link in list(self._links):
            link.abort()

    # -- one link ---------------------------------------------------------------------------------------------------

    async def _flowing(self, link: _Link) -> bool:
        """Wait out a blackout; False when the link is dead for good."""
        while self.blackholed and not link.dead:
            await asyncio.sleep(POLL_SECONDS)
        return not link.dead

    async def _accept(self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        link = _Link(client)
        self._links.add(link)
        self.links_opened += 1
        try:
            if not await self._flowing(link):  # accepted, not connected upstream while the blackout lasts
                await self._silent(client_reader)
                return
            try:
                upstream_reader, link.upstream = await asyncio.open_connection(*self.upstream)
            except OSError:
                link.abort()  # the server refuses: so does the proxy
                return
            pumps = [asyncio.create_task(self._pump(link, client_reader, link.upstream, self.to_server)),
                     asyncio.create_task(self._pump(link, upstream_reader, client, self.to_client))]
            link.tasks += pumps
            await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            self._links.discard(link)
            link.close()

    @staticmethod
    async def _silent(reader: asyncio.StreamReader) -> None:
        """A dead link: read and drop everything until its owner closes it."""
        with contextlib.suppress(ConnectionError, OSError):
            while await reader.read(CHUNK):
                pass

    async def _pump(self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    faults: Direction) -> None:
        """Forward one direction until its reader ends, then pass the close on (after the slow close, if any)."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        sender = asyncio.create_task(self._send(link, queue, writer, faults))
        last_due = 0.0
        try:
            while await self._flowing(link):
                try:
                    data = await reader.read(CHUNK)
                except (ConnectionError, OSError):
                    data = b""
                if not data:
                    break
                delay = max(0.0, faults.latency + self._rng.uniform(-faults.jitter, faults.jitter))
                last_due = max(last_due, time.monotonic() + delay)  # never overtakes the chunk before it
                queue.put_nowait((last_due, data))
            else:
                await self._silent(reader)
                return
            queue.put_nowait(None)
            await sender
        finally:
            sender.cancel()
        if not await self._flowing(link):  # a dead link passes no FIN on either
            return
        if self.slow_close_seconds:
            await asyncio.sleep(self.slow_close_seconds)
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof() and not writer.is_closing():
                writer.write_eof()

    async def _send(self, link: _Link, queue: asyncio.Queue[tuple[float, bytes] | None],
                    writer: asyncio.StreamWriter, faults: Direction) -> None:
        while (item := await queue.get()) is not None:
            due, data = item
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not await self._flowing(link):
                return  # held back when the link died: lost with it
            while data:
                piece, data = self._piece(data, faults.bandwidth)
                if faults.bandwidth:
                    await asyncio.sleep(len(piece) / faults.bandwidth)
                try:
                    writer.write(piece)
                    await writer.drain()
                except (ConnectionError, OSError):
                    return
                self.bytes_forwarded += len(piece)

    @staticmethod
    def _piece(data: bytes, bandwidth: float) -> tuple[bytes, bytes]:
        """Under a cap, forward in pieces of 1/50 s each so the rate is even, not bursts of CHUNK."""
        if not bandwidth:
            return data, b""
        size = max(512, int(bandwidth / 50))
        return data[:size], data[size:]
