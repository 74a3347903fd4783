"""The route table: which tasks each platform event becomes, and their queues.

Read this file to know what the service does with an event. The bridge binds
exactly these routing keys, and nothing else, to its inbox queue.
"""

from __future__ import annotations

RECORD_CALL_EVENT = "calls.record_event"
DAILY_REPORT = "reports.daily_report"

ROUTES: dict[str, tuple[str, ...]] = {
    "call.started":             (RECORD_CALL_EVENT,),
    "call.answered":            (RECORD_CALL_EVENT,),
    "user.identified.for_call": (RECORD_CALL_EVENT,),
    "call.recording.available": (RECORD_CALL_EVENT,),
    "call.ended":               (RECORD_CALL_EVENT,),
    "day.rolled_over":          (DAILY_REPORT,),
}

# Task name -> queue role; the queue is named `<service name>.<role>`.
TASK_QUEUES: dict[str, str] = {
    RECORD_CALL_EVENT: "calls",
    DAILY_REPORT: "reports",
}
