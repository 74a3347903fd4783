"""How fast can an asyncio bridge turn AMQP messages into Celery task messages?

Compares three ways, in one run, against the RabbitMQ of this machine:

  a forward    aio-pika consumes a message from an inbox queue, publishes its body
               unchanged to the task queue (confirms, mandatory), then acks it.
               The floor: what AMQP alone costs.
  b build      as a, but the body becomes a Celery protocol-2 task message built by
               `app.task_messages.build_task_message`, as `app/bridge.py` does.
  c send_task  as b, but Celery publishes it: `celery_app.send_task(...)` runs in the
               event loop's default thread pool (`loop.run_in_executor`).

b and c make the same task message (id, kwargs, reprs, queue). c also pays for
what Celery does around a publish with this project's settings: a `task-sent`
event per task (task_send_sent_event), a confirm for each of the two messages,
and a Redis SUBSCRIBE to the task's result channel (the Redis result backend
does this for every task sent outside a worker). Its connections are opened on
first use, during the flood. Not measured: validation, and the Redis claim and
state updates of the real bridge, the same for every way. No worker runs: task
messages stay on the task queue and are counted there.

Each variant has its own queues and exchange (`bench-<hex>-<letter>.*`, deleted at
the end, also on an error or Ctrl-C) and its own bridge: a child process, so that
the CPU time and memory reported are that variant's alone. Two phases each:

  flood  N events wait in the inbox, then the bridge drains them (prefetch 64).
  paced  M events are published at a steady 200/s, below what every variant
         sustains, so that latency is what one event sees, not a backlog.

Reading the table:

  msg/s           flood: N / (first delivery to last ack), timed in the bridge.
  cpu ms/msg      flood: user + system CPU of the bridge process per message. RabbitMQ
                  shares this machine's cores, so this is the steadier comparison.
  e2e p50/p99     paced, ms: from just before the inbound publish to the arrival of
                  the task message at a consumer of the task queue. Both ends are in
                  this process, on one monotonic clock; two broker hops included.
  handle p50/p99  paced, ms: in the bridge, from the delivery of the inbound message
                  to its ack (task message built, published and confirmed).
  rss MiB         peak resident set size of the bridge process (`resource.getrusage`,
                  ru_maxrss; not tracemalloc), imports included.
  rss Δ MiB       how far processing raised that peak above its level right after
                  set-up (imports, connection, Celery app). A high-water mark: it
                  shows growth, not what is still held at the end.

Exit status 1, with the reasons on stderr, when any task message is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import resource
import secrets
import signal
import sys
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from importlib.metadata import version
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

import aio_pika
import click
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aio_pika.exceptions import ChannelNotFoundEntity

from app.celery_app import create_celery_app, task_exchange_name, task_queue_names
from app.settings import Settings, redact_url
from app.task_messages import build_task_message, task_id_for
from handlers.routes import RECORD_CALL_EVENT, TASK_QUEUES

TASK_NAME = RECORD_CALL_EVENT
PREFETCH = 64
PACED_MAX = 400
PACED_RATE = 200  # events per second
PUBLISH_BATCH = 200
PUBLISH_TIMEOUT_S = 10.0
FLOOD_TIMEOUT_S = 60.0
JOIN_TIMEOUT_S = 5.0
# Celery's event exchange: variant c sends a `task-sent` event per task to it.
CELERY_EVENTS_EXCHANGE = "celeryev"

Handler = Callable[[AbstractIncomingMessage], Awaitable[None]]


class BenchError(Exception):
    """A variant could not be measured; the message says why."""


# -- events and the tasks they become ----------------------------------------


def sample_event(call_id: str, seq: int) -> dict[str, Any]:
    """A `call.started` event of a realistic size; `benchSeq` identifies it."""
    return {
        "eventType": "call.started",
        "callId": call_id,
        "traceId": uuid.uuid4().hex,
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "from": "sip:+905550000000@sbc.example.net",
        "to": "sip:+902120000000@sbc.example.net",
        "dialplanResolution": {
            "dialplanId": "dp-bench",
            "tenantId": "tenant-bench",
            "action": {"action": "START_AI_CONVERSATION",
                       "actionData": {"data": {"welcomeAnnouncementId": "welcome-tr"}}},
        },
        "mediaInfo": {"callerRtpAddr": "10.0.0.5:10000", "serverRtpPort": "10002"},
        "benchSeq": seq,
    }


def inbound_message(service_name: str, seq: int) -> aio_pika.Message:
    """The AMQP message a producer would publish for event number `seq`."""
    event_key = f"{service_name}:{seq}"
    return aio_pika.Message(
        json.dumps(sample_event(event_key, seq), separators=(",", ":")).encode(),
        content_type="application/json",
        message_id=event_key,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


class TaskRequest(NamedTuple):
    event_key: str
    task_id: str
    kwargs: dict[str, Any]


def task_request(message: AbstractIncomingMessage) -> TaskRequest:
    """The task an inbound message becomes, with the arguments the bridge gives it."""
    event = json.loads(message.body)
    event_key = message.message_id or ""
    meta = {"eventKey": event_key, "eventType": event["eventType"],
            "routingKey": event["eventType"], "traceId": event.get("traceId"),
            "seq": event["benchSeq"]}
    return TaskRequest(event_key, task_id_for("bench", event_key, TASK_NAME),
                       {"event": event, "meta": meta})


def bench_seq(body: bytes) -> int | None:
    """The `benchSeq` of the event in a task message: forwarded, or protocol 2."""
    try:
        document = json.loads(body)
        # Protocol 2 bodies are [args, kwargs, embed].
        event = document[1]["event"] if isinstance(document, list) else document
        return int(event["benchSeq"])
    except (ValueError, LookupError, TypeError):
        return None


def task_queue_name(settings: Settings) -> str:
    return settings.queue_name(TASK_QUEUES[TASK_NAME])


# -- the three variants --------------------------------------------------------


async def forward_handler(settings: Settings, channel: AbstractChannel) -> Handler:
    """Variant a: publish the inbound body as it is."""
    exchange = await channel.get_exchange(task_exchange_name(settings), ensure=False)
    routing_key = task_queue_name(settings)

    async def forward(message: AbstractIncomingMessage) -> None:
        copy = aio_pika.Message(message.body, content_type=message.content_type,
                                delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await exchange.publish(copy, routing_key=routing_key, mandatory=True,
                               timeout=PUBLISH_TIMEOUT_S)

    return forward


async def build_handler(settings: Settings, channel: AbstractChannel) -> Handler:
    """Variant b: Celery builds the task message, aio-pika publishes it."""
    celery_app = create_celery_app(settings)
    exchange = await channel.get_exchange(task_exchange_name(settings), ensure=False)
    routing_key = task_queue_name(settings)

    async def build_and_publish(message: AbstractIncomingMessage) -> None:
        request = task_request(message)
        task_message = build_task_message(celery_app, task_name=TASK_NAME,
                                          task_id=request.task_id, kwargs=request.kwargs,
                                          event_key=request.event_key)
        await exchange.publish(task_message, routing_key=routing_key, mandatory=True,
                               timeout=PUBLISH_TIMEOUT_S)

    return build_and_publish


async def send_task_handler(settings: Settings, _channel: AbstractChannel) -> Handler:
    """Variant c: Celery builds and publishes the task message, in a thread."""
    celery_app = create_celery_app(settings)
    loop = asyncio.get_running_loop()

    async def send_in_thread(message: AbstractIncomingMessage) -> None:
        request = task_request(message)
        # The same reprs as build_task_message, so that both messages match.
        send = partial(celery_app.send_task, TASK_NAME, kwargs=request.kwargs,
                       task_id=request.task_id, argsrepr="()",
                       kwargsrepr=f"{{'eventKey': {request.event_key!r}}}")
        await loop.run_in_executor(None, send)

    return send_in_thread


class Variant(NamedTuple):
    label: str
    make_handler: Callable[[Settings, AbstractChannel], Awaitable[Handler]]


VARIANTS: dict[str, Variant] = {
    "a": Variant("a forward", forward_handler),
    "b": Variant("b build", build_handler),
    "c": Variant("c send_task", send_task_handler),
}


# -- the bridge: one child process per variant --------------------------------


@dataclass(frozen=True)
class Plan:
    """What one variant's bridge process needs to know; sent to it pickled."""

    letter: str
    service_name: str
    flood_count: int
    paced_count: int

    @property
    def label(self) -> str:
        return VARIANTS[self.letter].label

    def settings(self) -> Settings:
        return Settings(service_name=self.service_name,
                        events_exchange=f"{self.service_name}.events")


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def max_rss_kib() -> int:
    # Kibibytes on Linux (bytes on macOS).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@dataclass
