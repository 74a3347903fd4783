"""The daily report's rules (CONTRACT 5), on hand-made call records."""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

from handlers.calls import call_summary, record_fields
from handlers.reports import build_report, call_view, calls_of_day, csv_rows

IST = ZoneInfo("Europe/Istanbul")
DAY = date(2026, 12, 2)


def record(*events: tuple[int, dict]) -> dict[str, str]:
    """Merge events (arrival seq, event) the way the record task does."""
    merged: dict[str, str] = {}
    for seq, event in events:
        merged |= record_fields({"callId": "c-1", **event}, seq)
    return merged


STARTED = {"eventType": "call.started", "timestamp": "2026-12-02T10:00:00+03:00",
           "from": "sip:+902123394654@pbx", "to": "sip:+902124919852@pbx",
           "dialplanResolution": {"tenantId": "tenant-acme"}}
ANSWERED = {"eventType": "call.answered", "timestamp": "2026-12-02T10:00:10+03:00"}
ENDED = {"eventType": "call.ended", "timestamp": "2026-12-02T10:01:10+03:00",
         "reason": "normal_clearing"}
IDENTIFIED = {"eventType": "user.identified.for_call", "timestamp": "2026-12-02T10:00:05Z",
              "tenantId": "tenant-from-user"}


def test_order_of_arrival_does_not_matter() -> None:
    forward = record((1, STARTED), (2, ANSWERED), (3, ENDED))
    backward = record((1, ENDED), (2, ANSWERED), (3, STARTED))
    assert call_summary(forward) == call_summary(backward)
    assert call_summary(forward)["talkSeconds"] == 60.0


def test_phone_numbers_are_masked_in_the_record() -> None:
    fields = record((1, STARTED))
    assert fields["from"] == "sip:***4654@pbx" and fields["to"] == "sip:***9852@pbx"


def test_tenant_comes_from_the_dialplan_else_the_identified_user_else_unknown() -> None:
    assert call_view(record((1, STARTED), (2, IDENTIFIED)), None).tenant_id == "tenant-acme"
    assert call_view(record((1, IDENTIFIED), (2, ENDED)), None).tenant_id == "tenant-from-user"
    assert call_view(record((1, ENDED)), None).tenant_id == "unknown"


def test_fields_that_arrived_after_the_barrier_are_ignored() -> None:
    view = call_view(record((1, STARTED), (2, ANSWERED), (9, ENDED)), barrier_seq=5)
    assert view.ended is None
    assert calls_of_day([view], DAY, IST, "tenant-acme") == []


def test_call_belongs_to_its_start_day_else_its_end_day() -> None:
    late_start = {**STARTED, "timestamp": "2026-12-02T23:59:00+03:00"}
    next_day_end = {**ENDED, "timestamp": "2026-12-03T00:10:00+03:00"}
    started_late = call_view(record((1, late_start), (2, next_day_end)), None)
    assert calls_of_day([started_late], DAY, IST, None) == [started_late]
    only_ended = call_view(record((1, next_day_end)), None)
    assert calls_of_day([only_ended], DAY, IST, None) == []
    assert calls_of_day([only_ended], date(2026, 12, 3), IST, None) == [only_ended]


def test_unfinished_calls_are_not_counted() -> None:
    view = call_view(record((1, STARTED), (2, ANSWERED)), None)
    assert calls_of_day([view], DAY, IST, None) == []


def test_report_figures() -> None:
    answered = call_view(record((1, STARTED), (2, ANSWERED), (3, ENDED)), None)
    early_answer = {**ANSWERED, "timestamp": "2026-12-02T10:05:00+03:00"}
    negative = call_view({**record((4, STARTED), (5, early_answer), (6, ENDED)),
                          "callId": "c-2"}, None)
    missed = call_view({**record((7, STARTED), (8, {**ENDED, "reason": "no_answer"})),
                        "callId": "c-3"}, None)
    calls = calls_of_day([answered, negative, missed], DAY, IST, "tenant-acme")
    report = build_report(calls, tenant="tenant-acme", day=DAY, timezone="Europe/Istanbul")
    assert report["calls"] == 3 and report["answered"] == 2 and report["unanswered"] == 1
    assert report["talkSeconds"] == 60.0  # talk time is never below 0
    assert report["averageTalkSeconds"] == 30.0
    assert report["byReason"] == {"no_answer": 1, "normal_clearing": 2}
    assert report["byHour"][10] == 3 and sum(report["byHour"]) == 3
    rows = csv_rows(calls, IST)
    assert [row["answered"] for row in rows].count("no") == 1
    assert all("+90" not in str(row) for row in rows)


def test_empty_day() -> None:
    report = build_report([], tenant="t", day=DAY, timezone="Europe/Istanbul")
    assert report["calls"] == 0 and report["averageTalkSeconds"] == 0.0
    assert report["byHour"] == [0] * 24


def test_a_tenant_id_never_leaves_the_reports_directory(tmp_path) -> None:
    from handlers.reports import report_paths

    for tenant in ("..", "../etc", ".hidden", "a/b", "/abs"):
        for path in report_paths(tmp_path, tenant, DAY).values():
            assert path.resolve().parent.parent == tmp_path.resolve(), tenant
