"""`python -m tests.bench` (what `make bench` runs): the five measurements, results.json and RESULTS.md.

Every contender runs at least three times, interleaved round by round (A B C, A B C, ...), so the noise of a
shared machine spreads over all of them, and every comparison is a ratio within one round (ratios.py):
1. consumer drains into smtp-sink; 2. producer under wrk; 3. end to end at half load; 4. horizontal scaling
with a 50 ms SMTP server; 5. RSS under a 200,000-message backlog; 6. a backlog drained by 4 processes into a
provider that throttles (40 mails/s, 8 connections), ours with and without the send budget against Celery's and
Dramatiq's rate limits; 7. SMTP over 10 and 40 ms round-trip time with 3 connections, ours with and without
PIPELINING. `--quick` runs every section small and once,
to prove the bench works (its figures mean nothing). Every process started is stopped and every vhost created
is deleted on exit, Ctrl-C and the 35-minute deadline included. Loopback only.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from .environment import versions
from .goals import goals
from .paths import HERE, missing_tools
from .report import goals_table, results_markdown
from .results import Results, Settings, dump
from .sections import consumer, e2e, memory, producer, provider, rtt, scaling
from .testbed import Testbed, log

DEADLINE_SECONDS = 35 * 60  # hard bound on the whole run; 7-9 minutes on 2 cores, plus up to ~13 for provider limits
QUICK = {"runs": 1, "n": 400, "n_peers": 100, "concurrency": 16, "wrk_seconds": 2, "e2e_seconds": 2.0,
         "scaling_seconds": 1.0, "backlog": 5000, "provider_backlog": 200, "rtt_n": 40,
         "out": str(Path(tempfile.gettempdir()) / "welcome-mail-bench-quick")}  # never over the committed results
SECTIONS = ("consumer", "producer", "e2e", "scaling", "memory", "provider", "rtt")


def parse_settings(argv: list[str] | None) -> Settings:
    p = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(Settings):
        if f.type == "bool":
            p.add_argument(f"--{f.name.replace('_', '-')}", action="store_true")
        else:
            p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=None,
                           help=f"default {f.default}")
    args = {k: v for k, v in vars(p.parse_args(argv)).items() if v is not None and v is not False}
    if unknown := set(args.get("sections", ",".join(SECTIONS)).split(",")) - set(SECTIONS):
        p.error(f"unknown sections: {', '.join(sorted(unknown))} (known: {', '.join(SECTIONS)})")
    return Settings(**{"out": str(HERE), **(QUICK if args.get("quick") else {}), **args})


def measure(bed: Testbed, settings: Settings) -> Results:
    started = time.monotonic()
    broker = bed.open()
    res = Results(date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), settings=settings,
                  versions=versions(broker), load_average_start=list(os.getloadavg()))
    wanted, s = settings.sections.split(","), res.sections
    steps = {"consumer": lambda: consumer.run(bed, settings), "producer": lambda: producer.run(bed, settings),
             "e2e": lambda: e2e.run(bed, settings,
                                    s.consumer.concurrency if s.consumer else settings.concurrency or 16),
             "scaling": lambda: scaling.run(bed, settings), "memory": lambda: memory.run(bed, settings),
             "provider": lambda: provider.run(bed, settings), "rtt": lambda: rtt.run(bed, settings)}
    for name in SECTIONS:
        if name in wanted:
            t = time.monotonic()
            setattr(s, name, steps[name]())
            res.section_seconds[name] = round(time.monotonic() - t, 1)
    res.load_average_end = list(os.getloadavg())
    res.total_seconds = round(time.monotonic() - started, 1)
    return res


def main(argv: list[str] | None = None) -> int:
    settings = parse_settings(argv)
    if missing := missing_tools():
        print(f"bench: missing {', '.join(missing)} (make bench installs them: make install, "
              "tests/bench/ensure-tools.sh)", file=sys.stderr)
        return 2

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    # SIGINT too: a shell starts background jobs with SIGINT ignored, and Ctrl-C must always clean up.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        signal.signal(signum, on_signal)
    signal.alarm(DEADLINE_SECONDS)
    tmp = Path(tempfile.mkdtemp(prefix="wm-bench-"))
    bed = Testbed(tmp)
    try:
        res = measure(bed, settings)
    except KeyboardInterrupt as exc:
        log(f"interrupted ({exc}); cleaning up")
        return 130
    finally:
        signal.alarm(0)
        bed.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(dump(res, goals(res)))
    (out / "RESULTS.md").write_text(results_markdown(res))
    m = res.versions["machine"]
    print(f"\nwelcome-mail benchmarks, {res.date}, {m['nproc']} cores ({m['cpu_model']}), load average "
          f"{res.load_average_start[0]:.1f}, {res.total_seconds:.0f} s; medians of {settings.runs} interleaved runs\n")
    print("\n".join(goals_table(goals(res))))
    print(f"\nEvery figure, version and per-run value: {out / 'RESULTS.md'} and {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
