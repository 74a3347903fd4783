"""Task state transitions, run as Lua scripts in the real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio

from app.state import AsyncStateStore, StateStore
from tests.conftest import require_services


@pytest.fixture
def prefix() -> Iterator[str]:
    require_services()
    name = f"ts-test-{uuid.uuid4().hex[:10]}:"
    yield name
    client = redis.Redis()
    for key in client.scan_iter(f"{name}*", count=1000):
        client.delete(key)
    client.close()


def claim(prefix: str, key: str, redelivered: bool = False, tasks_total: int = 1,
          generation: int = 0):
    async def go():
        client = redis.asyncio.Redis()
        try:
            return await AsyncStateStore(client, prefix, 600).claim(
                key=key, event_type="call.ended", routing_key="call.ended", trace_id="t",
                redelivered=redelivered, tasks_total=tasks_total, generation=generation)
        finally:
            await client.aclose()
    return asyncio.run(go())


def test_first_claim_is_new_and_the_second_a_duplicate(prefix: str) -> None:
    first = claim(prefix, "k1")
    second = claim(prefix, "k1")
    assert first.is_new and first.seq == 1
    assert not second.is_new and second.existing_state == "received"
    record = StateStore(redis.Redis(), prefix, 600).lookup("k1")
    assert record is not None and record["duplicates"] == 1
    assert [entry["state"] for entry in record["history"]] == ["received", "duplicate"]


def test_a_redelivered_event_that_never_got_queued_is_processed_again(prefix: str) -> None:
    assert claim(prefix, "k1").is_new
    again = claim(prefix, "k1", redelivered=True)
    assert again.is_new and again.seq == 1  # it keeps its place in arrival order


def test_a_redelivery_after_queueing_is_not_a_duplicate(prefix: str) -> None:
    claim(prefix, "k1")
    asyncio.run(_queued(prefix, "k1"))
    again = claim(prefix, "k1", redelivered=True)
    assert again.outcome == "redelivered"
    record = StateStore(redis.Redis(), prefix, 600).lookup("k1")
    assert record is not None
    assert record["duplicates"] == 0 and record["redeliveries"] == 1


def test_a_replayed_parked_event_starts_a_new_generation_once(prefix: str) -> None:
    claim(prefix, "k1")
    store = StateStore(redis.Redis(), prefix, 600)
    store.task_finished(key="k1", task_id="t1", succeeded=False, attempt=5, error="gave up")
    replayed = claim(prefix, "k1", generation=1)
    assert replayed.is_new and replayed.generation == 1 and replayed.seq == 2
    assert claim(prefix, "k1", generation=1).outcome == "duplicate"


def test_a_task_found_running_was_in_a_worker_that_died(prefix: str) -> None:
    claim(prefix, "k1")
    store = StateStore(redis.Redis(), prefix, 600)
    assert store.task_started(key="k1", task_id="t1", task_name="a", attempt=1) == ("", 0)
    assert store.task_started(key="k1", task_id="t1", task_name="a", attempt=1) == ("running", 1)
    assert store.task_started(key="k1", task_id="t1", task_name="a", attempt=1) == ("running", 2)


async def _queued(prefix: str, key: str) -> None:
    client = redis.asyncio.Redis()
    try:
        await AsyncStateStore(client, prefix, 600).mark_queued(key, ["t1"], "2026-12-02T10:00Z")
    finally:
        await client.aclose()


def test_arrival_seq_counts_up_across_keys(prefix: str) -> None:
    assert [claim(prefix, f"k{i}").seq for i in range(3)] == [1, 2, 3]


def test_event_succeeds_when_all_its_tasks_have(prefix: str) -> None:
    claim(prefix, "k1", tasks_total=2)
    store = StateStore(redis.Redis(), prefix, 600)
    assert store.unfinished_before(99) == 1
    assert store.task_started(key="k1", task_id="t1", task_name="a", attempt=1) == ("", 0)
    assert store.task_finished(key="k1", task_id="t1", succeeded=True, attempt=1) == "running"
    store.task_started(key="k1", task_id="t2", task_name="b", attempt=1)
    assert store.task_finished(key="k1", task_id="t2", succeeded=True, attempt=1) == "succeeded"
    assert store.unfinished_before(99) == 0


def test_a_finished_task_is_not_counted_twice(prefix: str) -> None:
    claim(prefix, "k1", tasks_total=2)
    store = StateStore(redis.Redis(), prefix, 600)
    store.task_finished(key="k1", task_id="t1", succeeded=True, attempt=1,
                        result={"ok": True})
    store.task_finished(key="k1", task_id="t1", succeeded=True, attempt=1)
    record = store.lookup("k1")
    assert record is not None and record["tasksSucceeded"] == 1 and record["state"] != "succeeded"
    assert store.task_started(key="k1", task_id="t1", task_name="a", attempt=2) == (
        "succeeded", 0)
    assert store.task_result("t1") == {"ok": True}


def test_one_failed_task_fails_the_event(prefix: str) -> None:
    claim(prefix, "k1")
    store = StateStore(redis.Redis(), prefix, 600)
    store.task_retrying(key="k1", task_id="t1", attempt=1, error="Redis unavailable")
    assert store.task_finished(key="k1", task_id="t1", succeeded=False, attempt=5,
                               error="PermanentError: gave up") == "failed"
    record = store.lookup("t1")  # a task id finds its event
    assert record is not None and record["eventKey"] == "k1"
    assert record["lastError"] == "PermanentError: gave up"
    assert [e["state"] for e in record["history"]] == [
        "received", "retrying", "task_failed", "failed"]


def test_every_key_written_has_an_expiry(prefix: str) -> None:
    claim(prefix, "k1")
    store = StateStore(redis.Redis(), prefix, 600)
    store.task_started(key="k1", task_id="t1", task_name="a", attempt=1)
    store.task_finished(key="k1", task_id="t1", succeeded=True, attempt=1)
    client = redis.Redis()
    keys = list(client.scan_iter(f"{prefix}*", count=1000))
    assert len(keys) == 4  # event, history, task, seq; inflight is empty
    assert all(0 < client.ttl(key) <= 600 for key in keys)


def test_unknown_key_is_not_found(prefix: str) -> None:
    assert StateStore(redis.Redis(), prefix, 600).lookup("nope") is None
