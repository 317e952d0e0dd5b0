"""`python -m tests.images [--break package-data]`: the image smoke test (what `make images-smoke` runs after
`make images-build`). Exit 0 when every check held; 1 with `images-smoke: FAILED: <what and why>` otherwise, and
where buildah cannot run: it never skips."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
from pathlib import Path

from .broken import BREAKS, broken_image
from .smoke import ImageSmoke, SmokeFailed, say, timed


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.images", description=__doc__)
    parser.add_argument("--break", dest="breakage", choices=BREAKS,
                        help="run against a deliberately broken variant (the smoke test must fail)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wm-images-") as folder:
        workdir = Path(folder)
        workdir.chmod(0o755)  # the containers' uid reads the volumes made under it
        try:
            with timed("done"), contextlib.ExitStack() as stack:
                images = stack.enter_context(broken_image(args.breakage, workdir)) if args.breakage else {}
                asyncio.run(ImageSmoke(workdir, images).run())
        except (SmokeFailed, AssertionError) as exc:
            say(f"FAILED: {exc}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
