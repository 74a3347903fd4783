"""The whole pipeline on a real day: recording in, tasks run, reports and completions out.

The expected report figures are computed here, from the recording alone, by
the rules of CONTRACT 5, with code that shares nothing with the service's.
The service is run by the package's own pytest plugin, as a platform
developer's test would run it.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from app.pytest_plugin import ServiceFactory
from app.testing import ServiceRun
from tests.conftest import RECORDINGS
from tests.offline_html import network_loads
from tests.smtp_server import LocalSmtpServer

DAY = RECORDINGS / "platform-day.jsonl"


def _field(body: dict[str, Any], camel: str) -> Any:
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
    return body.get(camel, body.get(snake))


def _when(text: str) -> datetime:
    # Drop fractional digits past microseconds, keep the offset.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def expected_reports(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """CONTRACT 5, applied to the recording: tenant -> report figures."""
    expected = {}
    for index, line in enumerate(lines):
        if line["routing_key"] != "day.rolled_over":
            continue
        rollover = line["body"]
        expected[rollover["tenantId"]] = _report_before(lines[:index], rollover)
    return expected


def _report_before(lines: list[dict[str, Any]], rollover: dict[str, Any]) -> dict[str, Any]:
    seen: set[tuple[str, str]] = set()
    calls: dict[str, dict[str, Any]] = {}
    for line in lines:
        body = line["body"]
        call_id = _field(body, "callId")
        if (line["routing_key"], call_id) in seen:
            continue  # a duplicate counts once: the first one to arrive
        seen.add((line["routing_key"], call_id))
        call = calls.setdefault(call_id, {})
        kind = line["routing_key"]
        if kind == "call.started":
            call["started"] = _when(body["timestamp"])
            dialplan = _field(body, "dialplanResolution") or {}
            call["dialplan_tenant"] = _field(dialplan, "tenantId")
        elif kind == "call.answered":
            call["answered"] = _when(body["timestamp"])
        elif kind == "user.identified.for_call":
            call["user_tenant"] = _field(body, "tenantId")
        elif kind == "call.ended":
            call["ended"] = _when(body["timestamp"])
            call["reason"] = body.get("reason") or "unknown"

    tz = ZoneInfo(rollover["timezone"])
    day = date.fromisoformat(rollover["date"])
    chosen = []
    for call in calls.values():
        tenant = call.get("dialplan_tenant") or call.get("user_tenant") or "unknown"
        if "ended" not in call or tenant != rollover["tenantId"]:
            continue
        anchor = call.get("started", call["ended"])
        if anchor.astimezone(tz).date() == day:
            chosen.append(call)

    talks = [max((c["ended"] - c["answered"]).total_seconds(), 0.0)
             for c in chosen if "answered" in c]
    by_hour = [0] * 24
    by_reason: dict[str, int] = {}
    for call in chosen:
        by_hour[call.get("started", call["ended"]).astimezone(tz).hour] += 1
        by_reason[call["reason"]] = by_reason.get(call["reason"], 0) + 1
    return {
        "tenantId": rollover["tenantId"], "date": rollover["date"],
        "timezone": rollover["timezone"], "calls": len(chosen), "answered": len(talks),
        "unanswered": len(chosen) - len(talks), "talkSeconds": round(sum(talks), 3),
        "averageTalkSeconds": round(sum(talks) / len(talks), 3) if talks else 0.0,
        "byReason": by_reason, "byHour": by_hour,
    }


def _valid_event_count(lines: list[dict[str, Any]]) -> int:
    return len({(line["routing_key"], _field(line["body"], "callId"),
                 line["body"].get("date"), line["body"].get("tenantId")) for line in lines})


@pytest.fixture(scope="module")
def smtp() -> Iterator[LocalSmtpServer]:
    """The conftest fixture's server, for the whole module (the day runs once)."""
    with LocalSmtpServer() as server:
        yield server


@pytest.fixture(scope="module")
def day_run(task_service_factory: ServiceFactory,
            smtp: LocalSmtpServer) -> Iterator[ServiceRun]:
    """One service that has processed the whole sample day, e-mailing its reports."""
    env = {"SMTP_URL": smtp.url, "REPORT_RECIPIENTS": "*=reports@platform.example"}
    with task_service_factory(env=env) as run:
        run.replay(DAY)
        run.settle(timeout_s=240)
        lines = [json.loads(text) for text in DAY.read_text().splitlines()]
        run.wait_until_done(events=_valid_event_count(lines), timeout_s=240)
        yield run


