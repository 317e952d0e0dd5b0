"""`make bench`: the welcome-mail benchmarks against the real RabbitMQ and Postfix's smtp-sink.

Runs five measurements, each contender at least three times, interleaved (A B C, A B C, A B C) so the noise of
this shared machine spreads over all of them, and every comparison is a ratio of figures from the same round:

1. consumer: drain N queued signups into smtp-sink (ours at LOG_LEVEL info and warning, Celery, Dramatiq, a bare
   aio-pika ceiling; 1 and 2 processes);
2. producer: POST /v1/signups with wrk, 64 connections (ours, a minimal Starlette ceiling, the same endpoint
   enqueueing a Celery task);
3. end to end: paced load at half the measured maximum, POST -> SMTP accepted (per message, by Message-ID);
4. horizontal scaling against an SMTP server that takes 50 ms per mail;
5. RSS of one email-service with 200,000 messages waiting against 1,000.

Prints one table and writes tests/bench/results.json and tests/bench/RESULTS.md. Every process it starts is in its
own process group and is stopped on exit (also on Ctrl-C); the RabbitMQ vhosts it creates are deleted.
Loopback only. Run it through `make bench` (which installs .venv-bench and the Debian packages first).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path

import amqp
import psutil

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "tests" / "bench"
PEERS = HERE / "peers"
SVC_BIN = ROOT / ".venv" / "bin"
BENCH_PY = sys.executable
BROKER_HOST = "127.0.0.1:5672"
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
WRK = shutil.which("wrk") or "/usr/bin/wrk"
DEADLINE_SECONDS = 20 * 60  # hard bound on the whole run; normally it takes well under 10 minutes
MB = 1024 * 1024


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def free_port() -> int:
    """A free port below the ephemeral range (32768-60999 on Linux): a port the kernel hands out for port 0 can be
    taken by someone's outgoing connection or test server before our process binds it; these cannot."""
    import random

    for _ in range(200):
        port = random.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")


# --------------------------------------------------------------------------------------------------- processes

