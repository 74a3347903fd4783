"""The `task-service` command line (CONTRACT 6).

Connection settings come from the environment or `.env`. An expected
failure (a bad setting, an unreachable broker) is one line on stderr and a
non-zero exit status, never a traceback.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import structlog

from app.errors import ConfigError, TaskServiceError, Unroutable, translate
from app.logs import configure_logging
from app.settings import Settings, load_settings

EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_NOT_FOUND = 3
EXIT_UNROUTABLE = 4
EXIT_INTERRUPTED = 130  # as a shell reports a command stopped by Ctrl-C

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, status: int = EXIT_FAILURE) -> None:
    click.echo(f"task-service: error: {message}", err=True)
    sys.exit(status)


def expected_errors(command: F) -> F:
    """Turn expected failures into one line on stderr and an exit status."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ConfigError as exc:
            fail(str(exc), EXIT_CONFIG)
        except TaskServiceError as exc:
            fail(str(exc))
        except Exception as exc:
            error = translate(exc)
            if error is exc:
                raise
            fail(str(error))

    return wrapper  # type: ignore[return-value]


def refuse_bad_broker_credentials(settings: Settings) -> None:
    """Stop with one line if RabbitMQ refuses us; an unreachable one is retried later.

    Celery treats a refused login as unrecoverable, but logs a traceback and
    exits 0, which a supervisor would take for a clean stop.
    """
    import kombu

    from app.errors import BrokerRefused
    from app.settings import redact_url

    connection = kombu.Connection(settings.rabbitmq_url, connect_timeout=5)
    try:
        connection.connect()
    except Exception as exc:  # only a refusal matters here
        error = translate(exc)
        if isinstance(error, BrokerRefused):
            url = redact_url(settings.rabbitmq_url)
            raise ConfigError(f"RABBITMQ_URL {url}: {error}") from None
    finally:
        connection.release()


def wait_for_redis(settings: Settings) -> None:
    """Block, with a visible back-off, until Redis answers a PING."""
    import redis

    from app.backoff import backoff_delays
    from app.settings import redact_url

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    for attempt, delay_s in backoff_delays():
        try:
            client.ping()
            client.close()
            return
        except redis.exceptions.RedisError as exc:
            structlog.get_logger(__name__).warning(
                f"Redis unreachable, retrying in {delay_s:.1f}s [{attempt}]",
                url=redact_url(settings.redis_url), error=str(translate(exc)))
        time.sleep(delay_s)


def quiet_on_closed_stdout() -> None:
    """Let `task-service status K | head -1` end quietly, as Unix tools do.

    Only for short commands that print: a long-running one must get
    BrokenPipeError from a dropped socket, not be killed by SIGPIPE.
    """
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)


def settings_and_logging() -> Settings:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """The task service: platform events in, Celery tasks run, completion events out.

    Settings come from the environment or a .env file: RABBITMQ_URL, REDIS_URL,
    EVENTS_EXCHANGE, REPORTS_DIR, SERVICE_NAME (prefix of queues and Redis keys).
    """
    # Libraries that log a failed connection attempt before raising it: the
    # one line we print for the raised error says it already.
    for noisy in ("aio_pika", "aiormq"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)


@main.command()
@click.option("--concurrency", "-c", type=int, default=None,
              help="Worker processes (default: one per CPU).")
@expected_errors
def run(concurrency: int | None) -> None:
    """Run the bridge and a worker together; Ctrl-C stops both cleanly."""
    from app.runner import run_service

    settings_and_logging()
    sys.exit(run_service(concurrency=concurrency))


@main.command()
@expected_errors
def bridge() -> None:
    """Run the event bridge alone: consume events, enqueue their tasks."""
    from app.bridge import run_bridge

    settings = settings_and_logging()
    sys.exit(asyncio.run(run_bridge(settings)))


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@expected_errors
def worker(celery_args: tuple[str, ...]) -> None:
    """Run a Celery worker alone; extra options go to `celery worker`.

    It consumes this service's task queues. For example:
    `task-service worker --concurrency 4 --loglevel DEBUG`.
    """
    from app.celery_app import create_celery_app, task_queue_names

    settings = settings_and_logging()
    app = create_celery_app(settings)
    argv = ["worker", "--queues", ",".join(task_queue_names(settings)),
            "--loglevel", settings.log_level]
    if not any(arg in ("-n", "--hostname") or arg.startswith("--hostname=")
               for arg in celery_args):
        # Node names must be unique; several workers may share one host.
        argv += ["--hostname", f"{settings.service_name}-{os.getpid()}@%h"]
    refuse_bad_broker_credentials(settings)
    wait_for_redis(settings)
    app.worker_main(argv=[*argv, *celery_args])


