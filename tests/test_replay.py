"""Replaying a recording: pacing, filters, dry runs, interruption, progress."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.recording import parse_line
from app.replay import Pacer, select
from tests.conftest import Tap, cli


class FakeClock:
    """A clock that moves only when the pacer sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


def pace(times: list[float], **options: float) -> list[float]:
    """When each message would go out, relative to the first."""
    clock = FakeClock()
    pacer = Pacer(clock=clock, sleep=clock.sleep, **options)
    sent = []
    for t in times:
        pacer.wait_for_turn(t)
        sent.append(round(clock.now - 100.0, 6))
    return sent


def test_without_speed_or_rate_nothing_waits() -> None:
    assert pace([0.0, 5.0, 60.0]) == [0.0, 0.0, 0.0]


def test_speed_scales_the_recorded_spacing_from_the_first_message() -> None:
    assert pace([10.0, 11.0, 14.0], speed=1) == [0.0, 1.0, 4.0]
    assert pace([10.0, 11.0, 14.0], speed=2) == [0.0, 0.5, 2.0]


def test_rate_keeps_messages_apart() -> None:
    assert pace([0.0, 0.0, 0.0, 0.0], rate_per_s=4) == [0.0, 0.25, 0.5, 0.75]


def test_speed_and_rate_together_take_the_later_of_the_two() -> None:
    assert pace([0.0, 0.1, 3.0], speed=1, rate_per_s=2) == [0.0, 0.5, 3.0]


def test_select_keeps_messages_matching_any_pattern() -> None:
    lines = [parse_line(json.dumps({"routing_key": key, "body": {}}), n)
             for n, key in enumerate(["call.ended", "day.rolled_over", "task.x.y"], start=1)]
    assert [m.routing_key for m in select(lines, ["call.*", "task.#"])] == ["call.ended",
                                                                            "task.x.y"]
    assert len(list(select(lines, []))) == 3


def write_recording(path: Path, times: list[float], routing_keys: list[str] | None = None) -> Path:
    keys = routing_keys or ["call.ended"] * len(times)
    path.write_text("".join(
        json.dumps({"t": t, "routing_key": key, "properties": {"message_id": f"m{n}"},
                    "body": {"n": n}}) + "\n"
        for n, (t, key) in enumerate(zip(times, keys, strict=True))))
    return path


def reported_seconds(stdout: str) -> float:
    match = re.search(r" in ([0-9.]+)s \(", stdout)
    assert match, stdout
    return float(match.group(1))


def test_speed_1_on_a_3_second_recording_takes_about_3_seconds(tmp_path: Path, tap: Tap) -> None:
    recording = write_recording(tmp_path / "three.jsonl", [0.0, 0.5, 1.0, 2.0, 2.5, 3.0])
    result = cli("replay", "--speed", "1", str(recording), env=tap.env)
    assert result.returncode == 0, result.stderr
    assert 2.5 <= reported_seconds(result.stdout) <= 6.0
    assert "6 confirmed, 0 unroutable" in result.stdout
    assert [json.loads(m.body)["n"] for m in tap.drain()] == list(range(6))

    twice = cli("replay", "--speed", "2", str(recording), env=tap.env)
    assert 1.2 <= reported_seconds(twice.stdout) <= 4.5
    as_fast_as_possible = cli("replay", str(recording), env=tap.env)
    assert reported_seconds(as_fast_as_possible.stdout) < 2.5


def test_rate_caps_messages_per_second(tmp_path: Path, tap: Tap) -> None:
    recording = write_recording(tmp_path / "burst.jsonl", [0.0] * 11)
    result = cli("replay", "--rate", "5", str(recording), env=tap.env)
    assert result.returncode == 0, result.stderr
    assert 1.8 <= reported_seconds(result.stdout) <= 6.0
    assert len(tap.drain()) == 11


def test_filter_publishes_only_matching_routing_keys(tmp_path: Path, tap: Tap) -> None:
    keys = ["call.started", "call.ended", "day.rolled_over", "user.identified.for_call"]
    recording = write_recording(tmp_path / "mixed.jsonl", [0.0] * 4, keys)
    result = cli("replay", "--filter", "call.*", "--filter", "#.for_call", str(recording),
                 env=tap.env)
    assert result.returncode == 0, result.stderr
    assert "3 confirmed, 0 unroutable, 0 malformed lines skipped, 1 filtered out" in result.stdout
    assert [m.delivery_info["routing_key"] for m in tap.drain()] == [
        "call.started", "call.ended", "user.identified.for_call"]


def test_exchange_option_overrides_the_configured_exchange(tmp_path: Path, tap: Tap) -> None:
    recording = write_recording(tmp_path / "one.jsonl", [0.0])
    result = cli("replay", "--exchange", tap.exchange, str(recording),
                 env={"EVENTS_EXCHANGE": f"{tap.exchange}.elsewhere"})
    assert result.returncode == 0, result.stderr
    assert f"to {tap.exchange}: 1 confirmed" in result.stdout
    assert len(tap.drain()) == 1


def test_dry_run_lists_the_messages_without_a_broker(tmp_path: Path) -> None:
    recording = write_recording(tmp_path / "two.jsonl", [0.0, 30.0],
                                ["call.ended", "day.rolled_over"])
    result = cli("replay", "--dry-run", "--speed", "1", "--filter", "day.#", str(recording),
                 env={"RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:1/"}, timeout_s=30)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["30.000", "day.rolled_over", "7", "bytes"]
    assert lines[-1].startswith("dry run: 1 messages would be published")
    assert "1 filtered out" in lines[-1] and "nothing was sent" in lines[-1]


def test_ctrl_c_stops_a_replay_with_its_counts(tmp_path: Path, tap: Tap) -> None:
    recording = write_recording(tmp_path / "slow.jsonl", [0.0, 0.1, 30.0])
    process = subprocess.Popen([sys.executable, "-m", "app.cli", "replay", "--speed", "1",
                                str(recording)], env={**os.environ, **tap.env},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    received = []
    deadline = time.monotonic() + 20  # the third message is due only after 30 s
    while len(received) < 2 and time.monotonic() < deadline:
        received += tap.drain()
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    stdout, _ = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "interrupted slow.jsonl" in stdout and "2 confirmed, 0 unroutable" in stdout
    assert len(received) == 2


def test_quiet_output_when_not_a_terminal_and_a_bar_on_one(tmp_path: Path, tap: Tap) -> None:
    recording = write_recording(tmp_path / "few.jsonl", [0.0] * 5)
    quiet = cli("replay", str(recording), env=tap.env)
    assert quiet.stderr == ""  # five messages take less than one quiet interval
    assert "5 confirmed, 0 unroutable" in quiet.stdout

    primary, secondary = pty.openpty()
    try:
        process = subprocess.run([sys.executable, "-m", "app.cli", "replay", str(recording)],
                                 env={**os.environ, **tap.env, "COLUMNS": "120"},
                                 stdout=subprocess.PIPE, stderr=secondary, timeout=60,
                                 check=False)
        os.close(secondary)
        terminal = _read_all(primary)
    finally:
        os.close(primary)
    assert process.returncode == 0
    assert "replay" in terminal and "5/5" in terminal and "msg/s" in terminal


def _read_all(fd: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the other end is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("flag", ["--speed", "--rate"])
def test_negative_pacing_is_refused(tmp_path: Path, flag: str) -> None:
    recording = write_recording(tmp_path / "one.jsonl", [0.0])
    result = cli("replay", flag, "-1", str(recording), timeout_s=30)
    assert result.returncode == 2 and "Invalid value" in result.stderr
