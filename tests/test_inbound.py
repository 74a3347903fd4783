"""The inbound gate: every way a message can be bad, and the event key."""

from __future__ import annotations

import json
import pickle

import pytest

from app.errors import ParkMessage
from app.inbound import decode_event, event_key

LIMIT = 1024 * 1024


def decode(body: bytes | dict | str, routing_key: str = "call.ended",
           content_type: str | None = "application/json", message_id: str | None = None):
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    elif isinstance(body, str):
        body = body.encode()
    return decode_event(body, routing_key=routing_key, content_type=content_type,
                        message_id=message_id, max_body_bytes=LIMIT)


def parked_reason(*args, **kwargs) -> str:
    with pytest.raises(ParkMessage) as caught:
        decode(*args, **kwargs)
    assert caught.value.detail
    return caught.value.reason


ENDED = {"eventType": "call.ended", "callId": "c-1", "timestamp": "2026-12-02T10:00:00Z"}


class TestBadInputIsParkedWithItsOwnReason:
    def test_not_json(self) -> None:
        assert parked_reason("call ended, see you") == "invalid_json"

    def test_empty_body(self) -> None:
        assert parked_reason(b"") == "invalid_json"

    def test_not_utf8(self) -> None:
        assert parked_reason(b"\xff\xfe\x00") == "not_utf8"

    def test_pickle_is_never_deserialized(self) -> None:
        body = pickle.dumps({"eventType": "call.ended"})
        assert parked_reason(body, content_type="application/x-python-serialize") == \
            "unsupported_content_type"

    def test_any_other_content_type(self) -> None:
        assert parked_reason(ENDED, content_type="text/plain") == "unsupported_content_type"

    def test_absent_content_type_is_read_as_json(self) -> None:
        assert decode(ENDED, content_type=None).key == "call.ended:c-1"

    def test_json_with_charset_parameter_is_json(self) -> None:
        assert decode(ENDED, content_type="application/json; charset=utf-8").event_type

    def test_json_that_is_not_an_object(self) -> None:
        assert parked_reason("[1, 2]") == "not_object"
        assert parked_reason('"text"') == "not_object"

    @pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
    def test_nan_and_infinity_literals(self, literal: str) -> None:
        body = json.dumps(ENDED)[:-1] + f', "x": {literal}}}'
        assert parked_reason(body) == "invalid_json"

    def test_a_number_no_float_can_hold(self) -> None:
        body = json.dumps(ENDED)[:-1] + ', "x": 1e999}'
        assert parked_reason(body) == "invalid_json"

    def test_absurd_nesting(self) -> None:
        body = json.dumps(ENDED)[:-1] + ', "x": ' + "[" * 5000 + "]" * 5000 + "}"
        assert parked_reason(body) == "too_deep"

    def test_moderate_nesting_past_the_limit(self) -> None:
        body = json.dumps(ENDED)[:-1] + ', "x": ' + "[" * 40 + "]" * 40 + "}"
        assert parked_reason(body) == "too_deep"

    def test_body_over_the_size_limit(self) -> None:
        big = {**ENDED, "padding": "x" * LIMIT}
        assert parked_reason(big) == "too_large"

    def test_event_type_differs_from_routing_key(self) -> None:
        assert parked_reason({**ENDED, "eventType": "call.started"}) == "type_mismatch"

    def test_missing_event_type(self) -> None:
        body = {k: v for k, v in ENDED.items() if k != "eventType"}
        assert parked_reason(body) == "schema"

    def test_unknown_event_type(self) -> None:
        body = {**ENDED, "eventType": "call.teleported"}
        assert parked_reason(body, routing_key="call.teleported") == "unknown_event_type"

    def test_schema_errors_name_the_field(self) -> None:
        with pytest.raises(ParkMessage) as caught:
            decode({**ENDED, "timestamp": "yesterday"})
        assert caught.value.reason == "schema"
        assert caught.value.detail.startswith("timestamp:")

    def test_timestamp_without_offset(self) -> None:
        assert parked_reason({**ENDED, "timestamp": "2026-12-02T10:00:00"}) == "schema"

    def test_timestamp_as_a_number(self) -> None:
        assert parked_reason({**ENDED, "timestamp": 1764669600}) == "schema"

    def test_contact_id_must_be_an_integer(self) -> None:
        body = {"eventType": "user.identified.for_call", "callId": "c", "contactId": "abc",
                "timestamp": "2026-12-02T10:00:00Z"}
        assert parked_reason(body, routing_key="user.identified.for_call") == "schema"

    def test_overlong_strings_are_refused(self) -> None:
        assert parked_reason({**ENDED, "callId": "x" * 300}) == "schema"

    @pytest.mark.parametrize("bad", [{"date": "2026-02-30"}, {"timezone": "Mars/Olympus"},
                                     {"date": 1764806400}, {"date": "2026-12-02T00:00:00"}])
    def test_rollover_with_impossible_date_or_unknown_timezone(self, bad: dict) -> None:
        body = {"eventType": "day.rolled_over", "timestamp": "2026-12-02T10:00:00Z",
                "date": "2026-12-02", "timezone": "Europe/Istanbul", **bad}
        assert parked_reason(body, routing_key="day.rolled_over") == "schema"


