"""The command line as scripts and operators meet it: help, errors, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import kombu
import pytest

from tests.conftest import require_services

COMMANDS = [[], ["run"], ["bridge"], ["worker"], ["publish"], ["replay"], ["record"], ["status"],
            ["parked"], ["parked", "list"], ["parked", "replay"], ["parked", "purge"]]


def task_service(*args: str, env: dict[str, str] | None = None,
                 input_text: str | None = None, timeout_s: float = 60
                 ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", *args],
                          env={**os.environ, **(env or {})}, input=input_text,
                          capture_output=True, text=True, timeout=timeout_s, check=False)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "main")
def test_every_command_has_help(command: list[str]) -> None:
    result = task_service(*command, "--help")
    assert result.returncode == 0
    assert "Usage:" in result.stdout


@pytest.mark.parametrize("name, value, says", [
    ("RABBITMQ_URL", "http://localhost:5672/", "invalid setting RABBITMQ_URL"),
    ("REDIS_URL", "mysql://x", "invalid setting REDIS_URL"),
    ("PREFETCH_COUNT", "many", "invalid setting PREFETCH_COUNT"),
    ("SERVICE_NAME", "has spaces", "invalid setting SERVICE_NAME"),
])
def test_a_bad_setting_stops_with_one_line_naming_it(name: str, value: str, says: str) -> None:
    result = task_service("status", "k", env={name: value})
    assert result.returncode == 2
    assert result.stderr.startswith(f"task-service: error: {says}")
    assert len(result.stderr.strip().splitlines()) == 1


def test_unreachable_broker_is_one_line_without_the_password() -> None:
    result = task_service("publish", "call.ended", "{}",
                          env={"RABBITMQ_URL": "amqp://guest:hunter2@127.0.0.1:1/"})
    assert result.returncode == 1
    assert "RabbitMQ unavailable" in result.stderr
    assert "Traceback" not in result.stderr and "hunter2" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unreachable_redis_is_one_line() -> None:
    result = task_service("status", "k", env={"REDIS_URL": "redis://:hunter2@127.0.0.1:1/0"})
    assert result.returncode == 1
    assert "Redis unavailable" in result.stderr and "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr


def test_publish_refuses_a_body_that_is_not_json() -> None:
    result = task_service("publish", "call.ended", "{nope")
    assert result.returncode == 1 and "not valid JSON" in result.stderr


@pytest.fixture
def exchange() -> Iterator[str]:
    """A unique exchange name; the exchange is deleted afterwards."""
    require_services()
    name = f"ts-test-{uuid.uuid4().hex[:10]}.events"
    yield name
    with kombu.Connection("amqp://guest:guest@127.0.0.1//") as connection:
        connection.default_channel.exchange_delete(name)


def test_publish_reads_the_body_from_stdin_and_reports_unroutable(exchange: str) -> None:
    result = task_service("publish", "call.ended", "-", input_text='{"eventType": "x"}',
                          env={"EVENTS_EXCHANGE": exchange})
    assert result.returncode == 4
    assert "unroutable" in result.stderr


def test_replay_reports_malformed_lines_with_their_number(tmp_path: Path, exchange: str) -> None:
    recording = tmp_path / "broken.jsonl"
    recording.write_text('{"t": 0, "routing_key": "call.ended", "body": {}}\nnot json\n'
                         '{"t": 0, "routing_key": "call.ended"}\n')
    result = task_service("replay", str(recording), env={"EVENTS_EXCHANGE": exchange})
    assert f"{recording}:2: line 2: not JSON" in result.stderr
    assert "line 3: needs exactly one of body, body_text, body_b64" in result.stderr
    assert "1 unroutable, 2 malformed lines skipped" in result.stdout
    strict = task_service("replay", "--strict", str(recording),
                          env={"EVENTS_EXCHANGE": exchange})
    assert strict.returncode == 1 and "line 2: not JSON" in strict.stderr


@pytest.mark.parametrize("command", [["worker"], ["bridge"]])
def test_refused_credentials_stop_start_up_with_one_line(command: list[str]) -> None:
    require_services()
    result = task_service(*command, env={
        "RABBITMQ_URL": "amqp://guest:Sup3rSecretPW@127.0.0.1:5672/", "LOG_FORMAT": "json"})
    assert result.returncode == 2
    assert "RabbitMQ refused" in result.stderr and "Sup3rSecretPW" not in result.stderr
    assert "Traceback" not in result.stderr
