"""Recovery and poison: lost queues, crashing messages, retries, graceful stops."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import amqp
import kombu
import pytest

from app.bridge import Bridge
from app.testing import ServiceRun
from tests.conftest import RECORDINGS, require_services
from tests.test_pipeline import _valid_event_count

DAY = RECORDINGS / "platform-day.jsonl"


def ended(call_id: str) -> str:
    return json.dumps({"eventType": "call.ended", "callId": call_id,
                       "timestamp": "2026-12-02T10:00:00Z", "reason": "normal_clearing"})


def publish_ended(run: ServiceRun, call_id: str) -> None:
    result = run.cli("publish", "call.ended", ended(call_id))
    assert result.returncode == 0, result.stderr


def state_of(run: ServiceRun, key: str) -> str | None:
    record = run.state.lookup(key)
    return None if record is None else record["state"]


def parked_entries(run: ServiceRun) -> list[dict]:
    listing = run.cli("parked", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    return [json.loads(line) for line in listing.stdout.splitlines()]


@pytest.fixture
def run_with_faults(tmp_path: Path, request: pytest.FixtureRequest):
    require_services()
    run = ServiceRun(tmp_path, extra_env={"FAULT_INJECTION": request.param,
                                          "TASK_MAX_ATTEMPTS": "3"})
    run.tap_completions()
    try:
        yield run
    finally:
        run.close()


def test_a_deleted_inbox_queue_is_declared_again_and_consumed(service_run: ServiceRun) -> None:
    service_run.start()
    inbox = service_run.settings.queue_name("inbox")
    service_run.channel.queue_delete(inbox)
    assert service_run.consumers(inbox) == 0
    service_run.wait_for(lambda: service_run.consumers(inbox) == 1, 60, "inbox consumed again")
    publish_ended(service_run, "after-delete")
    service_run.wait_for(lambda: state_of(service_run, "call.ended:after-delete") == "succeeded",
                         60, "the event to succeed")


def squat_inbox(run: ServiceRun, squatter: kombu.Connection) -> Any:
    """Delete the inbox and take its name as another connection's exclusive queue,
    so that no declaration of the bridge's can succeed; returns that channel.

    aio-pika may declare the queue again between the delete and the squat: retry.
    """
    inbox = run.settings.queue_name("inbox")
    for _ in range(20):
        channel = squatter.channel()
        try:
            channel.queue_delete(inbox)
            channel.queue_declare(inbox, exclusive=True)
            return channel
        except amqp.exceptions.AMQPError:
            time.sleep(0.2)
    pytest.fail("could not take the inbox's name")


@pytest.fixture
def squatter(service_run: ServiceRun):
    """Another connection, to take the inbox's name away from the bridge."""
    connection = kombu.Connection(service_run.settings.rabbitmq_url, connect_timeout=10)
    try:
        yield connection
    finally:
        connection.release()


def test_an_inbox_held_away_for_a_while_is_consumed_again_once_free(
    service_run: ServiceRun, squatter: kombu.Connection,
) -> None:
    run, inbox = service_run, service_run.settings.queue_name("inbox")
    run.start()
    channel = squat_inbox(run, squatter)
    time.sleep(8)  # at least one watchdog round fails
    channel.queue_delete(inbox)
    run.wait_for(lambda: run.consumers(inbox) == 1, 45, "inbox consumed again")
    publish_ended(run, "after-squat")
    run.wait_for(lambda: state_of(run, "call.ended:after-squat") == "succeeded",
                 60, "the event to succeed")
    time.sleep(6)  # a second round of recovery must not add a second consumer
    assert run.consumers(inbox) == 1
    assert "inbox check or repair failed" in run.log_path.read_text()


def test_a_bridge_that_cannot_consume_its_inbox_again_exits_non_zero(
    service_run: ServiceRun, squatter: kombu.Connection,
) -> None:
    run, inbox = service_run, service_run.settings.queue_name("inbox")
    bridge = run.start_component("bridge")
    run.wait_for(lambda: run.consumers(inbox) == 1, 60, "the bridge consuming")
    squat_inbox(run, squatter)
    run.wait_for(lambda: bridge.poll() is not None, 150, "the bridge to give up")
    assert bridge.returncode == 1
    assert "inbox cannot be consumed again" in run.log_path.read_text()


@pytest.mark.parametrize("run_with_faults", ["bridge_exit_on=POISON-BRIDGE"], indirect=True)
def test_a_message_that_kills_the_bridge_every_time_ends_parked(
    run_with_faults: ServiceRun,
) -> None:
    run = run_with_faults
    run.start_component("worker")
    run.start_component("bridge")
    run.wait_consuming()
    publish_ended(run, "before")
    publish_ended(run, "POISON-BRIDGE")
    publish_ended(run, "after")

    crashes, deadline = 0, time.monotonic() + 180
    while state_of(run, "call.ended:after") != "succeeded" and time.monotonic() < deadline:
        if run.component("bridge").poll() is not None:  # a supervisor would restart it
            crashes += 1
            assert crashes <= 10, "the poison message loops"
            run.start_component("bridge")
        time.sleep(0.2)

    assert state_of(run, "call.ended:before") == "succeeded"
    assert state_of(run, "call.ended:after") == "succeeded"
    assert 5 <= crashes <= 7
    entries = parked_entries(run)
    assert [entry["reason"] for entry in entries] == ["max_deliveries"]
    assert entries[0]["routingKey"] == "call.ended"


