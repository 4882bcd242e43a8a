"""Charts as inline SVG strings, so a report is one file that renders with no network.

Small on purpose: line charts (with gaps where a value was redacted), a forest plot on a
log scale, before/after intervals, and horizontal bars. Every chart is an `<svg
class="chart">` whose data marks carry class `mark`, which is what the report's render
check counts. Colours are the Okabe-Ito palette, which colour-blind readers can tell apart.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

PALETTE = (
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#F0E442",
    "#000000",
    "#999999",
)
AXIS, GRID, MUTED = "#444", "#e6e6e6", "#777"
FONT = 12


def nice_ticks(high: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least `high` (steps of 1, 2 or 5 times a power of 10)."""
    if high <= 0:
        return [0.0, 1.0]
    raw = high / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    return [i * step for i in range(int(math.ceil(high / step - 1e-9)) + 1)]


def number(value: float) -> str:
    """A tick or value label: thousands separators, no needless decimals."""
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:,.1f}".rstrip("0").rstrip(".")
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _text(
    x: float,
    y: float,
    label: str,
    anchor: str = "start",
    size: int = FONT,
    fill: str = AXIS,
    weight: str = "normal",
) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" '
        f'fill="{fill}" font-weight="{weight}">{escape(label)}</text>'
    )


def _svg(width: int, height: int, title: str, body: list[str]) -> str:
    return (
        f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {width} '
        f'{height}" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>{''.join(body)}</svg>"
    )


def _legend(
    items: Sequence[tuple[str, str]], x0: float, y0: float, width: float
) -> tuple[list[str], float]:
    """Legend swatches wrapped into rows; returns the parts and the height used."""
    parts, x, y = [], x0, y0
    for label, colour in items:
        item_width = 30 + 7.5 * len(label)
        if x + item_width > x0 + width and x > x0:
            x, y = x0, y + 18
        parts.append(
            f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="12" height="12" rx="2" fill="{colour}"/>'
        )
        parts.append(_text(x + 17, y + 1, label))
        x += item_width
    return parts, (y - y0) + 18 if items else 0


def _frame(
    title: str,
    y_label: str,
    ticks: list[float],
    y_at: Callable[[float], float],
    left: float,
    right_edge: float,
) -> list[str]:
    """Title, y-axis label, horizontal grid lines and their tick labels."""
    body = [_text(0, 14, title, size=13, weight="bold"), _text(0, 30, y_label, size=11, fill=MUTED)]
    for tick in ticks:
        body.append(
            f'<line x1="{left}" x2="{right_edge}" y1="{y_at(tick):.1f}" '
            f'y2="{y_at(tick):.1f}" stroke="{GRID}"/>'
        )
        body.append(_text(left - 6, y_at(tick) + 4, number(tick), "end", 11, MUTED))
    return body


@dataclass(frozen=True)
class Series:
    label: str
    values: Sequence[float | None]  # one per x label; None is drawn as a gap


def line_chart(
    title: str,
    x_labels: Sequence[str],
    series: Sequence[Series],
    y_label: str,
    width: int = 520,
    height: int = 240,
    tick_every: int = 1,
) -> str:
    """Lines over ordered categories (months, years), one per series with a legend; a
    redacted value breaks its line, and a lone value between gaps is drawn as a dot."""
    left, right, top, bottom = 56, 12, 40, 38
    values = [v for s in series for v in s.values if v is not None]
    ticks = nice_ticks(max(values, default=0) * 1.05)
    legend, legend_height = _legend(
        [(s.label, PALETTE[i % len(PALETTE)]) for i, s in enumerate(series)],
        left,
        height + 4,
        width - left - right,
    )
    plot_h = height - top - bottom
    n = max(len(x_labels), 1)

    def x_at(i: int) -> float:
        return left + (i + 0.5) * (width - left - right) / n

    def y_at(v: float) -> float:
        return top + plot_h * (1 - v / ticks[-1])

    body = _frame(title, y_label, ticks, y_at, left, width - right)
    for i, label in enumerate(x_labels):
        if i % tick_every == 0:
            body.append(_text(x_at(i), height - bottom + 16, label, "middle", 11, MUTED))
    for k, s in enumerate(series):
        colour = PALETTE[k % len(PALETTE)]
        runs: list[list[tuple[float, float]]] = [[]]
        for i, v in enumerate(s.values):
            if v is None:
                runs.append([])
            else:
                runs[-1].append((x_at(i), y_at(v)))
        for run in runs:
            if len(run) > 1:
                points = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
                body.append(
                    f'<polyline class="mark" points="{points}" fill="none" '
                    f'stroke="{colour}" stroke-width="2"/>'
                )
            for x, y in run if len(run) == 1 or len(x_labels) <= 12 else []:
                body.append(
                    f'<circle class="mark" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>'
                )
    return _svg(width, height + legend_height + 4, title, body + legend)


