"""Publishing completion events back to the events exchange (CONTRACT 2).

Runs in worker processes. Every event is persistent, JSON, and published
with confirms and the mandatory flag: an event that no queue is bound for
is returned by the broker, counted as unroutable, never reported delivered.
"""

from __future__ import annotations

import json
import uuid

from app.publisher import ConfirmedPublisher
from schemas.completion import CompletionEvent

_COMPLETION_NAMESPACE = uuid.UUID("3c1d0b9a-7f1e-4e55-8a6b-0d2f9e4c1a77")


def completion_event_id(task_id: str, event_type: str) -> str:
    """The same for every run of the same task: a completion event repeated
    after a crash carries the id of the first, so listeners can drop it."""
    return str(uuid.uuid5(_COMPLETION_NAMESPACE, f"{task_id}:{event_type}"))


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