class TestValidEvents:
    def test_snake_case_and_camel_case_are_both_accepted(self) -> None:
        snake = decode({"event_type": "call.started", "call_id": "c-9",
                        "timestamp": "2026-12-02T08:11:58.112359+03:00",
                        "dialplan_resolution": {"tenant_id": "tenant-acme"}},
                       routing_key="call.started")
        assert snake.key == "call.started:c-9"
        assert snake.payload["callId"] == "c-9"
        assert snake.payload["dialplanResolution"]["tenantId"] == "tenant-acme"

    def test_nine_fractional_digits_are_truncated_and_the_offset_kept(self) -> None:
        event = decode({**ENDED, "timestamp": "2026-12-02T08:11:58.112359789+03:00"})
        assert event.payload["timestamp"] == "2026-12-02T08:11:58.112359+03:00"

    def test_unknown_fields_are_kept_and_values_keep_their_meaning(self) -> None:
        event = decode({**ENDED, "costCents": "12.10", "sessionId": "0b9f6c1e-uuid",
                        "extra": {"nested": [1, 2]}})
        assert event.payload["costCents"] == "12.10"
        assert event.payload["sessionId"] == "0b9f6c1e-uuid"
        assert event.payload["extra"] == {"nested": [1, 2]}

    def test_trace_id_is_exposed(self) -> None:
        assert decode({**ENDED, "trace_id": "t-1"}).trace_id == "t-1"


class TestEventKey:
    def test_message_id_comes_first(self) -> None:
        assert decode({**ENDED, "eventId": "e-1"}, message_id="m-1").key == "m-1"

    def test_then_event_id_in_the_body(self) -> None:
        assert decode({**ENDED, "eventId": "e-1"}).key == "e-1"

    def test_then_the_natural_key_of_a_call_event(self) -> None:
        assert decode(ENDED).key == "call.ended:c-1"

    def test_natural_key_of_a_rollover_with_and_without_tenant(self) -> None:
        body = {"eventType": "day.rolled_over", "timestamp": "2026-12-02T21:00:00Z",
                "date": "2026-12-02", "timezone": "Europe/Istanbul"}
        assert decode(body, routing_key="day.rolled_over").key == "day.rolled_over:*:2026-12-02"
        body["tenantId"] = "tenant-acme"
        assert decode(body, routing_key="day.rolled_over").key == \
            "day.rolled_over:tenant-acme:2026-12-02"

    def test_else_a_digest_of_the_body(self) -> None:
        key = event_key(message_id=None, document={}, model=None, body=b"{}")
        assert key == "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
