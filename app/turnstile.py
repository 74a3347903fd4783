"""Arrival order for concurrently handled messages.

The bridge handles up to PREFETCH_COUNT messages at once, but claims their
event keys (and so gives them their arrival seq) strictly in delivery order:
a daily report counts "the events that arrived before the rollover", and
that must not depend on which handler won a race.

Each message takes a ticket when it is delivered (synchronously, so in
delivery order), waits for its turn before claiming, and passes its turn
after claiming, or when it leaves without claiming (parked, failed).
"""

from __future__ import annotations

import asyncio


class Turnstile:
    """Lets tickets through one at a time, in the order they were taken."""

    def __init__(self) -> None:
        self._next_ticket = 0
        self._serving = 0
        self._passed: set[int] = set()
        self._changed = asyncio.Condition()

    def take(self) -> int:
        ticket = self._next_ticket
        self._next_ticket += 1
        return ticket

    async def wait_turn(self, ticket: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._serving >= ticket)

    async def pass_turn(self, ticket: int) -> None:
        """Let the next ticket through; passing twice, or early, is harmless."""
        async with self._changed:
            if ticket < self._serving:
                return
            self._passed.add(ticket)
            while self._serving in self._passed:
                self._passed.discard(self._serving)
                self._serving += 1
            self._changed.notify_all()
