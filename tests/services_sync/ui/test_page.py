"""The status view's HTML: formatting, the page, the chart, escaping."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from services_sync.ui import model
from services_sync.ui.model import IntervalStatus, RunInfo
from services_sync.ui.page import (
    format_duration,
    interval_label,
    render_chart,
    render_message,
    render_page,
)
from tests.services_sync.ui.ledger_rows import HOUR, H, report, row, unacked


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "-"),
        (timedelta(seconds=42), "42s"),
        (timedelta(minutes=4, seconds=5), "4m 05s"),
        (timedelta(hours=2, minutes=7, seconds=59), "2h 07m"),
        (timedelta(days=3, hours=4, minutes=1), "3d 4h"),
        (timedelta(seconds=-65), "-1m 05s"),
    ],
)
def test_format_duration(value, text):
    assert format_duration(value) == text


def test_interval_labels():
    assert interval_label(IntervalStatus(H, H + HOUR, "delivered")) == (
        "2025-05-14 10:00\u201311:00"
    )
    late = H.replace(hour=23)
    assert interval_label(IntervalStatus(late, late + HOUR, "delivered")) == (
        "2025-05-14 23:00\u201324:00"
    )


def test_the_page_has_cards_a_chart_and_a_table_row_per_interval():
    items = model.build_intervals([row(H + i * HOUR) for i in range(47)] + [unacked(H + 47 * HOUR)])
    page = render_page(report(items))
    assert page.startswith("<!doctype html>")
    assert page.count("<tr class=") == 48
    assert page.count('<g class="slot') == 48
    assert page.count('class="delivered"') == 47  # the unacknowledged hour delivered nothing
    assert page.count('class="quarantined"') == 48
    assert 'id="card-delivered"><div class="v">5,546</div>' in page
    assert 'id="card-attention"' in page and "card attention" in page
    assert "3 of 3 batches not acknowledged" in page
    assert '<span class="st bad">unacknowledged</span>' in page
    assert "scheduled__<wbr>2025-05-14T10:00:00+00:00" in page
    assert 'href="api/intervals"' in page  # relative: works under any mount point


def test_the_page_is_self_contained():
    page = render_page(report(model.build_intervals([row(H)])))
    assert "<script" not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "@import" not in page
    assert 'xmlns="http://www.w3.org/2000/svg"' in page  # the only URL: a namespace


def test_everything_from_the_database_is_escaped():
    evil = "manual__<script>alert(1)</script>&"
    page = render_page(
        report(
            model.build_intervals(
                [unacked(H, run_id=evil)],
                {evil: RunInfo(evil, "failed", failed_tasks=('<img src=x onerror="1">',))},
            )
        )
    )
    assert "<script>" not in page
    assert "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;" in page


def test_a_problem_is_shown_instead_of_the_table():
    page = render_page(
        report((), problem="The state database of connection x cannot be read: refused",
               available=False)
    )  # fmt: skip
    assert 'id="problem"' in page
    assert "The delivery ledger cannot be read" in page
    assert "cannot be read: refused" in page
    assert 'id="intervals"' not in page


def test_an_empty_ledger_says_no_runs_yet():
    page = render_page(report(()))
    assert "No runs yet" in page


def test_the_chart_scales_each_panel_and_labels_hours():
    items = model.build_intervals(
        [row(H + i * HOUR, rows_delivered=10 * (i + 1), rows_quarantined=i % 3) for i in range(24)]
    )
    svg = render_chart(items)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert ">240</text>" in svg  # the delivered scale's top
    assert '<text class="tick q"' in svg and ">2</text>" in svg  # the quarantined scale's own
    heights = [float(h) for h in re.findall(r'class="delivered"[^>]*height="([\d.]+)"', svg)]
    assert max(heights) == pytest.approx(118)  # the tallest bar fills the panel
    assert "05-14 10:00" in svg and "05-15 00:00" in svg and ">12:00<" in svg
    assert "2025-05-14 10:00\u201311:00 UTC: delivered, 10 delivered, 0 quarantined" in svg


def test_per_lane_progress_is_in_the_row():
    page = render_page(report(model.build_intervals([row(H)])))
    assert 'title="lane 1: 1/1, lane 2: 1/1">2/2</span>' in page


def test_a_hostile_error_string_is_escaped_everywhere_it_shows():
    """Errors, notes and problems come from databases and exceptions: never markup."""
    hostile = '<script>alert("x")</script>'
    item = IntervalStatus(H, H + HOUR, model.FAILED, run_id="manual__x", last_error=hostile)
    page = render_page(report([item], notes=(hostile,)))
    assert "<script" not in page
    assert '<td class="err">&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;</td>' in page
    assert '<p class="notes">&lt;script&gt;' in page
    problem = render_page(report((), problem=hostile, available=False))
    assert "<script" not in problem
    assert "&lt;script&gt;" in problem
    message = render_message(hostile, hostile)
    assert "<script" not in message
    assert message.count("&lt;script&gt;") == 3  # the title, the heading and the text
