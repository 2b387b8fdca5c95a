"""Template filters of the fine-tuning pages."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def duration(seconds) -> str:
    """A rough time left: "40 s", "3 min 20 s", "1 h 5 min"."""
    try:
        total = max(int(round(float(seconds))), 0)
    except (TypeError, ValueError):
        return ""
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs and minutes < 10 else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


@register.filter
def filesize(size) -> str:
    """Bytes as KB/MB (one decimal)."""
    try:
        size = int(size)
    except (TypeError, ValueError):
        return ""
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"
