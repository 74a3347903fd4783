"""The service's exceptions: one base, branched by what the caller does next.

- `ParkMessage`: the message can never be processed as it is; park it.
- `TransientError`: the world is briefly unavailable; retry later.
- `PermanentError`: the work cannot succeed; give up and report failure.
- `ConfigError`: a setting is wrong; stop at start-up with one line.

Errors of aio-pika, aiormq, redis and kombu are translated in `translate()`,
the one place where they enter our code.
"""

from __future__ import annotations

import asyncio
import re
import socket

import aiormq.exceptions
import amqp.exceptions
import kombu.exceptions
import redis.exceptions


class TaskServiceError(Exception):
    """Base of every error this service raises on purpose."""


class ConfigError(TaskServiceError):
    """A setting is missing or wrong; the message names it."""


class ParkMessage(TaskServiceError):
    """The inbound message cannot be processed; park it with this reason.

    `reason` is a short kind (`invalid_json`, `schema`, ...); `detail` is
    human-readable and goes into the parked message's headers.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class TransientError(TaskServiceError):
    """A dependency is unavailable or slow; the same work may succeed later."""


class BrokerUnavailable(TransientError):
    """RabbitMQ cannot be reached, or did not confirm in time."""


class StateUnavailable(TransientError):
    """Redis cannot be reached, or did not answer in time."""


class PermanentError(TaskServiceError):
    """The work cannot succeed however often it is tried."""


class BrokerRefused(TaskServiceError):
    """RabbitMQ answered, but refused the operation (a 4xx channel error)."""


class Unroutable(TaskServiceError):
    """The broker returned a mandatory message: nothing is bound for it."""


_BROKER_DOWN: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ConnectionClosed,
    aiormq.exceptions.ChannelInvalidStateError,
    amqp.exceptions.RecoverableConnectionError,
    amqp.exceptions.ConnectionError,
    kombu.exceptions.OperationalError,
    ConnectionError,
    socket.gaierror,
)
# Refusals: the broker is up but says no: a channel error (404, 406, 403),
# or a connection it will not allow (bad credentials, unknown vhost).
_BROKER_REFUSALS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.ChannelClosed,
    aiormq.exceptions.ProbableAuthenticationError,
    aiormq.exceptions.ConnectionNotAllowed,
    amqp.exceptions.ChannelError,
    amqp.exceptions.AccessRefused,
    amqp.exceptions.NotAllowed,
)
_REDIS_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
)


def translate(exc: BaseException) -> BaseException:
    """Map a library error to ours; return anything else unchanged.

    The message never includes a URL, so no password can leak through it.
    """
    if isinstance(exc, TaskServiceError | BrokenPipeError):
        return exc
    if isinstance(exc, _REDIS_ERRORS):
        return StateUnavailable(f"Redis unavailable: {type(exc).__name__}: {_first_line(exc)}")
    if isinstance(exc, _BROKER_REFUSALS):
        return BrokerRefused(f"RabbitMQ refused: {type(exc).__name__}: {_first_line(exc)}")
    if isinstance(exc, _BROKER_DOWN):
        return BrokerUnavailable(f"RabbitMQ unavailable: {type(exc).__name__}: {_first_line(exc)}")
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return TransientError("timed out")
    return exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return redact_credentials(text[0]) if text else "no detail"


def redact_credentials(text: str) -> str:
    # Some libraries put the connection URL in their messages.
    return re.sub(r"(\w+://[^:/@\s]*:)[^@\s]+@", r"\1***@", text)
