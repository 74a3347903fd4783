"""Fault injection: crashes, outages and poison, against the real broker and Redis.

Each scenario replays the whole sample day (2,621 events) while something
goes wrong, then checks the accounting:

- every distinct event ends exactly one of succeeded / failed / parked;
- every delivery of the platform's is accounted for as that event or a
  duplicate (exactly, where the bridge did not lose messages in hand; within
  the deliveries it had in hand, where it died);
- the daily reports equal the figures computed from the recording;
- for each (event key, task) at most one distinct `task.succeeded` event.

RabbitMQ and Redis run privately here, on free ports, so that restarting
them touches nobody else on the machine: a RabbitMQ node of the test's own
(restarted with `rabbitmqctl stop_app` / `start_app`, which drops every
connection as a restart does, and keeps durable queues and persistent
messages), and a Redis with an append-only file, so that restarting it
loses nothing (as a production Redis for this service would be set up).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.testing import ServiceRun
from tests.conftest import RECORDINGS, require_services
from tests.test_pipeline import _valid_event_count, expected_reports

DAY = RECORDINGS / "platform-day.jsonl"
LINES = [json.loads(text) for text in DAY.read_text().splitlines()]
PUBLISHED = len(LINES)
DISTINCT = _valid_event_count(LINES)
# (test, counts) of each scenario, printed at the end of the run by conftest.
ACCOUNTING: list[tuple[str, dict[str, Any]]] = []


class PrivateRedis:
    """A redis-server of the test's own, with AOF, that can be restarted."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port)

    def stop(self) -> None:
        if self._process is not None:
            subprocess.run(["redis-cli", "-p", str(self.port), "shutdown"],
                           capture_output=True, timeout=30, check=False)
            self._process.wait(timeout=30)
            self._process = None


class PrivateRabbit:
    """A RabbitMQ node of the test's own, on free ports, that can be restarted."""

    def __init__(self) -> None:
        # The node runs as the rabbitmq user: its folder must be reachable.
        self.folder = Path(tempfile.mkdtemp(prefix="ts-test-rabbit-"))
        self.folder.chmod(0o777)
        self.port = _free_port()
        self.node = f"tstest{uuid.uuid4().hex[:8]}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        config = self.folder / "rabbitmq.conf"
        config.write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        config.chmod(0o644)
        self.env = {**os.environ, "RABBITMQ_NODENAME": self.node,
                    "RABBITMQ_CONFIG_FILE": str(config),
                    "RABBITMQ_DIST_PORT": str(_free_port()),
                    "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
                    "RABBITMQ_LOG_BASE": str(self.folder / "log"),
                    "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins")}
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(["rabbitmq-server"], env=self.env,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, timeout_s=120)
        self.ctl("await_startup")

    def ctl(self, action: str) -> None:
        subprocess.run(["rabbitmqctl", "-q", "-n", self.node, action], check=True,
                       capture_output=True, timeout=120)

    def restart_app(self, down_s: float) -> None:
        self.ctl("stop_app")
        time.sleep(down_s)
        self.ctl("start_app")
        self.ctl("await_startup")

    def stop(self) -> None:
        if self._process is not None:
            subprocess.run(["rabbitmqctl", "-q", "-n", self.node, "stop"],
                           capture_output=True, timeout=120, check=False)
            try:
                self._process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._process.kill()
            self._process = None
        shutil.rmtree(self.folder, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_port(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port} after {timeout_s}s")


@dataclass
class Faulty:
    """A service run on a private RabbitMQ node and a private Redis."""

    run: ServiceRun
    rabbit: PrivateRabbit
    redis: PrivateRedis


@pytest.fixture
def faults(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Faulty]:
    """The brokers are up (unless the test is marked `broker_down`); nothing is started."""
    require_services()
    for program in ("redis-server", "rabbitmq-server", "rabbitmqctl"):
        if shutil.which(program) is None:
            pytest.fail(f"{program} is needed for the fault suite")
    private_redis, rabbit = PrivateRedis(tmp_path), PrivateRabbit()
    private_redis.start()
    if request.node.get_closest_marker("broker_down") is None:
        rabbit.start()
    run = ServiceRun(tmp_path, extra_env={"REDIS_URL": private_redis.url,
                                          "RABBITMQ_URL": rabbit.url, "REPORT_WAIT_S": "300"})
    try:
        yield Faulty(run, rabbit, private_redis)
    finally:
        try:
            run.close()
        finally:
            rabbit.stop()
            private_redis.stop()


def replay_in_background(run: ServiceRun) -> threading.Thread:
    thread = threading.Thread(target=run.replay, args=(DAY,), daemon=True)
    thread.start()
    return thread


def check_accounting(run: ServiceRun, *, exact_duplicates: bool) -> dict[str, Any]:
    """Assert the promise; return (and print) the counts."""
    states = run.event_states()
    outcome = Counter(record["state"] for record in states.values())
    duplicates = sum(record["duplicates"] for record in states.values())
    redeliveries = sum(record.get("redeliveries", 0) for record in states.values())
    completions = run.read_completions()
    succeeded_ids: dict[tuple[str, str], set[str]] = {}
    raw = Counter()
    for completion in completions:
        if completion.routing_key.startswith("task.succeeded."):
            pair = (completion.body["sourceEventKey"], completion.body["taskName"])
            succeeded_ids.setdefault(pair, set()).add(completion.body["eventId"])
            raw[pair] += 1
    counts = {
        "published": PUBLISHED, "events": len(states), **dict(outcome),
        "duplicates": duplicates, "redeliveries": redeliveries,
        "task.succeeded (distinct)": len(succeeded_ids),
        "task.succeeded (deliveries)": sum(raw.values()),
    }
    print("\naccounting:", json.dumps(counts))
    ACCOUNTING.append((os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0], counts))

    assert len(states) == DISTINCT
    assert set(outcome) <= {"succeeded", "failed", "parked"}
    if exact_duplicates:
        assert len(states) + duplicates == PUBLISHED
    else:
        assert len(states) + duplicates <= PUBLISHED <= len(states) + duplicates + redeliveries
    assert all(len(ids) == 1 for ids in succeeded_ids.values())
    succeeded_tasks = {(key, run.state.client.hget(run.state.keys.task(task_id), "taskName"))
                       for key, record in states.items() if record["state"] == "succeeded"
                       for task_id in record["taskIds"]}
    assert {(key, name.decode()) for key, name in succeeded_tasks} <= set(succeeded_ids)

    for tenant, figures in expected_reports(LINES).items():
        report = json.loads((run.reports_dir / tenant / "2026-12-02.json").read_text())
        report.pop("generatedAt")
        assert report == figures, tenant
    return counts