@pytest.fixture(scope="module")
def day_lines() -> list[dict[str, Any]]:
    return [json.loads(text) for text in DAY.read_text().splitlines()]


def test_daily_reports_equal_the_figures_computed_from_the_recording(
    day_run: ServiceRun, day_lines: list[dict[str, Any]]
) -> None:
    expected = expected_reports(day_lines)
    assert set(expected) == {"tenant-acme", "tenant-globex"}
    for tenant, figures in expected.items():
        path = day_run.reports_dir / tenant / "2026-12-02.json"
        report = json.loads(path.read_text())
        assert report.pop("generatedAt")
        assert report == figures, tenant
        assert figures["calls"] > 250  # the recording is a real day, not a toy


def test_csv_has_one_row_per_counted_call_with_masked_numbers(day_run: ServiceRun) -> None:
    for tenant in ("tenant-acme", "tenant-globex"):
        report = json.loads((day_run.reports_dir / tenant / "2026-12-02.json").read_text())
        with (day_run.reports_dir / tenant / "2026-12-02.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == report["calls"]
        assert len({row["callId"] for row in rows}) == len(rows)
        assert all(row["from"].startswith("sip:***") for row in rows if row["from"])
        text = (day_run.reports_dir / tenant / "2026-12-02.csv").read_text()
        assert "+90212" not in text and "+1212" not in text


def test_every_valid_event_key_ends_succeeded_and_duplicates_are_counted(
    day_run: ServiceRun, day_lines: list[dict[str, Any]]
) -> None:
    states = day_run.event_states()
    assert len(states) == _valid_event_count(day_lines)
    assert {record["state"] for record in states.values()} == {"succeeded"}
    duplicates = sum(record["duplicates"] for record in states.values())
    assert len(states) + duplicates == len(day_lines)


def test_each_task_run_published_a_succeeded_completion_event(day_run: ServiceRun) -> None:
    completions = day_run.read_completions()
    states = day_run.event_states()
    task_ids = {task_id for record in states.values() for task_id in record["taskIds"]}
    seen = {c.body["taskId"] for c in completions if c.routing_key.startswith("task.succeeded.")}
    assert task_ids <= seen
    report = next(c for c in completions
                  if c.routing_key == "task.succeeded.reports.daily_report")
    body = report.body
    assert body["eventType"] == "task.succeeded"
    assert body["sourceEventType"] == "day.rolled_over"
    assert body["sourceEventKey"].startswith("day.rolled_over:tenant-")
    assert body["attempts"] == 1 and body["durationMs"] >= 0
    assert body["result"]["reports"][0]["calls"] > 0
    assert body["traceId"] in {"27f05bb2a8fa8f7d6473e8f7ec589334",
                               "9e16f2aff857b86dcebb28a064930f95"}


def test_status_shows_the_history_of_an_event_key_and_of_a_task_id(day_run: ServiceRun) -> None:
    key = "call.ended:4b018c9f-a7ec-c7ee-126e-90a3f3a71b00"
    result = day_run.cli("status", key, "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["state"] == "succeeded"
    states = [entry["state"] for entry in record["history"]]
    # The worker may start the task before the bridge has recorded the
    # broker's confirm, so `queued` and `running` can come in either order.
    assert states[0] == "received"
    assert {"queued", "running", "task_succeeded", "succeeded"} <= set(states)

    by_task = day_run.cli("status", record["taskIds"][0])
    assert by_task.returncode == 0
    assert by_task.stdout.startswith(f"{key}: succeeded")


def test_status_of_an_unknown_key_exits_3(day_run: ServiceRun) -> None:
    result = day_run.cli("status", "call.ended:no-such-call")
    assert result.returncode == 3
    assert "no event key or task id" in result.stderr


def test_logs_never_show_a_full_phone_number(day_run: ServiceRun) -> None:
    text = day_run.log_text()
    assert "task succeeded" in text
    assert "+902123394654" not in text and "902123394654" not in text


def test_service_stops_cleanly_on_sigterm(task_service: ServiceRun) -> None:
    assert task_service.stop() == 0
    assert "service stopped" in task_service.log_text()


def test_html_reports_inline_their_chart_and_load_nothing_from_the_network(
    day_run: ServiceRun,
) -> None:
    for tenant in ("tenant-acme", "tenant-globex"):
        page = (day_run.reports_dir / tenant / "2026-12-02.html").read_text()
        report = json.loads((day_run.reports_dir / tenant / "2026-12-02.json").read_text())
        assert '<svg' in page and 'id="calls-per-hour"' in page
        assert f">{report['calls']}<" in page and tenant in page
        assert network_loads(page) == []


def test_no_report_file_contains_a_full_phone_number(
    day_run: ServiceRun, day_lines: list[dict[str, Any]]
) -> None:
    numbers = {re.sub(r"\D", "", line["body"][side]) for line in day_lines
               for side in ("from", "to") if isinstance(line["body"].get(side), str)}
    assert len(numbers) > 100
    files = [path for path in day_run.reports_dir.rglob("*") if path.is_file()]
    assert len(files) >= 6
    for path in files:
        text = path.read_text()
        assert not [number for number in numbers if number in text], path


def test_the_smtp_server_received_one_email_per_tenant_with_both_files(
    day_run: ServiceRun, smtp: LocalSmtpServer
) -> None:
    mails = sorted(smtp.received, key=lambda mail: mail.message["Subject"])
    assert [mail.message["Subject"] for mail in mails] == [
        "Daily call report: tenant-acme, 2026-12-02",
        "Daily call report: tenant-globex, 2026-12-02"]
    for mail, tenant in zip(mails, ("tenant-acme", "tenant-globex"), strict=True):
        assert mail.rcpt_tos == ["reports@platform.example"]
        files = mail.attachments
        assert sorted(files) == [f"{tenant}-2026-12-02.csv", f"{tenant}-2026-12-02.html"]
        on_disk = day_run.reports_dir / tenant / "2026-12-02"
        assert files[f"{tenant}-2026-12-02.csv"] == on_disk.with_suffix(".csv").read_bytes()
        assert files[f"{tenant}-2026-12-02.html"] == on_disk.with_suffix(".html").read_bytes()


def test_each_rollover_ran_its_clean_up_beside_its_report(day_run: ServiceRun) -> None:
    cleanups = [c.body for c in day_run.read_completions()
                if c.routing_key == "task.succeeded.maintenance.retention_cleanup"]
    assert sorted(body["sourceEventKey"] for body in cleanups) == [
        "day.rolled_over:tenant-acme:2026-12-02", "day.rolled_over:tenant-globex:2026-12-02"]
    # The sample day is one day: nothing in it is older than 30 days.
    assert all(body["result"]["removedTotal"] == 0 for body in cleanups)


def test_a_record_task_completion_carries_the_whole_call_summary(day_run: ServiceRun) -> None:
    call_id = "4b018c9f-a7ec-c7ee-126e-90a3f3a71b00"
    summaries = [c.body["result"] for c in day_run.read_completions()
                 if c.routing_key == "task.succeeded.calls.record_event"
                 and c.body["result"]["callId"] == call_id]
    assert len(summaries) == 5  # one per event type; duplicates ran no second task
    # Whichever record task merged last saw every event of the call.
    [whole] = [summary for summary in summaries if len(summary["eventsSeen"]) == 5]
    assert whole["tenantId"] == "tenant-acme" and whole["contactId"] == 11850
    assert whole["ringSeconds"] == 6.401 and whole["talkSeconds"] > 0
    assert whole["from"] == "sip:***4654@sip.tenant-acme.example"
    assert whole["recordingUri"].endswith(f"/{call_id}.wav")


def test_the_forecast_refit_put_tomorrows_expected_calls_into_each_report(
    day_run: ServiceRun,
) -> None:
    refits = [c.body["result"] for c in day_run.read_completions()
              if c.routing_key == "task.succeeded.forecast.refresh_model"]
    models = {model["tenantId"]: model for result in refits for model in result["models"]}
    assert sorted(models) == ["tenant-acme", "tenant-globex"]
    for tenant, model in models.items():
        report = json.loads((day_run.reports_dir / tenant / "2026-12-02.json").read_text())
        # A single day of history: tomorrow is expected to be like it.
        assert model["version"] == 1 and model["errorOnDay"] is None
        assert model["expectedTomorrow"] == [float(n) for n in report["byHour"]]
        page = (day_run.reports_dir / tenant / "2026-12-02.html").read_text()
        assert 'id="forecast"' in page and f"About {report['calls']} calls expected" in page
