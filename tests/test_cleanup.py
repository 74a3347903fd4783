"""Retention clean-up: what goes, what stays, and what the completion event says."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import redis

from app.state import StateKeys
from app.testing import ServiceRun
from handlers.calls import call_key, calls_index_key, remove_calls_before
from handlers.cleanup import data_cutoff, remove_task_state_before
from handlers.report_index import entry_key, index_key, record_reports, remove_reports_before
from tests.conftest import require_services
from tests.test_report_delivery import CALLS, rollover, write_recording

IST = "Europe/Istanbul"


def test_the_cutoff_keeps_exactly_retention_days_whole_days() -> None:
    cutoff = data_cutoff(date(2026, 12, 2), IST, retention_days=30)
    assert cutoff.isoformat() == "2026-11-03T00:00:00+03:00"


def test_calls_and_report_entries_before_the_cutoff_go_and_the_rest_stay(
    client_and_prefix: tuple[redis.Redis, str],
) -> None:
    client, prefix = client_and_prefix
    cutoff = datetime(2026, 11, 3, tzinfo=UTC)
    for call_id, when in (("old", cutoff - timedelta(seconds=1)), ("new", cutoff)):
        client.hset(call_key(prefix, call_id), "callId", call_id)
        client.zadd(calls_index_key(prefix), {call_id: when.timestamp()})
    for day in (date(2026, 11, 2), date(2026, 11, 3)):
        record_reports(client, prefix, [{"tenantId": "t", "calls": 1, "json": "j", "csv": "c",
                                         "html": "h"}],
                       day=day, timezone="UTC", event_key="k", seq=1, ttl_s=600)

    assert remove_calls_before(client, prefix, cutoff) == 1
    assert remove_reports_before(client, prefix, cutoff) == 1
    assert not client.exists(call_key(prefix, "old")) and client.exists(call_key(prefix, "new"))
    assert client.zrange(calls_index_key(prefix), 0, -1) == [b"new"]
    assert client.zrange(index_key(prefix), 0, -1) == [b"t|2026-11-03"]
    assert not client.exists(entry_key(prefix, "t|2026-11-02"))
    assert remove_calls_before(client, prefix, cutoff) == 0  # idempotent


def test_only_finished_task_state_older_than_the_cutoff_goes(
    client_and_prefix: tuple[redis.Redis, str],
) -> None:
    client, prefix = client_and_prefix
    keys = StateKeys(prefix)
    cutoff = datetime.now(UTC) - timedelta(days=30)
    old = (cutoff - timedelta(days=1)).isoformat().replace("+00:00", "Z")
    recent = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    for key, state, updated in (("old-done", "succeeded", old), ("old-running", "running", old),
                                ("recent-done", "failed", recent)):
        client.hset(keys.event(key), mapping={"state": state, "updatedAt": updated,
                                              "taskIds": json.dumps([f"{key}-task"])})
        client.rpush(keys.history(key), "{}")
        client.hset(keys.task(f"{key}-task"), "state", state)

    assert remove_task_state_before(client, prefix, cutoff) == 1
    assert not client.exists(keys.event("old-done"), keys.history("old-done"),
                             keys.task("old-done-task"))
    assert client.exists(keys.event("old-running")) and client.exists(keys.event("recent-done"))


def _shifted(events: list[dict], days: int) -> list[dict]:
    """The same calls, `days` earlier, under other call ids."""
    shifted = []
    for event in events:
        when = datetime.fromisoformat(event["timestamp"]) - timedelta(days=days)
        shifted.append({**event, "callId": f"old-{event['callId']}",
                        "timestamp": when.isoformat()})
    return shifted


def test_a_rollover_removes_what_is_older_than_retention_and_says_how_much(
    tmp_path: Path,
) -> None:
    require_services()
    run = ServiceRun(tmp_path, extra_env={"RETENTION_DAYS": "30",
                                          "STATE_TTL_S": str(90 * 24 * 3600)})
    try:
        run.tap_completions()
        run.start()
        old_calls = _shifted(CALLS, days=40)  # 3 calls on 2026-10-23
        old_rollover = {**rollover("tenant-acme"), "date": "2026-10-23"}
        run.replay(write_recording(tmp_path / "old.jsonl", [*old_calls, old_rollover]))
        run.wait_until_done(events=len(old_calls) + 1, timeout_s=120)
        stale = run.state.keys.event("stale-event")
        run.redis.hset(stale, mapping={"state": "succeeded", "updatedAt": "2026-10-01T00:00:00Z"})

        run.replay(write_recording(tmp_path / "day.jsonl", [*CALLS, rollover("tenant-acme")]))
        run.wait_until_done(events=len(old_calls) + len(CALLS) + 2, timeout_s=120)

        cleanups = [c.body for c in run.read_completions()
                    if c.routing_key == "task.succeeded.maintenance.retention_cleanup"]
        latest = next(body for body in cleanups
                      if body["sourceEventKey"] == "day.rolled_over:tenant-acme:2026-12-02")
        assert latest["result"]["removed"] == {"callRecords": 3, "reportIndexEntries": 1,
                                               "taskStates": 1}
        assert latest["result"]["removedTotal"] == 5
        assert not run.redis.exists(stale)
        assert (run.reports_dir / "tenant-acme" / "2026-10-23.html").exists()  # files stay
        report = json.loads((run.reports_dir / "tenant-acme" / "2026-12-02.json").read_text())
        assert report["calls"] == 2
    finally:
        run.close()
