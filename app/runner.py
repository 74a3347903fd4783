"""`task-service run`: the bridge and a worker as two child processes.

Each runs as it would alone (`task-service bridge`, `task-service worker`),
so `run` behaves like production in one command. SIGINT and SIGTERM are
forwarded to both; if one exits on its own, the other is stopped too.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import structlog

log = structlog.get_logger(__name__)

STOP_GRACE_S = 30.0


def _spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "app.cli", *args])


def run_service(concurrency: int | None = None) -> int:
    """Start both children, wait, and return the first non-zero status (or 0)."""
    worker_args = ["worker"] + ([f"--concurrency={concurrency}"] if concurrency else [])
    children = {"bridge": _spawn("bridge"), "worker": _spawn(*worker_args)}
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    log.info("service started", bridge_pid=children["bridge"].pid,
             worker_pid=children["worker"].pid)

    while all(child.poll() is None for child in children.values()):
        time.sleep(0.2)
    if not stopping:
        name = next(name for name, child in children.items() if child.poll() is not None)
        log.error(f"the {name} exited on its own; stopping the rest",
                  status=children[name].returncode)
        forward(signal.SIGTERM, None)

    deadline = time.monotonic() + STOP_GRACE_S
    for child in children.values():
        try:
            child.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    statuses = [child.returncode for child in children.values()]
    failed = [status for status in statuses if status not in (0, -signal.SIGTERM,
                                                              -signal.SIGINT)]
    status = failed[0] if failed else (0 if stopping else 1)
    log.info("service stopped", statuses=dict(zip(children, statuses, strict=True)))
    return status
