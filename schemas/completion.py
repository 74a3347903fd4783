"""The completion event the worker publishes when a task finishes (CONTRACT 2)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class TaskError(BaseModel):
    type: str
    message: str


class CompletionEvent(BaseModel):
    """`task.succeeded` or `task.failed`, published to the events exchange."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True)

    event_type: Literal["task.succeeded", "task.failed"]
    event_id: str
    timestamp: str
    trace_id: str | None
    task_id: str
    task_name: str
    source_event_type: str
    source_event_key: str
    attempts: int
    duration_ms: float
    result: dict[str, Any] | None = None
    error: TaskError | None = None

    @property
    def routing_key(self) -> str:
        return f"{self.event_type}.{self.task_name}"

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
