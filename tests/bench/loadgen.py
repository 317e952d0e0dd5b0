"""Paced (open-loop) HTTP load for the end-to-end latency benchmark: POST /v1/signups at a fixed rate.

wrk2 is not packaged here and wrk's Lua `delay()` paces each connection closed-loop (the next request waits for
the previous response, so a slow response delays the schedule: coordinated omission) and cannot hand back which
event id was sent when. This generator sends request i at t0 + i/rate on whichever keep-alive connection is free
(raw HTTP/1.1 on uvloop streams, no client library: a few tens of microseconds of CPU per request, unlike httpx),
and writes one JSON line per request: event_id, sent (time.time() just before the write), answered, status,
and lag (how late the request left against its schedule, so an overloaded generator shows up in the results).

Bounded: stops after --duration seconds of schedule plus at most --drain seconds for the last answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

BODY = b'{"email": "ada@example.com", "name": "Ada Lovelace", "locale": "en"}'


def request_bytes(port: int) -> bytes:
    return (b"POST /v1/signups HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (port, len(BODY))) + BODY


async def one(conn, req: bytes, sched: float, results: list, idle: asyncio.Queue) -> None:
    reader, writer = conn
    sent = time.time()
    lag = time.monotonic() - sched
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    body = await reader.readexactly(length) if length else b""
    answered = time.time()
    event_id = None
    if status == 202:
        event_id = json.loads(body)["event_id"]
    results.append((event_id, sent, answered, status, lag))
    idle.put_nowait(conn)


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rate", type=float, required=True, help="requests per second")
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--drain", type=float, default=10.0)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    req = request_bytes(args.port)
    idle: asyncio.Queue = asyncio.Queue()
    conns = []
    for _ in range(args.connections):
        conn = await asyncio.open_connection("127.0.0.1", args.port)
        conns.append(conn)
        idle.put_nowait(conn)
    results: list = []
    tasks = set()
    total = int(args.rate * args.duration)
    t0 = time.monotonic() + 0.05
    i = 0
    while i < total:
        now = time.monotonic()
        while i < total and t0 + i / args.rate <= now:
            conn = idle.get_nowait() if not idle.empty() else await idle.get()
            task = asyncio.ensure_future(one(conn, req, t0 + i / args.rate, results, idle))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if i < total:
            await asyncio.sleep(max(0.0, t0 + i / args.rate - time.monotonic()))
    if tasks:
        await asyncio.wait(tasks, timeout=args.drain)
    for _, writer in conns:
        writer.close()
    with open(args.out, "w") as f:
        for event_id, sent, answered, status, lag in results:
            f.write(json.dumps({"event_id": event_id, "sent": sent, "answered": answered, "status": status,
                                "lag": lag}) + "\n")


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
