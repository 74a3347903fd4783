"""The base of every task that acts on a platform event.

A handler task only does its work. Around it, this class:

- records the task's state transitions for the event key (CONTRACT 3);
- skips a redelivered task whose work already succeeded, without a second
  completion event;
- retries transient errors with Celery's own retry machinery, exponential
  back-off with jitter, counting attempts itself;
- publishes the completion event when the task succeeds or finally fails.

Tasks are called as `task(event=..., meta=...)`: `event` is the validated
event in camelCase, `meta` holds eventKey, eventType, routingKey, traceId and
seq. A task chained after another (handlers/routes.py) is also given the
result of the one before it, positionally, as Celery's chains do; its
function takes it as a third argument: `run(event, meta, upstream_result)`.
When a task fails for good, the tasks chained after it never run; they are
recorded as failed (`app.chains`), so that the event still reaches a final
state.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import celery
import redis
import structlog

from app.chains import abandon_rest_of_chain
from app.completion import CompletionPublisher, completion_event_id
from app.errors import (
    PermanentError,
    TaskServiceError,
    TransientError,
    Unroutable,
    translate,
)
from app.faults import crash_if_marked, fail_if_marked, parse_faults
from app.parking import parking_headers
from app.publisher import ConfirmedPublisher
from app.settings import Settings, load_settings
from app.state import StateStore
from schemas.completion import CompletionEvent, TaskError

log = structlog.get_logger(__name__)

RETRY_BASE_S = 1.0
RETRY_MAX_S = 60.0


class NotReady(TaskServiceError):
    """The task must wait for something else first; run it again shortly.

    Waiting this way frees the worker process (unlike sleeping in the task)
    and does not count as an attempt.
    """

    def __init__(self, reason: str, countdown_s: float = 1.0) -> None:
        super().__init__(reason)
        self.countdown_s = countdown_s


@dataclass
class WorkerResources:
    """What a worker process opens once and reuses for every task."""

    settings: Settings
    redis: redis.Redis
    state: StateStore
    publisher: ConfirmedPublisher
    completions: CompletionPublisher
    faults: dict[str, bytes]


_resources: WorkerResources | None = None
_resources_pid: int | None = None


def worker_resources() -> WorkerResources:
    """This process's connections, opened on first use (after the fork)."""
    global _resources, _resources_pid
    if _resources is None or _resources_pid != os.getpid():
        settings = load_settings()
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=5,
                                      socket_connect_timeout=5, health_check_interval=30)
        publisher = ConfirmedPublisher(settings.rabbitmq_url, settings.publish_timeout_s)
        _resources = WorkerResources(
            settings=settings,
            redis=client,
            state=StateStore(client, settings.redis_prefix, settings.state_ttl_s),
            publisher=publisher,
            completions=CompletionPublisher(publisher, settings.events_exchange),
            faults=parse_faults(settings.fault_injection),
        )
        _resources_pid = os.getpid()
    return _resources


def retry_delay_s(attempt: int) -> float:
    """Exponential back-off with full jitter: up to 1, 2, 4 ... 60 seconds."""
    return random.uniform(0, min(RETRY_MAX_S, RETRY_BASE_S * 2 ** (attempt - 1)))


