"""Progress of a long command: a bar on a terminal, quiet lines elsewhere."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

QUIET_EVERY_S = 5.0


class ReplayProgress:
    """Shows how many messages the broker has confirmed, and how fast."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._interactive = sys.stderr.isatty()
        self._started = time.monotonic()
        self._last_line = self._started
        self._bar: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> ReplayProgress:
        if self._interactive:
            self._bar = Progress(TextColumn("replay"), BarColumn(), MofNCompleteColumn(),
                                 TaskProgressColumn(), TextColumn("{task.fields[rate]} msg/s"),
                                 TimeRemainingColumn(), transient=False)
            self._bar.start()
            self._task = self._bar.add_task("replay", total=self.total, rate="0")
        return self

    def update(self, counts: Any) -> None:
        done = counts.sent
        elapsed_s = max(time.monotonic() - self._started, 1e-6)
        rate = done / elapsed_s
        if self._bar is not None:
            self._bar.update(self._task, completed=done, rate=f"{rate:.0f}")
        elif time.monotonic() - self._last_line >= QUIET_EVERY_S:
            self._last_line = time.monotonic()
            print(f"replay: {done}/{self.total} sent, {rate:.0f} msg/s", file=sys.stderr)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()
