"""Arrival order: claims happen in ticket order whatever finishes first."""

from __future__ import annotations

import asyncio
import random

from app.turnstile import Turnstile


def test_turns_follow_tickets_even_when_handlers_finish_out_of_order() -> None:
    async def scenario() -> list[int]:
        turnstile, order = Turnstile(), []

        async def handler(ticket: int, leaves_early: bool) -> None:
            try:
                await asyncio.sleep(random.uniform(0, 0.01))  # decoding, counting...
                if leaves_early:
                    return  # parked before claiming: its turn is passed in finally
                await turnstile.wait_turn(ticket)
                order.append(ticket)
                await turnstile.pass_turn(ticket)
            finally:
                await turnstile.pass_turn(ticket)

        tickets = [turnstile.take() for _ in range(200)]
        await asyncio.wait_for(asyncio.gather(
            *(handler(ticket, ticket % 7 == 0) for ticket in reversed(tickets))), timeout=10)
        return order

    order = asyncio.run(scenario())
    assert order == sorted(order) and len(order) == 200 - len(range(0, 200, 7))
