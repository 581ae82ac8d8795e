"""Which job events become webhook messages, and what those messages are called.

A subscriber picks event names from ``EVENT_NAMES``; a message's ``type`` is ``edit_job.<name>``.
The job store calls ``event_name`` on every event it appends: a non-``None`` answer puts the
event on the webhook outbox in the same Redis transaction (``contract.store.jobs``), which is
what makes delivery of a job's terminal event survive a gateway or worker restart.
"""

from __future__ import annotations

from typing import Any, Literal

EventName = Literal["succeeded", "failed", "cancelled", "stage_changed", "trial"]
EVENT_NAMES: tuple[str, ...] = ("succeeded", "failed", "cancelled", "stage_changed", "trial")
TERMINAL_EVENTS: tuple[str, ...] = ("succeeded", "failed", "cancelled")
DEFAULT_EVENTS: tuple[str, ...] = TERMINAL_EVENTS
TYPE_PREFIX = "edit_job."


def event_name(data: dict[str, Any] | None) -> str | None:
    """The webhook event a job event stands for (None: not one subscribers can receive).

    ``{"kind": "status", "status": "succeeded"}`` -> ``"succeeded"`` (likewise failed/cancelled);
    ``{"kind": "stage", ...}`` -> ``"stage_changed"``; ``{"kind": "trial", ...}`` -> ``"trial"``."""
    if not data:
        return None
    kind = data.get("kind")
    if kind == "status" and data.get("status") in TERMINAL_EVENTS:
        return str(data["status"])
    if kind == "stage":
        return "stage_changed"
    if kind == "trial":
        return "trial"
    return None


def message_type(name: str) -> str:
    """``"succeeded"`` -> ``"edit_job.succeeded"`` (the ``type`` field of a delivered message)."""
    return TYPE_PREFIX + name
