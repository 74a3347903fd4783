"""Bad input is parked with its reason, produces no task, and blocks nothing.

Each test gets a started service from the package's pytest plugin
(`task_service`), as a platform developer's test would.
"""

from __future__ import annotations

import json

from app.inbound import raw_key
from app.testing import ServiceRun
from tests.conftest import RECORDINGS

BAD = RECORDINGS / "bad-input.jsonl"

EXPECTED_REASONS = [
    "invalid_json",              # plain text
    "not_object",                # a JSON array
    "schema",                    # eventType missing
    "type_mismatch",             # call.started sent as call.ended
    "schema",                    # timestamp "yesterday"
    "schema",                    # callId missing
    "not_utf8",                  # bytes ff fe 00
    "unsupported_content_type",  # a pickle
    "schema",                    # contactId "abc"
    "invalid_json",              # empty body
    "schema",                    # 2026-02-30
    "schema",                    # Mars/Olympus
]


def test_bad_input_is_parked_with_a_reason_each_and_runs_no_task(
    task_service: ServiceRun,
) -> None:
    task_service.replay(BAD)
    parked = task_service.settings.queue_name("parked")
    task_service.wait_for(lambda: task_service.message_count(parked) == 12, 60, "12 parked")
    task_service.settle(timeout_s=60)
    assert task_service.completions() == []

    listing = task_service.cli("parked", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    entries = [json.loads(line) for line in listing.stdout.splitlines()]
    assert [entry["reason"] for entry in entries] == EXPECTED_REASONS
    assert all(entry["detail"] for entry in entries)
    assert all(entry["routingKey"] in ("call.ended", "user.identified.for_call",
                                       "day.rolled_over") for entry in entries)
    details = " | ".join(entry["detail"] for entry in entries)
    assert "timestamp" in details and "Mars/Olympus" in details and "contactId" in details

    # Listing leaves them parked; none became a task.
    assert task_service.message_count(parked) == 12
    assert task_service.arrived() == 0
    for queue in ("calls", "reports"):
        assert task_service.message_count(task_service.settings.queue_name(queue)) == 0

    # The service goes on: a valid event sent afterwards is processed.
    body = {"eventType": "call.ended", "callId": "after-bad-input",
            "timestamp": "2026-12-02T10:00:00.123456789+03:00", "reason": "normal_clearing"}
    sent = task_service.cli("publish", "call.ended", json.dumps(body))
    assert sent.returncode == 0, sent.stderr
    task_service.wait_until_done(events=1, timeout_s=60)
    record = task_service.state.lookup("call.ended:after-bad-input")
    assert record is not None and record["state"] == "succeeded"


def test_parked_message_keeps_its_body_byte_for_byte(task_service: ServiceRun) -> None:
    task_service.replay(BAD)
    parked = task_service.settings.queue_name("parked")
    task_service.wait_for(lambda: task_service.message_count(parked) == 12, 60, "12 parked")
    bodies = []
    while (message := task_service.channel.basic_get(parked, no_ack=True)) is not None:
        bodies.append((message.body, message.headers))
    assert bodies[6][0] == b"\xff\xfe\x00"
    assert bodies[0][0] == b"call ended, see you"
    headers = bodies[7][1]
    assert headers["x-parked-reason"] == "unsupported_content_type"
    assert headers["x-original-routing-key"] == "call.ended"
    assert headers["x-original-exchange"] == task_service.settings.events_exchange
    assert headers["x-parked-at"]


def test_a_parked_message_replayed_after_the_cause_is_fixed_is_processed_once(
    task_service: ServiceRun,
) -> None:
    # A call.ended whose eventType says call.started: parked as a type mismatch.
    body = {"eventType": "call.started", "callId": "c-1", "timestamp": "2026-12-02T10:00:00Z"}
    assert task_service.cli("publish", "call.ended", json.dumps(body)).returncode == 0
    parked = task_service.settings.queue_name("parked")
    task_service.wait_for(lambda: task_service.message_count(parked) == 1, 60, "1 parked")

    # Replayed as it is, it is parked again, with a replay count.
    replayed = task_service.cli("parked", "replay", "--reason", "type_mismatch")
    assert "re-published 1" in replayed.stdout
    task_service.wait_for(lambda: task_service.message_count(parked) == 1, 60, "parked again")
    entry = json.loads(task_service.cli("parked", "list", "--json").stdout)
    assert entry["replays"] == 1 and entry["reason"] == "type_mismatch"
    assert task_service.arrived() == 0
    # Its state says parked, re-published, parked again: not a duplicate.
    record = task_service.state.lookup(entry["eventKey"])
    assert record["state"] == "parked" and record["duplicates"] == 0
    assert "replayedAs" not in record
    assert [(step["state"], step.get("replay")) for step in record["history"]] == [
        ("parked", None), ("replayed", 1), ("parked", 1)]


def test_a_message_too_large_then_allowed_is_processed_once_and_its_parked_key_says_so(
    task_service: ServiceRun,
) -> None:
    run = task_service
    run.stop()
    run.env["MAX_BODY_BYTES"] = "1024"
    run.start()
    body = json.dumps({"eventType": "call.ended", "callId": "c-big", "reason": "normal_clearing",
                       "timestamp": "2026-12-02T10:00:00Z", "note": "x" * 2000}).encode()
    assert run.cli("publish", "call.ended", body.decode()).returncode == 0
    parked = run.settings.queue_name("parked")
    run.wait_for(lambda: run.message_count(parked) == 1, 60, "1 parked")
    listed = json.loads(run.cli("parked", "list", "--json").stdout)
    parked_key = listed["eventKey"]
    assert parked_key == raw_key(body)
    assert listed["messageId"] is None  # published without one
    assert run.state.lookup(parked_key)["state"] == "parked"

    # The limit is raised (the fix), and the parked message re-published.
    run.stop()
    del run.env["MAX_BODY_BYTES"]
    run.start()
    assert "re-published 1" in run.cli("parked", "replay", "--reason", "too_large").stdout
    run.wait_for(lambda: (run.state.lookup("call.ended:c-big") or {}).get("state")
                 == "succeeded", 60, "the re-published event to succeed")
    assert run.message_count(parked) == 0
    assert run.arrived() == 1

    record = run.state.lookup(parked_key)
    assert record["state"] == "parked"  # what happened to those bytes then
    assert record["replays"] == 1
    assert record["replayedAs"] == "call.ended:c-big"  # said by the bridge that took it
    assert [(entry["state"], entry.get("replay"), entry.get("as"))
            for entry in record["history"]] == [
        ("parked", None, None), ("replayed", 1, None), ("replayedAs", None, "call.ended:c-big")]
    shown = run.cli("status", parked_key).stdout
    assert "replayedAs: call.ended:c-big" in shown and "  replayed  (" in shown
