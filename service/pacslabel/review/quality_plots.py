"""Tiny inline SVG charts for the quality page: horizontal bars and lines over ISO weeks.

Server-rendered, no JavaScript: the page works with scripts off and the numbers in a chart are the ones in the
tables next to it. Every text that reaches the SVG is escaped (user names and labels come from the database);
colours are fixed hex values from the dark theme, never from input. Missing values (None) are left out of a
chart and shown as "–" next to a bar.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

from markupsafe import Markup

__all__ = ["PALETTE", "bar_chart", "line_chart"]

PALETTE = ("#4da3ff", "#3fb37f", "#e0a84a", "#c678dd", "#ff6b6b", "#56b6c2", "#d19a66", "#98c379")
_TEXT = "#d6dde5"
_MUTED = "#8a96a4"
_GRID = "#232b35"
_FONT = 'font-family="system-ui, sans-serif" font-size="12"'


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _fmt(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}"


def bar_chart(
    bars: Sequence[tuple[str, float | None]],
    *,
    title: str,
    max_value: float | None = None,
    min_value: float = 0.0,
    decimals: int = 2,
    unit: str = "",
    width: int = 520,
    bar_height: int = 18,
    label_width: int = 150,
) -> Markup:
    """Horizontal bars, one per (label, value); the scale runs from ``min_value`` (default 0) to ``max_value``
    (default: the largest). With a negative ``min_value`` (kappa, alpha: -1..1) bars start at a zero line and
    negative values run left of it."""
    value_width, gap = 70, 6
    top = 24
    height = top + max(1, len(bars)) * (bar_height + gap) + 4
    present = [v for _, v in bars if v is not None]
    scale_max = max_value if max_value is not None else (max(present) if present else 1.0)
    scale_max = scale_max if scale_max > 0 else 1.0
    scale_min = min(0.0, min_value)
    span = width - label_width - value_width
    zero = label_width + (-scale_min / (scale_max - scale_min)) * span
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" aria-label="{_esc(title)}">',
        f"<title>{_esc(title)}</title>",
        f'<text x="0" y="14" fill="{_TEXT}" {_FONT} font-weight="600">{_esc(title)}</text>',
    ]
    if not bars:
        parts.append(f'<text x="0" y="{top + 12}" fill="{_MUTED}" {_FONT}>no data</text>')
    for index, (label, value) in enumerate(bars):
        y = top + index * (bar_height + gap)
        parts.append(
            f'<text x="{label_width - 8}" y="{y + bar_height - 5}" fill="{_TEXT}" {_FONT} '
            f'text-anchor="end">{_esc(label)}</text>'
        )
        parts.append(f'<rect x="{label_width}" y="{y}" width="{span}" height="{bar_height}" fill="{_GRID}" rx="3"/>')
        if value is None:
            shown = "–"
        else:
            clipped = max(scale_min, min(scale_max, value))
            end = label_width + (clipped - scale_min) / (scale_max - scale_min) * span
            start, stop = min(zero, end), max(zero, end)
            color = PALETTE[index % len(PALETTE)]
            parts.append(
                f'<rect x="{start:.1f}" y="{y}" width="{stop - start:.1f}" height="{bar_height}" '
                f'fill="{color}" rx="3" data-value="{value!r}"/>'
            )
            shown = _fmt(value, decimals) + unit
        parts.append(
            f'<text x="{label_width + span + 6}" y="{y + bar_height - 5}" fill="{_TEXT}" {_FONT}>{_esc(shown)}</text>'
        )
    if scale_min < 0 and bars:
        parts.append(
            f'<line x1="{zero:.1f}" y1="{top - 2}" x2="{zero:.1f}" y2="{height - 2}" stroke="{_MUTED}" '
            'stroke-dasharray="3 3"/>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every interpolated text is escaped above


def line_chart(
    x_labels: Sequence[str],
    lines: Mapping[str, Sequence[float | None]],
    *,
    title: str,
    y_max: float | None = None,
    decimals: int = 0,
    width: int = 520,
    height: int = 220,
) -> Markup:
    """One line per name over the x labels (e.g. ISO weeks); None values break the line."""
    left, right, top, bottom = 44, 36, 26, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for series in lines.values() for v in series if v is not None]
    top_value = y_max if y_max is not None else (max(values) if values else 1.0)
    top_value = top_value if top_value > 0 else 1.0
    n = len(x_labels)

    def x_of(i: int) -> float:
        return left + (plot_w / 2 if n == 1 else i * plot_w / (n - 1))

    def y_of(v: float) -> float:
        return top + plot_h - max(0.0, min(1.0, v / top_value)) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" aria-label="{_esc(title)}">',
        f"<title>{_esc(title)}</title>",
        f'<text x="0" y="14" fill="{_TEXT}" {_FONT} font-weight="600">{_esc(title)}</text>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = top + plot_h - fraction * plot_h
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="{_GRID}"/>')
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" fill="{_MUTED}" {_FONT} text-anchor="end">'
            f"{_esc(_fmt(top_value * fraction, decimals))}</text>"
        )
    for i, label in enumerate(x_labels):
        parts.append(
            f'<text x="{x_of(i):.1f}" y="{top + plot_h + 16}" fill="{_MUTED}" {_FONT} '
            f'text-anchor="middle">{_esc(label)}</text>'
        )
    if not values:
        parts.append(f'<text x="{left + 8}" y="{top + 16}" fill="{_MUTED}" {_FONT}>no data</text>')
    legend_x = left
    for index, (name, series) in enumerate(lines.items()):
        color = PALETTE[index % len(PALETTE)]
        segment: list[str] = []
        for i, value in enumerate(series):
            if value is None:
                if len(segment) > 1:
                    parts.append(
                        f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(segment)}"/>'
                    )
                segment = []
                continue
            point = f"{x_of(i):.1f},{y_of(value):.1f}"
            segment.append(point)
            parts.append(
                f'<circle cx="{x_of(i):.1f}" cy="{y_of(value):.1f}" r="3" fill="{color}" '
                f'data-series="{_esc(name)}" data-x="{_esc(x_labels[i])}" data-value="{value!r}"/>'
            )
        if len(segment) > 1:
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(segment)}"/>')
        parts.append(f'<rect x="{legend_x}" y="{height - 14}" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text x="{legend_x + 14}" y="{height - 5}" fill="{_TEXT}" {_FONT}>{_esc(name)}</text>')
        legend_x += 22 + 7 * len(name)
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every interpolated text is escaped above
