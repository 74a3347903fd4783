"""Call records: the five `call.*`-type events merged into one record per call.

A record holds the tenant (from the dialplan, else the identified user), the
start, answer and end times, the end reason, caller and callee (masked), the
dialplan, user and contact ids and the recording's URIs. Ring and talk
seconds are derived from the times (`call_summary`). A `call.ended` whose
`call.started` never arrives still makes a record.

Each event type writes its own fields, so the order of arrival does not
matter; of two events of the same kind for one call, the one that arrived
first is kept. Each field group
also keeps the arrival seq of the event that wrote it, so a daily report can
use exactly the events that arrived before its rollover.

Keys: `call:<callId>` (hash) and `calls:by_time` (sorted set of call ids,
scored by start time, else end time, in epoch seconds). They are kept for
RETENTION_DAYS, until the clean-up after a rollover removes them; their
expiry is only a safety net behind it.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any, cast

import redis
from celery import shared_task

from app.event_task import EventTask, worker_resources
from app.privacy import mask_phones_in, mask_sip_uri
from handlers.late_events import schedule_if_late
from handlers.routes import RECORD_CALL_EVENT

_REMOVE_BATCH = 500

# KEYS: call hash, by_time zset   ARGV: callId, ttl, field1, value1, ...
# One field of each write is its group's arrival seq (`startedSeq`, ...).
# The earliest arrival wins: a later event of the same kind for the same
# call (a producer's retry under another message id) changes nothing, even
# when a worker gets to it first, so a report sees what arrived before it.
_MERGE = """
local seq_field, seq = nil, nil
for i = 3, #ARGV, 2 do
  if string.sub(ARGV[i], -3) == 'Seq' then seq_field, seq = ARGV[i], tonumber(ARGV[i + 1]) end
end
local stored = seq_field and redis.call('HGET', KEYS[1], seq_field)
if not (stored and tonumber(stored) <= seq) then
  for i = 3, #ARGV, 2 do
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
local score = redis.call('HGET', KEYS[1], 'startedEpoch')
  or redis.call('HGET', KEYS[1], 'endedEpoch')
if score then
  redis.call('ZADD', KEYS[2], score, ARGV[1])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return redis.call('HGETALL', KEYS[1])
