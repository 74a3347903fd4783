"""Retention clean-up after each rollover: Redis keeps RETENTION_DAYS of history.

Removed, each by the clock its own timestamps keep:

- call records of calls that started (else ended) before the cutoff of the
  day just ended: the end of that day, in the rollover's timezone, minus
  RETENTION_DAYS days, so RETENTION_DAYS whole days are kept;
- report index entries of days before that same cutoff (the report files
  on disk are kept);
- task state of events last updated more than RETENTION_DAYS ago by the
  wall clock (state timestamps are arrival times, not event times); only
  events that reached a final state, so nothing in progress loses its record.

Like the report, it first waits for the events that arrived before its
rollover, so that what it counts does not depend on scheduling. It runs
beside the report, not after it: the report reads the day just ended, which
is always newer than the cutoff. Each removal is idempotent, so a replayed
rollover removes nothing twice.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

import redis
import structlog
from celery import shared_task

from app.event_task import EventTask, worker_resources
from app.state import FINAL_STATES, StateKeys
from handlers.arrival import wait_for_earlier_events
from handlers.calls import remove_calls_before
from handlers.report_index import day_start, remove_reports_before
from handlers.routes import RETENTION_CLEANUP

log = structlog.get_logger(__name__)

_SCAN_COUNT = 1000


def data_cutoff(day: date, timezone: str, retention_days: int) -> datetime:
    """Call records and report index entries older than this go."""
    return day_start(day + timedelta(days=1), timezone) - timedelta(days=retention_days)


def remove_task_state_before(client: redis.Redis, prefix: str, cutoff: datetime) -> int:
    """Remove the state of finished events last updated before `cutoff`; return how many."""
    keys = StateKeys(prefix)
    removed = 0
    for raw in client.scan_iter(match=keys.event("*"), count=_SCAN_COUNT):
        name = raw.decode()
        if name.endswith(":history"):
            continue
        state, updated_at, task_ids = cast(list[bytes | None],
                                           client.hmget(name, "state", "updatedAt", "taskIds"))
        if state is None or state.decode() not in FINAL_STATES or updated_at is None:
            continue
        if datetime.fromisoformat(updated_at.decode()) >= cutoff:
            continue
        event_key = name[len(keys.event("")):]
        tasks = json.loads(task_ids) if task_ids else []
        client.delete(name, keys.history(event_key), *(keys.task(task_id) for task_id in tasks))
        client.zrem(keys.inflight, event_key)
        removed += 1
    return removed


@shared_task(base=EventTask, name=RETENTION_CLEANUP, bind=True)
def retention_cleanup(self: EventTask, event: dict[str, Any],
                      meta: dict[str, Any]) -> dict[str, Any]:
    """Remove what is older than RETENTION_DAYS; say how much of each went."""
    resources = worker_resources()
    wait_for_earlier_events(resources, meta)
    settings = resources.settings
    prefix = settings.redis_prefix
    cutoff = data_cutoff(date.fromisoformat(event["date"]), event["timezone"],
                         settings.retention_days)
    state_cutoff = datetime.now(UTC) - timedelta(days=settings.retention_days)

    removed = {
        "callRecords": remove_calls_before(resources.redis, prefix, cutoff),
        "reportIndexEntries": remove_reports_before(resources.redis, prefix, cutoff),
        "taskStates": remove_task_state_before(resources.redis, prefix, state_cutoff),
    }
    total = sum(removed.values())
    log.info("retention clean-up done", event_key=meta["eventKey"], removed_total=total,
             **removed)
    return {"retentionDays": settings.retention_days, "cutoff": cutoff.isoformat(),
            "stateCutoff": state_cutoff.isoformat(timespec="seconds"), "removed": removed,
            "removedTotal": total}
