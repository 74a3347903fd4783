"""A blocking publisher with confirms and the mandatory flag (py-amqp).

Used for completion events (in worker processes) and by the command line
(`publish`, `replay`, `parked replay`). Not aio-pika: aiormq gives every
message without a `message_id` a random one, and the message id is the
first source of an event key (CONTRACT 1). A replayed recording must reach
the broker with exactly the properties it was recorded with.

Publishing is one message at a time: each call waits for the broker's
confirm, and a basic.return that arrives before that confirm belongs to the
same message, so unroutable messages are told apart without ids.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import amqp
import kombu

from app.errors import BrokerUnavailable, TaskServiceError, Unroutable, translate

# AMQP property names as py-amqp spells them; `headers` is the usual name.
_PROPERTY_RENAMES = {"headers": "application_headers"}


class ConfirmedPublisher:
    """One connection, one channel in confirm mode; reconnects after an error."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self._url = url
        self._timeout_s = timeout_s
        self._connection: kombu.Connection | None = None
        self._channel: Any = None
        self._declared: set[str] = set()
        self._returned = False
        self._lock = threading.Lock()
        self.unroutable_total = 0

    def publish(self, *, exchange: str, routing_key: str, body: bytes,
                properties: dict[str, Any] | None = None, declare_topic: bool = True) -> None:
        """Publish and wait for the confirm; raise `Unroutable` if it was returned."""
        amqp_properties = {_PROPERTY_RENAMES.get(name, name): value
                           for name, value in (properties or {}).items() if value is not None}
        with self._lock:
            try:
                channel = self._ensure_channel()
                if declare_topic and exchange and exchange not in self._declared:
                    channel.exchange_declare(exchange, "topic", durable=True, auto_delete=False)
                    self._declared.add(exchange)
                self._returned = False
                channel.basic_publish(amqp.Message(body, **amqp_properties), exchange=exchange,
                                      routing_key=routing_key, mandatory=True,
                                      confirm_timeout=self._timeout_s)
            except Exception as exc:
                self._reset()
                error = translate(exc)
                if error is exc:
                    raise
                raise error from exc
            if self._returned:
                self.unroutable_total += 1
                raise Unroutable(f"no queue is bound for {routing_key!r} on {exchange!r}")

    def _ensure_channel(self) -> Any:
        if self._channel is not None:
            return self._channel
        connection = kombu.Connection(self._url, connect_timeout=self._timeout_s,
                                      transport_options={"confirm_publish": True})
        try:
            connection.ensure_connection(max_retries=1)
        except Exception as exc:
            connection.release()
            error = translate(exc)
            if isinstance(error, TaskServiceError):
                raise error from None
            raise BrokerUnavailable(f"RabbitMQ unavailable: {type(exc).__name__}: {exc}") from None
        channel = connection.default_channel
        channel.events["basic_return"].add(self._on_return)  # type: ignore[attr-defined]
        self._connection, self._channel = connection, channel
        return channel

    def _on_return(self, *_args: Any) -> None:
        self._returned = True

    def _reset(self) -> None:
        if self._connection is not None:
            # A broken connection may fail to close; it is dropped either way.
            with contextlib.suppress(Exception):
                self._connection.release()
        self._connection, self._channel = None, None
        self._declared.clear()

    def close(self) -> None:
        with self._lock:
            self._reset()

    def __enter__(self) -> ConfirmedPublisher:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
