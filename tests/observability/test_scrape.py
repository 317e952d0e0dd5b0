"""The services' /metrics as Prometheus itself sees them, after real traffic.

- `promtool check metrics` (format and lint) on each service's /metrics output once every outcome has happened;
- a real Prometheus server (Debian's 2.42) scraping both services every second: after K signups end to end,
  `sum(email_messages_total{outcome="sent"})` and `sum(producer_signups_total{outcome="accepted"})` are K.

Both services run in-process against this test's RabbitMQ vhost and the aiosmtpd test server. promtool and
prometheus come from Debian's `prometheus` package; without them these tests fail, they never skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.ports import free_port
from tests.support.processes import ServiceProcess
from tests.support.prometheus import Metrics
from tests.support.waits import WaitTimedOut, eventually

MISSING = "install the Debian package prometheus (make system-deps)"
SIGNUPS = 25  # K: signups driven through the real Prometheus test

# promtool lint findings we accept, as "<metric> <text>" lines exactly as promtool prints them. Empty: none.
ACCEPTED_LINT: frozenset[str] = frozenset()


def debian_tool(name: str) -> str:
    exe = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if exe is None:
        pytest.fail(f"{name} not found: {MISSING}", pytrace=False)
    return exe


def promtool_check_metrics(exposition: str) -> tuple[int, list[str]]:
    """Exit code and findings (every non-empty line promtool printed) of `promtool check metrics` on stdin."""
    result = subprocess.run([debian_tool("promtool"), "check", "metrics"], input=exposition, capture_output=True,
                            text=True, timeout=60, check=False)
    return result.returncode, [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


@pytest.fixture
def service_log(tmp_path) -> Iterator[Path]:
    """The in-process services' log records (loggers producer_service and email_service) in tmp_path."""
    path = tmp_path / "services.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    loggers = [logging.getLogger(name) for name in ("producer_service", "email_service")]
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    yield path
    for lg, level in saved:
        lg.removeHandler(handler)
        lg.setLevel(level)
    handler.close()


def tail(path: Path, lines: int = 60) -> str:
    if not path.exists():
        return f"({path} missing)"
    text = path.read_text(errors="replace").splitlines()
    return f"--- {path} (last {min(lines, len(text))} of {len(text)} lines) ---\n" + "\n".join(text[-lines:])


# --- promtool check metrics --------------------------------------------------------------------------------


def test_promtool_check_metrics_flags_a_bad_exposition() -> None:
    """The check below can fail: a counter without `_total` and a metric without HELP are reported."""
    code, findings = promtool_check_metrics(
        "# HELP things_handled Things.\n# TYPE things_handled counter\nthings_handled 1\n"
        "# TYPE no_help_here gauge\nno_help_here 1\n")
    assert code != 0
    text = "\n".join(findings)
    assert 'things_handled counter metrics should have "_total" suffix' in text, text
    assert "no_help_here no help text" in text, text


@pytest.mark.integration
async def test_metrics_pass_promtool_after_every_outcome(producer_factory, email_service_factory, smtp_server,
                                                         service_log) -> None:
    smtp_server.reject_recipient("rejected@example.com", "550 5.1.1 no such user")
    async with producer_factory() as producer:
        await producer.wait_ready()
        # unavailable: no queue is bound yet in this fresh vhost, the broker returns the mandatory publish (503).
        assert (await producer.signup("early@example.com")).status_code == 503
        # invalid: 422 (bad field), 400 (not JSON), 415 (not JSON at all).
        assert (await producer.signup("not-an-address")).status_code == 422
        assert (await producer.client.post("/v1/signups", content=b"{",
                                           headers={"Content-Type": "application/json"})).status_code == 400
        assert (await producer.client.post("/v1/signups", content=b"x",
                                           headers={"Content-Type": "text/plain"})).status_code == 415
        async with email_service_factory() as email:
            smtp_server.defer_next(1)  # retried: the first mail gets a 451, its retry is sent
            accepted = ["a1@example.com", "a2@example.com", "a3@example.com", "rejected@example.com"]
            for address in accepted:
                response = await producer.signup(address)
                assert response.status_code == 202, response.text
            # sent 3 (one after a retry), retried 1, dead_lettered 1 (smtp_rejected)
            await eventually(lambda: (email.count("sent"), email.count("retried"), email.count("dead_lettered"))
                             == (3, 1, 1), timeout=15, what="sent 3, retried 1, dead_lettered 1")
            async with httpx.AsyncClient(timeout=10) as client:
                producer_text = (await client.get(f"{producer.url}/metrics")).text
                email_response = await client.get(f"{email.url}/metrics")
            email_text = email_response.text
            assert email_response.status_code == 200

    # The expositions reflect the traffic (so promtool checked real series, not just the initial zeros).
    p, e = Metrics.parse(producer_text), Metrics.parse(email_text)
    assert [p.value("producer_signups_total", outcome=o) for o in ("accepted", "invalid", "unavailable")] \
        == [4.0, 3.0, 1.0], producer_text
    assert p.value("producer_publish_seconds_count") == 4.0, producer_text
    assert p.value("producer_http_request_duration_seconds_count", route="/v1/signups", method="POST",
                   status_class="4xx") == 3.0, producer_text
    assert p.value("producer_broker_connected") == 1.0, producer_text
    assert [e.value("email_messages_total", outcome=o) for o in ("sent", "retried", "dead_lettered", "duplicate")] \
        == [3.0, 1.0, 1.0, 0.0], email_text
    assert e.value("email_dead_letters_total", reason="smtp_rejected") == 1.0, email_text
    # Every SMTP exchange is timed, the 451 and the 550 included; end to end only counts accepted mails.
    assert e.value("email_send_seconds_count") == 5.0, email_text
    assert e.value("email_end_to_end_seconds_count") == 3.0, email_text
    assert e.value("email_consumer_up") == 1.0, email_text

    problems = []
    for service, text in (("producer-service", producer_text), ("email-service", email_text)):
        code, findings = promtool_check_metrics(text)
        unexpected = [f for f in findings if f not in ACCEPTED_LINT]
        if code != 0 and not (findings and not unexpected):
            problems.append(f"{service}: promtool check metrics exited {code}")
        problems += [f"{service}: {f}" for f in unexpected]
    assert not problems, "\n".join(problems) + "\n\n" + tail(service_log)


