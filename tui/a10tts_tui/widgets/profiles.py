"""Profiles panel: one key per profile, the active one highlighted."""

from __future__ import annotations

from rich.console import RenderableType
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from a10tts.profile_switch import ProfilesSnapshot

MAX_KEYS = 9  # profiles beyond the ninth are listed without a key


class ProfilesPanel(Widget):
    DEFAULT_CSS = "ProfilesPanel { height: auto; text-wrap: nowrap; text-overflow: ellipsis; }"

    profiles: reactive[ProfilesSnapshot | None] = reactive(None, layout=True)

    def on_mount(self) -> None:
        self.border_title = "Profiles"
        self.border_subtitle = "1-9 switch · d differences"

    def render(self) -> RenderableType:
        snapshot = self.profiles
        if snapshot is None:
            return Text("reading the configuration…", style="dim")
        if not snapshot.profiles:
            return Text("no profiles in the configuration directory", style="yellow")
        text = Text(no_wrap=True, overflow="ellipsis")
        width = max(len(p.name) for p in snapshot.profiles)
        for number, profile in enumerate(snapshot.profiles, start=1):
            key = str(number) if number <= MAX_KEYS else " "
            active = profile.name == snapshot.active
            text.append(f"{key} ", style="bold reverse" if number <= MAX_KEYS else "")
            name = f"{'●' if active else ' '} {profile.name:<{width}}"
            text.append(name, style="bold green" if active else "bold")
            text.append(f"  {profile.description}\n", style="" if active else "dim")
        text.rstrip()
        if snapshot.config_error:
            first = snapshot.config_error.splitlines()[0]
            text.append(f"\n{first} (press d for details)", style="bold red")
        return text
