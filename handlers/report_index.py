"""The report index: which daily reports exist, in Redis.

Keys: `reports:by_day` (sorted set of `<tenant>|<date>`, scored by the start
of that day in its timezone, epoch seconds) and `report:<tenant>|<date>`
(hash: timezone, the file paths, calls, generatedAt, the event key and the
arrival seq of the rollover that made it). The retention clean-up removes
entries by day; the files on disk are kept.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any, cast
from zoneinfo import ZoneInfo

import redis
from redis.typing import EncodableT, FieldT

_BATCH = 500
# The tenant id of the all-tenants summary, as in a tenant-less rollover's event key.
ALL_TENANTS = "*"


def index_key(prefix: str) -> str:
    return f"{prefix}reports:by_day"


def entry_key(prefix: str, member: str) -> str:
    return f"{prefix}report:{member}"


def day_start(day: date, timezone: str) -> datetime:
    """Midnight at the start of `day` in `timezone`."""
    return datetime.combine(day, time.min, ZoneInfo(timezone))


def record_reports(
    client: redis.Redis, prefix: str, written: list[dict[str, Any]], *, day: date,
    timezone: str, event_key: str, seq: int, ttl_s: int,
) -> None:
    """Add (or refresh) an index entry for each report just written."""
    score = day_start(day, timezone).timestamp()
    pipe = client.pipeline(transaction=True)
    for entry in written:
        member = f"{entry['tenantId']}|{day.isoformat()}"
        fields: dict[FieldT, EncodableT] = {
            "tenantId": entry["tenantId"], "date": day.isoformat(), "timezone": timezone,
            "calls": entry["calls"], "eventKey": event_key, "seq": seq,
            "json": entry["json"], "csv": entry["csv"], "html": entry["html"],
            "indexedAt": datetime.now(UTC).isoformat(timespec="seconds")}
        pipe.hset(entry_key(prefix, member), mapping=fields)
        pipe.expire(entry_key(prefix, member), ttl_s)
        pipe.zadd(index_key(prefix), {member: score})
    pipe.expire(index_key(prefix), ttl_s)
    pipe.execute()


def remove_reports_before(client: redis.Redis, prefix: str, cutoff: datetime) -> int:
    """Remove the index entries of days that started before `cutoff`; return how many."""
    removed = 0
    # The client returns bytes (decode_responses is off), whatever its stubs allow.
    while members := cast(list[bytes], client.zrangebyscore(
            index_key(prefix), "-inf", f"({cutoff.timestamp()}", start=0, num=_BATCH)):
        pipe = client.pipeline(transaction=True)
        pipe.delete(*(entry_key(prefix, member.decode()) for member in members))
        pipe.zrem(index_key(prefix), *members)
        removed += int(pipe.execute()[1])
    return removed
