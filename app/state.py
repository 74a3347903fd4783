"""Task state in Redis: one record per event key (CONTRACT 3).

Keys, all under the service's prefix and all with an expiry:

- `event:<key>`          hash: state, eventType, routingKey, traceId, seq,
                         taskIds, tasksTotal/Succeeded/Failed, attempts,
                         lastError, duplicates, receivedAt, updatedAt
- `event:<key>:history`  list of JSON entries {at, state, ...}
- `task:<task id>`       hash: eventKey, taskName, state, attempts, result
- `seq`                  the bridge's arrival counter
- `inflight`             sorted set of unfinished event keys by arrival seq

Every transition is one Lua script, so a bridge and many worker processes
can move the same record without losing an update. The scripts are shared
by the asyncio store (bridge) and the blocking store (worker, CLI).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
import redis.asyncio

from app.errors import translate

FINAL_STATES = frozenset({"succeeded", "failed", "parked"})

# KEYS: event, history, seq, inflight
# ARGV: now, eventType, routingKey, traceId, ttl, redelivered, eventKey, tasksTotal,
#       generation
# Returns {outcome, seq or state, generation}. Outcomes:
# - new:         process it (also: a redelivery of an event that never got
#                queued, which keeps its arrival seq; or a parked event
#                re-published by `parked replay`, which starts a generation);
# - redelivered: the broker delivered again what we already handled (after a
#                crash before the ack): not a duplicate of the platform's;
# - duplicate:   the platform sent this event key again.
_CLAIM = """
local state = redis.call('HGET', KEYS[1], 'state')
local ttl = tonumber(ARGV[5])
local generation = tonumber(ARGV[9])
local stored_generation = tonumber(redis.call('HGET', KEYS[1], 'generation') or 0)
local function keep()
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end
if state == 'received' and ARGV[6] == '1' then
  local seq = redis.call('HGET', KEYS[1], 'seq')
  redis.call('RPUSH', KEYS[2], cjson.encode({at=ARGV[1], state='received', seq=tonumber(seq),
    redelivered=true}))
  keep()
  return {'new', seq, tostring(stored_generation)}
end
local replayed = generation > stored_generation and (state == 'failed' or state == 'parked')
if state and not replayed then
  local outcome, counter = 'duplicate', 'duplicates'
  if ARGV[6] == '1' then outcome, counter = 'redelivered', 'redeliveries' end
  redis.call('HINCRBY', KEYS[1], counter, 1)
  redis.call('RPUSH', KEYS[2], cjson.encode({at=ARGV[1], state=outcome}))
  keep()
  return {outcome, state, tostring(stored_generation)}
end
local seq = redis.call('INCR', KEYS[3])
redis.call('EXPIRE', KEYS[3], ttl)
if replayed then redis.call('HDEL', KEYS[1], 'lastError') end  -- that was the parked copy's
redis.call('HSET', KEYS[1], 'state', 'received', 'eventType', ARGV[2], 'routingKey', ARGV[3],
  'traceId', ARGV[4], 'seq', seq, 'tasksTotal', ARGV[8], 'tasksSucceeded', 0,
  'tasksFailed', 0, 'receivedAt', ARGV[1], 'updatedAt', ARGV[1], 'generation', generation)
redis.call('HSETNX', KEYS[1], 'duplicates', 0)
redis.call('ZADD', KEYS[4], seq, ARGV[7])
redis.call('EXPIRE', KEYS[4], ttl)
redis.call('RPUSH', KEYS[2], cjson.encode({at=ARGV[1], state='received', seq=seq,
  generation=generation}))
keep()
return {'new', tostring(seq), tostring(generation)}
"""

# KEYS: event, history   ARGV: sentAt, taskIds (JSON), ttl
# `at` is when the task messages were sent: a worker may have started them
# before the broker's confirm reached the bridge.
_QUEUED = """
redis.call('HSET', KEYS[1], 'taskIds', ARGV[2])
if redis.call('HGET', KEYS[1], 'state') == 'received' then
  redis.call('HSET', KEYS[1], 'state', 'queued', 'updatedAt', ARGV[1])
end
redis.call('RPUSH', KEYS[2],
  cjson.encode({at=ARGV[1], state='queued', taskIds=cjson.decode(ARGV[2])}))
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""

# KEYS: event, history   ARGV: field, value, history entry (JSON), ttl
# A note on a known event key (unknown keys stay unknown): one field set and
# one history entry, for a parked event re-published by `parked replay`
# (`replays`) and for the key the bridge then took it under (`replayedAs`).
# Its state stays as it is: the bridge's claim decides what happens next.
_NOTE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
"""

# KEYS: event, history   ARGV: now, reason, detail, ttl, routingKey, replays
# A message re-published by `parked replay` (replays > 0) and parked again is
# recorded as parked again, not as a duplicate.
_PARKED = """
local state = redis.call('HGET', KEYS[1], 'state')
local replays = tonumber(ARGV[6] or 0)
if state == 'parked' and replays > 0 then
  redis.call('HSET', KEYS[1], 'lastError', ARGV[2] .. ': ' .. ARGV[3], 'updatedAt', ARGV[1])
  redis.call('RPUSH', KEYS[2], cjson.encode({at=ARGV[1], state='parked', reason=ARGV[2],
    replay=replays}))
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
  return 1