# --- a real Prometheus -------------------------------------------------------------------------------------


class PrometheusServer:
    """/usr/bin/prometheus on loopback with a temporary storage dir; its log goes to a file for post-mortems."""

    def __init__(self, tmp_path: Path, targets: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = tmp_path / "prometheus.yml"
        jobs = "".join(f"  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
                       for job, target in targets.items())
        self.config.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                               "  evaluation_interval: 1s\nscrape_configs:\n" + jobs)
        self.process = ServiceProcess(
            "prometheus", [debian_tool("prometheus"), f"--config.file={self.config}",
                           f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
                           f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=info"],
            {}, tmp_path / "prometheus.log", ready_url=f"{self.url}/-/ready")
        self.log_path = self.process.log_path

    def start(self) -> None:
        self.process.start()

    def stop(self) -> None:
        self.process.stop(grace=10)

    async def wait_ready(self, timeout: float = 15) -> None:
        await self.process.wait_ready(timeout=timeout)

    async def query(self, client: httpx.AsyncClient, promql: str) -> list[dict]:
        response = await client.get(f"{self.url}/api/v1/query", params={"query": promql})
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", f"{promql}: {response.text}"
        return body["data"]["result"]

    async def scalar_at_least(self, client: httpx.AsyncClient, promql: str, minimum: float,
                              timeout: float) -> float | None:
        """Poll until the query's single sample is >= minimum; returns the last value seen (None: no sample)."""
        last: list[float | None] = [None]

        async def reached() -> bool:
            result = await self.query(client, promql)
            assert len(result) <= 1, f"{promql} returned {len(result)} series: {result}"
            last[0] = float(result[0]["value"][1]) if result else None
            return last[0] is not None and last[0] >= minimum

        with contextlib.suppress(WaitTimedOut):  # the caller asserts on the value, naming what it saw
            await eventually(reached, timeout=timeout, interval=0.2, what=promql)
        return last[0]


@pytest.mark.integration
async def test_prometheus_scrapes_both_services_and_counts_every_signup(producer_factory, email_service_factory,
                                                                        smtp_server, service_log, tmp_path) -> None:
    producer = producer_factory()
    email = email_service_factory()
    prometheus = PrometheusServer(tmp_path, {"producer": f"127.0.0.1:{producer.port}",
                                             "email": urlsplit(email.url).netloc})
    # Started first: Prometheus applies its scrape targets only ~5 s after start, that overlaps the traffic.
    prometheus.start()
    try:
        async with httpx.AsyncClient(timeout=5) as client, email, producer:
            await producer.wait_ready()
            await prometheus.wait_ready()
            responses = await asyncio.gather(*(producer.signup(f"user{i}@example.com") for i in range(SIGNUPS)))
            assert [r.status_code for r in responses] == [202] * SIGNUPS, [r.text for r in responses]
            await eventually(lambda: email.count("sent") == SIGNUPS, timeout=15, what=f"{SIGNUPS} mails sent")
            assert smtp_server.count() == SIGNUPS

            def context() -> str:
                return "\n".join([tail(prometheus.log_path), tail(service_log)])

            # Poll until the count reached K (bounded), then require exactly K: an overshoot fails too.
            sent = await prometheus.scalar_at_least(client, 'sum(email_messages_total{outcome="sent"})', SIGNUPS,
                                                    timeout=20)
            assert sent == SIGNUPS, f"Prometheus: sent={sent}, expected {SIGNUPS}\n{context()}"
            accepted = await prometheus.scalar_at_least(
                client, 'sum(producer_signups_total{outcome="accepted"})', SIGNUPS, timeout=5)
            assert accepted == SIGNUPS, f"Prometheus: accepted={accepted}, expected {SIGNUPS}\n{context()}"
            up = {r["metric"]["job"]: r["value"][1] for r in await prometheus.query(client, "up")}
            assert up == {"producer": "1", "email": "1"}, f"up: {up}\n{context()}"
    finally:
        prometheus.stop()
    assert prometheus.process.returncode is not None, "prometheus still running after stop()"
