"""Call records: what each event contributes, and the summary a record task reports."""

from __future__ import annotations

import itertools

from handlers.calls import call_summary, record_fields
from tests.test_reports import ANSWERED, ENDED, STARTED

IDENTIFIED = {"eventType": "user.identified.for_call", "timestamp": "2026-12-02T10:00:12+03:00",
              "userId": "u-1", "contactId": 11850, "tenantId": "tenant-acme"}
RECORDING = {"eventType": "call.recording.available", "timestamp": "2026-12-02T10:01:20+03:00",
             "recordingUri": "s3://media/recordings/c-1.wav",
             "publicUrl": "https://media.example/recordings/c-1.wav"}
ALL_FIVE = [STARTED, ANSWERED, IDENTIFIED, RECORDING, ENDED]


def merged(*events: dict) -> dict[str, str]:
    record: dict[str, str] = {}
    for seq, event in enumerate(events, start=1):
        record |= record_fields({"callId": "c-1", **event}, seq)
    return record


def test_the_summary_of_a_whole_call() -> None:
    summary = call_summary(merged(*ALL_FIVE))
    assert summary == {
        "callId": "c-1", "tenantId": "tenant-acme", "answered": True, "ended": True,
        "eventsSeen": ["call.started", "call.answered", "user.identified.for_call",
                       "call.recording.available", "call.ended"],
        "startedAt": "2026-12-02T10:00:00+03:00", "answeredAt": "2026-12-02T10:00:10+03:00",
        "endedAt": "2026-12-02T10:01:10+03:00", "ringSeconds": 10.0, "talkSeconds": 60.0,
        "reason": "normal_clearing", "from": "sip:***4654@pbx", "to": "sip:***9852@pbx",
        "userId": "u-1", "contactId": 11850, "recordingUri": "s3://media/recordings/c-1.wav",
        "publicUrl": "https://media.example/recordings/c-1.wav",
    }


def test_any_order_and_any_duplicates_give_the_same_record() -> None:
    expected = merged(*ALL_FIVE)
    strip = {"startedSeq", "answeredSeq", "identifiedSeq", "recordingSeq", "endedSeq"}
    for order in itertools.permutations(ALL_FIVE):
        record = merged(*order, order[0], order[2])
        assert {k: v for k, v in record.items() if k not in strip} == \
            {k: v for k, v in expected.items() if k not in strip}


def test_an_unanswered_call_rang_until_it_ended_and_never_talked() -> None:
    summary = call_summary(merged(STARTED, {**ENDED, "reason": "no_answer"}))
    assert summary["ringSeconds"] == 70.0 and "talkSeconds" not in summary
    assert summary["answered"] is False and summary["reason"] == "no_answer"


def test_an_ended_call_whose_start_never_came_still_has_a_record() -> None:
    summary = call_summary(merged(ANSWERED, ENDED))
    assert summary["ended"] and summary["tenantId"] == "unknown"
    assert summary["talkSeconds"] == 60.0 and "ringSeconds" not in summary
    assert summary["eventsSeen"] == ["call.answered", "call.ended"]


def test_phone_numbers_in_recording_uris_are_masked() -> None:
    fields = record_fields({"callId": "c-1", **RECORDING,
                            "recordingUri": "s3://media/+902123394654/c-1.wav"}, 1)
    assert fields["recordingUri"] == "s3://media/***4654/c-1.wav"


def test_the_earliest_arrival_of_an_event_kind_wins_in_redis() -> None:
    """A producer's retry under another message id, arriving later, changes nothing."""
    import uuid

    import redis

    from handlers.calls import _MERGE, record_fields
    from tests.conftest import require_services

    require_services()
    client = redis.Redis()
    prefix = f"ts-test-{uuid.uuid4().hex[:10]}:"
    merge = client.register_script(_MERGE)
    first = {**ENDED, "callId": "c-1", "reason": "normal_clearing"}
    retry = {**ENDED, "callId": "c-1", "reason": "user_busy", "timestamp": "2026-12-02T10:09:00Z"}
    try:
        for label, order in (("a", [(retry, 8), (first, 3)]), ("b", [(first, 3), (retry, 8)])):
            key = f"{prefix}call:{label}"
            for event, seq in order:  # whichever a worker gets to first
                argv: list = ["c-1", 600]
                for name, value in record_fields(event, seq).items():
                    argv += [name, value]
                merge(keys=[key, f"{prefix}calls:by_time"], args=argv)
            record = {k.decode(): v.decode() for k, v in client.hgetall(key).items()}
            assert record["endedSeq"] == "3" and record["reason"] == "normal_clearing", label
    finally:
        for key in client.scan_iter(f"{prefix}*", count=1000):
            client.delete(key)
        client.close()
