"""Publishing completion events back to the events exchange (CONTRACT 2).

Runs in worker processes. Every event is persistent, JSON, and published
with confirms and the mandatory flag: an event that no queue is bound for
is returned by the broker, counted as unroutable, never reported delivered.
"""

from __future__ import annotations

import json

from app.publisher import ConfirmedPublisher
from schemas.completion import CompletionEvent


class CompletionPublisher:
    """Publishes `CompletionEvent`s; raises `Unroutable` when one is returned."""

    def __init__(self, publisher: ConfirmedPublisher, exchange_name: str) -> None:
        self._exchange_name = exchange_name
        self._publisher = publisher

    @property
    def unroutable_total(self) -> int:
        return self._publisher.unroutable_total

    def publish(self, event: CompletionEvent) -> None:
        body = json.dumps(event.to_wire(), separators=(",", ":")).encode()
        self._publisher.publish(
            exchange=self._exchange_name,
            routing_key=event.routing_key,
            body=body,
            properties={"content_type": "application/json", "content_encoding": "utf-8",
                        "delivery_mode": 2, "message_id": event.event_id},
        )

