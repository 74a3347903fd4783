"""The inbound gate: raw AMQP message in, a validated event and its key out.

Everything here is pure (no I/O) so that every way a message can be bad is
tested without a broker. A message that cannot be processed raises
`ParkMessage` with a reason kind and a detail for the parked headers.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from app.errors import ParkMessage
from schemas.events import EVENT_MODELS, PlatformEvent

JSON_CONTENT_TYPES = frozenset({"application/json", "text/json"})
MAX_NESTING_DEPTH = 32


@dataclass(frozen=True)
class InboundEvent:
    """A validated platform event, with the key that identifies it."""

    key: str
    event_type: str
    routing_key: str
    model: PlatformEvent
    payload: dict[str, Any]

    @property
    def trace_id(self) -> str | None:
        return self.model.trace_id


def decode_event(
    body: bytes,
    *,
    routing_key: str,
    content_type: str | None,
    message_id: str | None,
    max_body_bytes: int,
) -> InboundEvent:
    """Validate one message; raise `ParkMessage` saying why it cannot be used."""
    document = _decode_json(body, content_type=content_type, max_body_bytes=max_body_bytes)

    event_type = document.get("eventType", document.get("event_type"))
    if event_type is None:
        raise ParkMessage("schema", "eventType: field required")
    if event_type != routing_key:
        raise ParkMessage(
            "type_mismatch", f"eventType {event_type!r} differs from routing key {routing_key!r}"
        )
    model_class = EVENT_MODELS.get(routing_key)
    if model_class is None:
        raise ParkMessage("unknown_event_type", f"no schema for event type {routing_key!r}")

    try:
        model = model_class.model_validate(document)
    except ValidationError as exc:
        raise ParkMessage("schema", format_validation_errors(exc)) from None

    key = event_key(message_id=message_id, document=document, model=model, body=body)
    return InboundEvent(
        key=key,
        event_type=event_type,
        routing_key=routing_key,
        model=model,
        payload=model.to_wire(),
    )


def _decode_json(body: bytes, *, content_type: str | None, max_body_bytes: int) -> dict[str, Any]:
    if len(body) > max_body_bytes:
        raise ParkMessage("too_large", f"body is {len(body)} bytes, limit {max_body_bytes}")
    media_type = (content_type or "application/json").split(";")[0].strip().lower()
    if media_type not in JSON_CONTENT_TYPES:
        # Never deserialized: a pickle here would be code, not data.
        raise ParkMessage("unsupported_content_type", f"content type {media_type!r} is not JSON")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParkMessage(
            "not_utf8", f"body is not UTF-8: {exc.reason} at byte {exc.start}"
        ) from None
    if not text.strip():
        raise ParkMessage("invalid_json", "body is empty")
    try:
        document = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise ParkMessage(
            "invalid_json", f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise ParkMessage("too_deep", "JSON nesting is too deep to parse") from None
    except ValueError as exc:
        raise ParkMessage("invalid_json", str(exc)) from None
    if not isinstance(document, dict):
        raise ParkMessage("not_object", f"body is a JSON {type(document).__name__}, not an object")
    if _depth(document) > MAX_NESTING_DEPTH:
        raise ParkMessage("too_deep", f"JSON nesting deeper than {MAX_NESTING_DEPTH}")
    return document


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e999: valid JSON, but no float can hold it
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _depth(value: Any) -> int:
    """Nesting depth, iteratively, so a hostile body cannot blow the stack."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, level + 1) for child in item)
    return deepest


def format_validation_errors(exc: ValidationError) -> str:
    """pydantic's errors as one line each: `callId: Field required`."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        location = ".".join(str(part) for part in error["loc"]) or "body"
        lines.append(f"{location}: {error['msg']}")
    return "; ".join(lines)


def event_key(
    *, message_id: str | None, document: dict[str, Any], model: PlatformEvent | None, body: bytes
) -> str:
    """The event key of CONTRACT 1: message id, eventId, natural key, else a digest."""
    if message_id:
        return message_id
    event_id = document.get("eventId", document.get("event_id"))
    if isinstance(event_id, str) and event_id:
        return event_id
    if model is not None:
        natural = natural_key(model)
        if natural:
            return natural
    return raw_key(body)


def natural_key(model: PlatformEvent) -> str | None:
    # CONTRACT 1 names `call.*`; user.identified.for_call carries a callId
    # too, and its duplicates must collapse the same way.
    call_id = getattr(model, "call_id", None)
    if call_id:
        return f"{model.event_type}:{call_id}"
    if model.event_type == "day.rolled_over":
        tenant = getattr(model, "tenant_id", None) or "*"
        return f"day.rolled_over:{tenant}:{model.date.isoformat()}"  # type: ignore[union-attr]
    return None


def raw_key(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()
