"""The service's exceptions: one base, branched by what the caller does next.

- `ParkMessage`: the message can never be processed as it is; park it.
- `TransientError`: the world is briefly unavailable; retry later.
- `PermanentError`: the work cannot succeed; give up and report failure.
- `ConfigError`: a setting is wrong; stop at start-up with one line.

Errors of aio-pika, aiormq, redis and kombu are translated in `translate()`,
the one place where they enter our code; smtplib's in `translate_smtp()`.
"""

from __future__ import annotations

import asyncio
import re
import smtplib
import socket
import ssl

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


class MailUnavailable(TransientError):
    """The SMTP server cannot be reached, or said to try again later (4xx)."""


class MailRejected(PermanentError):
    """The SMTP server refused for good (5xx), or its TLS certificate is not trusted."""


class UpstreamFailed(PermanentError):
    """A chained task that never ran, because a task before it failed."""


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


def translate_smtp(exc: BaseException) -> BaseException:
    """Map an smtplib or socket error met while sending mail to ours.

    SMTP's own rule decides: a 5xx reply is final; a 4xx reply, or no
    connection at all, is worth another attempt. Called where smtplib is used, before
    `translate()` could take a refused connection for RabbitMQ's.
    """
    if isinstance(exc, TaskServiceError):
        return exc
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        kind = MailRejected if all(500 <= code < 600 for code in codes) else MailUnavailable
        return kind(f"SMTP refused every recipient: {sorted(set(codes))}")
    if isinstance(exc, smtplib.SMTPResponseException):
        reply = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) \
            else str(exc.smtp_error)
        kind = MailRejected if 500 <= exc.smtp_code < 600 else MailUnavailable
        return kind(f"SMTP {exc.smtp_code}: {_first_line(Exception(reply))}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return MailRejected(f"SMTP server's certificate not trusted: {_first_line(exc)}")
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return MailUnavailable(f"SMTP unavailable: {type(exc).__name__}: {_first_line(exc)}")
    # Checked before OSError, which every smtplib error is.
    if isinstance(exc, smtplib.SMTPException):
        return MailRejected(f"SMTP: {type(exc).__name__}: {_first_line(exc)}")
    if isinstance(exc, OSError):  # refused, unreachable, timed out, reset
        return MailUnavailable(f"SMTP unavailable: {type(exc).__name__}: {_first_line(exc)}")
    return exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return redact_credentials(text[0]) if text else "no detail"


def redact_credentials(text: str) -> str:
    # Some libraries put the connection URL in their messages.
    return re.sub(r"(\w+://[^:/@\s]*:)[^@\s]+@", r"\1***@", text)
