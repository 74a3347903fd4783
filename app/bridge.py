"""The event bridge: platform events in, Celery task messages out.

For each message on the inbox queue:

1. decode and validate it (`app.inbound`); a bad one is parked;
2. claim its event key in Redis: a key seen before is a duplicate, acked;
3. publish the task messages the route table names, with confirms;
4. record the event as queued, and only then acknowledge it.

A crash anywhere before step 4 leaves the message unacknowledged, so the
broker delivers it again; the claim then sees a `received` record on a
redelivered message and processes it again, with the same task ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

import aio_pika
import aiormq.exceptions
import redis.asyncio
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from app.backoff import backoff_delays
from app.celery_app import create_celery_app, task_exchange_name, task_queue_names
from app.errors import BrokerRefused, ConfigError, ParkMessage, TransientError, translate
from app.faults import crash_if_marked, parse_faults
from app.inbound import InboundEvent, decode_event, raw_key
from app.parked_queue import HEADER_REPLAYED_FROM, HEADER_REPLAYS, text_header
from app.parking import park
from app.settings import Settings, redact_url
from app.state import AsyncStateStore, Claim, utc_now
from app.task_messages import PlannedTask, build_task_message, plan_tasks
from app.turnstile import Turnstile
from handlers.routes import ROUTES, TASK_QUEUES, chains_of

log = structlog.get_logger(__name__)

TRANSIENT_NACK_DELAY_S = 1.0
WATCHDOG_INTERVAL_S = 5.0
WATCHDOG_TIMEOUT_S = 10.0
REPAIR_ATTEMPTS = 6
CLAIM_RETRY_S = 30.0


async def connect_with_backoff(
    settings: Settings, what: str = "bridge"
) -> AbstractRobustConnection:
    """Connect to RabbitMQ, retrying with a visible, growing back-off."""
    for attempt, delay_s in backoff_delays():
        try:
            return await aio_pika.connect_robust(settings.rabbitmq_url, timeout=10,
                                                 client_properties={"connection_name": what})
        except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
            error = translate(exc)
            if isinstance(error, BrokerRefused):
                # Bad credentials or vhost: waiting will not help.
                raise ConfigError(f"RABBITMQ_URL {redact_url(settings.rabbitmq_url)}: "
                                  f"{error}") from None
            log.warning(f"RabbitMQ unreachable, retrying in {delay_s:.1f}s [{attempt}]",
                        url=redact_url(settings.rabbitmq_url), error=str(error))
        await asyncio.sleep(delay_s)
    raise AssertionError("unreachable: the back-off schedule never ends")


async def redis_with_backoff(settings: Settings) -> redis.asyncio.Redis:
    """A Redis client that has answered a PING, retrying with back-off."""
    client = redis.asyncio.Redis.from_url(settings.redis_url, socket_timeout=5,
                                          socket_connect_timeout=5, health_check_interval=30)
    for attempt, delay_s in backoff_delays():
        try:
            await client.ping()
            return client
        except Exception as exc:  # any failure to answer is worth a retry
            log.warning(f"Redis unreachable, retrying in {delay_s:.1f}s [{attempt}]",
                        url=redact_url(settings.redis_url), error=str(translate(exc)))
        await asyncio.sleep(delay_s)
    raise AssertionError("unreachable: the back-off schedule never ends")


class Bridge:
    """Consumes the inbox queue and turns each event into Celery tasks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.inbox_name = settings.queue_name("inbox")
        self.parked_name = settings.queue_name("parked")
        self.celery_app = create_celery_app(settings)
        self.processed = 0
        self._connection: AbstractRobustConnection | None = None
        self._redis: redis.asyncio.Redis | None = None
        self._state: AsyncStateStore | None = None
        self._publish_channel: AbstractChannel | None = None
        self._task_exchange: AbstractExchange | None = None
        self._consume_channel: AbstractChannel | None = None
        self._inbox: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._retired: list[AbstractChannel] = []  # see _consume_on_fresh_channel
        self._faults = parse_faults(settings.fault_injection)
        # Redelivered messages are handled one at a time (see _handle).
        self._suspect_lock = asyncio.Lock()
        # Arrival order: event keys are claimed in delivery order, so that a
        # report's "arrived before the rollover" means what it says.
        self._turnstile = Turnstile()
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self) -> None:
        """Connect, declare the topology, and start consuming."""
        self._redis = await redis_with_backoff(self.settings)
        self._state = AsyncStateStore(self._redis, self.settings.redis_prefix,
                                      self.settings.state_ttl_s)
        self._connection = await connect_with_backoff(self.settings)
        self._publish_channel = await self._connection.channel(publisher_confirms=True,
                                                               on_return_raises=True)
        self._consume_channel = await self._connection.channel()
        await self._consume_channel.set_qos(prefetch_count=self.settings.prefetch_count)
        await self._declare_task_topology()
        await self._publish_channel.declare_queue(self.parked_name, durable=True)
        await self._consume_inbox()
        self._watchdog = asyncio.create_task(self._watch_inbox())
        log.info("bridge ready", inbox=self.inbox_name, exchange=self.settings.events_exchange,
                 bindings=sorted(ROUTES), prefetch=self.settings.prefetch_count)

    async def _consume_inbox(self) -> None:
        """Declare the exchange and the inbox, bind them, and consume."""
        assert self._consume_channel is not None  # set in start()
        events = await self._consume_channel.declare_exchange(
            self.settings.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        self._inbox = await self._consume_channel.declare_queue(self.inbox_name, durable=True)
        # Exactly the routing keys a handler exists for: never `#`, and so
        # never our own completion events (`task.*`).
        for routing_key in ROUTES:
            await self._inbox.bind(events, routing_key=routing_key)
        self._consumer_tag = await self._inbox.consume(self._on_message)

    async def _declare_task_topology(self) -> None:
        """Declare the task exchange and queues, as the Celery worker does.

        Declared here too so that tasks published before any worker has
        started wait in their queues instead of being returned.
        """
        assert self._publish_channel is not None  # set in start()
        self._task_exchange = await self._publish_channel.declare_exchange(
            task_exchange_name(self.settings), aio_pika.ExchangeType.DIRECT, durable=True)
        for name in task_queue_names(self.settings):
            queue = await self._publish_channel.declare_queue(name, durable=True)
            await queue.bind(self._task_exchange, routing_key=name)

    async def stop(self) -> None:
        """Stop taking events, finish those in hand (bounded), and disconnect."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._inbox is not None and self._consumer_tag is not None:
            with contextlib.suppress(Exception):
                await self._inbox.cancel(self._consumer_tag)
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=self.settings.shutdown_grace_s)
        except TimeoutError:
            log.warning("shutdown grace period over; unfinished events will be redelivered",
                        in_flight=self._in_flight)
        if self._connection is not None:
            await self._connection.close()
        if self._redis is not None:
            await self._redis.aclose()
        log.info("bridge stopped", processed=self.processed)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        ticket = self._turnstile.take()  # before any await: delivery order
        self._in_flight += 1
        self._idle.clear()
        try:
            await self._handle(message, ticket)
        finally:
            await self._turnstile.pass_turn(ticket)
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def _handle(self, message: AbstractIncomingMessage, ticket: int) -> None:
        if message.redelivered:
            # It was in hand when a bridge died, perhaps because of it:
            # handle it alone, and count how often that happened. (Suspects
            # take this lock in ticket order, so the turnstile cannot jam.)
            async with self._suspect_lock:
                await self._handle_suspect(message, ticket)
            return
        await self._handle_once(message, ticket)

    async def _handle_suspect(self, message: AbstractIncomingMessage, ticket: int) -> None:
        assert self._state is not None  # set in start()
        digest = raw_key((message.routing_key or "").encode() + b"\x00" + message.body)
        try:
            deliveries = await self._state.count_suspect_delivery(digest)
        except TransientError as exc:
            log.warning("transient error, message will be redelivered", error=str(exc))
            await asyncio.sleep(TRANSIENT_NACK_DELAY_S)
            await self._settle(message.nack(requeue=True))
            return
        if deliveries > self.settings.max_deliveries:
            await self._park(message, "max_deliveries",
                             f"in hand {deliveries - 1} times when a bridge process died")
        else:
            await self._handle_once(message, ticket)
        with contextlib.suppress(TransientError):
            await self._state.clear_suspect(digest)

    async def _handle_once(self, message: AbstractIncomingMessage, ticket: int) -> None:
        routing_key = message.routing_key or ""
        crash_if_marked(self._faults, "bridge_exit_on", message.body)
        try:
            event = decode_event(message.body, routing_key=routing_key,
                                 content_type=message.content_type,
                                 message_id=message.message_id,
                                 max_body_bytes=self.settings.max_body_bytes)
        except ParkMessage as exc:
            await self._park(message, exc.reason, exc.detail)
            return

        try:
            await self._process(message, event, ticket)
        except TransientError as exc:
            log.warning("transient error, event will be redelivered", event_key=event.key,
                        routing_key=routing_key, error=str(exc))
            await asyncio.sleep(TRANSIENT_NACK_DELAY_S)
            await self._settle(message.nack(requeue=True))
        except Exception as exc:  # a bug must not loop the message forever
            log.exception("event could not be processed", event_key=event.key)
            await self._park(message, "internal_error", f"{type(exc).__name__}: {exc}",
                             event_key=event.key)

    async def _process(
        self, message: AbstractIncomingMessage, event: InboundEvent, ticket: int
    ) -> None:
        assert self._state is not None  # set in start()
        bound = log.bind(event_key=event.key, routing_key=event.routing_key,
                         trace_id=event.trace_id)
        tasks_total = sum(len(chain) for chain in chains_of(event.event_type))
        await self._turnstile.wait_turn(ticket)
        claim = await self._claim_holding_turn(
            key=event.key, event_type=event.event_type, routing_key=event.routing_key,
            trace_id=event.trace_id, redelivered=bool(message.redelivered),
            tasks_total=tasks_total, generation=_replays(message))
        await self._turnstile.pass_turn(ticket)
        if not claim.is_new:
            bound.info(f"{claim.outcome} event acknowledged", existing_state=claim.existing_state)
            await self._ack_processed(message, bound)
            return

        await self._note_replayed_as(message, event.key, bound)
        meta = {"eventKey": event.key, "eventType": event.event_type,
                "routingKey": event.routing_key, "traceId": event.trace_id, "seq": claim.seq}
        chains = plan_tasks(self.settings.service_name, event.event_type, event.key,
                            claim.generation)
        task_ids = [task.task_id for chain in chains for task in chain]
        sent_at = utc_now()
        # One message per chain: the tasks chained after its first travel in it.
        await asyncio.gather(*(self._publish_task(chain, event, meta) for chain in chains))
        await self._state.mark_queued(event.key, task_ids, sent_at)
        await self._ack_processed(message, bound)
        self.processed += 1
        bound.debug("event queued", task_ids=task_ids, seq=claim.seq)

    async def _claim_holding_turn(self, **claim: Any) -> Claim:
        """Claim, retrying a short Redis outage in place so later events wait.

        Giving the turn away and nacking would let later events claim first,
        and a report could then miss an event that arrived before it.
        """
        assert self._state is not None  # set in start()
        deadline = asyncio.get_running_loop().time() + CLAIM_RETRY_S
        while True:
            try:
                return await self._state.claim(**claim)
            except TransientError as exc:
                if asyncio.get_running_loop().time() >= deadline:
                    raise
                log.warning("claim failed, retrying in place", event_key=claim["key"],
                            error=str(exc))
                await asyncio.sleep(TRANSIENT_NACK_DELAY_S)

    async def _publish_task(self, chain: list[PlannedTask], event: InboundEvent,
                            meta: dict[str, Any]) -> None:
        assert self._task_exchange is not None  # set in start()
        first = chain[0]
        message = build_task_message(self.celery_app, task_name=first.name,
                                     task_id=first.task_id,
                                     kwargs={"event": event.payload, "meta": meta},
                                     event_key=event.key, then=chain[1:])
        queue = self.settings.queue_name(TASK_QUEUES[first.name])
        try:
            await self._task_exchange.publish(message, routing_key=queue, mandatory=True,
                                              timeout=self.settings.publish_timeout_s)
        except aiormq.exceptions.PublishError:
            # The task queue is gone (deleted by hand?): declare it again and
            # let the event come back.
            await self._declare_task_topology()
            raise TransientError(f"task queue {queue!r} was missing; redeclared") from None
        except Exception as exc:
            raise translate(exc) from exc

    async def _park(self, message: AbstractIncomingMessage, reason: str, detail: str,
                    event_key: str | None = None) -> None:
        key = event_key or message.message_id or raw_key(message.body)
        log.warning("message parked", reason=reason, detail=detail, event_key=key,
                    routing_key=message.routing_key)
        assert self._publish_channel is not None  # set in start()
        try:
            await park(self._publish_channel.default_exchange, self.parked_name, message,
                       reason=reason, detail=detail, event_key=key,
                       timeout_s=self.settings.publish_timeout_s)
        except Exception as exc:  # not parked: keep the original, it comes back
            log.error("could not park message; it will be redelivered", error=str(translate(exc)))
            await asyncio.sleep(TRANSIENT_NACK_DELAY_S)
            await self._settle(message.nack(requeue=True))
            return
        try:
            assert self._state is not None
            await self._state.mark_parked(key, reason, detail, message.routing_key or "",
                                          replays=_replays(message))
        except TransientError as exc:
            log.warning("parked message not recorded in state", event_key=key, error=str(exc))
        await self._settle(message.ack())  # if it fails, the redelivery is parked again

    async def _watch_inbox(self) -> None:
        """Every few seconds, make sure the inbox exists and we consume it.

        aio-pika restores its consumers after a reconnect, and tries to after
        a queue is deleted, but a consumer the broker cancelled has been seen
        staying gone: a bridge must never sit connected with zero consumers.
        Each check and repair is bounded in time; a repair starts on a fresh
        channel. After REPAIR_ATTEMPTS failed repairs in a row the watchdog
        gives up, and the bridge exits non-zero for its supervisor to restart.
        """
        failed_repairs = 0
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL_S)
            if self._connection is None or self._connection.is_closed:
                continue  # the robust connection is reconnecting
            await self._close_retired()
            try:
                if await asyncio.wait_for(self._inbox_consumed(), WATCHDOG_TIMEOUT_S):
                    failed_repairs = 0
                    continue
                log.warning("inbox queue or its consumer is gone; declaring and consuming again",
                            inbox=self.inbox_name)
                await asyncio.wait_for(self._consume_on_fresh_channel(), WATCHDOG_TIMEOUT_S)
                log.info("inbox consumed again", inbox=self.inbox_name)
                failed_repairs = 0
            except Exception as exc:  # a check that fails is retried next round
                failed_repairs += 1
                error = "timed out" if isinstance(exc, TimeoutError) else str(translate(exc))
                log.warning("inbox check or repair failed", error=error,
                            attempt=failed_repairs, of=REPAIR_ATTEMPTS)
                if failed_repairs >= REPAIR_ATTEMPTS:
                    log.error("inbox cannot be consumed again; the bridge exits",
                              inbox=self.inbox_name)
                    return

    async def _consume_on_fresh_channel(self) -> None:
        """Consume the inbox on a new channel; retire the old one.

        The old channel may be in the middle of aio-pika's own consumer
        recovery; a new one starts clean. The old consumer is cancelled, so
        that aio-pika does not restore it beside the new one, but the old
        channel stays open while events taken from it are in hand (closing
        it would make their acks fail); `_close_retired` closes it later.
        """
        assert self._connection is not None  # set in start()
        old_channel, old_inbox, old_tag = self._consume_channel, self._inbox, self._consumer_tag
        if old_inbox is not None and old_tag is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(old_inbox.cancel(old_tag), WATCHDOG_TIMEOUT_S)
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=self.settings.prefetch_count)
        self._consume_channel = channel
        if old_channel is not None:
            self._retired.append(old_channel)
        await self._consume_inbox()

    async def _close_retired(self) -> None:
        """Close the channels retired by repairs, once no event is in hand."""
        if not self._retired or self._in_flight:
            return
        retired, self._retired = self._retired, []
        for channel in retired:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(channel.close(), WATCHDOG_TIMEOUT_S)

    async def watchdog_gave_up(self) -> None:
        """Returns when the inbox watchdog has given up (never, while it is fine)."""
        assert self._watchdog is not None  # set in start()
        await asyncio.wait({self._watchdog})  # never cancels the watchdog itself

    async def _inbox_consumed(self) -> bool:
        assert self._connection is not None and self._consume_channel is not None
        probe = await self._connection.channel()
        try:
            await probe.declare_queue(self.inbox_name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return False
        finally:
            with contextlib.suppress(Exception):
                await probe.close()
        underlay: Any = await self._consume_channel.get_underlay_channel()
        return self._consumer_tag in underlay.consumers

    async def _note_replayed_as(self, message: AbstractIncomingMessage, key: str,
                                bound: Any) -> None:
        """A re-published parked message taken under another key than the one it
        was parked under: say so in the parked key's state."""
        parked_key = text_header(message.headers or {}, HEADER_REPLAYED_FROM)
        if not parked_key or parked_key == key:
            return
        assert self._state is not None  # set in start()
        try:
            await self._state.note_replayed_as(parked_key, key)
        except TransientError as exc:  # a note only; the event goes on
            bound.warning("could not note the replay in the parked key's state",
                          parked_key=parked_key, error=str(exc))

    @staticmethod
    async def _ack_processed(message: AbstractIncomingMessage, bound: Any) -> None:
        """Ack an event whose work is done. If the ack cannot be sent (its
        channel is gone), the broker redelivers the event, and its claim then
        says it was handled: nothing to park, nothing to redo."""
        try:
            await message.ack()
        except Exception as exc:
            bound.warning("ack failed; the broker will redeliver the event, "
                          "which is then recognised as handled", error=str(translate(exc)))

    @staticmethod
    async def _settle(operation: Any) -> None:
        # Settling fails only when the channel is gone, and then the broker
        # redelivers the message anyway.
        with contextlib.suppress(Exception):
            await operation


def _replays(message: AbstractIncomingMessage) -> int:
    """How often `parked replay` has re-published this message (0: never)."""
    value = (message.headers or {}).get(HEADER_REPLAYS, 0)
    try:
        return max(int(str(value)), 0)
    except (TypeError, ValueError):
        return 0


async def run_bridge(settings: Settings) -> int:
    """Run the bridge until SIGINT or SIGTERM; return the exit status."""
    bridge = Bridge(settings)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)

    start = asyncio.create_task(bridge.start())
    waiter = asyncio.create_task(stopping.wait())
    done, _ = await asyncio.wait({start, waiter}, return_when=asyncio.FIRST_COMPLETED)
    status = 0
    if start in done:
        start.result()
        gave_up = asyncio.create_task(bridge.watchdog_gave_up())
        await asyncio.wait({waiter, gave_up}, return_when=asyncio.FIRST_COMPLETED)
        if not stopping.is_set():
            status = 1
        gave_up.cancel()
    else:
        start.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await start
    log.info("bridge stopping")
    await bridge.stop()
    return status