@pytest.mark.parametrize("run_with_faults", ["worker_exit_on=POISON-WORKER"], indirect=True)
def test_a_task_that_kills_its_worker_every_time_ends_parked_and_failed(
    run_with_faults: ServiceRun,
) -> None:
    run = run_with_faults
    run.start()
    publish_ended(run, "POISON-WORKER")
    publish_ended(run, "after")
    run.wait_for(lambda: state_of(run, "call.ended:POISON-WORKER") == "failed", 180,
                 "the poison task to fail")
    run.wait_for(lambda: state_of(run, "call.ended:after") == "succeeded", 60, "the next event")
    assert [entry["reason"] for entry in parked_entries(run)] == ["max_deliveries"]
    failed = [c for c in run.read_completions() if c.routing_key.startswith("task.failed.")]
    assert len(failed) == 1
    assert failed[0].body["sourceEventKey"] == "call.ended:POISON-WORKER"
    assert "worker process died" in failed[0].body["error"]["message"]


@pytest.mark.parametrize("run_with_faults", ["worker_transient_on=FLAKY"], indirect=True)
def test_transient_errors_retry_then_fail_park_and_replay_once_fixed(
    run_with_faults: ServiceRun,
) -> None:
    run = run_with_faults
    run.start()
    publish_ended(run, "FLAKY-1")
    key = "call.ended:FLAKY-1"
    run.wait_for(lambda: state_of(run, key) == "failed", 120, "retries to run out")

    record = run.state.lookup(key)
    assert record is not None
    states = [entry["state"] for entry in record["history"]]
    assert states.count("retrying") == 2  # attempts 1 and 2; the 3rd is the last
    assert record["attempts"] == 3
    failed = [c.body for c in run.read_completions() if c.routing_key.startswith("task.failed")]
    assert len(failed) == 1 and failed[0]["attempts"] == 3
    assert "gave up after 3 attempts" in failed[0]["error"]["message"]
    assert [entry["reason"] for entry in parked_entries(run)] == ["max_attempts"]

    # The cause is fixed (the service restarts without the fault), and the
    # parked event is replayed: it is processed once.
    assert run.stop() == 0
    run.env["FAULT_INJECTION"] = ""
    run.start()
    replayed = run.cli("parked", "replay", "--reason", "max_attempts")
    assert "re-published 1" in replayed.stdout, replayed.stderr
    run.wait_for(lambda: state_of(run, key) == "succeeded", 60, "the replayed event")
    record = run.state.lookup(key)
    assert "lastError" not in record and "replayedAs" not in record  # same key, fixed
    assert record["replays"] == 1
    assert run.cli("parked", "replay").stdout.startswith("re-published 0")
    succeeded = [c for c in run.read_completions() if c.routing_key.startswith("task.succ")]
    assert len(succeeded) == 1


def test_sigterm_stops_the_bridge_cleanly_and_nothing_is_lost(service_run: ServiceRun) -> None:
    service_run.start_component("worker")
    bridge = service_run.start_component("bridge")
    service_run.wait_consuming()
    service_run.replay(DAY)
    started = time.monotonic()
    bridge.terminate()
    assert bridge.wait(timeout=40) == 0
    assert time.monotonic() - started < 25  # SHUTDOWN_GRACE_S is 20
    service_run.start_component("bridge")
    lines = [json.loads(text) for text in DAY.read_text().splitlines()]
    service_run.wait_until_done(events=_valid_event_count(lines), timeout_s=300)
    assert "bridge stopped" in service_run.log_text()


def test_a_repair_consumes_on_a_fresh_channel_and_retires_the_old_one(tmp_path: Path) -> None:
    require_services()
    run = ServiceRun(tmp_path)
    inbox = run.settings.queue_name("inbox")

    async def repair() -> None:
        bridge = Bridge(run.settings)
        await bridge.start()
        try:
            old = bridge._consume_channel
            assert old is not None
            await bridge._consume_on_fresh_channel()
            assert bridge._consume_channel is not old
            assert await bridge._inbox_consumed()
            assert run.consumers(inbox) == 1  # the old consumer was cancelled
            assert not old.is_closed  # retired: closed once no event is in hand
            await bridge._close_retired()
            assert old.is_closed
        finally:
            await bridge.stop()

    try:
        asyncio.run(repair())
    finally:
        run.close()