end
if state and state ~= 'received' then
  redis.call('HINCRBY', KEYS[1], 'duplicates', 1)
  redis.call('RPUSH', KEYS[2], cjson.encode({at=ARGV[1], state='duplicate', reason=ARGV[2]}))
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'parked', 'lastError', ARGV[2] .. ': ' .. ARGV[3],
  'updatedAt', ARGV[1], 'routingKey', ARGV[5])
redis.call('HSETNX', KEYS[1], 'receivedAt', ARGV[1])
redis.call('HSETNX', KEYS[1], 'duplicates', 0)
redis.call('RPUSH', KEYS[2], cjson.encode({at=ARGV[1], state='parked', reason=ARGV[2]}))
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
"""

# KEYS: event, history, task   ARGV: now, taskId, taskName, attempt, ttl, eventKey
# Returns {previous state, crashes}: a redelivered task that already
# succeeded skips its side effects; a task found still `running` was
# delivered to a worker process that died under it, and that is counted.
_TASK_STARTED = """
local previous = redis.call('HGET', KEYS[3], 'state') or ''
if previous == 'succeeded' or previous == 'failed' then
  return {previous, 0}
end
local crashes = 0
if previous == 'running' then
  crashes = redis.call('HINCRBY', KEYS[3], 'crashes', 1)
end
redis.call('HSET', KEYS[3], 'state', 'running', 'eventKey', ARGV[6], 'taskName', ARGV[3],
  'attempts', ARGV[4], 'startedAt', ARGV[1])
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'succeeded' and state ~= 'failed' and state ~= 'parked' then
  redis.call('HSET', KEYS[1], 'state', 'running')
end
redis.call('HSET', KEYS[1], 'attempts', ARGV[4], 'updatedAt', ARGV[1])
if previous ~= 'deferred' then
  redis.call('RPUSH', KEYS[2], cjson.encode({at=ARGV[1], state='running', taskId=ARGV[2],
    taskName=ARGV[3], attempt=tonumber(ARGV[4])}))
end
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[5]) end
return {previous, crashes}
"""

# KEYS: event, history, task   ARGV: now, taskId, attempt, error, ttl, eventKey
_TASK_RETRYING = """
redis.call('HSET', KEYS[3], 'state', 'retrying', 'attempts', ARGV[3], 'lastError', ARGV[4],
  'eventKey', ARGV[6])
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'succeeded' and state ~= 'failed' and state ~= 'parked' then
  redis.call('HSET', KEYS[1], 'state', 'retrying')
end
redis.call('HSET', KEYS[1], 'lastError', ARGV[4], 'updatedAt', ARGV[1])
redis.call('RPUSH', KEYS[2], cjson.encode({at=ARGV[1], state='retrying', taskId=ARGV[2],
  attempt=tonumber(ARGV[3]), error=ARGV[4]}))
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[5]) end
return 1
"""

# KEYS: event, history, task   ARGV: now, taskId, reason, ttl
_TASK_DEFERRED = """
redis.call('HSET', KEYS[3], 'state', 'deferred')
if redis.call('HSETNX', KEYS[3], 'waitingSince', ARGV[1]) == 1 then
  redis.call('RPUSH', KEYS[2], cjson.encode({at=ARGV[1], state='waiting', taskId=ARGV[2],
    reason=ARGV[3]}))
end
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[4]) end
return 1
"""

# KEYS: event, history, task, inflight
# ARGV: now, taskId, outcome, attempt, error, ttl, eventKey, resultJson
_TASK_FINISHED = """
local previous = redis.call('HGET', KEYS[3], 'state')
if previous == 'succeeded' or previous == 'failed' then
  return redis.call('HGET', KEYS[1], 'state') or ''
end
redis.call('HSET', KEYS[3], 'state', ARGV[3], 'attempts', ARGV[4], 'finishedAt', ARGV[1],
  'result', ARGV[8], 'eventKey', ARGV[7])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[3], 'lastError', ARGV[5]) end
