"""The GPU panel against the real NVML of a GPU host (run on the lent GPU machine)."""

from __future__ import annotations

import pytest

from a10tts_tui.sources.nvml import NvmlSource, NvmlState

from tui_screen import wait_for_text

pytestmark = pytest.mark.gpu


def test_real_nvml_reports_real_values():
    source = NvmlSource.system()
    snapshot = source.read()
    source.close()
    assert snapshot.state is NvmlState.OK, snapshot.message
    assert snapshot.driver_version and snapshot.gpus
    for gpu in snapshot.gpus:
        assert gpu.name
        assert gpu.memory_total_bytes > 2**30 and 0 < gpu.memory_used_bytes <= gpu.memory_total_bytes
        assert 0 <= gpu.utilization_pct <= 100
        assert 0 < gpu.temperature_c < 110
        assert 0 < gpu.power_draw_w <= gpu.power_limit_w * 1.5
        assert gpu.sm_clock_mhz > 0 and gpu.memory_clock_mhz > 0


@pytest.mark.asyncio
async def test_gpu_panel_shows_the_real_gpus(options):
    from a10tts_tui.app import A10ttsApp  # here: the NVML test above needs no Textual

    snapshot = NvmlSource.system().read()
    app = A10ttsApp(options)
    async with app.run_test(size=(160, 48)) as pilot:
        text = await wait_for_text(pilot, snapshot.gpus[0].name, "GiB", "MHz", "°C")
    row = next(line for line in text.splitlines() if snapshot.gpus[0].name in line)
    assert "N/A" not in row.split("MHz")[0], row  # name, util, memory, temperature, power, clocks all read
    assert f"driver {snapshot.driver_version}" in text
