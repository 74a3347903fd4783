"""Late call events: which reported days they touch, and the regeneration they bring."""

from __future__ import annotations

import json
import time
from datetime import date
from pathlib import Path

import redis

from app.testing import ServiceRun
from handlers.late_events import ReportedDay, late_for
from handlers.report_index import record_reports
from tests.conftest import require_services
from tests.test_report_delivery import CALLS, _call, rollover, write_recording

DAY = date(2026, 12, 2)
ENTRY = {"calls": 1, "json": "j", "csv": "c", "html": "h"}


def _index(client: redis.Redis, prefix: str, tenant: str, *, timezone: str, seq: int,
           event_key: str, day: date = DAY) -> None:
    record_reports(client, prefix, [{**ENTRY, "tenantId": tenant}], day=day, timezone=timezone,
                   event_key=event_key, seq=seq, ttl_s=600)


def test_an_event_after_the_rollover_is_late_and_one_before_it_is_not(
    client_and_prefix: tuple[redis.Redis, str],
) -> None:
    client, prefix = client_and_prefix
    _index(client, prefix, "tenant-acme", timezone="Europe/Istanbul", seq=10, event_key="r")
    record = {"startedAt": "2026-12-02T23:30:00+03:00", "dialplanTenant": "tenant-acme"}
    assert late_for(client, prefix, record, seq=11) == [
        ReportedDay("tenant-acme", "2026-12-02", "Europe/Istanbul")]
    assert late_for(client, prefix, record, seq=9) == []
    other_tenant = {**record, "dialplanTenant": "tenant-globex"}
    assert late_for(client, prefix, other_tenant, seq=11) == []


def test_the_day_is_the_reports_own_timezones(
    client_and_prefix: tuple[redis.Redis, str],
) -> None:
    client, prefix = client_and_prefix
    _index(client, prefix, "tenant-globex", timezone="America/New_York", seq=1, event_key="r")
    # 02:00 in Istanbul on 12-03 is still 12-02 in New York.
    record = {"startedAt": "2026-12-03T02:00:00+03:00", "userTenant": "tenant-globex"}
    assert [day.date for day in late_for(client, prefix, record, seq=5)] == ["2026-12-02"]


def test_a_tenantless_rollovers_day_is_regenerated_whole_not_tenant_by_tenant(
    client_and_prefix: tuple[redis.Redis, str],
) -> None:
    client, prefix = client_and_prefix
    for tenant in ("tenant-acme", "*"):
        _index(client, prefix, tenant, timezone="UTC", seq=3, event_key="day.rolled_over:*:d")
    record = {"endedAt": "2026-12-02T12:00:00Z", "dialplanTenant": "tenant-acme"}
    assert late_for(client, prefix, record, seq=4) == [ReportedDay("*", "2026-12-02", "UTC")]


def test_a_call_with_neither_start_nor_end_has_no_day(
    client_and_prefix: tuple[redis.Redis, str],
) -> None:
    client, prefix = client_and_prefix
    assert late_for(client, prefix, {"answeredAt": "2026-12-02T12:00:00Z"}, seq=4) == []


def test_late_events_regenerate_the_report_once_after_the_debounce(tmp_path: Path) -> None:
    require_services()
    run = ServiceRun(tmp_path, extra_env={"LATE_REPORT_DEBOUNCE_S": "3"})
    try:
        run.tap_completions()
        run.start()
        run.replay(write_recording(tmp_path / "day.jsonl", [*CALLS, rollover("tenant-acme")]))
        run.wait_until_done(events=len(CALLS) + 1, timeout_s=120)
        path = run.reports_dir / "tenant-acme" / "2026-12-02.json"
        assert json.loads(path.read_text())["calls"] == 2

        late = _call("c-a3", "tenant-acme", "18:00:00", "18:03:00", answered="18:00:20")
        run.replay(write_recording(tmp_path / "late.jsonl", late))
        run.wait_for(lambda: json.loads(path.read_text())["calls"] == 3, 90,
                     "the report regenerated with the late call")

        time.sleep(5)  # longer than the debounce: a second regeneration would show by now
        regenerations = [c.body for c in run.read_completions()
                         if c.routing_key == "task.succeeded.reports.regenerate_day"]
        assert len(regenerations) == 1
        assert regenerations[0]["sourceEventKey"] == \
            "report.regenerate:tenant-acme|2026-12-02:1"
        assert regenerations[0]["result"]["regenerated"] is True
        summaries = [c.body["result"] for c in run.read_completions()
                     if c.routing_key == "task.succeeded.calls.record_event"
                     and c.body["result"]["callId"] == "c-a3"]
        # Two pool processes may merge `call.answered` first: a record with neither start nor
        # end has no day yet, so that summary alone names no report.
        dated = [s for s in summaries if "startedAt" in s or "endedAt" in s]
        assert dated, summaries
        assert all(s.get("lateForReports") == ["tenant-acme|2026-12-02"] for s in dated)
        assert all("lateForReports" not in s for s in summaries if s not in dated)
        assert "18:00" in (run.reports_dir / "tenant-acme" / "2026-12-02.csv").read_text()
    finally:
        run.close()
