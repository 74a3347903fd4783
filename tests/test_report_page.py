"""The daily report's HTML page and the files of a day's reports."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

from handlers.report_page import (
    format_duration,
    hourly_split,
    render_report_page,
    talk_distribution,
)
from handlers.reports import build_report, call_view, write_day_reports
from tests.offline_html import network_loads
from tests.test_reports import ANSWERED, ENDED, IDENTIFIED, STARTED, record

IST = ZoneInfo("Europe/Istanbul")
DAY = date(2026, 12, 2)


def _calls():
    answered = call_view(record((1, STARTED), (2, ANSWERED), (3, ENDED)), None)
    missed = call_view({**record((4, {**STARTED, "timestamp": "2026-12-02T14:20:00+03:00"}),
                                 (5, {**ENDED, "reason": "no_answer",
                                       "timestamp": "2026-12-02T14:21:00+03:00"})),
                        "callId": "c-2"}, None)
    other_tenant = call_view({**record((6, IDENTIFIED), (7, ENDED)), "callId": "c-3"}, None)
    return [answered, missed, other_tenant]


def test_hours_split_answered_from_unanswered_and_talk_time_falls_in_buckets() -> None:
    answered, unanswered = hourly_split(_calls(), IST)
    assert answered[10] == 1 and unanswered[10] == 1 and unanswered[14] == 1
    assert sum(answered + unanswered) == 3
    assert talk_distribution(_calls()) == [0, 0, 1, 0, 0, 0]  # 60 s: "1 – 2 min"


def test_page_inlines_its_charts_and_loads_nothing_from_the_network() -> None:
    calls = _calls()[:2]
    report = build_report(calls, tenant="tenant-acme", day=DAY, timezone="Europe/Istanbul")
    page = render_report_page(report, calls, IST)
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 3  # per hour, talk time, reasons
    assert 'id="calls-per-hour"' in page and "no_answer" in page
    assert network_loads(page) == []
    assert "+90" not in page and "4654" not in page  # no number, not even masked


def test_page_escapes_what_it_shows() -> None:
    report = build_report([], tenant="<b>x</b>", day=DAY, timezone="Europe/Istanbul")
    page = render_report_page(report, [], IST)
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert "No calls ended this day." in page


def test_rendering_the_same_figures_twice_gives_the_same_page() -> None:
    calls = _calls()
    report = build_report(calls, tenant="*", day=DAY, timezone="Europe/Istanbul")
    assert render_report_page(report, calls, IST) == render_report_page(report, calls, IST)


def test_a_tenantless_day_writes_each_tenant_and_the_summary(tmp_path: Path) -> None:
    written = write_day_reports(tmp_path, _calls(), day=DAY, timezone="Europe/Istanbul",
                                tenant=None)
    assert [entry["tenantId"] for entry in written] == ["tenant-acme", "tenant-from-user", "*"]
    summary = json.loads((tmp_path / "_all" / "2026-12-02.json").read_text())
    assert summary["calls"] == 3 and summary["tenants"] == {"tenant-acme": 2,
                                                            "tenant-from-user": 1}
    page = (tmp_path / "_all" / "2026-12-02.html").read_text()
    assert "All tenants" in page and "tenant-from-user" in page
    for entry in written:
        assert all(Path(entry[kind]).exists() for kind in ("json", "csv", "html"))


def test_writing_a_day_again_writes_the_same_files(tmp_path: Path) -> None:
    def snapshot() -> dict[str, str]:
        files = sorted(tmp_path.rglob("*.*"))
        return {str(path): path.read_text().replace(_generated(path), "") for path in files}

    write_day_reports(tmp_path, _calls(), day=DAY, timezone="Europe/Istanbul", tenant=None)
    first = snapshot()
    write_day_reports(tmp_path, _calls(), day=DAY, timezone="Europe/Istanbul", tenant=None)
    assert snapshot() == first and len(first) == 9


def _generated(path: Path) -> str:
    return json.loads(path.with_suffix(".json").read_text())["generatedAt"]


def test_durations_read_as_a_person_would_say_them() -> None:
    assert format_duration(42) == "42 s"
    assert format_duration(125.4) == "2 min 05 s"
    assert format_duration(3725) == "1 h 02 min 05 s"
