"""Recording the exchange: what was published comes back, in order, bytes intact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import amqp

from app.recording import read_recording
from app.topics import matches_any
from tests.conftest import RECORDINGS, Tap, cli

READY_TIMEOUT_S = 30.0
FINISH_TIMEOUT_S = 120.0


@contextmanager
def recording(path: Path, tap: Tap, *args: str) -> Iterator[subprocess.Popen[str]]:
    """`task-service record PATH ARGS`, returned once its tap queue is bound."""
    log = path.with_suffix(".stderr")
    with log.open("w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "app.cli", "record", str(path), *args],
                                   env={**os.environ, **tap.env}, stdout=subprocess.PIPE,
                                   stderr=stderr, text=True)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while "Ctrl-C stops" not in log.read_text():
            assert process.poll() is None, f"record exited early: {log.read_text()}"
            assert time.monotonic() < deadline, "record did not bind its tap in time"
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=FINISH_TIMEOUT_S)
        if process.stdout is not None:
            process.stdout.close()


def finished(process: subprocess.Popen[str]) -> str:
    """Wait (bounded) for a recording to stop by itself; return its stdout."""
    stdout, _ = process.communicate(timeout=FINISH_TIMEOUT_S)
    assert process.returncode == 0, stdout
    return stdout


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(text) for text in path.read_text(encoding="utf-8").splitlines()]


def test_recording_a_replay_of_the_sample_day_gives_back_its_keys_and_bodies_in_order(
    tmp_path: Path, tap: Tap
) -> None:
    source = RECORDINGS / "platform-day.jsonl"
    expected = list(read_recording(source, strict=True))
    recorded_path = tmp_path / "day.jsonl"
    with recording(recorded_path, tap, "--count", str(len(expected))) as process:
        replayed = cli("replay", str(source), env=tap.env)
        assert replayed.returncode == 0, replayed.stderr
        assert f"recorded {len(expected)} messages" in finished(process)

    recorded = list(read_recording(recorded_path, strict=True))
    assert [(m.routing_key, m.body) for m in recorded] == [
        (m.routing_key, m.body) for m in expected]
    assert [m.properties for m in recorded] == [m.properties for m in expected]
    assert {m.exchange for m in recorded} == {tap.exchange}
    assert recorded[0].t == 0.0
    assert all(a.t <= b.t for a, b in zip(recorded, recorded[1:], strict=False))


def test_bad_input_round_trips_byte_for_byte(tmp_path: Path, tap: Tap) -> None:
    source = RECORDINGS / "bad-input.jsonl"
    recorded_path = tmp_path / "bad.jsonl"
    with recording(recorded_path, tap, "--count", "12") as process:
        assert cli("replay", str(source), env=tap.env).returncode == 0
        finished(process)

    pairs = list(zip(read_recording(source, strict=True),
                     read_recording(recorded_path, strict=True), strict=True))
    assert len(pairs) == 12
    assert all(original.body == again.body for original, again in pairs)
    assert pairs[6][1].body == b"\xff\xfe\x00" and pairs[9][1].body == b""
    # Line for line the same document, kept the same way (body, body_text or
    # body_b64), apart from the time and the exchange it was recorded on.
    for original, again in zip(lines_of(source), lines_of(recorded_path), strict=True):
        for line in (original, again):
            del line["t"], line["exchange"]
        assert again == original


def test_properties_and_headers_are_recorded_as_received_and_replayed_as_recorded(
    tmp_path: Path, tap: Tap
) -> None:
    properties = {
        "content_type": "application/json", "content_encoding": "utf-8", "delivery_mode": 2,
        "priority": 3, "correlation_id": "corr-1", "reply_to": "somewhere", "expiration": "600000",
        "message_id": "evt-1", "timestamp": 1764669600, "type": "call.ended", "app_id": "sip-gw",
        "headers": {"x-tenant": "tenant-acme", "x-retries": 2, "x-flag": True,
                    "x-nested": {"a": [1, "two"]}},
    }
    body = '{"callId":"c-1","note":"ü"}'.encode()
    first = tmp_path / "first.jsonl"
    with recording(first, tap, "--count", "1") as process:
        _publish(tap, "call.ended", body, properties)
        finished(process)
    [line] = lines_of(first)
    assert line["properties"] == properties
    assert line["body"] == {"callId": "c-1", "note": "ü"}

    second = tmp_path / "second.jsonl"
    with recording(second, tap, "--count", "1") as process:
        assert cli("replay", str(first), env=tap.env).returncode == 0
        finished(process)
    [again] = lines_of(second)
    assert again["properties"] == properties and again["body"] == line["body"]


def test_body_that_is_json_but_not_compact_is_kept_as_text(tmp_path: Path, tap: Tap) -> None:
    bodies = [b'{"a": 1}', b"NaN", b'"text"', b"[1,2]"]
    path = tmp_path / "kinds.jsonl"
    with recording(path, tap, "--count", "4") as process:
        for body in bodies:
            _publish(tap, "k", body, {})
        finished(process)
    lines = lines_of(path)
    assert [sorted(set(line) & {"body", "body_text", "body_b64"}) for line in lines] == [
        ["body_text"], ["body_text"], ["body"], ["body"]]
    assert [m.body for m in read_recording(path, strict=True)] == bodies


def test_bind_patterns_choose_what_is_recorded(tmp_path: Path, tap: Tap) -> None:
    keys = ["call.started", "call.ended", "day.rolled_over", "user.identified.for_call", "x"]
    patterns = ["call.*", "#.for_call"]
    path = tmp_path / "some.jsonl"
    with recording(path, tap, "--bind", patterns[0], "--bind", patterns[1],
                   "--seconds", "3") as process:
        for key in keys:
            _publish(tap, key, b"{}", {})
        assert "(time is up)" in finished(process)
    expected = [key for key in keys if matches_any(patterns, key)]
    assert [line["routing_key"] for line in lines_of(path)] == expected


def test_seconds_stops_a_quiet_recording_with_an_empty_valid_file(tmp_path: Path,
                                                                  tap: Tap) -> None:
    path = tmp_path / "quiet.jsonl"
    started = time.monotonic()
    with recording(path, tap, "--seconds", "1") as process:
        stdout = finished(process)
    assert time.monotonic() - started < 30
    assert "recorded 0 messages" in stdout and "(time is up)" in stdout
    assert path.read_text() == ""


def test_ctrl_c_stops_a_recording_leaving_complete_lines(tmp_path: Path, tap: Tap) -> None:
    path = tmp_path / "stopped.jsonl"
    with recording(path, tap) as process:
        for n in range(20):
            _publish(tap, "call.ended", b'{"n":%d}' % n, {})
        deadline = time.monotonic() + FINISH_TIMEOUT_S
        while path.read_text().count("\n") < 20 and time.monotonic() < deadline:
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        stdout = finished(process)
    assert "recorded 20 messages" in stdout and "(interrupted)" in stdout
    assert [line["body"]["n"] for line in lines_of(path)] == list(range(20))


def test_t_is_seconds_since_the_first_message(tmp_path: Path, tap: Tap) -> None:
    path = tmp_path / "spaced.jsonl"
    with recording(path, tap, "--count", "2") as process:
        _publish(tap, "a", b"1", {})
        time.sleep(1.0)
        _publish(tap, "b", b"2", {})
        finished(process)
    first, second = lines_of(path)
    assert first["t"] == 0.0
    assert 0.8 <= second["t"] <= 5.0


def test_unreachable_broker_is_one_line_and_leaves_the_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "keep.jsonl"
    path.write_text("precious\n")
    result = cli("record", str(path), "--count", "1",
                 env={"RABBITMQ_URL": "amqp://guest:hunter2@127.0.0.1:1/"}, timeout_s=60)
    assert result.returncode == 1
    assert "RabbitMQ unavailable" in result.stderr and "hunter2" not in result.stderr
    assert "Traceback" not in result.stderr
    assert path.read_text() == "precious\n"


def _publish(tap: Tap, routing_key: str, body: bytes, properties: dict[str, Any]) -> None:
    names = {"headers": "application_headers"}
    message = amqp.Message(body, **{names.get(k, k): v for k, v in properties.items()})
    tap.channel.basic_publish(message, exchange=tap.exchange, routing_key=routing_key)
