"""Recording what flows on the events exchange into a file (CONTRACT 8).

A private queue (exclusive, so the broker deletes it when the recorder goes)
is bound to the exchange with the given topic patterns, and every message it
receives becomes one line of the recording, written and flushed at once:
whenever and however the recording stops, the file holds complete lines.

Consumed with py-amqp, body and properties as they arrived: `auto_decode` is
off, so a body is never turned into text on the way. JSON has no byte-array,
decimal or timestamp type, so such values inside headers are written as text
or numbers (see `json_header_value`); every other property is kept as is.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TextIO

import amqp
import kombu
import structlog

from app.errors import BrokerUnavailable, translate
from app.recording import encode_message

log = structlog.get_logger(__name__)

# How long one wait for a message lasts: the bound on noticing a stop request.
POLL_S = 0.2
_PROPERTY_RENAMES = {"application_headers": "headers"}


@dataclass
class RecordCounts:
    """How a recording went: messages written, and why it stopped."""

    messages: int = 0
    stopped_by: str = ""


class Recorder:
    """A tap on one exchange; `record()` writes what it receives to a file."""

    def __init__(self, url: str, exchange: str, bindings: Sequence[str], *,
                 queue_prefix: str, timeout_s: float) -> None:
        self.url = url
        self.exchange = exchange
        self.bindings = tuple(bindings)
        self.queue = f"{queue_prefix}.record-{uuid.uuid4().hex[:8]}"
        self._timeout_s = timeout_s
        self._connection: kombu.Connection | None = None
        self._channel: Any = None
        self._pending: list[amqp.Message] = []

    def __enter__(self) -> Recorder:
        """Connect and bind the tap queue; messages published from now on are caught."""
        connection = kombu.Connection(self.url, connect_timeout=self._timeout_s)
        try:
            connection.ensure_connection(max_retries=1)
        except Exception as exc:
            connection.release()
            raise BrokerUnavailable(f"RabbitMQ unavailable: {translate(exc)}") from None
        self._connection = connection
        try:
            self._bind_tap(connection.default_channel)
        except Exception as exc:
            self.close()
            raise translate(exc) from exc
        return self

    def _bind_tap(self, channel: Any) -> None:
        channel.auto_decode = False  # the body stays the exact bytes sent
        channel.exchange_declare(self.exchange, "topic", durable=True, auto_delete=False)
        channel.queue_declare(self.queue, exclusive=True, auto_delete=True)
        for pattern in self.bindings:
            channel.queue_bind(self.queue, self.exchange, pattern)
        channel.basic_consume(self.queue, no_ack=True, callback=self._pending.append)
        self._channel = channel

    def record(self, out: TextIO, *, count: int | None = None, seconds: float | None = None,
               stop_requested: Callable[[], bool] = lambda: False,
               on_message: Callable[[RecordCounts], None] | None = None) -> RecordCounts:
        """Write messages to `out` until `count`, `seconds` or `stop_requested()`."""
        counts = RecordCounts()
        deadline = time.monotonic() + seconds if seconds is not None else None
        first_at: float | None = None
        while not (stopped_by := self._why_stop(counts, count, deadline, stop_requested)):
            for message in self._receive(deadline):
                if count is not None and counts.messages >= count:
                    break  # arrived in the same read as the last one counted
                received_at = time.monotonic()
                first_at = received_at if first_at is None else first_at
                out.write(recording_line(message, received_at - first_at) + "\n")
                out.flush()
                counts.messages += 1
                if on_message is not None:
                    on_message(counts)
        counts.stopped_by = stopped_by
        log.debug("recording stopped", messages=counts.messages, stopped_by=stopped_by)
        return counts

    @staticmethod
    def _why_stop(counts: RecordCounts, count: int | None, deadline: float | None,
                  stop_requested: Callable[[], bool]) -> str:
        if count is not None and counts.messages >= count:
            return "count"
        if deadline is not None and time.monotonic() >= deadline:
            return "seconds"
        if stop_requested():
            return "interrupt"
        return ""

    def _receive(self, deadline: float | None) -> list[amqp.Message]:
        """Wait (at most POLL_S) for messages; return those that arrived."""
        assert self._connection is not None  # set in __enter__
        timeout_s = POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic())
        try:
            self._connection.drain_events(timeout=max(timeout_s, 0.001))
        except TimeoutError:  # socket.timeout: no message within the poll
            pass
        except Exception as exc:
            raise translate(exc) from exc
        received, self._pending[:] = list(self._pending), []
        return received

    def close(self) -> None:
        if self._connection is not None:
            # Closing the connection deletes the exclusive tap queue.
            self._connection.release()
        self._connection, self._channel = None, None

    def __exit__(self, *_exc: object) -> None:
        self.close()


def recording_line(message: amqp.Message, t: float) -> str:
    """One recording line for a message received by the tap."""
    # auto_decode is off, so the body is bytes, except for a message without
    # a body, which keeps py-amqp's default: the empty string.
    body = message.body.encode() if isinstance(message.body, str) else bytes(message.body)
    return encode_message(t=t, exchange=message.delivery_info["exchange"],
                          routing_key=message.delivery_info["routing_key"],
                          properties=recorded_properties(message.properties), body=body)


def recorded_properties(properties: dict[str, Any]) -> dict[str, Any]:
    """py-amqp's properties of a received message, named and typed for a recording."""
    recorded = {}
    for name, value in properties.items():
        if value is None:
            continue
        if name == "application_headers":
            value = {key: json_header_value(item) for key, item in value.items()}
        recorded[_PROPERTY_RENAMES.get(name, name)] = value
    return recorded


def json_header_value(value: Any) -> Any:
    """A header value as JSON can hold it.

    Text stays text; bytes that are not UTF-8 become base64 text, a decimal a
    number, a timestamp its POSIX seconds. Replayed, those come back as text
    and numbers: this is where a recording is not exact, and only in headers.
    """
    if isinstance(value, dict):
        return {key: json_header_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_header_value(item) for item in value]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(value).decode()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        # py-amqp reads a table timestamp as a naive UTC datetime.
        return int(value.replace(tzinfo=UTC).timestamp())
    return value
