"""Reading a running dashboard: its screen as text, and waiting for what should appear."""

from __future__ import annotations

import asyncio
import html
import re

_TEXT = re.compile(r'<text class="[^"]*" x="([\d.]+)" y="([\d.]+)" textLength="[\d.]+"[^>]*>(.*?)</text>')


def screen_text(svg: str) -> list[str]:
    """The characters of an exported SVG screenshot, line by line (styles dropped)."""
    rows: dict[float, list[tuple[float, str]]] = {}
    for x, y, content in _TEXT.findall(svg):
        rows.setdefault(float(y), []).append((float(x), html.unescape(content).replace("\xa0", " ")))
    char_width = 12.2  # Rich's SVG export: one cell is 12.2 units wide
    lines = []
    for y in sorted(rows):
        line = ""
        for x, chunk in sorted(rows[y]):
            line = line.ljust(round(x / char_width)) + chunk
        lines.append(line.rstrip())
    return lines


async def wait_for(pilot, predicate, timeout_s: float = 10.0, what: str = "the condition") -> None:
    """Let the app run (its thread workers included) until `predicate()` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await pilot.pause(0.05)


def text_of(app) -> str:
    return "\n".join(screen_text(app.export_screenshot()))


async def wait_for_text(pilot, *needles: str, timeout_s: float = 10.0) -> str:
    """Waits until every needle is on screen; returns the screen's text."""
    try:
        await wait_for(pilot, lambda: all(n in text_of(pilot.app) for n in needles), timeout_s)
    except AssertionError:
        raise AssertionError(f"{needles!r} not on screen:\n{text_of(pilot.app)}") from None
    return text_of(pilot.app)
