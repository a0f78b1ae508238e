"""Modal screens: key help, profile differences, the switch confirmation and its progress."""

from __future__ import annotations

import json

from rich.console import RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from .. import format as fmt
from a10tts.profile_switch import Change, SwitchStep
from ..sources.server import ProbeResult

STEP_STYLES = {"recorded": "green", "progress": "", "ready": "bold green", "not_running": "bold yellow",
               "denied": "bold red", "refused": "bold red", "failed": "bold red"}

DIALOG_CSS = """
{name} {{ align: center middle; }}
{name} > Vertical {{
    width: 90%; max-width: 110; height: auto; max-height: 90%;
    border: thick $primary; background: $surface; padding: 0 1;
}}
{name} VerticalScroll {{ height: auto; max-height: 30; }}
{name} Horizontal {{ height: auto; align: center middle; }}
{name} Button {{ margin: 0 2; }}
"""


def changes_text(changes: list[Change] | tuple[Change, ...]) -> Text:
    if not changes:
        return Text("no setting changes", style="dim")
    width = max(len(c.key) for c in changes)
    text = Text()
    for change in changes:
        text.append(f"{change.key:<{width}}  ", style="bold")
        text.append(f"{json.dumps(change.old)} → {json.dumps(change.new)}\n")
    text.rstrip()
    return text


class TextDialog(ModalScreen[None]):
    """A titled, scrollable text; any of esc, q, enter closes it."""

    DEFAULT_CSS = DIALOG_CSS.format(name="TextDialog")
    BINDINGS = [Binding("escape,q,enter", "close", "Close")]

    def __init__(self, title: str, body: RenderableType):
        super().__init__()
        self._title, self._body = title, body

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = self._title
            with VerticalScroll():
                yield Static(self._body)
            yield Static(Text("esc close", style="dim"))

    def action_close(self) -> None:
        self.dismiss()


class ConfirmSwitch(ModalScreen[bool]):
    DEFAULT_CSS = DIALOG_CSS.format(name="ConfirmSwitch")
    BINDINGS = [Binding("y", "answer(True)", "Switch"), Binding("n,escape", "answer(False)", "Cancel")]

    def __init__(self, name: str, active: str | None, changes: RenderableType):
        super().__init__()
        self._profile, self._active, self._changes = name, active, changes

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "Switch profile"
            yield Static(Text.assemble("Switch from ", (str(self._active or "?"), "bold"), " to ",
                                       (self._profile, "bold"), "?"))
            yield Static(Text("The profile is validated and recorded, then a running service reloads: its "
                              "stages restart while the port stays open (requests wait or get 503).",
                              style="dim"))
            with VerticalScroll():
                yield Static(self._changes)
            with Horizontal():
                yield Button("Switch (y)", variant="primary", id="yes")
                yield Button("Cancel (n)", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class SwitchProgress(ModalScreen[None]):
    """Shows each step of a switch as it happens; hiding it does not stop the switch."""

    DEFAULT_CSS = DIALOG_CSS.format(name="SwitchProgress")
    BINDINGS = [Binding("escape,q,enter", "close", "Close")]

    def __init__(self, name: str):
        super().__init__()
        self.profile = name
        self.steps: list[SwitchStep] = []
        self.ttfa: tuple[ProbeResult | None, ProbeResult | None] = (None, None)  # before, after
        self.done = False

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = f"Switching to {self.profile}"
            with VerticalScroll():
                yield Static(id="switch-log")
            yield Static(id="switch-ttfa")
            yield Static(id="switch-hint")

    def on_mount(self) -> None:
        self._refresh_text()

    def add_step(self, step: SwitchStep) -> None:
        self.steps.append(step)
        self._refresh_text()

    def show_ttfa(self, before: ProbeResult | None, after: ProbeResult | None) -> None:
        self.ttfa = (before, after)
        self._refresh_text()

    def finish(self) -> None:
        self.done = True
        self._refresh_text()

    def _refresh_text(self) -> None:
        try:
            log_widget, ttfa_widget, hint_widget = (self.query_one(f"#switch-{part}", Static)
                                                    for part in ("log", "ttfa", "hint"))
        except NoMatches:
            return  # not composed yet (on_mount shows it all), or hidden by the operator
        log = Text()
        for step in self.steps:
            log.append(("\n" if log else "") + step.message, style=STEP_STYLES.get(step.kind, ""))
            if step.changes:
                log.append("\n")
                log.append_text(changes_text(step.changes))
        log_widget.update(log)
        if self.ttfa != (None, None):
            before, after = self.ttfa
            ttfa = Text.assemble(("TTFA (probe): before ", "bold"), _probe(before), ("  after ", "bold"),
                                 _probe(after))
            ttfa_widget.update(ttfa)
        hint = "esc close" if self.done else "working… (esc hides this; the switch goes on)"
        hint_widget.update(Text(hint, style="dim"))

    def action_close(self) -> None:
        self.dismiss()


def _probe(result: ProbeResult | None) -> str:
    if result is None:
        return "–"
    return fmt.seconds(result.ttfa_s) if result.ttfa_s is not None else f"failed ({result.error})"