@dataclass(frozen=True)
class Estimate:
    label: str
    value: float | None
    lower: float | None
    upper: float | None
    colour: str
    group: str = ""


def forest_plot(title: str, estimates: Sequence[Estimate], width: int = 760) -> str:
    """Ratios with 95% intervals on a log scale, a line at 1 (no change), grouped by
    `group`; an estimate that was redacted is listed with a note instead of a mark."""
    label_w, value_w, row_h, top = 230, 170, 24, 40
    shown = [e for e in estimates if e.value]
    bounds = [b for e in shown for b in (e.lower or e.value, e.upper or e.value)] + [1.0]
    low, high = math.log(min(bounds) / 1.15), math.log(max(bounds) * 1.15)
    plot_l, plot_r = label_w, width - value_w

    def x_at(v: float) -> float:
        return plot_l + (math.log(v) - low) / (high - low) * (plot_r - plot_l)

    rows, group = [], None
    for e in estimates:
        if e.group != group:
            rows.append(("group", e.group, None))
            group = e.group
        rows.append(("estimate", e.label, e))
    height = top + row_h * len(rows) + 30
    body = [
        _text(0, 14, title, size=13, weight="bold"),
        _text(plot_r + 10, top - 10, "ratio (95% CI)", size=11, fill=MUTED),
    ]
    candidates = [0.1, 0.2, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 3, 4, 5, 10, 20, 50]
    ticks = [t for t in candidates if low <= math.log(t) <= high]
    for tick in ticks:
        x = x_at(tick)
        body.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 4}" y2="{height - 26}" '
            f'stroke="{AXIS if tick == 1 else GRID}" '
            f'stroke-dasharray="{"4 3" if tick == 1 else "none"}"/>'
        )
        body.append(_text(x, height - 10, number(tick), "middle", 11, MUTED))
    for i, (kind, label, e) in enumerate(rows):
        y = top + row_h * i + row_h / 2
        if kind == "group":
            body.append(_text(0, y + 4, label, weight="bold"))
            continue
        body.append(_text(12, y + 4, label))
        if e.value is None or e.value <= 0:
            body.append(_text(plot_r + 10, y + 4, "not released (too few)", fill=MUTED))
            continue
        if e.lower and e.upper:
            body.append(
                f'<line class="mark" x1="{x_at(e.lower):.1f}" x2="{x_at(e.upper):.1f}" '
                f'y1="{y:.1f}" y2="{y:.1f}" stroke="{e.colour}" stroke-width="2.5"/>'
            )
            text = f"{e.value:.2f} ({e.lower:.2f}–{e.upper:.2f})"
        else:
            text = f"{e.value:.2f} (no interval)"
        body.append(
            f'<rect class="mark" x="{x_at(e.value) - 5:.1f}" y="{y - 5:.1f}" '
            f'width="10" height="10" fill="{e.colour}"/>'
        )
        body.append(_text(plot_r + 10, y + 4, text))
    return _svg(width, height, title, body)


