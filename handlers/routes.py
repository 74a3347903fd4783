"""The route table: which tasks each platform event becomes, and their queues.

Read this file to know what the service does with an event. The bridge binds
exactly these routing keys, and nothing else, to its inbox queue.

An entry of a route is a task name, or a tuple of task names: a chain, whose
tasks run one after the other, each given the result of the one before, and
each only once the one before has succeeded. The entries of a route are
independent of each other. Every task, chained or not, has its own task id,
state and completion event.
"""

from __future__ import annotations

RECORD_CALL_EVENT = "calls.record_event"
DAILY_REPORT = "reports.daily_report"
EMAIL_REPORT = "reports.email_report"
RETENTION_CLEANUP = "maintenance.retention_cleanup"
REFRESH_FORECAST = "forecast.refresh_model"
# Not routed from an event: a record task schedules it for a late call event
# (handlers/late_events.py).
REGENERATE_REPORT = "reports.regenerate_day"

Route = tuple[str | tuple[str, ...], ...]

ROUTES: dict[str, Route] = {
    "call.started":             (RECORD_CALL_EVENT,),
    "call.answered":            (RECORD_CALL_EVENT,),
    "user.identified.for_call": (RECORD_CALL_EVENT,),
    "call.recording.available": (RECORD_CALL_EVENT,),
    "call.ended":               (RECORD_CALL_EVENT,),
    # The forecast first, so that the report shows tomorrow's expected calls.
    "day.rolled_over":          ((REFRESH_FORECAST, DAILY_REPORT, EMAIL_REPORT),
                                 RETENTION_CLEANUP),
}

# Task name -> queue role; the queue is named `<service name>.<role>`.
TASK_QUEUES: dict[str, str] = {
    RECORD_CALL_EVENT: "calls",
    DAILY_REPORT: "reports",
    EMAIL_REPORT: "reports",
    RETENTION_CLEANUP: "reports",
    REFRESH_FORECAST: "reports",
    REGENERATE_REPORT: "reports",
}


def chains_of(event_type: str) -> list[tuple[str, ...]]:
    """The route of `event_type` as chains; a lone task is a chain of one."""
    return [entry if isinstance(entry, tuple) else (entry,) for entry in ROUTES[event_type]]


def task_names_of(event_type: str) -> list[str]:
    """Every task an event of `event_type` becomes, chained ones included."""
    return [name for chain in chains_of(event_type) for name in chain]
