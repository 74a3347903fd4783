"""The call-volume forecast: the fit, its error, its versions, and the nightly task."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
import redis

from app.testing import ServiceRun
from handlers.forecast import HALF_LIFE_DAYS, ModelStore, fit_model, forecast_error
from tests.conftest import require_services
from tests.test_report_delivery import CALLS, rollover, write_recording

WEDNESDAY = date(2026, 12, 2)


def hours(**counts: int) -> list[int]:
    """24 counts, zero but for the hours named `h<hour>`."""
    return [counts.get(f"h{hour}", 0) for hour in range(24)]


def test_a_weekday_is_the_weighted_mean_of_its_own_days_recent_ones_weighing_more() -> None:
    week_ago = WEDNESDAY - timedelta(days=7)
    model = fit_model({week_ago: hours(h10=10), WEDNESDAY: hours(h10=20)}, through=WEDNESDAY)
    w_old = 0.5 ** (7 / HALF_LIFE_DAYS)
    assert model[2][10] == round((w_old * 10 + 20) / (w_old + 1), 3)
    assert 15 < model[2][10] < 20  # nearer to the recent day


def test_a_weekday_without_history_borrows_the_mean_of_all_days() -> None:
    counts = {WEDNESDAY - timedelta(days=1): hours(h9=4), WEDNESDAY: hours(h9=2)}
    model = fit_model(counts, through=WEDNESDAY)
    assert model[1][9] == 4 and model[2][9] == 2  # Tuesday and Wednesday: their own
    assert 2 < model[3][9] < 4  # Thursday: both, the recent one weighing more


def test_days_after_the_fit_are_ignored_and_no_history_expects_nothing() -> None:
    model = fit_model({WEDNESDAY + timedelta(days=1): hours(h1=9)}, through=WEDNESDAY)
    assert model == {weekday: [0.0] * 24 for weekday in range(7)}


def test_the_error_compares_hour_by_hour_and_in_total() -> None:
    error = forecast_error([1.0] * 24, hours(h10=13))
    assert error == {"maePerHour": round((23 + 12) / 24, 3), "expectedCalls": 24.0,
                     "actualCalls": 13}


@pytest.fixture
def store() -> Iterator[ModelStore]:
    require_services()
    client = redis.Redis()
    prefix = f"ts-test-{datetime.now().strftime('%H%M%S%f')}:"
    try:
        yield ModelStore(client, prefix, ttl_s=600)
    finally:
        for key in client.scan_iter(f"{prefix}*", count=1000):
            client.delete(key)
        client.close()


def test_each_fit_is_a_new_version_and_grading_uses_one_fitted_before_the_day(
    store: ModelStore,
) -> None:
    assert store.save("t", {"expected": {}}, through=WEDNESDAY - timedelta(days=1)) == 1
    assert store.save("t", {"expected": {}}, through=WEDNESDAY) == 2
    assert store.save("t", {"expected": {}}, through=WEDNESDAY) == 3  # a replayed rollover
    earlier = store.fitted_before("t", WEDNESDAY)
    assert earlier is not None and earlier["version"] == 1
    assert store.fitted_before("t", WEDNESDAY - timedelta(days=1)) is None
    assert store.fitted_before("other", WEDNESDAY) is None


def _next_day(events: list[dict]) -> list[dict]:
    moved = []
    for event in events:
        when = datetime.fromisoformat(event["timestamp"]) + timedelta(days=1)
        moved.append({**event, "callId": f"next-{event['callId']}",
                      "timestamp": when.isoformat()})
    return moved


def test_each_rollover_refits_and_grades_the_model_of_the_day_before(tmp_path: Path) -> None:
    require_services()
    run = ServiceRun(tmp_path)
    try:
        run.tap_completions()
        run.start()
        # The next day, acme's two calls again.
        second_day = [event for event in _next_day(CALLS) if event["callId"] != "next-c-g1"]
        events = [*CALLS, rollover("tenant-acme"),
                  *second_day, {**rollover("tenant-acme"), "date": "2026-12-03"}]
        run.replay(write_recording(tmp_path / "days.jsonl", events))
        run.wait_until_done(events=len(events), timeout_s=120)

        refits = sorted((c.body["result"] for c in run.read_completions()
                         if c.routing_key == "task.succeeded.forecast.refresh_model"),
                        key=lambda result: result["date"])
        assert [result["date"] for result in refits] == ["2026-12-02", "2026-12-03"]
        [first], [second] = refits[0]["models"], refits[1]["models"]
        assert first["version"] == 1 and first["errorOnDay"] is None
        # One day of history: tomorrow (a Thursday) borrows that day's figures.
        assert first["expectedTomorrow"] == [float(n) for n in hours(h10=1, h11=1)]
        assert second["version"] == 2
        assert second["errorOnDay"] == {"modelVersion": 1, "maePerHour": 0.0,
                                        "expectedCalls": 2.0, "actualCalls": 2}
        page = (run.reports_dir / "tenant-acme" / "2026-12-03.html").read_text()
        assert 'id="forecast"' in page and "Tomorrow: expected calls per hour" in page
    finally:
        run.close()
