"""Snapshots: the sample day's outcomes against the file kept next to it, and the diff."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import snapshots
from app.pytest_plugin import ServiceFactory, Snapshot
from tests.conftest import RECORDINGS

DAY = RECORDINGS / "platform-day.jsonl"


def test_outcomes_of_the_sample_day_match_its_snapshot(
    task_service_factory: ServiceFactory, snapshot: Snapshot, tmp_path: Path
) -> None:
    # One worker process: a call record task's result sums up the call as
    # merged so far, so it depends on the order in which the tasks run.
    with task_service_factory(tmp_path, concurrency=1) as run:
        run.replay(DAY)
        run.settle(timeout_s=300)
        assert run.completions("task.failed.#") == []
        snapshot.assert_match(run, DAY)


def test_snapshot_file_lives_next_to_its_recording() -> None:
    assert snapshots.snapshot_path(DAY) == RECORDINGS / "platform-day.snapshot.jsonl"
    assert snapshots.snapshot_path(DAY).exists()


def completion(key: str, task: str = "calls.record_event", **fields: object) -> dict[str, object]:
    return {"eventType": "task.succeeded", "eventId": "e-1", "taskId": "t-1",
            "timestamp": "2026-12-02T10:00:00Z", "durationMs": 3.2, "attempts": 1,
            "sourceEventKey": key, "taskName": task, "result": {"path": "/tmp/x/reports/a"},
            **fields}


def test_normalise_sets_aside_ids_times_and_paths_and_sorts() -> None:
    outcomes = snapshots.normalise([completion("b"), completion("a")],
                                   replacements={"/tmp/x/reports": "<reports>"})
    assert [outcome["sourceEventKey"] for outcome in outcomes] == ["a", "b"]
    assert outcomes[0] == {"eventType": "task.succeeded", "eventId": "<eventId>",
                           "taskId": "<taskId>", "timestamp": "<timestamp>",
                           "durationMs": "<durationMs>", "attempts": 1, "sourceEventKey": "a",
                           "taskName": "calls.record_event", "result": {"path": "<reports>/a"}}
    assert snapshots.from_text(snapshots.to_text(outcomes)) == outcomes


def test_differences_name_the_outcome_and_the_field_that_changed() -> None:
    expected = snapshots.normalise([completion("a", result={"calls": 3}), completion("b")])
    actual = snapshots.normalise([completion("a", result={"calls": 4}), completion("c"),
                                  completion("b", eventType="task.failed")])
    assert snapshots.differences(expected, actual) == [
        "changed:    a calls.record_event: result.calls: 3 -> 4",
        'changed:    b calls.record_event: eventType: "task.succeeded" -> "task.failed"',
        "unexpected: c calls.record_event: " + snapshots.to_text(actual[2:]).strip(),
    ]
    assert snapshots.differences(actual[:2], actual[:1]) == ["missing:    b calls.record_event"]


def test_differences_inside_lists_name_the_index() -> None:
    report = {"reports": [{"tenantId": "acme", "calls": 300}]}
    fewer = {"reports": [{"tenantId": "acme", "calls": 299}]}
    expected = snapshots.normalise([completion("d", "reports.daily_report", result=report)])
    actual = snapshots.normalise([completion("d", "reports.daily_report", result=fewer)])
    assert snapshots.differences(expected, actual) == [
        "changed:    d reports.daily_report: result.reports.0.calls: 300 -> 299"]
    assert snapshots.differences(expected, expected) == []


def test_report_shows_a_bounded_number_of_differences() -> None:
    found = [f"changed: {n}" for n in range(100)]
    text = snapshots.report(found, expected_count=5, actual_count=6)
    assert text.startswith("100 differences (5 outcomes expected, 6 seen):")
    assert "... and 60 more" in text and len(text.splitlines()) == 42


class OutcomesOnly:
    """Stands in for a ServiceRun where only its outcomes are read."""

    def __init__(self, outcomes: list[dict[str, object]]) -> None:
        self._outcomes = outcomes

    def outcomes(self) -> list[dict[str, object]]:
        return self._outcomes


def test_snapshot_update_writes_the_file_and_a_later_check_compares_with_it(
    tmp_path: Path,
) -> None:
    recording = tmp_path / "day.jsonl"
    outcomes = snapshots.normalise([completion("a")])
    written: list[Path] = []
    Snapshot(update=True, written=written).assert_match(OutcomesOnly(outcomes), recording)
    assert written == [tmp_path / "day.snapshot.jsonl"]
    Snapshot(update=False, written=[]).assert_match(OutcomesOnly(outcomes), recording)

    changed = snapshots.normalise([completion("a", attempts=2)])
    with pytest.raises(pytest.fail.Exception, match=r"attempts: 1 -> 2(.|\n)*--snapshot-update"):
        Snapshot(update=False, written=[]).assert_match(OutcomesOnly(changed), recording)


def test_a_missing_snapshot_fails_with_how_to_write_it(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match="run pytest --snapshot-update"):
        Snapshot(update=False, written=[]).assert_match(OutcomesOnly([]), tmp_path / "x.jsonl")
