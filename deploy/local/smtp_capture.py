"""A local SMTP capture for `make run`: accepts every mail, writes it to a folder as .eml, prints one line per mail,
and serves the folder in a browser (mail_viewer.py).

    python deploy/local/smtp_capture.py [--host 127.0.0.1] [--port 1025] [--dir mail-capture] [--http-port 1080]

Files are numbered on from the highest number already in the folder, so a new run never reuses a number and the
viewer lists every run's mail in order. --http-port 0: no viewer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import email.policy
import pathlib
import re
import signal
from collections.abc import Iterator

import uvicorn
from aiosmtpd.controller import Controller
from mail_viewer import create_app

_NUMBERED = re.compile(r"(\d+)-")


def highest_number(folder: pathlib.Path) -> int:
    """The highest file number in the folder (0 when it holds none)."""
    return max((int(m.group(1)) for p in folder.glob("*.eml") if (m := _NUMBERED.match(p.name))), default=0)


class CaptureHandler:
    def __init__(self, folder: pathlib.Path) -> None:
        self.folder = folder
        self.count = highest_number(folder)

    async def handle_DATA(self, server, session, envelope) -> str:
        self.count += 1
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        message_id = re.sub(r"[^A-Za-z0-9.@_-]", "", str(message.get("Message-ID", "")))[:120] or f"mail-{self.count}"
        path = self.folder / f"{self.count:06d}-{message_id}.eml"
        path.write_bytes(envelope.content)
        print(f"captured #{self.count}: to={','.join(envelope.rcpt_tos)} subject={message.get('Subject')!r} "
              f"file={path}", flush=True)
        return "250 OK captured"


class ViewerServer(uvicorn.Server):
    """uvicorn without its own signal handling: main() owns SIGINT/SIGTERM (and uvicorn would re-raise them)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--dir", default="mail-capture")
    parser.add_argument("--http-port", type=int, default=1080, help="the mail viewer's port (0: none)")
    args = parser.parse_args()
    folder = pathlib.Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    controller = Controller(CaptureHandler(folder), hostname=args.host, port=args.port)
    controller.start()
    print(f"SMTP capture listening on {args.host}:{args.port}, writing to {folder}/", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    viewer = None
    if args.http_port:
        viewer = ViewerServer(uvicorn.Config(create_app(folder), host=args.host, port=args.http_port,
                                             log_level="warning", access_log=False, lifespan="off"))
        serving = asyncio.create_task(viewer.serve())
        while not viewer.started and not serving.done():
            await asyncio.sleep(0.05)
        if not viewer.started:
            controller.stop()
            raise SystemExit(f"mail viewer: cannot listen on {args.host}:{args.http_port}")
        print(f"mail viewer on http://{args.host}:{args.http_port}/", flush=True)
    await stop.wait()
    if viewer is not None:
        viewer.should_exit = True
        await serving
    controller.stop()


if __name__ == "__main__":
    asyncio.run(main())