local counter = 'tasksSucceeded'
if ARGV[3] == 'failed' then counter = 'tasksFailed' end
redis.call('HINCRBY', KEYS[1], counter, 1)
redis.call('HSET', KEYS[1], 'updatedAt', ARGV[1])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'lastError', ARGV[5]) end
local entry = {at=ARGV[1], state='task_' .. ARGV[3], taskId=ARGV[2], attempt=tonumber(ARGV[4])}
if ARGV[5] ~= '' then entry['error'] = ARGV[5] end
redis.call('RPUSH', KEYS[2], cjson.encode(entry))
local done = tonumber(redis.call('HGET', KEYS[1], 'tasksSucceeded') or 0)
local failed = tonumber(redis.call('HGET', KEYS[1], 'tasksFailed') or 0)
local total = tonumber(redis.call('HGET', KEYS[1], 'tasksTotal') or 1)
local state = redis.call('HGET', KEYS[1], 'state') or ''
if done + failed >= total then
  state = 'succeeded'
  if failed > 0 then state = 'failed' end
  redis.call('HSET', KEYS[1], 'state', state)
  redis.call('RPUSH', KEYS[2], cjson.encode({at=ARGV[1], state=state}))
  redis.call('ZREM', KEYS[4], ARGV[7])
end
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[6]) end
return state
"""


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Claim:
    """What the bridge learns when it claims an event key."""

    outcome: str  # new | duplicate | redelivered
    seq: int | None = None
    existing_state: str | None = None
    generation: int = 0

    @property
    def is_new(self) -> bool:
        return self.outcome == "new"


class StateKeys:
    """Names of the Redis keys under one service prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.seq = f"{prefix}seq"
        self.inflight = f"{prefix}inflight"

    def event(self, key: str) -> str:
        return f"{self.prefix}event:{key}"

    def history(self, key: str) -> str:
        return f"{self.prefix}event:{key}:history"

    def task(self, task_id: str) -> str:
        return f"{self.prefix}task:{task_id}"

    def suspect(self, digest: str) -> str:
        return f"{self.prefix}suspect:{digest}"


class AsyncStateStore:
    """The bridge's view of task state (redis.asyncio; never blocks the loop)."""

    def __init__(self, client: redis.asyncio.Redis, prefix: str, ttl_s: int) -> None:
        self.client = client
        self.keys = StateKeys(prefix)
        self.ttl_s = ttl_s
        self._claim = client.register_script(_CLAIM)
        self._queued = client.register_script(_QUEUED)
        self._parked = client.register_script(_PARKED)
        self._note = client.register_script(_NOTE)

    async def claim(
        self, *, key: str, event_type: str, routing_key: str, trace_id: str | None,
        redelivered: bool, tasks_total: int, generation: int = 0,
    ) -> Claim:
        """Record a new event key, or learn that it was seen before."""
        keys = [self.keys.event(key), self.keys.history(key), self.keys.seq, self.keys.inflight]
        argv = [utc_now(), event_type, routing_key, trace_id or "", self.ttl_s,
                "1" if redelivered else "0", key, tasks_total, generation]
        outcome, value, stored_generation = await self._run(self._claim, keys, argv)
        if outcome == b"new":
            return Claim("new", seq=int(value), generation=int(stored_generation))
        return Claim(outcome.decode(), existing_state=value.decode(),
                     generation=int(stored_generation))

    async def count_suspect_delivery(self, digest: str) -> int:
        """Count one more delivery of a message that was in hand when we died."""
        name = self.keys.suspect(digest)
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.incr(name)
                pipe.expire(name, self.ttl_s)
                count, _ = await pipe.execute()
        except Exception as exc:  # translated in one place, re-raised
            raise translate(exc) from exc
        return int(count)

    async def clear_suspect(self, digest: str) -> None:
        try:
            await self.client.delete(self.keys.suspect(digest))
        except Exception as exc:  # translated in one place, re-raised
            raise translate(exc) from exc

    async def mark_queued(self, key: str, task_ids: list[str], sent_at: str) -> None:
        keys = [self.keys.event(key), self.keys.history(key)]
        await self._run(self._queued, keys, [sent_at, json.dumps(task_ids), self.ttl_s])

    async def mark_parked(self, key: str, reason: str, detail: str, routing_key: str,
                          replays: int = 0) -> None:
        keys = [self.keys.event(key), self.keys.history(key)]
        await self._run(self._parked, keys, [utc_now(), reason, detail[:500], self.ttl_s,
                                             routing_key, replays])

    async def note_replayed_as(self, parked_key: str, new_key: str) -> None:
        """The re-published message parked under `parked_key` is now known as `new_key`."""
        keys = [self.keys.event(parked_key), self.keys.history(parked_key)]
        entry = {"at": utc_now(), "state": "replayedAs", "as": new_key}
        await self._run(self._note, keys, ["replayedAs", new_key, json.dumps(entry), self.ttl_s])

    async def _run(self, script: Any, keys: list[str], argv: list[Any]) -> Any:
        try:
            return await script(keys=keys, args=argv)
        except Exception as exc:  # translated in one place, re-raised
            raise translate(exc) from exc


