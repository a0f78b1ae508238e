"""`a10tts-tui`: the operator's dashboard. Polls every source in thread workers, never blocks the UI."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from functools import partial

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.reactive import reactive
from textual.widgets import Footer, Header, Log
from textual.worker import Worker, WorkerState

from a10tts.config import ConfigError

from . import options as cli
from .options import Options
from .sources import Sources
from .sources.nvml import GpuSnapshot
from .sources.ports import PortSnapshot
from .sources.processes import service_pids
from a10tts.profile_switch import ProfilesSnapshot, SwitchStep
from .sources.server import ProbeResult, ServerSnapshot
from .sources.systemd import UnitSnapshot
from .widgets.dialogs import ConfirmSwitch, SwitchProgress, TextDialog, changes_text
from .widgets.gpu import GpuPanel
from .widgets.port import PortPanel
from .widgets.profiles import MAX_KEYS, ProfilesPanel
from .widgets.service import ServicePanel
from .widgets.ttfa import TtfaPanel

FINAL_SEVERITY = {"ready": "information", "not_running": "warning"}

# Inline rather than a .tcss file: nothing to forget when packaging.
LAYOUT_CSS = """
/* Narrow terminals (80x24): panels stacked under a title rule, the journal below the fold.
   From 120 columns (e.g. 160x48): boxed panels in a grid that fills the screen. */
#body { scrollbar-size-vertical: 1; }
#body > * {
    border: none;
    border-top: solid $primary-darken-1;
    border-title-color: $text;
    border-title-style: bold;
    border-subtitle-color: $text-muted;
    padding: 0 1;
    height: auto;
}
#journal { height: 12; }

