"""The daily report as a self-contained HTML page (CONTRACT 5).

The page is rendered by Jinja2 from `templates/report.html.j2`, with its
charts inlined as SVG (`handlers.report_charts`) and its style inlined too:
it opens in a browser with no network, and links to nothing.

It shows what the JSON report says, and what a reader wants next to it:
answered and unanswered calls per hour, the talk-time distribution, the end
reasons, for the all-tenants summary a line per tenant, and, when a forecast
exists, tomorrow's expected calls per hour.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import tzinfo
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from handlers.report_charts import (
    calls_per_hour_svg,
    expected_calls_svg,
    reasons_svg,
    talk_time_svg,
)

if TYPE_CHECKING:
    from handlers.reports import CallView

# Upper bounds in seconds, and their labels; the last bucket is open.
TALK_BUCKETS: tuple[tuple[float, str], ...] = (
    (30, "under 30 s"), (60, "30 s – 1 min"), (120, "1 – 2 min"), (300, "2 – 5 min"),
    (600, "5 – 10 min"), (float("inf"), "10 min or more"),
)

_environment = Environment(
    loader=PackageLoader("handlers", "templates"),
    autoescape=True,
    undefined=StrictUndefined,  # a misspelt field is an error, not a blank
    trim_blocks=True,
    lstrip_blocks=True,
)


def hourly_split(calls: Sequence[CallView], tz: tzinfo) -> tuple[list[int], list[int]]:
    """Answered and unanswered calls by local start hour (end, if never started)."""
    answered, unanswered = [0] * 24, [0] * 24
    for call in calls:
        hour = call.anchor.astimezone(tz).hour
        (answered if call.answered is not None else unanswered)[hour] += 1
    return answered, unanswered


def talk_distribution(calls: Sequence[CallView]) -> list[int]:
    """How many answered calls fall in each of `TALK_BUCKETS`."""
    counts = [0] * len(TALK_BUCKETS)
    for call in calls:
        talk_s = call.talk_seconds
        if talk_s is None:
            continue
        index = next(i for i, (bound, _) in enumerate(TALK_BUCKETS) if talk_s < bound)
        counts[index] += 1
    return counts


def render_report_page(
    report: dict[str, Any], calls: Sequence[CallView], tz: tzinfo, *,
    tenant_reports: Sequence[dict[str, Any]] = (),
    expected_by_hour: Sequence[float] | None = None,
) -> str:
    """The HTML page of one report; `calls` are the calls the report counts."""
    answered, unanswered = hourly_split(calls, tz)
    talk_counts = talk_distribution(calls)
    charts = {
        "per_hour": calls_per_hour_svg(answered, unanswered),
        "talk_time": talk_time_svg([label for _, label in TALK_BUCKETS], talk_counts),
        "reasons": reasons_svg(report["byReason"]) if report["byReason"] else "",
        "forecast": expected_calls_svg(expected_by_hour) if expected_by_hour else "",
    }
    template = _environment.get_template("report.html.j2")
    return template.render(
        report=report,
        charts=charts,
        hours=[{"hour": h, "answered": answered[h], "unanswered": unanswered[h]}
               for h in range(24)],
        talk_buckets=list(zip([label for _, label in TALK_BUCKETS], talk_counts, strict=True)),
        tenant_reports=list(tenant_reports),
        expected_total=round(sum(expected_by_hour)) if expected_by_hour else None,
        duration=format_duration,
    )


def format_duration(seconds: float) -> str:
    """`3725.4` -> `1 h 02 min 05 s`; `42` -> `42 s`."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min {secs:02d} s"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"
