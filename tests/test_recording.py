"""Recording lines (CONTRACT 8): parsed to exact bytes, and written back."""

from __future__ import annotations

import json

import pytest

from app.recording import RecordingError, encode_message, parse_line, read_recording
from tests.conftest import RECORDINGS


def test_json_body_is_sent_compactly_serialized() -> None:
    line = '{"t": 1.5, "routing_key": "call.ended", "body": {"a": 1, "b": "ü"}}'
    message = parse_line(line, 1)
    assert message.body == '{"a":1,"b":"ü"}'.encode()
    assert message.t == 1.5


def test_body_text_and_body_b64_give_exact_bytes() -> None:
    assert parse_line('{"routing_key": "k", "body_text": "hi"}', 1).body == b"hi"
    assert parse_line('{"routing_key": "k", "body_b64": "//4A"}', 1).body == b"\xff\xfe\x00"
    assert parse_line('{"routing_key": "k", "body_b64": ""}', 1).body == b""


@pytest.mark.parametrize("line, problem", [
    ("nope", "not JSON"),
    ("[]", "not a JSON object"),
    ('{"body": {}}', "routing_key missing"),
    ('{"routing_key": "k"}', "exactly one of"),
    ('{"routing_key": "k", "body": {}, "body_text": ""}', "exactly one of"),
    ('{"routing_key": "k", "body_b64": "***"}', "not valid base64"),
    ('{"routing_key": "k", "t": -1, "body": {}}', "not negative"),
    ('{"routing_key": "k", "body": {}, "properties": {"colour": 1}}', "unknown properties"),
])
def test_malformed_lines_say_what_is_wrong(line: str, problem: str) -> None:
    with pytest.raises(RecordingError, match=problem):
        parse_line(line, 7)


@pytest.mark.parametrize("name", ["platform-day.jsonl", "bad-input.jsonl"])
def test_sample_recordings_round_trip_byte_for_byte(name: str) -> None:
    for message in read_recording(RECORDINGS / name, strict=True):
        line = encode_message(t=message.t, exchange=message.exchange or "",
                              routing_key=message.routing_key, properties=message.properties,
                              body=message.body)
        again = parse_line(line, message.line_number)
        assert again.body == message.body
        assert again.routing_key == message.routing_key
        assert again.properties == message.properties
        assert json.loads(line)["t"] == message.t


@pytest.mark.parametrize("body, kept_as", [
    (b'{"a":1}', "body"),
    (b'{"a": 1}', "body_text"),     # valid JSON, but sent with spaces
    (b"NaN", "body_text"),          # Python reads it; JSON does not have it
    (b"plain words", "body_text"),
    (b"", "body_b64"),              # no bytes at all, as the samples write it
    (b"\xff\xfe\x00", "body_b64"),
])
def test_encode_message_keeps_the_body_in_the_form_that_gives_back_its_bytes(
    body: bytes, kept_as: str
) -> None:
    line = encode_message(t=0.0, exchange="x", routing_key="k", properties={}, body=body)
    assert kept_as in json.loads(line)
    assert parse_line(line, 1).body == body
    assert ", " not in line  # compact, like the sample files


def test_header_values_that_json_cannot_hold_become_text_or_numbers() -> None:
    from datetime import datetime
    from decimal import Decimal

    from app.recorder import recorded_properties

    received = {"application_headers": {"raw": b"\xff", "text": b"ok", "d": Decimal("1.5"),
                                         "at": datetime(2026, 12, 2, 10, 0, 0),
                                         "list": [b"a", {"n": 1}]},
                "message_id": "m", "priority": None}
    assert recorded_properties(received) == {
        "headers": {"raw": "/w==", "text": "ok", "d": 1.5, "at": 1796205600,
                    "list": ["a", {"n": 1}]},
        "message_id": "m",
    }