class Phase:
    """The messages of one phase, as the bridge settles them."""

    expected: int
    handle_ms: list[float] = field(default_factory=list)
    failures: int = 0
    first_error: str = ""
    started_at: float = 0.0
    cpu_at_start_s: float = 0.0
    elapsed_s: float = 0.0
    cpu_used_s: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def begin(self) -> None:
        if self.started_at == 0.0:
            self.started_at, self.cpu_at_start_s = time.perf_counter(), cpu_s()

    def settle(self, handle_ms: float, error: BaseException | None) -> None:
        self.handle_ms.append(handle_ms)
        if error is not None:
            self.failures += 1
            self.first_error = self.first_error or f"{type(error).__name__}: {error}"
        if len(self.handle_ms) == self.expected:
            self.elapsed_s = time.perf_counter() - self.started_at
            self.cpu_used_s = cpu_s() - self.cpu_at_start_s
            self.done.set()

    def summary(self) -> dict[str, Any]:
        return {"settled": len(self.handle_ms), "failures": self.failures,
                "first_error": self.first_error, "elapsed_s": self.elapsed_s,
                "cpu_s": self.cpu_used_s, "handle_ms": self.handle_ms}


async def settle(message: AbstractIncomingMessage, handle: Handler, phase: Phase) -> None:
    """Handle one message, then ack it; a failure drops it (and is counted)."""
    phase.begin()
    started = time.perf_counter()
    try:
        await handle(message)
        await message.ack()
    except Exception as exc:  # counted and reported by the driver, never hidden
        await message.nack(requeue=False)
        phase.settle((time.perf_counter() - started) * 1000, exc)
        return
    phase.settle((time.perf_counter() - started) * 1000, None)


