"""The daily call report (CONTRACT 5), produced on `day.rolled_over`.

The report counts the events that arrived before the rollover: the task
first waits (bounded by REPORT_WAIT_S) until every event with a lower arrival
seq has finished, then reads the call records and ignores any field written
by an event that arrived after the rollover.

Each report is written as `<tenant>/<date>.json`, `.csv` (one row per call)
and `.html` (the page of `handlers.report_page`). A rollover without a tenant
writes one report per tenant seen that day plus the all-tenants summary
(`_all/<date>.*`, tenant id `*`). Writing is idempotent: the same rollover,
processed again, writes the same files (only `generatedAt` changes).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from celery import shared_task

from app.event_task import EventTask, WorkerResources, worker_resources
from handlers.arrival import wait_for_earlier_events
from handlers.calls import call_key, calls_index_key, ring_and_talk_seconds
from handlers.report_index import ALL_TENANTS, record_reports
from handlers.report_page import render_report_page
from handlers.routes import DAILY_REPORT

log = structlog.get_logger(__name__)

CSV_COLUMNS = ["callId", "tenantId", "startedAt", "answeredAt", "endedAt", "localHour",
               "answered", "ringSeconds", "talkSeconds", "reason", "from", "to", "userId",
               "contactId", "recordingUri"]
# The folder of the all-tenants summary's files.
ALL_TENANTS_FOLDER = "_all"


@dataclass(frozen=True)
class CallView:
    """One call as the report sees it: only fields that arrived in time."""

    call_id: str
    tenant_id: str
    started: datetime | None
    answered: datetime | None
    ended: datetime | None
    reason: str
    from_: str
    to: str
    user_id: str = ""
    contact_id: str = ""
    recording_uri: str = ""

    @property
    def talk_seconds(self) -> float | None:
        return self._spans()[1]

    @property
    def ring_seconds(self) -> float | None:
        return self._spans()[0]

    @property
    def anchor(self) -> datetime:
        """The time that places the call in a day and an hour: start, else end."""
        anchor = self.started or self.ended
        if anchor is None:
            raise ValueError(f"call {self.call_id} has neither started nor ended")
        return anchor

    def _spans(self) -> tuple[float | None, float | None]:
        return ring_and_talk_seconds(self.started, self.answered, self.ended)


def call_view(record: dict[str, str], barrier_seq: int | None) -> CallView:
    """Build the report's view of a call record, seen as of `barrier_seq`."""

    def arrived(group: str) -> bool:
        seq = record.get(f"{group}Seq")
        return seq is not None and (barrier_seq is None or int(seq) < barrier_seq)

    def when(group: str) -> datetime | None:
        return datetime.fromisoformat(record[f"{group}At"]) if arrived(group) else None

    tenant = (record.get("dialplanTenant") if arrived("started") else None) or \
        (record.get("userTenant") if arrived("identified") else None) or "unknown"
    return CallView(
        call_id=record["callId"],
        tenant_id=tenant,
        started=when("started"),
        answered=when("answered"),
        ended=when("ended"),
        reason=record.get("reason", "unknown") if arrived("ended") else "unknown",
        from_=record.get("from", "") if arrived("started") else "",
        to=record.get("to", "") if arrived("started") else "",
        user_id=record.get("userId", "") if arrived("identified") else "",
        contact_id=record.get("contactId", "") if arrived("identified") else "",
        recording_uri=record.get("recordingUri", "") if arrived("recording") else "",
    )


def calls_of_day(
    calls: list[CallView], day: date, tz: ZoneInfo, tenant: str | None
) -> list[CallView]:
    """Ended calls that belong to `day` in `tz`: by start, else by end."""
    chosen = []
    for call in calls:
        if call.ended is None or (tenant is not None and call.tenant_id != tenant):
            continue
        if call.anchor.astimezone(tz).date() == day:
            chosen.append(call)
    return sorted(chosen, key=lambda call: (call.anchor, call.call_id))


