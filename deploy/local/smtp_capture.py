"""A local SMTP capture for `make run`: accepts every mail, writes it to a folder as .eml, prints one line per mail.

    python deploy/local/smtp_capture.py [--host 127.0.0.1] [--port 1025] [--dir mail-capture]
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import pathlib
import re
import signal

from aiosmtpd.controller import Controller


class CaptureHandler:
    def __init__(self, folder: pathlib.Path) -> None:
        self.folder = folder
        self.count = 0

    async def handle_DATA(self, server, session, envelope) -> str:
        self.count += 1
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        message_id = re.sub(r"[^A-Za-z0-9.@_-]", "", str(message.get("Message-ID", "")))[:120] or f"mail-{self.count}"
        path = self.folder / f"{self.count:06d}-{message_id}.eml"
        path.write_bytes(envelope.content)
        print(f"captured #{self.count}: to={','.join(envelope.rcpt_tos)} subject={message.get('Subject')!r} "
              f"file={path}", flush=True)
        return "250 OK captured"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--dir", default="mail-capture")
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
    await stop.wait()
    controller.stop()


if __name__ == "__main__":
    asyncio.run(main())
