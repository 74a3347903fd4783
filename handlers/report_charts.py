"""The report's charts, drawn by matplotlib as SVG to be inlined in a page.

The SVG is made to sit inside an HTML page that opens with no network: the
XML prolog and DOCTYPE (which name the W3C's DTD by URL) are dropped, and so
are the namespace declarations, which the HTML parser supplies for inline
`<svg>` itself. Text stays text (`svg.fonttype: none`), so the page uses the
browser's fonts and loads none. Element ids are salted with the chart's name,
so two charts on one page never share an id, and the same figures always draw
the same bytes: a regenerated report is identical.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

# The object-oriented API only: no pyplot, so no global figure state and no
# GUI backend is ever chosen in a headless worker.
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from matplotlib.typing import RcKeyType

ANSWERED_COLOUR = "#2e7d32"
UNANSWERED_COLOUR = "#c62828"
NEUTRAL_COLOUR = "#1565c0"
FORECAST_COLOUR = "#6a1b9a"

_WIDTH_IN = 9.0
# Nothing before `<svg`, and no xmlns attributes (each holds a URL).
_PROLOG = re.compile(r"\A.*?(?=<svg\b)", re.S)
_XMLNS = re.compile(r'\s+xmlns(?::\w+)?="[^"]*"')
_STYLE: dict[RcKeyType, Any] = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.size": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
# Drop matplotlib's metadata block (it names Dublin Core and RDF by URL).
_NO_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}


def calls_per_hour_svg(answered: Sequence[int], unanswered: Sequence[int]) -> str:
    """Stacked bars: answered and unanswered calls by local start hour."""
    with rc_context({**_STYLE, "svg.hashsalt": "calls-per-hour", "svg.id": "calls-per-hour"}):
        figure = Figure(figsize=(_WIDTH_IN, 3.2))
        axes = figure.subplots()
        hours = range(24)
        axes.bar(hours, answered, color=ANSWERED_COLOUR, label="answered")
        axes.bar(hours, unanswered, bottom=answered, color=UNANSWERED_COLOUR,
                 label="unanswered")
        _hour_axis(axes)
        axes.set_ylabel("calls")
        axes.legend(frameon=False, loc="upper left")
        return _render(figure)


def talk_time_svg(labels: Sequence[str], counts: Sequence[int]) -> str:
    """Bars: how many answered calls fell in each talk-time bucket."""
    with rc_context({**_STYLE, "svg.hashsalt": "talk-time", "svg.id": "talk-time"}):
        figure = Figure(figsize=(_WIDTH_IN / 2, 3.0))
        axes = figure.subplots()
        positions = range(len(labels))
        axes.bar(positions, counts, color=NEUTRAL_COLOUR)
        axes.set_xticks(list(positions), list(labels), rotation=30, ha="right")
        axes.set_ylabel("answered calls")
        _whole_numbers(axes)
        return _render(figure)


def reasons_svg(by_reason: dict[str, int]) -> str:
    """Horizontal bars: calls by end reason, most frequent on top."""
    ranked = sorted(by_reason.items(), key=lambda item: (item[1], item[0]))
    with rc_context({**_STYLE, "svg.hashsalt": "reasons", "svg.id": "reasons"}):
        figure = Figure(figsize=(_WIDTH_IN / 2, max(1.6, 0.45 * len(ranked) + 0.8)))
        axes = figure.subplots()
        axes.barh([name for name, _ in ranked], [count for _, count in ranked],
                  color=NEUTRAL_COLOUR)
        axes.set_xlabel("calls")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        return _render(figure)


def expected_calls_svg(expected: Sequence[float]) -> str:
    """Bars: the forecast's expected calls per hour of tomorrow."""
    with rc_context({**_STYLE, "svg.hashsalt": "forecast", "svg.id": "forecast"}):
        figure = Figure(figsize=(_WIDTH_IN, 2.6))
        axes = figure.subplots()
        axes.bar(range(24), expected, color=FORECAST_COLOUR, alpha=0.75,
                 label="expected calls")
        _hour_axis(axes)
        axes.set_ylabel("expected calls")
        return _render(figure)


def _hour_axis(axes: Axes) -> None:
    axes.set_xticks(range(24), [f"{hour:02d}" for hour in range(24)])
    axes.set_xlim(-0.6, 23.6)
    axes.set_xlabel("local hour")
    _whole_numbers(axes)


def _whole_numbers(axes: Axes) -> None:
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))


def _render(figure: Figure) -> str:
    figure.tight_layout()
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata=_NO_METADATA)
    svg = _PROLOG.sub("", buffer.getvalue(), count=1)
    return _XMLNS.sub("", svg)