def build_report(calls: list[CallView], *, tenant: str, day: date, timezone: str) -> dict[str, Any]:
    """The JSON document of one tenant's day; `calls` are already that day's."""
    tz = ZoneInfo(timezone)
    talk = [call.talk_seconds for call in calls if call.talk_seconds is not None]
    by_reason: dict[str, int] = {}
    by_hour = [0] * 24
    for call in calls:
        by_reason[call.reason] = by_reason.get(call.reason, 0) + 1
        by_hour[call.anchor.astimezone(tz).hour] += 1
    answered = sum(1 for call in calls if call.answered is not None)
    return {
        "tenantId": tenant,
        "date": day.isoformat(),
        "timezone": timezone,
        "calls": len(calls),
        "answered": answered,
        "unanswered": len(calls) - answered,
        "talkSeconds": round(sum(talk), 3),
        "averageTalkSeconds": round(sum(talk) / len(talk), 3) if talk else 0.0,
        "byReason": dict(sorted(by_reason.items())),
        "byHour": by_hour,
        "generatedAt": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }


def csv_rows(calls: list[CallView], tz: ZoneInfo) -> list[dict[str, Any]]:
    """One row per call; caller and callee are already masked in the record."""
    return [
        {
            "callId": call.call_id,
            "tenantId": call.tenant_id,
            "startedAt": call.started.isoformat() if call.started else "",
            "answeredAt": call.answered.isoformat() if call.answered else "",
            "endedAt": call.ended.isoformat() if call.ended else "",
            "localHour": call.anchor.astimezone(tz).hour,
            "answered": "yes" if call.answered else "no",
            "ringSeconds": "" if call.ring_seconds is None else round(call.ring_seconds, 3),
            "talkSeconds": "" if call.talk_seconds is None else round(call.talk_seconds, 3),
            "reason": call.reason,
            "from": call.from_,
            "to": call.to,
            "userId": call.user_id,
            "contactId": call.contact_id,
            "recordingUri": call.recording_uri,
        }
        for call in calls
    ]


def report_paths(reports_dir: Path, tenant: str, day: date) -> dict[str, Path]:
    """Where one report's files go: `<reports dir>/<tenant>/<date>.{json,csv,html}`."""
    # A tenant id is data from the wire: never a path (`..`, `/`, a dot-file).
    folder_name = ALL_TENANTS_FOLDER if tenant == ALL_TENANTS else \
        re.sub(r"^\.|[^A-Za-z0-9._-]", "_", tenant)
    stem = reports_dir / folder_name / day.isoformat()
    return {kind: stem.with_suffix(f".{kind}") for kind in ("json", "csv", "html")}


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


def write_report(
    reports_dir: Path, report: dict[str, Any], rows: list[dict[str, Any]], page: str
) -> dict[str, str]:
    """Write the JSON, CSV and HTML of one report; return their paths."""
    paths = report_paths(reports_dir, report["tenantId"], date.fromisoformat(report["date"]))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    _write_atomically(paths["json"], json.dumps(report, indent=2) + "\n")
    _write_atomically(paths["csv"], buffer.getvalue())
    _write_atomically(paths["html"], page)
    return {kind: str(path) for kind, path in paths.items()}


def load_calls(redis_client: Any, prefix: str, day: date, tz: ZoneInfo,
               barrier_seq: int | None, *, days_before: int = 1) -> list[CallView]:
    """Call records from `days_before` days before `day` to a day after it, as of the barrier.

    The day after is a margin: a call is indexed by its start (else its end)
    in absolute time, and is placed in a day only later, by its timezone.
    """
    start = datetime.combine(day, datetime.min.time(), tz) - timedelta(days=days_before)
    end = datetime.combine(day, datetime.min.time(), tz) + timedelta(days=2)
    call_ids = redis_client.zrangebyscore(calls_index_key(prefix), start.timestamp(),
                                          end.timestamp())
    pipe = redis_client.pipeline(transaction=False)
    for call_id in call_ids:
        pipe.hgetall(call_key(prefix, call_id.decode()))
    views = []
    for raw in pipe.execute():
        if raw:
            record = {k.decode(): v.decode() for k, v in raw.items()}
            views.append(call_view(record, barrier_seq))
    return views


