"""Operator commands on the parking queue: list, re-publish, purge.

Listing takes each message with basic.get and never acknowledges it, so
closing the channel puts every one back where it was.
"""

from __future__ import annotations

from typing import Any

import aio_pika
import redis
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from app.errors import BrokerUnavailable, TransientError, translate
from app.parking import (
    HEADER_DETAIL,
    HEADER_EVENT_KEY,
    HEADER_EXCHANGE,
    HEADER_MESSAGE_ID,
    HEADER_PARKED_AT,
    HEADER_REASON,
    HEADER_ROUTING_KEY,
)
from app.publisher import ConfirmedPublisher
from app.settings import Settings
from app.state import StateStore, utc_now

log = structlog.get_logger(__name__)

HEADER_REPLAYS = "x-parked-replays"
HEADER_REPLAYED_FROM = "x-parked-event-key"
_PARKING_HEADERS = {HEADER_DETAIL, HEADER_EVENT_KEY, HEADER_EXCHANGE, HEADER_PARKED_AT,
                    HEADER_REASON, HEADER_ROUTING_KEY, HEADER_MESSAGE_ID, HEADER_REPLAYED_FROM}


async def _connect(settings: Settings) -> aio_pika.abc.AbstractConnection:
    try:
        return await aio_pika.connect(settings.rabbitmq_url, timeout=10)
    except Exception as exc:  # one line for the operator, password hidden
        error = translate(exc)
        raise (error if isinstance(error, BrokerUnavailable)
               else BrokerUnavailable(f"RabbitMQ unavailable: {type(exc).__name__}")) from None


async def _drain(queue: AbstractQueue) -> list[AbstractIncomingMessage]:
    messages = []
    while (message := await queue.get(no_ack=False, fail=False)) is not None:
        messages.append(message)
    return messages


def text_header(headers: dict[str, Any], name: str) -> str:
    value = headers.get(name, "")
    return value.decode() if isinstance(value, bytes) else str(value)


def describe(message: AbstractIncomingMessage) -> dict[str, Any]:
    """A parked message as the operator sees it."""
    headers = message.headers or {}

    def text(name: str) -> str:
        return text_header(headers, name)

    return {
        "eventKey": text(HEADER_EVENT_KEY),
        "reason": text(HEADER_REASON),
        "detail": text(HEADER_DETAIL),
        "exchange": text(HEADER_EXCHANGE),
        "routingKey": text(HEADER_ROUTING_KEY),
        "parkedAt": text(HEADER_PARKED_AT),
        "replays": int(str(headers.get(HEADER_REPLAYS) or 0)),
        "bodyBytes": len(message.body),
        "contentType": message.content_type,
        # aiormq gave the parked copy a message id if it had none: show the original.
        "messageId": (text(HEADER_MESSAGE_ID) or None) if HEADER_MESSAGE_ID in headers
        else message.message_id,
    }


async def list_parked(settings: Settings) -> list[dict[str, Any]]:
    connection = await _connect(settings)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(settings.queue_name("parked"), durable=True)
        return [describe(message) for message in await _drain(queue)]


async def replay_parked(settings: Settings, *, reason: str | None = None,
                        key: str | None = None) -> tuple[int, int]:
    """Re-publish the matching parked messages; return (re-published, left parked).

    Each goes back to its original exchange and routing key with its
    original body and properties, and a replay counter in its headers; once
    the broker has confirmed it, the parked key's state notes the replay.
    """
    connection = await _connect(settings)
    moved = kept = 0
    state = _state_store(settings)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(settings.queue_name("parked"), durable=True)
        with ConfirmedPublisher(settings.rabbitmq_url, settings.publish_timeout_s) as publisher:
            for message in await _drain(queue):
                info = describe(message)
                if (reason and info["reason"] != reason) or (key and info["eventKey"] != key):
                    kept += 1
                    continue
                properties = original_properties(message, info["replays"] + 1)
                published_at = utc_now()
                publisher.publish(exchange=info["exchange"] or settings.events_exchange,
                                  routing_key=info["routingKey"], body=message.body,
                                  properties=properties, declare_topic=False)
                if state is not None and info["eventKey"]:
                    _note_replayed(state, info, at=published_at)
                await message.ack()
                moved += 1
    if state is not None:
        state.client.close()
    return moved, kept


def _note_replayed(state: StateStore, info: dict[str, Any], *, at: str) -> None:
    try:
        state.note_replayed(info["eventKey"], replays=info["replays"] + 1, at=at)
    except TransientError as exc:  # the message is re-published all the same
        log.warning("parked replay: state not updated", event_key=info["eventKey"],
                    error=str(exc))


def _state_store(settings: Settings) -> StateStore | None:
    """The state store, to note each re-publication in; None (and a warning) if
    Redis is unreachable: re-publishing does not depend on it."""
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        log.warning("parked replay: state not updated, Redis unreachable",
                    error=str(translate(exc)))
        return None
    return StateStore(client, settings.redis_prefix, settings.state_ttl_s)


def original_properties(message: AbstractIncomingMessage, replays: int) -> dict[str, Any]:
    headers = dict(message.headers or {})
    original_id = headers.get(HEADER_MESSAGE_ID)
    if isinstance(original_id, bytes):
        original_id = original_id.decode()
    headers = {name: value for name, value in headers.items() if name not in _PARKING_HEADERS}
    headers[HEADER_REPLAYS] = replays
    # The key it was parked under: if the bridge now knows it by another key
    # (it is valid now), it says so in that key's state (`replayedAs`).
    headers[HEADER_REPLAYED_FROM] = text_header(message.headers or {}, HEADER_EVENT_KEY)
    return {
        "headers": headers,
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "message_id": original_id if original_id is not None else message.message_id,
        "correlation_id": message.correlation_id,
        "type": message.type,
        "app_id": message.app_id,
        "priority": message.priority,
        "delivery_mode": 2,
    }


async def purge_parked(settings: Settings) -> int:
    connection = await _connect(settings)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(settings.queue_name("parked"), durable=True)
        result = await queue.purge()
        return int(result.message_count or 0)