class StateStore:
    """The worker's and the command line's view of task state (blocking redis)."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_s: int) -> None:
        self.client = client
        self.keys = StateKeys(prefix)
        self.ttl_s = ttl_s
        self._started = client.register_script(_TASK_STARTED)
        self._retrying = client.register_script(_TASK_RETRYING)
        self._finished = client.register_script(_TASK_FINISHED)
        self._deferred = client.register_script(_TASK_DEFERRED)
        self._parked = client.register_script(_PARKED)
        self._note = client.register_script(_NOTE)

    def task_started(
        self, *, key: str, task_id: str, task_name: str, attempt: int
    ) -> tuple[str, int]:
        """Mark a task running; return its previous state ('' when new) and crash count."""
        keys = [self.keys.event(key), self.keys.history(key), self.keys.task(task_id)]
        argv = [utc_now(), task_id, task_name, attempt, self.ttl_s, key]
        previous, crashes = self._run(self._started, keys, argv)
        return previous.decode(), int(crashes)

    def task_deferred(self, *, key: str, task_id: str, reason: str) -> None:
        """Mark a task as waiting, not running; the first wait goes into the history."""
        try:
            self._run(self._deferred, [self.keys.event(key), self.keys.history(key),
                                       self.keys.task(task_id)],
                      [utc_now(), task_id, reason, self.ttl_s])
        except Exception as exc:  # translated in one place, re-raised
            raise translate(exc) from exc

    def task_retrying(self, *, key: str, task_id: str, attempt: int, error: str) -> None:
        keys = [self.keys.event(key), self.keys.history(key), self.keys.task(task_id)]
        self._run(self._retrying, keys,
                  [utc_now(), task_id, attempt, error[:500], self.ttl_s, key])

    def task_finished(
        self, *, key: str, task_id: str, succeeded: bool, attempt: int, error: str = "",
        result: dict[str, Any] | None = None,
    ) -> str:
        """Record a task's outcome; return the event's state afterwards."""
        keys = [self.keys.event(key), self.keys.history(key), self.keys.task(task_id),
                self.keys.inflight]
        argv = [utc_now(), task_id, "succeeded" if succeeded else "failed", attempt,
                error[:500], self.ttl_s, key, json.dumps(result or {})]
        return self._run(self._finished, keys, argv).decode()

    def mark_parked(self, key: str, reason: str, detail: str, routing_key: str) -> None:
        keys = [self.keys.event(key), self.keys.history(key)]
        self._run(self._parked, keys, [utc_now(), reason, detail[:500], self.ttl_s, routing_key])

    def note_replayed(self, key: str, *, replays: int, at: str) -> bool:
        """Say in a parked event's state that it was re-published at `at` (replay
        number `replays`). Returns False when the key is unknown (its state expired)."""
        keys = [self.keys.event(key), self.keys.history(key)]
        entry = {"at": at, "state": "replayed", "replay": replays}
        return bool(self._run(self._note, keys, ["replays", replays, json.dumps(entry),
                                                 self.ttl_s]))

    def task_result(self, task_id: str) -> dict[str, Any] | None:
        raw = self.client.hget(self.keys.task(task_id), "result")
        return json.loads(raw) if raw else None

    def unfinished_before(self, seq: int) -> int:
        """How many events that arrived before `seq` have not finished yet."""
        return int(self.client.zcount(self.keys.inflight, "-inf", f"({seq}"))

    def lookup(self, key_or_task_id: str) -> dict[str, Any] | None:
        """The state and history of an event key or a task id; None if unknown."""
        key = key_or_task_id
        event = self.client.hgetall(self.keys.event(key))
        if not event:
            owner = self.client.hget(self.keys.task(key_or_task_id), "eventKey")
            if owner is None:
                return None
            key = _text(owner)
            event = self.client.hgetall(self.keys.event(key))
            if not event:
                return None
        record: dict[str, Any] = {_text(k): _text(v) for k, v in event.items()}
        record["eventKey"] = key
        record["taskIds"] = json.loads(record.get("taskIds", "[]"))
        for field in ("seq", "attempts", "duplicates", "redeliveries", "tasksTotal",
                      "tasksSucceeded", "tasksFailed", "generation", "replays"):
            if field in record:
                record[field] = int(record[field])
        history = [json.loads(entry) for entry in
                   self.client.lrange(self.keys.history(key), 0, -1)]
        # In time order; sorting is stable, so entries of the same instant
        # keep the order in which they were written.
        record["history"] = sorted(history, key=lambda entry: entry["at"])
        return record

    def _run(self, script: Any, keys: list[str], argv: list[Any]) -> Any:
        try:
            return script(keys=keys, args=argv)
        except Exception as exc:  # translated in one place, re-raised
            raise translate(exc) from exc


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