@shared_task(base=EventTask, name=DAILY_REPORT, bind=True)
def daily_report(self: EventTask, event: dict[str, Any], meta: dict[str, Any],
                 forecast: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the day's report for the tenant, or for each tenant and all together.

    Each report is written as JSON, CSV and HTML. `forecast` is the result of
    the forecast task chained before this one: its expected calls for
    tomorrow go into the HTML. The result lists the reports; the e-mail task
    chained after this one sends what it lists.
    """
    resources = worker_resources()
    wait_for_earlier_events(resources, meta)
    return report_day(resources, event, meta, forecast)


def report_day(resources: WorkerResources, event: dict[str, Any], meta: dict[str, Any],
               forecast: dict[str, Any] | None) -> dict[str, Any]:
    """Write and index the reports of `event`'s day, as of the arrival seq in `meta`."""
    settings = resources.settings
    barrier_seq = int(meta["seq"])
    day = date.fromisoformat(event["date"])
    tz = ZoneInfo(event["timezone"])
    calls = load_calls(resources.redis, settings.redis_prefix, day, tz, barrier_seq)
    written = write_day_reports(settings.reports_dir, calls_of_day(calls, day, tz, None),
                                day=day, timezone=event["timezone"],
                                tenant=event.get("tenantId"),
                                expected_tomorrow=expected_tomorrow(forecast))
    record_reports(resources.redis, settings.redis_prefix, written, day=day,
                   timezone=event["timezone"], event_key=meta["eventKey"], seq=barrier_seq,
                   ttl_s=settings.records_ttl_s)
    return {"date": day.isoformat(), "timezone": event["timezone"], "reports": written}


def expected_tomorrow(forecast: dict[str, Any] | None) -> dict[str, list[float]]:
    """Tenant -> tomorrow's expected calls per hour, from the forecast task's result.

    The all-tenants summary expects the sum of what each tenant does.
    """
    expected = {model["tenantId"]: model["expectedTomorrow"]
                for model in (forecast or {}).get("models", [])}
    if expected:
        expected[ALL_TENANTS] = [round(sum(hours), 3) for hours in zip(*expected.values(),
                                                                        strict=True)]
    return expected


def write_day_reports(
    reports_dir: Path, calls: list[CallView], *, day: date, timezone: str, tenant: str | None,
    expected_tomorrow: dict[str, list[float]] | None = None,
) -> list[dict[str, Any]]:
    """Write the reports of a day: one tenant's, or each tenant's and the summary.

    `calls` are the day's calls of every tenant; `expected_tomorrow`, by
    tenant, what the forecast expects per hour tomorrow. Returns, per report
    written, its tenant, figures and file paths, in the order written.
    """
    tz = ZoneInfo(timezone)
    forecasts = expected_tomorrow or {}
    tenants = [tenant] if tenant else sorted({call.tenant_id for call in calls})
    reports, written = [], []
    for name in tenants:
        own_calls = [call for call in calls if call.tenant_id == name]
        report = build_report(own_calls, tenant=name, day=day, timezone=timezone)
        written.append(_write_one(reports_dir, report, own_calls, tz, forecasts.get(name)))
        reports.append(report)
    if tenant is None:
        summary = build_report(calls, tenant=ALL_TENANTS, day=day, timezone=timezone)
        summary["tenants"] = {report["tenantId"]: report["calls"] for report in reports}
        written.append(_write_one(reports_dir, summary, calls, tz, forecasts.get(ALL_TENANTS),
                                  tenant_reports=reports))
    return written


def _write_one(reports_dir: Path, report: dict[str, Any], calls: list[CallView], tz: ZoneInfo,
               expected: list[float] | None,
               tenant_reports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    page = render_report_page(report, calls, tz, tenant_reports=tenant_reports or (),
                              expected_by_hour=expected)
    paths = write_report(reports_dir, report, csv_rows(calls, tz), page)
    log.info("daily report written", tenant=report["tenantId"], date=report["date"],
             calls=report["calls"], path=paths["html"])
    return {"tenantId": report["tenantId"], "calls": report["calls"],
            "answered": report["answered"], **paths}
