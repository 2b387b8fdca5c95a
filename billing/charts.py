"""Server-rendered charts: geometry for an inline SVG bar chart (no JavaScript, no CDN)."""

from __future__ import annotations

from dataclasses import dataclass

SERIES = (("granted", "Granted"), ("purchased", "Purchased"), ("spent", "Spent"))


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    series: str
    label: str


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True)
class DayLabel:
    x: float
    label: str


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    plot_top: int
    plot_bottom: int
    plot_left: int
    plot_right: int
    bars: list[Bar]
    ticks: list[Tick]
    day_labels: list[DayLabel]
    series: tuple[tuple[str, str], ...]


def _nice_max(value: int) -> int:
    if value <= 0:
        return 10
    magnitude = 10 ** (len(str(value)) - 1)
    for step in (1, 2, 2.5, 5, 10):
        top = int(step * magnitude)
        if top >= value:
            return top
    return 10 * magnitude


def usage_bar_chart(days, *, width: int = 760, height: int = 260, series=SERIES) -> BarChart:
    """Grouped bars per day for granted / purchased / spent (or the given `series`: (attribute,
    name) pairs). `days` are rows with a `day` date and those attributes (selectors.UsageDay).

    Negative values (a day with more refunds than spending, or net revokes) are drawn as zero.
    """
    left, right, top, bottom = 56, width - 8, 10, height - 28
    peak = max([max(getattr(d, key), 0) for d in days for key, _ in series] or [0])
    scale_max = _nice_max(peak)
    plot_h = bottom - top
    slot = (right - left) / max(len(days), 1)
    bar_w = max(slot * 0.8 / len(series), 1.0)
    bars, labels = [], []
    every = max(1, len(days) // 10)
    for i, day in enumerate(days):
        x0 = left + i * slot + slot * 0.1
        for j, (key, name) in enumerate(series):
            value = max(getattr(day, key), 0)
            h = plot_h * value / scale_max
            bars.append(
                Bar(
                    x=round(x0 + j * bar_w, 2),
                    y=round(bottom - h, 2),
                    width=round(bar_w, 2),
                    height=round(h, 2),
                    series=key,
                    label=f"{day.day.isoformat()}: {value:,} {name.lower()}",
                )
            )
        if i % every == 0:
            labels.append(DayLabel(x=round(left + i * slot + slot / 2, 2), label=day.day.strftime("%b %d")))
    ticks = [Tick(y=round(bottom - plot_h * k / 4, 2), label=f"{scale_max * k // 4:,}") for k in range(5)]
    return BarChart(
        width=width,
        height=height,
        plot_top=top,
        plot_bottom=bottom,
        plot_left=left,
        plot_right=right,
        bars=bars,
        ticks=ticks,
        day_labels=labels,
        series=tuple(series),
    )