@main.command()
@click.argument("routing_key")
@click.argument("body")
@click.option("--message-id", default=None, help="AMQP message_id (used as the event key).")
@expected_errors
def publish(routing_key: str, body: str, message_id: str | None) -> None:
    """Publish one event: ROUTING_KEY and its JSON BODY (`-` reads stdin)."""
    from app.publisher import ConfirmedPublisher

    settings = load_settings()
    text = sys.stdin.read() if body == "-" else body
    try:
        json.loads(text)
    except ValueError as exc:
        fail(f"BODY is not valid JSON: {exc}")
    properties: dict[str, Any] = {"content_type": "application/json", "delivery_mode": 2,
                                  "message_id": message_id}
    try:
        with ConfirmedPublisher(settings.rabbitmq_url, settings.publish_timeout_s) as publisher:
            publisher.publish(exchange=settings.events_exchange, routing_key=routing_key,
                              body=text.encode(), properties=properties)
    except Unroutable as exc:
        fail(f"unroutable: {exc}", EXIT_UNROUTABLE)
    click.echo(f"published {routing_key} to {settings.events_exchange} (confirmed)")


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--speed", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Keep the recorded timing scaled by this factor (2 = twice as fast); "
                   "0 = as fast as the broker confirms.")
@click.option("--rate", "rate_per_s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="At most this many messages per second.")
@click.option("--filter", "patterns", multiple=True, metavar="PATTERN",
              help="Only messages whose routing key matches this topic pattern "
                   "(`*` one word, `#` any words); repeat for more.")
@click.option("--exchange", default=None, help="Publish here instead of EVENTS_EXCHANGE.")
@click.option("--dry-run", is_flag=True,
              help="List what would be published, without connecting or waiting.")
@click.option("--strict", is_flag=True, help="Stop at the first malformed line.")
@expected_errors
def replay(file: Path, speed: float, rate_per_s: float | None, patterns: tuple[str, ...],
           exchange: str | None, dry_run: bool, strict: bool) -> None:
    """Publish a recording (JSON Lines, one message a line) with confirms.

    Each message keeps its routing key, properties and exact body bytes. A
    malformed line is reported with its number and skipped (or, with
    --strict, stops the replay). Exit status 4 if any message was unroutable.
    """
    from app.recording import RecordingError, read_recording
    from app.replay import select

    settings = load_settings()
    errors: list[RecordingError] = []
    recorded = list(read_recording(file, strict=strict, errors=errors))
    for error in errors:
        click.echo(f"task-service: skipped {file}:{error.line_number}: {error}", err=True)
    messages = list(select(recorded, patterns))
    target = exchange or settings.events_exchange
    skipped = f"{len(errors)} malformed lines skipped"
    if patterns:
        skipped += f", {len(recorded) - len(messages)} filtered out"
    if dry_run:
        _list_replay(messages)
        click.echo(f"dry run: {len(messages)} messages would be published to {target} "
                   f"({skipped}); nothing was sent")
        return
    _publish_replay(settings, file, messages, target, skipped, speed=speed,
                    rate_per_s=rate_per_s or 0.0)


def _list_replay(messages: list[Any]) -> None:
    for message in messages:
        click.echo(f"{message.t:12.3f}  {message.routing_key}  {len(message.body)} bytes")


def _publish_replay(settings: Settings, file: Path, messages: list[Any], target: str,
                    skipped: str, *, speed: float, rate_per_s: float) -> None:
    from app.progress import ReplayProgress
    from app.publisher import ConfirmedPublisher
    from app.replay import Pacer, ReplayCounts
    from app.replay import replay as replay_messages

    counts = ReplayCounts()
    started = time.monotonic()
    interrupted = False
    try:
        with ConfirmedPublisher(settings.rabbitmq_url, settings.publish_timeout_s) as publisher, \
                ReplayProgress(total=len(messages)) as progress:
            replay_messages(publisher, target, messages, counts=counts,
                            pacer=Pacer(speed=speed, rate_per_s=rate_per_s),
                            on_progress=progress.update)
    except KeyboardInterrupt:
        interrupted = True
    elapsed_s = time.monotonic() - started
    click.echo(f"{'interrupted' if interrupted else 'replayed'} {file.name} to {target}: "
               f"{counts.confirmed} confirmed, {counts.unroutable} unroutable, {skipped} "
               f"in {elapsed_s:.1f}s ({counts.sent / max(elapsed_s, 1e-6):.0f} msg/s)")
    if interrupted:
        sys.exit(EXIT_INTERRUPTED)
    if counts.unroutable:
        sys.exit(EXIT_UNROUTABLE)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, writable=True, path_type=Path))
@click.option("--bind", "bindings", multiple=True, default=("#",), show_default=True,
              metavar="PATTERN", help="Topic pattern of the messages to capture; repeat for more.")
@click.option("--count", type=click.IntRange(min=1), default=None,
              help="Stop after this many messages.")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop after this many seconds.")
