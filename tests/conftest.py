"""Shared fixtures: the real RabbitMQ and Redis of this machine.

Integration tests skip when a service is down on a developer's machine, and
fail in CI (CI=true), where `.ci/run` has started both. Running the service
itself is the job of the package's own pytest plugin (`app.pytest_plugin`):
its `task_service`, `task_service_factory` and `snapshot` fixtures.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import amqp
import pytest
import redis

from app.pytest_plugin import require_services
from app.testing import ServiceRun
from tests.smtp_server import LocalSmtpServer

__all__ = ["RECORDINGS", "Tap", "cli", "require_services"]

pytest_plugins = ["pytester"]

RECORDINGS = Path(__file__).parent / "recordings"


@pytest.fixture
def services() -> None:
    """Skip (locally) or fail (in CI) unless RabbitMQ and Redis answer."""
    require_services()


@pytest.fixture
def recordings() -> Path:
    return RECORDINGS


@dataclass
class Tap:
    """A private topic exchange with a queue bound to `#` on the real broker."""

    exchange: str
    queue: str
    channel: Any

    @property
    def env(self) -> dict[str, str]:
        """Environment that points the command line at this exchange."""
        return {"EVENTS_EXCHANGE": self.exchange, "SERVICE_NAME": self.exchange}

    def drain(self) -> list[amqp.Message]:
        """Every message in the queue so far, bodies as the exact bytes."""
        messages = []
        while (message := self.channel.basic_get(self.queue, no_ack=True)) is not None:
            messages.append(message)
        return messages


@pytest.fixture
def tap() -> Iterator[Tap]:
    """A `Tap`, deleted afterwards."""
    require_services()
    name = f"ts-test-{uuid.uuid4().hex[:10]}"
    connection = amqp.Connection("127.0.0.1:5672", connect_timeout=10)
    connection.connect()
    channel = connection.channel()
    channel.auto_decode = False
    exchange, queue = f"{name}.events", f"{name}.tap"
    channel.exchange_declare(exchange, "topic", durable=True, auto_delete=False)
    channel.queue_declare(queue, durable=False, auto_delete=False)
    channel.queue_bind(queue, exchange, "#")
    try:
        yield Tap(exchange, queue, channel)
    finally:
        channel.queue_delete(queue)
        channel.exchange_delete(exchange)
        connection.close()


def cli(*args: str, env: dict[str, str] | None = None, input_text: str | None = None,
        timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `task-service` with `env` added to this environment."""
    return subprocess.run([sys.executable, "-m", "app.cli", *args],
                          env={**os.environ, **(env or {})}, input=input_text,
                          capture_output=True, text=True, timeout=timeout_s, check=False)


@pytest.fixture
def smtp() -> Iterator[LocalSmtpServer]:
    """A real SMTP server in this process; what it received is in `.received`."""
    with LocalSmtpServer() as server:
        yield server


@pytest.fixture
def client_and_prefix() -> Iterator[tuple[redis.Redis, str]]:
    """A Redis client and a key prefix of the test's own; its keys are deleted after."""
    require_services()
    client = redis.Redis()
    prefix = f"ts-test-{uuid.uuid4().hex[:10]}:"
    try:
        yield client, prefix
    finally:
        for key in client.scan_iter(f"{prefix}*", count=1000):
            client.delete(key)
        client.close()


@pytest.fixture
def service_run(tmp_path: Path) -> Iterator[ServiceRun]:
    """A private instance of the service, not started (tests start parts of it)."""
    require_services()
    run = ServiceRun(tmp_path)
    try:
        yield run
    finally:
        run.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the fault suite's accounting, whether or not output was captured."""
    import sys

    faults = sys.modules.get("tests.test_faults")
    if faults is None or not faults.ACCOUNTING:
        return
    terminalreporter.section("fault-injection accounting")
    for test, counts in faults.ACCOUNTING:
        name = test.rsplit("::", 1)[-1]
        terminalreporter.write_line(f"{name}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