class Procs:
    """Every process the benchmark starts: own process group, stopped on exit.

    Their stdout/stderr go to a pipe that a thread drains (as a container runtime would read a pod's stdout),
    keeping the last 64 KiB for error messages; the JSON log lines are written and paid for, not stored.
    """

    TAIL = 64 * 1024

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.live: list[subprocess.Popen] = []
        self.tails: dict[int, bytearray] = {}

    def start(self, name: str, cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> subprocess.Popen:
        full_env = {**os.environ, **(env or {})}
        proc = subprocess.Popen(cmd, env=full_env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        proc.bench_name = name  # type: ignore[attr-defined]
        self.live.append(proc)
        tail = self.tails[proc.pid] = bytearray()

        def drain() -> None:
            fd = proc.stdout.fileno()
            while chunk := os.read(fd, 1 << 20):
                tail.extend(chunk)
                if len(tail) > 2 * self.TAIL:
                    del tail[:-self.TAIL]

        threading.Thread(target=drain, daemon=True).start()
        return proc

    def tail(self, proc: subprocess.Popen, limit: int = 2000) -> str:
        return bytes(self.tails.get(proc.pid, b""))[-limit:].decode("utf-8", "replace")

    def stop(self, *procs: subprocess.Popen, timeout: float = 10.0) -> None:
        """SIGTERM to each leader (graceful), then SIGKILL to the whole group of anything still there."""
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            if proc in self.live:
                self.live.remove(proc)

    def stop_all(self) -> None:
        self.stop(*list(self.live), timeout=5)


class TreeMonitor(threading.Thread):
    """Samples the summed RSS of some processes and all their children; gives CPU-time snapshots."""

    def __init__(self, pids: list[int], interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.roots = [psutil.Process(pid) for pid in pids]
        self.interval = interval
        self.peak_rss = 0
        self.samples: list[int] = []
        self._halt = threading.Event()

    def processes(self) -> list[psutil.Process]:
        out = []
        for root in self.roots:
            with contextlib.suppress(psutil.Error):
                out.append(root)
                out.extend(root.children(recursive=True))
        return out

    def rss(self) -> int:
        total = 0
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def cpu(self) -> dict[int, float]:
        out = {}
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                out[proc.pid] = t.user + t.system + t.children_user + t.children_system
        return out

    def run(self) -> None:
        while not self._halt.is_set():
            rss = self.rss()
            self.samples.append(rss)
            self.peak_rss = max(self.peak_rss, rss)
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=2)


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(after[pid] - before.get(pid, 0.0) for pid in after)


# --------------------------------------------------------------------------------------------------- broker

def rabbitmqctl(*args: str) -> str:
    return subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True,
                          timeout=120).stdout


class Broker:
    """A py-amqp connection to one vhost: fast publishing without confirms, depth, purge."""

    def __init__(self, vhost: str) -> None:
        self.vhost = vhost
        self.url = f"amqp://guest:guest@{BROKER_HOST}/{vhost}"
        self.conn = amqp.Connection(host=BROKER_HOST, userid="guest", password="guest", virtual_host=vhost)
        self.conn.connect()
        self.ch = self.conn.channel()

    def depth(self, queue: str) -> tuple[int, int]:
        _, messages, consumers = self.ch.queue_declare(queue, passive=True)
        return messages, consumers

    def purge(self, queue: str) -> None:
        self.ch.queue_purge(queue)

    def publish(self, exchange: str, routing_key: str, messages) -> int:
        n = 0
        for body, props in messages:
            self.ch.basic_publish(amqp.Message(body, **props), exchange=exchange, routing_key=routing_key)
            n += 1
        return n

    def wait_depth(self, queue: str, at_least: int, timeout: float = 120.0) -> int:
        deadline = time.monotonic() + timeout
        while True:
            messages, _ = self.depth(queue)
            if messages >= at_least or time.monotonic() > deadline:
                return messages
            time.sleep(0.05)

    def wait_consumers(self, queue: str, count: int, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.depth(queue)[1] >= count:
                return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


def declare_topology(url: str) -> None:
    """What email-service declares at start-up (the same delays it uses by default), so messages can wait."""
    import aio_pika
    from email_service.retry import RetryPolicy
    from email_service.topology import declare

    async def go() -> None:
        connection = await aio_pika.connect(url)
        try:
            await declare(await connection.channel(), RetryPolicy(max_attempts=5, delays=(1, 5, 30, 120, 600)))
        finally:
            await connection.close()

    asyncio.run(go())


def declare_peer_queues(broker: Broker) -> None:
    # Celery's default queue exactly as kombu declares it: direct exchange `celery`, durable classic queue.
    broker.ch.exchange_declare("celery", "direct", durable=True, auto_delete=False)
    broker.ch.queue_declare("celery", durable=True, auto_delete=False)
    broker.ch.queue_bind("celery", "celery", "celery")
    # Dramatiq's queues with Dramatiq's own arguments.
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    rb = RabbitmqBroker(url=broker.url)
    rb.declare_queue("default", ensure=True)
    rb.close()


# --------------------------------------------------------------------------------------------------- messages

NAMES = [("Ada Lovelace", "en"), ("Grace Hopper", "en"), ("Alan Turing", "en"), ("李雷", "zh-CN")]


def signups(n: int):
    for i in range(n):
        name, locale = NAMES[i % len(NAMES)]
        yield str(uuid.uuid4()), f"user{i}@example.com", name, locale


def our_messages(n: int):
    for event_id, email, name, locale in signups(n):
        now = datetime.now(timezone.utc)
        body = json.dumps({
            "schema_version": 1, "event_type": "user.signed_up", "event_id": event_id,
            "occurred_at": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "user": {"email": email, "name": name, "locale": locale}}, ensure_ascii=False,
            separators=(",", ":")).encode()
        cid = uuid.uuid4().hex
        yield body, {"content_type": "application/json", "content_encoding": "utf-8", "delivery_mode": 2,
                     "message_id": event_id, "correlation_id": cid, "type": "user.signed_up",
                     "app_id": "producer-service", "application_headers": {"x-correlation-id": cid}}


def backlog_messages(n: int):
    """Valid events with few properties: publishing 200,000 of them is bound by the client's CPU."""
    head = b'{"schema_version":1,"event_type":"user.signed_up","event_id":"'
    tail = ('","occurred_at":"' + datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            + '","user":{"email":"ada@example.com","name":"Ada Lovelace","locale":"en"}}').encode()
    for _ in range(n):
        event_id = str(uuid.uuid4())
        yield head + event_id.encode() + tail, {"content_type": "application/json", "delivery_mode": 2,
                                                "message_id": event_id}


def celery_messages(n: int):
    from celery_worker import app
    from kombu.serialization import dumps

    for event_id, email, name, locale in signups(n):
        msg = app.amqp.as_task_v2(event_id, "bench.send_welcome", args=[email, name, locale, event_id], kwargs={})
        content_type, encoding, body = dumps(msg.body, serializer="json")
        headers = {k: v for k, v in msg.headers.items() if v is not None}
        yield body.encode() if isinstance(body, str) else body, {
            "content_type": content_type, "content_encoding": encoding, "delivery_mode": 2, "priority": 0,
            "correlation_id": event_id, "application_headers": headers}


def dramatiq_messages(n: int):
    import dramatiq

    for event_id, email, name, locale in signups(n):
        message = dramatiq.Message(queue_name="default", actor_name="send_welcome",
                                   args=(email, name, locale, event_id), kwargs={}, options={})
        yield message.encode(), {"delivery_mode": 2}


# --------------------------------------------------------------------------------------------------- SMTP sinks

class SmtpSink:
    """Postfix's smtp-sink on a fresh port; `-c` prints `mesg=N` per message, read live to time the drain."""

    def __init__(self, procs: Procs, delay_seconds: int | None = None) -> None:
        self.port = free_port()
        cmd = [SMTP_SINK, "-u", "nobody", "-c"]
        if delay_seconds:
            cmd += ["-w", str(delay_seconds)]
        cmd += [f"127.0.0.1:{self.port}", "1024"]
        self.procs = procs
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
        self.proc.bench_name = "smtp-sink"  # type: ignore[attr-defined]
        procs.live.append(self.proc)
        self.count = 0
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                break
            time.sleep(0.05)

    def _read(self) -> None:
        pattern = re.compile(rb"mesg=(\d+)")
        fd = self.proc.stdout.fileno()
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            found = pattern.findall(chunk)
            if found:
                with self.cond:
                    self.count = int(found[-1])
                    self.cond.notify_all()

    def wait_count(self, n: int, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.count >= n, timeout=timeout)

    def stop(self) -> None:
        self.procs.stop(self.proc, timeout=2)


class PySink:
    """tests/bench/sink.py: fractional delays, and per-message acceptance times by Message-ID."""

    def __init__(self, procs: Procs, delay: float = 0.0, record: bool = False) -> None:
        self.port, self.control_port = free_port(), free_port()
        cmd = [BENCH_PY, str(HERE / "sink.py"), "--port", str(self.port), "--control-port", str(self.control_port),
               "--delay", str(delay), "--max-seconds", "900"] + (["--record"] if record else [])
        self.procs = procs
        self.proc = procs.start("pysink", cmd)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                self.sock = socket.create_connection(("127.0.0.1", self.control_port), timeout=10)
                self.file = self.sock.makefile("rwb")
                return
            time.sleep(0.05)
        raise RuntimeError("sink.py did not start")

    def command(self, cmd: str):
        self.file.write(cmd.encode() + b"\n")
        self.file.flush()
        return json.loads(self.file.readline())

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.sock.close()
        self.procs.stop(self.proc, timeout=3)


# --------------------------------------------------------------------------------------------------- HTTP helpers

def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except OSError:
        return 0, b""


def http_post_signup(port: int, timeout: float = 2.0) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/signups", method="POST",
                                 data=b'{"email": "ada@example.com", "name": "Ada Lovelace", "locale": "en"}',
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def histogram(metrics_text: str, name: str) -> dict[float, float]:
    out = {}
    for m in re.finditer(rf'^{name}_bucket{{le="([^"]+)"}} ([0-9.e+]+)$', metrics_text, re.M):
        out[float(m.group(1))] = float(m.group(2))
    return out


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile (linear interpolation inside the bucket)."""
    items = sorted(buckets.items())
    if not items or items[-1][1] <= 0:
        return None
    total = items[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in items:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_count) / max(count - prev_count, 1e-9)
        prev_le, prev_count = le, count
    return None


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


# --------------------------------------------------------------------------------------------------- the bench

class Bench:
    def __init__(self, args, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.procs = Procs(tmp)
        self.vhosts: list[str] = []
        self.results: dict = {"sections": {}}
        self.tag = uuid.uuid4().hex[:8]
        self.pool: int | None = None  # SMTP_POOL_SIZE for the email-service (None: its default)

    # ---- set-up and clean-up
    def add_vhost(self, suffix: str) -> str:
        name = f"wm-bench-{self.tag}-{suffix}"
        self.vhosts.append(name)
        rabbitmqctl("add_vhost", name)
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        return name

    def delete_vhost(self, name: str) -> None:
        if name in self.vhosts:
            self.vhosts.remove(name)
            with contextlib.suppress(Exception):
                rabbitmqctl("delete_vhost", name)

    def cleanup(self) -> None:
        self.procs.stop_all()
        for name in list(self.vhosts):
            self.delete_vhost(name)

    def versions(self) -> dict:
        def dist(name: str) -> str:
            try:
                return importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                return "-"

        svc = json.loads(subprocess.run(
            [str(SVC_BIN / "python"), "-c",
             "import importlib.metadata as m, json, platform; print(json.dumps({'python': platform.python_version(), "
             "**{n: m.version(n) for n in ('aio-pika', 'aiormq', 'aiosmtplib', 'uvicorn', 'starlette', 'uvloop', "
             "'httptools', 'prometheus-client', 'producer-service', 'email-service')}}))"],
            check=True, capture_output=True, text=True).stdout)
        props = self.broker.conn.server_properties
        wrk_v = subprocess.run([WRK, "-v"], capture_output=True, text=True).stdout.split("\n")[0].strip()
        postfix = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "postfix"], capture_output=True,
                                 text=True).stdout.strip()
        cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                          if line.startswith("model name")), platform.processor())
        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()

        return {
            # The services run from their source (editable installs): say which.
            "code": {"commit": git("rev-parse", "--short", "HEAD"),
                     "uncommitted_service_files": git("status", "--porcelain", "--", "producer-service/src",
                                                      "email-service/src").splitlines()},
            "machine": {"nproc": os.cpu_count(), "cpu_model": cpu_model, "kernel": platform.release(),
                        "memory_gib": round(psutil.virtual_memory().total / 1024 ** 3, 1),
                        "os": Path("/etc/debian_version").read_text().strip() if Path("/etc/debian_version").exists()
                        else platform.platform()},
            "services (.venv)": svc,
            "peers (.venv-bench)": {"python": platform.python_version(), "celery": dist("celery"),
                                    "kombu": dist("kombu"), "dramatiq": dist("dramatiq"), "pika": dist("pika"),
                                    "aio-pika": dist("aio-pika"), "aiosmtplib": dist("aiosmtplib"),
                                    "uvicorn": dist("uvicorn"), "starlette": dist("starlette"),
                                    "uvloop": dist("uvloop"), "psutil": dist("psutil")},
            "rabbitmq": {"version": props.get("version"), "platform": props.get("platform")},
            "tools": {"wrk": wrk_v, "postfix (smtp-sink)": postfix},
        }

    # ---- starting contenders
    def email_service(self, sink_port: int, concurrency: int, log_level: str = "info", vhost: str | None = None,
                      pool: int | None = None) -> tuple[subprocess.Popen, int]:
        port = free_port()
        env = {"AMQP_URL": f"amqp://guest:guest@{BROKER_HOST}/{vhost or self.vhost}", "SMTP_HOST": "127.0.0.1",
               "SMTP_PORT": str(sink_port), "SMTP_SECURITY": "none", "METRICS_HOST": "127.0.0.1",
               "METRICS_PORT": str(port), "CONCURRENCY": str(concurrency), "LOG_LEVEL": log_level,
               "SHUTDOWN_TIMEOUT_SECONDS": "5"}
        if pool is not None:
            env["SMTP_POOL_SIZE"] = str(pool)
        return self.procs.start("email-service", [str(SVC_BIN / "email-service"), "run"], env=env), port

    def peer_env(self, sink_port: int) -> dict:
        return {"BENCH_AMQP_URL": self.broker.url, "BENCH_SMTP_PORT": str(sink_port),
                "PYTHONPATH": str(PEERS), "PYTHONDONTWRITEBYTECODE": "1"}

    def start_consumers(self, kind: str, processes: int, sink_port: int) -> list[subprocess.Popen]:
        bin_dir = Path(BENCH_PY).parent
        if kind in ("ours-info", "ours-warning"):
            level = "info" if kind == "ours-info" else "warning"
            return [self.email_service(sink_port, self.concurrency, level, pool=self.pool)[0] for _ in range(processes)]
        if kind == "ceiling":
            return [self.procs.start("ceiling", [BENCH_PY, str(PEERS / "ceiling_consumer.py")],
                                     env=self.peer_env(sink_port)) for _ in range(processes)]
        if kind == "celery":
            return [self.procs.start("celery", [
                str(bin_dir / "celery"), "-A", "celery_worker", "worker", "-P", "prefork", "-c", str(processes),
                "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "warning",
                "-n", f"bench{self.tag}@%h"], env=self.peer_env(sink_port), cwd=PEERS)]
        if kind == "dramatiq":
            return [self.procs.start("dramatiq", [str(bin_dir / "dramatiq"), "dramatiq_worker", "-p", str(processes)],
                                     env=self.peer_env(sink_port), cwd=PEERS)]
        raise ValueError(kind)

    QUEUES = {"ours-info": "email.welcome", "ours-warning": "email.welcome", "ceiling": "email.welcome",
              "celery": "celery", "dramatiq": "default"}

    def fill(self, kind: str, n: int, broker: Broker | None = None) -> None:
        broker = broker or self.broker
        queue = self.QUEUES[kind]
        broker.purge(queue)
        if kind == "celery":
            broker.publish("celery", "celery", celery_messages(n))
        elif kind == "dramatiq":
            broker.publish("", "default", dramatiq_messages(n))
        else:
            broker.publish("signups", "user.signed_up", our_messages(n))
        got = broker.wait_depth(queue, n)
        if got < n:
            raise RuntimeError(f"queue {queue} holds {got} of {n} messages")

    # ---- 1. consumer throughput
    def drain(self, kind: str, processes: int, n: int) -> dict:
        queue = self.QUEUES[kind]
        wall = time.monotonic()
        self.fill(kind, n)
        sink = SmtpSink(self.procs)
        workers = self.start_consumers(kind, processes, sink.port)
        monitor = TreeMonitor([w.pid for w in workers])
        monitor.start()
        expected = 1 if kind == "celery" else processes
        try:
            if not self.broker.wait_consumers(queue, expected, timeout=60):
                raise RuntimeError(f"{kind}: {expected} consumers did not register; "
                                   f"log tail: {self.procs.tail(workers[0])}")
            t_start = time.monotonic()
            done_before = sink.count
            cpu0 = monitor.cpu()
            if not sink.wait_count(n, timeout=max(60.0, n / 50)):
                raise RuntimeError(f"{kind} x{processes}: only {sink.count} of {n} mails arrived; "
                                   f"log tail: {self.procs.tail(workers[0])}")
            t_end = time.monotonic()
            cpu1 = monitor.cpu()
        finally:
            monitor.stop()
            self.procs.stop(*workers, timeout=5)
            sink.stop()
            self.broker.purge(queue)
        mails = n - done_before
        seconds = t_end - t_start
        return {"kind": kind, "processes": processes, "n": n, "measured_mails": mails, "seconds": round(seconds, 3),
                "mails_per_s": round(mails / seconds, 1),
                "cpu_s_per_1000": round(cpu_delta(cpu0, cpu1) / mails * 1000, 3),
                "peak_rss_mb": round(monitor.peak_rss / MB, 1), "wall_s": round(time.monotonic() - wall, 1)}

    def n_for(self, kind: str) -> int:
        return self.args.n_peers if kind in ("celery", "dramatiq") else self.args.n

    def section_consumer(self) -> None:
        n, runs = self.args.n, self.args.runs
        sec = self.results["sections"]["consumer"] = {"n_per_run": {"email-service, ceiling": n,
                                                                    "celery, dramatiq": self.args.n_peers},
                                                      "runs": [], "concurrency_trial": []}
        if self.args.concurrency:
            self.concurrency = self.args.concurrency
        else:
            log(f"1. consumer: picking CONCURRENCY for the email-service (8/16/32, once each, 1 process, {n // 2} mails)")
            best = None
            for c in (8, 16, 32):
                self.concurrency = c
                r = self.drain("ours-info", 1, n // 2)
                r["concurrency"] = c
                sec["concurrency_trial"].append(r)
                log(f"   CONCURRENCY={c}: {r['mails_per_s']} mails/s")
                if best is None or r["mails_per_s"] > best[1]:
                    best = (c, r["mails_per_s"])
            self.concurrency = best[0]
        sec["concurrency"] = self.concurrency
        kinds = ["ours-info", "ours-warning", "celery", "dramatiq", "ceiling"]
        for run in range(runs):
            for processes in (1, 2):
                for kind in kinds:
                    r = self.drain(kind, processes, self.n_for(kind))
                    r["run"] = run
                    sec["runs"].append(r)
                    log(f"1. consumer run {run + 1}/{runs}: {kind} x{processes}: {r['mails_per_s']} mails/s, "
                        f"{r['cpu_s_per_1000']} CPU s/1000, peak RSS {r['peak_rss_mb']} MB")
        summary, ratios = {}, {}
        for processes in (1, 2):
            for kind in kinds:
                rows = [r for r in sec["runs"] if r["kind"] == kind and r["processes"] == processes]
                summary[f"{kind} x{processes}"] = {
                    "mails_per_s": median(r["mails_per_s"] for r in rows),
                    "cpu_s_per_1000": median(r["cpu_s_per_1000"] for r in rows),
                    "peak_rss_mb": median(r["peak_rss_mb"] for r in rows)}

            def ratio(a: str, b: str, cpu: bool = False) -> float:
                per_run = []
                for run in range(runs):
                    ra = next(r for r in sec["runs"] if r["kind"] == a and r["processes"] == processes and r["run"] == run)
                    rb = next(r for r in sec["runs"] if r["kind"] == b and r["processes"] == processes and r["run"] == run)
                    # cpu: capacity ratio from CPU seconds per mail (b's cost / a's cost): what a would reach against
                    # b if both were CPU-bound on equal cores; far less sensitive to the machine's other load.
                    per_run.append(rb["cpu_s_per_1000"] / ra["cpu_s_per_1000"] if cpu
                                   else ra["mails_per_s"] / rb["mails_per_s"])
                return round(median(per_run), 3)

            for ours in ("ours-info", "ours-warning"):
                for other in ("celery", "dramatiq", "ceiling"):
                    ratios[f"{ours}/{other} x{processes}"] = ratio(ours, other)
                    ratios[f"cpu {ours}/{other} x{processes}"] = ratio(ours, other, cpu=True)
            ratios[f"ours-warning/ours-info x{processes}"] = ratio("ours-warning", "ours-info")
            ratios[f"cpu ours-warning/ours-info x{processes}"] = ratio("ours-warning", "ours-info", cpu=True)
        sec["summary"], sec["ratios"] = summary, ratios

    # ---- 2. producer
    def start_producer(self, kind: str, extra_env: dict | None = None,
                       log_level: str = "INFO") -> tuple[subprocess.Popen, int]:
        port = free_port()
        bin_dir = Path(BENCH_PY).parent
        if kind == "ours":
            proc = self.procs.start("producer", [str(SVC_BIN / "producer-service")], env={
                "AMQP_URL": self.broker.url, "HTTP_HOST": "127.0.0.1", "HTTP_PORT": str(port),
                "LOG_LEVEL": log_level})
            ok = wait_until(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 30, 0.1)
        else:
            module = {"ceiling": "ceiling_app:app", "celery": "celery_app:app"}[kind]
            proc = self.procs.start(f"app-{kind}", [
                str(bin_dir / "uvicorn"), module, "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop",
                "--http", "httptools", "--no-access-log", "--log-level", "warning", "--workers", "1"],
                env={**self.peer_env(25), **(extra_env or {})}, cwd=PEERS)
            ok = wait_until(lambda: http_post_signup(port) == 202, 30, 0.1)
        if not ok:
            raise RuntimeError(f"producer {kind} did not come up: {self.procs.tail(proc)}")
        return proc, port

    def wrk(self, port: int, seconds: float) -> dict:
        out = subprocess.run([WRK, "-t1", "-c64", f"-d{seconds}s", "--latency", "-s", str(HERE / "post.lua"),
                              f"http://127.0.0.1:{port}/v1/signups"], capture_output=True, text=True,
                             timeout=seconds + 30).stdout

        def ms(text: str) -> float:
            value, unit = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text).groups()
            return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]

        rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
        lat = {p: ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.M)}
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        errors = re.search(r"Socket errors: (.*)", out)
        total = int(re.search(r"(\d+) requests in", out).group(1))
        return {"rps": rps, "p50_ms": lat.get("50"), "p99_ms": lat.get("99"), "requests": total,
                "non_2xx": int(non2xx.group(1)) if non2xx else 0, "socket_errors": errors.group(1) if errors else ""}

    def section_producer(self) -> None:
        runs, seconds = self.args.runs, self.args.wrk_seconds
        sec = self.results["sections"]["producer"] = {"wrk": f"wrk -t1 -c64 -d{seconds}s --latency -s post.lua",
                                                      "runs": []}
        kinds = ["ours", "ceiling", "celery"]
        for run in range(runs):
            for kind in kinds:
                self.broker.purge("email.welcome")
                self.broker.purge("celery")
                proc, port = self.start_producer(kind)
                monitor = TreeMonitor([proc.pid])
                try:
                    self.wrk(port, 1)  # warm-up, discarded
                    self.broker.purge("email.welcome")
                    self.broker.purge("celery")
                    cpu0 = monitor.cpu()
                    r = self.wrk(port, seconds)
                    cpu1 = monitor.cpu()
                finally:
                    self.procs.stop(proc, timeout=15)
                    self.broker.purge("email.welcome")
                    self.broker.purge("celery")
                r.update(kind=kind, run=run, cpu_s_per_1000=round(cpu_delta(cpu0, cpu1) / max(r["requests"], 1) * 1000, 3))
                sec["runs"].append(r)
                log(f"2. producer run {run + 1}/{runs}: {kind}: {r['rps']} req/s, p50 {r['p50_ms']} ms, "
                    f"p99 {r['p99_ms']} ms, non-2xx {r['non_2xx']}")
        summary = {}
        for kind in kinds:
            rows = [r for r in sec["runs"] if r["kind"] == kind]
            summary[kind] = {key: median(r[key] for r in rows) for key in ("rps", "p50_ms", "p99_ms", "cpu_s_per_1000")}
            summary[kind]["non_2xx"] = sum(r["non_2xx"] for r in rows)

        def per_run(a: str, b: str, key: str) -> float:
            vals = []
            for run in range(runs):
                ra = next(r for r in sec["runs"] if r["kind"] == a and r["run"] == run)
                rb = next(r for r in sec["runs"] if r["kind"] == b and r["run"] == run)
                vals.append(ra[key] / rb[key])
            return round(median(vals), 3)

        sec["summary"] = summary
        sec["ratios"] = {"cpu ours/ceiling": round(1 / per_run("ours", "ceiling", "cpu_s_per_1000"), 3),
                         "ours/ceiling rps": per_run("ours", "ceiling", "rps"),
                         "ours/ceiling p99": per_run("ours", "ceiling", "p99_ms"),
                         "ours/celery rps": per_run("ours", "celery", "rps"),
                         "ours/celery p99": per_run("ours", "celery", "p99_ms")}

    # ---- 3. end to end
    def e2e_measure(self, contender: str, port: int, rate: float, seconds: float, sink: PySink,
                    metrics_port: int | None, run: int) -> dict:
        sink.command("RESET")
        def scrape() -> dict:
            if metrics_port is None:
                return {}
            return histogram(http_get(f"http://127.0.0.1:{metrics_port}/metrics")[1].decode(), "email_end_to_end_seconds")
        m0 = scrape()
        sent = self.loadgen(port, rate, seconds)
        accepted_ids = [r["event_id"] for r in sent if r["status"] == 202]
        wait_until(lambda: sink.command("STATS")["count"] >= len(accepted_ids), 15, 0.1)
        accepted = sink.command("DUMP")
        m1 = scrape()
        lat, after_202 = [], []
        for r in sent:
            ts = accepted.get(f"{r['event_id']}@example.com") if r["event_id"] else None
            if ts is not None:
                lat.append((ts - r["sent"]) * 1000)
                after_202.append((ts - r["answered"]) * 1000)
        http = [(r["answered"] - r["sent"]) * 1000 for r in sent if r["status"] == 202]
        row = {"contender": contender, "run": run, "requests": len(sent), "accepted_202": len(accepted_ids),
               "mails_matched": len(lat), "achieved_rate": round(len(sent) / seconds, 1),
               "p50_ms": round(percentile(lat, 0.5), 2), "p99_ms": round(percentile(lat, 0.99), 2),
               "max_ms": round(max(lat), 2),
               "http_p50_ms": round(percentile(http, 0.5), 2), "http_p99_ms": round(percentile(http, 0.99), 2),
               "after_202_p50_ms": round(percentile(after_202, 0.5), 2),
               "after_202_p99_ms": round(percentile(after_202, 0.99), 2),
               "generator_late_over_5ms": sum(1 for r in sent if r["lag"] > 0.005)}
        if metrics_port is not None:
            buckets = {le: m1[le] - m0.get(le, 0) for le in m1}
            total = buckets.get(float("inf"), 0)
            row.update(histogram_p50_ms=round((histogram_quantile(0.5, buckets) or 0) * 1000, 1),
                       histogram_p99_ms=round((histogram_quantile(0.99, buckets) or 0) * 1000, 1),
                       histogram_share_within_50ms=round(buckets.get(0.05, 0) / total, 4) if total else None)
        log(f"3. e2e run {run + 1}: {contender}: p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms "
            f"(POST->202 p99 {row['http_p99_ms']} ms, 202->accepted p99 {row['after_202_p99_ms']} ms; "
            f"{row['mails_matched']}/{row['requests']} matched; {row['generator_late_over_5ms']} sent >5 ms late)")
        return row

    def section_e2e(self) -> None:
        runs, seconds = self.args.runs, self.args.e2e_seconds
        sec = self.results["sections"]["e2e"] = {"seconds": seconds, "runs": []}
        self.broker.purge("email.welcome")
        self.broker.ch.queue_declare("e2e.ceiling", durable=True, auto_delete=False,
                                     arguments={"x-queue-type": "quorum"})
        sink = PySink(self.procs, record=True)
        svc, metrics_port = self.email_service(sink.port, self.concurrency, "info")
        producer, port = self.start_producer("ours")
        ceiling_consumer = self.procs.start("ceiling-e2e", [BENCH_PY, str(PEERS / "ceiling_consumer.py")],
                                            env={**self.peer_env(sink.port), "BENCH_QUEUE": "e2e.ceiling"})
        ceiling_app, ceiling_port = self.start_producer("ceiling", {"BENCH_EXCHANGE": "",
                                                                    "BENCH_ROUTING_KEY": "e2e.ceiling"})
        try:
            if not wait_until(lambda: http_get(f"http://127.0.0.1:{metrics_port}/readyz")[0] == 200, 30):
                raise RuntimeError("email-service not ready")
            if not self.broker.wait_consumers("e2e.ceiling", 1, 30):
                raise RuntimeError("ceiling consumer not ready")
            # The maximum of the whole pipeline on this machine: producer, broker, consumer and sink share the
            # same two cores, so it is lower than either side measured alone. wrk saturates the producer while
            # the consumer drains; the pipeline's maximum is the lower of the two rates over that window.
            c0, t0 = sink.command("STATS")["count"], time.monotonic()
            w = self.wrk(port, 4)
            c1, t1 = sink.command("STATS")["count"], time.monotonic()
            consumed = (c1 - c0) / (t1 - t0)
            maximum = min(w["rps"], consumed) if not self.args.e2e_max else self.args.e2e_max
            rate = round(maximum / 2)
            sec.update(rate=rate, calibration={"producer_rps_under_wrk": w["rps"],
                                               "mails_per_s_meanwhile": round(consumed, 1),
                                               "pipeline_max": round(maximum, 1)})
            wait_until(lambda: self.broker.depth("email.welcome")[0] == 0, 60, 0.2)
            time.sleep(1.0)
            log(f"3. end to end: pipeline maximum {maximum:.0f}/s (producer under wrk {w['rps']:.0f} req/s, "
                f"mails meanwhile {consumed:.0f}/s); paced load at {rate}/s, ours and the ceiling pair alternately")
            self.loadgen(port, rate, 2.0)  # warm-ups, discarded
            self.loadgen(ceiling_port, rate, 2.0)
            time.sleep(0.5)
            for run in range(runs):
                sec["runs"].append(self.e2e_measure("ours", port, rate, seconds, sink, metrics_port, run))
                sec["runs"].append(self.e2e_measure("ceiling", ceiling_port, rate, seconds, sink, None, run))
        finally:
            self.procs.stop(producer, svc, ceiling_app, ceiling_consumer, timeout=10)
            sink.stop()
            self.broker.purge("email.welcome")
            with contextlib.suppress(Exception):
                self.broker.ch.queue_delete("e2e.ceiling")
        summary = {}
        for contender in ("ours", "ceiling"):
            rows = [r for r in sec["runs"] if r["contender"] == contender]
            summary[contender] = {key: median(r.get(key) for r in rows) for key in
                                  ("p50_ms", "p99_ms", "max_ms", "http_p50_ms", "http_p99_ms", "after_202_p50_ms",
                                   "after_202_p99_ms", "achieved_rate", "generator_late_over_5ms",
                                   "histogram_p99_ms", "histogram_share_within_50ms")}
        ratios = []
        for run in range(runs):
            a = next(r for r in sec["runs"] if r["contender"] == "ours" and r["run"] == run)
            b = next(r for r in sec["runs"] if r["contender"] == "ceiling" and r["run"] == run)
            ratios.append(a["p99_ms"] / b["p99_ms"])
        sec["summary"] = summary
        sec["ratios"] = {"ours/ceiling p99": round(median(ratios), 3)}

    def loadgen(self, port: int, rate: float, seconds: float) -> list[dict]:
        out = self.tmp / f"loadgen-{uuid.uuid4().hex[:6]}.jsonl"
        subprocess.run([BENCH_PY, str(HERE / "loadgen.py"), "--port", str(port), "--rate", str(rate),
                        "--duration", str(seconds), "--connections", "64", "--out", str(out)],
                       check=True, timeout=seconds + 60, start_new_session=True)
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        out.unlink()
        return rows

    # ---- 4. horizontal scaling with a slow SMTP server
    def section_scaling(self) -> None:
        runs, window, delay = self.args.runs, self.args.scaling_seconds, 0.05
        sec = self.results["sections"]["scaling"] = {"smtp_delay_s": delay, "window_s": window, "runs": []}
        sink = PySink(self.procs, delay=delay)

        def measure(label: str, procs: list, ports: list[int], run: int) -> None:
            wait_until(lambda: all(http_get(f"http://127.0.0.1:{p}/readyz")[0] == 200 for p in ports), 60, 0.1)
            time.sleep(0.7)
            s0, t0 = sink.command("STATS")["count"], time.monotonic()
            time.sleep(window)
            s1, t1 = sink.command("STATS")["count"], time.monotonic()
            rate = (s1 - s0) / (t1 - t0)
            sec["runs"].append({"config": label, "run": run, "mails_per_s": round(rate, 2)})
            log(f"4. scaling run {run + 1}/{runs}: {label}: {rate:.1f} mails/s")

        try:
            for run in range(runs):
                self.broker.purge("email.welcome")
                self.fill("ours-info", 6000)
                started = [self.email_service(sink.port, 1) for _ in range(8)]
                alive = list(started)
                for k in (8, 4, 2, 1):
                    while len(alive) > k:
                        self.procs.stop(alive.pop()[0], timeout=10)
                    measure(f"{k} process{'es' if k > 1 else ''} x CONCURRENCY=1", [p for p, _ in alive],
                            [port for _, port in alive], run)
                self.procs.stop(*[p for p, _ in alive], timeout=10)
                for label, pool in (("1 process x CONCURRENCY=16 (default pool: = CONCURRENCY)", None),
                                    ("1 process x CONCURRENCY=16, SMTP_POOL_SIZE=16", 16)):
                    proc, port = self.email_service(sink.port, 16, pool=pool)
                    measure(label, [proc], [port], run)
                    self.procs.stop(proc, timeout=10)
        finally:
            sink.stop()
            self.broker.purge("email.welcome")
        labels = list(dict.fromkeys(r["config"] for r in sec["runs"]))
        sec["summary"] = {label: median(r["mails_per_s"] for r in sec["runs"] if r["config"] == label)
                          for label in labels}
        eff = {}
        one = "1 process x CONCURRENCY=1"
        for label in labels:
            vals = []
            for run in range(runs):
                base = next(r["mails_per_s"] for r in sec["runs"] if r["config"] == one and r["run"] == run)
                this = next(r["mails_per_s"] for r in sec["runs"] if r["config"] == label and r["run"] == run)
                k = int(label.split()[0]) if "CONCURRENCY=1" in label and "16" not in label else 1
                vals.append(this / (k * base))
            eff[label] = round(median(vals), 3)
        sec["efficiency_or_speedup"] = eff

    # ---- 5. memory under backlog
    def section_memory(self) -> None:
        runs = self.args.runs
        big = self.args.backlog
        sec = self.results["sections"]["memory"] = {"backlogs": [1000, big], "runs": []}
        vhost_big = self.add_vhost("backlog")
        declare_topology(f"amqp://guest:guest@{BROKER_HOST}/{vhost_big}")
        broker_big = Broker(vhost_big)
        sink = SmtpSink(self.procs, delay_seconds=1)
        try:
            t = time.monotonic()
            self.fill("ours-info", 1000)
            broker_big.purge("email.welcome")
            published = 0
            while published < big:
                published += broker_big.publish("signups", "user.signed_up", backlog_messages(min(10000, big - published)))
            got = broker_big.wait_depth("email.welcome", big, timeout=180)
            sec["fill_seconds"] = round(time.monotonic() - t, 1)
            log(f"5. memory: {got} messages waiting in {vhost_big} (filled in {sec['fill_seconds']} s), 1000 in "
                f"{self.vhost}; smtp-sink -w 1 (1 s per mail), CONCURRENCY=16")
            for run in range(runs):
                for label, vhost, broker in (("1k", self.vhost, self.broker), ("big", vhost_big, broker_big)):
                    proc, port = self.email_service(sink.port, 16, vhost=vhost)
                    try:
                        wait_until(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 30, 0.1)
                        time.sleep(1.5)
                        monitor = TreeMonitor([proc.pid], interval=0.2)
                        monitor.start()
                        time.sleep(3.0)
                        monitor.stop()
                        waiting = broker.depth("email.welcome")[0]
                    finally:
                        self.procs.stop(proc, timeout=10)
                    row = {"backlog": label, "run": run, "waiting": waiting,
                           "rss_mb_peak": round(monitor.peak_rss / MB, 1),
                           "rss_mb_median": round(median(monitor.samples) / MB, 1)}
                    sec["runs"].append(row)
                    log(f"5. memory run {run + 1}/{runs}: {waiting} waiting: RSS {row['rss_mb_peak']} MB (peak)")
        finally:
            sink.stop()
            broker_big.close()
            self.delete_vhost(vhost_big)
            self.broker.purge("email.welcome")
        ratios = []
        for run in range(runs):
            small = next(r for r in sec["runs"] if r["backlog"] == "1k" and r["run"] == run)
            large = next(r for r in sec["runs"] if r["backlog"] == "big" and r["run"] == run)
            ratios.append(large["rss_mb_peak"] / small["rss_mb_peak"])
        sec["summary"] = {
            "rss_mb_1k": median(r["rss_mb_peak"] for r in sec["runs"] if r["backlog"] == "1k"),
            "rss_mb_big": median(r["rss_mb_peak"] for r in sec["runs"] if r["backlog"] == "big"),
            "waiting_big": median(r["waiting"] for r in sec["runs"] if r["backlog"] == "big"),
            "ratio_big_over_1k": round(median(ratios), 3)}

    # ---- run everything
    def run(self) -> None:
        started = time.monotonic()
        self.vhost = self.add_vhost("main")
        self.broker = Broker(self.vhost)
        declare_topology(self.broker.url)
        declare_peer_queues(self.broker)
        os.environ["BENCH_AMQP_URL"] = self.broker.url
        sys.path.insert(0, str(PEERS))
        self.concurrency = self.args.concurrency or 16
        self.results["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        self.results["versions"] = self.versions()
        self.results["load_average_start"] = os.getloadavg()
        self.results["settings"] = {k: v for k, v in vars(self.args).items()}
        sections = self.args.sections.split(",")
        for name, fn in (("consumer", self.section_consumer), ("producer", self.section_producer),
                         ("e2e", self.section_e2e), ("scaling", self.section_scaling),
                         ("memory", self.section_memory)):
            if name in sections:
                t = time.monotonic()
                fn()
                self.results.setdefault("section_seconds", {})[name] = round(time.monotonic() - t, 1)
        self.results["load_average_end"] = os.getloadavg()
        self.results["total_seconds"] = round(time.monotonic() - started, 1)
        self.broker.close()


# --------------------------------------------------------------------------------------------------- report

def goals(res: dict) -> list[dict]:
    """One row per goal: the figures behind it (medians), the ratio measured within each run (median), met or not."""
    s = res["sections"]
    out = []

    def add(goal: str, figures: str, measured: str, met: bool | None) -> None:
        out.append({"goal": goal, "figures": figures, "measured": measured, "met": met})

    if "consumer" in s:
        r, sm = s["consumer"]["ratios"], s["consumer"]["summary"]
        for p in (1, 2):
            def rate(kind: str) -> str:
                return f"{sm[f'{kind} x{p}']['mails_per_s']:.0f}"

            add(f"consumer, {p} process{'es' if p > 1 else ''}: >= 3x Celery's mails/s",
                f"ours {rate('ours-info')} (info) / {rate('ours-warning')} (warning) mails/s; Celery {rate('celery')}, "
                f"Dramatiq {rate('dramatiq')}",
                f"{r[f'ours-info/celery x{p}']:.2f}x ({r[f'ours-warning/celery x{p}']:.2f}x at warning; "
                f"by CPU per mail {r[f'cpu ours-info/celery x{p}']:.1f}x)", r[f"ours-info/celery x{p}"] >= 3)
            add(f"consumer, {p} process{'es' if p > 1 else ''}: >= 85% of the ceiling",
                f"ours {rate('ours-info')} / {rate('ours-warning')}; ceiling {rate('ceiling')} mails/s",
                f"{r[f'ours-info/ceiling x{p}']:.0%} ({r[f'ours-warning/ceiling x{p}']:.0%} at warning; by CPU per mail "
                f"{r[f'cpu ours-info/ceiling x{p}']:.0%} / {r[f'cpu ours-warning/ceiling x{p}']:.0%})",
                r[f"ours-info/ceiling x{p}"] >= 0.85)
    if "producer" in s:
        r, sm = s["producer"]["ratios"], s["producer"]["summary"]
        add("producer: >= 85% of the ceiling app's req/s",
            f"ours {sm['ours']['rps']:.0f} req/s; ceiling {sm['ceiling']['rps']:.0f}; Celery endpoint {sm['celery']['rps']:.0f}",
            f"{r['ours/ceiling rps']:.0%} (by CPU per request {r['cpu ours/ceiling']:.0%})", r["ours/ceiling rps"] >= 0.85)
        add("producer: p99 <= 1.5x the ceiling's p99",
            f"p99 ours {sm['ours']['p99_ms']:.0f} ms, ceiling {sm['ceiling']['p99_ms']:.0f} ms (p50 {sm['ours']['p50_ms']:.0f} / "
            f"{sm['ceiling']['p50_ms']:.0f} ms)", f"{r['ours/ceiling p99']:.2f}x", r["ours/ceiling p99"] <= 1.5)
    if "e2e" in s:
        e = s["e2e"]["summary"]
        p99 = e["ours"]["p99_ms"]
        add(f"end to end p99 < 50 ms at half load ({s['e2e']['rate']}/s)",
            f"ours p50 {e['ours']['p50_ms']:.1f} ms, p99 {p99:.1f} ms; ceiling pair p50 {e['ceiling']['p50_ms']:.1f}, "
            f"p99 {e['ceiling']['p99_ms']:.1f} ms", f"{p99:.1f} ms ({s['e2e']['ratios']['ours/ceiling p99']:.2f}x the "
            "ceiling pair's p99)", p99 < 50)
    if "scaling" in s:
        e, sm = s["scaling"]["efficiency_or_speedup"], s["scaling"]["summary"]
        one = sm["1 process x CONCURRENCY=1"]
        eff8 = e["8 processes x CONCURRENCY=1"]
        add("scaling efficiency >= 90% at 8 processes (50 ms SMTP)",
            f"1/2/4/8 processes: {one:.1f} / {sm['2 processes x CONCURRENCY=1']:.1f} / "
            f"{sm['4 processes x CONCURRENCY=1']:.1f} / {sm['8 processes x CONCURRENCY=1']:.1f} mails/s", f"{eff8:.0%}",
            eff8 >= 0.9)
        for label in ("1 process x CONCURRENCY=16 (default pool: = CONCURRENCY)", "1 process x CONCURRENCY=16, SMTP_POOL_SIZE=16"):
            add(f"{label}: >= 12x CONCURRENCY=1", f"{sm[label]:.1f} vs {one:.1f} mails/s", f"{e[label]:.1f}x",
                e[label] >= 12)
    if "memory" in s:
        m = s["memory"]["summary"]
        add(f"RSS flat with {m['waiting_big']:,} waiting vs 1,000 (within 10%)",
            f"{m['rss_mb_big']} MB vs {m['rss_mb_1k']} MB", f"{m['ratio_big_over_1k']:.3f}x", m["ratio_big_over_1k"] <= 1.10)
    rss = []
    if "memory" in s:
        rss.append(s["memory"]["summary"]["rss_mb_big"])
    if "consumer" in s:
        rss.append(s["consumer"]["summary"]["ours-info x1"]["peak_rss_mb"])
    if rss:
        add("RSS < 100 MB per email-service process", "highest median peak RSS of one email-service",
            f"{max(rss)} MB", max(rss) < 100)
    return out


def goals_table(res: dict) -> list[str]:
    lines = ["| goal | figures (medians) | measured (ratios within a run, median) | met |", "|---|---|---|---|"]
    for g in res["goals"]:
        lines.append(f"| {g['goal']} | {g['figures']} | {g['measured']} | {'met' if g['met'] else 'MISSED'} |")
    return lines


def markdown(res: dict) -> str:
    s = res["sections"]
    v = res["versions"]
    m = v["machine"]
    svc, peers = v["services (.venv)"], v["peers (.venv-bench)"]
    lines = [
        "# welcome-mail benchmarks",
        "",
        f"Run {res['date']} by `make bench` ({res['total_seconds']:.0f} s). Machine: {m['nproc']} cores "
        f"({m['cpu_model']}), {m['memory_gib']} GiB, Debian {m['os']}, kernel {m['kernel']}; shared with other "
        f"jobs (load average {res['load_average_start'][0]:.1f} at the start, {res['load_average_end'][0]:.1f} at the "
        f"end). Every figure is the median of {res['settings']['runs']} runs; contenders were interleaved "
        "(A B C, A B C, ...) and every ratio is taken within one run, then the median of those ratios.",
        "",
        f"Code: commit {v['code']['commit']}" + (f" with uncommitted changes in {', '.join(x.split()[-1] for x in v['code']['uncommitted_service_files'])}"
                                                 if v['code']['uncommitted_service_files'] else "") + "."
        + (f" {v['code']['note']}" if v['code'].get('note') else ""),
        "",
        f"Versions: Python {svc['python']}; RabbitMQ {v['rabbitmq']['version']} ({v['rabbitmq']['platform']}); "
        f"aio-pika {svc['aio-pika']}, aiosmtplib {svc['aiosmtplib']}, uvicorn {svc['uvicorn']}, "
        f"starlette {svc['starlette']}, uvloop {svc['uvloop']}, httptools {svc['httptools']}; "
        f"Celery {peers['celery']} (kombu {peers['kombu']}), Dramatiq {peers['dramatiq']} (pika {peers['pika']}); "
        f"{v['tools']['wrk']}; Postfix smtp-sink {v['tools']['postfix (smtp-sink)']}.",
        "",
    ]
    if "consumer" in s:
        c = s["consumer"]
        nn = c["n_per_run"]
        lines += [f"## 1. Consumer: drain queued signups into smtp-sink "
                  f"({nn['email-service, ceiling']:,} per run for the email-service and the ceiling, "
                  f"{nn['celery, dramatiq']:,} for Celery and Dramatiq)", "",
                  f"Ours: `email-service run`, CONCURRENCY={c['concurrency']} (picked from 8/16/32: "
                  + ", ".join(f"{t['concurrency']}: {t['mails_per_s']}/s" for t in c["concurrency_trial"])
                  + "), SMTP_POOL_SIZE default (= CONCURRENCY), SMTP_SECURITY=none.", "",
                  "| contender | processes | mails/s | CPU s / 1,000 mails | peak RSS (MB, all processes) |",
                  "|---|---|---|---|---|"]
        names = {"ours-info": "email-service, LOG_LEVEL=info", "ours-warning": "email-service, LOG_LEVEL=warning",
                 "celery": "Celery prefork, acks_late, smtplib + EmailMessage",
                 "dramatiq": "Dramatiq, 8 threads/process, smtplib + EmailMessage",
                 "ceiling": "ceiling: bare aio-pika + aiosmtplib pool 16, pre-rendered"}
        for p in (1, 2):
            for kind, label in names.items():
                row = c["summary"][f"{kind} x{p}"]
                lines.append(f"| {label} | {p} | {row['mails_per_s']:.0f} | {row['cpu_s_per_1000']:.2f} | "
                             f"{row['peak_rss_mb']:.0f} |")
        r = c["ratios"]
        lines += ["", "Ratios, each taken within one run, median over the runs. *mails/s* is the measured throughput "
                  "ratio; *CPU* is the inverse ratio of CPU seconds per mail (the capacity ratio if both were "
                  "CPU-bound on equal cores), which the other jobs on this shared machine disturb far less.", "",
                  "| ratio | 1 process: mails/s | 1 process: CPU | 2 processes: mails/s | 2 processes: CPU |",
                  "|---|---|---|---|---|"]
        for key in ("ours-info/celery", "ours-info/dramatiq", "ours-info/ceiling", "ours-warning/celery",
                    "ours-warning/dramatiq", "ours-warning/ceiling", "ours-warning/ours-info"):
            lines.append(f"| {key} | {r[key + ' x1']:.2f} | {r['cpu ' + key + ' x1']:.2f} | {r[key + ' x2']:.2f} | "
                         f"{r['cpu ' + key + ' x2']:.2f} |")
        lines.append("")
    if "producer" in s:
        p = s["producer"]
        lines += ["## 2. Producer: POST /v1/signups, 64 connections, 1 worker process", "",
                  f"`{p['wrk']}` after a 1 s warm-up; the queue is purged between runs.", "",
                  "| contender | req/s | p50 ms | p99 ms | CPU s / 1,000 requests (server) | non-2xx |", "|---|---|---|---|---|---|"]
        names = {"ours": "producer-service (validation, metrics, log line, publish + confirm)",
                 "ceiling": "ceiling: Starlette + 1 aio-pika publish with confirm",
                 "celery": "Starlette + Celery send_task in the thread pool (confirm_publish)"}
        for kind, label in names.items():
            row = p["summary"][kind]
            lines.append(f"| {label} | {row['rps']:.0f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | "
                         f"{row['cpu_s_per_1000']:.2f} | {row['non_2xx']} |")
        r = p["ratios"]
        lines += ["", f"Ratios (same run): ours/ceiling req/s {r['ours/ceiling rps']:.2f} (from CPU per request: "
                  f"{r['cpu ours/ceiling']:.2f}), p99 {r['ours/ceiling p99']:.2f}x; "
                  f"ours/Celery req/s {r['ours/celery rps']:.2f}, p99 {r['ours/celery p99']:.2f}x.", ""]
    if "e2e" in s:
        e = s["e2e"]
        cal = e["calibration"]
        lines += [f"## 3. End to end at half load: {e['rate']} signups/s for {e['seconds']:g} s", "",
                  f"Pipeline maximum measured first with everything running (wrk on the producer while the "
                  f"email-service drains): producer {cal['producer_rps_under_wrk']:.0f} req/s, mails meanwhile "
                  f"{cal['mails_per_s_meanwhile']:.0f}/s; the load is half of the lower. Time from the POST (paced "
                  "open-loop generator, tests/bench/loadgen.py) until the SMTP server accepted the mail "
                  "(tests/bench/sink.py, by Message-ID = event id). Ours: producer-service + 1 email-service "
                  f"(CONCURRENCY={s.get('consumer', {}).get('concurrency', 16)}), both LOG_LEVEL=info; alternately, "
                  "at the same rate, the ceiling pair (ceiling_app.py + ceiling_consumer.py).", "",
                  "| pipeline | POST -> accepted p50 / p99 / max (ms) | POST -> 202 p50 / p99 | 202 -> accepted p50 / p99 | "
                  "achieved rate/s |", "|---|---|---|---|---|"]
        for contender, label in (("ours", "producer-service + email-service"), ("ceiling", "ceiling pair")):
            sm = e["summary"][contender]
            lines.append(f"| {label} | {sm['p50_ms']:.1f} / {sm['p99_ms']:.1f} / {sm['max_ms']:.1f} | "
                         f"{sm['http_p50_ms']:.1f} / {sm['http_p99_ms']:.1f} | {sm['after_202_p50_ms']:.1f} / "
                         f"{sm['after_202_p99_ms']:.1f} | {sm['achieved_rate']:.0f} |")
        sm = e["summary"]["ours"]
        lines += ["", f"Ours/ceiling p99 (same run): {e['ratios']['ours/ceiling p99']:.2f}x. Cross-check from the "
                  f"email-service's own histogram email_end_to_end_seconds (occurred_at -> accepted): p99 "
                  f"~{sm['histogram_p99_ms']:.0f} ms (interpolated in 25-50-100 ms buckets), "
                  f"{sm['histogram_share_within_50ms']:.1%} within 50 ms.", ""]
    if "scaling" in s:
        sc = s["scaling"]
        lines += [f"## 4. Horizontal scaling: SMTP server answers each mail after {sc['smtp_delay_s'] * 1000:.0f} ms", "",
                  "| configuration | mails/s | efficiency (N procs: rate / (N x rate at 1)); speedup for CONCURRENCY=16 |",
                  "|---|---|---|"]
        for label, rate in sc["summary"].items():
            eff = sc["efficiency_or_speedup"][label]
            shown = f"{eff:.0%}" if "CONCURRENCY=1" in label and "16" not in label else f"{eff:.1f}x"
            lines.append(f"| {label} | {rate:.1f} | {shown} |")
        lines.append("")
    if "memory" in s:
        mm = s["memory"]["summary"]
        lines += ["## 5. Memory under backlog (one email-service, CONCURRENCY=16, smtp-sink -w 1)", "",
                  "| messages waiting | RSS (MB, peak over 3 s) |", "|---|---|",
                  f"| 1,000 | {mm['rss_mb_1k']:.1f} |", f"| {mm['waiting_big']:,} | {mm['rss_mb_big']:.1f} |", "",
                  f"Ratio {mm['ratio_big_over_1k']:.3f}.", ""]
    lines += ["## Goals", "", *goals_table(res), ""]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--n", type=int, default=4000, help="signups per drain for the email-service and the ceiling")
    p.add_argument("--n-peers", type=int, default=1000, help="signups per drain for Celery and Dramatiq")
    p.add_argument("--concurrency", type=int, default=0, help="email-service CONCURRENCY (0: try 8/16/32, pick)")
    p.add_argument("--wrk-seconds", type=int, default=8)
    p.add_argument("--e2e-seconds", type=float, default=6.0)
    p.add_argument("--e2e-max", type=float, default=0, help="use this pipeline maximum (req/s) instead of measuring it")
    p.add_argument("--scaling-seconds", type=float, default=3.0)
    p.add_argument("--backlog", type=int, default=200_000)
    p.add_argument("--sections", default="consumer,producer,e2e,scaling,memory")
    p.add_argument("--out", default=str(HERE), help="directory for results.json and RESULTS.md")
    args = p.parse_args()
    for tool in (SMTP_SINK, WRK, shutil.which("rabbitmqctl")):
        if not tool or not Path(tool).exists():
            print(f"missing tool: {tool} (make bench installs postfix and wrk)", file=sys.stderr)
            return 2

    tmp = Path(tempfile.mkdtemp(prefix="wm-bench-"))
    bench = Bench(args, tmp)

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    # SIGINT too: a shell starts background jobs with SIGINT ignored, and Ctrl-C must always clean up.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        signal.signal(signum, on_signal)
    signal.alarm(DEADLINE_SECONDS)
    try:
        bench.run()
    except KeyboardInterrupt as exc:
        log(f"interrupted ({exc}); cleaning up")
        return 130
    finally:
        signal.alarm(0)
        bench.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    res = bench.results
    res["goals"] = goals(res)
    out = Path(args.out)
    (out / "results.json").write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n")
    (out / "RESULTS.md").write_text(markdown(res))
    m = res["versions"]["machine"]
    print()
    print(f"welcome-mail benchmarks, {res['date']}, {m['nproc']} cores ({m['cpu_model']}), load average "
          f"{res['load_average_start'][0]:.1f}, {res['total_seconds']:.0f} s; medians of {args.runs} interleaved runs")
    print()
    print("\n".join(goals_table(res)))
    print()
    print(f"Every figure, version and per-run value: {out / 'RESULTS.md'} and {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
