"""pytest plugin: run recordings through the real service, and snapshot what comes out.

Installed with the package (the `pytest11` entry point `task_service`), so a
platform developer's test needs no set-up of its own:

    def test_sample_day(task_service):
        task_service.replay(Path("recordings/platform-day.jsonl"))
        task_service.settle()
        assert task_service.completions("task.failed.#") == []
        assert task_service.report("tenant-acme", "2026-12-02")["calls"] == 300

Fixtures:

- `task_service`: a started `app.testing.ServiceRun` (bridge and worker) on a
  private exchange, queues and Redis keys, removed after the test;
- `task_service_factory`: `with task_service_factory(workdir, concurrency=1)
  as run:`, for a module-scoped run or a worker count of one's own;
- `snapshot`: `snapshot.assert_match(task_service, recording)` compares the
  run's outcomes with the file kept next to the recording (`app.snapshots`);
  `pytest --snapshot-update` writes it instead.

RabbitMQ and Redis come from RABBITMQ_URL and REDIS_URL. When either is
down, these fixtures skip the test, except in CI (CI set), where they fail it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from app import snapshots

if TYPE_CHECKING:  # imported by the fixtures: loading the plugin stays cheap
    from app.testing import ServiceRun

DEFAULT_RABBITMQ_URL = "amqp://guest:guest@localhost:5672/"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
_WRITTEN_KEY = pytest.StashKey[list[Path]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("task-service", "task service recordings and snapshots")
    group.addoption("--snapshot-update", action="store_true", default=False,
                    help="Write the outcomes of each snapshot test to its snapshot file "
                         "instead of comparing them.")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_WRITTEN_KEY] = []


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    written = config.stash.get(_WRITTEN_KEY, [])
    if written:
        terminalreporter.section("snapshots written")
        for path in written:
            terminalreporter.write_line(str(path))


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "localhost",
                                       parts.port or default_port), timeout=2):
            return True
    except OSError:
        return False


def require_services() -> None:
    """Skip the test (locally) or fail it (in CI) unless RabbitMQ and Redis answer."""
    missing = [name for name, url, port in (
        ("RabbitMQ", os.environ.get("RABBITMQ_URL", DEFAULT_RABBITMQ_URL), 5672),
        ("Redis", os.environ.get("REDIS_URL", DEFAULT_REDIS_URL), 6379),
    ) if not _reachable(url, port)]
    if not missing:
        return
    message = f"{' and '.join(missing)} not reachable"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


ServiceFactory = Callable[..., AbstractContextManager["ServiceRun"]]


@pytest.fixture(scope="session")
def task_service_factory(tmp_path_factory: pytest.TempPathFactory) -> ServiceFactory:
    """Starts private instances of the service: `with task_service_factory() as run:`."""

    @contextmanager
    def start(workdir: Path | None = None, *, concurrency: int | None = None,
              env: dict[str, str] | None = None) -> Iterator[ServiceRun]:
        from app.testing import ServiceRun

        require_services()
        run = ServiceRun(workdir or tmp_path_factory.mktemp("task-service"), extra_env=env)
        try:
            run.tap_completions()
            run.start(*([f"--concurrency={concurrency}"] if concurrency else []))
            yield run
        finally:
            run.close()

    return start


@pytest.fixture
def task_service(task_service_factory: ServiceFactory, tmp_path: Path) -> Iterator[ServiceRun]:
    """A started private instance of the service, removed after the test."""
    with task_service_factory(tmp_path) as run:
        yield run


class Snapshot:
    """Compares a run's outcomes with the snapshot file of its recording."""

    def __init__(self, *, update: bool, written: list[Path]) -> None:
        self.update = update
        self._written = written

    def assert_match(self, run: ServiceRun, recording: Path) -> None:
        """Fail with a readable diff unless the outcomes equal the snapshot.

        Call it after `run.settle()`. With --snapshot-update the snapshot
        file is written instead, and the test passes.
        """
        path = snapshots.snapshot_path(recording)
        actual = run.outcomes()
        if self.update:
            path.write_text(snapshots.to_text(actual), encoding="utf-8")
            self._written.append(path)
            return
        if not path.exists():
            pytest.fail(f"no snapshot {path} yet; run pytest --snapshot-update to write it",
                        pytrace=False)
        expected = snapshots.from_text(path.read_text(encoding="utf-8"))
        found = snapshots.differences(expected, actual)
        if found:
            summary = snapshots.report(found, expected_count=len(expected),
                                       actual_count=len(actual))
            pytest.fail(f"outcomes of {recording.name} differ from {path.name}: {summary}\n"
                        "If the change is intended, run pytest --snapshot-update.",
                        pytrace=False)


@pytest.fixture
def snapshot(request: pytest.FixtureRequest) -> Snapshot:
    """Snapshot comparison; `pytest --snapshot-update` rewrites the files."""
    config = request.config
    return Snapshot(update=bool(config.getoption("snapshot_update")),
                    written=config.stash[_WRITTEN_KEY])
