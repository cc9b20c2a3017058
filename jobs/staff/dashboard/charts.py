"""The dashboard's charts, drawn on the server as SVG (no script, no external service): per minute or
hour, jobs finished (green), failed attempts that are retried (amber) and final failures (red) as
stacked bars, and the wait from enqueue to start (p50 and p95) as two lines on a log scale, with its
marks (1 ms, 1 s, 1 min, 1 h). Each bar's tooltip gives its numbers."""

import math
from zoneinfo import ZoneInfo

from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _
from django.utils.translation import ngettext, pgettext

from jobs.config.crons import ZONE
from jobs.observability.series import Point

WIDTH, BARS, WAITS = 720, 90, 90  # px: the plots' width, the bars' height, the wait lines' height
SCALE = 56  # px right of the plots, for the wait lines' marks
WAIT_RANGE = (0.001, 3600)  # seconds at the bottom and the top of the wait lines
WAIT_MARKS = ((0.001, "1 ms"), (1, "1 s"), (60, "1 min"), (3600, "1 h"))


def chart(points: list[Point], hourly: bool) -> str:
    step = WIDTH / max(len(points), 1)
    top = max((point.done + point.retried + point.failed for point in points), default=0) or 1
    bars, p50, p95 = [], [], []
    for n, point in enumerate(points):
        x, width, y, rects = n * step, max(step - 1, 1), BARS, []
        for kind, value in (("done", point.done), ("retried", point.retried), ("failed", point.failed)):
            height = BARS * value / top
            y -= height
            rects.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}" class="{kind}"/>')
        bars.append(format_html("<g><title>{}</title>{}</g>", _tooltip(point, hourly), mark_safe("".join(rects))))
        for line, share in ((p50, 0.5), (p95, 0.95)):
            wait = point.wait(share)
            if wait is not None:
                line.append((x + step / 2, BARS + 10 + _wait_y(wait)))
    labels = [(0, points[0].at), (WIDTH / 2, points[len(points) // 2].at), (WIDTH, points[-1].at)] if points else []
    return format_html(
        '<svg class="dash-chart" viewBox="0 0 {} {}" role="img" aria-label="{}">'
        '<text x="0" y="14" class="axis">{}</text>{}'
        '<line x1="0" y1="{}" x2="{}" y2="{}" class="axis"/>'
        '{}{}{}{}</svg>',
        WIDTH + SCALE, BARS + WAITS + 34, _("jobs finished, retried and failed, and their wait"), _max_label(top),
        format_html_join("", "{}", ((bar,) for bar in bars)), BARS, WIDTH, BARS, _wait_scale(),
        _line(p50, "p50"), _line(p95, "p95"),
        format_html_join("", '<text x="{}" y="{}" class="axis" text-anchor="{}">{}</text>', (
            (f"{x:.0f}", BARS + WAITS + 30, ("start", "middle", "end")[n], _moment(at, hourly)) for n, (x, at) in enumerate(labels)
        )),
    )  # fmt: skip


def _wait_scale() -> str:
    """The wait lines' marks: a faint line and its label at 1 ms, 1 s, 1 min and 1 h."""
    return format_html_join("", '<line x1="0" y1="{0}" x2="{1}" y2="{0}" class="mark"/><text x="{2}" y="{0}" class="mark" dominant-baseline="middle">{3}</text>', (
        (f"{BARS + 10 + _wait_y(seconds):.1f}", WIDTH, WIDTH + 6, label) for seconds, label in WAIT_MARKS
    ))  # fmt: skip


def _line(points: list[tuple[float, float]], kind: str) -> str:
    """A wait line with a dot per minute or hour (a lone point shows too); numbers only."""
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" class="{kind}"/>' for x, y in points)
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    return mark_safe(f'<polyline points="{path}" class="{kind}"/>{dots}')


def legend() -> str:
    return format_html(
        '<span class="dash-legend"><i class="done"></i>{} <i class="retried"></i>{} <i class="failed"></i>{} <i class="p50"></i>{} <i class="p95"></i>{}</span>',
        _("finished"),
        pgettext("chart legend", "retried"),
        _("failed"),
        _("wait p50"),
        _("wait p95"),
    )


def _wait_y(seconds: float) -> float:
    low, high = (math.log10(bound) for bound in WAIT_RANGE)
    share = (math.log10(min(max(seconds, WAIT_RANGE[0]), WAIT_RANGE[1])) - low) / (high - low)
    return WAITS * (1 - share)


def _tooltip(point: Point, hourly: bool) -> str:
    parts = [
        _moment(point.at, hourly),
        ngettext("%(n)d finished", "%(n)d finished", point.done) % {"n": point.done},
        ngettext("%(n)d retried", "%(n)d retried", point.retried) % {"n": point.retried},
        ngettext("%(n)d failed", "%(n)d failed", point.failed) % {"n": point.failed},
    ]
    if point.wait(0.5) is not None:
        parts.append(
            _("wait p50 ≤ %(p50)s, p95 ≤ %(p95)s")
            % {"p50": _seconds(point.wait(0.5)), "p95": _seconds(point.wait(0.95))}
        )
    return " · ".join(parts)


def _moment(at, hourly: bool) -> str:
    return f"{at.astimezone(ZoneInfo(ZONE)):{'%d/%m %H:00' if hourly else '%H:%M'}}"


def _seconds(value: float) -> str:
    if math.isinf(value):
        return "> 1 h"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.0f} s"


def _max_label(top: int) -> str:
    return ngettext("%(n)d job", "%(n)d jobs", top) % {"n": top}
