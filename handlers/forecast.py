"""The nightly call-volume forecast: refitted on each rollover, stored versioned.

The model of a tenant says how many calls to expect in each hour of the day,
for each weekday. It is fitted from the tenant's call records (calls that
ended, placed by their local start hour as in the report) over every day
still kept (RETENTION_DAYS) up to the day just ended:

    expected[weekday][hour] = sum(w(d) * calls(d, hour)) / sum(w(d))

over the days d of that weekday, where w(d) = 0.5 ** (age of d in days /
HALF_LIFE_DAYS): a day a fortnight old counts half as much as yesterday.
Days without a call count as zeros, from the tenant's first day with a call
on. A weekday with no day of its own in the history yet borrows the weighted
mean of all days.

Each refit is a new version (`forecast:<tenant>:v<n>`, with
`forecast:<tenant>:latest` and `forecast:<tenant>:by_day`, the version fitted
through each day). The completion event gives the version and the error on
the day just ended of the model fitted before it (through an earlier day, so
a replayed rollover does not grade the model on the day it learnt from).
The report task, chained after this one, puts tomorrow's expected calls per
hour into the HTML report.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

import redis
import structlog
from celery import shared_task

from app.event_task import EventTask, worker_resources
from handlers.arrival import wait_for_earlier_events
from handlers.report_index import ALL_TENANTS
from handlers.reports import CallView, calls_of_day, load_calls
from handlers.routes import REFRESH_FORECAST

log = structlog.get_logger(__name__)

HALF_LIFE_DAYS = 14.0
HOURS = 24

Model = dict[int, list[float]]  # weekday (Monday 0) -> expected calls in each local hour


def daily_counts(calls: Iterable[CallView], tz: ZoneInfo, *, first: date,
                 last: date) -> dict[date, list[int]]:
    """Calls per local hour for each day from `first` to `last`, zeros included."""
    counts = {first + timedelta(days=n): [0] * HOURS for n in range((last - first).days + 1)}
    for call in calls:
        local = call.anchor.astimezone(tz)
        if local.date() in counts:
            counts[local.date()][local.hour] += 1
    return counts


def fit_model(counts: dict[date, list[int]], *, through: date) -> Model:
    """Expected calls per weekday and hour; see the module docstring."""
    def weighted_mean(days: list[date]) -> list[float]:
        weights = [0.5 ** ((through - day).days / HALF_LIFE_DAYS) for day in days]
        total = sum(weights)
        return [round(sum(w * counts[d][h] for w, d in zip(weights, days, strict=True)) / total,
                      3) for h in range(HOURS)]

    observed = sorted(day for day in counts if day <= through)
    if not observed:
        return {weekday: [0.0] * HOURS for weekday in range(7)}
    overall = weighted_mean(observed)
    model = {}
    for weekday in range(7):
        own = [day for day in observed if day.weekday() == weekday]
        model[weekday] = weighted_mean(own) if own else overall
    return model


def forecast_error(expected: list[float], actual: list[int]) -> dict[str, float]:
    """How far `expected` was from `actual`, hour by hour and for the whole day."""
    mae = sum(abs(e - a) for e, a in zip(expected, actual, strict=True)) / HOURS
    return {"maePerHour": round(mae, 3), "expectedCalls": round(sum(expected), 3),
            "actualCalls": sum(actual)}


class ModelStore:
    """Versioned models in Redis, one series per tenant."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_s: int) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s

    def _key(self, tenant: str, suffix: str) -> str:
        return f"{self.prefix}forecast:{tenant}:{suffix}"

    def save(self, tenant: str, document: dict[str, Any], through: date) -> int:
        """Store a new version of the tenant's model; return its number."""
        version = int(self.client.incr(self._key(tenant, "version")))
        document = {**document, "version": version}
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self._key(tenant, f"v{version}"), json.dumps(document), ex=self.ttl_s)
        pipe.set(self._key(tenant, "latest"), version, ex=self.ttl_s)
        pipe.hset(self._key(tenant, "by_day"), through.isoformat(), version)
        for suffix in ("version", "by_day"):
            pipe.expire(self._key(tenant, suffix), self.ttl_s)
        pipe.execute()
        return version

    def fitted_through(self, tenant: str, day: date) -> dict[str, Any] | None:
        """The latest model fitted through `day` itself, if one is kept."""
        version = self.client.hget(self._key(tenant, "by_day"), day.isoformat())
        raw = self.client.get(self._key(tenant, f"v{int(version)}")) if version else None
        return json.loads(raw) if raw else None

    def fitted_before(self, tenant: str, day: date) -> dict[str, Any] | None:
        """The latest model fitted through a day before `day`, if one is kept."""
        raw_by_day = cast(dict[bytes, bytes], self.client.hgetall(self._key(tenant, "by_day")))
        by_day = {d.decode(): int(v) for d, v in raw_by_day.items()}
        earlier = [d for d in by_day if d < day.isoformat()]
        if not earlier:
            return None
        raw = self.client.get(self._key(tenant, f"v{by_day[max(earlier)]}"))
        return json.loads(raw) if raw else None