async def run_bridge(plan: Plan, pipe: Connection) -> None:
    """Consume the inbox with one variant; report each phase through `pipe`."""
    settings = plan.settings()
    connection = await aio_pika.connect(
        settings.rabbitmq_url, client_properties={"connection_name": plan.service_name})
    async with connection:
        publish_channel = await connection.channel(publisher_confirms=True,
                                                   on_return_raises=True)
        handle = await VARIANTS[plan.letter].make_handler(settings, publish_channel)
        consume_channel = await connection.channel()
        await consume_channel.set_qos(prefetch_count=PREFETCH)
        inbox = await consume_channel.get_queue(settings.queue_name("inbox"), ensure=False)
        flood, paced = Phase(plan.flood_count), Phase(plan.paced_count)
        rss_after_setup_kib = max_rss_kib()

        # The driver publishes the paced events only after the flood report,
        # so a message delivered once the flood is done belongs to the pace.
        async def on_message(message: AbstractIncomingMessage) -> None:
            await settle(message, handle, paced if flood.done.is_set() else flood)

        await inbox.consume(on_message)
        await asyncio.wait_for(flood.done.wait(), FLOOD_TIMEOUT_S)
        pipe.send(("flood", flood.summary()))
        await asyncio.wait_for(paced.done.wait(), paced_timeout_s(plan.paced_count))
        pipe.send(("paced", {**paced.summary(), "rss_after_setup_kib": rss_after_setup_kib,
                             "rss_peak_kib": max_rss_kib()}))


