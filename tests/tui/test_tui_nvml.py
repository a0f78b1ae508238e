"""The NVML source: real metrics through the pynvml API, every field N/A on its own, and the
states of a host without a usable driver explained, never raised."""

from __future__ import annotations

import os

import pynvml
import pytest

from a10tts_tui.sources.nvml import NvmlSource, NvmlState

from tui_fakes import GPU, fake_nvml

NO_GPU_STATES = {NvmlState.LIBRARY_MISSING, NvmlState.NO_DRIVER, NvmlState.NO_GPU}


def test_this_host_without_a_gpu_gets_an_explained_state():
    """No fakes: the real nvidia-ml-py on a machine without an NVIDIA driver (as CI has it)."""
    if os.path.exists("/dev/nvidiactl"):
        pytest.skip("this host has an NVIDIA driver; the GPU path is tested by the gpu-marked test")
    source = NvmlSource.system()
    snapshot = source.read()
    assert snapshot.state in NO_GPU_STATES
    assert snapshot.gpus == ()
    assert "driver" in snapshot.message.lower() or "gpu" in snapshot.message.lower()
    assert source.read().state is snapshot.state  # asking again retries and does not raise


def test_every_field_of_every_gpu_is_read():
    nv = fake_nvml(gpus=[GPU, dict(GPU, name="NVIDIA H100 80GB HBM3", util=0)],
                   processes={1: [(4242, 3 * 2**30)]})
    snapshot = NvmlSource(nv).read(service_pids={4242})
    assert snapshot.state is NvmlState.OK and snapshot.driver_version == "550.54.15"
    first, second = snapshot.gpus
    assert (first.index, first.name, first.utilization_pct, first.temperature_c) == (0, "NVIDIA A10", 45, 61)
    assert (first.memory_used_bytes, first.memory_total_bytes) == (20 * 2**30, 24 * 2**30)
    assert (first.power_draw_w, first.power_limit_w) == (148.0, 150.0)
    assert (first.sm_clock_mhz, first.memory_clock_mhz) == (1695, 6251)
    assert (first.pcie_tx_kib_s, first.pcie_rx_kib_s) == (12_000, 3_400)
    assert (first.ecc_corrected, first.ecc_uncorrected) == (0, 0)
    assert first.processes == ()
    assert second.name == "NVIDIA H100 80GB HBM3" and second.utilization_pct == 0
    assert [(p.pid, p.used_memory_bytes) for p in second.processes] == [(4242, 3 * 2**30)]


def test_only_processes_of_the_service_are_listed():
    nv = fake_nvml(processes={0: [(100, 2**30), (200, None)]})
    (gpu,) = NvmlSource(nv).read(service_pids={200}).gpus
    assert [(p.pid, p.used_memory_bytes) for p in gpu.processes] == [(200, None)]


@pytest.mark.parametrize("missing", ["nvmlDeviceGetPowerUsage", "nvmlDeviceGetTotalEccErrors",
                                     "nvmlDeviceGetPcieThroughput", "nvmlDeviceGetName"])
def test_an_unsupported_counter_is_none_and_the_rest_still_read(missing):
    (gpu,) = NvmlSource(fake_nvml(unsupported=frozenset({missing}))).read().gpus
    fields = {"nvmlDeviceGetPowerUsage": ["power_draw_w"],
              "nvmlDeviceGetTotalEccErrors": ["ecc_corrected", "ecc_uncorrected"],
              "nvmlDeviceGetPcieThroughput": ["pcie_tx_kib_s", "pcie_rx_kib_s"],
              "nvmlDeviceGetName": ["name"]}[missing]
    assert all(getattr(gpu, f) is None for f in fields)
    assert gpu.memory_total_bytes == 24 * 2**30 and gpu.temperature_c == 61


def test_a_card_that_answers_nothing_still_has_a_row():
    every = frozenset(n for n in dir(fake_nvml())
                      if n.startswith("nvmlDeviceGet") and n != "nvmlDeviceGetCount")
    (gpu,) = NvmlSource(fake_nvml(unsupported=every)).read().gpus
    assert gpu.index == 0 and gpu.name is None and gpu.memory_total_bytes is None


@pytest.mark.parametrize("code, state, words", [
    (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, NvmlState.LIBRARY_MISSING, "libnvidia-ml.so.1"),
    (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, NvmlState.NO_DRIVER, "kernel driver is not loaded"),
    (pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH, NvmlState.DRIVER_MISMATCH, "Reboot"),
    (pynvml.NVML_ERROR_NO_PERMISSION, NvmlState.NO_PERMISSION, "/dev/nvidia"),
    (pynvml.NVML_ERROR_UNKNOWN, NvmlState.ERROR, "NVML failed"),
])
def test_each_unusable_nvml_is_a_distinct_explained_state(code, state, words):
    snapshot = NvmlSource(fake_nvml(init_error=code)).read()
    assert snapshot.state is state
    assert words in snapshot.message
    assert snapshot.gpus == ()


def test_no_gpu_and_no_package_are_explained():
    assert NvmlSource(fake_nvml(gpus=[])).read().state is NvmlState.NO_GPU
    missing = NvmlSource(None).read()
    assert missing.state is NvmlState.PACKAGE_MISSING and "nvidia-ml-py" in missing.message


def test_initialises_once_and_again_after_a_failure():
    nv = fake_nvml()
    source = NvmlSource(nv)
    source.read()
    source.read()
    assert nv.calls.count("nvmlInit") == 1
    source.close()
    assert nv.calls.count("nvmlShutdown") == 1
    source.read()
    assert nv.calls.count("nvmlInit") == 2