@dataclass(frozen=True)
class BeforeAfter:
    label: str
    colour: str
    pre: tuple[float | None, float | None, float | None]  # rate, lower, upper
    post: tuple[float | None, float | None, float | None]


def before_after(
    title: str, cohorts: Sequence[BeforeAfter], y_label: str, width: int = 250, height: int = 250
) -> str:
    """Rates in the year before and after index, with 95% intervals, one line per cohort."""
    left, right, top, bottom = 52, 16, 40, 30
    highs = [v for c in cohorts for w in (c.pre, c.post) for v in (w[2] or w[0],) if v]
    ticks = nice_ticks(max(highs, default=0) * 1.05)
    plot_h = height - top - bottom
    xs = (left + (width - left - right) * 0.28, left + (width - left - right) * 0.72)

    def y_at(v: float) -> float:
        return top + plot_h * (1 - v / ticks[-1])

    body = _frame(title, y_label, ticks, y_at, left, width - right)
    for x, label in zip(xs, ("year before", "year after"), strict=True):
        body.append(_text(x, height - bottom + 18, label, "middle", 11, MUTED))
    for k, cohort in enumerate(cohorts):
        offset = (k - (len(cohorts) - 1) / 2) * 8
        points = []
        for x, (rate, lower, upper) in zip(xs, (cohort.pre, cohort.post), strict=True):
            if rate is None:
                continue
            x += offset
            if lower is not None and upper is not None:
                body.append(
                    f'<line class="mark" x1="{x:.1f}" x2="{x:.1f}" y1="{y_at(lower):.1f}" '
                    f'y2="{y_at(upper):.1f}" stroke="{cohort.colour}" stroke-width="2"/>'
                )
            points.append((x, y_at(rate)))
        if len(points) == 2:
            (x1, y1), (x2, y2) = points
            body.append(
                f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                f'stroke="{cohort.colour}" stroke-width="1.5" stroke-dasharray="3 3"/>'
            )
        for x, y in points:
            body.append(
                f'<circle class="mark" cx="{x:.1f}" cy="{y:.1f}" r="4.5" '
                f'fill="{cohort.colour}" stroke="white"/>'
            )
    return _svg(width, height, title, body)


def column_chart(
    title: str,
    x_labels: Sequence[str],
    values: Sequence[float | None],
    y_label: str,
    width: int = 760,
    height: int = 240,
    tick_every: int = 1,
    colour: str = PALETTE[0],
) -> str:
    """One column per category (e.g. month); a redacted value is a grey tick on the axis."""
    left, right, top, bottom = 56, 12, 40, 38
    ticks = nice_ticks(max((v for v in values if v is not None), default=0) * 1.05)
    plot_h = height - top - bottom
    step = (width - left - right) / max(len(x_labels), 1)

    def y_at(v: float) -> float:
        return top + plot_h * (1 - v / ticks[-1])

    body = _frame(title, y_label, ticks, y_at, left, width - right)
    for i, (label, value) in enumerate(zip(x_labels, values, strict=True)):
        x = left + i * step
        if i % tick_every == 0:
            body.append(_text(x + step / 2, height - bottom + 16, label, "middle", 11, MUTED))
        if value is None:
            body.append(
                f'<rect x="{x + 1:.1f}" y="{y_at(0) - 2:.1f}" width="{step - 2:.1f}" '
                f'height="2" fill="#c8c8c8"/>'
            )
        else:
            body.append(
                f'<rect class="mark" x="{x + 1:.1f}" y="{y_at(value):.1f}" '
                f'width="{max(step - 2, 1):.1f}" height="{y_at(0) - y_at(value):.1f}" '
                f'fill="{colour}"/>'
            )
    return _svg(width, height, title, body)


