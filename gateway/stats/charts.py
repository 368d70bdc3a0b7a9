"""Charts drawn on the server as SVG (no script), each meant to sit next to a table with the same figures.

`line_chart` and `bar_chart` return markup safe to embed in a Jinja2 template: every label is escaped.
The SVG carries a title and a description (role="img"), so a screen reader announces what it shows;
the figures themselves are read from the table beside it. Colours and sizes are presentation
attributes, not inline styles, so a Content-Security-Policy without 'unsafe-inline' allows them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 260
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 48, 16, 16, 40
INK, MUTED, LINE, ACCENT, BAD = "#1f2933", "#61707d", "#d9e0e6", "#0b5cab", "#b42318"


def _frame(title: str, description: str, body: list[str], chart_id: str) -> Markup:
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
        f'aria-labelledby="{chart_id}-t {chart_id}-d" class="chart">'
        f'<title id="{chart_id}-t">{escape(title)}</title><desc id="{chart_id}-d">{escape(description)}</desc>'
    )
    return Markup(head + "".join(body) + "</svg>")


def _axis(y_max: float, y_format: Callable[[float], str]) -> list[str]:
    out = []
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    for i in range(5):
        value = y_max * i / 4
        y = PAD_TOP + plot_h - plot_h * i / 4
        out.append(f'<line x1="{PAD_LEFT}" y1="{y:.1f}" x2="{WIDTH - PAD_RIGHT}" y2="{y:.1f}" stroke="{LINE}"/>')
        out.append(
            f'<text x="{PAD_LEFT - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" fill="{MUTED}">'
            f"{escape(y_format(value))}</text>"
        )
    return out


def _x_labels(labels: Sequence[str], xs: Sequence[float]) -> list[str]:
    step = max(1, len(labels) // 8)  # at most about eight labels, so they stay readable on a phone
    return [
        f'<text x="{x:.1f}" y="{HEIGHT - PAD_BOTTOM + 16}" font-size="11" text-anchor="middle" fill="{MUTED}">'
        f"{escape(label)}</text>"
        for i, (label, x) in enumerate(zip(labels, xs))
        if i % step == 0 or i == len(labels) - 1
    ]


def _xs(n: int) -> list[float]:
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    if n == 1:
        return [PAD_LEFT + plot_w / 2]
    return [PAD_LEFT + plot_w * i / (n - 1) for i in range(n)]


def percent(value: float) -> str:
    return f"{value * 100:.0f}%"


def line_chart(
    labels: Sequence[str],
    values: Sequence[float | None],
    *,
    title: str,
    description: str,
    chart_id: str,
    y_max: float = 1.0,
    y_format: Callable[[float], str] = percent,
    colour: str = ACCENT,
) -> Markup:
    """A line over the labels; a missing value (None) breaks the line instead of drawing a zero."""
    body = _axis(y_max, y_format)
    if not labels:
        return _frame(title, description, body, chart_id)
    xs = _xs(len(labels))
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    segments: list[list[str]] = [[]]
    for x, v in zip(xs, values):
        if v is None:
            segments.append([])
            continue
        y = PAD_TOP + plot_h - plot_h * min(max(v / y_max, 0.0), 1.0) if y_max else PAD_TOP + plot_h
        segments[-1].append(f"{x:.1f},{y:.1f}")
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>')
    for seg in segments:
        if len(seg) > 1:
            body.append(f'<polyline points="{" ".join(seg)}" fill="none" stroke="{colour}" stroke-width="2"/>')
    body += _x_labels(labels, xs)
    return _frame(title, description, body, chart_id)


def bar_chart(
    labels: Sequence[str],
    values: Sequence[int],
    *,
    title: str,
    description: str,
    chart_id: str,
    highlight: Sequence[int] | None = None,
) -> Markup:
    """Bars of counts over the labels; `highlight` (same length) draws a second, darker bar in front (e.g. bad reviews)."""
    top = max([*values, *(highlight or []), 1])
    y_max = float(_nice(top))
    body = _axis(y_max, lambda v: f"{v:.0f}" if v == int(v) else "")  # counts: whole numbers only
    if not labels:
        return _frame(title, description, body, chart_id)
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    slot = plot_w / len(labels)
    width = max(2.0, slot * 0.6)
    xs = [PAD_LEFT + slot * (i + 0.5) for i in range(len(labels))]
    for i, (x, v) in enumerate(zip(xs, values)):
        h = plot_h * v / y_max
        body.append(
            f'<rect x="{x - width / 2:.1f}" y="{PAD_TOP + plot_h - h:.1f}" width="{width:.1f}" '
            f'height="{h:.1f}" fill="{ACCENT}" opacity="0.35"/>'
        )
        if highlight is not None:
            hh = plot_h * highlight[i] / y_max
            body.append(
                f'<rect x="{x - width / 2:.1f}" y="{PAD_TOP + plot_h - hh:.1f}" width="{width:.1f}" '
                f'height="{hh:.1f}" fill="{BAD}"/>'
            )
    body += _x_labels(labels, xs)
    return _frame(title, description, body, chart_id)


def _nice(value: int) -> int:
    """A round axis top at or above the value: 1, 2 or 5 times a power of ten."""
    magnitude = 1
    while True:
        for factor in (1, 2, 5):
            if factor * magnitude >= value:
                return factor * magnitude
        magnitude *= 10
