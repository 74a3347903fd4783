"""Publishing a recording: paced, filtered, and counted by what the broker said.

Every message goes out with confirms and the mandatory flag, so the counts
at the end are what the broker confirmed, and what it returned because
nothing was bound for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from app.errors import Unroutable
from app.publisher import ConfirmedPublisher
from app.recording import RecordedMessage
from app.topics import matches_any


@dataclass
class ReplayCounts:
    """What the broker said about the messages sent."""

    confirmed: int = 0
    unroutable: int = 0

    @property
    def sent(self) -> int:
        return self.confirmed + self.unroutable


class Pacer:
    """Decides when each message may go out, and sleeps until then.

    With `speed` > 0, a message recorded `t` seconds after the first one goes
    out `t / speed` seconds after it; with `rate_per_s` > 0, two messages go
    out at least `1 / rate_per_s` apart. Both may apply; with neither, no
    message waits and the broker's confirms set the pace.
    """

    def __init__(self, *, speed: float = 0.0, rate_per_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.speed = speed
        self.rate_per_s = rate_per_s
        self._clock = clock
        self._sleep = sleep
        self._started_at: float | None = None
        self._first_t = 0.0
        self._next_free_at = 0.0

    def wait_for_turn(self, t: float) -> None:
        """Sleep until the message recorded at `t` may be sent."""
        now = self._clock()
        if self._started_at is None:
            self._started_at, self._first_t, self._next_free_at = now, t, now
        due = self._next_free_at
        if self.speed > 0:
            due = max(due, self._started_at + (t - self._first_t) / self.speed)
        if due > now:
            self._sleep(due - now)
        if self.rate_per_s > 0:
            self._next_free_at = max(due, now) + 1 / self.rate_per_s


def select(messages: Iterable[RecordedMessage],
           patterns: Sequence[str]) -> Iterator[RecordedMessage]:
    """The messages whose routing key matches one of the topic `patterns` (all if none)."""
    for recorded in messages:
        if not patterns or matches_any(patterns, recorded.routing_key):
            yield recorded


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
    pacer: Pacer | None = None,
    on_progress: Callable[[ReplayCounts], None] | None = None,
    counts: ReplayCounts | None = None,
) -> ReplayCounts:
    """Publish `messages` in order, each when `pacer` allows; return the counts.

    Pass `counts` to keep what was sent readable after an interruption.
    """
    pacer = pacer or Pacer()
    counts = counts if counts is not None else ReplayCounts()
    for recorded in messages:
        pacer.wait_for_turn(recorded.t)
        send_recorded(publisher, exchange, recorded, counts)
        if on_progress is not None:
            on_progress(counts)
    return counts
