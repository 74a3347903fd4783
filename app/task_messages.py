"""Celery task messages, built by Celery and published by aio-pika.

The bridge must not block its event loop, and `apply_async` is blocking
(py-amqp). So Celery's own `as_task_v2` builds the message (headers,
properties, body: the exact protocol-2 format a worker expects) and the
bridge publishes it asynchronously with confirms. `bench/bridge_publish.py`
measures this against `apply_async` offloaded to a thread.

A chain (handlers/routes.py) travels inside the message of its first task,
in the protocol's own `chain` field: when a task succeeds, the worker
publishes the next one with the task id planned for it here.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
from celery import Celery
from kombu.serialization import dumps

from handlers.routes import chains_of

# Task ids are derived from (service, event key, task name): the same event
# produces the same task ids however often it is delivered, so a repeat is
# visible to the worker as a task that has already run; two services sharing
# a broker (and one Flower) give the same event different task ids.
_TASK_ID_NAMESPACE = uuid.UUID("6f1f3b8e-2c1e-4b7a-9d55-0c3f4a5e7b21")


def task_id_for(service: str, event_key: str, task_name: str, generation: int = 0) -> str:
    """The task id of `task_name` for an event, in the service named `service`;
    a parked event re-published by `parked replay` starts a new generation, and
    so gets new task ids."""
    name = (f"{service}\x00{event_key}\x00{task_name}"
            + (f"\x00{generation}" if generation else ""))
    return str(uuid.uuid5(_TASK_ID_NAMESPACE, name))


@dataclass(frozen=True)
class PlannedTask:
    """One task an event becomes: its name and its deterministic id."""

    name: str
    task_id: str


def plan_tasks(service: str, event_type: str, event_key: str,
               generation: int = 0) -> list[list[PlannedTask]]:
    """The chains of tasks an event becomes (a lone task is a chain of one)."""
    return [[PlannedTask(name, task_id_for(service, event_key, name, generation))
             for name in chain]
            for chain in chains_of(event_type)]


def _kwargs_repr(event_key: str) -> str:
    # What Flower shows for the task: the event key, never the payload
    # (which holds phone numbers).
    return f"{{'eventKey': {event_key!r}}}"


def chained_signature(task: PlannedTask, kwargs: dict[str, Any], event_key: str) -> dict[str, Any]:
    """A chained task as the protocol carries it: a signature, as a dict.

    Not immutable: the worker calls it as `name(previous result, **kwargs)`.
    """
    return {
        "task": task.name, "args": [], "kwargs": kwargs, "immutable": False,
        "subtask_type": None,
        "options": {"task_id": task.task_id, "kwargsrepr": _kwargs_repr(event_key),
                    "argsrepr": "(<result of the previous task>,)"},
    }


def build_task_message(
    celery_app: Celery, *, task_name: str, task_id: str, kwargs: dict[str, Any], event_key: str,
    then: Sequence[PlannedTask] = (),
) -> aio_pika.Message:
    """An aio-pika message that a Celery worker runs as `task_name(**kwargs)`.

    `then` are the tasks chained after it, in the order they run; each gets
    the same kwargs.
    """
    # The protocol keeps a chain in reverse: the worker pops the next task
    # from the end.
    chain = [chained_signature(task, kwargs, event_key) for task in reversed(then)]
    message = celery_app.amqp.as_task_v2(
        task_id, task_name, args=(), kwargs=kwargs,
        argsrepr="()", kwargsrepr=_kwargs_repr(event_key),
        origin="task-service-bridge", chain=chain or None,
    )
    content_type, content_encoding, body = dumps(message.body, serializer="json")
    return aio_pika.Message(
        body=body.encode(content_encoding) if isinstance(body, str) else body,
        headers=message.headers,
        content_type=content_type,
        content_encoding=content_encoding,
        correlation_id=task_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )
