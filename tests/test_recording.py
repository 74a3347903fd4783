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
