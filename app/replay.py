"""Publishing a recording, as fast as confirms allow or at recorded speed.

Every message goes out with confirms and the mandatory flag, so the counts
at the end are what the broker confirmed, and what it returned because
nothing was bound for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from app.errors import Unroutable
from app.publisher import ConfirmedPublisher
from app.recording import RecordedMessage


@dataclass
class ReplayCounts:
    """What the broker said about the messages sent."""

    confirmed: int = 0
    unroutable: int = 0

    @property
    def sent(self) -> int:
        return self.confirmed + self.unroutable


def send_recorded(publisher: ConfirmedPublisher, exchange: str, recorded: RecordedMessage,
                  counts: ReplayCounts) -> None:
    """Publish one recorded message exactly as recorded; count the outcome."""
    properties = dict(recorded.properties)
    properties.pop("user_id", None)  # the broker rejects another user's id
    try:
        publisher.publish(exchange=exchange, routing_key=recorded.routing_key,
                          body=recorded.body, properties=properties)
    except Unroutable:
        counts.unroutable += 1
    else:
        counts.confirmed += 1


def replay(
    publisher: ConfirmedPublisher,
    exchange: str,
    messages: Iterable[RecordedMessage],
    *,
    speed: float = 0.0,
    on_progress: Callable[[ReplayCounts], None] | None = None,
) -> ReplayCounts:
    """Publish `messages` in order; with `speed` > 0, keep their spacing divided by it."""
    counts = ReplayCounts()
    started = time.monotonic()
    first_t: float | None = None
    for recorded in messages:
        if speed > 0:
            first_t = recorded.t if first_t is None else first_t
            delay_s = started + (recorded.t - first_t) / speed - time.monotonic()
            if delay_s > 0:
                time.sleep(delay_s)
        send_recorded(publisher, exchange, recorded, counts)
        if on_progress is not None:
            on_progress(counts)
    return counts
