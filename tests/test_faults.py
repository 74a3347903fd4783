"""Fault injection: crashes, outages and poison, against the real broker and Redis.

Each scenario replays the whole sample day (2,621 events) while something
goes wrong, then checks the accounting:

- every distinct event ends exactly one of succeeded / failed / parked;
- every delivery of the platform's is accounted for as that event or a
  duplicate (exactly, where the bridge did not lose messages in hand; within
  the deliveries it had in hand, where it died);
- the daily reports equal the figures computed from the recording;
- for each (event key, task) at most one distinct `task.succeeded` event.

Redis runs privately here, with an append-only file, so that restarting it
loses nothing (as a production Redis for this service would be set up).
RabbitMQ is the machine's own: it is restarted with `rabbitmqctl
stop_app` / `start_app`, which drops every connection as a restart does.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
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


def rabbitmq(action: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", action], check=True, capture_output=True, timeout=120)
    if action == "start_app":
        subprocess.run(["rabbitmqctl", "-q", "await_startup"], check=True,
                       capture_output=True, timeout=120)


@pytest.fixture
def faulty(tmp_path: Path) -> Iterator[ServiceRun]:
    """A private service on a private, restartable Redis; started by each test."""
    require_services()
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is needed for the fault suite")
    private = PrivateRedis(tmp_path)
    private.start()
    run = ServiceRun(tmp_path, extra_env={"REDIS_URL": private.url, "REPORT_WAIT_S": "300"})
    run.private_redis = private  # type: ignore[attr-defined]
    try:
        run.tap_completions()
        yield run
    finally:
        try:
            run.close()
        finally:
            private.stop()


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


def test_bridge_sigkilled_at_several_moments(faulty: ServiceRun) -> None:
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


def test_worker_process_sigkilled_mid_task(faulty: ServiceRun) -> None:
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


def test_rabbitmq_restarted_while_events_are_processed(faulty: ServiceRun) -> None:
    faulty.start()
    faulty.replay(DAY)
    time.sleep(1.0)
    rabbitmq("stop_app")
    time.sleep(2.0)
    rabbitmq("start_app")
    faulty.wait_until_done(events=DISTINCT, timeout_s=300)
    # The bridge has its consumer back (aio-pika restores it; the watchdog
    # would redeclare it otherwise), and so does the worker.
    faulty.wait_consuming(timeout_s=60)
    check_accounting(faulty, exact_duplicates=False)


def test_redis_restarted_while_events_are_processed(faulty: ServiceRun) -> None:
    faulty.start()
    faulty.replay(DAY)
    time.sleep(1.0)
    private: PrivateRedis = faulty.private_redis  # type: ignore[attr-defined]
    private.stop()
    time.sleep(2.0)
    private.start()
    faulty.wait_until_done(events=DISTINCT, timeout_s=300)
    check_accounting(faulty, exact_duplicates=False)


def test_started_while_the_broker_is_down(faulty: ServiceRun) -> None:
    rabbitmq("stop_app")
    try:
        faulty.start_component("worker")
        faulty.start_component("bridge")
        time.sleep(4.0)
        assert faulty.component("bridge").poll() is None
        assert faulty.component("worker").poll() is None
    finally:
        rabbitmq("start_app")
    assert "RabbitMQ unreachable, retrying in" in faulty.log_text()
    faulty.wait_consuming(timeout_s=120)
    faulty.replay(DAY)
    faulty.wait_until_done(events=DISTINCT, timeout_s=300)
    check_accounting(faulty, exact_duplicates=True)