def test_bridge_sigkilled_at_several_moments(faults: Faulty) -> None:
    faulty = faults.run
    faulty.tap_completions()
    faulty.start_component("worker")
    faulty.start_component("bridge")
    faulty.wait_consuming()
    replay = replay_in_background(faulty)
    for moment_s in (0.5, 1.5, 1.5):
        time.sleep(moment_s)
        faulty.kill_component("bridge")
        faulty.start_component("bridge")
    replay.join(timeout=120)
    faulty.wait_until_done(events=DISTINCT, timeout_s=300)
    check_accounting(faulty, exact_duplicates=False)


def test_worker_process_sigkilled_mid_task(faults: Faulty) -> None:
    faulty = faults.run
    faulty.tap_completions()
    faulty.start_component("worker", "--concurrency=2")
    faulty.start_component("bridge")
    faulty.wait_consuming()
    faulty.replay(DAY)
    killed = 0
    for _ in range(3):
        time.sleep(1.0)
        pids = faulty.worker_processes()
        if pids:
            subprocess.run(["kill", "-9", str(pids[0])], check=False)
            killed += 1
    assert killed >= 2
    faulty.wait_until_done(events=DISTINCT, timeout_s=300)
    check_accounting(faulty, exact_duplicates=True)


def test_rabbitmq_restarted_while_events_are_processed(faults: Faulty) -> None:
    faulty = faults.run
    faulty.tap_completions()
    faulty.start()
    faulty.replay(DAY)
    time.sleep(1.0)
    faults.rabbit.restart_app(down_s=2.0)
    faulty.wait_until_done(events=DISTINCT, timeout_s=300)
    # The bridge has its consumer back (aio-pika restores it; the watchdog
    # would redeclare it otherwise), and so does the worker.
    faulty.wait_consuming(timeout_s=60)
    check_accounting(faulty, exact_duplicates=False)


def test_redis_restarted_while_events_are_processed(faults: Faulty) -> None:
    faulty = faults.run
    faulty.tap_completions()
    faulty.start()
    faulty.replay(DAY)
    time.sleep(1.0)
    faults.redis.stop()
    time.sleep(2.0)
    faults.redis.start()
    faulty.wait_until_done(events=DISTINCT, timeout_s=300)
    check_accounting(faulty, exact_duplicates=False)


@pytest.mark.broker_down
def test_started_while_the_broker_is_down(faults: Faulty) -> None:
    faulty = faults.run
    faulty.start_component("worker")
    faulty.start_component("bridge")
    time.sleep(4.0)
    assert faulty.component("bridge").poll() is None
    assert faulty.component("worker").poll() is None
    faults.rabbit.start()
    assert "RabbitMQ unreachable, retrying in" in faulty.log_text()
    faulty.tap_completions()
    faulty.wait_consuming(timeout_s=120)
    faulty.replay(DAY)
    faulty.wait_until_done(events=DISTINCT, timeout_s=300)
    check_accounting(faulty, exact_duplicates=True)