@click.option("--exchange", default=None, help="Record this exchange instead of EVENTS_EXCHANGE.")
@expected_errors
def record(file: Path, bindings: tuple[str, ...], count: int | None, seconds: float | None,
           exchange: str | None) -> None:
    """Capture messages from the events exchange into a recording FILE.

    A private queue, deleted when the command ends, is bound with each
    --bind pattern. Recording stops after --count messages, after --seconds,
    or on Ctrl-C; the file holds complete lines however it stops.
    """
    from app.progress import RecordProgress
    from app.recorder import Recorder

    settings = settings_and_logging()
    source = exchange or settings.events_exchange
    stop = _stop_on_signals()
    started = time.monotonic()
    # The file is opened once the tap is bound: a broker that cannot be
    # reached leaves an existing file as it was.
    with Recorder(settings.rabbitmq_url, source, bindings, queue_prefix=settings.service_name,
                  timeout_s=settings.publish_timeout_s) as recorder, \
            file.open("w", encoding="utf-8", newline="\n") as out:
        click.echo(f"recording {source} ({', '.join(bindings)}) into {file}; Ctrl-C stops",
                   err=True)
        with RecordProgress() as progress:
            counts = recorder.record(out, count=count, seconds=seconds,
                                     stop_requested=stop.is_set, on_message=progress.update)
    why = {"count": "count reached", "seconds": "time is up", "interrupt": "interrupted"}
    click.echo(f"recorded {counts.messages} messages from {source} into {file} in "
               f"{time.monotonic() - started:.1f}s ({why[counts.stopped_by]})")


def _stop_on_signals() -> threading.Event:
    """An event set by Ctrl-C or SIGTERM, instead of an exception mid-line."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    return stop


@main.command()
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@expected_errors
def status(key: str, as_json: bool) -> None:
    """The state and history of an event KEY or a Celery task id (exit 3: not found)."""
    import redis

    from app.state import StateStore

    quiet_on_closed_stdout()
    settings = load_settings()
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5,
                                  socket_connect_timeout=5)
    try:
        record = StateStore(client, settings.redis_prefix, settings.state_ttl_s).lookup(key)
    except Exception as exc:
        raise translate(exc) from None
    if record is None:
        if as_json:
            click.echo(json.dumps({"eventKey": key, "state": "not_found"}))
        fail(f"no event key or task id {key!r} is known", EXIT_NOT_FOUND)
        return
    if as_json:
        click.echo(json.dumps(record, indent=2))
        return
    click.echo(f"{record['eventKey']}: {record['state']}")
    for name in ("eventType", "traceId", "seq", "taskIds", "attempts", "duplicates",
                 "lastError", "replays", "replayedAs"):
        if record.get(name) not in (None, "", []):
            click.echo(f"  {name}: {record[name]}")
    click.echo("  history:")
    for entry in record["history"]:
        extra = ", ".join(f"{k}={v}" for k, v in entry.items() if k not in ("at", "state"))
        click.echo(f"    {entry['at']}  {entry['state']}" + (f"  ({extra})" if extra else ""))


@main.group()
def parked() -> None:
    """Inspect, re-publish or purge parked messages."""


@parked.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@expected_errors
def parked_list(as_json: bool) -> None:
    """List parked messages with their reasons; they stay parked."""
    from app.parked_queue import list_parked

    quiet_on_closed_stdout()

    settings = load_settings()
    entries = asyncio.run(list_parked(settings))
    for entry in entries:
        if as_json:
            click.echo(json.dumps(entry))
        else:
            click.echo(f"{entry['parkedAt']}  {entry['reason']:<24} {entry['routingKey']:<28} "
                       f"{entry['detail'][:100]}")
    if not as_json:
        click.echo(f"{len(entries)} parked message(s) in {settings.queue_name('parked')}")


@parked.command("replay")
@click.option("--reason", default=None, help="Only messages parked for this reason.")
@click.option("--key", default=None, help="Only the message with this event key.")
@expected_errors
def parked_replay(reason: str | None, key: str | None) -> None:
    """Re-publish parked messages to their original routing key, as they were."""
    from app.parked_queue import replay_parked

    settings = load_settings()
    moved, kept = asyncio.run(replay_parked(settings, reason=reason, key=key))
    click.echo(f"re-published {moved} parked message(s); {kept} left parked")


@parked.command("purge")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@expected_errors
def parked_purge(yes: bool) -> None:
    """Delete every parked message."""
    from app.parked_queue import purge_parked

    settings = load_settings()
    if not yes:
        click.confirm(f"Delete every message in {settings.queue_name('parked')}?", abort=True)
    count = asyncio.run(purge_parked(settings))
    click.echo(f"purged {count} parked message(s)")


if __name__ == "__main__":
    main()
