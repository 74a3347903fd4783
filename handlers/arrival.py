"""Waiting for the events that arrived before this one.

The bridge numbers events as they arrive (their seq). A task that must see
the effect of every earlier event, as the daily report must, waits until
none with a lower seq is unfinished. It waits by deferring itself (NotReady),
never by sleeping: a worker process asleep here would be one fewer running
the very events it waits for. The wait is bounded by REPORT_WAIT_S.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import structlog

from app.event_task import NotReady

if TYPE_CHECKING:
    from app.event_task import WorkerResources

log = structlog.get_logger(__name__)

DEFER_S = 1.0


def wait_for_earlier_events(resources: WorkerResources, meta: dict[str, Any]) -> None:
    """Return once every earlier event has finished, or the wait is over; else defer."""
    wait_s = resources.settings.report_wait_s
    # Kept in meta, which a deferral passes on, so the bound holds across them.
    wait_until = float(meta.setdefault("waitUntil", time.time() + wait_s))
    pending = resources.state.unfinished_before(int(meta["seq"]))
    if pending == 0:
        return
    if time.time() >= wait_until:
        log.warning("going ahead while earlier events are still unfinished",
                    pending=pending, event_key=meta["eventKey"])
        return
    raise NotReady(f"{pending} earlier events unfinished", countdown_s=DEFER_S)