Screen.-wide #body { layout: grid; grid-size: 2; grid-columns: 1fr 1fr; grid-rows: auto auto auto 1fr; }
Screen.-wide #body > * { border: round $primary-darken-1; }
Screen.-wide #gpu, Screen.-wide #journal { column-span: 2; }
Screen.-wide #journal { height: 1fr; min-height: 6; }
"""


class A10ttsApp(App[None]):
    TITLE = "a10tts"
    CSS = LAYOUT_CSS
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Keys"),
        Binding("p", "probe", "Probe TTFA"),
        Binding("d", "differences", "Differences"),
        Binding("r", "refresh", "Refresh"),
        *(Binding(str(n), f"switch({n})", f"Switch to profile {n}", show=False)
          for n in range(1, MAX_KEYS + 1)),
    ]

    gpu: reactive[GpuSnapshot | None] = reactive(None)
    port: reactive[PortSnapshot | None] = reactive(None)
    server: reactive[ServerSnapshot | None] = reactive(None)
    unit: reactive[UnitSnapshot | None] = reactive(None)
    profiles: reactive[ProfilesSnapshot | None] = reactive(None)
    probe: reactive[ProbeResult | None] = reactive(None)
    probing: reactive[bool] = reactive(False)

    def __init__(self, options: Options, sources: Sources | None = None):
        super().__init__()
        self.options = options
        self.sources = sources or Sources.from_options(options)
        self.sub_title = f"{options.url} · unit {options.unit} · every {options.interval_s:g} s"
        self._poll_errors: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="body"):
            yield GpuPanel(id="gpu").data_bind(A10ttsApp.gpu, A10ttsApp.server)
            yield PortPanel(id="port").data_bind(A10ttsApp.port, A10ttsApp.server)
            yield ServicePanel(id="service").data_bind(A10ttsApp.unit, A10ttsApp.server, A10ttsApp.profiles)
            yield TtfaPanel(id="ttfa").data_bind(A10ttsApp.server, A10ttsApp.probe, A10ttsApp.probing)
            yield ProfilesPanel(id="profiles").data_bind(A10ttsApp.profiles)
            yield Log(id="journal", max_lines=2000)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#journal", Log).border_title = f"Journal ({self.options.unit})"
        self.action_refresh()
        self.set_interval(self.options.interval_s, self.action_refresh)
        self.follow_journal()

    def on_unmount(self) -> None:
        self.sources.journal.stop()
        self.sources.gpu.close()

    # --- polling -------------------------------------------------------------------------------

    def action_refresh(self) -> None:
        sources = self.sources
        self._poll("gpu", lambda: sources.gpu.read(self._service_pids()))
        self._poll("port", sources.port.read)
        self._poll("server", sources.server.read)
        self._poll("unit", sources.unit.read)
        self._poll("profiles", sources.profiles.read)

    def _poll(self, attribute: str, fetch: Callable[[], object]) -> None:
        """Fetch in a thread into the reactive `attribute`. A source still busy from the last
        round is left alone, so a hung service or driver never piles up threads."""
        if any(w.group == attribute and not w.is_finished for w in self.workers):
            return
        self.run_worker(partial(self._fetch_into, attribute, fetch), name=attribute, group=attribute,
                        thread=True, exit_on_error=False)

    def _fetch_into(self, attribute: str, fetch: Callable[[], object]) -> None:
        value = fetch()
        self.call_from_thread(setattr, self, attribute, value)

    def _service_pids(self) -> set[int]:
        unit, port = self.unit, self.port
        return service_pids([unit.main_pid if unit else None, *(port.owner_pids if port else ())])

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # A bug in one source is shown once, and the other panels keep going.
        worker = event.worker
        if event.state is WorkerState.ERROR:
            message = f"{worker.name} failed: {worker.error!r}"
            if self._poll_errors.get(worker.name) != message:
                self._poll_errors[worker.name] = message
                self.notify(message, severity="error", timeout=10)
        elif event.state is WorkerState.SUCCESS:
            self._poll_errors.pop(worker.name, None)

    @work(thread=True, group="journal", exit_on_error=False)
    def follow_journal(self) -> None:
        log = self.query_one("#journal", Log)
        reason = self.sources.unit.unavailable_reason()
        if reason:
            self.call_from_thread(log.write_line, f"{reason}: no journal to show")
            return
        for line in self.sources.journal.follow():
            self.call_from_thread(log.write_line, line)

    # --- keys ----------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Under a dialog, keys that open another dialog wait until it is closed.
        return not (action in ("switch", "differences", "help") and len(self.screen_stack) > 1)

    def action_help(self) -> None:
        self.push_screen(TextDialog("Keys", help_text()))

    def action_probe(self) -> None:
        if not self.probing:
            self.probing = True
            self.run_probe()

    @work(thread=True, group="probe", exit_on_error=False)
    def run_probe(self) -> None:
        try:
            result = self.sources.server.probe()
        finally:
            self.call_from_thread(setattr, self, "probing", False)
        self.call_from_thread(setattr, self, "probe", result)

    def action_differences(self) -> None:
        if self.profiles is not None:
            self.show_differences(self.profiles)

    @work(thread=True, group="differences", exit_on_error=False)
    def show_differences(self, snapshot: ProfilesSnapshot) -> None:
        if snapshot.config_error or snapshot.active is None:
            body = Text(snapshot.config_error or "no active profile", style="red")
            self.call_from_thread(self.push_screen, TextDialog("Configuration problems", body))
            return
        body = Text()
        for profile in snapshot.profiles:
            if profile.name == snapshot.active:
                continue
            body.append(f"{snapshot.active} → {profile.name}\n", style="bold underline")
            try:
                changes = self.sources.profiles.differences(snapshot.active, profile.name)
                body.append_text(changes_text(changes))
            except ConfigError as exc:
                body.append(str(exc), style="red")
            body.append("\n\n")
        body.rstrip()
        self.call_from_thread(self.push_screen, TextDialog(f"Differences from {snapshot.active}", body))

    def action_switch(self, number: int) -> None:
        snapshot = self.profiles
        if snapshot is None or number > len(snapshot.profiles):
            self.notify(f"there is no profile {number}", severity="warning")
            return
        if any(w.group == "switch" and not w.is_finished for w in self.workers):
            self.notify("a profile switch is still in progress", severity="warning")
            return
        self.confirm_switch(snapshot.profiles[number - 1].name, snapshot.active)

    @work(thread=True, group="switch", exit_on_error=False)
    def confirm_switch(self, name: str, active: str | None) -> None:
        try:
            body = changes_text(self.sources.profiles.differences(active, name)) if active else Text()
        except ConfigError as exc:
            body = Text(str(exc), style="red")
        dialog = ConfirmSwitch(name, active, body)
        self.call_from_thread(self.push_screen, dialog, partial(self._confirmed, name))

    def _confirmed(self, name: str, yes: bool | None) -> None:
        if yes:
            progress = SwitchProgress(name)
            self.push_screen(progress)
            self.run_switch(name, progress)

    @work(thread=True, group="switch", exit_on_error=False)
    def run_switch(self, name: str, progress: SwitchProgress) -> None:
        server = self.sources.server
        before = after = None
        if self.server is not None and self.server.ready:
            measuring = SwitchStep("progress", "measuring TTFA before the switch…")
            self.call_from_thread(progress.add_step, measuring)
            before = server.probe()
        steps = []
        for step in self.sources.profiles.switch(name, self.sources.admin):
            steps.append(step)
            self.call_from_thread(progress.add_step, step)
        outcome = steps[-1]
        if before is not None and outcome.kind == "ready":
            after = server.probe()
        self.call_from_thread(self._switched, progress, outcome, before, after)

    def _switched(self, progress: SwitchProgress, outcome: SwitchStep, before: ProbeResult | None,
                  after: ProbeResult | None) -> None:
        if before is not None:
            progress.show_ttfa(before, after)
        progress.finish()
        self.notify(outcome.message.splitlines()[0], severity=FINAL_SEVERITY.get(outcome.kind, "error"),
                    timeout=10)
        self.action_refresh()


def help_text() -> Text:
    keys = [
        ("1 … 9", "switch to the profile with that number (asks first; shows the reload and TTFA)"),
        ("d", "differences between the active profile and each other one"),
        ("p", "probe: one short streaming request, measures time to first audio from here"),
        ("r", "refresh every panel now"),
        ("↑ ↓ PgUp PgDn", "scroll the dashboard (small terminals), or the journal once focused"),
        ("tab", "focus the journal / the dashboard"),
        ("?", "this list"),
        ("q", "quit (or ctrl+q)"),
    ]
    text = Text()
    for key, meaning in keys:
        text.append(f"{key:>14}  ", style="bold")
        text.append(f"{meaning}\n")
    text.rstrip()
    return text


def main(argv: Sequence[str] | None = None) -> int:
    options = cli.parse(argv)
    A10ttsApp(options).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
