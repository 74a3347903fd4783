"""Recording files (CONTRACT 8): JSON Lines, one AMQP message a line.

    {"t": 12.5, "exchange": "...", "routing_key": "call.ended",
     "properties": {...}, "body": {...}}

The body is exactly one of `body` (a JSON value), `body_text` (a string sent
as UTF-8) or `body_b64` (base64 of the exact bytes).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.errors import TaskServiceError

# AMQP basic properties a recording may carry, as aio-pika names them.
PROPERTY_NAMES = frozenset({
    "content_type", "content_encoding", "headers", "delivery_mode", "priority",
    "correlation_id", "reply_to", "expiration", "message_id", "timestamp", "type",
    "user_id", "app_id",
})
BODY_FIELDS = ("body", "body_text", "body_b64")


class RecordingError(TaskServiceError):
    """A line of a recording is not a valid recorded message."""

    def __init__(self, line_number: int, problem: str) -> None:
        super().__init__(f"line {line_number}: {problem}")
        self.line_number = line_number


@dataclass(frozen=True)
class RecordedMessage:
    """One message of a recording, with its body as the exact bytes to send."""

    t: float
    routing_key: str
    body: bytes
    exchange: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    line_number: int = 0


def parse_line(text: str, line_number: int) -> RecordedMessage:
    """Parse one line; raise `RecordingError` saying what is wrong with it."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordingError(line_number, f"not JSON ({exc.msg})") from None
    if not isinstance(document, dict):
        raise RecordingError(line_number, "not a JSON object")
    routing_key = document.get("routing_key")
    if not isinstance(routing_key, str):
        raise RecordingError(line_number, "routing_key missing or not a string")
    t = document.get("t", 0.0)
    if not isinstance(t, (int, float)) or t < 0:
        raise RecordingError(line_number, "t must be a number of seconds, not negative")
    properties = document.get("properties") or {}
    if not isinstance(properties, dict):
        raise RecordingError(line_number, "properties must be an object")
    unknown = set(properties) - PROPERTY_NAMES
    if unknown:
        raise RecordingError(line_number, f"unknown properties: {', '.join(sorted(unknown))}")
    return RecordedMessage(t=float(t), routing_key=routing_key, body=_body_bytes(document,
                           line_number), exchange=document.get("exchange"),
                           properties=properties, line_number=line_number)


def _body_bytes(document: dict[str, Any], line_number: int) -> bytes:
    present = [name for name in BODY_FIELDS if name in document]
    if len(present) != 1:
        raise RecordingError(line_number, "needs exactly one of body, body_text, body_b64")
    if present[0] == "body":
        return _compact(document["body"]).encode()
    if present[0] == "body_text":
        if not isinstance(document["body_text"], str):
            raise RecordingError(line_number, "body_text must be a string")
        return document["body_text"].encode("utf-8")
    try:
        return base64.b64decode(document["body_b64"], validate=True)
    except (binascii.Error, TypeError):
        raise RecordingError(line_number, "body_b64 is not valid base64") from None


def read_recording(path: Path, *, strict: bool = False,
                   errors: list[RecordingError] | None = None) -> Iterator[RecordedMessage]:
    """Yield the messages of a recording; skip bad lines into `errors` unless strict."""
    with path.open(encoding="utf-8") as lines:
        for number, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            try:
                yield parse_line(text, number)
            except RecordingError as exc:
                if strict or errors is None:
                    raise
                errors.append(exc)


def encode_message(*, t: float, exchange: str, routing_key: str, properties: dict[str, Any],
                   body: bytes) -> str:
    """One recording line for a message; the body kept so that bytes survive.

    `body` only when the bytes are exactly the compact serialization of the
    JSON value (so that replaying sends the same bytes), else `body_text`
    when they are UTF-8 text, else (not UTF-8, or empty) `body_b64`. Lines
    are compact, like the samples.
    """
    line: dict[str, Any] = {"t": round(t, 3), "exchange": exchange, "routing_key": routing_key,
                            "properties": properties}
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if not text:  # not UTF-8, or no bytes at all (written so in the samples)
        line["body_b64"] = base64.b64encode(body).decode()
        return _compact(line)
    value, exact = _exact_json(text)
    if exact:
        line["body"] = value
    else:
        line["body_text"] = text
    return _compact(line)


def _exact_json(text: str) -> tuple[Any, bool]:
    try:
        value = json.loads(text, parse_constant=_not_json)
    except ValueError:
        return None, False
    return value, _compact(value) == text


def _not_json(name: str) -> Any:
    # Python reads NaN and Infinity, but they are not JSON: keep such a body as text.
    raise ValueError(f"{name} is not JSON")


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