class EventTask(celery.Task):
    """Celery task base for event handlers; see the module docstring."""

    abstract = True
    typing = False
    # Attempts are counted by `__call__` against TASK_MAX_ATTEMPTS, and
    # deferrals (NotReady) are not attempts, so Celery's own cap is off.
    max_retries = None

    def __call__(self, *upstream: Any, event: dict[str, Any], meta: dict[str, Any]) -> Any:
        resources = worker_resources()
        key = meta["eventKey"]
        attempt = self.request.retries + 1 - int(meta.get("deferrals", 0))
        bound = log.bind(event_key=key, task=self.name, task_id=self.request.id,
                         trace_id=meta.get("traceId"), attempt=attempt)

        try:
            previous, crashes = resources.state.task_started(
                key=key, task_id=self.request.id, task_name=self.name, attempt=attempt)
        except TransientError as exc:
            return self._retry_or_fail(resources, bound, event, meta, exc, attempt, 0.0)
        if previous in ("succeeded", "failed"):
            bound.info("task already finished, not running it again", previous_state=previous)
            return resources.state.task_result(self.request.id)
        if crashes >= resources.settings.max_deliveries:
            error = PermanentError(f"a worker process died running it {crashes} times")
            self._park(resources, bound, event, meta, "max_deliveries", str(error))
            self._finish(resources, bound, meta, attempt, 0.0, error=error)
            return None

        body = json.dumps(event).encode() if resources.faults else b""
        crash_if_marked(resources.faults, "worker_exit_on", body)
        started = time.monotonic()
        try:
            fail_if_marked(resources.faults, "worker_transient_on", body)
            result = self.run(event, meta, *upstream)
        except NotReady as exc:
            bound.info("task not ready, deferring", reason=str(exc))
            with contextlib.suppress(TransientError):
                resources.state.task_deferred(key=key, task_id=self.request.id,
                                              reason=str(exc))
            deferred = {**meta, "deferrals": int(meta.get("deferrals", 0)) + 1}
            # Args given too, as they came: with kwargs alone, Celery re-binds a
            # chained task's upstream result to the first parameter of `run`.
            raise self.retry(args=tuple(self.request.args or ()),
                             kwargs={"event": event, "meta": deferred},
                             countdown=exc.countdown_s, max_retries=None) from None
        except Exception as exc:  # every error is classified here, none is lost
            translated = translate(exc)
            duration_ms = (time.monotonic() - started) * 1000
            if isinstance(translated, TransientError):
                return self._retry_or_fail(resources, bound, event, meta, translated, attempt,
                                           duration_ms)
            self._finish(resources, bound, meta, attempt, duration_ms, error=translated)
            raise

        duration_ms = (time.monotonic() - started) * 1000
        try:
            self._finish(resources, bound, meta, attempt, duration_ms, result=result)
        except TransientError as exc:
            return self._retry_or_fail(resources, bound, event, meta, exc, attempt, duration_ms)
        return result

    def _retry_or_fail(
        self, resources: WorkerResources, bound: Any, event: dict[str, Any],
        meta: dict[str, Any], error: BaseException, attempt: int, duration_ms: float,
    ) -> Any:
        max_attempts = resources.settings.task_max_attempts
        if attempt < max_attempts:
            delay_s = retry_delay_s(attempt)
            bound.warning(f"transient error, retrying [{attempt}/{max_attempts}]",
                          error=str(error), retry_in_s=round(delay_s, 2))
            try:
                resources.state.task_retrying(key=meta["eventKey"], task_id=self.request.id,
                                              attempt=attempt, error=str(error))
            except TransientError:
                bound.warning("could not record the retry; Redis unavailable")
            raise self.retry(exc=error, countdown=delay_s, max_retries=None)
        final = PermanentError(f"gave up after {attempt} attempts: {error}")
        self._park(resources, bound, event, meta, "max_attempts", str(final))
        self._finish(resources, bound, meta, attempt, duration_ms, error=final)
        raise error

    def _park(self, resources: WorkerResources, bound: Any, event: dict[str, Any],
              meta: dict[str, Any], reason: str, detail: str) -> None:
        """Put the event in the parking queue, so an operator can replay it.

        The worker has the validated event, not the original bytes: the
        parked copy is the event in camelCase, with the event key as its
        message id so that a replay keeps the key.
        """
        headers = parking_headers(reason=reason, detail=detail,
                                  exchange=resources.settings.events_exchange,
                                  routing_key=meta["routingKey"], event_key=meta["eventKey"],
                                  message_id=meta["eventKey"])
        try:
            resources.publisher.publish(
                exchange="", routing_key=resources.settings.queue_name("parked"),
                body=json.dumps(event, separators=(",", ":")).encode(), declare_topic=False,
                properties={"content_type": "application/json", "delivery_mode": 2,
                            "message_id": meta["eventKey"], "headers": headers})
        except Exception as exc:  # the failure is still recorded and reported
            bound.error("could not park the event", reason=reason, error=str(translate(exc)))
            return
        bound.error("event parked", reason=reason, detail=detail)

    def _finish(
        self, resources: WorkerResources, bound: Any, meta: dict[str, Any], attempt: int,
        duration_ms: float, *, result: Any = None, error: BaseException | None = None,
    ) -> None:
        """Publish the completion event, then record the outcome.

        In this order, a crash in between repeats the completion event
        rather than losing it: consumers de-duplicate by sourceEventKey.
        """
        succeeded = error is None
        outcome: Literal["task.succeeded", "task.failed"] = (
            "task.succeeded" if succeeded else "task.failed")
        completion = CompletionEvent(
            event_type=outcome,
            event_id=completion_event_id(self.request.id, outcome),
            timestamp=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            trace_id=meta.get("traceId"),
            task_id=self.request.id,
            task_name=self.name,
            source_event_type=meta["eventType"],
            source_event_key=meta["eventKey"],
            attempts=attempt,
            duration_ms=round(duration_ms, 3),
            result=result if succeeded and isinstance(result, dict) else
            ({"value": result} if succeeded else None),
            error=None if succeeded else TaskError(type=type(error).__name__,
                                                   message=str(error)[:1000]),
        )
        try:
            resources.completions.publish(completion)
        except Unroutable:
            total = resources.completions.unroutable_total
            # Said once, then every 100th: a deployment where nothing listens
            # for completion events should not drown its logs in them.
            report = bound.warning if total == 1 or total % 100 == 0 else bound.debug
            report("completion event unroutable; counted, not delivered",
                   routing_key=completion.routing_key, unroutable_total=total)
        state = resources.state.task_finished(
            key=meta["eventKey"], task_id=self.request.id, succeeded=succeeded,
            attempt=attempt, error="" if succeeded else f"{type(error).__name__}: {error}",
            result=completion.result,
        )
        if succeeded:
            bound.info("task succeeded", duration_ms=round(duration_ms, 1), event_state=state)
        else:
            bound.error("task failed", error=str(error), duration_ms=round(duration_ms, 1),
                        event_state=state)
            if self.request.chain:
                abandon_rest_of_chain(resources, self.request.chain, meta, failed_task=self.name)