def bridge_main(plan: Plan, pipe: Connection) -> None:
    """Entry point of a bridge process: any failure goes back through `pipe`."""
    try:
        asyncio.run(run_bridge(plan, pipe))
    except Exception:
        pipe.send(("error", traceback.format_exc()))
    finally:
        pipe.close()


def paced_timeout_s(paced_count: int) -> float:
    return paced_count / PACED_RATE + 15.0


class BridgeProcess:
    """A variant's bridge in a child process, and the pipe it reports on."""

    def __init__(self, plan: Plan) -> None:
        context = multiprocessing.get_context("spawn")
        self._plan = plan
        self._pipe, self._child_end = context.Pipe(duplex=False)
        self._process = context.Process(target=bridge_main, args=(plan, self._child_end),
                                        name=f"bench-bridge-{plan.letter}")

    def __enter__(self) -> BridgeProcess:
        # Started with SIGINT ignored, which the child inherits: Ctrl-C then
        # stops this process alone, which ends the child and cleans up.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self._process.start()
        finally:
            signal.signal(signal.SIGINT, previous)
        self._child_end.close()
        return self

    def __exit__(self, exc_type: object, *_exc: object) -> None:
        self._process.join(timeout=JOIN_TIMEOUT_S if exc_type is None else 0)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=JOIN_TIMEOUT_S)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._pipe.close()

    async def report(self, kind: str, timeout_s: float) -> dict[str, Any]:
        """Wait for the bridge's report on a phase; raise `BenchError` if none comes."""
        deadline = time.monotonic() + timeout_s
        while not self._pipe.poll():
            if not self._process.is_alive() and not self._pipe.poll():
                raise BenchError(f"{self._plan.label}: the bridge exited "
                                 f"(status {self._process.exitcode}) before its {kind} report")
            if time.monotonic() > deadline:
                raise BenchError(f"{self._plan.label}: no {kind} report in {timeout_s:.0f}s")
            await asyncio.sleep(0.05)
        received, payload = self._pipe.recv()
        if received == "error":
            raise BenchError(f"{self._plan.label}: the bridge failed:\n{payload}")
        return payload


# -- the driver: topology, inbound events, arrivals ---------------------------


async def declare_topology(channel: AbstractChannel, settings: Settings) -> None:
    """The inbox, and the task exchange and queues, as the bridge declares them."""
    await channel.declare_queue(settings.queue_name("inbox"), durable=True)
    exchange = await channel.declare_exchange(
        task_exchange_name(settings), aio_pika.ExchangeType.DIRECT, durable=True)
    for name in task_queue_names(settings):
        queue = await channel.declare_queue(name, durable=True)
        await queue.bind(exchange, routing_key=name)


