"""What becomes of a chain when one of its tasks fails for good.

Celery runs the next task of a chain only when the one before it succeeded;
otherwise the rest of the chain is silently never published. The event's
state counts every task of its chains (`tasksTotal`), so each task that will
now never run is recorded here as failed, and announced by a `task.failed`
completion event that says why (attempts 0): listeners learn, for instance,
that a report was not e-mailed because it was never written.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from app.completion import completion_event_id
from app.errors import Unroutable, UpstreamFailed
from schemas.completion import CompletionEvent, TaskError

if TYPE_CHECKING:
    from app.event_task import WorkerResources

log = structlog.get_logger(__name__)


def abandon_rest_of_chain(
    resources: WorkerResources, chain: list[dict[str, Any]], meta: dict[str, Any], *,
    failed_task: str,
) -> None:
    """Record each task left in `chain` (protocol order: last runs next) as failed."""
    for signature in reversed(chain):
        task_id, task_name = signature["options"]["task_id"], signature["task"]
        error = UpstreamFailed(f"not run: {failed_task}, earlier in its chain, failed")
        # An unroutable one is counted by the publisher, as any completion event.
        with contextlib.suppress(Unroutable):
            resources.completions.publish(_failed_completion(task_id, task_name, meta, error))
        resources.state.task_finished(key=meta["eventKey"], task_id=task_id, succeeded=False,
                                      attempt=0, error=f"{type(error).__name__}: {error}")
        log.warning("chained task not run: an earlier task of its chain failed",
                    event_key=meta["eventKey"], task=task_name, task_id=task_id,
                    failed_task=failed_task)


def _failed_completion(task_id: str, task_name: str, meta: dict[str, Any],
                       error: UpstreamFailed) -> CompletionEvent:
    return CompletionEvent(
        event_type="task.failed",
        event_id=completion_event_id(task_id, "task.failed"),
        timestamp=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        trace_id=meta.get("traceId"),
        task_id=task_id,
        task_name=task_name,
        source_event_type=meta["eventType"],
        source_event_key=meta["eventKey"],
        attempts=0,
        duration_ms=0.0,
        error=TaskError(type=type(error).__name__, message=str(error)),
    )
