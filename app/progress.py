"""Progress of a long command: live on a terminal, a quiet line now and then elsewhere.

Both go to stderr, so stdout keeps only the command's result.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any, Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

QUIET_EVERY_S = 5.0


class _LiveProgress:
    """A rich display on a terminal; otherwise a line every QUIET_EVERY_S."""

    def __init__(self, label: str, total: int | None) -> None:
        self.label = label
        self.total = total
        self._interactive = sys.stderr.isatty()
        self._started = time.monotonic()
        self._last_line = self._started
        self._bar: Progress | None = None
        self._task: Any = None

    def _columns(self) -> list[ProgressColumn]:
        raise NotImplementedError

    def _quiet_line(self, done: int, rate: float) -> str:
        raise NotImplementedError

    def __enter__(self) -> Self:
        if self._interactive:
            self._bar = Progress(*self._columns(), console=Console(stderr=True),
                                 transient=False)
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total, rate="0")
        return self

    def show(self, done: int) -> None:
        """Show that `done` messages are through."""
        now = time.monotonic()
        rate = done / max(now - self._started, 1e-6)
        if self._bar is not None:
            self._bar.update(self._task, completed=done, rate=f"{rate:.0f}")
        elif now - self._last_line >= QUIET_EVERY_S:
            self._last_line = now
            print(f"{self.label}: {self._quiet_line(done, rate)}", file=sys.stderr, flush=True)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()


class ReplayProgress(_LiveProgress):
    """How many messages the broker has confirmed, how fast, and how long is left."""

    def __init__(self, total: int) -> None:
        super().__init__("replay", total)

    def _columns(self) -> list[ProgressColumn]:
        return [TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                TextColumn("{task.fields[rate]} msg/s"), TimeRemainingColumn()]

    def _quiet_line(self, done: int, rate: float) -> str:
        return f"{done}/{self.total} sent, {rate:.0f} msg/s"

    def update(self, counts: Any) -> None:
        """Called with the replay's counts after each message."""
        self.show(counts.sent)


class RecordProgress(_LiveProgress):
    """A live count of the messages recorded so far."""

    def __init__(self) -> None:
        super().__init__("record", None)

    def _columns(self) -> list[ProgressColumn]:
        return [SpinnerColumn(), TextColumn("recorded {task.completed} messages"),
                TextColumn("{task.fields[rate]} msg/s"), TimeElapsedColumn()]

    def _quiet_line(self, done: int, rate: float) -> str:
        return f"{done} messages recorded, {rate:.0f} msg/s"

    def update(self, counts: Any) -> None:
        """Called with the recording's counts after each message."""
        self.show(counts.messages)
