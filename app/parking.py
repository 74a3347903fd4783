"""The parking queue: messages that cannot be processed, kept with the reason.

The original body is kept byte for byte, with its properties; headers say
why (`x-parked-reason`, `x-parked-detail`), where it came from
(`x-original-exchange`, `x-original-routing-key`) and when (`x-parked-at`).
"""

from __future__ import annotations

from typing import Any

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

from app.state import utc_now

HEADER_REASON = "x-parked-reason"
HEADER_DETAIL = "x-parked-detail"
HEADER_EXCHANGE = "x-original-exchange"
HEADER_ROUTING_KEY = "x-original-routing-key"
HEADER_PARKED_AT = "x-parked-at"
HEADER_EVENT_KEY = "x-event-key"
# aiormq gives a message without a message_id a random one; the original
# value ("" for none) is kept here so that a re-published message has
# exactly its original properties, and so its original event key.
HEADER_MESSAGE_ID = "x-original-message-id"
MAX_DETAIL_CHARS = 4000


def parking_headers(
    *, reason: str, detail: str, exchange: str, routing_key: str, event_key: str,
    message_id: str | None,
) -> dict[str, Any]:
    """The headers that say why, from where and when a message was parked."""
    return {
        HEADER_REASON: reason,
        HEADER_DETAIL: detail[:MAX_DETAIL_CHARS],
        HEADER_EXCHANGE: exchange,
        HEADER_ROUTING_KEY: routing_key,
        HEADER_PARKED_AT: utc_now(),
        HEADER_EVENT_KEY: event_key,
        HEADER_MESSAGE_ID: message_id or "",
    }


def parked_message(
    message: AbstractIncomingMessage, *, reason: str, detail: str, event_key: str
) -> aio_pika.Message:
    """A copy of `message` for the parking queue, with the why in its headers."""
    headers: dict[str, Any] = dict(message.headers or {})
    headers |= parking_headers(reason=reason, detail=detail, exchange=message.exchange or "",
                               routing_key=message.routing_key or "", event_key=event_key,
                               message_id=message.message_id)
    return aio_pika.Message(
        body=message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
        priority=message.priority,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


async def park(
    default_exchange: AbstractExchange, queue_name: str, message: AbstractIncomingMessage, *,
    reason: str, detail: str, event_key: str, timeout_s: float,
) -> None:
    """Publish a parked copy, confirmed by the broker; the caller then acks."""
    copy = parked_message(message, reason=reason, detail=detail, event_key=event_key)
    await default_exchange.publish(copy, routing_key=queue_name, mandatory=True,
                                   timeout=timeout_s)
