"""Models of what crosses the service's boundary: platform and completion events."""

from schemas.completion import CompletionEvent, TaskError
from schemas.events import (
    EVENT_MODELS,
    CallAnswered,
    CallEnded,
    CallStarted,
    DayRolledOver,
    PlatformEvent,
    RecordingAvailable,
    UserIdentified,
)

__all__ = [
    "EVENT_MODELS",
    "CallAnswered",
    "CallEnded",
    "CallStarted",
    "CompletionEvent",
    "DayRolledOver",
    "PlatformEvent",
    "RecordingAvailable",
    "TaskError",
    "UserIdentified",
]