async def delete_topology(settings: Settings) -> None:
    """Delete everything `declare_topology` made (deleting is idempotent)."""
    connection = await aio_pika.connect(settings.rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        for name in [settings.queue_name("inbox"), *task_queue_names(settings)]:
            await channel.queue_delete(name)
        await channel.exchange_delete(task_exchange_name(settings))


async def exchange_exists(url: str, name: str) -> bool:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        try:
            await channel.get_exchange(name, ensure=True)
        except ChannelNotFoundEntity:
            return False
        return True


async def publish_flood(channel: AbstractChannel, plan: Plan) -> None:
    """Fill the inbox with the flood events, confirmed, before the bridge starts."""
    inbox = plan.settings().queue_name("inbox")
    for start in range(0, plan.flood_count, PUBLISH_BATCH):
        seqs = range(start, min(start + PUBLISH_BATCH, plan.flood_count))
        await asyncio.gather(*(channel.default_exchange.publish(
            inbound_message(plan.service_name, seq), routing_key=inbox, mandatory=True,
            timeout=PUBLISH_TIMEOUT_S) for seq in seqs))


async def publish_paced(channel: AbstractChannel, plan: Plan) -> dict[int, float]:
    """Publish the paced events at PACED_RATE; return when each publish began."""
    inbox = plan.settings().queue_name("inbox")
    sent_at: dict[int, float] = {}
    next_at = time.monotonic()
    for seq in range(plan.flood_count, plan.flood_count + plan.paced_count):
        message = inbound_message(plan.service_name, seq)
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        sent_at[seq] = time.monotonic()
        await channel.default_exchange.publish(message, routing_key=inbox, mandatory=True,
                                               timeout=PUBLISH_TIMEOUT_S)
        next_at += 1 / PACED_RATE
    return sent_at


async def take_queued(channel: AbstractChannel, queue_name: str) -> int:
    """How many task messages wait on a queue; they are purged."""
    queue = await channel.declare_queue(queue_name, passive=True)
    await queue.purge()
    return queue.declaration_result.message_count or 0


class Arrivals:
    """When each task message reached the task queue's consumer, by event."""

    def __init__(self, expected: int) -> None:
        self.at: dict[int, float] = {}
        self.strays = 0
        self._expected = expected
        self._complete = asyncio.Event()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        arrived_at = time.monotonic()
        seq = bench_seq(message.body)
        if seq is None or seq in self.at:
            self.strays += 1
            return
        self.at[seq] = arrived_at
        if len(self.at) == self._expected:
            self._complete.set()

    async def wait(self, timeout_s: float) -> None:
        # What is still missing then is reported by the caller.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._complete.wait(), timeout_s)


# -- one variant, end to end ---------------------------------------------------


@dataclass
class Result:
    """One variant's figures, and whatever went wrong with it."""

    label: str
    flood: dict[str, Any] = field(default_factory=dict)
    paced: dict[str, Any] = field(default_factory=dict)
    e2e_ms: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


async def run_variant(url: str, plan: Plan) -> Result:
    """Measure one variant; its queues and exchange are gone when this returns."""
    settings = plan.settings()
    result = Result(plan.label)
    try:
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            await declare_topology(channel, settings)
            await publish_flood(channel, plan)
            with BridgeProcess(plan) as bridge:
                await measure(channel, plan, bridge, result)
    except BenchError as exc:
        result.problems.append(str(exc))
    finally:
        await delete_topology(settings)
    return result


async def measure(channel: AbstractChannel, plan: Plan, bridge: BridgeProcess,
                  result: Result) -> None:
    """The two phases, with a check that every task message arrived."""
    task_queue = task_queue_name(plan.settings())
    result.flood = await bridge.report("flood", FLOOD_TIMEOUT_S)
    queued = await take_queued(channel, task_queue)
    check(result, "flood", result.flood, expected=plan.flood_count, arrived=queued)

    arrivals = Arrivals(plan.paced_count)
    queue = await channel.declare_queue(task_queue, passive=True)
    await queue.consume(arrivals.on_message, no_ack=True)
    sent_at = await publish_paced(channel, plan)
    result.paced = await bridge.report("paced", paced_timeout_s(plan.paced_count))
    await arrivals.wait(timeout_s=5.0)
    check(result, "paced", result.paced, expected=plan.paced_count, arrived=len(arrivals.at))
    if arrivals.strays:
        result.problems.append(f"{plan.label}: {arrivals.strays} unexpected task messages")
    result.e2e_ms = [(arrivals.at[seq] - sent_at[seq]) * 1000
                     for seq in sent_at if seq in arrivals.at]


def check(result: Result, phase: str, summary: dict[str, Any], *, expected: int,
          arrived: int) -> None:
    if summary["failures"]:
        result.problems.append(f"{result.label}, {phase}: {summary['failures']} of {expected} "
                               f"events failed in the bridge; first: {summary['first_error']}")
    if arrived != expected:
        result.problems.append(f"{result.label}, {phase}: {arrived} task messages arrived, "
                               f"{expected} expected")


# -- the report ------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def table_row(result: Result) -> str:
    if not result.paced:
        return f"{result.label:<13}  failed, see below"
    flood, paced = result.flood, result.paced
    settled = max(flood["settled"], 1)
    rss_peak_mib = paced["rss_peak_kib"] / 1024
    rss_delta_mib = (paced["rss_peak_kib"] - paced["rss_after_setup_kib"]) / 1024
    return (f"{result.label:<13}{flood['settled'] / flood['elapsed_s']:>8.0f}"
            f"{flood['cpu_s'] * 1000 / settled:>11.3f}"
            f"{percentile(result.e2e_ms, 0.50):>9.2f}{percentile(result.e2e_ms, 0.99):>9.2f}"
            f"{percentile(paced['handle_ms'], 0.50):>11.2f}"
            f"{percentile(paced['handle_ms'], 0.99):>11.2f}"
            f"{rss_peak_mib:>9.1f}{rss_delta_mib:>10.1f}")


def print_report(results: list[Result], flood_count: int, paced_count: int, url: str) -> None:
    executor_threads = min(32, (os.cpu_count() or 1) + 4)
    print(f"bridge_publish: per variant {flood_count} events flooded, then {paced_count} "
          f"paced at {PACED_RATE}/s; prefetch {PREFETCH}")
    print(f"  broker {redact_url(url)}; {os.cpu_count()} CPUs; c uses the default executor "
          f"({executor_threads} threads)")
    print(f"  Python {platform.python_version()}, celery {version('celery')}, "
          f"kombu {version('kombu')}, aio-pika {version('aio-pika')}")
    print("  memory: resource.getrusage ru_maxrss of each bridge process")
    print()
    print(f"{'variant':<13}{'msg/s':>8}{'cpu ms/msg':>11}{'e2e p50':>9}{'e2e p99':>9}"
          f"{'handle p50':>11}{'handle p99':>11}{'rss MiB':>9}{'rss Δ MiB':>10}")
    for result in results:
        print(table_row(result))
    print()


async def run_all(url: str, flood_count: int, paced_count: int) -> list[Result]:
    """Measure every variant, one after the other, under one run id."""
    run_id = f"bench-{secrets.token_hex(4)}"
    events_exchange_existed = await exchange_exists(url, CELERY_EVENTS_EXCHANGE)
    results = []
    try:
        for letter in VARIANTS:
            plan = Plan(letter, f"{run_id}-{letter}", flood_count, paced_count)
            results.append(await run_variant(url, plan))
    finally:
        if not events_exchange_existed:
            await delete_celery_events_exchange(url)
    return results


async def delete_celery_events_exchange(url: str) -> None:
    # Created by variant c's task-sent events; nobody else was using it.
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.exchange_delete(CELERY_EVENTS_EXCHANGE)


@click.command()
@click.option("--events", "flood_count", type=click.IntRange(min=1), default=2000,
              show_default=True, help="Events flooded through each variant.")
def main(flood_count: int) -> None:
    """Compare three ways to turn AMQP messages into Celery task messages."""
    paced_count = min(flood_count, PACED_MAX)
    url = Settings().rabbitmq_url
    try:
        results = asyncio.run(run_all(url, flood_count, paced_count))
    except KeyboardInterrupt:
        click.echo("bridge_publish: interrupted; its queues and exchanges were deleted",
                   err=True)
        sys.exit(130)

    print_report(results, flood_count, paced_count, url)
    problems = [problem for result in results for problem in result.problems]
    for problem in problems:
        click.echo(f"FAILED: {problem}", err=True)
    if problems:
        sys.exit(1)
    print(f"verified: every variant delivered all {flood_count} + {paced_count} task "
          "messages; its queues and exchange are deleted")


if __name__ == "__main__":
    main()
