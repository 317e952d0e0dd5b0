"""The alert rules the chart ships (helm/welcome-mail/files/prometheus-rules.yaml), read as plain data.

Invariant: tests read the one rules file the chart embeds and `promtool test rules` runs; there is no second copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "helm/welcome-mail/files/prometheus-rules.yaml"


def alert_rules(path: Path = RULES) -> list[dict[str, Any]]:
    """Every alerting rule of every group, in file order (recording rules left out)."""
    groups = yaml.safe_load(path.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def runbook_urls(path: Path = RULES) -> dict[str, str]:
    """Alert name -> its runbook_url annotation ("" when it has none)."""
    return {rule["alert"]: rule.get("annotations", {}).get("runbook_url", "") for rule in alert_rules(path)}
