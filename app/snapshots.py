"""Snapshots: the outcomes of a recording, kept in a file next to it.

The outcomes are the completion events the service published while it
processed the recording, with what changes from run to run set aside: ids
and times become placeholders (`"<eventId>"`), and the run's own paths
become names (`"<reports>"`). They are sorted, because tasks finish in an
order that depends on scheduling. `platform-day.jsonl` keeps its snapshot in
`platform-day.snapshot.jsonl`, one outcome a line, so that a change shows as
a change of lines in review.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

VOLATILE_FIELDS = ("eventId", "taskId", "timestamp", "durationMs")
# Inside a task's result: times that depend on when the run happened.
VOLATILE_RESULT_FIELDS = ("generatedAt", "stateCutoff")
SUFFIX = ".snapshot.jsonl"
MAX_DIFFERENCES_SHOWN = 40


def snapshot_path(recording: Path) -> Path:
    """Where the snapshot of `recording` is kept: beside it, `<name>.snapshot.jsonl`."""
    return recording.with_name(recording.name.removesuffix(".jsonl") + SUFFIX)


def normalise(bodies: Iterable[Mapping[str, Any]], *,
              replacements: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Completion event bodies with volatile fields set aside, in a stable order."""
    outcomes = [_replace_text(_mask_volatile(body), replacements or {}) for body in bodies]
    return sorted(outcomes, key=lambda outcome: (*_identity(outcome), _line(outcome)))


def to_text(outcomes: Iterable[Mapping[str, Any]]) -> str:
    """The snapshot file's text: one outcome a line, keys sorted."""
    return "".join(_line(outcome) + "\n" for outcome in outcomes)


def from_text(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def differences(expected: list[dict[str, Any]], actual: list[dict[str, Any]]) -> list[str]:
    """What changed, one readable line each; empty when the outcomes are equal.

    Outcomes are paired by source event key and task name, so a task that
    now fails shows as the fields that changed, not as one missing outcome
    and one unexpected one.
    """
    expected_by_id, actual_by_id = _by_identity(expected), _by_identity(actual)
    lines = []
    for identity in sorted(expected_by_id.keys() | actual_by_id.keys()):
        name = f"{identity[0]} {identity[1]}" + (f" #{identity[2] + 1}" if identity[2] else "")
        if identity not in actual_by_id:
            lines.append(f"missing:    {name}")
        elif identity not in expected_by_id:
            lines.append(f"unexpected: {name}: {_line(actual_by_id[identity])}")
        else:
            lines += [f"changed:    {name}: {change}" for change in
                      _field_changes(expected_by_id[identity], actual_by_id[identity])]
    return lines


def report(differences_found: list[str], *, expected_count: int, actual_count: int) -> str:
    """The differences as a message: a summary line, then at most MAX_DIFFERENCES_SHOWN."""
    shown = differences_found[:MAX_DIFFERENCES_SHOWN]
    hidden = len(differences_found) - len(shown)
    lines = [f"{len(differences_found)} differences ({expected_count} outcomes expected, "
             f"{actual_count} seen):", *(f"  {line}" for line in shown)]
    if hidden:
        lines.append(f"  ... and {hidden} more")
    return "\n".join(lines)


def _mask_volatile(body: Mapping[str, Any]) -> dict[str, Any]:
    return {name: f"<{name}>" if name in VOLATILE_FIELDS else _mask_nested(value)
            for name, value in body.items()}


def _mask_nested(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {name: f"<{name}>" if name in VOLATILE_RESULT_FIELDS else _mask_nested(item)
                for name, item in value.items()}
    if isinstance(value, list):
        return [_mask_nested(item) for item in value]
    return value


def _replace_text(value: Any, replacements: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        for old, new in replacements.items():
            value = value.replace(old, new)
        return value
    if isinstance(value, dict):
        return {key: _replace_text(item, replacements) for key, item in value.items()}
    if isinstance(value, list):
        return [_replace_text(item, replacements) for item in value]
    return value


def _identity(outcome: Mapping[str, Any]) -> tuple[str, str]:
    return (str(outcome.get("sourceEventKey", "")), str(outcome.get("taskName", "")))


def _by_identity(outcomes: list[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, Any]]:
    # A repeated completion (a redelivered task) is told apart by its rank.
    seen: Counter[tuple[str, str]] = Counter()
    keyed = {}
    for outcome in outcomes:
        identity = _identity(outcome)
        keyed[(*identity, seen[identity])] = outcome
        seen[identity] += 1
    return keyed


def _field_changes(expected: Any, actual: Any, path: str = "") -> list[str]:
    if isinstance(expected, dict) and isinstance(actual, dict):
        changes = []
        for key in sorted(expected.keys() | actual.keys()):
            where = f"{path}.{key}" if path else key
            if key not in actual:
                changes.append(f"{where} removed (was {_short(expected[key])})")
            elif key not in expected:
                changes.append(f"{where} added: {_short(actual[key])}")
            else:
                changes += _field_changes(expected[key], actual[key], where)
        return changes
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [change for index, (old, new) in enumerate(zip(expected, actual, strict=True))
                for change in _field_changes(old, new, f"{path}.{index}")]
    if expected == actual:
        return []
    return [f"{path or 'outcome'}: {_short(expected)} -> {_short(actual)}"]


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _line(outcome: Mapping[str, Any]) -> str:
    return json.dumps(outcome, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
