"""What every platform event model shares: both spellings, strict timestamps.

Producers that serialize straight from the protobuf contracts send
snake_case; the rest send camelCase. Fields are declared in snake_case with
a camelCase alias, and either name is accepted on input.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, StringConstraints
from pydantic.alias_generators import to_camel

# Go and Rust producers send up to 9 fractional digits; Python keeps 6.
_FRACTION = re.compile(r"(\.\d{6})\d+")
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)


def _parse_rfc3339(value: Any) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("timestamp must carry an offset")
        return value
    if not isinstance(value, str):
        raise ValueError("timestamp must be an RFC 3339 string")
    if not _RFC3339.match(value):
        raise ValueError("timestamp must be RFC 3339 with an offset, e.g. 2026-12-02T10:00:00Z")
    text = _FRACTION.sub(r"\1", value)
    return datetime.fromisoformat(text.replace("z", "Z"))


Timestamp = Annotated[datetime, BeforeValidator(_parse_rfc3339)]
ShortStr = Annotated[str, StringConstraints(min_length=1, max_length=256)]
UriStr = Annotated[str, StringConstraints(min_length=1, max_length=2048)]


class PlatformModel(BaseModel):
    """A platform message: camelCase or snake_case in, unknown fields kept."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        extra="allow",
        frozen=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The camelCase JSON form handed to handlers; offsets are kept."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
