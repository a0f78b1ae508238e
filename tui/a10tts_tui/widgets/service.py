"""Service panel: the systemd unit, what the service reports about itself, and its journal."""

from __future__ import annotations

import time

from rich.console import RenderableType
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from .. import format as fmt
from a10tts.profile_switch import ProfilesSnapshot
from ..sources.server import ServerSnapshot
from ..sources.systemd import UnitSnapshot

STATE_STYLES = {"active": "bold green", "reloading": "bold yellow", "activating": "bold yellow",
                "deactivating": "bold yellow", "failed": "bold red", "inactive": "bold red"}


class ServicePanel(Widget):
    DEFAULT_CSS = "ServicePanel { height: auto; }"

    unit: reactive[UnitSnapshot | None] = reactive(None, layout=True)
    server: reactive[ServerSnapshot | None] = reactive(None, layout=True)
    profiles: reactive[ProfilesSnapshot | None] = reactive(None, layout=True)

    def on_mount(self) -> None:
        self.border_title = "Service"

    def render(self) -> RenderableType:
        text = Text(overflow="fold")
        self._unit(text)
        self._service(text)
        return text

    def _unit(self, text: Text) -> None:
        unit = self.unit
        if unit is None:
            text.append("reading systemd…", style="dim")
            return
        text.append(f"{unit.unit}  ")
        if not unit.available:
            text.append(unit.message, style="yellow")
            return
        state = f"{unit.active_state or fmt.NA} ({unit.sub_state or fmt.NA})"
        text.append(state, style=STATE_STYLES.get(unit.active_state or "", "bold"))
        text.append(f"  since {unit.since or fmt.NA}\n")
        text.append(f"main PID {fmt.number(unit.main_pid)}  restarts {fmt.number(unit.restarts)}  "
                    f"memory {fmt.gib(unit.memory_bytes)}")
        if unit.status_text:
            text.append("\nstatus: ", style="dim")
            text.append(unit.status_text)

    def _service(self, text: Text) -> None:
        server, profiles = self.server, self.profiles
        running = server.get("profile") if server else None
        recorded = profiles.active if profiles else None
        text.append("\nprofile ")
        text.append(str(running or recorded or fmt.NA), style="bold")
        if running and recorded and running != recorded:
            text.append(f"  (recorded: {recorded}, applies at the next reload)", style="yellow")
        if server is None or server.status is None:
            return
        state = server.get("state")
        since = server.get("since")
        text.append(f"  state {state or fmt.NA}")
        if isinstance(since, (int, float)):
            text.append(f" for {fmt.duration(time.time() - since)}")
        model = server.get("model") or {}
        if isinstance(model, dict) and model.get("device"):
            text.append(f"  model {'demo ' if model.get('demo') else ''}on {model['device']}")
        stages = server.get("stages")
        if isinstance(stages, list) and stages:
            alive = sum(1 for s in stages if isinstance(s, dict) and s.get("alive"))
            text.append(f"  stages {alive}/{len(stages)} alive",
                        style="" if alive == len(stages) else "bold red")
