"""Task ids: the same for every delivery of an event, distinct across services."""

from __future__ import annotations

import uuid

from app.task_messages import plan_tasks, task_id_for
from handlers.routes import RECORD_CALL_EVENT, chains_of


def test_a_task_id_is_the_same_for_every_delivery_of_an_event() -> None:
    first = task_id_for("svc", "call.ended:c-1", RECORD_CALL_EVENT)
    assert first == task_id_for("svc", "call.ended:c-1", RECORD_CALL_EVENT)
    assert uuid.UUID(first).version == 5


def test_task_ids_differ_by_service_event_task_and_generation() -> None:
    ids = {
        task_id_for("svc", "call.ended:c-1", RECORD_CALL_EVENT),
        task_id_for("other-svc", "call.ended:c-1", RECORD_CALL_EVENT),
        task_id_for("svc", "call.ended:c-2", RECORD_CALL_EVENT),
        task_id_for("svc", "call.ended:c-1", "reports.daily_report"),
        task_id_for("svc", "call.ended:c-1", RECORD_CALL_EVENT, generation=1),
    }
    assert len(ids) == 5


def test_a_rollover_plans_its_chains_with_one_id_per_task() -> None:
    chains = plan_tasks("svc", "day.rolled_over", "day.rolled_over:*:2026-12-02")
    assert [tuple(task.name for task in chain) for chain in chains] == \
        chains_of("day.rolled_over")
    task_ids = [task.task_id for chain in chains for task in chain]
    assert len(set(task_ids)) == len(task_ids) > 1
