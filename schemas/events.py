"""The six inbound platform events (CONTRACT section 1)."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BeforeValidator, Field, StrictInt

from schemas.base import PlatformModel, ShortStr, Timestamp, UriStr


def _known_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA timezone {name!r}") from None
    return name


TimezoneName = Annotated[ShortStr, AfterValidator(_known_timezone)]


class CallEvent(PlatformModel):
    """Fields every `call.*` event carries."""

    event_type: str
    call_id: ShortStr
    timestamp: Timestamp
    trace_id: ShortStr | None = None


class Action(PlatformModel):
    action: ShortStr | None = None
    action_data: dict | None = None


class DialplanResolution(PlatformModel):
    dialplan_id: ShortStr | None = None
    tenant_id: ShortStr | None = None
    action: Action | None = None
    matched_user: dict | None = None
    matched_contact: dict | None = None


class CallStarted(CallEvent):
    event_type: Literal["call.started"]
    from_: UriStr | None = Field(default=None, alias="from")
    to: UriStr | None = None
    dialplan_resolution: DialplanResolution | None = None
    media_info: dict[str, str] | None = None


class CallAnswered(CallEvent):
    event_type: Literal["call.answered"]


class UserIdentified(CallEvent):
    event_type: Literal["user.identified.for_call"]
    user_id: ShortStr | None = None
    contact_id: StrictInt | None = None
    tenant_id: ShortStr | None = None


class RecordingAvailable(CallEvent):
    event_type: Literal["call.recording.available"]
    recording_uri: UriStr | None = None
    public_url: UriStr | None = None


class CallEnded(CallEvent):
    event_type: Literal["call.ended"]
    reason: ShortStr | None = None


def _iso_date(value: object) -> object:
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError("date must be YYYY-MM-DD")
    return value


class DayRolledOver(PlatformModel):
    event_type: Literal["day.rolled_over"]
    timestamp: Timestamp
    date: Annotated[date, BeforeValidator(_iso_date)]
    timezone: TimezoneName
    trace_id: ShortStr | None = None
    tenant_id: ShortStr | None = None


PlatformEvent = (
    CallStarted | CallAnswered | UserIdentified | RecordingAvailable | CallEnded | DayRolledOver
)

EVENT_MODELS: dict[str, type[PlatformEvent]] = {
    "call.started": CallStarted,
    "call.answered": CallAnswered,
    "user.identified.for_call": UserIdentified,
    "call.recording.available": RecordingAvailable,
    "call.ended": CallEnded,
    "day.rolled_over": DayRolledOver,
}