def bar_chart(
    title: str,
    bars: Sequence[tuple[str, float | None]],
    unit: str = "",
    width: int = 420,
    colour: str = PALETTE[0],
) -> str:
    """Horizontal bars with their values; a redacted value is written, not drawn."""
    label_w, row_h, top = 110, 24, 26
    high = max((v for _, v in bars if v is not None), default=0) or 1
    plot_w = width - label_w - 70
    body = [_text(0, 14, title, size=13, weight="bold")]
    for i, (label, value) in enumerate(bars):
        y = top + i * row_h
        body.append(_text(label_w - 8, y + 15, label, "end"))
        if value is None:
            body.append(_text(label_w, y + 15, "redacted (7 or fewer)", fill=MUTED))
            continue
        w = max(plot_w * value / high, 1)
        body.append(
            f'<rect class="mark" x="{label_w}" y="{y + 3}" width="{w:.1f}" '
            f'height="{row_h - 7}" rx="2" fill="{colour}"/>'
        )
        body.append(_text(label_w + w + 6, y + 15, f"{number(value)}{unit}"))
    return _svg(width, top + row_h * len(bars) + 6, title, body)


@dataclass(frozen=True)
class Balance:
    label: str
    before: float | None  # standardised mean difference before matching
    after: float | None  # and after


def love_plot(title: str, rows: Sequence[Balance], limit: float = 0.1, width: int = 640) -> str:
    """A Love plot: |standardised mean difference| of each covariate before matching (open
    circles) and after (filled), with a dashed line at `limit`; a covariate whose
    difference was not released is listed without marks."""
    label_w, row_h, top = 220, 20, 44
    values = [abs(v) for r in rows for v in (r.before, r.after) if v is not None]
    ticks = nice_ticks(max(values + [limit * 1.5]) * 1.05)
    plot_l, plot_r = label_w, width - 20
    height = top + row_h * len(rows) + 30

    def x_at(v: float) -> float:
        return plot_l + abs(v) / ticks[-1] * (plot_r - plot_l)

    body = [
        _text(0, 14, title, size=13, weight="bold"),
        f'<circle cx="{plot_l + 6}" cy="27" r="4.5" fill="white" stroke="{PALETTE[1]}" '
        f'stroke-width="2"/>',
        _text(plot_l + 16, 31, "before matching", size=11),
        f'<circle cx="{plot_l + 130}" cy="27" r="4.5" fill="{PALETTE[0]}"/>',
        _text(plot_l + 140, 31, "after matching", size=11),
    ]
    for tick in ticks:
        body.append(
            f'<line x1="{x_at(tick):.1f}" x2="{x_at(tick):.1f}" y1="{top - 4}" '
            f'y2="{height - 24}" stroke="{GRID}"/>'
        )
        body.append(_text(x_at(tick), height - 8, number(tick), "middle", 11, MUTED))
    body.append(
        f'<line x1="{x_at(limit):.1f}" x2="{x_at(limit):.1f}" y1="{top - 4}" '
        f'y2="{height - 24}" stroke="{AXIS}" stroke-dasharray="4 3"/>'
    )
    for i, row in enumerate(rows):
        y = top + row_h * i + row_h / 2
        body.append(_text(label_w - 8, y + 4, row.label, "end", 11))
        if row.before is not None and row.after is not None:
            body.append(
                f'<line x1="{x_at(row.before):.1f}" x2="{x_at(row.after):.1f}" '
                f'y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}" stroke-width="2"/>'
            )
        if row.before is not None:
            body.append(
                f'<circle class="mark" cx="{x_at(row.before):.1f}" cy="{y:.1f}" r="4.5" '
                f'fill="white" stroke="{PALETTE[1]}" stroke-width="2"/>'
            )
        if row.after is not None:
            body.append(
                f'<circle class="mark" cx="{x_at(row.after):.1f}" cy="{y:.1f}" r="4.5" '
                f'fill="{PALETTE[0]}"/>'
            )
        if row.before is None and row.after is None:
            body.append(_text(plot_l + 4, y + 4, "not released (too few)", fill=MUTED, size=11))
    body.append(_text(plot_r, height - 8 - 14, "|standardised mean difference|", "end", 11, MUTED))
    return _svg(width, height, title, body)
