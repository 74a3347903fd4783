"""Confirmed publishing: delivered messages, and unroutable ones told apart."""

from __future__ import annotations

import uuid
from typing import Any

import kombu
import pytest

from app.completion import CompletionPublisher
from app.errors import BrokerUnavailable, Unroutable
from app.publisher import ConfirmedPublisher
from schemas.completion import CompletionEvent
from tests.conftest import require_services

URL = "amqp://guest:guest@127.0.0.1:5672//"


@pytest.fixture
def exchange() -> str:
    require_services()
    name = f"ts-test-{uuid.uuid4().hex[:10]}.events"
    yield name
    with kombu.Connection(URL) as connection:
        connection.default_channel.exchange_delete(name)


def tap(channel: Any, exchange: str, pattern: str) -> str:
    """Declare `exchange` and a queue bound to it with `pattern`; return the queue."""
    queue = f"{exchange}.tap"
    channel.exchange_declare(exchange, "topic", durable=True, auto_delete=False)
    channel.queue_declare(queue, auto_delete=False)
    channel.queue_bind(queue, exchange, pattern)
    return queue


def completion() -> CompletionEvent:
    return CompletionEvent(event_type="task.succeeded", event_id=str(uuid.uuid4()),
                           timestamp="2026-12-02T10:00:00Z", trace_id=None, task_id="t",
                           task_name="calls.record_event", source_event_type="call.ended",
                           source_event_key="call.ended:c", attempts=1, duration_ms=1.0,
                           result={})


def test_unroutable_completion_event_is_detected_and_counted(exchange: str) -> None:
    with ConfirmedPublisher(URL, 5) as confirmed:
        publisher = CompletionPublisher(confirmed, exchange)
        with pytest.raises(Unroutable):
            publisher.publish(completion())
        with pytest.raises(Unroutable):
            publisher.publish(completion())
    assert publisher.unroutable_total == 2


def test_routable_completion_event_is_delivered_as_json(exchange: str) -> None:
    with kombu.Connection(URL) as connection:
        channel = connection.default_channel
        queue = tap(channel, exchange, "task.#")
        event = completion()
        with ConfirmedPublisher(URL, 5) as confirmed:
            publisher = CompletionPublisher(confirmed, exchange)
            publisher.publish(event)
        message = channel.basic_get(queue, no_ack=True)
        channel.queue_delete(queue)
    assert message.delivery_info["routing_key"] == "task.succeeded.calls.record_event"
    assert message.properties["content_type"] == "application/json"
    assert message.properties["delivery_mode"] == 2
    assert message.properties["message_id"] == event.event_id
    assert publisher.unroutable_total == 0


def test_message_without_message_id_reaches_the_broker_without_one(exchange: str) -> None:
    with kombu.Connection(URL) as connection:
        channel = connection.default_channel
        queue = tap(channel, exchange, "#")
        with ConfirmedPublisher(URL, 5) as publisher:
            publisher.publish(exchange=exchange, routing_key="call.ended", body=b"\xff\x00",
                              properties={"content_type": "application/json"})
        message = channel.basic_get(queue, no_ack=True)
        channel.queue_delete(queue)
    assert message.body == b"\xff\x00"
    assert "message_id" not in message.properties


def test_unreachable_broker_is_one_clear_error() -> None:
    publisher = ConfirmedPublisher("amqp://guest:secret@127.0.0.1:1//", timeout_s=2)
    with pytest.raises(BrokerUnavailable) as caught:
        publisher.publish(exchange="x", routing_key="y", body=b"{}")
    assert "secret" not in str(caught.value)
