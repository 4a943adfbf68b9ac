"""The sync status view's HTML: the data each template needs, and the templates rendered.

The markup, CSS and SVG are Jinja2 templates in ``templates/`` next to this module, found
through the package (``services_sync`` is on every Airflow component's ``sys.path``), and
rendered with autoescaping: run ids, task names and errors come from databases. What is
computed here is what a template should not compute: durations and labels, the chart's
geometry, the summary cards.

The page is self-contained (inline CSS and SVG, no script, no external resource): the API server
may have no internet access, and its Content-Security-Policy forbids anything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from services_sync.ui.model import WINDOW, IntervalStatus, StatusReport, iso, totals


def format_duration(value: timedelta | None) -> str:
    """``42s``, ``4m 05s``, ``2h 07m``, ``3d 4h``; ``-`` for none; negative as ``-4m 05s``."""
    if value is None:
        return "-"
    seconds = int(value.total_seconds())
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        text = f"{days}d {hours}h"
    elif hours:
        text = f"{hours}h {minutes:02d}m"
    elif minutes:
        text = f"{minutes}m {secs:02d}s"
    else:
        text = f"{secs}s"
    return sign + text


def interval_label(item: IntervalStatus) -> str:
    """``2025-05-14 10:00\u201311:00`` (UTC, en dash); the end's date shows when it differs."""
    start, end = item.interval_start, item.interval_end
    end_text = end.strftime("%H:%M") if end.date() == start.date() else end.strftime("%m-%d %H:%M")
    if end.time() == datetime.min.time() and end - start <= timedelta(days=1):
        end_text = "24:00"
    return f"{start:%Y-%m-%d %H:%M}\u2013{end_text}"


def _number(value: int) -> str:
    return f"{value:,}"


@cache
def _environment() -> Environment:
    environment = Environment(
        loader=PackageLoader("services_sync.ui", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        number=_number, duration=format_duration, interval_label=interval_label, iso=iso
    )
    return environment


# --------------------------------------------------------------------------------------------
# The chart
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChartLayout:
    """The SVG's fixed geometry: delivered bars grow up from ``base``, quarantined down."""

    width: int = 960
    height: int = 236
    left: int = 64
    right: int = 12
    top: int = 14
    up_h: int = 118
    down_h: int = 46
    gap: int = 14

    @property
    def base(self) -> int:
        """Where delivered bars start (growing up)."""
        return self.top + self.up_h

    @property
    def q_base(self) -> int:
        """Where quarantined bars start (growing down)."""
        return self.base + self.gap

    @property
    def label_y(self) -> int:
        """The baseline of the hour labels under the chart."""
        return self.q_base + self.down_h + 18


@dataclass(frozen=True)
class ChartSlot:
    """One interval's bars: positions and heights in SVG units (0: no bar)."""

    item: IntervalStatus
    x: float
    bar_w: float
    delivered_h: float
    quarantined_h: float
    label: str | None


def _slots(
    items: Sequence[IntervalStatus], layout: ChartLayout, max_up: int, max_down: int
) -> list[ChartSlot]:
    slot = (layout.width - layout.left - layout.right) / max(len(items), 1)
    bar_w = max(slot * 0.7, 1.0)
    slots = []
    for index, item in enumerate(items):
        start = item.interval_start
        label = None
        if index == 0 or start.hour == 0:
            label = f"{start:%m-%d %H:%M}"
        elif start.hour % 6 == 0 and len(items) > 12:
            label = f"{start:%H:%M}"
        slots.append(
            ChartSlot(
                item=item,
                x=layout.left + index * slot + (slot - bar_w) / 2,
                bar_w=bar_w,
                # A bar is at least 1.5 units high, so a small count next to a big one shows.
                delivered_h=(
                    max(item.rows_delivered / max_up * layout.up_h, 1.5)
                    if item.rows_delivered
                    else 0
                ),
                quarantined_h=(
                    max(item.rows_quarantined / max_down * layout.down_h, 1.5)
                    if item.rows_quarantined
                    else 0
                ),
                label=label,
            )
        )
    return slots


def _chart_context(intervals: Sequence[IntervalStatus]) -> dict[str, Any]:
    """What ``_chart.html.j2`` draws: the layout, one slot per interval (oldest first), scales."""
    items = list(reversed(intervals))
    max_up = max((i.rows_delivered for i in items), default=0) or 1
    max_down = max((i.rows_quarantined for i in items), default=0) or 1
    layout = ChartLayout()
    return {
        "layout": layout,
        "slots": _slots(items, layout, max_up, max_down),
        "max_up": max_up,
        "max_down": max_down,
    }


def render_chart(intervals: Sequence[IntervalStatus]) -> str:
    """An inline SVG: delivered rows up, quarantined rows down (own scale), oldest on the left.

    Quarantined rows get their own scale because a handful of them next to thousands delivered
    would not show on a shared one. A marker under each bar shows the interval's status.
    """
    return _environment().get_template("_chart.html.j2").render(**_chart_context(intervals))


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Card:
    """One summary figure above the chart (``id="card-<key>"``)."""

    key: str
    value: str
    label: str
    attention: bool = False


def _cards(report: StatusReport) -> list[Card]:
    sums = totals(report.intervals)
    newest = report.intervals[0].interval_end if report.intervals else None
    return [
        Card("delivered", _number(sums["rows_delivered"]), "rows delivered"),
        Card("quarantined", _number(sums["rows_quarantined"]), "rows quarantined"),
        Card(
            "duplicates",
            _number(sums["duplicates_avoided"]),
            "batches the receiver already had (latest runs)",
        ),
        Card(
            "attention",
            _number(sums["needs_attention"]),
            "intervals needing attention",
            attention=bool(sums["needs_attention"]),
        ),
        Card("median-lag", format_duration(sums["median_lag"]), "median delivery lag"),
        Card("max-lag", format_duration(sums["max_lag"]), "worst delivery lag"),
        Card(
            "newest",
            format_duration(report.generated_at - newest) if newest else "-",
            "since the newest interval ended",
        ),
    ]


def render_page(report: StatusReport) -> str:
    """The whole HTML page (self-contained: inline CSS and SVG, no script)."""
    context: dict[str, Any] = {"report": report, "window": WINDOW}
    if not report.problem and report.intervals:
        context.update(cards=_cards(report), **_chart_context(report.intervals))
    return _environment().get_template("page.html.j2").render(context)


def render_message(title: str, text: str | None = None) -> str:
    """A small page with one message (errors shown to a browser)."""
    return _environment().get_template("message.html.j2").render(title=title, text=text or "")
