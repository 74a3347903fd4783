"""Celery task messages, built by Celery and published by aio-pika.

The bridge must not block its event loop, and `apply_async` is blocking
(py-amqp). So Celery's own `as_task_v2` builds the message (headers,
properties, body: the exact protocol-2 format a worker expects) and the
bridge publishes it asynchronously with confirms. `bench/bridge_publish.py`
measures this against `apply_async` offloaded to a thread.
"""

from __future__ import annotations

import uuid
from typing import Any

import aio_pika
from celery import Celery
from kombu.serialization import dumps

# Task ids are derived from (event key, task name): the same event produces
# the same task ids however often it is delivered, so a repeat is visible
# to the worker as a task that has already run.
_TASK_ID_NAMESPACE = uuid.UUID("6f1f3b8e-2c1e-4b7a-9d55-0c3f4a5e7b21")


def task_id_for(event_key: str, task_name: str, generation: int = 0) -> str:
    """The task id of `task_name` for an event; a parked event re-published by
    `parked replay` starts a new generation, and so gets new task ids."""
    name = f"{event_key}\x00{task_name}" + (f"\x00{generation}" if generation else "")
    return str(uuid.uuid5(_TASK_ID_NAMESPACE, name))


def build_task_message(
    celery_app: Celery, *, task_name: str, task_id: str, kwargs: dict[str, Any], event_key: str,
) -> aio_pika.Message:
    """An aio-pika message that a Celery worker runs as `task_name(**kwargs)`."""
    message = celery_app.amqp.as_task_v2(
        task_id, task_name, args=(), kwargs=kwargs,
        # What Flower shows for the task: the event key, never the payload
        # (which holds phone numbers).
        argsrepr="()", kwargsrepr=f"{{'eventKey': {event_key!r}}}",
        origin="task-service-bridge",
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
