"""GPU panel: one row per GPU (two lines each on narrow terminals), then a10tts's processes."""

from __future__ import annotations

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from .. import format as fmt
from ..sources.nvml import GpuInfo, GpuSnapshot, NvmlState
from ..sources.server import ServerSnapshot

WIDE = 110  # columns from which a GPU's metrics fit on one row
HEADERS = ("GPU", "Util", "Memory", "Temp", "Power", "Clocks SM/Mem", "PCIe TX/RX", "ECC C/U")


class GpuPanel(Widget):
    DEFAULT_CSS = "GpuPanel { height: auto; }"

    gpu: reactive[GpuSnapshot | None] = reactive(None, layout=True)
    server: reactive[ServerSnapshot | None] = reactive(None)  # names the service's processes

    def on_mount(self) -> None:
        self.border_title = "GPU"

    def watch_gpu(self, snapshot: GpuSnapshot | None) -> None:
        driver = snapshot.driver_version if snapshot else None
        self.border_subtitle = f"driver {driver}" if driver else ""

    def render(self) -> RenderableType:
        snapshot = self.gpu
        if snapshot is None:
            return Text("reading NVML…", style="dim")
        if snapshot.state is not NvmlState.OK:
            reason = f"No GPU metrics ({snapshot.state.value}). "
            return Text.assemble((reason, "bold yellow"), snapshot.message)
        body = _table(snapshot.gpus) if self.size.width >= WIDE else _lines(snapshot.gpus, self.size.width)
        stages = _stage_names(self.server)
        processes = [_processes(gpu, stages) for gpu in snapshot.gpus if gpu.processes]
        return Group(body, *processes)


def _cells(gpu: GpuInfo) -> list[str]:
    return [
        f"{gpu.index} {gpu.name or fmt.NA}",
        fmt.number(gpu.utilization_pct, suffix="%"),
        fmt.ratio(_gib(gpu.memory_used_bytes), _gib(gpu.memory_total_bytes), "GiB", 1),
        fmt.number(gpu.temperature_c, suffix="°C"),
        fmt.ratio(gpu.power_draw_w, gpu.power_limit_w, "W"),
        fmt.ratio(gpu.sm_clock_mhz, gpu.memory_clock_mhz, "MHz"),
        fmt.ratio(_mb(gpu.pcie_tx_kib_s), _mb(gpu.pcie_rx_kib_s), "MB/s", 1),
        fmt.ratio(gpu.ecc_corrected, gpu.ecc_uncorrected),
    ]


def _table(gpus: tuple[GpuInfo, ...]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, expand=True, show_edge=False)
    for header in HEADERS:
        table.add_column(header, no_wrap=True, justify="left" if header == "GPU" else "right")
    for gpu in gpus:
        table.add_row(*_cells(gpu))
    return table


def _lines(gpus: tuple[GpuInfo, ...], width: int) -> Text:
    """Narrow terminals: the main metrics on one line, clocks, PCIe and ECC below."""
    rows = [_cells(gpu) for gpu in gpus]
    name_width = min(max(len(r[0]) for r in rows), max(8, width - 56))
    text = Text(no_wrap=True, overflow="ellipsis")
    for name, util, memory, temp, power, clocks, pcie, ecc in rows:
        text.append(f"{name[:name_width]:<{name_width}}", style="bold")
        text.append(f"  util {util:>4}  mem {memory:>13}  {temp:>5}  {power:>9}\n")
        text.append(f"  clk {clocks}  PCIe tx/rx {pcie}  ECC c/u {ecc}\n", style="dim")
    text.rstrip()
    return text


def _stage_names(server: ServerSnapshot | None) -> dict[int, str]:
    """PID -> `llm-0` from the stages of /v1/status."""
    stages = server.get("stages") if server else None
    return {s["pid"]: f"{s.get('stage')}-{s.get('index')}" for s in stages or ()
            if isinstance(s, dict) and isinstance(s.get("pid"), int)}


def _processes(gpu: GpuInfo, stages: dict[int, str]) -> Text:
    used = ", ".join(f"{p.pid} {stages.get(p.pid) or p.name or '?'} {fmt.gib(p.used_memory_bytes)}"
                     for p in gpu.processes)
    return Text(f"GPU {gpu.index} a10tts: {used}", style="dim", no_wrap=True, overflow="ellipsis")


def _gib(value: int | None) -> float | None:
    return None if value is None else value / 2**30


def _mb(kib_per_s: int | None) -> float | None:
    return None if kib_per_s is None else kib_per_s * 1024 / 1e6
