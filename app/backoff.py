"""The one back-off schedule for waiting on RabbitMQ or Redis at start-up."""

from __future__ import annotations

from collections.abc import Iterator

START_S = 0.5
MAX_S = 30.0


def backoff_delays(start_s: float = START_S, max_s: float = MAX_S) -> Iterator[tuple[int, float]]:
    """(attempt, delay before the next one): 0.5, 1, 2 ... 30, 30 ... seconds, forever."""
    attempt, delay_s = 1, start_s
    while True:
        yield attempt, delay_s
        attempt, delay_s = attempt + 1, min(delay_s * 2, max_s)
