"""`make run` (deploy/local/run.sh) as a newcomer uses it: a signup ends as a mail in the viewer; when a component
dies, it says which one and with what status and exits with it; Ctrl-C stops every component cleanly."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import httpx

from tests.support.amqp import declare_topology
from tests.support.ports import free_port
from tests.support.processes import ServiceProcess
from tests.support.waits import eventually

RUN_SH = Path(__file__).resolve().parents[2] / "deploy/local/run.sh"


def make_run(vhost_url: str, tmp_path: Path) -> tuple[ServiceProcess, dict[str, int]]:
    ports = {name: free_port() for name in ("HTTP_PORT", "METRICS_PORT", "SMTP_CAPTURE_PORT", "MAIL_VIEWER_PORT",
                                            "REDIS_PORT")}
    env = {"AMQP_URL": vhost_url, "CAPTURE_DIR": str(tmp_path / "mail-capture"),
           **{name: str(port) for name, port in ports.items()}}
    return ServiceProcess("make-run", [str(RUN_SH)], env, tmp_path / "run.log"), ports


def children(pid: int) -> dict[str, int]:
    """The components run.sh started, by the name of their program (its redis-server, which retitles itself,
    as "redis-server")."""
    found = {}
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        if argv[0].startswith(b"redis-server"):
            found["redis-server"] = int(child)
            continue
        name = next(Path(a.decode()).name for a in argv if re.search(rb"(service|smtp_capture\.py)$", a))
        found[name] = int(child)
    return found


async def started(vhost_url: str, tmp_path: Path) -> tuple[ServiceProcess, dict[str, int]]:
    await declare_topology(vhost_url)
    run, ports = make_run(vhost_url, tmp_path)
    run.start()
    await run.wait_ready(f"http://127.0.0.1:{ports['HTTP_PORT']}/readyz")
    await run.wait_ready(f"http://127.0.0.1:{ports['METRICS_PORT']}/readyz")
    await run.wait_ready(f"http://127.0.0.1:{ports['MAIL_VIEWER_PORT']}/api/mails")
    return run, ports


async def test_a_signup_shows_in_the_viewer_and_ctrl_c_stops_everything_cleanly(vhost, tmp_path):
    run, ports = await started(vhost.url, tmp_path)
    try:
        assert f"http://127.0.0.1:{ports['MAIL_VIEWER_PORT']}/" in run.output()
        async with httpx.AsyncClient(timeout=10) as client:
            accepted = await client.post(f"http://127.0.0.1:{ports['HTTP_PORT']}/v1/signups",
                                         json={"email": "ada@example.com", "name": "Ada", "locale": "zh-CN"})
            assert accepted.status_code == 202

            async def listed() -> list:
                return (await client.get(f"http://127.0.0.1:{ports['MAIL_VIEWER_PORT']}/api/mails")).json()

            await eventually(listed, timeout=30, what="the welcome mail in the viewer")
        os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C in the terminal does: the whole foreground group
        code = await run.wait_exit(timeout=60)
    finally:
        run.stop()
    output = run.output()
    assert code == 0, output
    for name in ("smtp-capture", "email-service", "producer-service"):
        assert f"make run: {name} stopped (exit status 0)" in output, output


async def test_a_component_that_dies_is_named_with_its_status_and_make_run_fails(vhost, tmp_path):
    run, _ = await started(vhost.url, tmp_path)
    try:
        components = children(run.pid)
        os.kill(components["smtp_capture.py"], signal.SIGTERM)  # the capture alone: the pipeline goes on
        await eventually(lambda: "smtp-capture stopped (exit status 0); the pipeline goes on" in run.output(),
                         timeout=20, what="make run to report the capture")
        assert run.alive
        os.kill(components["email-service"], signal.SIGKILL)
        code = await run.wait_exit(timeout=60)
    finally:
        run.stop()
    output = run.output()
    assert code == 137, output
    assert "make run: email-service stopped (exit status 137); stopping the rest" in output, output
    assert "make run: producer-service stopped (exit status 0)" in output, output
