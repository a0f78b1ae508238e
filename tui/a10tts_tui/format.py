"""How values read on screen: units, and N/A for whatever is unknown."""

from __future__ import annotations

import time
from typing import Any

NA = "N/A"


def gib(value: int | None) -> str:
    return NA if value is None else f"{value / 2**30:.1f} GiB"


def ratio(used: float | None, total: float | None, unit: str = "", digits: int = 0) -> str:
    """`20.1/22.5 GiB`-style pairs; each side may be unknown on its own."""
    left = NA if used is None else f"{used:.{digits}f}"
    right = NA if total is None else f"{total:.{digits}f}"
    return f"{left}/{right}{' ' + unit if unit else ''}"


def seconds(value: float | None) -> str:
    """Latencies: milliseconds below ten seconds, seconds above."""
    if value is None:
        return NA
    return f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"


def number(value: Any, digits: int = 0, suffix: str = "") -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return NA
    return f"{value:.{digits}f}{suffix}"


def clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


def duration(value: float | None) -> str:
    if value is None:
        return NA
    value = int(value)
    days, rest = divmod(value, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"