"""


@functools.lru_cache(maxsize=4)
def _merge_script(client: redis.Redis) -> Any:
    """The merge script, registered once per client (it hashes the Lua text)."""
    return client.register_script(_MERGE)


def _epoch(timestamp: str) -> str:
    return repr(datetime.fromisoformat(timestamp).timestamp())


def record_fields(event: dict[str, Any], seq: int) -> dict[str, str]:
    """The record fields one event contributes; phone numbers are masked here."""
    event_type = event["eventType"]
    fields: dict[str, Any] = {"callId": event["callId"]}
    if event_type == "call.started":
        dialplan = event.get("dialplanResolution") or {}
        fields |= {
            "startedAt": event["timestamp"], "startedEpoch": _epoch(event["timestamp"]),
            "startedSeq": seq, "from": mask_sip_uri(event.get("from")),
            "to": mask_sip_uri(event.get("to")), "dialplanTenant": dialplan.get("tenantId"),
            "dialplanId": dialplan.get("dialplanId"),
        }
    elif event_type == "call.answered":
        fields |= {"answeredAt": event["timestamp"], "answeredEpoch": _epoch(event["timestamp"]),
                   "answeredSeq": seq}
    elif event_type == "user.identified.for_call":
        fields |= {"userId": event.get("userId"), "contactId": event.get("contactId"),
                   "userTenant": event.get("tenantId"), "identifiedSeq": seq}
    elif event_type == "call.recording.available":
        fields |= {"recordingUri": mask_phones_in(event.get("recordingUri") or "") or None,
                   "publicUrl": mask_phones_in(event.get("publicUrl") or "") or None,
                   "recordingSeq": seq}
    elif event_type == "call.ended":
        fields |= {"endedAt": event["timestamp"], "endedEpoch": _epoch(event["timestamp"]),
                   "endedSeq": seq, "reason": event.get("reason") or "unknown"}
    return {name: str(value) for name, value in fields.items() if value is not None}


# Record field that shows an event type was merged -> that event type.
_SEEN_BY = {"startedSeq": "call.started", "answeredSeq": "call.answered",
            "identifiedSeq": "user.identified.for_call",
            "recordingSeq": "call.recording.available", "endedSeq": "call.ended"}


def ring_and_talk_seconds(started: datetime | None, answered: datetime | None,
                          ended: datetime | None) -> tuple[float | None, float | None]:
    """Seconds it rang (start to answer, or to end if never answered) and talked.

    None where an end of the span is unknown; never below 0.
    """
    return _span_s(started, answered if answered is not None else ended), \
        _span_s(answered, ended)


def _span_s(start: datetime | None, end: datetime | None) -> float | None:
    # Subtracting datetimes keeps whole microseconds, as the report's sums need.
    if start is None or end is None:
        return None
    return max((end - start).total_seconds(), 0.0)


def call_summary(record: dict[str, str]) -> dict[str, Any]:
    """What the completion event of a record task says about the call, so far.

    Phone numbers are masked in the record already; absent facts are left out.
    """
    moments = [datetime.fromisoformat(record[f"{group}At"]) if f"{group}At" in record else None
               for group in ("started", "answered", "ended")]
    ring_s, talk_s = ring_and_talk_seconds(*moments)
    contact = record.get("contactId")
    summary: dict[str, Any] = {
        "callId": record["callId"],
        "tenantId": record.get("dialplanTenant") or record.get("userTenant") or "unknown",
        "answered": "answeredEpoch" in record,
        "ended": "endedEpoch" in record,
        "eventsSeen": [event for field, event in _SEEN_BY.items() if field in record],
        "startedAt": record.get("startedAt"),
        "answeredAt": record.get("answeredAt"),
        "endedAt": record.get("endedAt"),
        "ringSeconds": None if ring_s is None else round(ring_s, 3),
        "talkSeconds": None if talk_s is None else round(talk_s, 3),
        "reason": record.get("reason"),
        "from": record.get("from"),
        "to": record.get("to"),
        "dialplanId": record.get("dialplanId"),
        "userId": record.get("userId"),
        "contactId": int(contact) if contact and contact.isdigit() else contact,
        "recordingUri": record.get("recordingUri"),
        "publicUrl": record.get("publicUrl"),
    }
    return {name: value for name, value in summary.items() if value is not None}


def remove_calls_before(client: redis.Redis, prefix: str, cutoff: datetime) -> int:
    """Remove the records of calls that started (else ended) before `cutoff`.

    Returns how many calls were removed from the index; a record whose hash
    had already expired counts too, as its index entry was still there.
    """
    removed = 0
    index = calls_index_key(prefix)
    # The client returns bytes (decode_responses is off), whatever its stubs allow.
    while call_ids := cast(list[bytes], client.zrangebyscore(
            index, "-inf", f"({cutoff.timestamp()}", start=0, num=_REMOVE_BATCH)):
        pipe = client.pipeline(transaction=True)
        pipe.delete(*(call_key(prefix, call_id.decode()) for call_id in call_ids))
        pipe.zrem(index, *call_ids)
        removed += int(pipe.execute()[1])
    return removed


def call_key(prefix: str, call_id: str) -> str:
    return f"{prefix}call:{call_id}"


def calls_index_key(prefix: str) -> str:
    return f"{prefix}calls:by_time"


@shared_task(base=EventTask, name=RECORD_CALL_EVENT, bind=True)
def record_event(self: EventTask, event: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Merge one call event into its call record; return the call's summary.

    An event that came after its day was reported schedules the report's
    regeneration (`handlers.late_events`); the summary then lists those days.
    """
    resources = worker_resources()
    prefix = resources.settings.redis_prefix
    fields = record_fields(event, int(meta["seq"]))
    argv: list[Any] = [event["callId"], resources.settings.records_ttl_s]
    for name, value in fields.items():
        argv += [name, value]

    keys = [call_key(prefix, event["callId"]), calls_index_key(prefix)]
    flat = _merge_script(resources.redis)(keys=keys, args=argv)
    record = {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}

    summary = call_summary(record)
    late = schedule_if_late(self.app, resources.redis, prefix, record, meta,
                            service=resources.settings.service_name,
                            debounce_s=resources.settings.late_report_debounce_s,
                            ttl_s=resources.settings.records_ttl_s)
    return summary | ({"lateForReports": late} if late else {})
