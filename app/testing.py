"""Running the real service in tests, on a private exchange and key space.

`ServiceRun` starts `task-service run` as a child process with its own
SERVICE_NAME (so its own queues and Redis keys) and its own events exchange,
taps the completion events it publishes, replays recordings into it, waits
(always with a bound) for its work to finish, and removes everything it
created when it is closed. The pytest plugin (`app.pytest_plugin`) hands it
to tests as the `task_service` fixture.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import amqp
import kombu
import kombu.exceptions
import redis
import redis.exceptions

from app.celery_app import task_exchange_name, task_queue_names
from app.recording import RecordingError, read_recording
from app.replay import select
from app.settings import Settings
from app.snapshots import normalise
from app.state import StateStore
from app.topics import matches, matches_any
from handlers.routes import ROUTES

# The routing keys the bridge binds to its inbox: all it will ever receive.
BRIDGE_BINDINGS = tuple(ROUTES)

DEFAULT_WAIT_S = 120.0


class ServiceTimeout(AssertionError):
    """What a test waited for did not happen in time."""


@dataclass(frozen=True)
class Completion:
    """A completion event seen on the exchange."""

    routing_key: str
    body: dict[str, Any]


class ServiceRun:
    """One private instance of the service; see the module docstring."""

    def __init__(self, workdir: Path, *, extra_env: dict[str, str] | None = None) -> None:
        self.name = f"ts-test-{uuid.uuid4().hex[:10]}"
        self.workdir = workdir
        self.reports_dir = workdir / "reports"
        self.log_path = workdir / f"{self.name}.log"
        self.env = {
            **os.environ,
            "SERVICE_NAME": self.name,
            "EVENTS_EXCHANGE": f"{self.name}.events",
            "REPORTS_DIR": str(self.reports_dir),
            "LOG_FORMAT": "json",
            **(extra_env or {}),
        }
        self.settings = Settings(
            rabbitmq_url=self.env.get("RABBITMQ_URL", Settings().rabbitmq_url),
            redis_url=self.env.get("REDIS_URL", Settings().redis_url),
            events_exchange=self.env["EVENTS_EXCHANGE"],
            service_name=self.name,
            reports_dir=self.reports_dir,
        )
        self.tap_queue = f"{self.name}.completions-tap"
        self.redis = redis.Redis.from_url(self.settings.redis_url, socket_timeout=10)
        self.state = StateStore(self.redis, self.settings.redis_prefix, 3600)
        self._amqp = kombu.Connection(self.settings.rabbitmq_url, connect_timeout=10)
        self._channel: Any = None
        self._process: subprocess.Popen[bytes] | None = None
        self._components: dict[str, subprocess.Popen[bytes]] = {}
        self._log_file: Any = None
        self.completions_seen: list[Completion] = []
        # Replayed messages the bridge's bindings route to its inbox: each
        # ends claimed, counted as a duplicate, or parked (see `settle`).
        self.expected_deliveries = 0

    # -- set-up and tear-down ------------------------------------------------

    @property
    def channel(self) -> Any:
        if self._channel is None:
            self._channel = self._amqp.default_channel
        return self._channel

    def tap_completions(self) -> None:
        """Bind a queue to `task.#` so that completion events can be read back."""
        self.channel.exchange_declare(self.settings.events_exchange, "topic", durable=True,
                                      auto_delete=False)
        self.channel.queue_declare(self.tap_queue, durable=True, auto_delete=False)
        self.channel.queue_bind(self.tap_queue, self.settings.events_exchange, "task.#")

    def start(self, *args: str, timeout_s: float = 60.0) -> None:
        """Start `task-service run` and wait until bridge and worker consume."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("ab")
        command = [sys.executable, "-m", "app.cli", "run", *args]
        self._process = subprocess.Popen(command, env=self.env, stdout=self._log_file,
                                         stderr=subprocess.STDOUT)
        self.wait_consuming(timeout_s)

    def start_component(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start `task-service bridge` or `worker` alone (so it can be killed alone)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self._log_file is None:
            self._log_file = self.log_path.open("ab")
        process = subprocess.Popen([sys.executable, "-m", "app.cli", name, *args],
                                   env=self.env, stdout=self._log_file,
                                   stderr=subprocess.STDOUT)
        self._components[name] = process
        return process

    def component(self, name: str) -> subprocess.Popen[bytes]:
        return self._components[name]

    def wait_consuming(self, timeout_s: float = 60.0) -> None:
        """Wait until the inbox and every task queue have a consumer."""
        queues = [self.settings.queue_name("inbox"), *task_queue_names(self.settings)]
        self.wait_for(lambda: all(self.consumers(queue) > 0 for queue in queues),
                      timeout_s, "bridge and worker consuming")

    def kill_component(self, name: str) -> None:
        """SIGKILL a component started alone, as a crash would."""
        process = self._components[name]
        process.kill()
        process.wait(timeout=30)

    def worker_processes(self) -> list[int]:
        """Pids of the Celery pool processes under the worker started alone."""
        worker = self._components["worker"]
        children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children")
        return [int(pid) for pid in children.read_text().split()] if children.exists() else []

    def stop(self, timeout_s: float = 45.0) -> int:
        """SIGTERM the service (and components started alone); return the exit status."""
        status = 0
        processes = ([self._process] if self._process else []) + list(self._components.values())
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                code = process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
            status = status or code
        self._process = None
        self._components.clear()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return status

    def close(self) -> None:
        """Stop the service and delete its queues, exchanges and Redis keys."""
        self.stop()
        try:
            self._delete_topology()
        except (OSError, amqp.exceptions.AMQPError, kombu.exceptions.OperationalError):
            self._reconnect()  # the broker was restarted under the old connection
            self._delete_topology()
        for key in self.redis.scan_iter(f"{self.name}:*", count=1000):
            self.redis.delete(key)
        self._amqp.release()
        self.redis.close()

    def _delete_topology(self) -> None:
        channel = self.channel
        for queue in [self.settings.queue_name("inbox"), self.settings.queue_name("parked"),
                      *task_queue_names(self.settings), self.tap_queue]:
            channel.queue_delete(queue)
        for exchange in (self.settings.events_exchange, task_exchange_name(self.settings)):
            channel.exchange_delete(exchange)

    # -- driving it ----------------------------------------------------------

    def cli(self, *args: str, input_text: str | None = None,
            timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run a `task-service` command against this instance."""
        return subprocess.run([sys.executable, "-m", "app.cli", *args], env=self.env,
                              input=input_text, capture_output=True, text=True,
                              timeout=timeout_s, check=False)

    def replay(self, recording: Path, *, filters: tuple[str, ...] | None = None,
               speed: float | None = None, strict: bool = False
               ) -> subprocess.CompletedProcess[str]:
        """Replay `recording` into this instance with `task-service replay`.

        By default only what the bridge is bound for is sent (`filters`:
        topic patterns): completion events in a recording of a live exchange
        would otherwise reach the completions tap as if this run had made
        them. Unroutable messages (exit status 4) are not an error here.
        """
        filters = BRIDGE_BINDINGS if filters is None else filters
        args = ["replay", str(recording), *(f"--filter={pattern}" for pattern in filters)]
        if speed is not None:
            args.append(f"--speed={speed}")
        if strict:
            args.append("--strict")
        result = self.cli(*args)
        if result.returncode not in (0, 4):
            raise AssertionError(f"replay failed: {result.stderr}")
        errors: list[RecordingError] = []
        replayed = select(read_recording(recording, errors=errors), filters)
        self.expected_deliveries += sum(1 for message in replayed
                                        if matches_any(BRIDGE_BINDINGS, message.routing_key))
        return result

    # -- observing it --------------------------------------------------------

    def consumers(self, queue: str) -> int:
        return self._declare_passive(queue, "consumer_count")

    def message_count(self, queue: str) -> int:
        return self._declare_passive(queue, "message_count")

    def _declare_passive(self, queue: str, field: str) -> int:
        try:
            return int(getattr(self.channel.queue_declare(queue, passive=True), field))
        except amqp.exceptions.NotFound:
            self._channel = None  # a failed passive declare closes the channel
            return 0
        except (OSError, amqp.exceptions.AMQPError, kombu.exceptions.OperationalError):
            self._reconnect()  # the broker restarted under us
            return 0

    def _reconnect(self) -> None:
        self._channel = None
        with contextlib.suppress(Exception):
            self._amqp.release()
        self._amqp = kombu.Connection(self.settings.rabbitmq_url, connect_timeout=10)

    def arrived(self) -> int:
        """How many events the bridge has claimed (its arrival counter)."""
        return int(self.redis.get(self.state.keys.seq) or 0)

    def unfinished(self) -> int:
        return int(self.redis.zcard(self.state.keys.inflight))

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise AssertionError(f"service exited with {self._process.returncode} while "
                                     f"waiting for {what}; log: {self.log_path}")
            try:
                if predicate():
                    return
            except (OSError, redis.exceptions.ConnectionError):
                pass  # a service the test restarts is briefly away
            time.sleep(0.2)
        raise ServiceTimeout(f"timed out after {timeout_s}s waiting for {what}; "
                             f"log: {self.log_path}")

    def wait_until_done(self, events: int, timeout_s: float = DEFAULT_WAIT_S) -> None:
        """Wait until `events` events have arrived and every one has finished."""
        self.wait_for(lambda: self.arrived() >= events and self.unfinished() == 0,
                      timeout_s, f"{events} events to finish")

    def settle(self, timeout_s: float = DEFAULT_WAIT_S) -> None:
        """Wait until every replayed event is accounted for and its tasks have finished.

        Accounted for: claimed (it has a record), counted as a duplicate of
        one, or parked (a record too). The completion events of finished
        tasks are then on the tap, since a task publishes its completion
        event before it records its success.
        """
        self.wait_for(self._settled, timeout_s,
                      f"{self.expected_deliveries} replayed events to be processed")

    def _settled(self) -> bool:
        # Cheap checks first; the count scans every event record.
        if self.message_count(self.settings.queue_name("inbox")) or self.unfinished():
            return False
        if self.accounted_deliveries() < self.expected_deliveries:
            return False
        return self.unfinished() == 0  # nothing claimed since the first check

    def accounted_deliveries(self) -> int:
        """Inbox deliveries the bridge has finished with: records plus duplicates."""
        names = [raw for raw in self.redis.scan_iter(f"{self.state.keys.event('')}*",
                                                     count=1000)
                 if not raw.endswith(b":history")]
        pipeline = self.redis.pipeline(transaction=False)
        for name in names:
            pipeline.hget(name, "duplicates")
        return len(names) + sum(int(value or 0) for value in pipeline.execute())

    def read_completions(self) -> list[Completion]:
        """Drain the tap queue; returns every completion event seen so far."""
        try:
            self.channel.queue_declare(self.tap_queue, passive=True)
        except (OSError, amqp.exceptions.AMQPError, kombu.exceptions.OperationalError):
            self._reconnect()  # the broker was restarted under the old connection
        while (message := self.channel.basic_get(self.tap_queue, no_ack=True)) is not None:
            self.completions_seen.append(Completion(message.delivery_info["routing_key"],
                                                    json.loads(message.body)))
        return self.completions_seen

    def completions(self, pattern: str = "#") -> list[Completion]:
        """The completion events seen so far whose routing key matches `pattern`."""
        return [completion for completion in self.read_completions()
                if matches(pattern, completion.routing_key)]

    def outcomes(self) -> list[dict[str, Any]]:
        """The completion events, normalised for a snapshot (see `app.snapshots`)."""
        return normalise((completion.body for completion in self.read_completions()),
                         replacements={str(self.reports_dir): "<reports>"})

    def report(self, tenant: str, day: str) -> dict[str, Any]:
        """The daily report this instance wrote for `tenant` and `day` (YYYY-MM-DD)."""
        return json.loads((self.reports_dir / tenant / f"{day}.json").read_text())

    def event_states(self) -> dict[str, dict[str, Any]]:
        """Every event record under this instance's prefix, by event key."""
        records = {}
        prefix = self.state.keys.event("")
        for raw in self.redis.scan_iter(f"{prefix}*", count=1000):
            name = raw.decode()
            if name.endswith(":history"):
                continue
            key = name[len(prefix):]
            record = self.state.lookup(key)
            if record is not None:
                records[key] = record
        return records

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
