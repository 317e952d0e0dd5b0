"""Both /metrics carry the standard process_* and python_* series next to the services' own."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from email_service.metrics import EmailMetrics
from producer_service.metrics import ProducerMetrics


@pytest.mark.parametrize("metrics", [EmailMetrics, ProducerMetrics])
def test_process_and_python_series_are_exposed(metrics):
    text = generate_latest(metrics(CollectorRegistry()).registry).decode()
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "python_info",
                 "python_gc_collections_total"):
        assert f"\n{name}" in text, f"{name} missing from {metrics.__name__}"
