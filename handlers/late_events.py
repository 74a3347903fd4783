"""Late call events: a call event for a day whose report is already written.

The record task asks `schedule_if_late` after each merge. The call's day is
the one of its start (else its end), in the timezone of each report of that
time found in the report index; the event is late for a report when it
arrived after that report's rollover (a higher arrival seq). Then the day is
regenerated (`handlers.report_regeneration`), after a debounce: the first late
event of a burst schedules the regeneration LATE_REPORT_DEBOUNCE_S ahead, and
every later one pushes that moment back, so a burst makes one regeneration.

A day reported by a tenant-less rollover is regenerated as a whole (each
tenant and the summary); a day reported by the tenant's own rollover, for that
tenant alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import redis
import structlog
from celery import Celery

from app.task_messages import task_id_for
from handlers.report_index import ALL_TENANTS, entry_key
from handlers.routes import REGENERATE_REPORT

log = structlog.get_logger(__name__)

REGENERATION_EVENT_TYPE = "report.regenerate"


@dataclass(frozen=True)
class ReportedDay:
    """A day with a report, and the rollover that wrote it."""

    tenant: str  # `*`: a tenant-less rollover's reports, summary included
    date: str
    timezone: str

    @property
    def member(self) -> str:
        return f"{self.tenant}|{self.date}"


def late_for(client: redis.Redis, prefix: str, record: dict[str, str],
             seq: int) -> list[ReportedDay]:
    """The reported days that the event of arrival `seq` came too late for."""
    anchor_at = record.get("startedAt") or record.get("endedAt")
    if anchor_at is None:
        return []  # neither start nor end known yet: the call has no day
    anchor = datetime.fromisoformat(anchor_at)
    tenant = record.get("dialplanTenant") or record.get("userTenant") or "unknown"
    utc_day = anchor.astimezone(ZoneInfo("UTC")).date()
    candidates = [ReportedDay(name, (utc_day + timedelta(days=shift)).isoformat(), "")
                  for shift in (-1, 0, 1) for name in (ALL_TENANTS, tenant)]
    pipe = client.pipeline(transaction=False)
    for candidate in candidates:
        pipe.hmget(entry_key(prefix, candidate.member), "timezone", "seq", "eventKey")
    late: dict[str, tuple[ReportedDay, str]] = {}
    for candidate, (tz, report_seq, event_key) in zip(candidates, pipe.execute(), strict=True):
        if tz is None or int(report_seq) >= seq:
            continue
        if anchor.astimezone(ZoneInfo(tz.decode())).date().isoformat() != candidate.date:
            continue
        late[candidate.member] = (ReportedDay(candidate.tenant, candidate.date, tz.decode()),
                                  event_key.decode())
    # A tenant's report written by a tenant-less rollover is regenerated with it.
    whole_days = {(day.date, key) for day, key in late.values() if day.tenant == ALL_TENANTS}
    return [day for day, key in late.values()
            if day.tenant == ALL_TENANTS or (day.date, key) not in whole_days]


def schedule_if_late(app: Celery, client: redis.Redis, prefix: str, record: dict[str, str],
                     meta: dict[str, Any], *, service: str, debounce_s: float,
                     ttl_s: int) -> list[str]:
    """Schedule (or put off) the regeneration of each day this event is late for.

    Returns the days, as `tenant|date`, for the record task's summary.
    """
    days = late_for(client, prefix, record, int(meta["seq"]))
    for day in days:
        _debounce(app, client, prefix, day, meta, service=service, debounce_s=debounce_s,
                  ttl_s=ttl_s)
    return [day.member for day in days]


def due_key(prefix: str, member: str) -> str:
    """When the day's regeneration may run: epoch seconds, pushed back by each late event."""
    return f"{prefix}late:{member}:due"


def pending_key(prefix: str, member: str) -> str:
    """Present while a regeneration of the day is scheduled and has not started."""
    return f"{prefix}late:{member}:pending"


def _debounce(app: Celery, client: redis.Redis, prefix: str, day: ReportedDay,
              meta: dict[str, Any], *, service: str, debounce_s: float, ttl_s: int) -> None:
    client.set(due_key(prefix, day.member), repr(time.time() + debounce_s), ex=ttl_s)
    if not client.set(pending_key(prefix, day.member), meta["eventKey"], nx=True, ex=ttl_s):
        return  # one is scheduled already; it will see the later due time
    run = int(client.incr(f"{prefix}late:{day.member}:runs"))
    client.expire(f"{prefix}late:{day.member}:runs", ttl_s)
    key = f"{REGENERATION_EVENT_TYPE}:{day.member}:{run}"
    event = {"eventType": REGENERATION_EVENT_TYPE, "date": day.date, "timezone": day.timezone,
             **({} if day.tenant == ALL_TENANTS else {"tenantId": day.tenant}),
             "lateEventKey": meta["eventKey"]}
    regeneration_meta = {"eventKey": key, "eventType": REGENERATION_EVENT_TYPE,
                         "routingKey": "", "traceId": meta.get("traceId")}
    try:
        app.send_task(REGENERATE_REPORT, kwargs={"event": event, "meta": regeneration_meta},
                      task_id=task_id_for(service, key, REGENERATE_REPORT), countdown=debounce_s,
                      kwargsrepr=f"{{'eventKey': {key!r}}}")
    except Exception:
        # Not scheduled: let the retry of this record task schedule it.
        client.delete(pending_key(prefix, day.member))
        raise
    log.info("late call event: report to be regenerated", event_key=meta["eventKey"],
             report=day.member, regeneration_key=key, debounce_s=debounce_s)
