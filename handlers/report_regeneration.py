"""Regenerating a reported day after late call events (see handlers/late_events.py).

The task waits until the day's debounce is over, then takes the arrival
counter as its barrier (every event that has arrived so far counts), waits
for those events to finish, and writes the day's reports again, as the
rollover's report task would: the same files, index entries refreshed, and
tomorrow's expected calls from the model fitted through that day. The
regenerated reports are not e-mailed again.

Its event key is `report.regenerate:<tenant or *>|<date>:<n>`, with its own
state record and completion event (`sourceEventType: report.regenerate`).
"""

from __future__ import annotations

import time
from datetime import date, timedelta
from typing import Any, cast

import structlog
from celery import shared_task

from app.event_task import EventTask, NotReady, WorkerResources, worker_resources
from app.state import StateKeys
from handlers.arrival import wait_for_earlier_events
from handlers.forecast import ModelStore
from handlers.late_events import due_key, pending_key
from handlers.report_index import ALL_TENANTS, index_key
from handlers.reports import report_day
from handlers.routes import REGENERATE_REPORT

log = structlog.get_logger(__name__)


@shared_task(base=EventTask, name=REGENERATE_REPORT, bind=True)
def regenerate_day(self: EventTask, event: dict[str, Any],
                   meta: dict[str, Any]) -> dict[str, Any]:
    """Write a reported day's reports again, with the late events that came since."""
    resources = worker_resources()
    prefix = resources.settings.redis_prefix
    member = f"{event.get('tenantId', ALL_TENANTS)}|{event['date']}"
    if "seq" not in meta:  # not yet started: a deferral keeps the barrier set here
        _wait_for_quiet(resources, member)
        # From now on, a late event schedules another regeneration; an event
        # that came before is under the barrier taken next.
        resources.redis.delete(pending_key(prefix, member))
        meta["seq"] = int(resources.redis.get(StateKeys(prefix).seq) or 0) + 1
    wait_for_earlier_events(resources, meta)

    result = report_day(resources, event, meta, _stored_forecast(resources, event))
    log.info("reported day regenerated after late events", report=member,
             late_event_key=event.get("lateEventKey"))
    return {**result, "regenerated": True, "lateEventKey": event.get("lateEventKey")}


def _wait_for_quiet(resources: WorkerResources, member: str) -> None:
    """Defer until LATE_REPORT_DEBOUNCE_S have passed since the last late event."""
    due = resources.redis.get(due_key(resources.settings.redis_prefix, member))
    wait_s = float(due) - time.time() if due else 0.0
    if wait_s > 0:
        raise NotReady("late events still coming", countdown_s=wait_s)


def _stored_forecast(resources: WorkerResources, event: dict[str, Any]) -> dict[str, Any]:
    """Tomorrow's expected calls per tenant, as the forecast task's result gives them."""
    day = date.fromisoformat(event["date"])
    store = ModelStore(resources.redis, resources.settings.redis_prefix,
                       resources.settings.records_ttl_s)
    tenants = [event["tenantId"]] if event.get("tenantId") else _tenants_reported(resources, day)
    tomorrow = str((day + timedelta(days=1)).weekday())
    models = [{"tenantId": tenant, "expectedTomorrow": model["expected"][tomorrow]}
              for tenant in tenants if (model := store.fitted_through(tenant, day))]
    return {"models": models}


def _tenants_reported(resources: WorkerResources, day: date) -> list[str]:
    """The tenants the report index holds a report of `day` for."""
    raw = cast(list[bytes], resources.redis.zrange(index_key(resources.settings.redis_prefix),
                                                   0, -1))
    suffix = f"|{day.isoformat()}"
    members = [member.decode() for member in raw]
    return sorted(member[: -len(suffix)] for member in members
                  if member.endswith(suffix) and not member.startswith(f"{ALL_TENANTS}|"))
