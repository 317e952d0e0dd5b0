"""What `rabbitmqctl --formatter json` says, as typed values (pure: text in, values out).

`cluster_status` prints one JSON object; `list_queues` and the other list commands print a JSON array of rows.
A quorum queue's row names its `leader` ("" while it has none, or for a classic queue) and its `online` and
`members` node lists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import ClusterError


def parse(text: str, command: str) -> Any:
    """The JSON value of a command's output; empty output (a list command with -q and no rows) is []."""
    text = text.strip()
    if not text:
        return []
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ClusterError(f"rabbitmqctl {command} printed no JSON ({error}): {text[:200]!r}") from None


@dataclass(frozen=True)
class ClusterStatus:
    """Cluster membership as one node sees it."""

    running_nodes: tuple[str, ...]
    disk_nodes: tuple[str, ...]

    @classmethod
    def from_json(cls, text: str) -> ClusterStatus:
        data = parse(text, "cluster_status")
        if not isinstance(data, dict):
            raise ClusterError(f"rabbitmqctl cluster_status: expected an object, got {text[:200]!r}")
        return cls(running_nodes=tuple(sorted(data.get("running_nodes") or ())),
                   disk_nodes=tuple(sorted(data.get("disk_nodes") or ())))


@dataclass(frozen=True)
class QueueState:
    """One queue's Raft view: its leader (None when there is none) and its online members."""

    name: str
    leader: str | None
    online: tuple[str, ...]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> QueueState:
        leader = row.get("leader") or ""
        online = row.get("online") or ()
        return cls(name=str(row["name"]), leader=leader if "@" in leader else None,
                   online=tuple(sorted(online if isinstance(online, list) else ())))


def find_queue(text: str, queue: str) -> QueueState | None:
    """The row of `queue` in `list_queues name leader online` output, or None."""
    rows = parse(text, "list_queues")
    for row in rows if isinstance(rows, list) else ():
        if isinstance(row, dict) and row.get("name") == queue:
            return QueueState.from_row(row)
    return None
