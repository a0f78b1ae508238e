"""Port panel: is server.host:server.port listening, by whom; does the HTTP API answer."""

from __future__ import annotations

from rich.console import RenderableType
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from .. import format as fmt
from ..sources.ports import PortSnapshot
from ..sources.server import ServerSnapshot


class PortPanel(Widget):
    DEFAULT_CSS = "PortPanel { height: auto; }"

    port: reactive[PortSnapshot | None] = reactive(None, layout=True)
    server: reactive[ServerSnapshot | None] = reactive(None, layout=True)

    def on_mount(self) -> None:
        self.border_title = "Port"

    def render(self) -> RenderableType:
        text = Text(overflow="fold")
        port = self.port
        if port is None:
            text.append("reading sockets…", style="dim")
        else:
            text.append(f"{port.host}:{port.port}  ")
            if port.listening is None:
                text.append("unknown", style="yellow")
            elif port.listening:
                text.append("listening", style="bold green")
                text.append(_owners(port), style="dim")
                text.append(f"  connections {fmt.number(port.connections)}")
            else:
                text.append("not listening", style="bold red")
            if port.message:
                text.append(f"\n{port.message}", style="yellow")
        server = self.server
        if server is not None:
            text.append(f"\n{server.url}  ")
            if not server.reachable:
                text.append("unreachable", style="bold red")
            elif server.ready:
                text.append("ready", style="bold green")
            else:
                text.append("not ready", style="bold yellow")
            if server.error:
                text.append(f"\n{server.error}", style="yellow")
        return text


def _owners(port: PortSnapshot) -> str:
    """`by pid 4242 a10tts serve +2`: the supervisor and the HTTP workers share the socket."""
    visible = sorted((listener.pid, listener.name) for listener in port.listeners if listener.pid)
    if not visible:
        return ""
    pid, name = visible[0]
    others = len({p for p, _ in visible}) - 1
    return f" by pid {pid} {name or ''}{f' +{others}' if others else ''}".rstrip()
