"""producer-service as a process: a signal is a clean stop, its last log lines are written, and it exits 0."""

from __future__ import annotations

import json
import signal

import httpx
import pytest

from tests.support.amqp import declare_topology
from tests.support.env import producer_env
from tests.support.ports import free_port
from tests.support.processes import producer_process


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_signal_stops_the_producer_cleanly_with_its_last_log_lines(vhost, tmp_path, signum):
    await declare_topology(vhost.url)  # the work queue the event is routed to
    port = free_port()
    proc = producer_process(producer_env(vhost.url, http_port=port, LOG_LEVEL="INFO"), tmp_path / "producer.log")
    proc.start()
    try:
        await proc.wait_ready()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            accepted = await client.post("/v1/signups", json={"email": "ada@example.com", "name": "Ada"})
        assert accepted.status_code == 202
        proc.signal(signum)
        code = await proc.wait_exit(timeout=30)
    finally:
        proc.stop()
    output = proc.output()
    assert code == 0, output
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    # The INFO lines written in the last moments (batched, not yet due) are there: nothing died with the process.
    assert lines[-1]["msg"] == "stopped", output
    assert any(line.get("event_id") == accepted.json()["event_id"] for line in lines), output
