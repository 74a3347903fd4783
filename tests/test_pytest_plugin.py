"""The pytest plugin as a platform developer meets it: installed, not configured."""

from __future__ import annotations

import json

import pytest

from tests.conftest import require_services

# One call, and the call's events arriving out of order.
MINI = [
    ("call.ended", {"eventType": "call.ended", "callId": "c-1", "reason": "normal_clearing",
                    "timestamp": "2026-12-02T10:05:00Z"}),
    ("call.started", {"eventType": "call.started", "callId": "c-1",
                      "timestamp": "2026-12-02T10:00:00Z",
                      "dialplanResolution": {"tenantId": "tenant-acme"}}),
    ("call.answered", {"eventType": "call.answered", "callId": "c-1",
                       "timestamp": "2026-12-02T10:00:05Z"}),
    ("call.answered", {"eventType": "call.answered", "callId": "c-1",
                       "timestamp": "2026-12-02T10:00:05Z"}),
]

TEST_FILE = '''
from pathlib import Path

MINI = Path(__file__).parent / "mini.jsonl"


def test_mini(task_service_factory, snapshot, tmp_path):
    with task_service_factory(tmp_path, concurrency=1) as run:
        run.replay(MINI)
        run.settle(timeout_s=120)
        assert len(run.completions("task.succeeded.calls.*")) == 3
        assert run.state.lookup("call.answered:c-1")["duplicates"] == 1
        snapshot.assert_match(run, MINI)
'''


def test_plugin_runs_a_recording_and_keeps_its_snapshot_next_to_it(
    pytester: pytest.Pytester,
) -> None:
    require_services()
    pytester.makefile(".jsonl", mini="\n".join(
        json.dumps({"t": 0, "routing_key": key, "body": body}, separators=(",", ":"))
        for key, body in MINI))
    pytester.makepyfile(test_mini=TEST_FILE)

    first = pytester.runpytest_subprocess("--snapshot-update", timeout=300)
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines(["*snapshots written*", "*mini.snapshot.jsonl"])
    snapshot_file = pytester.path / "mini.snapshot.jsonl"
    lines = snapshot_file.read_text().splitlines()
    assert len(lines) == 3 and all('"taskId":"<taskId>"' in line for line in lines)

    snapshot_file.write_text(snapshot_file.read_text().replace('"answered":true',
                                                               '"answered":false', 1))
    second = pytester.runpytest_subprocess(timeout=300)
    second.assert_outcomes(failed=1)
    second.stdout.fnmatch_lines([
        "*outcomes of mini.jsonl differ from mini.snapshot.jsonl: 1 differences*",
        "*changed:*calls.record_event: result.answered: false -> true*",
        "*run pytest --snapshot-update*",
    ])
