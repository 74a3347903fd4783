"""The Celery application: RabbitMQ broker, Redis results, JSON only."""

from __future__ import annotations

from typing import Any

from celery import Celery, signals
from kombu import Exchange, Queue

from app.logs import configure_logging
from app.settings import Settings, load_settings
from handlers.routes import TASK_QUEUES


@signals.setup_logging.connect
def _use_our_logging(**_kwargs: Any) -> None:
    # Connected, this signal stops Celery from configuring logging itself:
    # its records then go through our formatter, which masks phone numbers
    # (Celery logs a failed task's arguments).
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)


def task_exchange_name(settings: Settings) -> str:
    """The direct exchange that carries task messages to their queues."""
    return f"{settings.service_name}.tasks"


def task_queue_names(settings: Settings) -> list[str]:
    return sorted({settings.queue_name(role) for role in TASK_QUEUES.values()})


def create_celery_app(settings: Settings) -> Celery:
    """A Celery app wired to this service's queues and key space."""
    app = Celery("task_service", broker=settings.rabbitmq_url, backend=settings.redis_url,
                 include=["handlers.calls", "handlers.reports", "handlers.email_report",
                          "handlers.cleanup", "handlers.forecast",
                          "handlers.report_regeneration"])
    exchange = Exchange(task_exchange_name(settings), type="direct", durable=True)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        result_expires=settings.state_ttl_s,
        result_backend_transport_options={"global_keyprefix": f"{settings.redis_prefix}celery:"},
        redis_socket_timeout=5.0,
        redis_socket_connect_timeout=5.0,
        # A task is acknowledged when it has finished, and handed back to the
        # broker if its worker process dies under it.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=8,
        # Task events on, so that Flower shows every task.
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_queues=[Queue(name, exchange, routing_key=name, durable=True)
                     for name in task_queue_names(settings)],
        task_routes={name: {"queue": settings.queue_name(role)}
                     for name, role in TASK_QUEUES.items()},
        task_default_queue=settings.queue_name("calls"),
        task_default_exchange=exchange.name,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"confirm_publish": True},
        worker_cancel_long_running_tasks_on_connection_loss=True,
        event_queue_expires=60.0,
        event_queue_ttl=10.0,
        enable_utc=True,
    )
    return app