def refit_tenant(store: ModelStore, tenant: str, calls: list[CallView], *, day: date,
                 timezone: str, history_days: int) -> dict[str, Any]:
    """Refit one tenant's model through `day`; return what the completion event says of it."""
    tz = ZoneInfo(timezone)
    window_start = day - timedelta(days=history_days - 1)
    seen = [call.anchor.astimezone(tz).date() for call in calls]
    first = max(min([*seen, day]), window_start)
    counts = daily_counts(calls, tz, first=first, last=day)
    model = fit_model(counts, through=day)

    earlier = store.fitted_before(tenant, day)
    error = None if earlier is None else {
        "modelVersion": earlier["version"],
        **forecast_error(earlier["expected"][str(day.weekday())], counts[day])}
    document = {"tenantId": tenant, "timezone": timezone, "through": day.isoformat(),
                "days": len(counts), "halfLifeDays": HALF_LIFE_DAYS,
                "fittedAt": datetime.now(UTC).isoformat(timespec="seconds"),
                "expected": {str(weekday): hours for weekday, hours in model.items()}}
    version = store.save(tenant, document, through=day)
    tomorrow = model[(day + timedelta(days=1)).weekday()]
    log.info("forecast refitted", tenant=tenant, version=version, days=len(counts),
             error=error)
    return {"tenantId": tenant, "version": version, "days": len(counts), "errorOnDay": error,
            "expectedTomorrow": tomorrow, "expectedTomorrowTotal": round(sum(tomorrow), 1)}


@shared_task(base=EventTask, name=REFRESH_FORECAST, bind=True)
def refresh_forecast(self: EventTask, event: dict[str, Any],
                     meta: dict[str, Any]) -> dict[str, Any]:
    """Refit the forecast of the rollover's tenant, or of each tenant seen that day."""
    resources = worker_resources()
    wait_for_earlier_events(resources, meta)
    settings = resources.settings

    day = date.fromisoformat(event["date"])
    tz = ZoneInfo(event["timezone"])
    calls = load_calls(resources.redis, settings.redis_prefix, day, tz, int(meta["seq"]),
                       days_before=settings.retention_days)
    ended = [call for call in calls if call.ended is not None]
    tenant = event.get("tenantId")
    tenants = [tenant] if tenant else sorted({call.tenant_id for call in
                                              calls_of_day(calls, day, tz, None)})
    store = ModelStore(resources.redis, settings.redis_prefix, settings.records_ttl_s)
    models = [refit_tenant(store, name, [call for call in ended if call.tenant_id == name],
                           day=day, timezone=event["timezone"],
                           history_days=settings.retention_days)
              for name in tenants if name != ALL_TENANTS]
    return {"date": day.isoformat(), "timezone": event["timezone"], "method":
            f"weighted mean by weekday and hour, half-life {HALF_LIFE_DAYS:g} days",
            "models": models}
