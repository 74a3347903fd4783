"""Shared fixtures: the real RabbitMQ and Redis of this machine.

Integration tests skip when a service is down on a developer's machine, and
fail in CI (CI=true), where `.ci/run` has started both.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from app.testing import ServiceRun

RECORDINGS = Path(__file__).parent / "recordings"


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "localhost",
                                       parts.port or default_port), timeout=2):
            return True
    except OSError:
        return False


def require_services() -> None:
    missing = [name for name, url, port in (
        ("RabbitMQ", os.environ.get("RABBITMQ_URL", "amqp://localhost:5672/"), 5672),
        ("Redis", os.environ.get("REDIS_URL", "redis://localhost:6379/0"), 6379),
    ) if not _reachable(url, port)]
    if not missing:
        return
    message = f"{' and '.join(missing)} not reachable"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def services() -> None:
    """Skip (locally) or fail (in CI) unless RabbitMQ and Redis answer."""
    require_services()


@pytest.fixture
def service_run(tmp_path: Path) -> Iterator[ServiceRun]:
    """A private, not yet started instance of the service; removed afterwards."""
    require_services()
    run = ServiceRun(tmp_path)
    try:
        yield run
    finally:
        run.close()


@pytest.fixture
def recordings() -> Path:
    return RECORDINGS


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
