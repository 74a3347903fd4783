"""Fault injection for the fault-tolerance tests; inert unless FAULT_INJECTION is set.

`FAULT_INJECTION=bridge_exit_on=POISON-B,worker_exit_on=POISON-W` makes the
bridge (or a worker process) exit at once, as a crash would, whenever it
handles a message whose body contains that text. The tests use it to prove
that such a message ends parked after a bounded number of deliveries.
`worker_transient_on=TEXT` makes such a task fail with a transient error, to
prove retries, `task.failed` and parking with reason `max_attempts`.
"""

from __future__ import annotations

import os
import sys

from app.errors import ConfigError, TransientError

EXIT_STATUS = 70
_KNOWN = ("bridge_exit_on", "worker_exit_on", "worker_transient_on")


def parse_faults(spec: str) -> dict[str, bytes]:
    """`a=X,b=Y` -> {a: b"X", b: b"Y"}; raise ConfigError on anything else."""
    faults: dict[str, bytes] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, marker = item.partition("=")
        if name not in _KNOWN or not marker:
            raise ConfigError(f"invalid setting FAULT_INJECTION: {item!r}; "
                              f"use {' or '.join(_KNOWN)}=TEXT")
        faults[name] = marker.encode()
    return faults


def fail_if_marked(faults: dict[str, bytes], name: str, body: bytes) -> None:
    """Raise a transient error if `body` carries the fault's marker."""
    marker = faults.get(name)
    if marker is not None and marker in body:
        raise TransientError(f"fault injection: {name} matched")


def crash_if_marked(faults: dict[str, bytes], name: str, body: bytes) -> None:
    """Exit the process without clean-up if `body` carries the fault's marker."""
    marker = faults.get(name)
    if marker is not None and marker in body:
        print(f"fault injection: {name} matched, exiting", file=sys.stderr, flush=True)
        os._exit(EXIT_STATUS)
