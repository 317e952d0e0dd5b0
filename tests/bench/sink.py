"""A small SMTP sink for the benchmarks where Postfix's smtp-sink does not fit.

smtp-sink's `-w delay` takes whole seconds only (atoi; `-w 0.05` is a usage error) and delays the reply to the
DATA command (the 354), and it cannot say *when* which message arrived. This sink answers the end of the data
(`.`) with 250 after `--delay` seconds (fractions allowed, via the event loop's timer, so every connection waits
independently), and with `--record` remembers, per message, the Message-ID header and the time (time.time()) at
which it sent the 250, i.e. when the mail was accepted.

A control port answers one command per line with one JSON line: STATS -> {"count", "first", "last"}; DUMP ->
{"<message-id>": accepted_at, ...}; RESET; QUIT (exit). Loopback only. Stops by itself after --max-seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import time

_MSGID = re.compile(rb"\r\nMessage-ID:\s*<([^>\r\n]+)>", re.IGNORECASE)
_EHLO = b"250-bench-sink\r\n250-8BITMIME\r\n250-SIZE 10485760\r\n250 PIPELINING\r\n"


class State:
    def __init__(self, record: bool) -> None:
        self.record = record
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.accepted: dict[str, float] = {}

    def accept(self, data: bytes) -> None:
        now = time.time()
        self.count += 1
        if self.count == 1:
            self.first = now
        self.last = now
        if self.record:
            m = _MSGID.search(data, 0, 4096)
            if m:
                self.accepted[m.group(1).decode("ascii", "replace")] = now


class SmtpProtocol(asyncio.Protocol):
    def __init__(self, state: State, delay: float) -> None:
        self.state = state
        self.delay = delay
        self.buf = bytearray()
        self.in_data = False
        self.waiting = False  # a delayed 250 is pending: hold further commands so replies stay in order
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(b"220 bench-sink ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._process()

    def _process(self) -> None:
        while not self.waiting:
            if self.in_data:
                end = self.buf.find(b"\r\n.\r\n")
                if end < 0:
                    return
                message = bytes(self.buf[:end])
                del self.buf[:end + 5]
                self.in_data = False
                if self.delay > 0:
                    self.waiting = True
                    self.loop.call_later(self.delay, self._accept, message)
                else:
                    self._accept(message)
                continue
            end = self.buf.find(b"\r\n")
            if end < 0:
                return
            line = bytes(self.buf[:end])
            del self.buf[:end + 2]
            self._command(line)

    def _accept(self, message: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.state.accept(message)
        self.transport.write(b"250 2.0.0 Ok: queued\r\n")
        if self.waiting:
            self.waiting = False
            self._process()

    def _command(self, line: bytes) -> None:
        verb = line[:4].upper()
        write = self.transport.write
        if verb == b"EHLO":
            write(_EHLO)
        elif verb == b"DATA":
            self.in_data = True
            # The message may start with a line that is just "." only if empty; keep it simple: the terminator
            # search above looks for CRLF.CRLF, so prepend CRLF to catch an empty body.
            self.buf[0:0] = b"\r\n"
            write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
        elif verb == b"QUIT":
            write(b"221 2.0.0 Bye\r\n")
            self.transport.close()
        elif verb in (b"HELO", b"MAIL", b"RCPT", b"RSET", b"NOOP"):
            write(b"250 2.0.0 Ok\r\n")
        else:
            write(b"502 5.5.2 Error: command not recognized\r\n")

    def connection_lost(self, exc) -> None:
        self.transport = None


async def control(state: State, stop: asyncio.Event, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter) -> None:
    try:
        while line := await reader.readline():
            cmd = line.strip().upper()
            if cmd == b"STATS":
                out = {"count": state.count, "first": state.first, "last": state.last}
            elif cmd == b"DUMP":
                out = state.accepted
            elif cmd == b"RESET":
                state.count, state.first, state.last = 0, 0.0, 0.0
                state.accepted = {}
                out = {"ok": True}
            elif cmd == b"QUIT":
                stop.set()
                out = {"ok": True}
            else:
                out = {"error": "unknown command"}
            writer.write(json.dumps(out).encode() + b"\n")
            await writer.drain()
    except (asyncio.CancelledError, ConnectionError):
        pass
    finally:
        writer.close()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--control-port", type=int, required=True)
    p.add_argument("--delay", type=float, default=0.0, help="seconds before the 250 that accepts a message")
    p.add_argument("--record", action="store_true", help="remember Message-ID -> accepted time")
    p.add_argument("--max-seconds", type=float, default=900.0, help="exit after this long in any case")
    args = p.parse_args()
    state = State(args.record)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    smtp = await loop.create_server(lambda: SmtpProtocol(state, args.delay), "127.0.0.1", args.port, backlog=512)
    ctl = await asyncio.start_server(lambda r, w: control(state, stop, r, w), "127.0.0.1", args.control_port)
    print("ready", flush=True)
    try:
        await asyncio.wait_for(stop.wait(), timeout=args.max_seconds)
    except asyncio.TimeoutError:
        pass
    smtp.close()
    ctl.close()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
