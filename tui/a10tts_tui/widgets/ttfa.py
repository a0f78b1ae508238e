"""Live TTFA panel: p50/p95 time to first audio over time, where it goes (tall screens), load,
RTF, and the active probe."""

from __future__ import annotations

from collections import deque

from rich.console import Group, RenderableType
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from .. import format as fmt
from ..sources.server import ProbeResult, ServerSnapshot

HISTORY = 600  # polls kept (10 minutes at the default interval)
TALL_SCREEN = 40  # terminal lines from which each series gets three rows instead of one
LABEL = 14  # "p95   310 ms " and a space
BARS = " ▁▂▃▄▅▆▇█"
PHASE_LABELS = {  # the service's TTFA phases (pipeline/first_audio.py), short enough for one line
    "encode": "encode", "lm_first_token": "LM", "first_chunk_tokens": "tokens",
    "decode_inbox": "inbox", "decode_wait": "queue", "vocode": "vocode", "deliver": "send",
}


class TtfaPanel(Widget):
    DEFAULT_CSS = "TtfaPanel { height: auto; }"

    server: reactive[ServerSnapshot | None] = reactive(None, layout=True)
    probe: reactive[ProbeResult | None] = reactive(None)
    probing: reactive[bool] = reactive(False)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._history: dict[str, deque[float]] = {"p50": deque(maxlen=HISTORY), "p95": deque(maxlen=HISTORY)}

    def on_mount(self) -> None:
        self.border_title = "Live TTFA"

    def watch_server(self, server: ServerSnapshot | None) -> None:
        values = {name: _float(server.get("ttfa_s", name)) for name in self._history} if server else {}
        if all(v is not None for v in values.values()) and values:
            for name, value in values.items():
                self._history[name].append(value)

    def render(self) -> RenderableType:
        server = self.server
        if server is None:
            return Text("reading the service…", style="dim")
        phases = server.get("ttfa_phases_p50_s")
        tall = self.app.size.height >= TALL_SCREEN
        where = [_phases(phases)] if tall and isinstance(phases, dict) and phases else []
        return Group(_summary(server), *where, *self._chart(server), _recent(server) + self._probe_line())

    def _chart(self, server: ServerSnapshot) -> list[Text]:
        """p50 and p95 on one scale, one bar per poll, the newest on the right."""
        width = max(1, self.size.width - LABEL)
        rows = 3 if self.app.size.height >= TALL_SCREEN else 1
        shown = {name: list(series)[-width:] for name, series in self._history.items()}
        top = max((v for series in shown.values() for v in series), default=0.0)
        self.border_subtitle = f"scale 0–{fmt.seconds(top)}" if top else ""
        lines = []
        for name, series in shown.items():
            now = _float(server.get("ttfa_s", name)) if server.reachable else None
            for row in reversed(range(rows)):
                label = f"{name} {fmt.seconds(now):>8} " if row == rows - 1 else ""
                bars = _bars(series, top, rows, row).rjust(width)
                lines.append(Text.assemble((f"{label:<{LABEL}}", "bold"), (bars, "cyan")))
        return lines

    def _probe_line(self) -> Text:
        probe = self.probe
        text = Text("   probe: ", style="dim")
        if self.probing:
            text.append("measuring…", style="bold")
        elif probe is None:
            text.append("press p to measure TTFA from here")
        elif probe.ttfa_s is None:
            text.append(f"failed at {fmt.clock(probe.at)}: {probe.error}", style="yellow")
        else:
            text.append(fmt.seconds(probe.ttfa_s), style="bold")
            text.append(f" client-side at {fmt.clock(probe.at)}")
        return text


def _bars(series: list[float], top: float, rows: int, row: int) -> str:
    """Row `row` (0 = bottom) of a bar chart `rows` high, eighths of a cell per step."""
    cells = []
    for value in series:
        eighths = round(value / top * rows * 8) if top > 0 else 0
        cells.append(BARS[max(0, min(8, eighths - row * 8))])
    return "".join(cells)


def _summary(server: ServerSnapshot) -> Text:
    if not server.reachable:
        return Text("no data: the service is unreachable (see Port)", style="yellow")
    if server.status is None:
        return Text(f"no data: {server.error or 'the service sent no status'}", style="yellow")
    return Text.assemble(
        ("window ", "dim"), fmt.number(server.get("ttfa_s", "window_s"), suffix=" s"),
        ("  req/s ", "dim"), (fmt.number(server.get("requests", "per_second"), 1), "bold"),
        ("  running ", "dim"), (fmt.number(server.get("requests", "running")), "bold"),
        ("  waiting ", "dim"), (fmt.number(server.get("requests", "waiting")), "bold"),
        ("  RTF ", "dim"), (fmt.number(server.get("rtf", "p50"), 2), "bold"),
        no_wrap=True, overflow="ellipsis",
    )


def _phases(phases: dict) -> Text:
    """The median of each phase of the TTFA over the window, in the order a request meets them."""
    text = Text("ms ", style="dim", no_wrap=True, overflow="ellipsis")
    for number, (name, seconds) in enumerate(phases.items()):
        text.append("  " if number else "")  # seven phases fit an 80-column panel at three digits each
        text.append(f"{PHASE_LABELS.get(name, name)} ")
        value = _float(seconds)
        text.append(fmt.NA if value is None else f"{value * 1000:.0f}", style="bold")
    return text


def _recent(server: ServerSnapshot) -> Text:
    recent = server.get("ttfa_s", "recent")
    if not isinstance(recent, list) or not recent:
        return Text("last requests: none yet")
    values = " ".join(fmt.seconds(_float(v)) for v in recent[-6:])
    return Text(f"last requests: {values}")


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
